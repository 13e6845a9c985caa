"""CloudWatch monitoring on the local stack, checked as an operator would: the deployed alarms and
dashboard read back through the CloudWatch APIs, the alarm states ``python -m local run --json``
reports after a clean file, a file with 30% bad lines and a failed step, the Logs Insights query
of docs/OPERATIONS.md on the JSON lines the components wrote, and ``deploy down`` removing it all.

One stack for the module (the runs go through the command's own code, ``local.run.run``); its
tests run in order, ``deploy down`` last. The evaluator's rules are tested without a stack.
"""
import datetime as dt
import io
import json
import os
import re

import pytest
from botocore.exceptions import ClientError

from chalicelib import monitoring, naming
from local import alarms, logs_insights
from local import run as local_run
from local.__main__ import build_parser
from tests import datafiles

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPERATIONS = os.path.join(PROJECT_DIR, "docs", "OPERATIONS.md")
QUARANTINE = "shipping-etl-local-quarantine-share"
FAILED = "shipping-etl-local-failed-executions"
GLUE_FAILED = "shipping-etl-local-glue-job-failures"
EVERY_ALARM = {"shipping-etl-local-%s" % kind for kind in (
    "failed-executions", "quarantine-share", "no-files-processed", "lost-events", "dead-letters",
    "lambda-errors", "lambda-throttles", "glue-job-failures")}


# -- the evaluator's rules, no stack ------------------------------------------------------------

def _alarm(**fields):
    base = {"AlarmName": "a", "ComparisonOperator": "GreaterThanThreshold", "Threshold": 5.0,
            "EvaluationPeriods": 1, "TreatMissingData": "notBreaching", "StateValue": "OK"}
    base.update(fields)
    return base


def test_metric_math_of_the_alarms_is_evaluated():
    assert alarms.evaluate_expression("100 * m1 / m2", {"m1": 30.0, "m2": 100.0}) == 30.0
    assert alarms.evaluate_expression("100 * m1 / m2", {"m1": None, "m2": 100.0}) is None
    assert alarms.evaluate_expression("100 * m1 / m2", {"m1": 0.0, "m2": 0.0}) is None  # no datapoint
    assert alarms.evaluate_expression("FILL(m1, 0) + FILL(m2, 0)", {"m1": None, "m2": 2.0}) == 2.0
    with pytest.raises(alarms.UnsupportedExpression):
        alarms.evaluate_expression("SEARCH('x', 'Sum', 60)", {})


def test_alarm_states_follow_threshold_and_missing_data():
    assert alarms.new_state(_alarm(), [30.0])[0] == "ALARM"
    assert alarms.new_state(_alarm(), [5.0])[0] == "OK"  # not greater than 5
    assert alarms.new_state(_alarm(), [None])[0] == "OK"  # notBreaching
    assert alarms.new_state(_alarm(TreatMissingData="missing"), [None])[0] == "INSUFFICIENT_DATA"
    stale = _alarm(ComparisonOperator="LessThanThreshold", Threshold=1.0, EvaluationPeriods=2,
                   DatapointsToAlarm=2, TreatMissingData="breaching")
    assert alarms.new_state(stale, [None, None])[0] == "ALARM"
    assert alarms.new_state(stale, [None, 1.0])[0] == "OK"


def test_producer_is_the_first_folder_under_incoming():
    assert naming.producer("incoming/acme/2026/x.json") == "acme"
    assert naming.producer("incoming/x.json") == "none"
    assert naming.producer("incoming/2026/01/30/shipping-x.json") == "none"  # the generator's date folders


def test_logs_insights_filters_json_fields(tmp_path):
    path = tmp_path / "a.log"
    path.write_text('{"time": "2", "source_id": "s1", "message": "b"}\nINFO plain s1\n'
                    '{"time": "1", "source_id": "s1", "message": "a"}\n{"time": "0", "source_id": "s2"}\n')
    rows = logs_insights.run('fields message | filter source_id = "s1" | sort @timestamp asc',
                             logs_insights.events([str(path)]))
    assert rows == [{"message": "a"}, {"message": "b"}]


# -- on the local stack -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from local.stack import LocalStack

    with LocalStack(work_dir=str(tmp_path_factory.mktemp("monitoring"))) as started:
        yield started


@pytest.fixture(scope="module")
def alarm_inbox(stack):
    """An SQS queue subscribed to the alarm topic: what an e-mail subscriber would get."""
    sqs, sns = stack.client("sqs"), stack.client("sns")
    url = sqs.create_queue(QueueName="alarm-inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=stack.resources.alarm_topic_arn, Protocol="sqs", Endpoint=arn,
                  Attributes={"RawMessageDelivery": "true"})
    return url


@pytest.fixture(scope="module")
def runs():
    """The reports of this module's runs, by name."""
    return {}


