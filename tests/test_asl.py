"""The pipeline's state machine: its structure, and real executions on moto's Step Functions.

moto 5.2.5 runs no Glue job, no crawl and no Athena query, and cannot wait for a Glue job or an
Athena query (``.sync``). The executions here therefore run the definition itself, or a part of
it cut out by step (``_part``), against state prepared through moto's public API.
"""
import copy
import json
import os
import re
import subprocess
import time

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.moto_api import state_manager

from chalicelib import asl, queries
from chalicelib.naming import execution_name, source_id
from chalicelib.resources import Resources

ACCOUNT_ID = "123456789012"  # moto's default account
REGION = "us-east-1"
RESOURCES = Resources(stage="test", account_id=ACCOUNT_ID, region=REGION)
ROLE_ARN = RESOURCES.role_arn(RESOURCES.state_machine_role)
LANDING_KEY = "incoming/shipments-0001.json"
ETAG = '"0123456789abcdef0123456789abcdef"'
SOURCE_ID = source_id(RESOURCES.landing_bucket, LANDING_KEY, ETAG)
EXECUTION_DEADLINE_SECONDS = 60
PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASL_VALIDATOR = os.path.join(PROJECT_DIR, "node_modules", ".bin", "asl-validator")


@pytest.fixture
def credentials(monkeypatch):
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SECURITY_TOKEN", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@pytest.fixture
def sfn_aws(credentials):
    """moto with Step Functions really executing the ASL."""
    config = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
    with mock_aws(config=config):
        yield


@pytest.fixture
def crawls_held_running():
    """A crawl stays RUNNING until list_crawls() advances it (moto's manual state progression)."""
    state_manager.set_transition(model_name="glue::crawl",
                                 transition={"progression": "manual", "times": 1})
    yield
    state_manager.unset_transition("glue::crawl")


@pytest.fixture
def s3_bodies_as_text(monkeypatch):
    """aws-sdk:s3:getObject returns Body as text on AWS; moto 5.2.5 leaves botocore's stream in
    the state (StringToJson then fails). Read it, as AWS does."""
    from botocore.response import StreamingBody
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_aws_sdk as aws_sdk,
    )

    original = aws_sdk.StateTaskServiceAwsSdk._eval_service_task

    def eval_service_task(self, env, *args, **kwargs):
        original(self, env, *args, **kwargs)
        response = env.stack[-1]
        for key, value in list(response.items()):
            if isinstance(value, StreamingBody):
                response[key] = value.read().decode("utf-8")

    monkeypatch.setattr(aws_sdk.StateTaskServiceAwsSdk, "_eval_service_task", eval_service_task)


def execution_input(poll_seconds=0):
    bucket = RESOURCES.landing_bucket
    return {"bucket": bucket, "key": LANDING_KEY, "etag": ETAG, "size": 1234,
            "source_id": SOURCE_ID, "source_uri": "s3://%s/%s" % (bucket, LANDING_KEY),
            "poll_seconds": poll_seconds}


def _part(definition, steps, start_at):
    """The states of ``steps`` plus the failure branch; exits to other steps become Succeed."""
    states = {name: copy.deepcopy(state) for name, state in definition["States"].items()
              if name in asl.FAILURE_STATES or asl.step_of(name) in steps}
    for state in list(states.values()):
        targets = [state.get("Next"), state.get("Default")]
        targets += [c["Next"] for c in state.get("Choices", []) + state.get("Catch", [])]
        for target in targets:
            if target and target not in states:
                states[target] = {"Type": "Succeed"}
    return {"StartAt": start_at, "TimeoutSeconds": 120, "States": states}


def _tasks(definition):
    return {name: s for name, s in definition["States"].items() if s["Type"] == "Task"}


def _start(definition, name="run-1", poll_seconds=0):
    sfn = boto3.client("stepfunctions", region_name=REGION)
    machine = sfn.create_state_machine(name=RESOURCES.state_machine_name, roleArn=ROLE_ARN,
                                       definition=json.dumps(definition))["stateMachineArn"]
    return sfn.start_execution(stateMachineArn=machine, name=name,
                               input=json.dumps(execution_input(poll_seconds)))["executionArn"]


def _history(execution_arn):
    sfn = boto3.client("stepfunctions", region_name=REGION)
    return sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]


def _entered(execution_arn, state_name):
    return sum(1 for e in _history(execution_arn)
               if e.get("stateEnteredEventDetails", {}).get("name") == state_name)


def _wait_until(condition, what):
    deadline = time.monotonic() + EXECUTION_DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("gave up waiting for %s" % what)
        time.sleep(0.02)


def _finish(execution_arn):
    sfn = boto3.client("stepfunctions", region_name=REGION)
    result = {}

    def done():
        result.update(sfn.describe_execution(executionArn=execution_arn))
        return result["status"] != "RUNNING"

    _wait_until(done, "execution %s to end" % execution_arn)
    return result


