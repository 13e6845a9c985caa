"""The REST API's stage settings chalice cannot set: throttling and an access log.

``chalice deploy`` makes the API (stage ``api``); ``python -m deploy api --stage S`` then sets, on
every method of that stage, a request rate and burst limit (a runaway client or a loop costs at
most that many Lambda invocations) and JSON access logs to the KMS-encrypted log group ``up``
made (``Resources.api_access_log_group``). The log lines name the caller's IAM identity, not any
request body. API Gateway writes logs with the account's CloudWatch role: the deploy makes one
(``<app>-<stage>-api-gateway-logs``) and sets it only when the account has none.
"""
import json
from pathlib import Path

from deploy import iam, policies
from deploy.context import UNCHANGED, UPDATED
from deploy.errors import DeployError

KIND = "api stage"
API_STAGE = "api"  # .chalice/config.json api_gateway_stage
THROTTLE_RATE_LIMIT = 20.0  # requests per second, steady
THROTTLE_BURST_LIMIT = 40
ACCESS_LOG_FORMAT = json.dumps({
    "requestId": "$context.requestId", "requestTime": "$context.requestTime",
    "httpMethod": "$context.httpMethod", "resourcePath": "$context.resourcePath",
    "status": "$context.status", "responseLength": "$context.responseLength",
    "caller": "$context.identity.userArn", "sourceIp": "$context.identity.sourceIp",
}, sort_keys=True)


def rest_api_id(project_dir, stage):
    """The stage's REST API id from chalice's ``.chalice/deployed/<stage>.json``."""
    path = Path(project_dir) / ".chalice" / "deployed" / ("%s.json" % stage)
    try:
        deployed = json.loads(path.read_text())
    except (OSError, ValueError):
        raise DeployError("%s not found: run `chalice deploy --stage %s` first, then this." % (path, stage)) from None
    for resource in deployed.get("resources", []):
        if resource.get("resource_type") == "rest_api":
            return resource["rest_api_id"]
    raise DeployError("%s names no REST API: the app has no routes deployed." % path)


def role_definition(resources):
    """(name, description, trust, policy) of API Gateway's CloudWatch Logs role."""
    name = "%s-api-gateway-logs" % resources.prefix
    trust = {"Version": policies.VERSION, "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "apigateway.amazonaws.com"}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": resources.account_id}}}]}
    group = resources.api_access_log_group_arn
    policy = {"Version": policies.VERSION, "Statement": [{
        "Sid": "WriteAccessLog", "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"],
        "Resource": [group, group + ":log-stream:*"]}]}
    return name, "Shipping ETL %s: API Gateway access logs" % resources.stage, trust, policy


def patch_operations(resources):
    """The stage's desired settings as UpdateStage patch operations."""
    return [
        {"op": "replace", "path": "/*/*/throttling/rateLimit", "value": str(THROTTLE_RATE_LIMIT)},
        {"op": "replace", "path": "/*/*/throttling/burstLimit", "value": str(THROTTLE_BURST_LIMIT)},
        {"op": "replace", "path": "/accessLogSettings/destinationArn", "value": resources.api_access_log_group_arn},
        {"op": "replace", "path": "/accessLogSettings/format", "value": ACCESS_LOG_FORMAT},
    ]


def _current(stage):
    everything = stage.get("methodSettings", {}).get("*/*", {})
    return {"rate": everything.get("throttlingRateLimit"), "burst": everything.get("throttlingBurstLimit"),
            "log": stage.get("accessLogSettings", {}).get("destinationArn"),
            "format": stage.get("accessLogSettings", {}).get("format")}


def ensure_api_stage(ctx, api_id):
    """Apply throttling and access logging to stage ``api`` of REST API ``api_id``; returns the Change."""
    resources = ctx.resources
    apigateway = ctx.client("apigateway")
    name, description, trust, policy = role_definition(resources)
    iam.ensure_role(ctx, name, description, trust, policy)
    account = apigateway.get_account()
    if not account.get("cloudwatchRoleArn"):
        apigateway.update_account(patchOperations=[
            {"op": "replace", "path": "/cloudwatchRoleArn", "value": resources.role_arn(name)}])
    label = "%s/%s" % (api_id, API_STAGE)
    wanted = {"rate": THROTTLE_RATE_LIMIT, "burst": THROTTLE_BURST_LIMIT,
              "log": resources.api_access_log_group_arn, "format": ACCESS_LOG_FORMAT}
    current = _current(apigateway.get_stage(restApiId=api_id, stageName=API_STAGE))
    changed = [key for key in wanted if current[key] != wanted[key]]
    if not changed:
        return ctx.record(UNCHANGED, KIND, label)
    apigateway.update_stage(restApiId=api_id, stageName=API_STAGE, patchOperations=patch_operations(resources))
    return ctx.record(UPDATED, KIND, label, ", ".join(changed))