def run_here(stack, *args):
    parsed = build_parser().parse_args(["run", "--json", *args])
    out = io.StringIO()
    returncode = local_run.run(parsed, out=out, stack=stack)
    return returncode, json.loads(out.getvalue().strip().splitlines()[-1])


def test_deploy_made_the_dashboard_and_every_alarm_with_metrics_and_thresholds(stack, alarm_inbox):
    cloudwatch = stack.client("cloudwatch")
    described = {a["AlarmName"]: a for a in cloudwatch.describe_alarms(
        AlarmNamePrefix="shipping-etl-local-")["MetricAlarms"]}
    assert set(described) == EVERY_ALARM
    topic = stack.resources.alarm_topic_arn
    for alarm in described.values():
        assert alarm["AlarmActions"] == [topic] and alarm["OKActions"] == [topic], alarm["AlarmName"]
        assert alarm["Threshold"] > 0 and alarm["EvaluationPeriods"] >= 1, alarm["AlarmName"]
        assert alarm.get("MetricName") or alarm.get("Metrics"), alarm["AlarmName"]
    quarantine = described[QUARANTINE]
    assert (quarantine["Threshold"], quarantine["ComparisonOperator"]) == (5.0, "GreaterThanThreshold")
    metrics = {q["Id"]: q for q in quarantine["Metrics"]}
    assert metrics["e1"]["Expression"] == "100 * m1 / m2"
    assert [metrics[i]["MetricStat"]["Metric"]["MetricName"] for i in ("m1", "m2")] == ["RowsQuarantined", "RowsRead"]
    assert metrics["m1"]["MetricStat"]["Period"] == 3600
    failed = {q["Id"]: q for q in described[FAILED]["Metrics"]}
    assert failed["m1"]["MetricStat"]["Metric"] == {
        "Namespace": "ShippingETL", "MetricName": "ExecutionsFailed", "Dimensions": [{"Name": "Stage", "Value": "local"}]}
    stale = described["shipping-etl-local-no-files-processed"]
    assert (stale["MetricName"], stale["EvaluationPeriods"], stale["TreatMissingData"]) == (
        "ExecutionsSucceeded", 2, "breaching")
    assert stack.client("sns").get_topic_attributes(TopicArn=topic)["Attributes"]["KmsMasterKeyId"]

    body = json.loads(cloudwatch.get_dashboard(DashboardName="shipping-etl-local")["DashboardBody"])
    [alarm_widget] = [w for w in body["widgets"] if w["type"] == "alarm"]
    assert {arn.rsplit(":", 1)[1] for arn in alarm_widget["properties"]["alarms"]} == EVERY_ALARM
    graphed = {line[1] for w in body["widgets"] if w["type"] == "metric"
               for line in w["properties"]["metrics"] if isinstance(line[0], str)}
    assert {"RowsRead", "RowsQuarantined", "ExecutionsFailed", "StepSeconds", "QueryScannedBytes", "Errors"} <= graphed


def test_clean_file_leaves_the_quarantine_alarm_ok(stack, tmp_path, runs):
    path = datafiles.write(tmp_path / "clean.json", datafiles.clean_bytes(rows=100, seed=61))

    returncode, report = run_here(stack, "--file", str(path), "--key", "incoming/acme/clean.json")

    assert returncode == 0, report
    runs["clean"] = report
    assert report["alarms"][QUARANTINE] == "OK"
    assert report["alarms"][FAILED] == "OK"
    assert set(report["alarms"]) == EVERY_ALARM
    # The figures are in CloudWatch, stage-wide and for the producer (the key's first folder).
    cloudwatch = stack.client("cloudwatch")
    now = dt.datetime.now(dt.timezone.utc)
    points = cloudwatch.get_metric_statistics(
        Namespace="ShippingETL", MetricName="RowsRead", StartTime=now - dt.timedelta(minutes=10),
        EndTime=now + dt.timedelta(minutes=1), Period=3600, Statistics=["Sum"],
        Dimensions=[{"Name": "Stage", "Value": "local"}, {"Name": "Producer", "Value": "acme"}])["Datapoints"]
    assert [p["Sum"] for p in points] == [100.0]


def test_file_with_30_percent_bad_lines_sets_the_quarantine_alarm(stack, tmp_path, runs, alarm_inbox):
    bad = b"".join(b"not a record %d\n" % i for i in range(30))
    path = datafiles.write(tmp_path / "bad.json", datafiles.clean_bytes(rows=70, seed=62) + bad)

    returncode, report = run_here(stack, "--file", str(path))

    assert returncode == 0, report
    runs["bad"] = report
    [execution] = report["executions"]
    assert execution["rows"]["quarantined"] == 30 and execution["rows"]["read"] == 100
    # 30 of the 200 rows read in the alarm's window: 15% > 5%.
    assert report["alarms"][QUARANTINE] == "ALARM"
    assert report["alarms"][FAILED] == "OK"
    messages = stack.client("sqs").receive_message(QueueUrl=alarm_inbox, MaxNumberOfMessages=10,
                                                   WaitTimeSeconds=1).get("Messages", [])
    changes = [json.loads(m["Body"]) for m in messages]
    assert {"AlarmName": QUARANTINE, "NewStateValue": "ALARM"}.items() <= next(
        c for c in changes if c["AlarmName"] == QUARANTINE).items()


