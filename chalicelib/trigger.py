"""Start one pipeline execution per landing object named in an S3 event.

Every record of the event is handled (S3 may batch several). The execution name derives from
(bucket, key, etag, versionId) (chalicelib.naming), so a redelivered event maps to the same
execution. The trigger relies on StartExecution's own idempotency and never describes first (one
Step Functions call per object, which keeps the trigger off the quota /status shares): a start
with the name and input of a running execution succeeds and returns that execution (reported
"started" unless it began well before the call: the answer cannot tell a redelivery from the
first start); of an ended one, it fails with ExecutionAlreadyExists: "already started".
"""
import datetime
import json
import logging
from urllib.parse import unquote_plus

import boto3
from botocore.exceptions import ClientError

from chalicelib import identifiers, jsonlog, naming
from chalicelib.resources import INCOMING_PREFIX, Resources

STARTED = "started"
ALREADY_STARTED = "already started"
SKIPPED = "skipped"

_LOG = logging.getLogger(__name__)


def execution_arn_for(state_machine_arn, execution_name):
    """Returns the ARN Step Functions gives the execution ``execution_name`` of the machine."""
    prefix, sep, machine = state_machine_arn.rpartition(":stateMachine:")
    if not sep:
        raise ValueError("not a state machine ARN: %r" % (state_machine_arn,))
    return "%s:execution:%s:%s" % (prefix, machine, execution_name)


# A start whose answer names an execution started this long before the call is a redelivery
# answered by StartExecution's idempotency, not a new execution (allows for clock skew).
_IDEMPOTENT_START_SECONDS = 2.0


def landing_object(record):
    """Returns ``(bucket, key, etag, size, version_id)`` of one S3 event record, the key
    URL-decoded (S3 sends it encoded, with '+' for spaces), the etag without quotes, the
    version id None for an unversioned object."""
    s3 = record.get("s3") or {}
    obj = s3.get("object") or {}
    bucket = (s3.get("bucket") or {}).get("name", "")
    key = unquote_plus(obj.get("key", ""))
    etag = (obj.get("eTag") or "").strip('"')
    size = obj.get("size")
    version_id = obj.get("versionId") or None
    return bucket, key, etag, size, version_id


def skip_reason(record, key):
    """Returns why a record starts nothing, or None when it names a landing object to process."""
    event_name = record.get("eventName") or ""
    # S3 names ObjectCreated events "ObjectCreated:Put" etc.; "s3:" appears in configurations.
    if not event_name.replace("s3:", "", 1).startswith("ObjectCreated:"):
        return "event %r is not an ObjectCreated event" % (event_name,)
    if not key.startswith(INCOMING_PREFIX):
        return "key %r is not under %s" % (key, INCOMING_PREFIX)
    if key.endswith("/"):
        return "key %r is a folder marker" % (key,)
    return None


def check_landing_object(key, version_id):
    """Raises identifiers.InvalidIdentifier when the key or version id cannot be a landing
    object's (a forged or corrupt event): nothing is started for it."""
    identifiers.object_key(key, INCOMING_PREFIX)
    identifiers.version_id(version_id)


class PipelineTrigger:
    """Starts the pipeline state machine for landing objects.

    ``sfn_client``: a boto3 Step Functions client (created on first use when omitted).
    ``poll_seconds``: passed to the execution as the crawler poll interval.
    """

    def __init__(self, state_machine_arn, poll_seconds, sfn_client=None, log=None, region=None):
        self.state_machine_arn = state_machine_arn
        self.poll_seconds = poll_seconds
        self._sfn = sfn_client
        self._region = region
        self.log = log or _LOG

    @classmethod
    def from_settings(cls, settings, sfn_client=None, log=None):
        """A trigger for the stage's state machine (chalicelib.resources)."""
        return cls(
            Resources.from_settings(settings).state_machine_arn,
            poll_seconds=settings.poll_seconds,
            sfn_client=sfn_client,
            log=log,
            region=settings.region,
        )

    @property
    def sfn(self):
        if self._sfn is None:
            # Not boto3's default session, which keeps the environment it was made in (app.py's _client).
            self._sfn = boto3.session.Session().client("stepfunctions", region_name=self._region)
        return self._sfn

    def execution_input(self, bucket, key, etag, size, version_id=None):
        """Returns the execution input of docs/DESIGN.md for one landing object."""
        return {
            "bucket": bucket,
            "key": key,
            "version_id": version_id,
            "etag": etag,
            "size": size,
            "source_id": naming.source_id(bucket, key, etag, version_id),
            "source_uri": "s3://%s/%s" % (bucket, key),
            "producer": naming.producer(key),
            "poll_seconds": self.poll_seconds,
        }

    def handle_event(self, event):
        """Handles every record of an S3 event dict.

        Returns one dict per record: ``{"bucket", "key", "outcome", ...}`` where outcome is
        "started" or "already started" (with "execution_name", "execution_arn") or "skipped"
        (with "reason"). Raises botocore's ClientError for Step Functions errors other than an
        existing execution (so Lambda retries the event; records already started are no-ops then).
        """
        records = event.get("Records")
        if not records:
            # S3 sends an s3:TestEvent without records when a notification is configured.
            self.log.info(
                "Event has no records (%s): nothing to start", event.get("Event", "no event name")
            )
            return []
        return [self.handle_record(record) for record in records]

    def handle_record(self, record):
        """Handles one S3 event record; returns what was done (see handle_event)."""
        bucket, key, etag, size, version_id = landing_object(record)
        reason = skip_reason(record, key)
        if reason is None:
            try:
                check_landing_object(key, version_id)
            except identifiers.InvalidIdentifier as error:
                reason = str(error)
        if reason:
            self.log.info("Skipped s3://%s/%s: %s", bucket, key, reason)
            return {"bucket": bucket, "key": key, "outcome": SKIPPED, "reason": reason}
        return self.start(bucket, key, etag, size, version_id)

    def start(self, bucket, key, etag, size, version_id=None):
        """Starts the execution of one landing object (a no-op when it exists). Returns
        ``{"bucket", "key", "version_id", "execution_name", "execution_arn", "outcome"}``.
        Raises botocore's ClientError for Step Functions errors other than an existing execution
        (so Lambda retries the event; then its on-failure destination keeps it)."""
        name = naming.execution_name(bucket, key, etag, version_id)
        arn = execution_arn_for(self.state_machine_arn, name)
        result = {"bucket": bucket, "key": key, "version_id": version_id, "execution_name": name,
                  "execution_arn": arn}
        context = jsonlog.fields(source_id=naming.source_id(bucket, key, etag, version_id), execution=name)
        asked = datetime.datetime.now(datetime.timezone.utc)
        try:
            response = self.sfn.start_execution(
                stateMachineArn=self.state_machine_arn,
                name=name,
                input=json.dumps(self.execution_input(bucket, key, etag, size, version_id), sort_keys=True),
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
                raise
            result["outcome"] = ALREADY_STARTED
            self.log.info("Already started s3://%s/%s as %s", bucket, key, name, extra=context)
            return result
        started = response.get("startDate")
        if isinstance(started, datetime.datetime) and started.tzinfo is not None and (
                asked - started).total_seconds() > _IDEMPOTENT_START_SECONDS:
            result.update(outcome=ALREADY_STARTED, status="RUNNING")
            self.log.info("Already started s3://%s/%s as %s (RUNNING)", bucket, key, name, extra=context)
            return result
        result.update(outcome=STARTED, execution_arn=response["executionArn"])
        self.log.info("Started s3://%s/%s as %s", bucket, key, name, extra=context)
        return result
