import json

import boto3
import pytest
from botocore.exceptions import ClientError

from chalicelib import naming
from chalicelib.resources import Resources
from chalicelib.settings import Settings
from chalicelib.trigger import (ALREADY_STARTED, SKIPPED, STARTED, PipelineTrigger,
                                execution_arn_for)

from conftest import ACCOUNT_ID, REGION

SETTINGS = Settings(stage="test", account_id=ACCOUNT_ID, region=REGION, poll_seconds=7)
RESOURCES = Resources.from_settings(SETTINGS)
BUCKET = RESOURCES.landing_bucket
PASS_MACHINE = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}})


@pytest.fixture
def sfn(aws):
    client = boto3.client("stepfunctions")
    client.create_state_machine(
        name=RESOURCES.state_machine_name,
        definition=PASS_MACHINE,
        roleArn=RESOURCES.role_arn(RESOURCES.state_machine_role),
    )
    return client


@pytest.fixture
def trigger(sfn):
    return PipelineTrigger.from_settings(SETTINGS, sfn_client=sfn)


def s3_record(key, etag="0123456789abcdef", size=42, event_name="ObjectCreated:Put", bucket=BUCKET,
              version_id=None):
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": REGION,
        "eventName": event_name,
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": bucket, "arn": "arn:aws:s3:::%s" % bucket},
            "object": {"key": key, "size": size, "eTag": etag},
        },
    }
    if version_id:
        record["s3"]["object"]["versionId"] = version_id
    return record


def s3_event(*records):
    return {"Records": list(records)}


def executions(sfn):
    return sfn.list_executions(stateMachineArn=RESOURCES.state_machine_arn)["executions"]


def test_every_record_starts_its_own_execution(sfn, trigger):
    event = s3_event(
        s3_record("incoming/2026/01/30/a.json", etag="aaa"),
        s3_record("incoming/2026/01/30/b.json", etag="bbb"),
        s3_record("incoming/2026/01/30/c.json", etag="ccc"),
    )

    results = trigger.handle_event(event)

    assert [r["outcome"] for r in results] == [STARTED] * 3
    started = {e["name"] for e in executions(sfn)}
    assert started == {
        naming.execution_name(BUCKET, "incoming/2026/01/30/%s.json" % stem, etag)
        for stem, etag in (("a", "aaa"), ("b", "bbb"), ("c", "ccc"))
    }


def test_execution_input_follows_the_design(sfn, trigger):
    key = "incoming/2026/01/30/batch.json"

    [result] = trigger.handle_event(s3_event(s3_record(key, etag="abc", size=1234)))

    described = sfn.describe_execution(executionArn=result["execution_arn"])
    assert json.loads(described["input"]) == {
        "bucket": BUCKET,
        "key": key,
        "version_id": None,
        "etag": "abc",
        "size": 1234,
        "source_id": naming.source_id(BUCKET, key, "abc"),
        "source_uri": "s3://%s/%s" % (BUCKET, key),
        "producer": "none",  # a date folder names no producer (naming.producer)
        "poll_seconds": 7,
    }
    assert result["execution_arn"] == RESOURCES.execution_arn(result["execution_name"])


def test_keys_are_url_decoded(sfn, trigger):
    [result] = trigger.handle_event(s3_event(s3_record("incoming/2026/01/30/my+batch+%28v2%29%C3%A9.json")))

    assert result["key"] == "incoming/2026/01/30/my batch (v2)\u00e9.json"
    described = sfn.describe_execution(executionArn=result["execution_arn"])
    assert json.loads(described["input"])["source_uri"] == (
        "s3://%s/incoming/2026/01/30/my batch (v2)\u00e9.json" % BUCKET
    )


def test_redelivered_event_starts_nothing_new(sfn, trigger):
    event = s3_event(s3_record("incoming/2026/01/30/a.json"), s3_record("incoming/2026/01/30/b.json"))
    first = trigger.handle_event(event)

    again = trigger.handle_event(event)

    # StartExecution's idempotency answers a start of a running execution with that execution:
    # the trigger cannot tell it from its own start, and need not.
    assert [r["execution_arn"] for r in again] == [r["execution_arn"] for r in first]
    assert len(executions(sfn)) == 2


def test_redelivery_after_the_execution_ended_is_already_started(sfn, trigger):
    [first] = trigger.handle_event(s3_event(s3_record("incoming/2026/01/30/a.json")))
    sfn.stop_execution(executionArn=first["execution_arn"])

    [again] = trigger.handle_event(s3_event(s3_record("incoming/2026/01/30/a.json")))

    assert again["outcome"] == ALREADY_STARTED
    assert len(executions(sfn)) == 1


class CountingClient:
    """A Step Functions client that records the name of every call made through it."""

    def __init__(self, client):
        self._client = client
        self.calls = []

    def __getattr__(self, name):
        attribute = getattr(self._client, name)
        if callable(attribute):
            def call(*args, **kwargs):
                self.calls.append(name)
                return attribute(*args, **kwargs)
            return call
        return attribute


