"""``python -m local up``: the local stack as a service. Its parts in-process and fast, then the
whole service as a subprocess: served, generating, taking uploads, stopped by Ctrl-C."""
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import boto3
import pytest
from chalice import Chalice, Cron, Rate
from moto import mock_aws

import app as app_module
from chalicelib import naming
from chalicelib.resources import Resources
from local.serve import (AppServer, ExecutionWatcher, Schedule, _signals_stop, describe_ended,
                         schedule_seconds, scheduled_event)
from tests.processes import processes_with

from conftest import ACCOUNT_ID, PROJECT_DIR, REGION

RESOURCES = Resources(stage="local", account_id=ACCOUNT_ID, region=REGION)
MARKER = "SHIPPING_ETL_UP_MARKER"


class Answer:
    """What ``AppServer`` expects back from its handler (as chalice.test's HTTPResponse)."""

    def __init__(self, status_code, headers, body):
        self.status_code, self.headers, self.body = status_code, headers, body


def get(url, timeout=10):
    """(status, headers (case-insensitive), body text) of a GET, also for 4xx/5xx answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.headers, response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode("utf-8")


# -- the HTTP server --------------------------------------------------------------------------

def test_app_server_hands_requests_to_the_app_and_sends_its_answer():
    seen = []

    def handle(method, path, headers, body):
        seen.append((method, path, headers.get("X-Probe"), body))
        return Answer(418, {"Content-Type": "application/json", "X-App": "yes"}, b'{"ok": true}')

    server = AppServer(handle, port=0).start()
    try:
        request = urllib.request.Request(server.url + "/status?limit=2", data=b"payload", method="POST",
                                         headers={"X-Probe": "1"})
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request, timeout=10)
    finally:
        server.stop()

    assert seen == [("POST", "/status?limit=2", "1", b"payload")]
    answer = raised.value
    assert answer.code == 418
    assert answer.headers["X-App"] == "yes"
    assert json.loads(answer.read()) == {"ok": True}


def test_app_server_answers_500_when_the_handler_breaks():
    def handle(method, path, headers, body):
        raise RuntimeError("boom")

    server = AppServer(handle, port=0).start()
    try:
        status, _headers, body = get(server.url + "/")
    finally:
        server.stop()

    assert status == 500
    assert "boom" in body


def test_app_server_on_a_taken_port_says_what_to_do():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(OSError, match="stop what uses the port, or pass --port 0"):
            AppServer(lambda *a: None, port=taken.getsockname()[1])


def test_app_server_serves_the_apps_routes_through_chalices_test_client(aws_credentials, monkeypatch):
    from chalice.test import Client

    monkeypatch.setattr(app_module, "_clients", {})
    with mock_aws():
        client = Client(app_module.app, stage_name="local", project_dir=PROJECT_DIR)
        server = AppServer(lambda m, p, h, b: client.http.request(m, p, headers=h, body=b), port=0).start()
        try:
            status, headers, body = get(server.url + "/status?limit=0")
        finally:
            server.stop()

    assert status == 400
    assert headers["Content-Type"] == "application/json"
    assert "limit must be a whole number from 1 to 100" in json.loads(body)["Message"]


# -- the schedule -----------------------------------------------------------------------------

def test_schedule_runs_at_start_then_again_and_survives_a_failing_run():
    calls = []
    third = threading.Event()

    def job():
        calls.append(len(calls) + 1)
        if len(calls) == 3:
            third.set()
        if len(calls) == 1:
            raise RuntimeError("the first batch fails")

    schedule = Schedule(job, interval_seconds=0.01).start()
    try:
        assert third.wait(10), "the schedule stopped after %r" % calls
    finally:
        schedule.stop()
    count = len(calls)

    assert calls[:3] == [1, 2, 3]
    assert schedule.failures == 1
    time.sleep(0.05)
    assert len(calls) == count  # stopped: no more runs


def test_schedule_waits_its_interval_after_the_first_run():
    calls = []
    schedule = Schedule(lambda: calls.append(1), interval_seconds=3600).start()
    schedule.stop()

    assert calls == [1]


def test_schedule_refuses_a_non_positive_interval():
    with pytest.raises(ValueError, match="must be > 0"):
        Schedule(lambda: None, 0)


def test_schedule_seconds_is_the_apps_own_rate():
    assert schedule_seconds(app_module.app) == 600  # rate(10 minutes), SCHEDULE_MINUTES of the stage


def test_schedule_seconds_needs_a_rate_schedule():
    other = Chalice(app_name="other")

    @other.schedule(Cron(0, 10, "*", "*", "?", "*"))
    def generate_batch(event):
        return None

    @other.schedule(Rate(2, unit=Rate.HOURS))
    def hourly(event):
        return None

    with pytest.raises(ValueError, match="pass --every-minutes"):
        schedule_seconds(other)
    assert schedule_seconds(other, "hourly") == 7200
    with pytest.raises(ValueError, match="no scheduled handler 'missing'"):
        schedule_seconds(other, "missing")


def test_scheduled_event_is_what_eventbridge_sends():
    event = scheduled_event(RESOURCES, "shipping-etl-local-generate_batch")

    assert (event["source"], event["detail-type"], event["detail"]) == ("aws.events", "Scheduled Event", {})
    assert event["resources"] == ["arn:aws:events:us-east-1:123456789012:rule/shipping-etl-local-generate_batch"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["time"])


def test_the_scheduled_event_drives_the_apps_generator(aws_credentials, monkeypatch):
    from chalice.test import Client

    monkeypatch.setattr(app_module, "_clients", {})
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=RESOURCES.landing_bucket)
        with Client(app_module.app, stage_name="local", project_dir=PROJECT_DIR) as client:
            batch = client.lambda_.invoke("generate_batch", scheduled_event(RESOURCES, "rule")).payload

    assert batch["bucket"] == RESOURCES.landing_bucket and batch["rows"] == 100


# -- log lines --------------------------------------------------------------------------------

def test_describe_ended_says_what_a_succeeded_run_did():
    line = describe_ended({"name": "run-1", "status": "SUCCEEDED", "duration_seconds": 3.44,
                           "rows": {"read": 172, "valid": 150, "quarantined": 2, "duplicates": 20},
                           "totals": {"shipping_cost": 893862.0}})

    assert line == ("execution run-1 SUCCEEDED in 3.4 s: 172 read, 150 valid, 2 quarantined, "
                    "20 duplicates; total cost $893862.00")


def test_describe_ended_says_where_and_why_a_run_failed():
    job_run = json.dumps({"Id": "jr_1", "ErrorMessage": "no valid record in s3://b/incoming/x.json"})

    line = describe_ended({"name": "run-2", "status": "FAILED", "duration_seconds": 2.5,
                           "failed_step": "json-to-parquet", "error": "States.TaskFailed", "cause": job_run})

    assert line == ("execution run-2 FAILED at json-to-parquet in 2.5 s: States.TaskFailed "
                    "(no valid record in s3://b/incoming/x.json)")


def test_execution_watcher_logs_each_ended_execution_once(aws_credentials, caplog):
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        sfn = boto3.client("stepfunctions")
        arn = sfn.create_state_machine(
            name="pipeline", roleArn="arn:aws:iam::%s:role/x" % ACCOUNT_ID,
            definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}),
        )["stateMachineArn"]
        watcher = ExecutionWatcher(sfn, arn)
        started = sfn.start_execution(stateMachineArn=arn, name="one", input="{}")
        deadline = time.monotonic() + 20
        while sfn.describe_execution(executionArn=started["executionArn"])["status"] == "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.05)

        with caplog.at_level("INFO", logger="local.serve"):
            first = watcher.poll_once()
            again = watcher.poll_once()

    assert [s["name"] for s in first] == ["one"] and again == []
    assert watcher.ended == {"one": "SUCCEEDED"}
    assert [r.getMessage() for r in caplog.records] == ["execution one SUCCEEDED in %.1f s: no row counts"
                                                        % first[0]["duration_seconds"]]


# -- signals ----------------------------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_asks_the_service_to_stop(signum):
    stop = threading.Event()
    with _signals_stop(stop):
        os.kill(os.getpid(), signum)
        assert stop.wait(5)


def test_a_second_ctrl_c_interrupts_at_once():
    stop = threading.Event()
    with pytest.raises(KeyboardInterrupt):
        with _signals_stop(stop):
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.wait(5)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the signal interrupts this


def test_signal_handlers_are_restored_afterwards():
    before = signal.getsignal(signal.SIGTERM)
    with _signals_stop(threading.Event()):
        assert signal.getsignal(signal.SIGTERM) is not before

    assert signal.getsignal(signal.SIGTERM) is before


# -- the command line -------------------------------------------------------------------------

def local_cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "local", *args], cwd=PROJECT_DIR, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_help_explains_up():
    result = local_cli("up", "--help")

    assert result.returncode == 0
    for option in ("--port", "--every-minutes", "--rows", "--aws-port", "--work-dir"):
        assert option in result.stdout
    assert "Ctrl-C" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--port", "70000"], "expected a port number 0-65535"),
    (["--every-minutes", "0"], "expected a number of minutes > 0"),
    (["--every-minutes", "soon"], "expected a number of minutes"),
    (["--rows", "0"], "expected a number >= 1"),
])
def test_cli_rejects_bad_arguments_before_starting_anything(args, message):
    result = local_cli("up", *args)

    assert result.returncode == 2
    assert message in result.stderr


def test_cli_on_a_taken_port_fails_at_once_saying_what_to_do(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        result = local_cli("up", "--port", str(taken.getsockname()[1]), "--work-dir", str(tmp_path))

    assert result.returncode == 1
    assert "stop what uses the port, or pass --port 0" in result.stderr
    assert "deployed" not in result.stderr  # it failed before starting the stack


# -- the whole service ------------------------------------------------------------------------

class Service:
    """``python -m local up`` as a subprocess; its banner parsed into URLs."""

    def __init__(self, tmp_path, *args):
        self.marker = uuid.uuid4().hex
        env = dict(os.environ, **{MARKER: self.marker})
        env.pop("AWS_ENDPOINT_URL", None)
        self.log_path = tmp_path / "up.log"
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "local", "up", "--port", "0", "--work-dir", str(tmp_path / "stack"), *args],
            cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=self._log, text=True)
        self._lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def banner(self, timeout=90):
        """{label: value} of the banner's lines, once it is printed."""
        lines, deadline = [], time.monotonic() + timeout
        while not any(".upload_file(" in line for line in lines):  # the banner's last line
            try:
                line = self._lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError("no banner after %ss:\n%s" % (timeout, self.log()))
            assert line is not None, "the service ended before its banner:\n%s" % self.log()
            lines.append(line)
        fields = {}
        for line in lines:
            match = re.match(r"\s+(dashboard|status API|AWS endpoint|landing|CA bundle)\s+(\S+)", line)
            if match:
                fields[match.group(1)] = match.group(2)
        fields["text"] = "".join(lines)
        return fields

    def log(self):
        return self.log_path.read_text()

    def stop(self, signum=signal.SIGINT, timeout=60):
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def wait_for(check, timeout, what, log):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError("%s: not within %ss\n%s" % (what, timeout, log()))