def _subscribe_queue():
    """Create the topic and a queue subscribed to it; returns the queue URL."""
    sns = boto3.client("sns", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    topic_arn = sns.create_topic(Name=RESOURCES.topic_name)["TopicArn"]
    assert topic_arn == RESOURCES.topic_arn
    queue_url = sqs.create_queue(QueueName="notifications")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return queue_url


def _notifications(queue_url):
    """SNS envelopes (Subject, Message, MessageId) delivered to the queue."""
    sqs = boto3.client("sqs", region_name=REGION)
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


def _create_crawler(name):
    glue = boto3.client("glue", region_name=REGION)
    glue.create_crawler(Name=name, Role=RESOURCES.role_arn(RESOURCES.crawler_role),
                        DatabaseName=RESOURCES.glue_database,
                        Targets={"S3Targets": [{"Path": RESOURCES.lake_uri("raw/")}]})


def _assert_failed_at(description, queue_url, step, error):
    """The execution FAILED at ``step`` with ``error`` and one failure notification says so."""
    assert description["status"] == "FAILED"
    cause = json.loads(description["cause"])
    assert cause["step"] == step
    assert cause["error"] == error
    reported = error[len(asl.RESERVED_ERROR_PREFIX):] if error.startswith("States.") else error
    assert description["error"] == reported
    [notice] = _notifications(queue_url)
    assert len(notice["Subject"]) <= 100
    assert step in notice["Subject"] and SOURCE_ID in notice["Subject"]
    assert "failed at step %s" % step in notice["Message"]
    assert json.loads(notice["Message"].rsplit("\n\n", 1)[1]) == cause
    # Subscribers can filter on these (e.g. an e-mail subscription for failures only).
    assert {k: v["Value"] for k, v in notice["MessageAttributes"].items()} == {
        "outcome": "failed", "source_id": SOURCE_ID, "step": step}
    return cause


# -- the rendered file and the builder ---------------------------------------------------------


def test_rendered_file_is_in_sync_with_the_builder():
    with open(asl.TEMPLATE_PATH, encoding="utf-8") as f:
        assert f.read() == asl.render_template()
    assert asl.main(["--check"]) == 0


def test_check_fails_on_a_stale_file_until_it_is_rewritten(tmp_path, capsys):
    path = str(tmp_path / "pipeline.asl.json")
    assert asl.main(["--check"], path=path) == 1
    (tmp_path / "pipeline.asl.json").write_text(asl.render_template().replace("READY", "RUNNING"))
    assert asl.main(["--check"], path=path) == 1
    assert "python -m chalicelib.asl" in capsys.readouterr().err
    assert asl.main([], path=path) == 0
    assert asl.main(["--check"], path=path) == 0


def test_filled_template_is_the_stage_definition():
    template = asl.render_template()
    assert set(re.findall(r"\$\{(\w+)\}", template)) == set(asl.PLACEHOLDERS)
    filled = asl.fill_template(template, asl.template_values(RESOURCES))
    assert "${" not in filled
    assert json.loads(filled) == asl.build_definition(RESOURCES)
    with pytest.raises(ValueError, match="TopicArn"):
        asl.fill_template(template, {k: v for k, v in asl.template_values(RESOURCES).items()
                                     if k != "TopicArn"})


def test_every_state_belongs_to_a_step_or_to_the_failure_branch():
    states = asl.build_definition(RESOURCES)["States"]
    assert set(asl.STATE_STEPS) | set(asl.FAILURE_STATES) | set(asl.INPUT_STATES) == set(states)
    assert not set(asl.STATE_STEPS) & set(asl.FAILURE_STATES)
    assert set(asl.STATE_STEPS.values()) == set(asl.STEPS)
    assert asl.step_of("ConvertToParquet") == "json-to-parquet"
    assert asl.step_of(asl.FAILED) is None
    for step in asl.STEPS:
        recorder = states[asl.failure_recorder(step)]
        assert asl.step_of(asl.failure_recorder(step)) == step
        assert recorder["Parameters"]["step"] == step


METRIC_TASKS = {"PublishRunMetrics": "Done", asl.PUBLISH_FAILURE_METRICS: asl.FAILURE_NOTICE}


def test_every_task_retries_catches_and_has_a_timeout():
    definition = asl.build_definition(RESOURCES)
    tasks = _tasks(definition)
    assert len(tasks) == 15
    for name, task in tasks.items():
        assert 0 < task["TimeoutSeconds"] <= max(asl.GLUE_JOB_TIMEOUT_SECONDS.values()), name
        assert task["Retry"], name
        for retrier in task["Retry"]:
            assert retrier["ErrorEquals"] and "States.ALL" not in retrier["ErrorEquals"], name
            if retrier["ErrorEquals"] == [asl.TASK_FAILED]:
                # A failed job run or query runs once more, and last: States.TaskFailed matches
                # every error, so a retrier after it would never be reached.
                assert retrier is task["Retry"][-1] and retrier["MaxAttempts"] == 1, name
                assert ".sync" in task["Resource"], name
            elif retrier["MaxAttempts"] == 0:
                assert set(retrier) == {"ErrorEquals", "MaxAttempts"}, name  # named: never retried
            else:
                assert retrier["BackoffRate"] >= 1 and retrier["MaxAttempts"] >= 3, name
                assert retrier["JitterStrategy"] == "FULL", name
        *specific, catch_all = task["Catch"]
        assert catch_all["ErrorEquals"] == ["States.ALL"], name
        if name == asl.FAILURE_NOTICE:
            assert catch_all["Next"] == asl.CHOOSE_FAIL_STATE
        elif name in METRIC_TASKS:
            # Metrics never fail the data's processing: the flow goes on to where it was going.
            assert catch_all["Next"] == task["Next"] == METRIC_TASKS[name], name
            assert catch_all["ResultPath"] == "$.metrics_error"
        else:
            assert catch_all["Next"] == asl.failure_recorder(asl.step_of(name)), name
            assert catch_all["ResultPath"] == "$.error"
        if name.startswith("Start") and name.endswith("Crawl"):
            [running] = specific
            assert running["Next"] == name.replace("Start", "WaitForRunning"), name
        else:
            assert specific == [], name
    # Quick API calls retry a timeout; a job or query that ran into its own does not.
    for name in ("ConvertToParquet", "Normalize", "RecheckRawCatalog", "RunTotalsQuery"):
        assert asl.TIMEOUT not in [e for r in tasks[name]["Retry"] for e in r["ErrorEquals"]], name
    for name in ("StartRawCrawl", "GetRawCrawlerState", "ReadSummary", "GetTotals", "Notify"):
        assert asl.TIMEOUT in [e for r in tasks[name]["Retry"] for e in r["ErrorEquals"]], name
    # Sized per stage: a job waits for its own Glue Timeout plus start-up; a catalog check is short.
    assert tasks["ConvertToParquet"]["TimeoutSeconds"] > 60 * 30
    assert tasks["RecheckRawCatalog"]["TimeoutSeconds"] < tasks["ConvertToParquet"]["TimeoutSeconds"]
    assert tasks["RecheckRawCatalog"]["Parameters"]["Timeout"] == asl.CATALOG_CHECK_JOB_TIMEOUT_MINUTES
    assert tasks["StartRawCrawl"]["TimeoutSeconds"] == asl.API_CALL_TIMEOUT_SECONDS
    longest_path = (sum(asl.GLUE_JOB_TIMEOUT_SECONDS.values()) + 2 * asl.CATALOG_CHECK_TIMEOUT_SECONDS
                    + asl.ATHENA_QUERY_TIMEOUT_SECONDS)
    assert definition["TimeoutSeconds"] > longest_path


def test_a_failed_job_or_query_is_retried_once_and_permanent_errors_never():
    tasks = _tasks(asl.build_definition(RESOURCES))
    for name in ("ConvertToParquet", "Normalize", "RecheckRawCatalog",
                 "RunTotalsQuery"):
        retry = tasks[name]["Retry"]
        assert retry[-1]["ErrorEquals"] == [asl.TASK_FAILED] and retry[-1]["MaxAttempts"] == 1, name
        never = [r for r in retry if r["MaxAttempts"] == 0]
        assert len(never) == 1 and never[0] is retry[-2], name
    assert "Glue.EntityNotFoundException" in tasks["Normalize"]["Retry"][-2]["ErrorEquals"]
    assert "Glue.ConcurrentRunsExceededException" in tasks["Normalize"]["Retry"][0]["ErrorEquals"]


def test_aws_sdk_errors_are_retried_in_aws_and_moto_spelling():
    for name, task in _tasks(asl.build_definition(RESOURCES)).items():
        if ":aws-sdk:" not in task["Resource"]:
            continue
        for handler in task["Retry"] + task["Catch"]:
            spellings = {}
            for error in handler["ErrorEquals"]:
                service, code = error.split(".", 1)
                if service != "States":
                    spellings.setdefault((service.lower(), code), set()).add(service)
            for (service, code), seen in spellings.items():
                assert service in seen and len(seen) == 2, (name, service, code)
    start = asl.build_definition(RESOURCES)["States"]["StartRawCrawl"]
    # A running crawl is waited for in the poll loop, not retried at a fixed interval.
    assert not [e for r in start["Retry"] for e in r["ErrorEquals"] if "CrawlerRunning" in e]
    assert set(start["Catch"][0]["ErrorEquals"]) == {"Glue.CrawlerRunningException",
                                                     "glue.CrawlerRunningException"}


def test_query_totals_the_processed_table_of_this_source_only():
    states = asl.build_definition(RESOURCES)["States"]
    template = states["PrepareTotalsQuery"]["Result"]["template"]
    sql = template.replace("{}", SOURCE_ID)
    assert sql == queries.totals_sql(RESOURCES.glue_database, RESOURCES.processed_table, SOURCE_ID)
    assert '"%s"."processed"' % RESOURCES.glue_database in sql and '"raw"' not in sql
    run = states["RunTotalsQuery"]
    assert run["Resource"] == "arn:aws:states:::athena:startQueryExecution.sync"
    assert run["Parameters"]["QueryString.$"] == "States.Format($.query.template, $.source_id)"
    assert run["Parameters"]["WorkGroup"] == RESOURCES.athena_workgroup
    assert run["Parameters"]["ResultConfiguration"]["OutputLocation"] == \
        RESOURCES.lake_uri("athena-results/")


def test_crawls_run_only_when_the_job_decided_a_crawl_is_needed():
    states = asl.build_definition(RESOURCES)["States"]
    lake = RESOURCES.lake_bucket
    for label, job, table, crawler, after in (
            ("Raw", "ConvertToParquet", RESOURCES.raw_table, RESOURCES.raw_crawler, "Normalize"),):
        arguments = states[job]["Parameters"]["Arguments"]
        decision = "s3://%s/manifests/{}.%s-catalog.json" % (lake, label.lower())
        assert arguments["--catalog_database"] == RESOURCES.glue_database
        assert arguments["--catalog_table"] == table
        assert arguments["--catalog_crawler"] == crawler
        assert arguments["--catalog_decision_uri.$"] == "States.Format('%s', $.source_id)" % decision
        assert arguments["--catalog_region"] == REGION
        assert states[job]["Next"] == "Read%sCatalogDecision" % label
        read = states["Read%sCatalogDecision" % label]
        assert read["Resource"] == "arn:aws:states:::aws-sdk:s3:getObject"
        assert read["Parameters"]["Key.$"] == "States.Format('manifests/{}.%s-catalog.json', $.source_id)" % label.lower()
        needed = states[read["Next"]]
        # A crawl is needed: wait for the one running, if any, else start one; else go on.
        assert needed["Choices"] == [
            {"And": [{"Variable": "$.catalog.decision.crawl", "BooleanEquals": True},
                     {"Variable": "$.catalog.decision.crawler_running", "BooleanEquals": True}],
             "Next": "WaitForRunning%sCrawl" % label},
            {"Variable": "$.catalog.decision.crawl", "BooleanEquals": True, "Next": "Start%sCrawl" % label}]
        assert needed["Default"] == after
        # The re-check is the same job, same arguments, catalog only, then the decision again.
        recheck = states["Recheck%sCatalog" % label]
        assert recheck["Parameters"]["JobName"] == states[job]["Parameters"]["JobName"]
        assert recheck["Parameters"]["Arguments"] == dict(arguments, **{"--catalog_only": "true"})
        assert recheck["Next"] == "Read%sCatalogDecision" % label
        waiting = states["WaitForRunning%sCrawl" % label]
        assert waiting["SecondsPath"] == "$.poll_seconds"
        done = states[states[waiting["Next"]]["Next"]]
        assert done["Choices"] == [{"Variable": "$.crawl.State", "StringEquals": "READY",
                                    "Next": "Recheck%sCatalog" % label}]
        assert done["Default"] == "WaitForRunning%sCrawl" % label


def test_crawls_poll_until_ready_and_continue_only_on_succeeded():
    states = asl.build_definition(RESOURCES)["States"]
    for label, crawler, after in (("Raw", RESOURCES.raw_crawler, "Normalize"),):
        assert states["Start%sCrawl" % label]["Parameters"] == {"Name": crawler}
        assert states["WaitFor%sCrawl" % label]["SecondsPath"] == "$.poll_seconds"
        ready = states["Is%sCrawlerReady" % label]
        assert ready["Choices"] == [{"Variable": "$.crawl.State", "StringEquals": "READY",
                                     "Next": "Get%sCrawlResult" % label}]
        assert ready["Default"] == "WaitFor%sCrawl" % label
        # LastCrawl is only read by the state the READY branch leads to.
        readers = [n for n, s in states.items() if "LastCrawl" in json.dumps(s.get("ResultSelector"))]
        assert "Get%sCrawlResult" % label in readers
        assert "LastCrawl" not in json.dumps(states["Get%sCrawlerState" % label])
        succeeded = states["Did%sCrawlSucceed" % label]
        flag = "$.%s_crawl_restarted" % label.lower()
        assert succeeded["Choices"] == [
            {"Variable": "$.crawl.Status", "StringEquals": "SUCCEEDED", "Next": after},
            {"Variable": flag, "IsPresent": False, "Next": "Restart%sCrawl" % label}]
        assert states["Restart%sCrawl" % label] == {"Type": "Pass", "Result": True, "ResultPath": flag,
                                                   "Next": "Start%sCrawl" % label}
        # A failed crawl is counted (its metric) and notified like any failure.
        assert states[succeeded["Default"]]["Next"] == asl.PUBLISH_FAILURE_METRICS
        assert states[asl.PUBLISH_FAILURE_METRICS]["Next"] == asl.FAILURE_NOTICE


def test_subjects_fit_sns_limit_for_every_step():
    states = asl.build_definition(RESOURCES)["States"]
    for name in ("Notify", asl.FAILURE_NOTICE):
        subject = states[name]["Parameters"]["Subject.$"]
        literal = re.match(r"States\.Format\('([^']*)'", subject).group(1)
        longest_step = max(len(step) for step in asl.STEPS)
        assert len(literal.replace("{}", "")) + longest_step + len(SOURCE_ID) <= 100, name


# -- moto accepts it, rejects broken ASL -------------------------------------------------------


def test_moto_accepts_the_definition_and_rejects_a_broken_one(sfn_aws):
    sfn = boto3.client("stepfunctions", region_name=REGION)
    definition = asl.build_definition(RESOURCES)
    arn = sfn.create_state_machine(name=RESOURCES.state_machine_name, roleArn=ROLE_ARN,
                                   definition=json.dumps(definition))["stateMachineArn"]
    assert arn == RESOURCES.state_machine_arn
    broken = copy.deepcopy(definition)
    del broken["States"]["Normalize"]["Resource"]
    with pytest.raises(ClientError) as error:
        sfn.create_state_machine(name="broken", roleArn=ROLE_ARN, definition=json.dumps(broken))
    # moto 5.2.5 raises InvalidDefinition but sends it without its code (AWS: "InvalidDefinition").
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "No Resource declaration" in error.value.response["Error"]["Message"]


def test_every_transition_leads_to_a_state_and_every_state_is_reachable():
    # AWS rejects a definition that breaks this; moto 5.2.5 accepts it.
    definition = asl.build_definition(RESOURCES)
    states = definition["States"]

    def targets(state):
        found = [state.get("Next"), state.get("Default")]
        found += [c["Next"] for c in state.get("Choices", []) + state.get("Catch", [])]
        return [t for t in found if t]

    for name, state in states.items():
        for target in targets(state):
            assert target in states, (name, target)
        ends = state.get("End") or state["Type"] in ("Succeed", "Fail")
        assert bool(ends) != bool(state.get("Next") or state.get("Choices")), name
    reached, frontier = set(), [definition["StartAt"]]
    while frontier:
        name = frontier.pop()
        if name not in reached:
            reached.add(name)
            frontier.extend(targets(states[name]))
    assert reached == set(states)


@pytest.mark.skipif(not os.path.exists(ASL_VALIDATOR),
                    reason="npm asl-validator not installed (make test installs it when npm exists)")
def test_reference_validator_accepts_the_template_and_the_stage_definition(tmp_path):
    stage_file = tmp_path / "stage.asl.json"
    stage_file.write_text(json.dumps(asl.build_definition(RESOURCES)))
    broken_file = tmp_path / "broken.asl.json"
    broken = asl.build_definition(RESOURCES)
    broken["States"]["Notify"]["Parameters"]["Subject.$"] = "States.Format('x {}', $.source_id"
    broken_file.write_text(json.dumps(broken))

    def validate(path):
        return subprocess.run([ASL_VALIDATOR, "--json-path", str(path)],
                              capture_output=True, text=True, timeout=120)

    for path in (asl.TEMPLATE_PATH, stage_file):
        result = validate(path)
        assert result.returncode == 0, result.stdout + result.stderr
    result = validate(broken_file)
    assert result.returncode != 0 and "Subject.$" in result.stdout + result.stderr


# -- real executions -------------------------------------------------------------------------


def test_missing_glue_job_fails_at_json_to_parquet_with_a_notification(sfn_aws):
    queue_url = _subscribe_queue()
    arn = _start(asl.build_definition(RESOURCES),
                 name=execution_name(RESOURCES.landing_bucket, LANDING_KEY, ETAG))

    description = _finish(arn)

    cause = _assert_failed_at(description, queue_url, "json-to-parquet", "Glue.EntityNotFoundException")
    assert RESOURCES.json_to_parquet_job in cause["cause"]
    # A missing job is not retried (no retry can make it exist).
    assert len([e for e in _history(arn) if e["type"] == "TaskFailed"]) == 1


def test_json_to_parquet_job_gets_the_design_arguments(sfn_aws):
    glue = boto3.client("glue", region_name=REGION)
    glue.create_job(Name=RESOURCES.json_to_parquet_job, Role=RESOURCES.role_arn("r"),
                    Command={"Name": "pythonshell", "ScriptLocation": RESOURCES.lake_uri("s.py")})
    queue_url = _subscribe_queue()

    description = _finish(_start(asl.build_definition(RESOURCES)))

    runs = glue.get_job_runs(JobName=RESOURCES.json_to_parquet_job)["JobRuns"]
    lake = RESOURCES.lake_bucket
    for run in runs:
        assert run["Arguments"] == {
            "--source_uri": "s3://%s/%s" % (RESOURCES.landing_bucket, LANDING_KEY),
            "--target_uri": "s3://%s/raw/%s.parquet" % (lake, SOURCE_ID),
            "--quarantine_uri": "s3://%s/quarantine/%s.jsonl" % (lake, SOURCE_ID),
            "--source_id": SOURCE_ID,
            "--source_version_id": "",  # the input names no version: an unversioned object
            "--catalog_database": RESOURCES.glue_database,
            "--catalog_table": RESOURCES.raw_table,
            "--catalog_crawler": RESOURCES.raw_crawler,
            "--catalog_decision_uri": "s3://%s/manifests/%s.raw-catalog.json" % (lake, SOURCE_ID),
            "--catalog_region": REGION,
            "--execution_name": "run-1",  # for the job's JSON log lines
        }
    # moto 5.2.5 cannot wait for a Glue job (.sync): the task fails with States.Runtime, which
    # is no task failure (so not retried, as on AWS), and ends in the Fail state that reports it
    # without the prefix.
    assert len(runs) == 1
    cause = json.loads(description["cause"])
    assert cause["error"] == "States.Runtime"
    _assert_failed_at(description, queue_url, "json-to-parquet", cause["error"])


def _put_decision(crawl, label="raw", crawler_running=False):
    """The catalog decision a job writes (glue/catalog.py), as the state machine reads it."""
    s3 = boto3.client("s3", region_name=REGION)
    if RESOURCES.lake_bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=RESOURCES.lake_bucket)
    decision = {"crawl": crawl, "crawler_running": crawler_running, "reason": "test",
                "database": RESOURCES.glue_database, "table": label, "registered": 0, "partitions": 1}
    s3.put_object(Bucket=RESOURCES.lake_bucket, Key="manifests/%s.%s-catalog.json" % (SOURCE_ID, label),
                  Body=json.dumps(decision))


