"""The landing and lake buckets: created private, encrypted, TLS-only, with retention rules;
emptied and removed on request.

Bucket notifications are left alone: ``chalice deploy`` owns the landing bucket's notification.
"""
import json
from collections import namedtuple

from chalicelib.resources import ATHENA_RESULTS_PREFIX, QUARANTINE_PREFIX, RAW_PREFIX
from deploy import policies
from deploy.context import ABSENT, CREATED, DELETED
from deploy.diff import matches
from deploy.errors import DeployError, has_code

KIND = "s3 bucket"
PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
SSE_ALGORITHM = "AES256"  # SSE-S3
KMS_SSE_ALGORITHM = "aws:kms"  # SSE-KMS, with the stage's key where PII lives
OBJECT_OWNERSHIP = "BucketOwnerEnforced"  # ACLs off: the account owns every object
_MISSING = ("NoSuchBucket", "404", "NotFound")
# An upload that never completes keeps its parts (billed, and possibly PII) until aborted.
ABORT_MULTIPART_DAYS = 7
# How long an overwritten or deleted landing object can still be recovered from its versions.
NONCURRENT_VERSION_DAYS = 30

# One bucket setting: how to read it, what it should be, how to apply it, how to compare.
_Setting = namedtuple("_Setting", "label read desired apply same")


def _rule(rule_id, prefix, **actions):
    return dict({"ID": rule_id, "Filter": {"Prefix": prefix}, "Status": "Enabled"}, **actions)


def _abort_multipart():
    return _rule("abort-incomplete-multipart-uploads", "",
                 AbortIncompleteMultipartUpload={"DaysAfterInitiation": ABORT_MULTIPART_DAYS})


def landing_lifecycle(settings):
    """Lifecycle rules of the (versioned) landing bucket, sorted by ID.

    Landing objects hold PII: they expire after ``settings.landing_retention_days`` (0 keeps
    them); a replaced or expired version goes ``NONCURRENT_VERSION_DAYS`` later, and the delete
    marker left behind after it.
    """
    rules = [
        _abort_multipart(),
        _rule("expire-noncurrent-versions", "",
              NoncurrentVersionExpiration={"NoncurrentDays": NONCURRENT_VERSION_DAYS},
              # S3 refuses ExpiredObjectDeleteMarker in a rule that also expires by Days.
              Expiration={"ExpiredObjectDeleteMarker": True}),
    ]
    if settings.landing_retention_days > 0:
        rules.append(_rule("expire-landing-objects", "",
                           Expiration={"Days": settings.landing_retention_days}))
    return sorted(rules, key=lambda rule: rule["ID"])


def lake_lifecycle(settings):
    """Lifecycle rules of the lake bucket, sorted by ID.

    The raw and quarantine zones hold PII (names, addresses; quarantined lines verbatim) and
    expire after ``settings.raw_retention_days``; Athena results after
    ``settings.athena_results_retention_days``. The processed zone (no PII) and the manifests stay.
    """
    rules = [
        _abort_multipart(),
        _rule("expire-raw-zone", RAW_PREFIX, Expiration={"Days": settings.raw_retention_days}),
        _rule("expire-quarantine-zone", QUARANTINE_PREFIX,
              Expiration={"Days": settings.raw_retention_days}),
        _rule("expire-athena-results", ATHENA_RESULTS_PREFIX,
              Expiration={"Days": settings.athena_results_retention_days}),
    ]
    return sorted(rules, key=lambda rule: rule["ID"])


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
    found = _sse_kms(s3, name)
    return found[0] if found else None


def _sse_kms(s3, name):
    """(algorithm, KMS key) of the bucket's default encryption, or None."""
    try:
        rules = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
    except Exception as exc:
        if has_code(exc, "ServerSideEncryptionConfigurationNotFoundError"):
            return None
        raise
    defaults = rules[0].get("ApplyServerSideEncryptionByDefault", {}) if rules else {}
    return defaults.get("SSEAlgorithm"), defaults.get("KMSMasterKeyID")


def _kms_encryption_setting(name, kms_key_arn):
    """Default encryption with the stage's key (SSE-KMS, S3 Bucket Keys to keep KMS calls few)."""
    return _Setting(
        "encryption", _sse_kms, (KMS_SSE_ALGORITHM, kms_key_arn),
        lambda s3: s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {
                "SSEAlgorithm": KMS_SSE_ALGORITHM, "KMSMasterKeyID": kms_key_arn},
                "BucketKeyEnabled": True}]}),
        _equal)


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


def _versioning(s3, name):
    return s3.get_bucket_versioning(Bucket=name).get("Status")


def _lifecycle(s3, name):
    """The bucket's lifecycle rules sorted by ID, or None."""
    try:
        rules = s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]
    except Exception as exc:
        if has_code(exc, "NoSuchLifecycleConfiguration"):
            return None
        raise
    return sorted(rules, key=lambda rule: rule.get("ID", ""))


def _equal(desired, current):
    return desired == current


