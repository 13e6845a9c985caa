"""``python -m deploy api``: after chalice deploy, the REST API's stage is throttled and logs its
access to the stage's encrypted log group (read back through the API Gateway API)."""
import json

import boto3
import pytest

from chalicelib.resources import Resources
from deploy import DeployError
from deploy.api_stage import ACCESS_LOG_FORMAT, THROTTLE_BURST_LIMIT, THROTTLE_RATE_LIMIT
from deploy.commands import api
from tests.deploying import STAGE, deploy_up, shared_session

RESOURCES = Resources(stage=STAGE, account_id="123456789012", region="us-east-1")


def _chalice_deploy(project):
    """What `chalice deploy` leaves behind: a REST API with stage `api`, named in deployed/."""
    client = boto3.client("apigateway")
    api_id = client.create_rest_api(name="shipping-etl")["id"]
    root = client.get_resources(restApiId=api_id)["items"][0]["id"]
    client.put_method(restApiId=api_id, resourceId=root, httpMethod="GET", authorizationType="AWS_IAM")
    client.put_integration(restApiId=api_id, resourceId=root, httpMethod="GET", type="MOCK")
    client.create_deployment(restApiId=api_id, stageName="api")
    deployed = project / ".chalice" / "deployed"
    deployed.mkdir(parents=True, exist_ok=True)
    (deployed / ("%s.json" % STAGE)).write_text(json.dumps({"resources": [
        {"name": "rest_api", "resource_type": "rest_api", "rest_api_id": api_id}]}))
    return api_id


def test_api_stage_is_throttled_and_logs_access(aws, asl, project):
    import io

    deploy_up(project)
    api_id = _chalice_deploy(project)
    kwargs = dict(project_dir=project, session=shared_session(), environ={}, out=io.StringIO(), sleep=lambda s: None)
    first = api(STAGE, **kwargs)
    stage = boto3.client("apigateway").get_stage(restApiId=api_id, stageName="api")
    everything = stage["methodSettings"]["*/*"]
    assert everything["throttlingRateLimit"] == THROTTLE_RATE_LIMIT
    assert everything["throttlingBurstLimit"] == THROTTLE_BURST_LIMIT
    assert stage["accessLogSettings"] == {"destinationArn": RESOURCES.api_access_log_group_arn,
                                          "format": ACCESS_LOG_FORMAT}
    group = boto3.client("logs").describe_log_groups(
        logGroupNamePrefix=RESOURCES.api_access_log_group)["logGroups"][0]
    assert group["kmsKeyId"] and group["retentionInDays"] == 30
    assert boto3.client("apigateway").get_account()["cloudwatchRoleArn"].endswith("-api-gateway-logs")
    assert first.changed
    assert not api(STAGE, **kwargs).changed  # idempotent


def test_api_before_chalice_deploy_says_what_to_do(aws, project):
    import io

    with pytest.raises(DeployError, match="run `chalice deploy --stage dev` first"):
        api(STAGE, project_dir=project, session=shared_session(), environ={}, out=io.StringIO())
