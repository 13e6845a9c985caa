"""S3 notifications of the landing bucket delivered to the app's ``on_landing`` handler, as Lambda
would get them.

moto delivers S3 notifications to SQS but cannot call a Lambda, so the landing bucket notifies a
local queue (ObjectCreated under ``incoming/``, exactly the filter ``@app.on_s3_event`` declares)
and a poller thread hands each S3 event to the handler as Lambda would get it: keys URL-encoded
the way S3 encodes them (``incoming/a+b%2Bc.json``; moto also encodes the slashes, which S3 does
not, so keys are re-encoded with ``/`` kept). A message is deleted only after the handler
returned; a handler that raises gets the event again, like Lambda's asynchronous invocation
retries (``max_receives`` 3: the first attempt and Lambda's two retries), and after the last one
the event goes to the function's on-failure destination (the stage's landing-failures queue, as
Lambda's invocation record) and is dropped with a log line.

S3 delivers events at least once: with ``redeliver`` N every event is handed to the handler N
times at once (on N threads), as duplicate deliveries may arrive; the trigger must start one
execution and answer "already started" to the others. ``outcomes`` counts what the handler
answered per record.
"""
import datetime
import json
import logging
import threading
import uuid
from collections import Counter
from urllib.parse import quote_plus, unquote_plus

import boto3

from chalicelib.resources import INCOMING_PREFIX

log = logging.getLogger(__name__)

HANDLER_NAME = "on_landing"
TEST_EVENT = "s3:TestEvent"


def queue_name(resources):
    """Name of the local-only queue standing in for the S3 -> Lambda invocation."""
    return "%s-landing-events" % resources.prefix


def describe_record(record):
    """``ObjectCreated:Put s3://bucket/key (123 B)`` for one S3 event record (key decoded)."""
    s3 = record.get("s3", {})
    obj = s3.get("object", {})
    return "%s s3://%s/%s (%s B)" % (
        record.get("eventName", "?"),
        s3.get("bucket", {}).get("name", "?"),
        unquote_plus(obj.get("key", "?")),
        obj.get("size", "?"),
    )


def describe_result(result):
    """A short text for what the handler returned (the trigger reports one item per record)."""
    if result is None:
        return "ok"
    if isinstance(result, list):
        parts = []
        for item in result:
            if isinstance(item, dict):
                what = item.get("outcome") or "done"
                name = item.get("execution_name") or item.get("key") or ""
                reason = item.get("reason")
                parts.append(" ".join(str(p) for p in (what, name, "(%s)" % reason if reason else "") if p))
            else:
                parts.append(str(item))
        return "; ".join(parts) or "nothing to do"
    return str(result)


