"""What a security reviewer checks on a deployed stage, read back through the AWS APIs (moto),
and every policy document the deploy writes run through parliament."""
import io
import json
import urllib.request
from pathlib import Path

import boto3
import pytest
from parliament import analyze_policy_string
from parliament.statement import get_privilege_info

from chalicelib import api_auth
from chalicelib.resources import Resources
from chalicelib.settings import Settings
from deploy import DeployError, down, policies
from deploy.buckets import ensure_bucket
from deploy.context import DeployContext
from tests.deploying import STAGE, deploy_up, shared_session

REPO_ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
ACCOUNT = "123456789012"
RESOURCES = Resources(stage=STAGE, account_id=ACCOUNT, region=REGION)
ROLES = (RESOURCES.json_to_parquet_role, RESOURCES.normalize_role, RESOURCES.crawler_role,
         RESOURCES.state_machine_role)


@pytest.fixture
def deployed(aws, asl, project):
    """The dev stage, deployed with default settings; yields the project dir."""
    deploy_up(project)
    return project


def role_policy(role):
    return boto3.client("iam").get_role_policy(RoleName=role, PolicyName="access")["PolicyDocument"]


LAMBDA_POLICY_FILES = ("policy-dev.json", "policy-dev-on_landing.json", "policy-dev-generate_batch.json",
                       "policy-dev-reconcile.json", "policy-dev-maintain_lake.json")


def lambda_policy_files(project_dir):
    return {name: json.loads((project_dir / ".chalice" / name).read_text()) for name in LAMBDA_POLICY_FILES}


# -- policy checks ------------------------------------------------------------------------------
def parliament_findings(document):
    """parliament's findings (issue, detail) for one policy document, with its default auditors."""
    policy = analyze_policy_string(json.dumps(document))
    return [(finding.issue, finding.detail) for finding in policy.findings]


def _takes_resources(action):
    service, name = action.split(":")
    info = get_privilege_info(service, name)
    return any(entry["resource_type"] for entry in info["resource_types"])


def broad_grants(document):
    """Statements that allow a wildcard action, or ``Resource: "*"`` for an action that AWS lets
    a policy scope to resources (narrowing by a Condition does not count)."""
    found = []
    for statement in document["Statement"]:
        if statement["Effect"] != "Allow":
            continue
        actions, resources = (value if isinstance(value, list) else [value]
                              for value in (statement["Action"], statement["Resource"]))
        for action in actions:
            if "*" in action:
                found.append((statement.get("Sid"), action, "wildcard action"))
            elif "*" in resources and _takes_resources(action) and "Condition" not in statement:
                found.append((statement.get("Sid"), action, "Resource * for a scopable action"))
    return found


