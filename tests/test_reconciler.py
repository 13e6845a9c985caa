"""The reconciler starts an execution for every landing object version that has none, resolves
dead-lettered events, and starts nothing twice."""
import json

import boto3
import pytest

from chalicelib import naming
from chalicelib.reconciler import Reconciler, dead_lettered_records
from chalicelib.resources import Resources
from chalicelib.settings import Settings
from chalicelib.trigger import PipelineTrigger

from conftest import ACCOUNT_ID, REGION

SETTINGS = Settings(stage="test", account_id=ACCOUNT_ID, region=REGION, poll_seconds=0)
RESOURCES = Resources.from_settings(SETTINGS)
BUCKET = RESOURCES.landing_bucket
PASS_MACHINE = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}})


@pytest.fixture
def stage(aws):
    sfn, s3, sqs = (boto3.client(s) for s in ("stepfunctions", "s3", "sqs"))
    sfn.create_state_machine(name=RESOURCES.state_machine_name, definition=PASS_MACHINE,
                             roleArn=RESOURCES.role_arn(RESOURCES.state_machine_role))
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    queue_url = sqs.create_queue(QueueName=RESOURCES.landing_failures_queue)["QueueUrl"]
    trigger = PipelineTrigger.from_settings(SETTINGS, sfn_client=sfn)
    reconciler = Reconciler(trigger, s3, sqs, BUCKET, RESOURCES.landing_failures_queue, 60)
    return sfn, s3, sqs, queue_url, trigger, reconciler


def names(sfn):
    return {e["name"] for e in sfn.list_executions(stateMachineArn=RESOURCES.state_machine_arn)["executions"]}


def put(s3, key, body):
    response = s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return naming.execution_name(BUCKET, key, response["ETag"].strip('"'), response["VersionId"])


def test_objects_without_an_execution_get_one_and_a_second_pass_starts_nothing(stage):
    sfn, s3, _sqs, _url, trigger, reconciler = stage
    lost = put(s3, "incoming/lost.json", b"{}\n")
    again = put(s3, "incoming/lost.json", b"{} \n")  # a second version, also lost
    s3.put_object(Bucket=BUCKET, Key="elsewhere/x.json", Body=b"{}")

    first = reconciler.run()
    second = reconciler.run()

    assert sorted(first["started"]) == sorted([lost, again])
    assert first["reconciled"] == 2
    assert second["reconciled"] == 0
    assert names(sfn) == {lost, again}


def test_an_object_the_trigger_started_is_left_alone(stage):
    sfn, s3, _sqs, _url, trigger, reconciler = stage
    response = s3.put_object(Bucket=BUCKET, Key="incoming/ok.json", Body=b"{}\n")
    trigger.start(BUCKET, "incoming/ok.json", response["ETag"].strip('"'), 3, response["VersionId"])

    assert reconciler.run()["reconciled"] == 0
    assert len(names(sfn)) == 1


def test_dead_lettered_events_are_resolved_and_deleted(stage):
    sfn, s3, sqs, url, _trigger, reconciler = stage
    response = s3.put_object(Bucket=BUCKET, Key="incoming/dead.json", Body=b"{}\n")
    event = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": BUCKET},
        "object": {"key": "incoming/dead.json", "eTag": response["ETag"].strip('"'), "size": 3,
                   "versionId": response["VersionId"]}}}]}
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(
        {"requestContext": {"condition": "RetriesExhausted"}, "requestPayload": event}))

    summary = reconciler.run()

    assert summary["dead_letters_resolved"] == 1
    assert summary["reconciled"] == 1
    assert sqs.receive_message(QueueUrl=url).get("Messages", []) == []


def test_a_dead_letter_that_is_not_an_event_holds_no_records():
    assert dead_lettered_records("not json") == []
    assert dead_lettered_records(json.dumps({"requestPayload": {"Records": "x"}})) == []