class LandingEvents:
    """Routes the landing bucket's ObjectCreated notifications to a Chalice handler.

    ``invoke(function_name, event) -> payload`` calls the handler as Lambda would (the stack passes
    one that applies the stage's environment variables). Clients are created lazily unless given.
    """

    def __init__(self, resources, invoke, s3_client=None, sqs_client=None,
                 handler_name=HANDLER_NAME, max_receives=3, wait_seconds=1, visibility_timeout=2,
                 redeliver=1, failures_queue_url=None):
        self.resources = resources
        self.failures_queue_url = failures_queue_url
        self._invoke = invoke
        self._s3 = s3_client
        self._sqs = sqs_client
        self.handler_name = handler_name
        self.max_receives = max_receives
        self.wait_seconds = wait_seconds
        self.visibility_timeout = visibility_timeout
        self.queue_url = None
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.dead_lettered = 0
        self.redeliver = redeliver
        self.outcomes = Counter()  # what the handler answered per record ("started", ...)
        self._stop = threading.Event()
        self._thread = None

    @property
    def s3(self):
        if self._s3 is None:
            self._s3 = boto3.session.Session().client("s3")
        return self._s3

    @property
    def sqs(self):
        if self._sqs is None:
            self._sqs = boto3.session.Session().client("sqs")
        return self._sqs

    def configure(self):
        """Create the queue and point the landing bucket's notification at it. Returns the queue URL.

        Replaces the bucket's notification configuration, as ``chalice deploy`` does for its
        Lambda. Raises botocore's ClientError when the bucket does not exist (deploy first).
        """
        self.queue_url = self.sqs.create_queue(
            QueueName=queue_name(self.resources),
            Attributes={"VisibilityTimeout": str(self.visibility_timeout)},
        )["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.s3.put_bucket_notification_configuration(
            Bucket=self.resources.landing_bucket,
            NotificationConfiguration={"QueueConfigurations": [{
                "Id": "%s-%s" % (self.resources.prefix, self.handler_name),
                "QueueArn": queue_arn,
                "Events": ["s3:ObjectCreated:*"],
                "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": INCOMING_PREFIX}]}},
            }]},
        )
        return self.queue_url

    def poll_once(self, wait_seconds=None):
        """Receive one batch (long poll) and deliver it. Returns how many events were handed over."""
        if self.queue_url is None:
            raise RuntimeError("LandingEvents.configure() must run before polling")
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=self.wait_seconds if wait_seconds is None else wait_seconds,
            AttributeNames=["ApproximateReceiveCount"],
        )
        handed_over = 0
        for message in response.get("Messages", []):
            if self._deliver(message):
                handed_over += 1
        return handed_over

    def _deliver(self, message):
        try:
            event = json.loads(message["Body"])
        except ValueError:
            log.warning("event queue: dropped a message that is not JSON: %.80r", message["Body"])
            self._delete(message)
            return False
        if event.get("Event") == TEST_EVENT:
            # S3 sends this once when the notification is configured; Lambda never sees it.
            self._delete(message)
            return False
        records = event.get("Records") or []
        for record in records:
            obj = record.get("s3", {}).get("object", {})
            if "key" in obj:
                obj["key"] = quote_plus(unquote_plus(obj["key"]), safe="/")
        what = ", ".join(describe_record(r) for r in records) or "empty event"
        try:
            result = self._invoke_copies(event, what)
        except Exception as error:  # the handler's failure is the event's failure, as on Lambda
            self.failed += 1
            attempts = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            if attempts >= self.max_receives:
                self.dropped += 1
                where = self._dead_letter(event, error, attempts)
                self._delete(message)
                log.error("event %s -> %s failed (%s: %s); given up after %d attempts%s",
                          what, self.handler_name, type(error).__name__, error, attempts, where)
            else:
                log.warning("event %s -> %s failed (%s: %s); retrying (attempt %d of %d)",
                            what, self.handler_name, type(error).__name__, error, attempts,
                            self.max_receives)
            return False
        self._delete(message)
        self.delivered += 1
        log.info("event %s -> %s: %s", what, self.handler_name, describe_result(result))
        return True

    def _dead_letter(self, event, error, attempts):
        """Sends the event to the on-failure destination as Lambda does. Returns a log fragment."""
        if not self.failures_queue_url:
            return ""
        record = {
            "version": "1.0",
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "requestContext": {"requestId": str(uuid.uuid4()), "condition": "RetriesExhausted",
                               "approximateInvokeCount": attempts,
                               "functionArn": "%s-%s" % (self.resources.prefix, self.handler_name)},
            "requestPayload": event,
            "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
            "responsePayload": {"errorType": type(error).__name__},
        }
        self.sqs.send_message(QueueUrl=self.failures_queue_url, MessageBody=json.dumps(record))
        self.dead_lettered += 1
        return "; sent to the on-failure destination"

    def _invoke_copies(self, event, what):
        """Hands ``event`` to the handler ``redeliver`` times at once. Returns the first copy's
        result; raises the first copy's error (the others are logged)."""
        copies = max(1, int(self.redeliver or 1))
        results, errors = [None] * copies, [None] * copies

        def deliver(index):
            try:
                results[index] = self._invoke(self.handler_name, json.loads(json.dumps(event)))
            except Exception as error:
                errors[index] = error

        threads = [threading.Thread(target=deliver, args=(i,), name="landing-event-%d" % i, daemon=True)
                   for i in range(1, copies)]
        for thread in threads:
            thread.start()
        deliver(0)
        for thread in threads:
            thread.join()
        for index, result in enumerate(results):
            if errors[index] is not None:
                continue
            for item in result if isinstance(result, list) else ():
                if isinstance(item, dict) and item.get("outcome"):
                    self.outcomes[item["outcome"]] += 1
            if index:
                log.info("event %s (delivered again, copy %d of %d) -> %s: %s", what, index + 1, copies,
                         self.handler_name, describe_result(result))
        for index, error in enumerate(errors[1:], 1):
            if error is not None:
                log.warning("event %s (copy %d of %d) -> %s failed (%s: %s)", what, index + 1, copies,
                            self.handler_name, type(error).__name__, error)
        if errors[0] is not None:
            raise errors[0]
        return results[0]

    def _delete(self, message):
        self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    # -- background delivery ----------------------------------------------------------------
    def start(self):
        """Deliver events on a daemon thread until stop(). Returns self."""
        if self._thread is not None:
            return self
        if self.queue_url is None:
            self.configure()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="landing-events", daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            try:
                if not self.poll_once() and not self.wait_seconds:
                    self._stop.wait(0.05)  # no long poll to pace the loop
            except Exception as error:
                if self._stop.is_set():
                    break  # the server went away while stopping
                log.error("event queue: polling failed (%s: %s); retrying in 1 s",
                          type(error).__name__, error)
                self._stop.wait(1)

    def stop(self, timeout=None):
        """Stop the poller thread (waits for the current long poll to end)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout if timeout is not None else self.wait_seconds + 5)
