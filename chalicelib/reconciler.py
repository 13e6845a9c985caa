"""The reconciler: no landing object is left without an execution.

S3 delivers events at least once, but the trigger Lambda can still fail for good (Step Functions
throttling or unavailable through Lambda's two asynchronous retries); such an event lands in the
function's on-failure destination, an SQS queue. Every RECONCILE_MINUTES the reconciler

1. takes each dead-lettered event from that queue and starts its executions (a no-op for those
   that exist), deleting the message once handled: "dead letters resolved";
2. lists every version of every landing object written in the last RECONCILE_LOOKBACK_MINUTES and
   starts an execution for each that has none (an event lost without trace).

Execution names derive from (bucket, key, etag, version id), so what it starts is exactly what
the trigger would have started, with the same input. Cost per run: one ListObjectVersions page
per 1,000 objects, one ListExecutions page per 1,000 recent executions, one StartExecution per
missing execution.
"""
import datetime
import json
import logging

from chalicelib import identifiers, jsonlog, naming
from chalicelib.resources import INCOMING_PREFIX

_LOG = logging.getLogger(__name__)
# Messages taken from the queue per run at most (ten per receive): the rest wait for the next run.
MAX_DEAD_LETTERS_PER_RUN = 500


def dead_lettered_records(body):
    """The S3 event records of one on-failure destination message (Lambda's invocation record,
    whose ``requestPayload`` is the event), or of a bare S3 event."""
    try:
        message = json.loads(body)
    except ValueError:
        return []
    if not isinstance(message, dict):
        return []
    event = message.get("requestPayload", message)
    records = event.get("Records") if isinstance(event, dict) else None
    return records if isinstance(records, list) else []


class Reconciler:
    """Starts the executions that S3 events failed to start. Clients are boto3 clients."""

    def __init__(self, trigger, s3_client, sqs_client, landing_bucket, failures_queue, lookback_minutes,
                 log=None):
        self.trigger = trigger
        self.s3 = s3_client
        self.sqs = sqs_client
        self.landing_bucket = landing_bucket
        self.failures_queue = failures_queue
        self.lookback = datetime.timedelta(minutes=lookback_minutes)
        self.log = log or _LOG

    def run(self, now=None):
        """One pass. Returns ``{"reconciled": executions started, "dead_letters_resolved": n,
        "started": [execution names], "checked": landing object versions in the window}``."""
        now = now or datetime.datetime.now(datetime.timezone.utc)
        started = []
        resolved = self._resolve_dead_letters(started)
        since = now - self.lookback
        existing = self._executions_since(since - datetime.timedelta(minutes=5))
        checked = 0
        for version in self._landing_versions(since):
            checked += 1
            key, version_id = version["Key"], version.get("VersionId")
            version_id = None if version_id in (None, "null") else version_id
            etag = version.get("ETag", "").strip('"')
            name = naming.execution_name(self.landing_bucket, key, etag, version_id)
            if name in existing:
                continue
            try:
                identifiers.object_key(key, INCOMING_PREFIX)
                identifiers.version_id(version_id)
            except identifiers.InvalidIdentifier as error:
                self.log.warning("Reconciler skipped s3://%s/%s: %s", self.landing_bucket, key, error)
                continue
            result = self.trigger.start(self.landing_bucket, key, etag, version.get("Size"), version_id)
            existing.add(name)
            if result["outcome"] == "started":
                started.append(name)
                self.log.warning("Reconciler started %s for s3://%s/%s: its S3 event started nothing",
                                 name, self.landing_bucket, key, extra=jsonlog.fields(
                                     source_id=naming.source_id(self.landing_bucket, key, etag, version_id),
                                     execution=name))
        summary = {"reconciled": len(started), "dead_letters_resolved": resolved, "started": started,
                   "checked": checked}
        self.log.info("Reconciler: %d object version(s) checked, %d execution(s) started, %d "
                      "dead-lettered event(s) resolved", checked, len(started), resolved)
        return summary

    def _resolve_dead_letters(self, started):
        try:
            queue_url = self.sqs.get_queue_url(QueueName=self.failures_queue)["QueueUrl"]
        except Exception as error:  # no queue (not deployed yet): the sweep still runs
            self.log.warning("Reconciler: on-failure queue %s unavailable (%s)", self.failures_queue, error)
            return 0
        resolved = 0
        while resolved < MAX_DEAD_LETTERS_PER_RUN:
            messages = self.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                                WaitTimeSeconds=0).get("Messages", [])
            if not messages:
                break
            for message in messages:
                for record in dead_lettered_records(message.get("Body")):
                    result = self.trigger.handle_record(record)
                    if result.get("outcome") == "started":
                        started.append(result["execution_name"])
                # Handled (or nothing to start): an error above leaves it for the next run.
                self.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                resolved += 1
        return resolved

    def _landing_versions(self, since):
        paginator = self.s3.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.landing_bucket, Prefix=INCOMING_PREFIX):
            for version in page.get("Versions", []):
                if version["Key"].endswith("/") or version["LastModified"] < since:
                    continue
                yield version

    def _executions_since(self, since):
        names = set()
        paginator = self.trigger.sfn.get_paginator("list_executions")
        for page in paginator.paginate(stateMachineArn=self.trigger.state_machine_arn):
            for execution in page["executions"]:
                names.add(execution["name"])
            if page["executions"] and page["executions"][-1]["startDate"] < since:
                break  # newest first: the rest started before the window
        return names