@pytest.fixture
def aws_crawl_status(monkeypatch):
    """moto names a finished crawl COMPLETED; GetCrawler's LastCrawl.Status says SUCCEEDED on AWS."""
    from moto.glue.models import FakeCrawler

    original_as_dict = FakeCrawler.as_dict

    def as_dict_with_aws_status(crawler):
        data = original_as_dict(crawler)
        if data.get("LastCrawl", {}).get("Status") == "COMPLETED":
            data["LastCrawl"]["Status"] = "SUCCEEDED"
        return data

    monkeypatch.setattr(FakeCrawler, "as_dict", as_dict_with_aws_status)


def test_no_crawl_when_the_job_registered_its_partitions(sfn_aws, s3_bodies_as_text):
    _create_crawler(RESOURCES.raw_crawler)
    _put_decision(crawl=False)
    definition = _part(asl.build_definition(RESOURCES), {"crawl-raw"}, "ReadRawCatalogDecision")

    arn = _start(definition)
    description = _finish(arn)

    assert description["status"] == "SUCCEEDED", description.get("cause")
    assert _entered(arn, "Normalize") == 1  # the stand-in for the next step
    assert _entered(arn, "StartRawCrawl") == 0
    glue = boto3.client("glue", region_name=REGION)
    assert glue.list_crawls(CrawlerName=RESOURCES.raw_crawler)["Crawls"] == []


