"""The S3 trigger's on-failure destination: an encrypted SQS queue, and its wiring to the Lambda.

Lambda retries a failed asynchronous invocation (an S3 event) twice, then sends it to this
queue; the reconciler (chalicelib/reconciler.py) takes it from there. The queue exists before
``chalice deploy``; the function's on-failure destination is set by ``deploy up`` once the
function exists (run ``deploy up`` again after the first ``chalice deploy``).
"""
from deploy.context import ABSENT, CREATED, DELETED
from deploy.errors import has_code

KIND = "sqs queue"
DESTINATION_KIND = "lambda on-failure destination"
# Four days, SQS's default: the reconciler takes messages every RECONCILE_MINUTES.
RETENTION_SECONDS = 4 * 24 * 3600
LAMBDA_ASYNC_RETRIES = 2


def desired_attributes():
    return {"SqsManagedSseEnabled": "true", "MessageRetentionPeriod": str(RETENTION_SECONDS)}


def _queue_url(sqs, name):
    try:
        return sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except Exception as exc:
        if has_code(exc, "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            return None
        raise


def ensure_failures_queue(ctx, resources):
    """Create the queue or fix its encryption and retention; returns the Change."""
    sqs = ctx.client("sqs")
    name = resources.landing_failures_queue
    url = _queue_url(sqs, name)
    if url is None:
        if not ctx.dry_run:
            sqs.create_queue(QueueName=name, Attributes=desired_attributes())
        return ctx.record(CREATED, KIND, name)
    current = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    changed = [k for k, v in desired_attributes().items() if current.get(k) != v]
    if changed and not ctx.dry_run:
        sqs.set_queue_attributes(QueueUrl=url, Attributes=desired_attributes())
    return ctx.record_changes(KIND, name, changed)


def wire_on_failure(ctx, resources):
    """Point the S3 trigger function's on-failure destination at the queue, when the function
    exists (after ``chalice deploy``). Returns the Change, or None before the function exists."""
    function = "%s-on_landing" % resources.prefix
    lam = ctx.client("lambda")
    try:
        current = lam.get_function_event_invoke_config(FunctionName=function)
    except Exception as exc:
        if not has_code(exc, "ResourceNotFoundException"):
            raise
        current = None
        try:
            lam.get_function(FunctionName=function)
        except Exception as missing:
            if has_code(missing, "ResourceNotFoundException"):
                return None  # not deployed yet: `deploy up` after `chalice deploy` wires it
            raise
    wanted = resources.landing_failures_queue_arn
    destination = ((current or {}).get("DestinationConfig") or {}).get("OnFailure", {}).get("Destination")
    changed = [] if destination == wanted else ["destination"]
    if changed and not ctx.dry_run:
        lam.put_function_event_invoke_config(
            FunctionName=function, MaximumRetryAttempts=LAMBDA_ASYNC_RETRIES,
            DestinationConfig={"OnFailure": {"Destination": wanted}})
    if current is None:
        return ctx.record(CREATED, DESTINATION_KIND, function)
    return ctx.record_changes(DESTINATION_KIND, function, changed)


def delete_failures_queue(ctx, resources):
    sqs = ctx.client("sqs")
    url = _queue_url(sqs, resources.landing_failures_queue)
    if url is None:
        return ctx.record(ABSENT, KIND, resources.landing_failures_queue)
    if not ctx.dry_run:
        sqs.delete_queue(QueueUrl=url)
    return ctx.record(DELETED, KIND, resources.landing_failures_queue)
