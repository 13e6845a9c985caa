"""The local stack's own parts, fast and in-process: S3 events to the app's handler, the SNS
inbox, waiting for executions, the Chalice app host, the command line.

The whole stack end to end is in test_e2e.py.
"""
import json
import os
import subprocess
import sys
import textwrap
import threading

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from chalicelib import naming
from chalicelib import status as status_summaries
from chalicelib.resources import Resources
from local.events import LandingEvents
from local.run import execution_result, short_cause
from local.stack import (ChaliceApp, ExecutionTimeout, Landed, NotificationInbox, unique_key,
                         wait_for_executions)

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESOURCES = Resources(stage="local", account_id="123456789012", region="us-east-1")


@pytest.fixture
def aws_executing(aws_credentials):
    """moto in-process, with Step Functions really running the state machines."""
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        yield


@pytest.fixture
def landing(aws):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=RESOURCES.landing_bucket)
    return s3


class Recorder:
    """Stands in for the handler invocation: records what it is given, fails on demand."""

    def __init__(self, fail=False):
        self.calls = []
        self.fail = fail
        self.called = threading.Event()

    def __call__(self, function_name, event):
        self.calls.append((function_name, event))
        self.called.set()
        if self.fail:
            raise RuntimeError("handler failed")
        return [{"outcome": "started", "execution_name": "x"}]


def test_events_hand_the_s3_event_to_on_landing_with_the_key_url_encoded(landing):
    recorder = Recorder()
    events = LandingEvents(RESOURCES, recorder, wait_seconds=0)
    events.configure()
    put = landing.put_object(Bucket=RESOURCES.landing_bucket, Key="incoming/a b+c.json", Body=b"{}\n")

    assert events.poll_once() == 1

    [(function_name, event)] = recorder.calls
    assert function_name == "on_landing"
    [record] = event["Records"]
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["s3"]["bucket"]["name"] == RESOURCES.landing_bucket
    assert record["s3"]["object"]["key"] == "incoming/a+b%2Bc.json"  # as Lambda gets it
    assert record["s3"]["object"]["eTag"] == put["ETag"].strip('"')
    assert record["s3"]["object"]["size"] == 3
    # delivered messages are deleted: nothing comes again
    assert events.poll_once() == 0
    assert len(recorder.calls) == 1


def test_events_skip_the_s3_test_event_and_objects_outside_incoming(landing):
    recorder = Recorder()
    events = LandingEvents(RESOURCES, recorder, wait_seconds=0)
    events.configure()  # S3 sends an s3:TestEvent to the queue now
    landing.put_object(Bucket=RESOURCES.landing_bucket, Key="elsewhere/x.json", Body=b"{}\n")
    landing.put_object(Bucket=RESOURCES.landing_bucket, Key="incoming-not/x.json", Body=b"{}\n")

    assert events.poll_once() == 0
    assert recorder.calls == []


def test_events_retry_a_failing_handler_then_drop_the_event(landing):
    recorder = Recorder(fail=True)
    events = LandingEvents(RESOURCES, recorder, wait_seconds=0, visibility_timeout=0, max_receives=2)
    events.configure()
    landing.put_object(Bucket=RESOURCES.landing_bucket, Key="incoming/x.json", Body=b"{}\n")

    for _ in range(4):
        events.poll_once()

    assert len(recorder.calls) == 2
    assert (events.failed, events.dropped, events.delivered) == (2, 1, 0)


def test_events_thread_delivers_until_stopped(landing):
    recorder = Recorder()
    events = LandingEvents(RESOURCES, recorder, wait_seconds=0).start()
    try:
        landing.put_object(Bucket=RESOURCES.landing_bucket, Key="incoming/x.json", Body=b"{}\n")
        assert recorder.called.wait(30), "the poller thread delivered nothing"
    finally:
        events.stop()
    assert len(recorder.calls) == 1
    assert events._thread is None


def test_events_need_the_landing_bucket(aws):
    events = LandingEvents(RESOURCES, Recorder(), wait_seconds=0)
    with pytest.raises(ClientError) as raised:
        events.configure()
    assert raised.value.response["Error"]["Code"] == "NoSuchBucket"


def test_inbox_collects_raw_notifications(aws):
    sns = boto3.client("sns")
    sns.create_topic(Name=RESOURCES.topic_name)
    inbox = NotificationInbox(RESOURCES)
    inbox.subscribe()
    sns.publish(TopicArn=RESOURCES.topic_arn, Subject="one", Message="first body")
    sns.publish(TopicArn=RESOURCES.topic_arn, Message='{"second": 2}')

    assert inbox.collect() == ["first body", '{"second": 2}']
    assert inbox.collect() == ["first body", '{"second": 2}']  # kept, not received twice


