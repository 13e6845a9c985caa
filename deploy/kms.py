"""The stage's customer managed KMS key (found by its alias): encrypts the notification topic and
the state machine's log group.

A key cannot be deleted at once: ``down`` removes the alias and schedules the key's deletion
after ``DELETION_WINDOW_DAYS`` (AWS's minimum), during which it can still be recovered with
``aws kms cancel-key-deletion``. A later ``up`` makes a new key under the same alias.
"""
import json

from deploy.context import ABSENT, CREATED, DELETED
from deploy.errors import has_code

KIND = "kms key"
DELETION_WINDOW_DAYS = 7
# KMS checks that every principal of a key policy exists: a role made seconds ago is refused
# until IAM has propagated it.
_PRINCIPAL_NOT_READY = (("MalformedPolicyDocumentException", "principal"),)


def _describe(kms, alias):
    """KeyMetadata of the key behind ``alias``, or None when the alias does not exist."""
    try:
        return kms.describe_key(KeyId=alias)["KeyMetadata"]
    except Exception as exc:
        if has_code(exc, "NotFoundException"):
            return None
        raise


def _policy(kms, key_id):
    return json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])


def description(resources):
    return "Shipping ETL %s: notification topic and state machine logs" % resources.stage


def ensure_key(ctx, policy):
    """Create the key (rotation on, ``policy``) under the stage's alias, or bring an existing one
    back to that state.

    Returns ``(Change, key ARN)``; the ARN is None in a dry run that would create the key.
    """
    kms = ctx.client("kms")
    resources = ctx.resources
    alias = resources.kms_key_alias
    key = _describe(kms, alias)
    if key is None:
        if ctx.dry_run:
            return ctx.record(CREATED, KIND, alias), None
        key = ctx.retry(lambda: kms.create_key(
            Description=description(resources), KeyUsage="ENCRYPT_DECRYPT",
            KeySpec="SYMMETRIC_DEFAULT", Policy=json.dumps(policy)), _PRINCIPAL_NOT_READY)["KeyMetadata"]
        kms.enable_key_rotation(KeyId=key["KeyId"])
        kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
        return ctx.record(CREATED, KIND, alias), key["Arn"]

    key_id = key["KeyId"]
    changed = []
    if key.get("KeyState") == "PendingDeletion":
        changed.append("deletion cancelled")
        if not ctx.dry_run:
            kms.cancel_key_deletion(KeyId=key_id)
    if key.get("KeyState") in ("PendingDeletion", "Disabled"):
        changed.append("enabled")
        if not ctx.dry_run:
            kms.enable_key(KeyId=key_id)
    if _policy(kms, key_id) != policy:
        changed.append("key policy")
        if not ctx.dry_run:
            ctx.retry(lambda: kms.put_key_policy(KeyId=key_id, PolicyName="default",
                                                 Policy=json.dumps(policy)), _PRINCIPAL_NOT_READY)
    if not kms.get_key_rotation_status(KeyId=key_id).get("KeyRotationEnabled"):
        changed.append("rotation")
        if not ctx.dry_run:
            kms.enable_key_rotation(KeyId=key_id)
    if key.get("Description") != description(resources):
        changed.append("description")
        if not ctx.dry_run:
            kms.update_key_description(KeyId=key_id, Description=description(resources))
    return ctx.record_changes(KIND, alias, changed), key["Arn"]


def delete_key(ctx):
    """Remove the alias and schedule the key's deletion; returns the Change."""
    kms = ctx.client("kms")
    alias = ctx.resources.kms_key_alias
    key = _describe(kms, alias)
    if key is None:
        return ctx.record(ABSENT, KIND, alias)
    if not ctx.dry_run:
        kms.delete_alias(AliasName=alias)
        if key.get("KeyState") != "PendingDeletion":
            kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=DELETION_WINDOW_DAYS)
    return ctx.record(DELETED, KIND, alias,
                      "key %s deleted after %d days" % (key["KeyId"], DELETION_WINDOW_DAYS))
