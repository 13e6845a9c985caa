"""Who may call the HTTP API, and how to call it.

On every stage deployed to AWS, ``/status`` and ``/`` use API Gateway's IAM authorization: a
request must be signed (AWS Signature Version 4) by an IAM principal of the account that is
allowed ``execute-api:Invoke`` on the route (``invoke_policy`` writes such a policy). Unsigned
requests get 403 from API Gateway before any Lambda runs. The local stack calls the app through
``chalice.test.Client``, where authorizers do not apply, and never listens beyond loopback, so
there the routes are open.

chalicelib does not import chalice: app.py hands in chalice's ``IAMAuthorizer`` class.

Calling a deployed stage from a shell with AWS credentials::

    python -m chalicelib.api_auth --stage dev            # URL from .chalice/deployed/dev.json
    python -m chalicelib.api_auth https://<api id>.execute-api.<region>.amazonaws.com/api/status
"""
import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

# (method, path) of every route that shows execution summaries.
PROTECTED_ROUTES = (("GET", "/status"), ("GET", "/status/*"), ("GET", "/"))
SERVICE = "execute-api"
_API_HOST = re.compile(r"^[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")
_TIMEOUT_SECONDS = 30


def status_authorizer(iam_authorizer_class):
    """The authorizer for the routes in ``PROTECTED_ROUTES``: an instance of
    ``iam_authorizer_class`` (chalice's ``IAMAuthorizer``)."""
    return iam_authorizer_class()


def invoke_policy(resources, rest_api_id, api_stage="api"):
    """An IAM policy document allowing GET on the protected routes of one deployed API.

    Attach it to whoever reads the status (a person's role, a dashboard's role).
    ``rest_api_id`` is in the API's URL and in ``.chalice/deployed/<stage>.json``.
    """
    arns = ["arn:aws:execute-api:%s:%s:%s/%s/%s%s" % (
        resources.region, resources.account_id, rest_api_id, api_stage, method, path)
        for method, path in PROTECTED_ROUTES]
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "ReadPipelineStatus", "Effect": "Allow", "Action": ["execute-api:Invoke"],
        "Resource": arns}]}


def region_of(url):
    """The region in an ``execute-api`` URL; raises ValueError for any other host."""
    host = urllib.parse.urlparse(url).hostname or ""
    match = _API_HOST.match(host)
    if not match:
        raise ValueError("%s is not an API Gateway URL (https://<id>.execute-api.<region>."
                         "amazonaws.com/<stage>/...)" % url)
    return match.group(1)


def signed_get(url, session=None, opener=None):
    """GET ``url`` signed with the session's credentials (SigV4, service execute-api).

    Returns ``(HTTP status, body text)``; a 4xx/5xx answer is returned, not raised. Raises
    ValueError for a URL that is not API Gateway's and RuntimeError when there are no credentials.
    """
    region = region_of(url)
    session = session or boto3.session.Session()
    credentials = session.get_credentials()
    if credentials is None:
        raise RuntimeError("No AWS credentials: configure them (aws configure, AWS_PROFILE, ...)"
                           " for a principal allowed execute-api:Invoke on the API.")
    request = AWSRequest(method="GET", url=url, headers={"Accept": "application/json"})
    SigV4Auth(credentials.get_frozen_credentials(), SERVICE, region).add_auth(request)
    prepared = urllib.request.Request(url, headers=dict(request.headers.items()), method="GET")
    opener = opener or urllib.request.build_opener()
    try:
        with opener.open(prepared, timeout=_TIMEOUT_SECONDS) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")


def deployed_status_url(project_dir, stage):
    """``<rest_api_url>status`` from ``.chalice/deployed/<stage>.json``; raises ValueError
    when the stage has not been deployed with ``chalice deploy`` from ``project_dir``."""
    path = os.path.join(project_dir, ".chalice", "deployed", "%s.json" % stage)
    try:
        with open(path, encoding="utf-8") as handle:
            deployed = json.load(handle)
    except FileNotFoundError:
        raise ValueError("%s not found: deploy the stage with `chalice deploy --stage %s` first, "
                         "or pass the URL." % (path, stage)) from None
    for resource in deployed.get("resources", []):
        if resource.get("resource_type") == "rest_api" and resource.get("rest_api_url"):
            return resource["rest_api_url"].rstrip("/") + "/status"
    raise ValueError("%s lists no REST API: pass the URL." % path)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m chalicelib.api_auth",
        description="GET a deployed stage's /status with a SigV4-signed request (IAM auth).")
    parser.add_argument("url", nargs="?", help="the /status URL (default: from .chalice/deployed)")
    parser.add_argument("--stage", default="dev", help="stage whose URL to use (default: dev)")
    parser.add_argument("--project-dir", default=".", help="Chalice project (default: .)")
    args = parser.parse_args(argv)
    try:
        url = args.url or deployed_status_url(args.project_dir, args.stage)
        status, body = signed_get(url)
    except (ValueError, RuntimeError) as error:
        print("api_auth: error: %s" % error, file=sys.stderr)
        return 2
    print(body)
    if status == 403:
        print("api_auth: 403: the caller needs execute-api:Invoke on this route "
              "(see chalicelib.api_auth.invoke_policy).", file=sys.stderr)
    return 0 if status < 400 else 1


if __name__ == "__main__":
    sys.exit(main())
