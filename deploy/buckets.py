"""The landing and lake buckets: created private, encrypted, TLS-only; emptied and removed on request.

Bucket notifications are left alone: ``chalice deploy`` owns the landing bucket's notification.
"""
import json

from deploy import policies
from deploy.context import ABSENT, CREATED, DELETED, UNCHANGED, UPDATED
from deploy.errors import DeployError, has_code

KIND = "s3 bucket"
PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
SSE_ALGORITHM = "AES256"  # SSE-S3
OBJECT_OWNERSHIP = "BucketOwnerEnforced"  # ACLs off: the account owns every object
_MISSING = ("NoSuchBucket", "404", "NotFound")


def bucket_exists(ctx, name):
    """True when this account owns a bucket called ``name``.

    Asks ListBuckets (scoped by prefix) rather than HeadBucket: it answers for this account
    only, so a name held by another account reads as absent and CreateBucket then says so.
    """
    s3 = ctx.client("s3")
    paginator = s3.get_paginator("list_buckets")
    for page in paginator.paginate(Prefix=name):
        if any(bucket["Name"] == name for bucket in page.get("Buckets", [])):
            return True
    return False


def _create(ctx, name):
    s3 = ctx.client("s3")
    kwargs = {"Bucket": name}
    # us-east-1 is the one region that refuses an explicit LocationConstraint.
    if ctx.resources.region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": ctx.resources.region}
    try:
        s3.create_bucket(**kwargs)
    except Exception as exc:
        if has_code(exc, "BucketAlreadyOwnedByYou"):
            return
        if has_code(exc, "BucketAlreadyExists"):
            raise DeployError(
                "Bucket name %s is taken by another AWS account (bucket names are global). "
                "Names derive from app, stage, account and region: deploy under another --stage, "
                "or find who owns it." % name
            ) from exc
        raise


def _public_access_block(s3, name):
    try:
        return s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
    except Exception as exc:
        if has_code(exc, "NoSuchPublicAccessBlockConfiguration"):
            return None
        raise


def _sse_algorithm(s3, name):
    try:
        rules = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
    except Exception as exc:
        if has_code(exc, "ServerSideEncryptionConfigurationNotFoundError"):
            return None
        raise
    defaults = rules[0].get("ApplyServerSideEncryptionByDefault", {}) if rules else {}
    return defaults.get("SSEAlgorithm")


def _object_ownership(s3, name):
    try:
        rules = s3.get_bucket_ownership_controls(Bucket=name)["OwnershipControls"]["Rules"]
    except Exception as exc:
        if has_code(exc, "OwnershipControlsNotFoundError"):
            return None
        raise
    return rules[0].get("ObjectOwnership") if rules else None


def _policy(s3, name):
    try:
        return json.loads(s3.get_bucket_policy(Bucket=name)["Policy"])
    except Exception as exc:
        if has_code(exc, "NoSuchBucketPolicy"):
            return None
        raise


def _settings(name, tls_only):
    """(label, read current value, desired value, apply) for each bucket setting, in apply order."""
    settings = [
        ("public access block", _public_access_block, PUBLIC_ACCESS_BLOCK,
         lambda s3: s3.put_public_access_block(
             Bucket=name, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK)),
        ("encryption", _sse_algorithm, SSE_ALGORITHM,
         lambda s3: s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={
             "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": SSE_ALGORITHM}}]})),
        ("object ownership", _object_ownership, OBJECT_OWNERSHIP,
         lambda s3: s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls={
             "Rules": [{"ObjectOwnership": OBJECT_OWNERSHIP}]})),
    ]
    if tls_only:
        policy = policies.tls_only_bucket_policy(name)
        settings.append(("TLS-only policy", _policy, policy,
                         lambda s3: s3.put_bucket_policy(Bucket=name, Policy=json.dumps(policy))))
    return settings


def ensure_bucket(ctx, name, tls_only=True):
    """Create ``name`` if missing and bring its security settings to the desired state.

    ``tls_only`` adds the policy refusing plain-HTTP requests. Emulators must go without it:
    moto evaluates bucket policies but not their conditions, so the conditional Deny would
    deny every object request. Returns the Change. Raises DeployError when another account
    owns the name.
    """
    s3 = ctx.client("s3")
    exists = bucket_exists(ctx, name)
    if not exists and not ctx.dry_run:
        _create(ctx, name)
    changed = []
    for label, read, desired, apply in _settings(name, tls_only):
        current = read(s3, name) if exists else None
        if current != desired:
            changed.append(label)
            if not ctx.dry_run:
                apply(s3)
    if not exists:
        return ctx.record(CREATED, KIND, name)
    if changed:
        return ctx.record(UPDATED, KIND, name, ", ".join(changed))
    return ctx.record(UNCHANGED, KIND, name)


def delete_objects(ctx, bucket, prefix=""):
    """Delete every object version and delete marker under ``prefix``; returns how many.

    A bucket that does not exist has nothing to delete. In a dry run only counts.
    """
    s3 = ctx.client("s3")
    count = 0
    try:
        pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            batch = [{"Key": item["Key"], "VersionId": item["VersionId"]}
                     for item in page.get("Versions", []) + page.get("DeleteMarkers", [])]
            count += len(batch)
            if batch and not ctx.dry_run:
                # A page holds at most 1000 entries, DeleteObjects' limit.
                response = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
                if response.get("Errors"):
                    first = response["Errors"][0]
                    raise DeployError("Could not delete s3://%s/%s: %s %s" % (
                        bucket, first.get("Key"), first.get("Code"), first.get("Message")))
    except Exception as exc:
        if has_code(exc, *_MISSING):
            return 0
        raise
    return count


def delete_bucket(ctx, name):
    """Empty ``name`` (all versions) and delete it; returns the Change."""
    if not bucket_exists(ctx, name):
        return ctx.record(ABSENT, KIND, name)
    count = delete_objects(ctx, name)
    if not ctx.dry_run:
        ctx.client("s3").delete_bucket(Bucket=name)
    return ctx.record(DELETED, KIND, name, "%d object versions" % count)
