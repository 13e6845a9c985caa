"""IAM and bucket policy documents, each scoped to the resources its user needs.

No statement grants a wildcard action: every action is named. Resource wildcards stay inside
this stage's buckets, prefixes, tables and log groups.
"""
from chalicelib.resources import (
    ATHENA_RESULTS_PREFIX,
    GLUE_ASSETS_PREFIX,
    INCOMING_PREFIX,
    MANIFEST_PREFIX,
    PROCESSED_PREFIX,
    QUARANTINE_PREFIX,
    RAW_PREFIX,
)

VERSION = "2012-10-17"


def _arn(resources, service, resource):
    return "arn:aws:%s:%s:%s:%s" % (service, resources.region, resources.account_id, resource)


def _bucket_arn(bucket):
    return "arn:aws:s3:::%s" % bucket


def _objects(bucket, *prefixes):
    return ["arn:aws:s3:::%s/%s*" % (bucket, prefix) for prefix in prefixes]


def _statement(sid, actions, resources, condition=None):
    statement = {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


def _document(*statements):
    return {"Version": VERSION, "Statement": list(statements)}


def _catalog(resources):
    """ARNs of the Glue Data Catalog, this stage's database and its tables."""
    db = resources.glue_database
    return [
        _arn(resources, "glue", "catalog"),
        _arn(resources, "glue", "database/%s" % db),
        _arn(resources, "glue", "table/%s/*" % db),
    ]


def _glue_logs(resources, group_prefix):
    return _statement(
        "WriteGlueLogs",
        ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
        [_arn(resources, "logs", "log-group:%s*" % group_prefix)],
    )


# -- trust -------------------------------------------------------------------------------------
def glue_trust():
    """Who may assume the Glue job and crawler roles: the Glue service."""
    return _document({
        "Effect": "Allow",
        "Principal": {"Service": "glue.amazonaws.com"},
        "Action": "sts:AssumeRole",
    })


def state_machine_trust(resources):
    """Step Functions, only on behalf of this account's state machines (confused deputy)."""
    return _document({
        "Effect": "Allow",
        "Principal": {"Service": "states.amazonaws.com"},
        "Action": "sts:AssumeRole",
        "Condition": {
            "StringEquals": {"aws:SourceAccount": resources.account_id},
            "ArnLike": {"aws:SourceArn": _arn(resources, "states", "stateMachine:*")},
        },
    })


# -- role policies -----------------------------------------------------------------------------
def glue_job_policy(resources):
    """The jobs read landing objects and their own scripts, and write the lake's zones."""
    lake, landing = resources.lake_bucket, resources.landing_bucket
    written = (RAW_PREFIX, PROCESSED_PREFIX, QUARANTINE_PREFIX, MANIFEST_PREFIX)
    return _document(
        _statement("ReadLandingObjects", ["s3:GetObject"], _objects(landing, INCOMING_PREFIX)),
        _statement("ReadGlueAssets", ["s3:GetObject"], _objects(lake, GLUE_ASSETS_PREFIX)),
        _statement("WriteLakeZones", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                                      "s3:AbortMultipartUpload"], _objects(lake, *written)),
        # Listing lets a missing key answer 404 (not 403) and lets a job find stale outputs.
        _statement("ListBuckets", ["s3:ListBucket", "s3:GetBucketLocation"],
                   [_bucket_arn(landing), _bucket_arn(lake)]),
        _glue_logs(resources, "/aws-glue/"),
        _statement("PublishGlueMetrics", ["cloudwatch:PutMetricData"], ["*"],
                   {"StringEquals": {"cloudwatch:namespace": "Glue"}}),
    )