def test_crawl_waits_while_running_and_fails_unless_succeeded(sfn_aws, crawls_held_running,
                                                               s3_bodies_as_text):
    glue = boto3.client("glue", region_name=REGION)
    _create_crawler(RESOURCES.raw_crawler)
    _put_decision(crawl=True, label="raw")
    queue_url = _subscribe_queue()
    arn = _start(_part(asl.build_definition(RESOURCES), {"crawl-raw"}, "ReadRawCatalogDecision"))

    _wait_until(lambda: _entered(arn, "GetRawCrawlerState") >= 3, "the crawler to be polled")
    glue.stop_crawler(Name=RESOURCES.raw_crawler)  # RUNNING -> STOPPING: still not READY
    polls = _entered(arn, "GetRawCrawlerState")
    _wait_until(lambda: _entered(arn, "GetRawCrawlerState") > polls + 2, "polls while stopping")
    assert _entered(arn, "GetRawCrawlResult") == 0
    glue.list_crawls(CrawlerName=RESOURCES.raw_crawler)  # STOPPING -> STOPPED: READY
    # A crawl that did not succeed is started once more...
    _wait_until(lambda: _entered(arn, "StartRawCrawl") == 2, "the crawl to be started again")
    _wait_until(lambda: _entered(arn, "GetRawCrawlerState") > polls + 4, "the second crawl to be polled")
    glue.stop_crawler(Name=RESOURCES.raw_crawler)
    glue.list_crawls(CrawlerName=RESOURCES.raw_crawler)
    description = _finish(arn)

    # ... and a second failure is final.
    cause = _assert_failed_at(description, queue_url, "crawl-raw", "CrawlFailed")
    assert cause["cause"] == "Crawler %s finished with status STOPPED" % RESOURCES.raw_crawler
    assert _entered(arn, "StartRawCrawl") == 2


