import datetime as dt
import json
import threading
import time

import boto3
import pytest
from dateutil.tz import tzlocal
from moto import mock_aws

from botocore.exceptions import ClientError
from botocore.stub import Stubber

from chalicelib.status import (FAILURE_BRANCH, check_execution_name, check_limit, check_query,
                               execution_arn, execution_detail, execution_history, overview,
                               recent_executions, step_timeline, summarize)

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
        "scanned_bytes": None,
        "superseded": None,
        "notification_id": "msg-1",
        "error": None,
        "cause": None,
        "failed_step": None,
    }
    json.dumps(summary)  # serializable as /status returns it


def test_summary_reports_the_bytes_the_query_scanned_and_a_superseded_version():
    output = dict(SUCCESS_OUTPUT, superseded=True)
    output["query"] = dict(SUCCESS_OUTPUT["query"], scanned_bytes=138215)

    summary = summarize(described(stopDate=STARTED + dt.timedelta(seconds=3), output=json.dumps(output)))

    assert summary["scanned_bytes"] == 138215 and summary["superseded"] is True


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

    # kept as text, its quoted passages blanked: a cause may quote record content
    assert summary["cause"] == '["<redacted>", "<redacted>"]'
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


def test_a_glue_job_runs_cause_is_shortened_to_its_error_message():
    job_run = {"Id": "jr_1", "JobName": "json-to-parquet", "JobRunState": "FAILED",
               "ErrorMessage": "no valid record in s3://landing/incoming/a.json", "Arguments": {"--x": "y"}}
    cause = {"step": "json-to-parquet", "error": "States.TaskFailed", "cause": json.dumps(job_run)}

    summary = summarize(described(status="FAILED", error="TaskFailed", cause=json.dumps(cause)))

    assert summary["cause"] == "no valid record in s3://landing/incoming/a.json"
    assert summary["error"] == "States.TaskFailed"


def test_a_run_whose_job_found_no_valid_record_shows_the_jobs_counts():
    job_run = {"Id": "jr_1", "JobName": "json-to-parquet", "JobRunState": "FAILED",
               "ErrorMessage": "JobError: no valid record in s3://landing/incoming/photo.png: 3 lines read, "
                               "3 quarantined (see s3://lake/quarantine/photo/)"}
    cause = {"step": "json-to-parquet", "error": "States.TaskFailed", "cause": json.dumps(job_run)}

    summary = summarize(described(status="FAILED", error="TaskFailed", cause=json.dumps(cause)))

    assert summary["rows"] == {"read": 3, "valid": 0, "quarantined": 3, "duplicates": 0}
    assert summary["totals"] is None


@pytest.mark.parametrize("name", ["a", "run-1", "shipping-20261127T064510Z-79584183222a-d29d2876b29af7369acf",
                                  "x" * 80, "A_b-9"])
def test_check_execution_name_accepts_the_pipelines_names(name):
    assert check_execution_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 81, "a b", "a:b", "../x", "a/b", "é", None, 5])
def test_check_execution_name_refuses_anything_else(name):
    with pytest.raises(ValueError, match="1 to 80 characters of A-Z, a-z, 0-9"):
        check_execution_name(name)


def test_check_query_returns_single_values_of_allowed_parameters():
    assert check_query({"limit": ["5"]}, ("limit", "run")) == {"limit": "5"}
    assert check_query({}, ("limit",)) == {}
    assert check_query(None, ()) == {}


def test_check_query_names_the_allowed_parameters():
    with pytest.raises(ValueError, match="unknown query parameter 'limt': allowed are limit, run"):
        check_query({"limt": ["5"]}, ("limit", "run"))
    with pytest.raises(ValueError, match="allowed are none"):
        check_query({"x": ["1"]}, ())
    with pytest.raises(ValueError, match="'limit' once, got it 2 times"):
        check_query({"limit": ["1", "2"]}, ("limit",))