@pytest.mark.e2e
def test_up_serves_the_dashboard_runs_the_schedule_and_takes_uploads(tmp_path):
    service = Service(tmp_path, "--rows", "20")
    try:
        banner = service.banner()
        base = banner["dashboard"].rstrip("/")
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base)
        assert "aws s3 cp shipments.json s3://%s/incoming/ --endpoint-url %s" % (
            RESOURCES.landing_bucket, banner["AWS endpoint"]) in banner["text"]

        def succeeded():
            status, _h, body = get(base + "/status")
            runs = json.loads(body)["executions"] if status == 200 else []
            return [r for r in runs if r["status"] == "SUCCEEDED"]

        # a file anyone uploads, as the banner shows
        assert banner["AWS endpoint"].startswith("https://127.0.0.1:")
        s3 = boto3.client("s3", endpoint_url=banner["AWS endpoint"], region_name=REGION,
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          aws_session_token="testing", verify=banner["CA bundle"])
        body = "".join(json.dumps({"shipping_id": i, "shipping_date": "2026/11/27", "customer_name": "Ann Example",
                                   "street_address": "1 Main St", "destination_city": "Lyon",
                                   "shipping_cost": 10.0, "shipping_distance": 2.0, "quantity": 3.0,
                                   "product_id": 7}) + "\n" for i in range(1, 6))
        put = s3.put_object(Bucket=RESOURCES.landing_bucket, Key="incoming/uploaded.json", Body=body.encode())
        name = naming.execution_name(RESOURCES.landing_bucket, "incoming/uploaded.json", put["ETag"].strip('"'),
                                     put["VersionId"])  # the landing bucket is versioned

        def uploaded_done():
            status, _h, text = get(base + "/status/" + name)
            detail = json.loads(text) if status == 200 else {}
            return detail if detail.get("status") not in (None, "RUNNING") else None

        # the generator's first batch, run at start
        generated = wait_for(lambda: [r for r in succeeded() if r["name"] != name], 90,
                             "the generated batch's SUCCEEDED execution in /status", service.log)
        assert [r["rows"]["valid"] for r in generated] == [20]

        detail = wait_for(uploaded_done, 90, "the uploaded file's execution", service.log)
        assert detail["status"] == "SUCCEEDED", detail
        assert detail["rows"] == {"read": 5, "valid": 5, "quarantined": 0, "duplicates": 0}
        assert [s["step"] for s in detail["steps"]] == [
            "json-to-parquet", "crawl-raw", "normalize", "query", "notify"]
        assert all(s["outcome"] == "SUCCEEDED" for s in detail["steps"]), detail["steps"]
        assert all(s["attempts"] >= 1 for s in detail["steps"]), detail["steps"]

        status, headers, page = get(base + "/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert 'href="?run=%s"' % name in page and "<svg" in page
        assert "Ann Example" not in page and "1 Main St" not in page

        returncode = service.stop(signal.SIGINT)
    finally:
        service.kill()

    log = service.log()
    assert returncode == 0, log
    assert re.search(r"schedule: generate_batch put 20 rows into s3://\S+/incoming/", log)
    assert re.search(r"event ObjectCreated:Put s3://\S+/incoming/uploaded\.json \(\d+ B\) -> on_landing: "
                     r"started %s" % name, log)
    assert "execution %s SUCCEEDED" % name in log
    assert re.search(r"http GET /status/%s -> 200" % name, log)
    assert log.rstrip().endswith("stopped")
    assert processes_with(service.marker) == []
