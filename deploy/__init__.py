"""Deploy and remove one stage of Shipping ETL: ``python -m deploy up|down --stage S``.

Python API (the local stack uses it)::

    from deploy import up, down
    result = up("local", project_dir=repo_root, out=stream)   # DeployResult
    down("local", delete_data=True)

Only boto3 and chalicelib are used, so it runs wherever boto3 reaches AWS or an emulator
(``AWS_ENDPOINT_URL``).
"""
from deploy.commands import DeployResult, down, up
from deploy.context import Change
from deploy.errors import DeployError

__all__ = ["Change", "DeployError", "DeployResult", "down", "up"]