def test_execution_arn_is_the_state_machines_execution():
    assert execution_arn(MACHINE_ARN, "run-1") == (
        "arn:aws:states:%s:%s:execution:shipping-etl-test-pipeline:run-1" % (REGION, ACCOUNT_ID))
    with pytest.raises(ValueError):
        execution_arn(MACHINE_ARN, "other-machine:run-1")
    with pytest.raises(ValueError, match="not a state machine ARN"):
        execution_arn("arn:aws:sns:us-east-1:1:topic", "run-1")


# -- step timelines from history events --------------------------------------------------------

def at(seconds):
    return STARTED + dt.timedelta(seconds=seconds)


class History:
    """History events as GetExecutionHistory returns them, numbered in order."""

    def __init__(self):
        self.events = []

    def add(self, seconds, event_type, previous=None, **details):
        event_id = len(self.events) + 1
        event = {"timestamp": at(seconds), "type": event_type, "id": event_id,
                 "previousEventId": event_id - 1 if previous is None else previous}
        if details:
            key = {"Entered": "stateEnteredEventDetails", "Exited": "stateExitedEventDetails"}.get(
                event_type[-7:], event_type[0].lower() + event_type[1:] + "EventDetails")
            event[key] = details
        self.events.append(event)
        return self

    def task(self, start, state, seconds=1.0, failures=(), caught=False):
        """A Task state visit: one failed call per error in ``failures``, then a success (or,
        with ``caught``, the last failure caught)."""
        self.add(start, "TaskStateEntered", name=state)
        t = start
        for error in failures:
            self.add(t, "TaskScheduled", resource="x").add(t, "TaskStarted")
            t += seconds
            self.add(t, "TaskFailed", error=error, cause="because")
        if not caught:
            self.add(t, "TaskScheduled", resource="x").add(t, "TaskStarted")
            t += seconds
            self.add(t, "TaskSucceeded", output="{}")
        self.add(t, "TaskStateExited", name=state)
        return t

    def passes(self, at_seconds, state):
        return self.add(at_seconds, "PassStateEntered", name=state).add(at_seconds, "PassStateExited", name=state)


def by_step(timeline):
    return {entry["step"]: entry for entry in timeline}


def test_timeline_of_a_succeeded_run_has_each_step_with_times_and_attempts():
    h = History().add(0, "ExecutionStarted")
    t = h.task(0, "ConvertToParquet", seconds=2, failures=["Glue.ThrottlingException"])
    t = h.task(t, "StartRawCrawl", seconds=0.5)
    h.passes(t, "Done").add(t, "ExecutionSucceeded")

    timeline = step_timeline(h.events, status="SUCCEEDED")

    assert [s["step"] for s in timeline] == ["json-to-parquet", "crawl-raw", "notify"]
    first = timeline[0]
    assert first == {"step": "json-to-parquet", "started": "2026-01-30T10:00:00+00:00",
                     "stopped": "2026-01-30T10:00:04+00:00", "duration_seconds": 4.0,
                     "attempts": 2, "outcome": "SUCCEEDED", "error": None}
    assert timeline[1]["attempts"] == 1 and timeline[1]["duration_seconds"] == 0.5
    assert timeline[2]["attempts"] == 0


def test_timeline_counts_attempts_per_visit_not_crawler_polls():
    h = History().add(0, "ExecutionStarted")
    t = 0
    for _ in range(5):  # the poll loop re-enters the same states
        h.add(t, "WaitStateEntered", name="WaitForRawCrawl").add(t + 1, "WaitStateExited", name="WaitForRawCrawl")
        t = h.task(t + 1, "GetRawCrawlerState", seconds=0.1)

    [crawl] = step_timeline(h.events, status="RUNNING")

    assert crawl["step"] == "crawl-raw"
    assert crawl["attempts"] == 1
    assert crawl["duration_seconds"] == 5.5