def _pass_machine(sfn):
    role = "arn:aws:iam::123456789012:role/%s" % RESOURCES.state_machine_role
    definition = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}
    return sfn.create_state_machine(name=RESOURCES.state_machine_name, definition=json.dumps(definition),
                                    roleArn=role)["stateMachineArn"]


def test_wait_for_executions_returns_each_ended_execution(aws_executing):
    sfn = boto3.client("stepfunctions")
    machine = _pass_machine(sfn)
    assert machine == RESOURCES.state_machine_arn
    for name in ("first", "second"):
        sfn.start_execution(stateMachineArn=machine, name=name, input="{}")

    ended = wait_for_executions(sfn, RESOURCES, ["second", "first"], timeout=30, poll_seconds=0.05)

    assert list(ended) == ["second", "first"]
    assert [d["status"] for d in ended.values()] == ["SUCCEEDED", "SUCCEEDED"]


def test_wait_for_executions_names_what_never_started(aws_executing):
    sfn = boto3.client("stepfunctions")
    machine = _pass_machine(sfn)
    sfn.start_execution(stateMachineArn=machine, name="ran", input="{}")

    with pytest.raises(ExecutionTimeout) as raised:
        wait_for_executions(sfn, RESOURCES, ["ran", "missing"], timeout=0.3, poll_seconds=0.05)

    assert raised.value.pending == {"missing": None}
    assert "missing (never started" in str(raised.value)


def test_landed_names_its_execution_as_the_trigger_does():
    landed = Landed(bucket="b", key="incoming/x.json", etag="abc", size=1)
    assert landed.execution_name == naming.execution_name("b", "incoming/x.json", "abc")
    assert landed.source_id == naming.source_id("b", "incoming/x.json", "abc")
    assert landed.uri == "s3://b/incoming/x.json"


def test_unique_key_keeps_files_of_the_same_name_apart():
    taken = {"incoming/a.json", "incoming/a-2.json"}
    assert unique_key("incoming/b.json.gz", taken) == "incoming/b.json.gz"
    assert unique_key("incoming/a.json", taken) == "incoming/a-3.json"
    assert unique_key("incoming/noext", {"incoming/noext"}) == "incoming/noext-2"


PROBE_APP = textwrap.dedent('''
    import os
    from chalice import Chalice

    app = Chalice(app_name="probe")
    seen = app.seen = []

    @app.on_s3_event(bucket=os.environ["PROBE_BUCKET"], events=["s3:ObjectCreated:*"], prefix="incoming/")
    def on_landing(event):
        seen.append((event.key, os.environ.get("PROBE_STAGE_VALUE")))
        return [{"outcome": "started", "execution_name": "probe"}]

    @app.route("/status")
    def status():
        return {"stage_value": os.environ.get("PROBE_STAGE_VALUE"),
                "limit": (app.current_request.query_params or {}).get("limit")}
''')


@pytest.fixture
def probe_project(tmp_path):
    (tmp_path / "app.py").write_text(PROBE_APP)
    (tmp_path / ".chalice").mkdir()
    (tmp_path / ".chalice" / "config.json").write_text(json.dumps({
        "version": "2.0", "app_name": "probe",
        "stages": {"local": {"environment_variables": {
            "PROBE_BUCKET": RESOURCES.landing_bucket, "PROBE_STAGE_VALUE": "from-config"}}},
    }))
    return str(tmp_path)


def test_chalice_app_applies_the_stage_environment_only_while_handlers_run(aws_credentials, probe_project):
    host = ChaliceApp(probe_project, "local")

    assert "PROBE_BUCKET" not in os.environ  # applied while importing, then restored
    assert probe_project not in sys.path
    assert host.get("/status?limit=3") == (200, {"stage_value": "from-config", "limit": "3"})
    assert "PROBE_STAGE_VALUE" not in os.environ
    loaded = sys.modules.get("app")
    assert loaded is None or getattr(loaded, "__file__", None) != os.path.join(probe_project, "app.py")


def test_events_reach_a_chalice_handler_through_the_test_client(landing, probe_project):
    host = ChaliceApp(probe_project, "local")
    events = LandingEvents(RESOURCES, host.invoke, wait_seconds=0)
    events.configure()
    landing.put_object(Bucket=RESOURCES.landing_bucket, Key="incoming/2024/a b.json", Body=b"{}\n")

    assert events.poll_once() == 1

    # chalice decodes the key for the handler, as on Lambda; the stage's environment applies
    assert host.app.seen == [("incoming/2024/a b.json", "from-config")]