def test_crawl_that_fails_once_is_started_again_and_succeeds(sfn_aws, crawls_held_running,
                                                             s3_bodies_as_text, aws_crawl_status):
    glue = boto3.client("glue", region_name=REGION)
    _create_crawler(RESOURCES.raw_crawler)
    _put_decision(crawl=True, label="raw")
    arn = _start(_part(asl.build_definition(RESOURCES), {"crawl-raw"}, "ReadRawCatalogDecision"))

    _wait_until(lambda: _entered(arn, "GetRawCrawlerState") >= 1, "the crawler to be polled")
    glue.stop_crawler(Name=RESOURCES.raw_crawler)
    glue.list_crawls(CrawlerName=RESOURCES.raw_crawler)  # STOPPED: the first crawl failed
    _wait_until(lambda: _entered(arn, "StartRawCrawl") == 2, "the crawl to be started again")
    glue.list_crawls(CrawlerName=RESOURCES.raw_crawler)  # the second crawl completes
    description = _finish(arn)

    assert description["status"] == "SUCCEEDED", description.get("cause")
    assert _entered(arn, "Normalize") == 1  # the stand-in for the next step
    assert len(glue.list_crawls(CrawlerName=RESOURCES.raw_crawler)["Crawls"]) == 2


@pytest.mark.parametrize("seen_by_the_job", [False, True], ids=["refused-start", "seen-by-the-job"])
def test_running_crawl_is_waited_for_then_the_catalog_checked_again(sfn_aws, crawls_held_running,
                                                                    s3_bodies_as_text, seen_by_the_job):
    glue = boto3.client("glue", region_name=REGION)
    _create_crawler(RESOURCES.raw_crawler)
    # The table was missing when the job looked; the job may or may not have seen the crawl.
    _put_decision(crawl=True, crawler_running=seen_by_the_job)
    glue.start_crawler(Name=RESOURCES.raw_crawler)  # another execution's crawl
    definition = _part(asl.build_definition(RESOURCES), {"crawl-raw"}, "ReadRawCatalogDecision")
    # moto cannot wait for a Glue job (.sync): a Pass stands in for the catalog-only run, whose
    # decision the test writes below, as the job would.
    definition["States"]["RecheckRawCatalog"] = {"Type": "Pass", "Next": "ReadRawCatalogDecision"}
    arn = _start(definition)

    def refused_while_running():
        return any(e.get("taskFailedEventDetails", {}).get("error") == "glue.CrawlerRunningException"
                   for e in _history(arn))

    if not seen_by_the_job:
        _wait_until(refused_while_running, "StartCrawler to be refused")
    _wait_until(lambda: _entered(arn, "GetRunningRawCrawlerState") >= 3, "the running crawl polled")
    # Waiting, not retrying the start (nor starting at all when the job saw the crawl).
    assert _entered(arn, "StartRawCrawl") == (0 if seen_by_the_job else 1)
    _put_decision(crawl=False)  # that crawl made the table: the check registers our partitions
    glue.list_crawls(CrawlerName=RESOURCES.raw_crawler)  # the other crawl completes
    description = _finish(arn)

    assert description["status"] == "SUCCEEDED", description.get("cause")
    assert len(glue.list_crawls(CrawlerName=RESOURCES.raw_crawler)["Crawls"]) == 1  # no crawl of ours
    assert _entered(arn, "RecheckRawCatalog") == 1
    assert _entered(arn, "ReadRawCatalogDecision") == 2
    assert _entered(arn, "Normalize") == 1  # the stand-in for the next step


