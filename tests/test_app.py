import html
import json
import time
from urllib.parse import quote

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from chalice.test import Client
from hypothesis import given, settings, strategies as st
from moto import mock_aws

import app as app_module
from chalicelib import naming, status
from chalicelib.resources import INCOMING_PREFIX, Resources
from chalicelib.settings import Settings

from conftest import PROJECT_DIR

STAGE = "local"
RESOURCES = Resources.from_settings(Settings(stage=STAGE))
LANDING = RESOURCES.landing_bucket
FAILURE_CAUSE = {"step": "json-to-parquet", "error": "States.TaskFailed", "cause": "no valid record"}
# Stands in for the pipeline: state names of the real one (so the timeline has its steps); ends at
# once with an output shaped like the real one's, or fails as it does for keys holding "bad".
SUMMARY_MACHINE = {
    "StartAt": "ConvertToParquet",
    "States": {
        "ConvertToParquet": {"Type": "Choice", "Choices": [
            {"Variable": "$.key", "StringMatches": "*bad*", "Next": "JsonToParquetFailed"}],
            "Default": "SummarizeRun"},
        "JsonToParquetFailed": {"Type": "Pass", "Next": "Failed"},
        "Failed": {"Type": "Fail", "Error": "TaskFailed", "Cause": json.dumps(FAILURE_CAUSE)},
        "SummarizeRun": {
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
        },
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
    # The same executions (StartExecution is idempotent for a running one), nothing new.
    assert [r["execution_arn"] for r in again] == [r["execution_arn"] for r in first]
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


def test_status_without_a_reachable_stack_says_to_start_it(aws_credentials, monkeypatch, client):
    # chalice local pointed at a local stack that is not running: nothing listens on the port.
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setattr(app_module, "_clients", {})
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:%d" % closed_port)

    response = client.http.get("/status")

    assert response.status_code == 503
    message = response.json_body["Message"]
    assert "cannot connect to Step Functions at http://127.0.0.1:%d" % closed_port in message
    assert "python -m local up" in message and "AWS_ENDPOINT_URL" in message


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


def wait_until_ended(sfn, execution_arn, limit_seconds=20):
    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        if sfn.describe_execution(executionArn=execution_arn)["status"] != "RUNNING":
            return
        time.sleep(0.05)
    raise AssertionError("execution %s still running after %ss" % (execution_arn, limit_seconds))


def land_and_finish(client, sfn, key):
    [result] = land(client, key)
    wait_until_ended(sfn, result["execution_arn"])
    return result["execution_name"]


def test_status_of_one_execution_has_its_steps(aws_stack, client):
    _, sfn = aws_stack
    name = land_and_finish(client, sfn, "incoming/2026/01/30/one.json")

    response = client.http.get("/status/%s" % name)

    assert response.status_code == 200
    body = response.json_body
    assert (body["name"], body["status"], body["source"]) == (
        name, "SUCCEEDED", "s3://%s/incoming/2026/01/30/one.json" % LANDING)
    assert body["totals"]["shipping_cost"] == 1000.0
    assert [(s["step"], s["outcome"]) for s in body["steps"]] == [
        ("json-to-parquet", "SUCCEEDED"), ("notify", "SUCCEEDED")]
    assert all(s["duration_seconds"] is not None for s in body["steps"])


def test_status_of_a_failed_execution_says_which_step_failed_and_why(aws_stack, client):
    _, sfn = aws_stack
    name = land_and_finish(client, sfn, "incoming/bad.json")

    body = client.http.get("/status/%s" % name).json_body

    assert (body["status"], body["failed_step"], body["error"], body["cause"]) == (
        "FAILED", "json-to-parquet", "States.TaskFailed", "no valid record")
    assert [(s["step"], s["outcome"]) for s in body["steps"]] == [
        ("json-to-parquet", "FAILED"), ("on-failure", "SUCCEEDED")]


def test_status_of_an_unknown_execution_is_404(aws_stack, client):
    response = client.http.get("/status/never-ran")

    assert response.status_code == 404
    assert "no execution named 'never-ran'" in response.json_body["Message"]


@pytest.mark.parametrize("name", ["a%20b", "a:b", "x" * 81, "%C3%A9"])
def test_status_of_a_name_no_execution_can_have_is_400(aws_credentials, client, name):
    response = client.http.get("/status/%s" % name)

    assert response.status_code == 400
    assert "1 to 80 characters of A-Z, a-z, 0-9, '-' and '_'" in response.json_body["Message"]


@pytest.mark.parametrize("path, message", [
    ("/status?limt=5", "unknown query parameter 'limt': allowed are limit"),
    ("/status?limit=5&limit=6", "give the query parameter 'limit' once"),
    ("/status/run-1?limit=5", "unknown query parameter 'limit': allowed are none"),
    ("/?page=2", "unknown query parameter 'page': allowed are limit, run"),
    ("/?limit=500", "limit must be a whole number from 1 to 100"),
    ("/?run=a:b", "1 to 80 characters"),
])
def test_bad_query_parameters_are_400_saying_what_is_allowed(aws_credentials, client, path, message):
    # Refused before any AWS call: no stack needed.
    response = client.http.get(path)

    assert response.status_code == 400
    assert message in response.json_body["Message"]


def test_dashboard_shows_runs_charts_and_the_newest_runs_steps(aws_stack, client):
    _, sfn = aws_stack
    older = land_and_finish(client, sfn, "incoming/2026/01/30/older.json")
    failed = land_and_finish(client, sfn, "incoming/2026/01/30/bad.json")
    newest = land_and_finish(client, sfn, "incoming/2026/01/30/newest.json")

    response = client.http.get("/")

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    page = response.body.decode("utf-8")
    for name in (older, failed, newest):
        assert 'href="?run=%s"' % name in page
    assert "Steps of %s" % newest in page
    assert page.count("<svg") == 4  # rows, totals, quarantined share, steps
    assert "Data quality: quarantined share" in page
    assert "No alarms: deploy the stage" in page  # this account has none
    assert "failed at json-to-parquet: States.TaskFailed — no valid record" in page


def test_dashboard_shows_the_steps_of_the_chosen_run(aws_stack, client):
    _, sfn = aws_stack
    chosen = land_and_finish(client, sfn, "incoming/2026/01/30/chosen.json")
    land_and_finish(client, sfn, "incoming/2026/01/30/later.json")

    page = client.http.get("/?run=%s&limit=1" % chosen).body.decode("utf-8")

    assert "Steps of %s" % chosen in page


def test_dashboard_of_an_unknown_run_is_404(aws_stack, client):
    response = client.http.get("/?run=never-ran")

    assert response.status_code == 404


def test_dashboard_without_runs_says_how_to_start_one(aws_stack, client):
    page = client.http.get("/").body.decode("utf-8")

    assert "No runs yet" in page and "incoming/" in page


def test_dashboard_without_a_deployed_state_machine_says_to_deploy(aws_credentials, monkeypatch, client):
    monkeypatch.setattr(app_module, "_clients", {})
    with mock_aws():
        response = client.http.get("/")

    assert response.status_code == 503
    assert "deploy" in response.json_body["Message"]


@pytest.mark.parametrize("error, code, message", [
    (ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "ListExecutions"),
     503, "retry in a few seconds"),
    (ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "ListExecutions"),
     502, "Step Functions answered AccessDeniedException"),
    (EndpointConnectionError(endpoint_url="https://states.us-east-1.amazonaws.com"), 503,
     "cannot connect to Step Functions at https://states.us-east-1.amazonaws.com: retry in a few seconds. "
     "With chalice local: start the local stack first (python -m local up)"),
    (ReadTimeoutError(endpoint_url="https://states.us-east-1.amazonaws.com"), 503, "did not answer in time"),
])
def test_step_functions_failures_are_answered_not_500(aws_stack, client, monkeypatch, error, code, message):
    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(status, "recent_executions", failing)

    response = client.http.get("/status")

    assert response.status_code == code
    assert message in response.json_body["Message"]


