"""What AWS enforces, enforced by the local stack and read back through the AWS APIs: HTTPS with a
certificate made at start, the TLS-only bucket policies applied to every bucket (and honoured per
request), the stage's key where PII lives, one role per Glue job."""
import json
import ssl

import certifi
import urllib.request

import pytest

from local import moto_hooks
from local.stack import LocalStack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with LocalStack(work_dir=str(tmp_path_factory.mktemp("stack"))) as running:
        yield running


def test_the_endpoint_speaks_https_trusted_through_the_stack_ca(stack):
    assert stack.endpoint_url.startswith("https://127.0.0.1:")
    context = ssl.create_default_context(cafile=stack.embedded.ca_bundle)
    with urllib.request.urlopen(stack.endpoint_url + "/moto-api/data.json", context=context, timeout=30) as answer:
        assert answer.status == 200
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(stack.endpoint_url + "/moto-api/data.json", timeout=30,
                               # The machine's CAs alone: the stack's CA is trusted only through
                               # its own bundle (AWS_CA_BUNDLE, and this process's SSL_CERT_FILE).
                               context=ssl.create_default_context(cafile=certifi.where()))


def test_every_bucket_has_its_tls_only_policy_and_pii_buckets_the_stage_key(stack):
    s3 = stack.client("s3")
    key_arn = stack.client("kms").describe_key(KeyId=stack.resources.kms_key_alias)["KeyMetadata"]["Arn"]
    buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert set(buckets) >= {stack.resources.landing_bucket, stack.resources.lake_bucket,
                            stack.resources.access_log_bucket}
    for bucket in buckets:
        statements = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]
        (deny,) = [st for st in statements if st.get("Sid") == "DenyInsecureTransport"]
        assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    for bucket in (stack.resources.landing_bucket, stack.resources.lake_bucket):
        (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}


def test_the_two_glue_jobs_have_different_roles(stack):
    glue = stack.client("glue")
    roles = {glue.get_job(JobName=name)["Job"]["Role"]
             for name in (stack.resources.json_to_parquet_job, stack.resources.normalize_job)}
    assert len(roles) == 2


def test_the_tls_only_policy_denies_a_request_that_did_not_come_over_tls(stack):
    from moto.iam.access_control import PermissionResult
    from moto.s3.models import s3_backends

    bucket = s3_backends["123456789012"]["aws"].buckets[stack.resources.lake_bucket]
    resource = "arn:aws:s3:::%s/raw/x.parquet" % bucket.name
    try:
        moto_hooks._request_context.secure = False
        assert bucket.get_permission("s3:GetObject", resource) == PermissionResult.DENIED
        moto_hooks._request_context.secure = True
        assert bucket.get_permission("s3:GetObject", resource) == PermissionResult.NEUTRAL
    finally:
        moto_hooks._request_context.secure = False
    # Over HTTPS, objects are written and read as usual.
    s3 = stack.client("s3")
    s3.put_object(Bucket=bucket.name, Key="raw/tls-check.txt", Body=b"x")
    assert s3.get_object(Bucket=bucket.name, Key="raw/tls-check.txt")["Body"].read() == b"x"


def test_each_glue_role_is_held_to_its_own_policy(stack):
    import boto3
    from botocore.exceptions import ClientError

    r = stack.resources
    key, secret, token = moto_hooks.role_credentials(r.account_id, r.region, r.role_arn(r.normalize_role), "check")
    s3 = boto3.client("s3", endpoint_url=stack.endpoint_url, region_name=r.region, aws_access_key_id=key,
                      aws_secret_access_key=secret, aws_session_token=token, verify=stack.embedded.ca_bundle)
    stack.client("s3").put_object(Bucket=r.landing_bucket, Key="incoming/iam-check.json", Body=b"{}\n")
    # normalize may not read landing objects (json-to-parquet's input) ...
    with pytest.raises(ClientError) as denied:
        s3.get_object(Bucket=r.landing_bucket, Key="incoming/iam-check.json")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    assert "s3:GetObject" in denied.value.response["Error"]["Message"]
    assert r.normalize_role in denied.value.response["Error"]["Message"]
    # ... but writes its own zone.
    s3.put_object(Bucket=r.lake_bucket, Key="processed/iam-check.txt", Body=b"x")

