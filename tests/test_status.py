import datetime as dt
import json
import time

import boto3
import pytest
from dateutil.tz import tzlocal
from moto import mock_aws

from chalicelib.status import check_limit, recent_executions, render_page, summarize

from conftest import ACCOUNT_ID, REGION

MACHINE_ARN = "arn:aws:states:%s:%s:stateMachine:shipping-etl-test-pipeline" % (REGION, ACCOUNT_ID)
STARTED = dt.datetime(2026, 1, 30, 10, 0, 0, tzinfo=dt.timezone.utc)
SOURCE = "s3://landing/incoming/2026/01/30/batch.json"
SUCCESS_OUTPUT = {
    "source": SOURCE,
    "source_id": "0123456789abcdef0123",
    "rows": {"read": 103, "valid": 100, "quarantined": 2, "duplicates": 1},
    "query": {
        "columns": ["Total_Cost_in_$", "Total_Distance_in_miles", "Total_Fuel_Quantity_in_gal",
                    "Shipments", "Destinations", "Average_Cost_per_Mile_in_$"],
        "values": ["550000.0", "5500.0", "560000.0", "100", "6", "100.0"],
        "query_execution_id": "q-1",
    },
    "notification_id": "msg-1",
}
EXECUTION_INPUT = {"bucket": "landing", "key": "incoming/2026/01/30/batch.json", "etag": "abc",
                   "size": 10, "source_id": "0123456789abcdef0123", "source_uri": SOURCE,
                   "poll_seconds": 0}


def described(**fields):
    """A DescribeExecution response as boto3 returns it."""
    response = {
        "executionArn": "%s:run-1" % MACHINE_ARN.replace(":stateMachine:", ":execution:"),
        "stateMachineArn": MACHINE_ARN,
        "name": "run-1",
        "status": "SUCCEEDED",
        "startDate": STARTED,
        "input": json.dumps(EXECUTION_INPUT),
    }
    response.update(fields)
    return response


def test_succeeded_execution_summary():
    summary = summarize(described(
        stopDate=STARTED + dt.timedelta(seconds=83, milliseconds=500),
        output=json.dumps(SUCCESS_OUTPUT),
    ))

    assert summary == {
        "name": "run-1",
        "status": "SUCCEEDED",
        "source": SOURCE,
        "started": "2026-01-30T10:00:00+00:00",
        "stopped": "2026-01-30T10:01:23.500000+00:00",
        "duration_seconds": 83.5,
        "rows": {"read": 103, "valid": 100, "quarantined": 2, "duplicates": 1},
        "totals": {"shipping_cost": 550000.0, "shipping_distance": 5500.0, "quantity": 560000.0,
                   "shipments": 100, "destinations": 6, "cost_per_mile": 100.0},
        "notification_id": "msg-1",
        "error": None,
        "cause": None,
        "failed_step": None,
    }
    json.dumps(summary)  # serializable as /status returns it


def test_failed_execution_summary_reads_the_json_cause():
    cause = {"step": "crawl-raw", "error": "CrawlFailed", "cause": "LastCrawl.Status was FAILED"}

    summary = summarize(described(
        status="FAILED", stopDate=STARTED + dt.timedelta(seconds=5),
        error="CrawlFailed", cause=json.dumps(cause),
    ))

    assert summary["status"] == "FAILED"
    assert (summary["failed_step"], summary["error"], summary["cause"]) == (
        "crawl-raw", "CrawlFailed", "LastCrawl.Status was FAILED")
    assert summary["source"] == SOURCE
    assert summary["rows"] is None and summary["totals"] is None
    assert summary["duration_seconds"] == 5.0


def test_failed_execution_with_a_plain_text_cause_keeps_the_text():
    summary = summarize(described(status="FAILED", stopDate=STARTED, error="States.Timeout",
                                  cause="Task timed out after 900 seconds"))

    assert summary["error"] == "States.Timeout"
    assert summary["cause"] == "Task timed out after 900 seconds"
    assert summary["failed_step"] is None


def test_a_json_cause_that_is_not_an_object_is_kept_as_text():
    summary = summarize(described(status="FAILED", error="E", cause='["a", "b"]'))

    assert summary["cause"] == '["a", "b"]'
    assert summary["failed_step"] is None


def test_a_very_long_cause_is_shortened():
    summary = summarize(described(status="FAILED", error="E", cause="x" * 50000))

    assert len(summary["cause"]) < 3000


def test_running_execution_summary():
    summary = summarize(described(status="RUNNING"))

    assert summary["status"] == "RUNNING"
    assert summary["source"] == SOURCE
    assert summary["stopped"] is None and summary["duration_seconds"] is None
    assert summary["rows"] is None and summary["totals"] is None and summary["error"] is None


def test_datetimes_are_iso_strings_in_utc():
    local_start = STARTED.astimezone(tzlocal())

    summary = summarize(described(startDate=local_start))

    assert summary["started"] == "2026-01-30T10:00:00+00:00"


def test_summary_copies_only_the_known_fields():
    output = dict(SUCCESS_OUTPUT, customer_name="Jane Doe",
                  rows=dict(SUCCESS_OUTPUT["rows"], sample="Jane Doe"))

    summary = summarize(described(stopDate=STARTED, output=json.dumps(output)))

    assert "Jane Doe" not in json.dumps(summary)


