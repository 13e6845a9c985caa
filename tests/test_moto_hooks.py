"""The moto hooks through the AWS APIs of the embedded stack: Glue job runs, crawlers and Athena
queries really run, and Step Functions can wait for them (.sync) as on AWS."""
import contextlib
import io
import json
import socket
import threading
import time
import urllib.parse

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError

from local import embedded, moto_hooks

BUCKET = "hooks-lake"
DATABASE = "hooks_db"
ROLE_ARN = "arn:aws:iam::123456789012:role/hooks"
RESULTS = "s3://%s/athena-results/" % BUCKET
# A job that runs until the object named by --gate exists: its RUNNING state is observable.
GATE_SCRIPT = """
import sys, time, boto3
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
s3 = boto3.client("s3")
for _attempt in range(600):
    if s3.list_objects_v2(Bucket=args["--bucket"], Prefix=args["--gate"]).get("KeyCount"):
        break
    time.sleep(0.05)
else:
    sys.exit("the gate object never appeared")
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with embedded.start(work_dir=str(tmp_path_factory.mktemp("stack"))) as running_stack:
        s3, glue, athena = (running_stack.client(s) for s in ("s3", "glue", "athena"))
        s3.create_bucket(Bucket=BUCKET)
        glue.create_database(DatabaseInput={"Name": DATABASE})
        table = pa.table({"city": ["Oslo", "Lima", "Oslo"], "cost": [1.5, 2.25, 4.0]})
        for day in ("2024-01-01", "2024-01-02"):
            sink = io.BytesIO()
            pq.write_table(table, sink)
            s3.put_object(Bucket=BUCKET, Key="zone/day=%s/part.parquet" % day, Body=sink.getvalue())
        for name, body in (("ok.py", "print('fine')\n"), ("fail.py", "raise SystemExit('input has no valid line')\n"),
                           ("gate.py", GATE_SCRIPT)):
            s3.put_object(Bucket=BUCKET, Key="glue-assets/" + name, Body=body.encode())
            glue.create_job(Name=name[:-3] + "-job", Role=ROLE_ARN, ExecutionProperty={"MaxConcurrentRuns": 5},
                            Command={"Name": "pythonshell", "ScriptLocation": "s3://%s/glue-assets/%s" % (BUCKET, name)})
        glue.create_crawler(Name="zone-crawler", Role=ROLE_ARN, DatabaseName=DATABASE,
                            Targets={"S3Targets": [{"Path": "s3://%s/zone/" % BUCKET}]})
        athena.create_work_group(Name="hooks", Configuration={"ResultConfiguration": {"OutputLocation": RESULTS}})
        yield running_stack


def _wait(describe, pending, timeout=60):
    deadline = time.time() + timeout
    while True:
        current = describe()
        if not pending(current) or time.time() > deadline:
            return current
        time.sleep(0.05)


def _crawl(stack):
    glue = stack.client("glue")
    try:
        glue.start_crawler(Name="zone-crawler")
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "CrawlerRunningException":
            raise
    return _wait(lambda: glue.get_crawler(Name="zone-crawler")["Crawler"], lambda c: c["State"] != "READY")


def _run_state_machine(stack, name, definition, execution_input=None):
    sfn = stack.client("stepfunctions")
    machine = sfn.create_state_machine(name=name, definition=json.dumps(definition), roleArn=ROLE_ARN)
    execution = sfn.start_execution(stateMachineArn=machine["stateMachineArn"], name=name + "-run",
                                    input=json.dumps(execution_input or {}))
    return _wait(lambda: sfn.describe_execution(executionArn=execution["executionArn"]),
                 lambda d: d["status"] == "RUNNING")


def _task(resource, parameters, **extra):
    state = {"Type": "Task", "Resource": "arn:aws:states:::" + resource, "Parameters": parameters}
    state.update(extra)
    if "Next" not in state:
        state["End"] = True
    return state


# -- hook points ------------------------------------------------------------------------------


def test_aws_chunked_bodies_decode_to_their_payload_without_the_trailer():
    payload = bytes(range(256)) * 5000  # 1.28 MB: two chunks of 1 MB and a short one
    body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece)
                    for piece in (payload[:1 << 20], payload[1 << 20:])) + b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"
    for given in (body, io.BytesIO(body)):
        assert moto_hooks.decode_aws_chunked(given) == payload
    assert moto_hooks.decode_aws_chunked(b"") == b""


def test_a_large_put_object_round_trips_through_the_aws_chunked_decoder(stack):
    s3 = stack.client("s3")
    body = bytes(range(256)) * (12 << 12)  # 12 MB, sent by boto3 as aws-chunked over HTTPS

    s3.put_object(Bucket=BUCKET, Key="large/object.bin", Body=body)

    assert s3.get_object(Bucket=BUCKET, Key="large/object.bin")["Body"].read() == body


def test_check_hook_points_passes_on_the_pinned_moto():
    assert moto_hooks.check_hook_points() is None


def test_check_hook_points_names_what_an_upgrade_moved(monkeypatch):
    from moto.athena.models import AthenaBackend

    monkeypatch.delattr(AthenaBackend, "start_query_execution")

    with pytest.raises(moto_hooks.HookPointMissing, match=r"moto\.athena\.models\.AthenaBackend\.start_query_execution"):
        moto_hooks.check_hook_points()


def test_check_hook_points_names_a_renamed_sync_check_interval(monkeypatch):
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_callback

    monkeypatch.delattr(state_task_service_callback, "_DELAY_SECONDS_SYNC_CONDITION_CHECK")

    with pytest.raises(moto_hooks.HookPointMissing,
                       match=r"state_task_service_callback\._DELAY_SECONDS_SYNC_CONDITION_CHECK"):
        moto_hooks.check_hook_points()


def test_a_sync_task_is_checked_again_when_a_run_ends_not_on_a_fixed_beat(stack):
    """Between two checks of a .sync task moto sleeps; on the local stack that sleep ends when a
    job run or query ends (or at the ceiling), and at once when one ended during the check."""
    import threading

    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_callback

    waits = {}

    def checks():
        sleep = state_task_service_callback.time.sleep
        sleep(moto_hooks.SYNC_CHECK_SECONDS)  # after a task's first check
        started = time.monotonic()
        sleep(moto_hooks.SYNC_CHECK_SECONDS)  # nothing ends: the ceiling
        waits["idle"] = time.monotonic() - started
        threading.Timer(0.3, moto_hooks._note_task_ended).start()
        started = time.monotonic()
        sleep(moto_hooks.SYNC_CHECK_SECONDS)  # a run ends 0.3 s in
        waits["ended"] = time.monotonic() - started
        moto_hooks._note_task_ended()  # one ends while the task is being checked
        started = time.monotonic()
        sleep(moto_hooks.SYNC_CHECK_SECONDS)
        waits["ended_during_check"] = time.monotonic() - started

    thread = threading.Thread(target=checks)
    thread.start()
    thread.join(timeout=10)

    assert state_task_service_callback._DELAY_SECONDS_SYNC_CONDITION_CHECK == moto_hooks.SYNC_CHECK_SECONDS
    assert moto_hooks.SYNC_CHECK_CEILING_SECONDS - 0.05 <= waits["idle"] < moto_hooks.SYNC_CHECK_CEILING_SECONDS + 0.5
    assert 0.25 <= waits["ended"] < 0.8
    assert waits["ended_during_check"] < 0.1


def test_a_named_sync_task_wakes_for_its_own_end_only(stack, monkeypatch):
    """A .sync task whose resolver names its run (Glue, Athena) is not checked again when some
    other run ends: a burst of twenty files made ~1,000 GetJobRun calls when every end woke all."""
    import threading

    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_callback

    monkeypatch.setattr(moto_hooks, "SYNC_NAMED_CHECK_CEILING_SECONDS", 1.5)  # 5 s: a slow test
    waits, checks = {}, []
    states = iter([None, None, None, {"JobRunState": "SUCCEEDED"}])

    def poll():
        checks.append(time.monotonic())
        return next(states)

    resolve = moto_hooks._watching("jr_mine", poll)

    def task():
        sleep = state_task_service_callback.time.sleep
        assert resolve() is None
        threading.Timer(0.2, moto_hooks._note_task_ended, ["jr_other"]).start()
        threading.Timer(0.5, moto_hooks._note_task_ended, ["jr_mine"]).start()
        started = time.monotonic()
        sleep(moto_hooks.SYNC_CHECK_SECONDS)  # another run ends at 0.2 s, this one at 0.5 s
        waits["own_end"] = time.monotonic() - started
        assert resolve() is None
        moto_hooks._note_task_ended("jr_mine")  # it ends while being checked: no wait
        started = time.monotonic()
        sleep(moto_hooks.SYNC_CHECK_SECONDS)
        waits["ended_during_check"] = time.monotonic() - started
        assert resolve() is None
        started = time.monotonic()
        sleep(moto_hooks.SYNC_CHECK_SECONDS)  # nothing ends: the ceiling
        waits["idle"] = time.monotonic() - started
        moto_hooks._note_task_ended("jr_mine")  # it ends, and the next check sees it: forgotten
        waits["result"] = resolve()
        waits["remembered"] = "jr_mine" in moto_hooks._ended_tasks

    thread = threading.Thread(target=task)
    thread.start()
    thread.join(timeout=10)

    assert 0.45 <= waits["own_end"] < 0.9
    assert waits["ended_during_check"] < 0.1
    assert 1.45 <= waits["idle"] < 2.0
    assert waits["result"] == {"JobRunState": "SUCCEEDED"} and len(checks) == 4
    assert waits["remembered"] is False


# -- Glue job runs ----------------------------------------------------------------------------


def test_job_run_is_running_until_its_script_ends(stack):
    glue, s3 = stack.client("glue"), stack.client("s3")
    run_id = glue.start_job_run(JobName="gate-job", Arguments={"--bucket": BUCKET, "--gate": "gates/run-1"})["JobRunId"]

    running = glue.get_job_run(JobName="gate-job", RunId=run_id)["JobRun"]
    s3.put_object(Bucket=BUCKET, Key="gates/run-1", Body=b"")
    done = _wait(lambda: glue.get_job_run(JobName="gate-job", RunId=run_id)["JobRun"],
                 lambda r: r["JobRunState"] == "RUNNING")

    assert running["JobRunState"] == "RUNNING"
    assert "CompletedOn" not in running
    assert done["JobRunState"] == "SUCCEEDED"
    assert done["CompletedOn"] >= done["StartedOn"]
    assert "ErrorMessage" not in done


def test_failed_job_run_reports_the_scripts_error(stack):
    glue = stack.client("glue")
    run_id = glue.start_job_run(JobName="fail-job")["JobRunId"]

    run = _wait(lambda: glue.get_job_run(JobName="fail-job", RunId=run_id)["JobRun"],
                lambda r: r["JobRunState"] == "RUNNING")

    assert run["JobRunState"] == "FAILED"
    assert run["ErrorMessage"].startswith("input has no valid line (exit code 1; log: ")


def test_glue_start_job_run_sync_succeeds_with_the_job_run_as_output(stack):
    definition = {"StartAt": "Job", "States": {"Job": _task("glue:startJobRun.sync", {"JobName": "ok-job"})}}

    execution = _run_state_machine(stack, "glue-sync-ok", definition)

    assert execution["status"] == "SUCCEEDED"
    output = json.loads(execution["output"])
    assert output["JobName"] == "ok-job"
    assert output["JobRunState"] == "SUCCEEDED"


def test_glue_start_job_run_sync_fails_the_task_with_the_error_message(stack):
    definition = {"StartAt": "Job", "States": {"Job": _task(
        "glue:startJobRun.sync", {"JobName": "fail-job"},
        Catch=[{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Failed"}])}}
    definition["States"]["Failed"] = {"Type": "Pass", "End": True}

    execution = _run_state_machine(stack, "glue-sync-fail", definition)

    error = json.loads(execution["output"])["error"]
    assert error["Error"] == "States.TaskFailed"
    cause = json.loads(error["Cause"])
    assert cause["JobRunState"] == "FAILED"
    assert cause["ErrorMessage"].startswith("input has no valid line")


def test_wait_for_task_token_on_glue_is_rejected_as_on_aws(stack):
    definition = {"StartAt": "Job", "States": {"Job": _task("glue:startJobRun.waitForTaskToken", {"JobName": "ok-job"})}}

    with pytest.raises(ClientError) as raised:
        stack.client("stepfunctions").create_state_machine(
            name="glue-token", definition=json.dumps(definition), roleArn=ROLE_ARN)

    # moto sends InvalidDefinition without its code; the status and message are what remain.
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "glue has no .waitForTaskToken integration" in raised.value.response["Error"]["Message"]


# -- crawlers ---------------------------------------------------------------------------------


def test_crawler_runs_registers_the_table_and_reports_last_crawl(stack):
    stack.faults["crawl_seconds"] = 1
    glue = stack.client("glue")
    try:
        glue.start_crawler(Name="zone-crawler")
        running = glue.get_crawler(Name="zone-crawler")["Crawler"]
        with pytest.raises(ClientError) as raised:
            glue.start_crawler(Name="zone-crawler")
        done = _wait(lambda: glue.get_crawler(Name="zone-crawler")["Crawler"], lambda c: c["State"] != "READY")
    finally:
        stack.faults.pop("crawl_seconds")

    assert running["State"] == "RUNNING"
    assert raised.value.response["Error"]["Code"] == "CrawlerRunningException"
    assert done["LastCrawl"]["Status"] == "SUCCEEDED"
    table = glue.get_table(DatabaseName=DATABASE, Name="zone")["Table"]
    assert [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]] == [("city", "string"), ("cost", "double")]
    assert table["PartitionKeys"] == [{"Name": "day", "Type": "string"}]


def test_failed_crawl_is_ready_with_last_crawl_failed_and_message(stack):
    glue = stack.client("glue")
    stack.client("s3").put_object(Bucket=BUCKET, Key="broken/file.parquet", Body=b"not parquet")
    glue.create_crawler(Name="broken-crawler", Role=ROLE_ARN, DatabaseName=DATABASE,
                        Targets={"S3Targets": [{"Path": "s3://%s/broken/" % BUCKET}]})

    glue.start_crawler(Name="broken-crawler")
    crawler = _wait(lambda: glue.get_crawler(Name="broken-crawler")["Crawler"], lambda c: c["State"] != "READY")

    assert crawler["LastCrawl"]["Status"] == "FAILED"
    assert "s3://%s/broken/file.parquet" % BUCKET in crawler["LastCrawl"]["ErrorMessage"]


def test_aws_sdk_start_crawler_and_get_crawler_in_step_functions(stack):
    definition = {"StartAt": "Start", "States": {
        "Start": _task("aws-sdk:glue:startCrawler", {"Name": "zone-crawler"}, ResultPath=None, Next="Get"),
        "Get": _task("aws-sdk:glue:getCrawler", {"Name": "zone-crawler"},
                     ResultSelector={"State.$": "$.Crawler.State"}, ResultPath="$.crawler", Next="Ready?"),
        "Ready?": {"Type": "Choice", "Choices": [{"Variable": "$.crawler.State", "StringEquals": "READY",
                                                  "Next": "Outcome"}], "Default": "Pause"},
        "Pause": {"Type": "Wait", "SecondsPath": "$.poll", "Next": "Get"},
        "Outcome": _task("aws-sdk:glue:getCrawler", {"Name": "zone-crawler"},
                         ResultSelector={"Status.$": "$.Crawler.LastCrawl.Status"}),
    }}

    execution = _run_state_machine(stack, "crawl-sdk", definition, {"poll": 0})

    assert execution["status"] == "SUCCEEDED"
    assert json.loads(execution["output"]) == {"Status": "SUCCEEDED"}


# -- Athena -----------------------------------------------------------------------------------


def _query(stack, sql):
    athena = stack.client("athena")
    query_id = athena.start_query_execution(QueryString=sql, WorkGroup="hooks",
                                            QueryExecutionContext={"Database": DATABASE})["QueryExecutionId"]
    return query_id, _wait(lambda: athena.get_query_execution(QueryExecutionId=query_id)["QueryExecution"],
                           lambda q: q["Status"]["State"] in ("QUEUED", "RUNNING"))


def test_athena_query_runs_and_results_read_like_athena(stack):
    _crawl(stack)

    query_id, execution = _query(stack, "SELECT city, SUM(cost) AS total FROM zone GROUP BY city ORDER BY city")
    results = stack.client("athena").get_query_results(QueryExecutionId=query_id)

    assert execution["Status"]["State"] == "SUCCEEDED"
    assert execution["ResultConfiguration"]["OutputLocation"] == RESULTS + query_id + ".csv"
    rows = [[d.get("VarCharValue") for d in row["Data"]] for row in results["ResultSet"]["Rows"]]
    assert rows == [["city", "total"], ["Lima", "4.5"], ["Oslo", "11.0"]]
    assert [c["Type"] for c in results["ResultSet"]["ResultSetMetadata"]["ColumnInfo"]] == ["varchar", "double"]
    csv = stack.client("s3").get_object(Bucket=BUCKET, Key="athena-results/%s.csv" % query_id)["Body"].read()
    assert csv == b'"city","total"\n"Lima","4.5"\n"Oslo","11.0"\n'


def test_athena_query_on_unknown_table_fails_with_reason(stack):
    query_id, execution = _query(stack, "SELECT * FROM no_such_table")

    assert execution["Status"]["State"] == "FAILED"
    assert execution["Status"]["StateChangeReason"].startswith("TABLE_NOT_FOUND: ")
    with pytest.raises(ClientError) as raised:
        stack.client("athena").get_query_results(QueryExecutionId=query_id)
    assert raised.value.response["Error"]["Code"] == "InvalidRequestException"


def test_athena_start_query_execution_sync_then_get_query_results(stack):
    _crawl(stack)
    definition = {"StartAt": "Query", "States": {
        "Query": _task("athena:startQueryExecution.sync", {
            "QueryString": "SELECT COUNT(*) AS n, SUM(cost) AS total FROM zone",
            "WorkGroup": "hooks", "QueryExecutionContext": {"Database": DATABASE}},
            ResultSelector={"QueryExecutionId.$": "$.QueryExecution.QueryExecutionId",
                            "State.$": "$.QueryExecution.Status.State"}, Next="Results"),
        "Results": _task("athena:getQueryResults", {"QueryExecutionId.$": "$.QueryExecutionId"},
                         ResultSelector={"values.$": "$.ResultSet.Rows[1].Data[*].VarCharValue"}),
    }}

    execution = _run_state_machine(stack, "athena-sync", definition)

    assert execution["status"] == "SUCCEEDED"
    assert json.loads(execution["output"]) == {"values": ["6", "15.5"]}


def test_athena_start_query_execution_sync_fails_the_task_with_the_reason(stack):
    definition = {"StartAt": "Query", "States": {"Query": _task("athena:startQueryExecution.sync", {
        "QueryString": "SELECT missing_column FROM zone", "WorkGroup": "hooks",
        "QueryExecutionContext": {"Database": DATABASE}})}}

    execution = _run_state_machine(stack, "athena-sync-fail", definition)

    assert execution["status"] == "FAILED"
    assert execution["error"] == "States.TaskFailed"
    assert execution["cause"].startswith("COLUMN_NOT_FOUND: ")
    assert "missing_column" in execution["cause"]


class _FlakyTlsProxy:
    """A TCP relay to the stack's endpoint that answers the first ``failures`` connections'
    ClientHello with a TLS decode_error alert and closes them, as the endpoint once did under
    load; the client sees the same SSLError."""
    DECODE_ERROR_ALERT = b"\x15\x03\x03\x00\x02\x02\x32"

    def __init__(self, target, failures):
        self.target, self.failures, self.connections = target, failures, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            if self.connections <= self.failures:
                client.recv(65536)
                client.sendall(self.DECODE_ERROR_ALERT)
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source, sink):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.close()
                except OSError:
                    pass

    def close(self):
        self.listener.close()


@contextlib.contextmanager
def _flaky_task_client(stack, failures):
    """``(glue, sent, proxy)``: a Glue client made as moto makes a task's (no retries of its own)
    with the retry of unsent calls, reaching the stack through a _FlakyTlsProxy that fails the
    first ``failures`` handshakes; ``sent`` grows by one per request sent."""
    import boto3
    from botocore.config import Config

    endpoint = urllib.parse.urlparse(stack.endpoint_url)
    proxy = _FlakyTlsProxy((endpoint.hostname, endpoint.port), failures)
    try:
        client = boto3.client("glue", endpoint_url="https://localhost:%d" % proxy.port, region_name=stack.region,
                              aws_access_key_id="testing", aws_secret_access_key="testing", verify=stack.ca_bundle,
                              config=Config(retries={"max_attempts": 0, "total_max_attempts": 1}))
        sent = []
        client.meta.events.register("before-send", lambda **_: sent.append(1))
        yield moto_hooks._retry_unsent_calls(client), sent, proxy
    finally:
        proxy.close()


def test_a_task_call_whose_tls_handshake_failed_is_made_again(stack):
    with _flaky_task_client(stack, failures=2) as (glue, sent, proxy):
        assert glue.get_job(JobName="ok-job")["Job"]["Name"] == "ok-job"
        assert (len(sent), proxy.connections) == (3, 3)


def test_a_task_call_that_reached_the_service_is_not_made_again(stack):
    with _flaky_task_client(stack, failures=0) as (glue, sent, _proxy):
        with pytest.raises(ClientError, match="EntityNotFoundException"):
            glue.start_job_run(JobName="no-such-job")
        assert len(sent) == 1


def test_a_task_call_gives_up_after_its_attempts_when_every_handshake_fails(stack):
    from botocore.exceptions import SSLError

    with _flaky_task_client(stack, failures=100) as (glue, sent, _proxy):
        with pytest.raises(SSLError, match="DECODE_ERROR"):
            glue.get_job(JobName="ok-job")
        assert len(sent) == moto_hooks.UNSENT_CALL_ATTEMPTS