def _settings(name, tls_only, versioned, lifecycle_rules, kms_key_arn=None, access_log=None,
              policy_statements=()):
    """The bucket's settings (``_Setting``), in apply order."""
    settings = [
        _Setting("public access block", _public_access_block, PUBLIC_ACCESS_BLOCK,
                 lambda s3: s3.put_public_access_block(
                     Bucket=name, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK), _equal),
        _Setting("encryption", _sse_algorithm, SSE_ALGORITHM,
                 lambda s3: s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={
                     "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": SSE_ALGORITHM}}]}),
                 _equal) if kms_key_arn is None else _kms_encryption_setting(name, kms_key_arn),
        _Setting("object ownership", _object_ownership, OBJECT_OWNERSHIP,
                 lambda s3: s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls={
                     "Rules": [{"ObjectOwnership": OBJECT_OWNERSHIP}]}), _equal),
    ]
    if tls_only or policy_statements:
        policy = policies.tls_only_bucket_policy(name) if tls_only else {
            "Version": policies.VERSION, "Statement": []}
        policy["Statement"] = list(policy_statements) + policy["Statement"]
        settings.append(_Setting(
            "TLS-only policy", _policy, policy,
            lambda s3: s3.put_bucket_policy(Bucket=name, Policy=json.dumps(policy)), _equal))
    if access_log is not None:
        settings.append(_access_log_setting(name, *access_log))
    if versioned:
        settings.append(_Setting(
            "versioning", _versioning, "Enabled",
            lambda s3: s3.put_bucket_versioning(
                Bucket=name, VersioningConfiguration={"Status": "Enabled"}), _equal))
    if lifecycle_rules:
        rules = [dict(rule) for rule in lifecycle_rules]
        # S3 answers with what was put plus defaults, so a rule matches when it holds ours.
        settings.append(_Setting(
            "lifecycle rules", _lifecycle, rules,
            lambda s3: s3.put_bucket_lifecycle_configuration(
                Bucket=name, LifecycleConfiguration={"Rules": rules}), matches))
    return settings


def _logging(s3, name):
    return s3.get_bucket_logging(Bucket=name).get("LoggingEnabled")


def _access_log_setting(name, target_bucket, target_prefix):
    """S3 server access logs of ``name`` to ``target_bucket``/``target_prefix``."""
    desired = {"TargetBucket": target_bucket, "TargetPrefix": target_prefix}
    return _Setting(
        "access logs", _logging, desired,
        lambda s3: s3.put_bucket_logging(Bucket=name, BucketLoggingStatus={"LoggingEnabled": desired}),
        matches)


def ensure_bucket(ctx, name, tls_only=True, versioned=False, lifecycle_rules=(), kms_key_arn=None,
                  access_log=None, policy_statements=()):
    """Create ``name`` if missing and bring its security and retention settings to the desired state.

    ``tls_only`` adds the policy refusing plain-HTTP requests. Emulators must go without it:
    moto evaluates bucket policies but not their conditions, so the conditional Deny would
    deny every object request. ``versioned`` turns versioning on (it is never turned off
    again: S3 can only suspend it). ``lifecycle_rules`` replace the bucket's lifecycle
    configuration whenever they differ. ``kms_key_arn``: default encryption with that key
    (SSE-KMS) instead of SSE-S3. ``access_log``: (target bucket, prefix) of its S3 server
    access logs. ``policy_statements``: more statements of its bucket policy. Returns the
    Change. Raises DeployError when another account owns the name.
    """
    s3 = ctx.client("s3")
    exists = bucket_exists(ctx, name)
    if not exists and not ctx.dry_run:
        _create(ctx, name)
    changed = []
    for setting in _settings(name, tls_only, versioned, lifecycle_rules, kms_key_arn, access_log,
                             policy_statements):
        current = setting.read(s3, name) if exists else None
        if not setting.same(setting.desired, current):
            changed.append(setting.label)
            if not ctx.dry_run:
                setting.apply(s3)
    if not exists:
        return ctx.record(CREATED, KIND, name)
    return ctx.record_changes(KIND, name, changed)


def access_log_statements(resources, log_bucket, sources):
    """The log bucket's grant: S3's logging service writes the access logs of ``sources`` (this
    account's buckets) under ``<source>/`` (the log bucket itself must use SSE-S3: S3 cannot
    deliver access logs to an SSE-KMS bucket)."""
    return [{"Sid": "S3ServerAccessLogs%d" % index, "Effect": "Allow",
             "Principal": {"Service": "logging.s3.amazonaws.com"}, "Action": "s3:PutObject",
             "Resource": "arn:aws:s3:::%s/%s/*" % (log_bucket, source),
             "Condition": {"StringEquals": {"aws:SourceAccount": resources.account_id},
                           "ArnLike": {"aws:SourceArn": "arn:aws:s3:::%s" % source}}}
            for index, source in enumerate(sources, 1)]


def access_log_lifecycle(settings):
    """Access logs name requesters and keys: they expire with the raw zone's retention."""
    return [_abort_multipart(),
            _rule("expire-access-logs", "", Expiration={"Days": settings.raw_retention_days})]


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