def test_execution_result_prefers_the_status_summary():
    summary = {"name": "n", "status": "FAILED", "source": "s3://b/k", "rows": None, "totals": None,
               "error": "States.TaskFailed", "cause": "no valid record", "failed_step": "json-to-parquet",
               "duration_seconds": 1.5, "notification_id": None}
    assert execution_result("n", {"status": "FAILED"}, summary) == {
        "name": "n", "status": "FAILED", "source": "s3://b/k", "rows": None, "totals": None,
        "error": "States.TaskFailed", "cause": "no valid record", "failed_step": "json-to-parquet",
        "duration_seconds": 1.5, "notification_id": None, "scanned_bytes": None, "superseded": None,
    }
    assert execution_result("m", None, None)["status"] == "NOT_STARTED"
    assert execution_result("m", {"status": "RUNNING"}, None)["status"] == "RUNNING"


def test_execution_result_of_an_execution_status_only_listed_comes_from_its_description():
    """/status describes 20 executions per request; a run of 100 files still reports every one's
    rows and scanned bytes (from the run's own description of it)."""
    import datetime

    started = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    listed = {"name": "n", "status": "SUCCEEDED", "startDate": started,
              "stopDate": started + datetime.timedelta(seconds=2)}
    output = {"source": "s3://b/incoming/h000.json", "notification_id": "m1", "superseded": False,
              "rows": {"read": 250, "valid": 250, "quarantined": 0, "duplicates": 0},
              "query": {"scanned_bytes": 142061}}
    described = dict(listed, input=json.dumps({"source_uri": "s3://b/incoming/h000.json"}), output=json.dumps(output))

    result = execution_result("n", described, status_summaries.summarize(listed))

    assert result["source"] == "s3://b/incoming/h000.json" and result["scanned_bytes"] == 142061
    assert result["rows"]["read"] == 250 and result["notification_id"] == "m1" and result["duration_seconds"] == 2.0


def test_short_cause_keeps_only_a_glue_job_runs_error_message():
    job_run = json.dumps({"Id": "jr_1", "JobRunState": "FAILED", "ErrorMessage": "no valid record in s3://b/k"})
    assert short_cause(job_run) == "no valid record in s3://b/k"
    assert short_cause("plain text") == "plain text"
    assert short_cause('{"step": "query"}') == '{"step": "query"}'
    assert short_cause(None) is None


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "local", *args], cwd=PROJECT_DIR,
                          capture_output=True, text=True, timeout=60)


def test_cli_help_explains_run():
    top = _cli("--help")
    assert top.returncode == 0
    assert "run" in top.stdout
    run = _cli("run", "--help")
    assert run.returncode == 0
    for option in ("--rows", "--file", "--json", "--seed", "--timeout"):
        assert option in run.stdout


@pytest.mark.parametrize("args, message", [
    (["run", "--file", "/nonexistent/shipments.json"], "no such file: /nonexistent/shipments.json"),
    (["run", "--rows", "0"], "expected a number >= 1"),
    (["run", "--rows", "5", "--file", "x.json"], "not allowed with argument"),
    (["run", "--timeout", "-1"], "expected a number of seconds > 0"),
    ([], "required"),
])
def test_cli_rejects_bad_arguments_before_starting_anything(args, message):
    result = _cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "stack up" not in result.stderr


def test_cli_rejects_a_seed_for_given_files(tmp_path):
    existing = tmp_path / "x.json"
    existing.write_text("{}\n")
    result = _cli("run", "--file", str(existing), "--seed", "1")
    assert result.returncode == 2
    assert "--seed applies to a generated batch" in result.stderr


def test_step_functions_reads_an_s3_object_body_as_text(tmp_path):
    """The pipeline's query step reads normalize's summary with aws-sdk:s3:getObject and parses
    ``$.Body``; moto leaves the body an unread stream unless the hooks read it, as AWS does."""
    from local import embedded

    with embedded.start(work_dir=str(tmp_path / "stack")) as stack:
        s3, sfn = stack.client("s3"), stack.client("stepfunctions")
        s3.create_bucket(Bucket="summaries")
        s3.put_object(Bucket="summaries", Key="s.json", Body=b'{"rows": {"read": 3}}')
        definition = {"StartAt": "Read", "States": {"Read": {
            "Type": "Task", "Resource": "arn:aws:states:::aws-sdk:s3:getObject",
            "Parameters": {"Bucket": "summaries", "Key": "s.json"},
            "ResultSelector": {"document.$": "States.StringToJson($.Body)"}, "End": True}}}
        machine = sfn.create_state_machine(name="read-body", definition=json.dumps(definition),
                                           roleArn="arn:aws:iam::123456789012:role/r")["stateMachineArn"]
        sfn.start_execution(stateMachineArn=machine, name="read-body-run", input="{}")

        arn = machine.replace(":stateMachine:", ":execution:") + ":read-body-run"
        for _ in range(300):
            described = sfn.describe_execution(executionArn=arn)
            if described["status"] != "RUNNING":
                break
            threading.Event().wait(0.05)
    assert described["status"] == "SUCCEEDED", described
    assert json.loads(described["output"]) == {"document": {"rows": {"read": 3}}}