def test_broad_grant_check_catches_wildcards():
    sneaky = {"Version": "2012-10-17", "Statement": [
        {"Sid": "A", "Effect": "Allow", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::b/*"]},
        {"Sid": "B", "Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Sid": "C", "Effect": "Allow", "Action": ["sns:Publish"], "Resource": "*"},
        {"Sid": "D", "Effect": "Allow", "Action": ["xray:PutTraceSegments"], "Resource": "*"},
    ]}
    assert broad_grants(sneaky) == [("A", "s3:*", "wildcard action"), ("B", "*", "wildcard action"),
                                    ("C", "sns:Publish", "Resource * for a scopable action")]
    assert parliament_findings(sneaky)  # parliament objects too


def test_role_policies_pass_parliament_and_name_every_action(deployed):
    for role in ROLES:
        document = role_policy(role)
        assert parliament_findings(document) == [], role
        assert broad_grants(document) == [], role


def test_lambda_policy_files_pass_parliament(deployed):
    for name, document in lambda_policy_files(deployed).items():
        assert parliament_findings(document) == [], name
        assert broad_grants(document) == [], name


def test_each_lambda_may_do_only_its_own_job(deployed):
    actions = {name: sorted(a for s in document["Statement"] for a in s["Action"])
               for name, document in lambda_policy_files(deployed).items()}
    logs = ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert actions == {
        "policy-dev.json": sorted(["states:ListExecutions", "states:DescribeExecution",
                                   "states:GetExecutionHistory", "cloudwatch:DescribeAlarms"] + logs),
        "policy-dev-on_landing.json": sorted(["states:StartExecution", "sqs:SendMessage"] + logs),
        "policy-dev-generate_batch.json": sorted(["s3:PutObject", "kms:Decrypt", "kms:GenerateDataKey"] + logs),
        "policy-dev-reconcile.json": sorted(["states:StartExecution", "states:ListExecutions",
                                             "s3:ListBucketVersions", "sqs:GetQueueUrl",
                                             "sqs:ReceiveMessage", "sqs:DeleteMessage",
                                                 "cloudwatch:PutMetricData"] + logs),
        "policy-dev-maintain_lake.json": sorted([
            "athena:StartQueryExecution", "athena:GetQueryExecution", "athena:GetWorkGroup",
            "glue:GetDatabase", "glue:GetTable", "glue:UpdateTable", "s3:GetObject", "s3:PutObject",
            "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListBucket", "s3:GetBucketLocation",
            "kms:Decrypt", "kms:GenerateDataKey"] + logs),
    }
    stage = json.loads((deployed / ".chalice" / "config.json").read_text())["stages"][STAGE]
    assert stage["iam_policy_file"] == "policy-dev.json" and stage["autogen_policy"] is False
    assert stage["lambda_functions"] == {
        "on_landing": {"iam_policy_file": "policy-dev-on_landing.json"},
        "generate_batch": {"iam_policy_file": "policy-dev-generate_batch.json"},
        "reconcile": {"iam_policy_file": "policy-dev-reconcile.json"},
        "maintain_lake": {"iam_policy_file": "policy-dev-maintain_lake.json", "lambda_timeout": 900}}


def test_every_setting_combination_stays_clean():
    # Logging off drops the log-delivery grants; tracing adds X-Ray's, which take no resource.
    for level in ("OFF", "ERROR", "ALL"):
        for tracing in (False, True):
            settings = Settings(state_machine_log_level=level, state_machine_tracing=tracing)
            document = policies.state_machine_policy(RESOURCES, settings)
            assert parliament_findings(document) == []
            assert broad_grants(document) == []
            sids = [statement["Sid"] for statement in document["Statement"]]
            assert ("DeliverExecutionLogs" in sids) == (level != "OFF")
            assert ("WriteTraces" in sids) == tracing


def test_star_resources_only_where_aws_offers_no_scope():
    for action in policies.STAR_ONLY_ACTIONS:
        assert not _takes_resources(action), action


def test_each_glue_job_role_may_change_only_its_own_table(deployed):
    to_parquet = {s["Sid"]: s for s in role_policy(RESOURCES.json_to_parquet_role)["Statement"]}
    assert to_parquet["RegisterPartitions"]["Action"] == ["glue:BatchCreatePartition", "glue:GetPartitions",
                                                          "glue:GetTable"]
    normalize = {s["Sid"]: s for s in role_policy(RESOURCES.normalize_role)["Statement"]}
    # pyiceberg's Glue catalog commits with UpdateTable (Glue checks the table's version).
    assert normalize["CommitProcessedTable"]["Action"] == ["glue:GetDatabase", "glue:GetTable", "glue:UpdateTable"]
    assert "RegisterPartitions" not in normalize
    for statement, table in ((to_parquet["RegisterPartitions"], RESOURCES.raw_table),
                             (normalize["CommitProcessedTable"], RESOURCES.processed_table)):
        assert statement["Resource"] == [
            "arn:aws:glue:%s:%s:catalog" % (REGION, ACCOUNT),
            "arn:aws:glue:%s:%s:database/shipping_etl_dev" % (REGION, ACCOUNT),
            "arn:aws:glue:%s:%s:table/shipping_etl_dev/%s" % (REGION, ACCOUNT, table),
        ]


def _s3_resources(role):
    return {resource for statement in role_policy(role)["Statement"]
            for resource in statement["Resource"] if resource.startswith("arn:aws:s3:::")
            and any(action.startswith("s3:") and "Object" in action for action in statement["Action"])}


def test_each_glue_job_has_its_own_role_with_only_its_own_prefixes(deployed):
    glue = boto3.client("glue")
    roles = {name: glue.get_job(JobName=name)["Job"]["Role"].rsplit("/", 1)[-1]
             for name in (RESOURCES.json_to_parquet_job, RESOURCES.normalize_job)}
    assert roles == {RESOURCES.json_to_parquet_job: RESOURCES.json_to_parquet_role,
                     RESOURCES.normalize_job: RESOURCES.normalize_role}
    lake, landing = RESOURCES.lake_bucket, RESOURCES.landing_bucket
    to_parquet = _s3_resources(RESOURCES.json_to_parquet_role)
    normalize = _s3_resources(RESOURCES.normalize_role)
    # json-to-parquet may not touch (let alone delete) processed data ...
    assert not any("/processed/" in r for r in to_parquet), to_parquet
    assert "arn:aws:s3:::%s/incoming/*" % landing in to_parquet
    # ... and normalize reads neither landing nor quarantine.
    assert not any(landing in r or "/quarantine/" in r for r in normalize), normalize
    assert "arn:aws:s3:::%s/processed/*" % lake in normalize


def test_service_trusts_name_the_source_account(deployed):
    iam = boto3.client("iam")
    for role in ROLES:
        (statement,) = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]["Statement"]
        assert statement["Condition"]["StringEquals"]["aws:SourceAccount"] == ACCOUNT, role
        assert statement["Condition"]["ArnLike"]["aws:SourceArn"].startswith("arn:aws:"), role


def test_pii_zones_and_athena_results_use_the_stage_key(deployed):
    s3, kms = boto3.client("s3"), boto3.client("kms")
    key_arn = kms.describe_key(KeyId=RESOURCES.kms_key_alias)["KeyMetadata"]["Arn"]
    for bucket in (RESOURCES.landing_bucket, RESOURCES.lake_bucket):
        (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}
    workgroup = boto3.client("athena").get_work_group(WorkGroup=RESOURCES.athena_workgroup)["WorkGroup"]
    assert workgroup["Configuration"]["ResultConfiguration"]["EncryptionConfiguration"] == {
        "EncryptionOption": "SSE_KMS", "KmsKey": key_arn}


def test_glue_jobs_and_crawlers_use_the_security_configuration(deployed):
    glue = boto3.client("glue")
    name = RESOURCES.glue_security_configuration
    config = glue.get_security_configuration(Name=name)["SecurityConfiguration"]["EncryptionConfiguration"]
    assert config["S3Encryption"][0]["S3EncryptionMode"] == "SSE-KMS"
    assert config["CloudWatchEncryption"]["CloudWatchEncryptionMode"] == "SSE-KMS"
    for job in (RESOURCES.json_to_parquet_job, RESOURCES.normalize_job):
        assert glue.get_job(JobName=job)["Job"]["SecurityConfiguration"] == name
    for crawler in (RESOURCES.raw_crawler,):  # the processed zone (Iceberg) has no crawler
        assert glue.get_crawler(Name=crawler)["Crawler"]["CrawlerSecurityConfiguration"] == name


def test_buckets_log_access_to_the_log_bucket(deployed):
    s3 = boto3.client("s3")
    for bucket in (RESOURCES.landing_bucket, RESOURCES.lake_bucket):
        logging = s3.get_bucket_logging(Bucket=bucket)["LoggingEnabled"]
        assert logging == {"TargetBucket": RESOURCES.access_log_bucket, "TargetPrefix": bucket + "/"}
    policy = json.loads(s3.get_bucket_policy(Bucket=RESOURCES.access_log_bucket)["Policy"])
    grants = [st for st in policy["Statement"] if st["Sid"].startswith("S3ServerAccessLogs")]
    assert len(grants) == 2
    for grant in grants:
        assert grant["Principal"] == {"Service": "logging.s3.amazonaws.com"}
        assert grant["Condition"]["StringEquals"]["aws:SourceAccount"] == ACCOUNT


def test_state_machine_role_covers_what_the_asl_calls(deployed, asl):
    granted = set()
    for statement in role_policy(RESOURCES.state_machine_role)["Statement"]:
        granted.update(statement["Action"])
    needed = {
        "glue:StartJobRun", "glue:GetJobRun", "glue:GetJobRuns", "glue:BatchStopJobRun",
        "glue:StartCrawler", "glue:GetCrawler", "athena:StartQueryExecution",
        "athena:GetQueryExecution", "athena:GetQueryResults", "athena:StopQueryExecution",
        "s3:GetObject", "sns:Publish", "glue:GetTable", "glue:GetPartitions",
    } | set(policies.LOG_DELIVERY_ACTIONS)
    assert needed <= granted, needed - granted
    text = json.dumps(asl.build_definition(RESOURCES))
    for resource in ("glue:startJobRun", "aws-sdk:glue:startCrawler", "aws-sdk:glue:getCrawler",
                     "athena:startQueryExecution", "athena:getQueryResults", "aws-sdk:s3:getObject",
                     "sns:publish"):
        assert "arn:aws:states:::" + resource in text  # the ASL still calls what was granted


def test_trust_policies_name_one_service_each(deployed):
    iam = boto3.client("iam")
    expected = {RESOURCES.json_to_parquet_role: "glue.amazonaws.com",
                RESOURCES.normalize_role: "glue.amazonaws.com", RESOURCES.crawler_role: "glue.amazonaws.com",
                RESOURCES.state_machine_role: "states.amazonaws.com"}
    for role, service in expected.items():
        (statement,) = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]["Statement"]
        assert statement["Principal"] == {"Service": service}
        assert statement["Action"] == "sts:AssumeRole"
        assert iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []


# -- buckets ------------------------------------------------------------------------------------
def _rules(bucket):
    rules = boto3.client("s3").get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    return {rule["ID"]: rule for rule in rules}


def test_buckets_block_public_access_and_encrypt(deployed):
    s3 = boto3.client("s3")
    for bucket in (RESOURCES.landing_bucket, RESOURCES.lake_bucket):
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert block == dict.fromkeys(
            ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True)
        (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert s3.get_bucket_versioning(Bucket=RESOURCES.landing_bucket)["Status"] == "Enabled"


def test_lifecycle_expires_pii_and_athena_results(deployed):
    lake = _rules(RESOURCES.lake_bucket)
    assert lake["expire-raw-zone"]["Filter"] == {"Prefix": "raw/"}
    assert lake["expire-raw-zone"]["Expiration"] == {"Days": 30}
    assert lake["expire-quarantine-zone"]["Filter"] == {"Prefix": "quarantine/"}
    assert lake["expire-quarantine-zone"]["Expiration"] == {"Days": 30}
    assert lake["expire-athena-results"]["Filter"] == {"Prefix": "athena-results/"}
    assert lake["expire-athena-results"]["Expiration"] == {"Days": 7}
    landing = _rules(RESOURCES.landing_bucket)
    assert landing["expire-landing-objects"]["Expiration"] == {"Days": 90}
    assert landing["expire-noncurrent-versions"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}
    for rules in (lake, landing):
        abort = rules["abort-incomplete-multipart-uploads"]
        assert abort["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
        assert abort["Filter"] == {"Prefix": ""}
        assert all(rule["Status"] == "Enabled" for rule in rules.values())


def test_retention_comes_from_settings_and_is_reapplied(deployed):
    result = deploy_up(deployed, environ={"RAW_RETENTION_DAYS": "14", "ATHENA_RESULTS_RETENTION_DAYS": "3",
                                          "LANDING_RETENTION_DAYS": "0"})
    changed = {c.name: c.detail for c in result.changes if c.action == "updated"}
    assert changed[RESOURCES.lake_bucket] == "lifecycle rules"
    assert changed[RESOURCES.landing_bucket] == "lifecycle rules"
    lake = _rules(RESOURCES.lake_bucket)
    assert lake["expire-raw-zone"]["Expiration"] == {"Days": 14}
    assert lake["expire-athena-results"]["Expiration"] == {"Days": 3}
    assert "expire-landing-objects" not in _rules(RESOURCES.landing_bucket)  # 0 keeps them
    # Kept in the stage's config: the next run without the variables changes nothing.
    assert not deploy_up(deployed).changed


def test_tls_only_bucket_policy_document(aws):
    ctx = DeployContext(shared_session(), RESOURCES, out=io.StringIO())
    ensure_bucket(ctx, RESOURCES.landing_bucket, tls_only=True)
    policy = json.loads(boto3.client("s3").get_bucket_policy(Bucket=RESOURCES.landing_bucket)["Policy"])
    assert policy == policies.tls_only_bucket_policy(RESOURCES.landing_bucket)
    (statement,) = policy["Statement"]
    assert (statement["Effect"], statement["Principal"], statement["Action"]) == ("Deny", "*", "s3:*")
    assert statement["Resource"] == ["arn:aws:s3:::%s" % RESOURCES.landing_bucket,
                                     "arn:aws:s3:::%s/*" % RESOURCES.landing_bucket]
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


# -- Glue and Athena ------------------------------------------------------------------------------
def test_glue_jobs_are_small_pinned_python_shell(deployed):
    glue = boto3.client("glue")
    for name in (RESOURCES.json_to_parquet_job, RESOURCES.normalize_job):
        job = glue.get_job(JobName=name)["Job"]
        assert job["Command"]["Name"] == "pythonshell" and job["Command"]["PythonVersion"] == "3.9"
        assert job["MaxCapacity"] == 0.0625
        assert 0 < job["Timeout"] <= 60 and job["ExecutionProperty"]["MaxConcurrentRuns"] >= 1
        assert "--additional-python-modules" not in job["DefaultArguments"]
        extra = job["DefaultArguments"]["--extra-py-files"].split(",")
        assert extra[0].endswith(".zip") and all(uri.endswith(".whl") for uri in extra[1:])


def test_glue_capacity_is_configurable(aws, asl, project):
    deploy_up(project, environ={"GLUE_JOB_DPU": "1"})
    job = boto3.client("glue").get_job(JobName=RESOURCES.normalize_job)["Job"]
    assert job["MaxCapacity"] == 1.0
    with pytest.raises(DeployError, match="GLUE_JOB_DPU must be one of 0.0625, 1.0"):
        deploy_up(project, environ={"GLUE_JOB_DPU": "0.5"})


def test_crawlers_have_explicit_policies(deployed):
    glue = boto3.client("glue")
    for name in (RESOURCES.raw_crawler,):
        crawler = glue.get_crawler(Name=name)["Crawler"]
        assert crawler["RecrawlPolicy"]["RecrawlBehavior"] == "CRAWL_EVERYTHING"
        assert crawler["SchemaChangePolicy"] == {"UpdateBehavior": "UPDATE_IN_DATABASE",
                                                 "DeleteBehavior": "LOG"}
        assert crawler["DatabaseName"] == RESOURCES.glue_database == "shipping_etl_dev"


def test_workgroup_enforces_location_encryption_and_cutoff(aws, asl, project):
    deploy_up(project)
    athena = boto3.client("athena")
    config = athena.get_work_group(WorkGroup=RESOURCES.athena_workgroup)["WorkGroup"]["Configuration"]
    assert config["EnforceWorkGroupConfiguration"] is True
    results = config["ResultConfiguration"]
    assert results["OutputLocation"] == "s3://%s/athena-results/" % RESOURCES.lake_bucket
    assert results["EncryptionConfiguration"]["EncryptionOption"] == "SSE_KMS"  # the stage's key
    assert config["BytesScannedCutoffPerQuery"] == 10 * 1024 ** 3

    deploy_up(project, environ={"ATHENA_BYTES_SCANNED_CUTOFF": str(100 * 1024 ** 2)})
    config = athena.get_work_group(WorkGroup=RESOURCES.athena_workgroup)["WorkGroup"]["Configuration"]
    assert config["BytesScannedCutoffPerQuery"] == 100 * 1024 ** 2
    with pytest.raises(DeployError, match="ATHENA_BYTES_SCANNED_CUTOFF must be >= 10485760"):
        deploy_up(project, environ={"ATHENA_BYTES_SCANNED_CUTOFF": "1000"})


# -- SNS and KMS ----------------------------------------------------------------------------------
def _key_id():
    return boto3.client("kms").describe_key(KeyId=RESOURCES.kms_key_alias)["KeyMetadata"]["KeyId"]


def test_topic_is_encrypted_and_account_only_over_tls(deployed):
    attributes = boto3.client("sns").get_topic_attributes(TopicArn=RESOURCES.topic_arn)["Attributes"]
    assert attributes["KmsMasterKeyId"] == RESOURCES.kms_key_alias
    statements = {s["Sid"]: s for s in json.loads(attributes["Policy"])["Statement"]}
    assert statements["AccountUsesTopic"]["Principal"] == {"AWS": "arn:aws:iam::%s:root" % ACCOUNT}
    deny = statements["DenyInsecureTransport"]
    assert (deny["Effect"], deny["Action"]) == ("Deny", ["sns:Publish"])
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_key_rotates_and_is_used_only_through_sns_s3_and_logs(deployed):
    kms = boto3.client("kms")
    key_id = _key_id()
    assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is True
    policy = json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
    statements = {s["Sid"]: s for s in policy["Statement"]}
    admin = statements["AccountAdministersKey"]["Action"]
    assert not {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:*"} & set(admin)
    publish = statements["StateMachinePublishesToTopic"]
    assert publish["Principal"] == {"AWS": RESOURCES.role_arn(RESOURCES.state_machine_role)}
    assert publish["Condition"]["StringEquals"] == {
        "kms:ViaService": "sns.us-east-1.amazonaws.com",
        "kms:EncryptionContext:aws:sns:topicArn": RESOURCES.topic_arn}
    through_s3 = statements["AccountUsesKeyThroughS3"]
    assert through_s3["Condition"]["StringEquals"] == {"kms:ViaService": "s3.us-east-1.amazonaws.com",
                                                       "kms:CallerAccount": ACCOUNT}
    assert sorted(through_s3["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    logs = statements["LogsEncryptStageLogs"]
    assert logs["Principal"] == {"Service": "logs.us-east-1.amazonaws.com"}
    assert logs["Condition"]["ArnEquals"] == {"kms:EncryptionContext:aws:logs:arn": [
        RESOURCES.state_machine_log_group_arn,
        "arn:aws:logs:us-east-1:123456789012:log-group:/aws-glue/python-jobs/shipping-etl-dev",
        "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/shipping-etl-dev",
        "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/shipping-etl-dev-on_landing",
        "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/shipping-etl-dev-generate_batch",
        "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/shipping-etl-dev-reconcile",
        "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/shipping-etl-dev-maintain_lake",
        RESOURCES.api_access_log_group_arn]}


def _email_subscribers():
    subscriptions = boto3.client("sns").list_subscriptions_by_topic(TopicArn=RESOURCES.topic_arn)
    return [s["Endpoint"] for s in subscriptions["Subscriptions"] if s["Protocol"] == "email"]


def test_email_subscription_follows_configuration(aws, asl, project):
    deploy_up(project)
    assert _email_subscribers() == []

    deploy_up(project, overrides={"NOTIFICATION_EMAIL": "data-team@example.com"})
    assert _email_subscribers() == ["data-team@example.com"]
    assert not deploy_up(project).changed  # kept for later runs

    deploy_up(project, overrides={"NOTIFICATION_EMAIL": "oncall@example.com"})
    assert _email_subscribers() == ["oncall@example.com"]
    deploy_up(project, overrides={"NOTIFICATION_EMAIL": ""})
    assert _email_subscribers() == []


def test_down_schedules_key_deletion(deployed):
    key_id = _key_id()
    down(STAGE, environ={}, session=shared_session(), out=io.StringIO())
    key = boto3.client("kms").describe_key(KeyId=key_id)["KeyMetadata"]
    assert key["KeyState"] == "PendingDeletion"
    aliases = [alias["AliasName"] for alias in boto3.client("kms").list_aliases()["Aliases"]]
    assert RESOURCES.kms_key_alias not in aliases


# -- Step Functions ---------------------------------------------------------------------------------
def _state_machine():
    return boto3.client("stepfunctions").describe_state_machine(stateMachineArn=RESOURCES.state_machine_arn)


def _log_groups():
    return {group["logGroupName"]: group for group in boto3.client("logs").describe_log_groups()["logGroups"]}


def test_state_machine_logs_errors_to_an_encrypted_log_group(deployed):
    described = _state_machine()
    logging = described["loggingConfiguration"]
    assert logging["level"] == "ERROR" and logging["includeExecutionData"] is False
    assert logging["destinations"] == [{"cloudWatchLogsLogGroup": {
        "logGroupArn": RESOURCES.state_machine_log_group_arn + ":*"}}]
    assert described["tracingConfiguration"] == {"enabled": False}
    key_arn = boto3.client("kms").describe_key(KeyId=RESOURCES.kms_key_alias)["KeyMetadata"]["Arn"]
    groups = _log_groups()
    assert sorted(groups) == sorted([
        "/aws/vendedlogs/states/shipping-etl-dev-pipeline", "/aws/lambda/shipping-etl-dev",
        "/aws-glue/python-jobs/shipping-etl-dev",
        "/aws/lambda/shipping-etl-dev-on_landing", "/aws/lambda/shipping-etl-dev-generate_batch",
        "/aws/lambda/shipping-etl-dev-reconcile", "/aws/lambda/shipping-etl-dev-maintain_lake",
        "/aws/apigateway/shipping-etl-dev-access"])
    for group in groups.values():
        assert group["retentionInDays"] == 30
        assert group["kmsKeyId"] == key_arn


def test_log_group_made_by_hand_gets_the_key_and_retention(aws, asl, project):
    logs = boto3.client("logs")
    logs.create_log_group(logGroupName="/aws/lambda/shipping-etl-dev-on_landing")  # a function logged first

    result = deploy_up(project)

    changes = {c.name: c for c in result.changes}
    assert changes["/aws/lambda/shipping-etl-dev-on_landing"].action == "updated"
    group = _log_groups()["/aws/lambda/shipping-etl-dev-on_landing"]
    assert group["retentionInDays"] == 30
    key = boto3.client("kms").describe_key(KeyId=RESOURCES.kms_key_alias)["KeyMetadata"]
    assert group["kmsKeyId"] == key["Arn"]


def test_log_level_and_tracing_are_configurable(deployed):
    result = deploy_up(deployed, environ={"STATE_MACHINE_LOG_LEVEL": "all", "STATE_MACHINE_TRACING": "true",
                                          "LOG_RETENTION_DAYS": "90"})
    changed = {c.name: c.detail for c in result.changes if c.action == "updated"}
    assert changed[RESOURCES.state_machine_name] == "logging, tracing"
    assert changed[RESOURCES.state_machine_role] == "policy"
    described = _state_machine()
    assert described["loggingConfiguration"]["level"] == "ALL"
    assert described["tracingConfiguration"] == {"enabled": True}
    sids = [s["Sid"] for s in role_policy(RESOURCES.state_machine_role)["Statement"]]
    assert "WriteTraces" in sids
    assert {group["retentionInDays"] for group in _log_groups().values()} == {90}
    with pytest.raises(DeployError, match="STATE_MACHINE_LOG_LEVEL must be one of"):
        deploy_up(deployed, environ={"STATE_MACHINE_LOG_LEVEL": "DEBUG"})


# -- the API ----------------------------------------------------------------------------------------
def test_invoke_policy_grants_only_the_status_routes():
    document = api_auth.invoke_policy(RESOURCES, "a1b2c3d4e5")
    assert parliament_findings(document) == []
    (statement,) = document["Statement"]
    assert statement["Action"] == ["execute-api:Invoke"]
    assert statement["Resource"] == [
        "arn:aws:execute-api:us-east-1:123456789012:a1b2c3d4e5/api/GET/status",
        "arn:aws:execute-api:us-east-1:123456789012:a1b2c3d4e5/api/GET/status/*",
        "arn:aws:execute-api:us-east-1:123456789012:a1b2c3d4e5/api/GET/"]


class _RecordingOpener:
    """Stands in for urllib's opener: keeps the request, answers 200 with a JSON body."""

    def __init__(self):
        self.requests = []

    def open(self, request, timeout=None):
        self.requests.append(request)
        return _Response()


class _Response(io.BytesIO):
    status = 200

    def __init__(self):
        super().__init__(b'{"executions": []}')


def test_signed_get_signs_for_execute_api(aws_credentials):
    opener = _RecordingOpener()
    url = "https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/api/status"

    status, body = api_auth.signed_get(url, session=boto3.session.Session(), opener=opener)

    assert (status, json.loads(body)) == (200, {"executions": []})
    (request,) = opener.requests
    assert isinstance(request, urllib.request.Request) and request.full_url == url
    authorization = request.get_header("Authorization")
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert "/eu-west-1/execute-api/aws4_request" in authorization
    assert request.get_header("X-amz-security-token") == "testing"
    with pytest.raises(ValueError, match="not an API Gateway URL"):
        api_auth.signed_get("https://example.com/api/status", session=boto3.session.Session())


def test_status_authorizer_is_iam():
    from chalice import IAMAuthorizer

    authorizer = api_auth.status_authorizer(IAMAuthorizer)
    assert isinstance(authorizer, IAMAuthorizer)
    assert authorizer.to_swagger()["x-amazon-apigateway-authtype"] == "awsSigv4"