def test_each_record_costs_one_start_execution_and_no_describe(sfn):
    counting = CountingClient(sfn)
    trigger = PipelineTrigger.from_settings(SETTINGS, sfn_client=counting)
    event = s3_event(s3_record("incoming/2026/01/30/a.json"), s3_record("incoming/2026/01/30/b.json"))

    trigger.handle_event(event)
    trigger.handle_event(event)

    assert counting.calls == ["start_execution"] * 4


def test_the_version_id_is_passed_on_and_each_version_is_its_own_execution(sfn, trigger):
    key = "incoming/2026/01/30/same.json"
    # The same bytes uploaded twice: same ETag, two versions; the newer must run again.
    [one] = trigger.handle_event(s3_event(s3_record(key, etag="abc", version_id="v1.AAA")))
    [two] = trigger.handle_event(s3_event(s3_record(key, etag="abc", version_id="v2.BBB")))

    assert [one["outcome"], two["outcome"]] == [STARTED, STARTED]
    assert one["execution_name"] != two["execution_name"]
    inputs = [json.loads(sfn.describe_execution(executionArn=r["execution_arn"])["input"]) for r in (one, two)]
    assert [i["version_id"] for i in inputs] == ["v1.AAA", "v2.BBB"]
    assert inputs[1]["source_id"] == naming.source_id(BUCKET, key, "abc", "v2.BBB")


@pytest.mark.parametrize("record, reason", [
    (s3_record("incoming/../secrets.json"), "'..' segment"),
    (s3_record("incoming/a%0Ab.json"), "control character"),
    (s3_record("incoming/a.json", version_id="bad version'"), "version id"),
])
def test_forged_identifiers_are_skipped_with_a_reason(sfn, trigger, record, reason):
    [result] = trigger.handle_event(s3_event(record))

    assert result["outcome"] == SKIPPED
    assert reason in result["reason"]
    assert executions(sfn) == []


def test_a_new_version_of_the_same_key_starts_a_new_execution(sfn, trigger):
    first = trigger.handle_event(s3_event(s3_record("incoming/2026/01/30/a.json", etag="v1")))
    second = trigger.handle_event(s3_event(s3_record("incoming/2026/01/30/a.json", etag="v2")))

    assert second[0]["outcome"] == STARTED
    assert first[0]["execution_name"] != second[0]["execution_name"]
    assert len(executions(sfn)) == 2


def test_names_are_stable_and_quoted_etags_name_the_same_object(trigger):
    one = trigger.handle_record(s3_record("incoming/x.json", etag="abc"))
    two = trigger.handle_record(s3_record("incoming/x.json", etag='"abc"'))

    assert one["execution_name"] == two["execution_name"]
    assert one["execution_arn"] == two["execution_arn"]


@pytest.mark.parametrize("record, reason", [
    (s3_record("incoming/2026/01/30/a.json", event_name="ObjectRemoved:Delete"), "not an ObjectCreated event"),
    (s3_record("elsewhere/a.json"), "not under incoming/"),
    (s3_record("incoming/2026/01/30/"), "folder marker"),
])
def test_records_that_name_no_landing_object_are_skipped_with_a_reason(sfn, trigger, record, reason, caplog):
    caplog.set_level("INFO", logger="chalicelib.trigger")

    [result] = trigger.handle_event(s3_event(record))

    assert result["outcome"] == SKIPPED
    assert reason in result["reason"]
    assert reason in caplog.text
    assert executions(sfn) == []


def test_skipped_records_do_not_stop_the_others(sfn, trigger):
    results = trigger.handle_event(s3_event(
        s3_record("elsewhere/a.json"),
        s3_record("incoming/2026/01/30/b.json"),
    ))

    assert [r["outcome"] for r in results] == [SKIPPED, STARTED]
    assert len(executions(sfn)) == 1


def test_the_s3_test_event_starts_nothing(sfn, trigger):
    event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": BUCKET}

    assert trigger.handle_event(event) == []
    assert executions(sfn) == []


def test_a_missing_state_machine_is_an_error_not_a_silent_skip(aws):
    trigger = PipelineTrigger.from_settings(SETTINGS, sfn_client=boto3.client("stepfunctions"))

    with pytest.raises(ClientError) as raised:
        trigger.handle_event(s3_event(s3_record("incoming/2026/01/30/a.json")))

    assert raised.value.response["Error"]["Code"] == "StateMachineDoesNotExist"


def test_the_client_is_made_on_first_use(sfn, aws):
    trigger = PipelineTrigger.from_settings(SETTINGS)

    [result] = trigger.handle_event(s3_event(s3_record("incoming/2026/01/30/a.json")))

    assert result["outcome"] == STARTED


def test_execution_arn_for_needs_a_state_machine_arn():
    assert execution_arn_for(RESOURCES.state_machine_arn, "run-1") == RESOURCES.execution_arn("run-1")
    with pytest.raises(ValueError, match="not a state machine ARN"):
        execution_arn_for("arn:aws:sns:us-east-1:123456789012:topic", "run-1")