def test_query_and_notify_publish_the_summary_and_return_the_design_output(sfn_aws, s3_bodies_as_text):
    s3 = boto3.client("s3", region_name=REGION)
    athena = boto3.client("athena", region_name=REGION)
    s3.create_bucket(Bucket=RESOURCES.lake_bucket)
    rows = {"read": 12, "valid": 9, "quarantined": 2, "duplicates": 1}
    s3.put_object(Bucket=RESOURCES.lake_bucket, Key="manifests/%s.json" % SOURCE_ID,
                  Body=json.dumps({"source": "s3://lake/raw/x.parquet", "source_id": SOURCE_ID,
                                   "rows": rows, "partitions": [], "superseded": False}))
    athena.create_work_group(Name=RESOURCES.athena_workgroup)
    columns = [alias for alias, _expr, _key, _kind in queries.TOTALS_COLUMNS]
    values = ["1500.5", "320.25", "42.0", "9", "4", "4.685"]
    header = {"Data": [{"VarCharValue": c} for c in columns]}
    totals = {"Data": [{"VarCharValue": v} for v in values]}
    response = requests.post("http://motoapi.amazonaws.com/moto-api/static/athena/query-results",
                             json={"account_id": ACCOUNT_ID, "region": REGION,
                                   "results": [{"rows": [header, totals], "column_info": []}]})
    assert response.status_code == 201
    queue_url = _subscribe_queue()
    definition = _part(asl.build_definition(RESOURCES), {"query", "notify"}, "ReadSummary")
    # moto cannot wait for an Athena query (.sync); its queries hold their results at once,
    # so the request-response form of the same call stands in.
    run = definition["States"]["RunTotalsQuery"]
    run["Resource"] = "arn:aws:states:::athena:startQueryExecution"
    run["ResultSelector"] = {"QueryExecutionId.$": "$.QueryExecutionId", "DataScannedInBytes": 1234}

    description = _finish(_start(definition))

    assert description["status"] == "SUCCEEDED", description.get("cause")
    output = json.loads(description["output"])
    query_id = output["query"]["query_execution_id"]
    [notice] = _notifications(queue_url)
    assert output == {
        "source": execution_input()["source_uri"],
        "source_id": SOURCE_ID,
        "rows": rows,
        "superseded": False,
        "query": {"columns": columns, "values": values, "query_execution_id": query_id, "scanned_bytes": 1234},
        "notification_id": notice["MessageId"],
    }
    execution = athena.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]
    assert execution["Query"] == queries.totals_sql(RESOURCES.glue_database,
                                                    RESOURCES.processed_table, SOURCE_ID)
    assert execution["WorkGroup"] == RESOURCES.athena_workgroup
    # As on AWS, GetQueryExecution names the result file under the output location.
    assert execution["ResultConfiguration"]["OutputLocation"].startswith(
        RESOURCES.lake_uri("athena-results/"))
    assert SOURCE_ID in notice["Subject"] and len(notice["Subject"]) <= 100
    assert {k: v["Value"] for k, v in notice["MessageAttributes"].items()} == {
        "outcome": "succeeded", "source_id": SOURCE_ID}
    readable, summary = notice["Message"].split("\n\n", 1)
    assert "Rows read: 12, valid: 9, quarantined: 2, duplicates: 1" in readable
    for line in ("Total_Cost_in_$: 1500.5", "Total_Distance_in_miles: 320.25",
                 "Total_Fuel_Quantity_in_gal: 42.0"):
        assert line in readable.splitlines()
    assert json.loads(summary) == {k: v for k, v in output.items() if k != "notification_id"}