def test_unparseable_query_values_give_no_totals():
    output = dict(SUCCESS_OUTPUT, query={"columns": [], "values": ["not a number"]})

    assert summarize(described(stopDate=STARTED, output=json.dumps(output)))["totals"] is None


@pytest.mark.parametrize("limit, expected", [(1, 1), ("20", 20), ("100", 100), (" 7 ", 7)])
def test_check_limit_accepts_whole_numbers_from_1_to_100(limit, expected):
    assert check_limit(limit) == expected


@pytest.mark.parametrize("limit", [0, 101, "0", "101", "-1", "abc", "", "1.5", "1e2", None, True, 2.0])
def test_check_limit_refuses_anything_else(limit):
    with pytest.raises(ValueError, match="from 1 to 100"):
        check_limit(limit)


def test_render_page_escapes_values_and_lists_every_summary():
    summaries = [
        summarize(described(name="run-%d" % i, stopDate=STARTED, output=json.dumps(SUCCESS_OUTPUT)))
        for i in range(3)
    ]
    summaries[0]["source"] = "s3://b/incoming/<script>alert(1)</script>.json"

    page = render_page(summaries)

    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert page.count("550,000.00") == 3


def test_render_page_without_executions_says_how_to_start_one():
    assert "incoming/" in render_page([])


# -- against Step Functions (moto runs the ASL) ------------------------------------------------

@pytest.fixture
def sfn(aws_credentials):
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        yield boto3.client("stepfunctions")


def create_machine(sfn, name, states, start):
    return sfn.create_state_machine(
        name=name,
        definition=json.dumps({"StartAt": start, "States": states}),
        roleArn="arn:aws:iam::%s:role/test" % ACCOUNT_ID,
    )["stateMachineArn"]


def wait_until_ended(sfn, execution_arn, limit_seconds=20):
    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        response = sfn.describe_execution(executionArn=execution_arn)
        if response["status"] != "RUNNING":
            return response
        time.sleep(0.05)
    raise AssertionError("execution %s still running after %ss" % (execution_arn, limit_seconds))


def test_summaries_of_real_succeeded_and_failed_executions(sfn):
    arn = create_machine(sfn, "pipeline", {
        "Route": {"Type": "Choice", "Choices": [
            {"Variable": "$.fail", "BooleanEquals": True, "Next": "Failed"}], "Default": "Summary"},
        "Summary": {"Type": "Pass", "Result": SUCCESS_OUTPUT, "End": True},
        "Failed": {"Type": "Fail", "Error": "CrawlFailed",
                   "Cause": json.dumps({"step": "crawl-raw", "error": "CrawlFailed", "cause": "crawl FAILED"})},
    }, "Route")
    ok = sfn.start_execution(stateMachineArn=arn, name="ok", input=json.dumps({"fail": False}))
    bad = sfn.start_execution(stateMachineArn=arn, name="bad", input=json.dumps({"fail": True}))

    ok_summary = summarize(wait_until_ended(sfn, ok["executionArn"]))
    bad_summary = summarize(wait_until_ended(sfn, bad["executionArn"]))

    assert ok_summary["status"] == "SUCCEEDED"
    assert ok_summary["totals"]["shipping_cost"] == 550000.0
    assert ok_summary["rows"]["valid"] == 100
    assert ok_summary["notification_id"] == "msg-1"
    assert ok_summary["duration_seconds"] >= 0
    assert bad_summary["status"] == "FAILED"
    assert (bad_summary["failed_step"], bad_summary["error"], bad_summary["cause"]) == (
        "crawl-raw", "CrawlFailed", "crawl FAILED")


def test_recent_executions_are_newest_first_and_limited(sfn):
    arn = create_machine(sfn, "pipeline", {"Done": {"Type": "Pass", "End": True}}, "Done")
    names = ["run-%02d" % i for i in range(12)]
    for name in names:
        sfn.start_execution(stateMachineArn=arn, name=name, input=json.dumps(EXECUTION_INPUT))

    everything = recent_executions(sfn, arn, limit=100)
    newest_five = recent_executions(sfn, arn, limit=5)

    assert [s["name"] for s in everything] == names[::-1]
    assert [s["name"] for s in newest_five] == names[::-1][:5]
    assert all(s["source"] == SOURCE for s in everything)


def test_recent_executions_of_a_machine_without_runs_is_empty(sfn):
    arn = create_machine(sfn, "pipeline", {"Done": {"Type": "Pass", "End": True}}, "Done")

    assert recent_executions(sfn, arn) == []


def test_recent_executions_refuses_a_bad_limit(sfn):
    with pytest.raises(ValueError, match="from 1 to 100"):
        recent_executions(sfn, MACHINE_ARN, limit=0)


def test_recent_executions_of_a_missing_machine_fails_with_its_error_code(sfn):
    with pytest.raises(sfn.exceptions.ClientError) as raised:
        recent_executions(sfn, MACHINE_ARN)

    assert raised.value.response["Error"]["Code"] == "StateMachineDoesNotExist"
