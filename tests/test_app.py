import html
import json

import boto3
import pytest
from chalice.test import Client
from moto import mock_aws

import app as app_module
from chalicelib import naming
from chalicelib.resources import INCOMING_PREFIX, Resources
from chalicelib.settings import Settings

from conftest import PROJECT_DIR

STAGE = "local"
RESOURCES = Resources.from_settings(Settings(stage=STAGE))
LANDING = RESOURCES.landing_bucket
# Stands in for the pipeline: ends at once with an output shaped like the real one's.
SUMMARY_MACHINE = {
    "StartAt": "Summary",
    "States": {
        "Summary": {
            "Type": "Pass",
            "Parameters": {
                "source.$": "$.source_uri",
                "source_id.$": "$.source_id",
                "rows": {"read": 100, "valid": 100, "quarantined": 0, "duplicates": 0},
                "query": {"columns": ["Total_Cost_in_$", "Total_Distance_in_miles", "Total_Fuel_Quantity_in_gal"],
                          "values": ["1000.0", "20.0", "3000.0"], "query_execution_id": "q"},
                "notification_id": "m",
            },
            "End": True,
        }
    },
}


@pytest.fixture
def aws_stack(aws_credentials, monkeypatch):
    """moto (running the ASL), the landing bucket and a state machine of the stage's name."""
    monkeypatch.setattr(app_module, "_clients", {})
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=LANDING)
        sfn = boto3.client("stepfunctions")
        sfn.create_state_machine(
            name=RESOURCES.state_machine_name,
            definition=json.dumps(SUMMARY_MACHINE),
            roleArn=RESOURCES.role_arn(RESOURCES.state_machine_role),
        )
        yield s3, sfn


@pytest.fixture
def client():
    with Client(app_module.app, stage_name=STAGE, project_dir=PROJECT_DIR) as test_client:
        yield test_client


def land(client, key):
    """Invoke on_landing as Lambda does for an object put under ``key``."""
    event = client.events.generate_s3_event(bucket=LANDING, key=key)
    return client.lambda_.invoke("on_landing", event).payload


def scheduled_event(client):
    return client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={},
        resources=["arn:aws:events:us-east-1:123456789012:rule/generate_batch"],
    )


def test_the_s3_handler_listens_to_object_created_under_incoming_of_the_landing_bucket():
    [source] = [s for s in app_module.app.event_sources if s.handler_string == "app.on_landing"]

    assert source.bucket == LANDING
    assert source.events == ["s3:ObjectCreated:*"]
    assert source.prefix == INCOMING_PREFIX


def test_the_generator_runs_on_the_configured_schedule():
    [source] = [s for s in app_module.app.event_sources if s.handler_string == "app.generate_batch"]

    assert source.schedule_expression.to_string() == "rate(10 minutes)"


def test_on_landing_starts_an_execution(aws_stack, client):
    _, sfn = aws_stack
    key = "incoming/2026/01/30/shipping-1.json"

    [result] = land(client, key)

    assert result["outcome"] == "started"
    execution = sfn.describe_execution(executionArn=result["execution_arn"])
    assert execution["name"] == naming.execution_name(LANDING, key, "d41d8cd98f00b204e9800998ecf8427e")
    assert json.loads(execution["input"])["poll_seconds"] == 0  # the local stage's setting


def test_on_landing_handles_every_record_and_redelivery_starts_nothing(aws_stack, client):
    _, sfn = aws_stack
    event = client.events.generate_s3_event(bucket=LANDING, key="incoming/a+b.json")
    second = json.loads(json.dumps(event["Records"][0]))
    second["s3"]["object"]["key"] = "incoming/c.json"
    event["Records"].append(second)

    first = client.lambda_.invoke("on_landing", event).payload
    again = client.lambda_.invoke("on_landing", event).payload

    assert [(r["key"], r["outcome"]) for r in first] == [("incoming/a b.json", "started"), ("incoming/c.json", "started")]
    assert [r["outcome"] for r in again] == ["already started", "already started"]
    assert len(sfn.list_executions(stateMachineArn=RESOURCES.state_machine_arn)["executions"]) == 2


def test_scheduled_handler_puts_a_valid_batch_into_the_landing_bucket(aws_stack, client):
    s3, _ = aws_stack

    batch = client.lambda_.invoke("generate_batch", scheduled_event(client)).payload

    assert batch["bucket"] == LANDING
    assert batch["key"].startswith(INCOMING_PREFIX)
    lines = s3.get_object(Bucket=LANDING, Key=batch["key"])["Body"].read().decode("utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 100  # GENERATOR_ROWS of the local stage
    assert len({r["shipping_id"] for r in records}) == 100
    assert all(r["product_id"] and r["customer_name"] for r in records)


def test_status_lists_executions_newest_first(aws_stack, client):
    keys = ["incoming/2026/01/30/batch-%d.json" % i for i in range(4)]
    for key in keys:
        land(client, key)

    response = client.http.get("/status")

    assert response.status_code == 200
    executions = response.json_body["executions"]
    assert [e["source"] for e in executions] == ["s3://%s/%s" % (LANDING, k) for k in reversed(keys)]


def test_status_limit_returns_the_newest(aws_stack, client):
    for i in range(3):
        land(client, "incoming/batch-%d.json" % i)

    response = client.http.get("/status?limit=2")

    assert response.status_code == 200
    assert [e["source"] for e in response.json_body["executions"]] == [
        "s3://%s/incoming/batch-2.json" % LANDING, "s3://%s/incoming/batch-1.json" % LANDING]


@pytest.mark.parametrize("limit", ["0", "101", "abc", "-5", "2.5", ""])
def test_status_refuses_a_bad_limit_saying_what_is_allowed(aws_stack, client, limit):
    response = client.http.get("/status?limit=%s" % limit)

    assert response.status_code == 400
    assert "limit must be a whole number from 1 to 100" in response.json_body["Message"]


def test_status_without_a_deployed_state_machine_says_to_deploy(aws_credentials, monkeypatch, client):
    monkeypatch.setattr(app_module, "_clients", {})
    with mock_aws():
        response = client.http.get("/status")

    assert response.status_code == 503
    assert "deploy" in response.json_body["Message"]


def test_index_page_lists_executions(aws_stack, client):
    land(client, "incoming/2026/01/30/page-test.json")

    response = client.http.get("/")

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    page = response.body.decode("utf-8")
    assert "incoming/2026/01/30/page-test.json" in page
    assert "<table>" in page


def test_no_pii_in_status_or_the_page(aws_stack, client):
    s3, sfn = aws_stack
    batch = client.lambda_.invoke("generate_batch", scheduled_event(client)).payload
    body = s3.get_object(Bucket=LANDING, Key=batch["key"])["Body"].read().decode("utf-8")
    records = [json.loads(line) for line in body.splitlines()]
    event = client.events.generate_s3_event(bucket=LANDING, key=batch["key"])
    [started] = client.lambda_.invoke("on_landing", event).payload
    assert started["outcome"] == "started"

    status_text = client.http.get("/status").body.decode("utf-8")
    page = client.http.get("/").body.decode("utf-8")

    assert batch["key"] in status_text
    for record in records:
        for pii in (record["customer_name"], record["street_address"]):
            assert pii not in status_text
            assert pii not in page and html.escape(pii) not in page