def test_timeline_of_a_failed_run_marks_the_failed_step_and_the_failure_branch():
    h = History().add(0, "ExecutionStarted")
    t = h.task(0, "ConvertToParquet")
    t = h.task(t, "StartRawCrawl", failures=["glue.EntityNotFoundException"], caught=True)
    h.passes(t, "CrawlRawFailed")
    t = h.task(t, "NotifyFailure", seconds=0.25)
    h.add(t, "ChoiceStateEntered", name="ChooseFailState").add(t, "ChoiceStateExited", name="ChooseFailState")
    h.add(t, "FailStateEntered", name="Failed").add(t, "ExecutionFailed", error="EntityNotFoundException")

    steps = by_step(step_timeline(h.events, status="FAILED", failed_step="crawl-raw"))

    assert list(steps) == ["json-to-parquet", "crawl-raw", FAILURE_BRANCH]
    assert steps["json-to-parquet"]["outcome"] == "SUCCEEDED"
    assert (steps["crawl-raw"]["outcome"], steps["crawl-raw"]["error"]) == ("FAILED", "glue.EntityNotFoundException")
    assert steps[FAILURE_BRANCH]["outcome"] == "SUCCEEDED"
    assert steps[FAILURE_BRANCH]["stopped"] == "2026-01-30T10:00:02.250000+00:00"


def test_timeline_without_a_failed_step_blames_the_step_the_run_ended_in():
    h = History().add(0, "ExecutionStarted")
    t = h.task(0, "ConvertToParquet")
    h.add(t, "TaskStateEntered", name="Normalize").add(t, "TaskScheduled", resource="x")
    h.add(t + 3, "TaskTimedOut", error="States.Timeout").add(t + 3, "ExecutionFailed", error="States.Timeout")

    steps = by_step(step_timeline(h.events))

    assert steps["json-to-parquet"]["outcome"] == "SUCCEEDED"
    assert (steps["normalize"]["outcome"], steps["normalize"]["error"]) == ("FAILED", "States.Timeout")
    assert steps["normalize"]["stopped"] == "2026-01-30T10:00:04+00:00"


def test_timeline_of_a_caught_failure_that_carried_on():
    h = History().add(0, "ExecutionStarted")
    t = h.task(0, "ConvertToParquet", failures=["Glue.EntityNotFoundException"], caught=True)
    t = h.task(t, "Normalize")
    h.passes(t, "Done").add(t, "ExecutionSucceeded")

    steps = by_step(step_timeline(h.events, status="SUCCEEDED"))

    assert (steps["json-to-parquet"]["outcome"], steps["json-to-parquet"]["error"]) == (
        "CAUGHT", "Glue.EntityNotFoundException")
    assert steps["normalize"]["outcome"] == "SUCCEEDED"


def test_timeline_of_a_failure_handled_inside_its_step_is_a_success():
    h = History().add(0, "ExecutionStarted")
    # The crawler is already running: the start fails, is caught, and the step waits for that crawl.
    t = h.task(0, "StartRawCrawl", failures=["glue.CrawlerRunningException"], caught=True)
    h.add(t, "WaitStateEntered", name="WaitForRunningRawCrawl").add(t + 2, "WaitStateExited", name="WaitForRunningRawCrawl")
    t = h.task(t + 2, "GetRunningRawCrawlerState")
    h.passes(t, "Done").add(t, "ExecutionSucceeded")

    steps = by_step(step_timeline(h.events, status="SUCCEEDED"))

    assert (steps["crawl-raw"]["outcome"], steps["crawl-raw"]["error"]) == ("SUCCEEDED", None)
    assert steps["crawl-raw"]["duration_seconds"] == 4.0