def test_no_pii_in_one_executions_status(aws_stack, client):
    s3, sfn = aws_stack
    batch = client.lambda_.invoke("generate_batch", scheduled_event(client)).payload
    body = s3.get_object(Bucket=LANDING, Key=batch["key"])["Body"].read().decode("utf-8")
    records = [json.loads(line) for line in body.splitlines()]
    name = land_and_finish(client, sfn, batch["key"])

    detail = client.http.get("/status/%s" % name).body.decode("utf-8")
    page = client.http.get("/?run=%s" % name).body.decode("utf-8")

    assert name in detail and name in page
    for record in records:
        for pii in (record["customer_name"], record["street_address"]):
            assert pii not in detail
            assert pii not in page and html.escape(pii) not in page


# -- robustness: whatever a client sends, the answer is never a server error --------------------

_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_PARAM_NAMES = st.one_of(st.sampled_from(["limit", "run", "LIMIT", "limit[]", ""]), _TEXT)
_PARAM_VALUES = st.one_of(st.sampled_from(["1", "20", "100", "0", "101", "-1", "1e2", " 7 ", "", "x" * 81]),
                          st.integers(-10 ** 6, 10 ** 6).map(str), _TEXT)
_QUERIES = st.lists(st.tuples(_PARAM_NAMES, _PARAM_VALUES), max_size=3).map(
    lambda pairs: "&".join("%s=%s" % (quote(k, safe=""), quote(v, safe="")) for k, v in pairs))
_NAMES = st.one_of(st.from_regex(r"[A-Za-z0-9_-]{1,90}", fullmatch=True), _TEXT.filter(bool))


def test_no_request_gets_a_server_error(aws_stack, client):
    _, sfn = aws_stack
    names = [land_and_finish(client, sfn, "incoming/good.json"), land_and_finish(client, sfn, "incoming/bad.json")]
    run_names = st.one_of(st.sampled_from(names), _NAMES)

    @settings(max_examples=200, deadline=None, database=None)
    @given(route=st.sampled_from(["/", "/status", "/status/{name}"]), name=run_names,
           query=st.one_of(_QUERIES, run_names.map(lambda n: "run=" + quote(n, safe=""))))
    def check(route, name, query):
        path = route.replace("{name}", quote(name, safe=""))
        if query:
            path += "?" + query

        response = client.http.get(path)

        assert response.status_code in (200, 400, 403, 404), (path, response.status_code, response.body[:300])
        if response.status_code != 200:
            assert response.json_body.get("Message") or response.json_body.get("message")

    check()
