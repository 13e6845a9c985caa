"""The state machine's CloudWatch Logs log group: encrypted with the stage's key, with retention."""
from deploy.context import ABSENT, CREATED, DELETED
from deploy.errors import replace_if_unsupported

KIND = "log group"
# CloudWatch Logs checks that it may use the key: a key policy put seconds ago may not be in
# effect yet.
_KEY_NOT_READY = (("AccessDeniedException", "KMS"), ("InvalidParameterException", "KMS"))


def _describe(logs, name):
    """The log group called ``name``, or None."""
    pages = logs.get_paginator("describe_log_groups").paginate(logGroupNamePrefix=name)
    for page in pages:
        for group in page.get("logGroups", []):
            if group["logGroupName"] == name:
                return group
    return None


def ensure_log_group(ctx, name, retention_days, kms_key_arn):
    """Create ``name`` or fix its retention and key; returns the Change.

    ``kms_key_arn`` None (a dry run before the key exists) leaves the key unchecked.
    """
    logs = ctx.client("logs")
    current = _describe(logs, name)

    def create():
        kwargs = {"logGroupName": name}
        if kms_key_arn:
            kwargs["kmsKeyId"] = kms_key_arn
        ctx.retry(lambda: logs.create_log_group(**kwargs), _KEY_NOT_READY)
        logs.put_retention_policy(logGroupName=name, retentionInDays=retention_days)

    if current is None:
        if not ctx.dry_run:
            create()
        return ctx.record(CREATED, KIND, name)
    changed = []
    if current.get("retentionInDays") != retention_days:
        changed.append("retention")
        if not ctx.dry_run:
            logs.put_retention_policy(logGroupName=name, retentionInDays=retention_days)
    if kms_key_arn and current.get("kmsKeyId") != kms_key_arn:
        changed.append("key")
        if not ctx.dry_run:
            try:
                ctx.retry(lambda: logs.associate_kms_key(logGroupName=name, kmsKeyId=kms_key_arn),
                          _KEY_NOT_READY)
            except Exception as exc:  # noqa: BLE001 -- narrowed below: only an unsupported call
                replace_if_unsupported(exc, logs, lambda: logs.delete_log_group(logGroupName=name), create)
    return ctx.record_changes(KIND, name, changed)


def delete_log_group(ctx, name):
    """Delete the log group and its events; returns the Change."""
    logs = ctx.client("logs")
    if _describe(logs, name) is None:
        return ctx.record(ABSENT, KIND, name)
    if not ctx.dry_run:
        logs.delete_log_group(logGroupName=name)
    return ctx.record(DELETED, KIND, name)
