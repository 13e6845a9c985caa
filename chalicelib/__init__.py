"""Everything the Lambdas need, and the single definitions the rest of the project reuses.

Packaged into the Lambda zip: stdlib, boto3 and faker only.
"""