def test_timeline_of_a_running_step_has_no_end_and_shows_a_pending_retry():
    h = History().add(0, "ExecutionStarted")
    t = h.task(0, "ConvertToParquet")
    h.add(t, "TaskStateEntered", name="Normalize").add(t, "TaskScheduled", resource="x")
    h.add(t + 1, "TaskFailed", error="Glue.ConcurrentRunsExceededException")

    steps = by_step(step_timeline(h.events, status="RUNNING"))

    running = steps["normalize"]
    assert (running["outcome"], running["stopped"], running["duration_seconds"]) == ("RUNNING", None, None)
    assert running["error"] == "Glue.ConcurrentRunsExceededException"


def test_timeline_keeps_states_the_builder_does_not_know_under_their_own_names():
    h = History().add(0, "ExecutionStarted").passes(0, "SomeNewState").passes(1, "Done")

    assert [s["step"] for s in step_timeline(h.events)] == ["SomeNewState", "notify"]


def test_timeline_attributes_task_events_without_a_pointer_to_the_state_last_entered():
    h = History().add(0, "ExecutionStarted")
    h.add(0, "TaskStateEntered", name="Normalize").add(0, "TaskScheduled", previous=0, resource="x")
    h.add(1, "TaskSucceeded", previous=0).add(1, "TaskStateExited", name="Normalize")

    [normalize] = step_timeline(h.events)

    assert (normalize["step"], normalize["attempts"], normalize["outcome"]) == ("normalize", 1, "SUCCEEDED")


def test_execution_history_reads_every_page(aws_credentials):
    sfn = boto3.client("stepfunctions")
    arn = execution_arn(MACHINE_ARN, "run-1")
    pages = [[{"id": 1, "type": "ExecutionStarted", "timestamp": STARTED}],
             [{"id": 2, "type": "ExecutionSucceeded", "timestamp": STARTED}]]
    with Stubber(sfn) as stub:
        stub.add_response("get_execution_history", {"events": pages[0], "nextToken": "t1"},
                          {"executionArn": arn, "maxResults": 1000, "includeExecutionData": False})
        stub.add_response("get_execution_history", {"events": pages[1]},
                          {"executionArn": arn, "maxResults": 1000, "includeExecutionData": False,
                           "nextToken": "t1"})

        events, complete = execution_history(sfn, arn)

    assert [e["id"] for e in events] == [1, 2]
    assert complete is True


def test_execution_history_stops_after_its_page_bound(aws_credentials):
    sfn = boto3.client("stepfunctions")
    arn = execution_arn(MACHINE_ARN, "run-1")
    with Stubber(sfn) as stub:
        for i in range(2):
            stub.add_response("get_execution_history", {
                "events": [{"id": i + 1, "type": "PassStateEntered", "timestamp": STARTED}],
                "nextToken": "t%d" % (i + 1)})

        events, complete = execution_history(sfn, arn, max_pages=2)
        stub.assert_no_pending_responses()

    assert len(events) == 2
    assert complete is False


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


class CountingClient:
    """A Step Functions client that counts the calls made through it, by name."""

    def __init__(self, client):
        self._client = client
        self.calls = []

    def __getattr__(self, name):
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            self.calls.append(name)
            return attribute(*args, **kwargs)
        return call


def test_a_status_request_makes_a_bounded_number_of_calls_and_ended_runs_are_described_once(sfn):
    from chalicelib.status import MAX_DESCRIBES_PER_REQUEST

    arn = create_machine(sfn, "pipeline", {"Done": {"Type": "Pass", "End": True}}, "Done")
    for i in range(50):
        sfn.start_execution(stateMachineArn=arn, name="run-%02d" % i, input=json.dumps(EXECUTION_INPUT))
    deadline = time.monotonic() + 60
    while any(e["status"] == "RUNNING" for e in sfn.list_executions(stateMachineArn=arn)["executions"]):
        assert time.monotonic() < deadline, "executions did not end"
        time.sleep(0.1)
    counting = CountingClient(sfn)

    per_request = []
    for _ in range(4):
        counting.calls.clear()
        summaries = recent_executions(counting, arn, limit=100)
        per_request.append(len(counting.calls))

    assert per_request == [1 + MAX_DESCRIBES_PER_REQUEST, 1 + MAX_DESCRIBES_PER_REQUEST, 1 + 10, 1]
    assert all(s["source"] == SOURCE for s in summaries)  # every one described by now


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