def test_failure_branch_reports_reserved_errors_without_their_prefix(sfn_aws):
    queue_url = _subscribe_queue()
    definition = _part(asl.build_definition(RESOURCES), {"normalize"}, asl.failure_recorder("normalize"))
    sfn = boto3.client("stepfunctions", region_name=REGION)
    machine = sfn.create_state_machine(name="failure-branch", roleArn=ROLE_ARN,
                                       definition=json.dumps(definition))["stateMachineArn"]
    failed = dict(execution_input(), error={"Error": "States.TaskFailed", "Cause": "job run failed"})
    arn = sfn.start_execution(stateMachineArn=machine, name="reserved",
                              input=json.dumps(failed))["executionArn"]

    description = _finish(arn)

    cause = _assert_failed_at(description, queue_url, "normalize", "States.TaskFailed")
    assert description["error"] == "TaskFailed"
    assert cause["cause"] == "job run failed"


@pytest.mark.parametrize("change", [
    {"source_id": "x' OR '1'='1"},
    {"source_id": 7},
    {"key": "incoming/../etc/passwd"},
    {"key": "elsewhere/a.json"},
    {"source_uri": "file:///etc/passwd"},
    {"version_id": 12},
])
def test_an_input_with_a_forged_identifier_fails_before_any_job(sfn_aws, change):
    glue = boto3.client("glue", region_name=REGION)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    machine = sfn.create_state_machine(name=RESOURCES.state_machine_name, roleArn=ROLE_ARN,
                                       definition=json.dumps(asl.build_definition(RESOURCES)))["stateMachineArn"]
    arn = sfn.start_execution(stateMachineArn=machine, name="forged",
                              input=json.dumps(dict(execution_input(), **change)))["executionArn"]

    description = _finish(arn)

    assert description["status"] == "FAILED"
    assert description["error"] == asl.INVALID_INPUT_ERROR
    with pytest.raises(ClientError):
        glue.get_job_runs(JobName=RESOURCES.json_to_parquet_job)  # no job was even looked up