def crawler_policy(resources):
    """The crawlers read the raw and processed zones and maintain this stage's tables."""
    lake = resources.lake_bucket
    return _document(
        _statement("ReadCrawledZones", ["s3:GetObject"], _objects(lake, RAW_PREFIX, PROCESSED_PREFIX)),
        _statement("ListLake", ["s3:ListBucket", "s3:GetBucketLocation"], [_bucket_arn(lake)]),
        _statement("MaintainTables", [
            "glue:GetDatabase", "glue:GetTable", "glue:GetTables", "glue:CreateTable",
            "glue:UpdateTable", "glue:GetPartition", "glue:GetPartitions", "glue:CreatePartition",
            "glue:BatchCreatePartition", "glue:BatchGetPartition", "glue:UpdatePartition",
            "glue:BatchUpdatePartition",
        ], _catalog(resources)),
        _glue_logs(resources, "/aws-glue/crawlers"),
    )


def state_machine_policy(resources):
    """Run the two jobs and crawlers, query the processed table, notify the topic."""
    lake = resources.lake_bucket
    jobs = [_arn(resources, "glue", "job/%s" % name)
            for name in (resources.json_to_parquet_job, resources.normalize_job)]
    crawlers = [_arn(resources, "glue", "crawler/%s" % name)
                for name in (resources.raw_crawler, resources.processed_crawler)]
    return _document(
        # .sync polls the run and stops it when the execution is stopped.
        _statement("RunGlueJobs", ["glue:StartJobRun", "glue:GetJobRun", "glue:GetJobRuns",
                                   "glue:BatchStopJobRun"], jobs),
        _statement("RunCrawlers", ["glue:StartCrawler", "glue:GetCrawler"], crawlers),
        _statement("RunQueries", ["athena:StartQueryExecution", "athena:GetQueryExecution",
                                  "athena:GetQueryResults", "athena:StopQueryExecution",
                                  "athena:GetWorkGroup"],
                   [_arn(resources, "athena", "workgroup/%s" % resources.athena_workgroup)]),
        _statement("ReadDataCatalog", ["athena:GetDataCatalog"],
                   [_arn(resources, "athena", "datacatalog/AwsDataCatalog")]),
        # Athena reads the catalog and the data with the caller's permissions.
        _statement("ReadTables", ["glue:GetDatabase", "glue:GetTable", "glue:GetTables",
                                  "glue:GetPartition", "glue:GetPartitions",
                                  "glue:BatchGetPartition"], _catalog(resources)),
        _statement("ReadProcessedAndManifests", ["s3:GetObject"],
                   _objects(lake, PROCESSED_PREFIX, MANIFEST_PREFIX)),
        _statement("WriteQueryResults", ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload",
                                         "s3:ListMultipartUploadParts"],
                   _objects(lake, ATHENA_RESULTS_PREFIX)),
        _statement("ListLake", ["s3:ListBucket", "s3:GetBucketLocation",
                                "s3:ListBucketMultipartUploads"], [_bucket_arn(lake)]),
        _statement("Notify", ["sns:Publish"], [resources.topic_arn]),
    )


def _lambda_log_groups(resources):
    """Log groups of this app and stage's functions: chalice names the API's function
    ``<app>-<stage>`` and every other one ``<app>-<stage>-<handler>``."""
    group = "log-group:/aws/lambda/%s" % resources.prefix
    return [_arn(resources, "logs", group), _arn(resources, "logs", group + ":*"),
            _arn(resources, "logs", group + "-*")]


def lambda_policy(resources):
    """The Chalice Lambdas' policy (``.chalice/policy-<stage>.json``).

    on_landing starts executions, /status reads them, the generator writes landing objects.
    """
    return _document(
        _statement("StartPipeline", ["states:StartExecution", "states:ListExecutions"],
                   [resources.state_machine_arn]),
        _statement("ReadExecutions", ["states:DescribeExecution"], [resources.execution_arn("*")]),
        _statement("WriteLandingObjects", ["s3:PutObject"],
                   _objects(resources.landing_bucket, INCOMING_PREFIX)),
        _statement("WriteLogs", ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                   _lambda_log_groups(resources)),
    )


def tls_only_bucket_policy(bucket):
    """Refuse every request to ``bucket`` that does not arrive over TLS.

    A Deny on every S3 action is the point here: it removes rights, it grants none.
    """
    return _document({
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [_bucket_arn(bucket), "%s/*" % _bucket_arn(bucket)],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    })