RETRYING_MACHINE = {
    "ConvertToParquet": {"Type": "Pass", "Next": "StartRawCrawl"},
    # Publishing to a topic that does not exist fails: retried once, then caught.
    "StartRawCrawl": {
        "Type": "Task", "Resource": "arn:aws:states:::sns:publish",
        "Parameters": {"TopicArn": "arn:aws:sns:%s:%s:missing" % (REGION, ACCOUNT_ID), "Message": "x"},
        "Retry": [{"ErrorEquals": ["States.ALL"], "MaxAttempts": 1, "IntervalSeconds": 1}],
        "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "CrawlRawFailed", "ResultPath": "$.error"}],
        "End": True,
    },
    "CrawlRawFailed": {"Type": "Pass", "Next": "NotifyFailure"},
    "NotifyFailure": {"Type": "Pass", "Next": "Failed"},
    "Failed": {"Type": "Fail", "Error": "NotFoundException",
               "Cause": json.dumps({"step": "crawl-raw", "error": "SNS.NotFoundException", "cause": "no topic"})},
}


def test_execution_detail_of_a_real_execution_has_its_step_timeline(sfn):
    arn = create_machine(sfn, "pipeline", RETRYING_MACHINE, "ConvertToParquet")
    started = sfn.start_execution(stateMachineArn=arn, name="retried", input=json.dumps(EXECUTION_INPUT))
    wait_until_ended(sfn, started["executionArn"])

    detail = execution_detail(sfn, started["executionArn"])

    assert (detail["name"], detail["status"], detail["failed_step"]) == ("retried", "FAILED", "crawl-raw")
    assert detail["history_complete"] is True
    steps = by_step(detail["steps"])
    assert list(steps) == ["json-to-parquet", "crawl-raw", FAILURE_BRANCH]
    assert steps["json-to-parquet"]["outcome"] == "SUCCEEDED"
    crawl = steps["crawl-raw"]
    assert (crawl["outcome"], crawl["attempts"]) == ("FAILED", 2)
    assert crawl["error"].endswith("NotFoundException")
    assert crawl["duration_seconds"] >= 1  # the retry waited its interval
    assert all(s["started"] and s["stopped"] for s in detail["steps"])


def test_execution_detail_of_an_unknown_execution_fails_with_its_error_code(sfn):
    arn = create_machine(sfn, "pipeline", {"Done": {"Type": "Pass", "End": True}}, "Done")

    with pytest.raises(sfn.exceptions.ClientError) as raised:
        execution_detail(sfn, execution_arn(arn, "never-ran"))

    assert raised.value.response["Error"]["Code"] == "ExecutionDoesNotExist"


def test_overview_includes_the_steps_of_the_newest_or_the_selected_run(sfn):
    arn = create_machine(sfn, "pipeline", {"Normalize": {"Type": "Pass", "Next": "Done"},
                                           "Done": {"Type": "Pass", "End": True}}, "Normalize")
    for name in ("first", "second", "third"):
        started = sfn.start_execution(stateMachineArn=arn, name=name, input=json.dumps(EXECUTION_INPUT))
        wait_until_ended(sfn, started["executionArn"])

    newest = overview(sfn, arn, limit=2)
    chosen = overview(sfn, arn, limit=2, selected="first")
    without = overview(sfn, arn, limit=2, with_steps=False)

    assert [s["name"] for s in newest["executions"]] == ["third", "second"]
    assert newest["selected"]["name"] == "third"
    assert [s["step"] for s in newest["selected"]["steps"]] == ["normalize", "notify"]
    assert chosen["selected"]["name"] == "first"  # older than the listed page: described on its own
    assert [s["name"] for s in chosen["executions"]] == ["third", "second"]
    assert without["selected"] is None