def _delay_bounds(retrier):
    """The sum of a retrier's delay bounds over all its attempts (full jitter waits between 0 and
    each bound, so half of it on average)."""
    return sum(min(retrier["IntervalSeconds"] * retrier["BackoffRate"] ** n, retrier["MaxDelaySeconds"])
               for n in range(retrier["MaxAttempts"]))


def test_a_run_at_its_jobs_concurrency_limit_waits_as_long_as_the_execution_may_last():
    # A backfill of hundreds of files: each run waits for a free slot of its job. With full
    # jitter a retry waits half its bound on average, so the bounds add up to twice the time.
    tasks = _tasks(asl.build_definition(RESOURCES))
    for name in ("ConvertToParquet", "Normalize", "RecheckRawCatalog"):
        [queued] = [r for r in tasks[name]["Retry"] if "Glue.ConcurrentRunsExceededException" in r["ErrorEquals"]]
        assert queued["ErrorEquals"] == ["Glue.ConcurrentRunsExceededException"], name
        assert queued["JitterStrategy"] == "FULL" and queued["MaxDelaySeconds"] <= 120, name
        assert _delay_bounds(queued) >= 2 * asl.EXECUTION_TIMEOUT_SECONDS, (name, _delay_bounds(queued))
        # Other transient errors keep a short budget: they are not a queue.
        others = [r for r in tasks[name]["Retry"] if "Glue.ThrottlingException" in r["ErrorEquals"]]
        assert others and others[0]["MaxAttempts"] <= 8, name


def test_a_totals_query_past_athenas_query_quota_waits_about_an_hour():
    # The quota of active DML queries is the account's, shared with the analysts' queries.
    [queued] = [r for r in _tasks(asl.build_definition(RESOURCES))["RunTotalsQuery"]["Retry"]
                if "Athena.TooManyRequestsException" in r["ErrorEquals"]]
    assert queued["ErrorEquals"] == ["Athena.TooManyRequestsException"] and queued["JitterStrategy"] == "FULL"
    assert _delay_bounds(queued) >= 2 * 3600, _delay_bounds(queued)
    assert queued["MaxDelaySeconds"] <= 60