def test_failed_normalize_sets_the_failed_execution_alarm(stack, tmp_path, runs):
    path = datafiles.write(tmp_path / "fails.json", datafiles.clean_bytes(rows=20, seed=63))

    returncode, report = run_here(stack, "--file", str(path), "--fail", "normalize")

    assert returncode == 1
    runs["failed"] = report
    [execution] = report["executions"]
    assert (execution["status"], execution["failed_step"]) == ("FAILED", "normalize")
    assert report["alarms"][FAILED] == "ALARM"
    assert report["alarms"][GLUE_FAILED] == "ALARM"
    described = stack.client("cloudwatch").describe_alarms(AlarmNames=[FAILED])["MetricAlarms"][0]
    assert described["StateValue"] == "ALARM" and "Threshold Crossed" in described["StateReason"]


def _documented_query():
    with open(OPERATIONS, encoding="utf-8") as handle:
        text = handle.read()
    match = re.search(r"<!-- source-id-query -->\s*```\n(.*?)```", text, re.S)
    assert match, "docs/OPERATIONS.md lost its source-id query"
    return match.group(1)


def test_documented_logs_query_finds_every_line_of_one_source(stack, runs):
    [execution] = runs["bad"]["executions"]
    name = execution["name"]
    source_id = name.rsplit("-", 1)[1]
    paths = [stack.lambda_log_path] + stack.glue_log_paths()
    query = _documented_query().replace("<source_id>", source_id)

    rows = logs_insights.run(query, logs_insights.events(paths))

    # Every JSON log line that mentions the object, whichever component wrote it, and nothing else.
    mentioning = [event for event in logs_insights.events(paths) if source_id in event["@message"]]
    assert len(rows) == len(mentioning) >= 5
    logged = [e for e in mentioning if "level" in e]  # the log lines (the jobs' result lines have no level)
    assert sorted((r["component"], r["message"]) for r in rows if r["level"]) == sorted(
        (e["component"], e["message"]) for e in logged)
    assert [r["@timestamp"] for r in rows if r["level"]] == sorted(e["time"] for e in logged)
    components = {r["component"] for r in rows if r["level"]}
    assert {"shipping-etl-local-on_landing", "shipping-etl-local-json-to-parquet",
            "shipping-etl-local-normalize"} <= components
    assert {r["execution"] for r in rows if r["level"]} == {name}
    for event in logged:
        assert event["stage"] == "local" and event["source_id"] == source_id, event["@message"]
    # No record content: the bad lines' text appears in no log line.
    assert not any("not a record" in e["@message"] for e in logs_insights.events(paths))


def test_publishing_outside_the_pipelines_namespace_is_denied(stack):
    import boto3

    from local import moto_hooks

    r = stack.resources
    key, secret, token = moto_hooks.role_credentials(r.account_id, r.region, r.role_arn(r.state_machine_role), "t")
    cloudwatch = boto3.client("cloudwatch", endpoint_url=stack.endpoint_url, region_name=r.region,
                              aws_access_key_id=key, aws_secret_access_key=secret, aws_session_token=token,
                              verify=stack.embedded.ca_bundle)
    datum = [{"MetricName": "Probe", "Value": 1.0, "Dimensions": [{"Name": "Stage", "Value": "probe"}]}]
    cloudwatch.put_metric_data(Namespace=monitoring.NAMESPACE, MetricData=datum)
    with pytest.raises(ClientError) as denied:
        cloudwatch.put_metric_data(Namespace="Elsewhere", MetricData=datum)
    assert "AccessDenied" in str(denied.value) and "cloudwatch:PutMetricData" in str(denied.value)


def test_deploy_down_removes_alarms_dashboard_and_topic(stack):
    import deploy

    environ = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    deploy.down(stack.stage, environ=environ, out=io.StringIO())

    cloudwatch = stack.client("cloudwatch")
    assert cloudwatch.describe_alarms(AlarmNamePrefix="shipping-etl-local-")["MetricAlarms"] == []
    assert cloudwatch.list_dashboards()["DashboardEntries"] == []
    topics = [t["TopicArn"] for t in stack.client("sns").list_topics()["Topics"]]
    assert stack.resources.alarm_topic_arn not in topics