def test_overview_of_an_unknown_selected_run_fails_with_its_error_code(sfn):
    arn = create_machine(sfn, "pipeline", {"Done": {"Type": "Pass", "End": True}}, "Done")
    sfn.start_execution(stateMachineArn=arn, name="only", input="{}")

    with pytest.raises(sfn.exceptions.ClientError) as raised:
        overview(sfn, arn, selected="never-ran")

    assert raised.value.response["Error"]["Code"] == "ExecutionDoesNotExist"


class SlowStepFunctions:
    """Lists two executions (newest first) at once; every other call waits until ``release`` is set (a Step
    Functions that answers too slowly, which moto cannot be made to be)."""

    def __init__(self):
        self.release = threading.Event()

    def list_executions(self, stateMachineArn, maxResults):
        return {"executions": [
            {"executionArn": execution_arn(MACHINE_ARN, name), "name": name, "status": "SUCCEEDED",
             "startDate": STARTED - dt.timedelta(seconds=i)} for i, name in enumerate(["newer", "older"])]}

    def describe_execution(self, executionArn):
        self.release.wait(10)
        return described(executionArn=executionArn, name=executionArn.rsplit(":", 1)[-1],
                         output=json.dumps(SUCCESS_OUTPUT))

    def get_execution_history(self, **kwargs):
        self.release.wait(10)
        return {"events": []}


def test_overview_answers_from_the_listing_when_step_functions_is_too_slow():
    sfn = SlowStepFunctions()
    try:
        result = overview(sfn, MACHINE_ARN, limit=5, budget_seconds=0.05)
    finally:
        sfn.release.set()

    assert [(s["name"], s["status"], s["rows"]) for s in result["executions"]] == [
        ("newer", "SUCCEEDED", None), ("older", "SUCCEEDED", None)]
    assert result["selected"] is None


def test_overview_within_its_budget_describes_everything():
    sfn = SlowStepFunctions()
    sfn.release.set()

    result = overview(sfn, MACHINE_ARN, limit=5, budget_seconds=10)

    assert [s["rows"]["valid"] for s in result["executions"]] == [100, 100]
    assert result["selected"]["name"] == "newer"


class NoHistory(SlowStepFunctions):
    """Answers at once, but may not read execution histories (as a role without
    states:GetExecutionHistory)."""

    def __init__(self):
        super().__init__()
        self.release.set()

    def get_execution_history(self, **kwargs):
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "GetExecutionHistory")


def test_overview_without_the_newest_runs_history_still_lists_the_runs():
    result = overview(NoHistory(), MACHINE_ARN, limit=5)

    assert [s["name"] for s in result["executions"]] == ["newer", "older"]
    assert result["selected"] is None


def test_overview_of_a_chosen_run_whose_history_cannot_be_read_fails_with_its_error_code():
    with pytest.raises(ClientError) as raised:
        overview(NoHistory(), MACHINE_ARN, limit=5, selected="older")

    assert raised.value.response["Error"]["Code"] == "AccessDeniedException"


def test_timeline_without_a_failed_step_blames_the_last_step_before_the_failure_branch():
    h = History().add(0, "ExecutionStarted")
    t = h.task(0, "ConvertToParquet")
    t = h.task(t, "Normalize", failures=["Glue.EntityNotFoundException"], caught=True)
    h.passes(t, "NormalizeFailed")
    t = h.task(t, "NotifyFailure")
    h.add(t, "FailStateEntered", name="Failed").add(t, "ExecutionFailed", error="EntityNotFoundException")

    steps = by_step(step_timeline(h.events, status="FAILED"))

    assert (steps["normalize"]["outcome"], steps["normalize"]["error"]) == ("FAILED", "Glue.EntityNotFoundException")
    assert steps["json-to-parquet"]["outcome"] == "SUCCEEDED"
    assert steps[FAILURE_BRANCH]["outcome"] == "SUCCEEDED"
