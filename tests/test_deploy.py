"""``python -m deploy up|down`` against moto in-process: what a user would check in the console."""
import functools
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from chalicelib import glue_jobs
from chalicelib.resources import Resources
from chalicelib.settings import Settings
from deploy import DeployError, down, policies, up
from deploy.__main__ import main
from deploy.buckets import ensure_bucket
from deploy.context import DeployContext
from deploy import glue_wheels
from deploy.errors import is_unsupported_operation
from tests.deploying import STAGE, deploy_up, shared_session

REPO_ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
RESOURCES = Resources(stage=STAGE, account_id=ACCOUNT, region=REGION)


@pytest.fixture
def aws_env(monkeypatch):
    """Fake credentials and region; no profile or endpoint override can reach a real account."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "MOTO_ACCOUNT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)


@pytest.fixture
def mocked(aws_env):
    with mock_aws():
        yield


def deploy_down(**kwargs):
    return down(STAGE, environ={}, out=io.StringIO(), sleep=lambda s: None, session=shared_session(),
                **kwargs)


def actions(result):
    return {(change.kind, change.name): change.action for change in result.changes}


def leftovers():
    """Every resource of the stage still present, service by service."""
    prefix = RESOURCES.prefix
    s3, iam, glue = boto3.client("s3"), boto3.client("iam"), boto3.client("glue")
    athena, sns, sfn = boto3.client("athena"), boto3.client("sns"), boto3.client("stepfunctions")
    kms, logs = boto3.client("kms"), boto3.client("logs")
    usable_keys = [k["KeyId"] for k in kms.list_keys()["Keys"]
                   if kms.describe_key(KeyId=k["KeyId"])["KeyMetadata"]["KeyState"] != "PendingDeletion"]
    return {
        "buckets": [b["Name"] for b in s3.list_buckets()["Buckets"]],
        "roles": [r["RoleName"] for r in iam.list_roles()["Roles"] if r["RoleName"].startswith(prefix)],
        "databases": [d["Name"] for d in glue.get_databases()["DatabaseList"]],
        "jobs": glue.list_jobs()["JobNames"],
        "crawlers": glue.list_crawlers()["CrawlerNames"],
        "workgroups": [w["Name"] for w in athena.list_work_groups()["WorkGroups"] if w["Name"] != "primary"],
        "topics": [t["TopicArn"] for t in sns.list_topics()["Topics"]],
        "state_machines": [m["name"] for m in sfn.list_state_machines()["stateMachines"]],
        "key_aliases": [a["AliasName"] for a in kms.list_aliases()["Aliases"]
                        if a["AliasName"].startswith("alias/%s" % prefix)],
        "usable_keys": usable_keys,
        "log_groups": [g["logGroupName"] for g in logs.describe_log_groups()["logGroups"]],
        "subscriptions": sns.list_subscriptions()["Subscriptions"],
        "queues": boto3.client("sqs").list_queues().get("QueueUrls", []),
        "alarms": [a["AlarmName"] for a in boto3.client("cloudwatch").describe_alarms()["MetricAlarms"]],
        "dashboards": [d["DashboardName"] for d in boto3.client("cloudwatch").list_dashboards()["DashboardEntries"]],
    }


# -- lifecycle --------------------------------------------------------------------------------
def test_up_twice_then_down_leaves_nothing_behind(mocked, asl, project):
    first = deploy_up(project, overrides={"NOTIFICATION_EMAIL": "data-team@example.com"})
    second = deploy_up(project)
    assert first.changed and set(actions(first).values()) == {"created"}
    assert not second.changed, [c for c in second.changes if c.action != "unchanged"]
    # 3 buckets (landing, lake, access logs), 4 roles (one per Glue job, crawler, state machine),
    # key, 3 assets, database, 2 jobs, the raw crawler, the Glue security configuration, workgroup,
    # topic, subscription, the trigger's on-failure queue, 8 log groups (state machine, Glue jobs,
    # 5 Lambdas, API access), state machine, the Iceberg table, 6 chalice files (config, 5 policies),
    # the alarm topic, 8 alarms and the dashboard; and the jobs' library wheels.
    wheels = len(glue_wheels.resolve(project).wheels)
    assert len(second.changes) == len(first.changes) == 46 + wheels
    present = leftovers()
    assert all(present.values()), present

    deploy_down(delete_data=True)
    assert leftovers() == {key: [] for key in present}


def test_down_keeps_data_unless_asked(mocked, asl, project):
    deploy_up(project)
    s3 = boto3.client("s3")
    s3.put_object(Bucket=RESOURCES.lake_bucket, Key="processed/shipping_date=2026-01-01/a.parquet", Body=b"x")

    result = deploy_down()

    assert actions(result)[("s3 bucket", RESOURCES.lake_bucket)] == "kept"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=RESOURCES.lake_bucket)["Contents"]]
    # glue-assets/ went; the data (and the Iceberg table's metadata) stays
    assert "processed/shipping_date=2026-01-01/a.parquet" in keys
    assert not [k for k in keys if not k.startswith("processed/")]
    remaining = leftovers()
    assert sorted(remaining.pop("buckets")) == sorted([RESOURCES.landing_bucket, RESOURCES.lake_bucket,
                                                       RESOURCES.access_log_bucket])
    assert remaining == {key: [] for key in remaining}


def test_down_deletes_every_object_version(mocked, asl, project):
    deploy_up(project)
    s3 = boto3.client("s3")
    s3.put_bucket_versioning(Bucket=RESOURCES.landing_bucket, VersioningConfiguration={"Status": "Enabled"})
    for body in (b"1", b"2"):
        s3.put_object(Bucket=RESOURCES.landing_bucket, Key="incoming/a.json", Body=body)
    s3.delete_object(Bucket=RESOURCES.landing_bucket, Key="incoming/a.json")  # a delete marker

    deploy_down(delete_data=True)

    assert boto3.client("s3").list_buckets()["Buckets"] == []


def test_down_on_nothing_succeeds(mocked):
    result = deploy_down(delete_data=True)
    assert set(actions(result).values()) == {"absent"}


# -- what was created, read back ------------------------------------------------------------------
def test_glue_jobs_read_back(mocked, asl, project):
    deploy_up(project)
    glue = boto3.client("glue")
    lake = RESOURCES.lake_bucket
    scripts = {RESOURCES.json_to_parquet_job: "json_to_parquet.py", RESOURCES.normalize_job: "normalize.py"}
    for name, script in scripts.items():
        job = glue.get_job(JobName=name)["Job"]
        assert job["Command"] == {"Name": "pythonshell", "PythonVersion": "3.9",
                                  "ScriptLocation": "s3://%s/glue-assets/%s" % (lake, script)}
        assert job["MaxCapacity"] == 0.0625
        assert job["Role"].endswith(":role/%s" % RESOURCES.glue_job_roles[name])
        assert job["Timeout"] > 0 and job["ExecutionProperty"]["MaxConcurrentRuns"] > 1
        args = job["DefaultArguments"]
        # No job run installs from a package index: the libraries are the uploaded wheels.
        assert "--additional-python-modules" not in args
        assert "--python-modules-installer-option" not in args
        assert not any("index" in value or "pypi" in value for value in args.values()), args
        extra = args["--extra-py-files"].split(",")
        assert extra[0] == "s3://%s/glue-assets/shipping_etl_glue_libs.zip" % lake
        wheels = [uri.rsplit("/", 1)[-1] for uri in extra[1:]]
        assert all(uri.startswith("s3://%s/glue-assets/wheels/" % lake) for uri in extra[1:])
        assert {w.split("-")[0] for w in wheels} >= {"duckdb", "pyarrow"}
        assert [p for w in wheels for p in glue_wheels.glue_platform_problems(w)] == []
        s3 = boto3.client("s3")
        for uri in extra:
            s3.head_object(Bucket=lake, Key=uri.split("/", 3)[3])  # uploaded


def test_glue_assets_are_the_project_files(mocked, asl, project):
    deploy_up(project)
    s3 = boto3.client("s3")
    lake = RESOURCES.lake_bucket
    for script in ("json_to_parquet.py", "normalize.py"):
        body = s3.get_object(Bucket=lake, Key="glue-assets/" + script)["Body"].read()
        assert body == (project / "glue" / script).read_bytes()
    archive = s3.get_object(Bucket=lake, Key="glue-assets/shipping_etl_glue_libs.zip")["Body"].read()
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        assert sorted(zipped.namelist()) == sorted(name for name, _path in glue_jobs.LIBRARY_ZIP_MEMBERS)
        assert "chalicelib/schema.py" in zipped.namelist()
        assert zipped.read("jobio.py") == (project / "glue" / "jobio.py").read_bytes()
        assert zipped.read("chalicelib/schema.py") == (REPO_ROOT / "chalicelib" / "schema.py").read_bytes()


def test_crawlers_database_and_workgroup_read_back(mocked, asl, project):
    deploy_up(project)
    glue, athena = boto3.client("glue"), boto3.client("athena")
    lake = RESOURCES.lake_bucket
    assert glue.get_database(Name=RESOURCES.glue_database)["Database"]["Name"] == "shipping_etl_dev"
    targets = {RESOURCES.raw_crawler: "s3://%s/raw/" % lake}
    names = [c["Name"] for c in glue.get_crawlers()["Crawlers"]]
    assert RESOURCES.processed_crawler not in names  # the Iceberg table needs no crawl
    for name, path in targets.items():
        crawler = glue.get_crawler(Name=name)["Crawler"]
        assert crawler["Targets"]["S3Targets"] == [{"Path": path}]
        assert crawler["DatabaseName"] == RESOURCES.glue_database
        assert crawler["RecrawlPolicy"] == {"RecrawlBehavior": "CRAWL_EVERYTHING"}
        assert crawler["SchemaChangePolicy"] == {"UpdateBehavior": "UPDATE_IN_DATABASE",
                                                 "DeleteBehavior": "LOG"}
        assert crawler["Role"].endswith(":role/%s" % RESOURCES.crawler_role)

    config = athena.get_work_group(WorkGroup=RESOURCES.athena_workgroup)["WorkGroup"]["Configuration"]
    assert config["ResultConfiguration"]["OutputLocation"] == "s3://%s/athena-results/" % lake
    assert config["EnforceWorkGroupConfiguration"] is True


def test_buckets_are_private_and_encrypted(mocked, asl, project):
    deploy_up(project)
    s3 = boto3.client("s3")
    for bucket in (RESOURCES.landing_bucket, RESOURCES.lake_bucket):
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert block == {"BlockPublicAcls": True, "IgnorePublicAcls": True,
                         "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
        ownership = s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"]
        assert ownership == [{"ObjectOwnership": "BucketOwnerEnforced"}]


def test_tls_only_policy_denies_plain_http(mocked):
    ctx = DeployContext(shared_session(), RESOURCES, out=io.StringIO())
    ensure_bucket(ctx, RESOURCES.lake_bucket, tls_only=True)
    again = ensure_bucket(ctx, RESOURCES.lake_bucket, tls_only=True)

    policy = json.loads(boto3.client("s3").get_bucket_policy(Bucket=RESOURCES.lake_bucket)["Policy"])
    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert "arn:aws:s3:::%s/*" % RESOURCES.lake_bucket in statement["Resource"]
    assert again.action == "unchanged"


def test_up_puts_tls_only_policy_by_default_on_aws(mocked, asl, project):
    # In-process moto answers on AWS's own endpoints, so the default applies the policy.
    try:
        up(STAGE, project_dir=project, environ={}, out=io.StringIO(), session=shared_session())
    except DeployError:
        pass  # moto 5.2 ignores the policy's condition and refuses the asset uploads
    policy = boto3.client("s3").get_bucket_policy(Bucket=RESOURCES.landing_bucket)["Policy"]
    assert "aws:SecureTransport" in policy


def test_state_machine_definition_is_the_builders(mocked, asl, project):
    deploy_up(project)
    described = boto3.client("stepfunctions").describe_state_machine(
        stateMachineArn=RESOURCES.state_machine_arn)
    assert json.loads(described["definition"]) == asl.build_definition(RESOURCES)
    assert described["roleArn"] == RESOURCES.role_arn(RESOURCES.state_machine_role)


def _statements(document):
    return document["Statement"]


def _scoped(resource, statement):
    """A resource of this stage, Glue's own log groups, the catalog, or "*" for actions that take
    no resource (or narrowed by a condition)."""
    return (RESOURCES.prefix in resource or RESOURCES.glue_database in resource
            or ":log-group:/aws-glue/" in resource
            or (resource.endswith(":key/*") and "kms:ViaService" in json.dumps(statement.get("Condition")))
            or resource.endswith((":catalog", ":datacatalog/AwsDataCatalog"))
            or (resource == "*" and ("Condition" in statement
                                     or set(statement["Action"]) <= policies.STAR_ONLY_ACTIONS)))


def test_role_policies_name_every_action(mocked, asl, project):
    deploy_up(project)
    iam = boto3.client("iam")
    for role in (RESOURCES.json_to_parquet_role, RESOURCES.normalize_role, RESOURCES.crawler_role,
                 RESOURCES.state_machine_role):
        document = iam.get_role_policy(RoleName=role, PolicyName="access")["PolicyDocument"]
        for statement in _statements(document):
            assert statement["Effect"] == "Allow"
            assert all("*" not in action for action in statement["Action"]), statement
            assert all(_scoped(resource, statement) for resource in statement["Resource"]), statement
    trust = iam.get_role(RoleName=RESOURCES.state_machine_role)["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "states.amazonaws.com"}


# -- .chalice files --------------------------------------------------------------------------------
def test_chalice_config_gets_stage_environment_and_keeps_other_keys(mocked, asl, project):
    config_path = project / ".chalice" / "config.json"
    config_path.parent.mkdir()
    config_path.write_text(json.dumps({
        "version": "2.0", "app_name": "shipping-etl", "autogen_policy": False,
        "stages": {
            "dev": {"api_gateway_stage": "api", "iam_policy_file": "policy-dev.json",
                    "environment_variables": {"APP_STAGE": "old", "GENERATOR_ROWS": "500"}},
            "prod": {"api_gateway_stage": "v1"},
        },
    }, indent=4))

    result = deploy_up(project, environ={"POLL_SECONDS": "30"})

    config = json.loads(config_path.read_text())
    expected = Settings(stage="dev", account_id=ACCOUNT, region=REGION, generator_rows=500,
                        poll_seconds=30).lambda_environment()
    assert config["stages"]["dev"]["environment_variables"] == expected
    assert result.settings.lambda_environment() == expected
    assert config["stages"]["dev"]["api_gateway_stage"] == "api"
    assert config["stages"]["prod"] == {"api_gateway_stage": "v1"}
    assert config["autogen_policy"] is False and config["app_name"] == "shipping-etl"
    assert config_path.read_text().startswith('{\n    "version"')  # the file's own indentation


def test_lambda_policy_files(mocked, asl, project):
    deploy_up(project)
    granted = {}
    for name in ("policy-dev.json", "policy-dev-on_landing.json", "policy-dev-generate_batch.json",
                 "policy-dev-reconcile.json", "policy-dev-maintain_lake.json"):
        policy = json.loads((project / ".chalice" / name).read_text())
        for statement in _statements(policy):
            assert statement["Effect"] == "Allow"
            for action in statement["Action"]:
                assert "*" not in action
                granted.setdefault(action, []).extend(statement["Resource"])
    assert granted["states:StartExecution"] == 2 * [RESOURCES.state_machine_arn]  # trigger, reconciler
    machine = RESOURCES.state_machine_name
    assert granted["states:ListExecutions"] == [
        RESOURCES.state_machine_arn, "arn:aws:states:%s:%s:mapRun:%s/*" % (REGION, ACCOUNT, machine)] * 2
    assert granted["states:DescribeExecution"] == [  # the API handler only: the trigger never describes
        RESOURCES.execution_arn("*"), "arn:aws:states:%s:%s:express:%s:*" % (REGION, ACCOUNT, machine)]
    assert granted["sqs:SendMessage"] == [RESOURCES.landing_failures_queue_arn]  # on_landing's dead letters
    assert granted["s3:ListBucketVersions"] == ["arn:aws:s3:::%s" % RESOURCES.landing_bucket]
    assert granted["s3:PutObject"] == [  # the generator; the maintenance (Athena rewrites the table)
        "arn:aws:s3:::%s/incoming/*" % RESOURCES.landing_bucket,
        "arn:aws:s3:::%s/processed/*" % RESOURCES.lake_bucket, "arn:aws:s3:::%s/athena-results/*" % RESOURCES.lake_bucket]
    assert sorted(granted["logs:PutLogEvents"]) == sorted(
        "arn:aws:logs:%s:%s:log-group:%s:log-stream:*" % (REGION, ACCOUNT, group)
        for group in RESOURCES.lambda_log_groups)


def test_new_config_points_the_stage_at_its_policy_file(mocked, asl, project):
    deploy_up(project)
    stage = json.loads((project / ".chalice" / "config.json").read_text())["stages"]["dev"]
    assert stage["autogen_policy"] is False and stage["iam_policy_file"] == "policy-dev.json"


def test_second_up_leaves_files_byte_for_byte(mocked, asl, project):
    deploy_up(project)
    files = {p: p.read_bytes() for p in (project / ".chalice").iterdir()}
    result = deploy_up(project)
    assert {p: p.read_bytes() for p in (project / ".chalice").iterdir()} == files
    assert actions(result)[("chalice file", ".chalice/config.json")] == "unchanged"


# -- changes are applied on the next up -----------------------------------------------------------
def test_changed_script_is_reuploaded(mocked, asl, project):
    deploy_up(project)
    (project / "glue" / "normalize.py").write_text("print('changed')\n")

    result = deploy_up(project)

    changed = {name: action for (kind, name), action in actions(result).items() if action != "unchanged"}
    assert changed == {"s3://%s/glue-assets/normalize.py" % RESOURCES.lake_bucket: "updated"}
    body = boto3.client("s3").get_object(Bucket=RESOURCES.lake_bucket, Key="glue-assets/normalize.py")
    assert body["Body"].read() == b"print('changed')\n"


def test_changed_library_is_rezipped(mocked, asl, project):
    deploy_up(project)
    (project / "glue" / "jobio.py").write_text("VERSION = 2\n")
    result = deploy_up(project)
    key = "s3://%s/glue-assets/shipping_etl_glue_libs.zip" % RESOURCES.lake_bucket
    assert actions(result)[("glue asset", key)] == "updated"


def test_changed_job_crawler_and_workgroup_settings_are_applied(mocked, asl, project, monkeypatch):
    deploy_up(project)
    monkeypatch.setitem(glue_jobs.JOB_TIMEOUT_MINUTES, "normalize", 45)
    monkeypatch.setattr(glue_jobs, "SCHEMA_CHANGE_POLICY",
                        {"UpdateBehavior": "LOG", "DeleteBehavior": "LOG"})
    monkeypatch.setattr(glue_jobs, "ATHENA_RESULTS_PREFIX", "athena-results/v2/")

    result = deploy_up(project)

    assert actions(result)[("glue job", RESOURCES.normalize_job)] == "updated"
    assert actions(result)[("glue job", RESOURCES.json_to_parquet_job)] == "unchanged"
    assert actions(result)[("glue crawler", RESOURCES.raw_crawler)] == "updated"
    assert actions(result)[("athena workgroup", RESOURCES.athena_workgroup)] == "updated"
    glue, athena = boto3.client("glue"), boto3.client("athena")
    assert glue.get_job(JobName=RESOURCES.normalize_job)["Job"]["Timeout"] == 45
    crawler = glue.get_crawler(Name=RESOURCES.raw_crawler)["Crawler"]
    assert crawler["SchemaChangePolicy"]["UpdateBehavior"] == "LOG"
    output = athena.get_work_group(WorkGroup=RESOURCES.athena_workgroup)["WorkGroup"]["Configuration"]
    assert output["ResultConfiguration"]["OutputLocation"].endswith("/athena-results/v2/")
    assert not deploy_up(project).changed


def test_changed_definition_is_applied(mocked, asl, project, monkeypatch):
    deploy_up(project)
    changed = {"StartAt": "Other", "States": {"Other": {"Type": "Succeed"}}}
    monkeypatch.setattr(sys.modules["chalicelib.asl"], "build_definition", lambda resources: changed)

    result = deploy_up(project)

    assert actions(result)[("state machine", RESOURCES.state_machine_name)] == "updated"
    described = boto3.client("stepfunctions").describe_state_machine(
        stateMachineArn=RESOURCES.state_machine_arn)
    assert json.loads(described["definition"]) == changed


def test_changed_role_policy_is_applied(mocked, asl, project):
    deploy_up(project)
    iam = boto3.client("iam")
    broader = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::*/*"}]})
    iam.put_role_policy(RoleName=RESOURCES.crawler_role, PolicyName="access", PolicyDocument=broader)
    iam.put_role_policy(RoleName=RESOURCES.crawler_role, PolicyName="added-by-hand", PolicyDocument=broader)

    result = deploy_up(project)

    assert actions(result)[("iam role", RESOURCES.crawler_role)] == "updated"
    assert iam.list_role_policies(RoleName=RESOURCES.crawler_role)["PolicyNames"] == ["access"]
    document = iam.get_role_policy(RoleName=RESOURCES.crawler_role, PolicyName="access")["PolicyDocument"]
    assert "arn:aws:s3:::*/*" not in json.dumps(document)


# -- dry run ------------------------------------------------------------------------------------
def test_dry_run_changes_nothing(mocked, asl, project):
    out = io.StringIO()
    planned = deploy_up(project, dry_run=True, out=out)

    assert set(actions(planned).values()) == {"created"}
    assert "would create" in out.getvalue() and "Dry run, nothing changed" in out.getvalue()
    assert all(not found for found in leftovers().values())
    assert not (project / ".chalice").exists()


def test_dry_run_after_a_change_reports_it_but_keeps_the_old(mocked, asl, project):
    deploy_up(project)
    before = leftovers()
    (project / "glue" / "normalize.py").write_text("print('changed')\n")

    planned = deploy_up(project, dry_run=True)
    removal = deploy_down(dry_run=True, delete_data=True)

    assert actions(planned)[("glue asset", "s3://%s/glue-assets/normalize.py" % RESOURCES.lake_bucket)] == "updated"
    assert set(actions(removal).values()) == {"deleted"}
    body = boto3.client("s3").get_object(Bucket=RESOURCES.lake_bucket, Key="glue-assets/normalize.py")
    assert body["Body"].read() == b"# normalize.py\nprint('run')\n"
    assert leftovers() == before


# -- errors --------------------------------------------------------------------------------------
def test_no_credentials_says_how_to_configure(monkeypatch, tmp_path, project):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)

    with pytest.raises(DeployError, match="aws configure"):
        deploy_up(project, session=boto3.session.Session())


def test_bucket_taken_by_another_account(mocked, asl, project, monkeypatch):
    monkeypatch.setenv("MOTO_ACCOUNT_ID", "111111111111")
    boto3.client("s3").create_bucket(Bucket=RESOURCES.lake_bucket)
    monkeypatch.delenv("MOTO_ACCOUNT_ID")

    with pytest.raises(DeployError, match="taken by another AWS account"):
        deploy_up(project)


def test_missing_script_stops_before_any_change(mocked, asl, project):
    (project / "glue" / "normalize.py").unlink()
    with pytest.raises(DeployError, match="glue/normalize.py not found"):
        deploy_up(project)
    assert boto3.client("s3").list_buckets()["Buckets"] == []


def test_stage_must_fit_resource_names(mocked, project):
    with pytest.raises(DeployError, match="lower-case"):
        up("Dev_1", project_dir=project, environ={}, out=io.StringIO())
    with pytest.raises(DeployError, match="shorter stage"):
        up("a-very-long-stage-name", project_dir=project, environ={}, out=io.StringIO(),
           session=shared_session())


def _client_error(code):
    return ClientError({"Error": {"Code": code, "Message": "boom"}}, "UpdateJob")


def test_update_falls_back_to_replace_only_for_an_emulator_lacking_the_call(aws_env):
    on_aws = boto3.client("glue", region_name=REGION)
    emulator = boto3.client("glue", region_name=REGION, endpoint_url="http://127.0.0.1:5000")
    assert is_unsupported_operation(NotImplementedError("The update_job action has not been implemented"), on_aws)
    assert is_unsupported_operation(_client_error("500"), emulator)
    assert not is_unsupported_operation(_client_error("500"), on_aws)
    assert not is_unsupported_operation(_client_error("AccessDeniedException"), emulator)
    assert not is_unsupported_operation(_client_error("InvalidInputException"), on_aws)


# -- command line -----------------------------------------------------------------------------------
def test_cli_dry_run_and_error_exit(mocked, asl, project, capsys):
    assert main(["up", "--stage", "dev", "--project-dir", str(project), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "would create" in printed and RESOURCES.lake_bucket in printed
    assert not (project / ".chalice").exists()

    assert main(["down", "--stage", "Bad_Stage"]) == 1
    assert "deploy: error: Stage 'Bad_Stage'" in capsys.readouterr().err


def test_cli_set_applies_and_checks_settings(mocked, asl, project, capsys, monkeypatch):
    # moto denies every object call under the TLS-only policy the CLI would put on AWS endpoints.
    monkeypatch.setattr("deploy.__main__.up", functools.partial(up, tls_only_policy=False, environ={}))
    args = ["up", "--stage", "dev", "--project-dir", str(project)]
    assert main(args + ["--set", "GLUE_JOB_DPU=1", "--set", "NOTIFICATION_EMAIL=ops@example.com"]) == 0
    assert boto3.client("glue").get_job(JobName=RESOURCES.normalize_job)["Job"]["MaxCapacity"] == 1.0
    assert "ops@example.com" in capsys.readouterr().out

    assert main(args + ["--set", "GLUE_JOB_DPU=2"]) == 1
    assert "GLUE_JOB_DPU must be one of 0.0625, 1.0, got '2'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(args + ["--set", "NO_SUCH_SETTING=1"])
    assert "NAME one of RAW_RETENTION_DAYS" in capsys.readouterr().err


def test_cli_help_explains():
    completed = subprocess.run([sys.executable, "-m", "deploy", "up", "--help"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True)
    for option in ("--stage", "--region", "--project-dir", "--dry-run"):
        assert option in completed.stdout
    completed = subprocess.run([sys.executable, "-m", "deploy", "--help"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True)
    assert "AWS_ENDPOINT_URL" in completed.stdout and "--delete-data" in completed.stdout


def test_processed_table_is_an_iceberg_table_partitioned_by_month(mocked, asl, project):
    from deploy import lake_table

    deploy_up(project)
    glue = boto3.client("glue")
    table = glue.get_table(DatabaseName=RESOURCES.glue_database, Name=RESOURCES.processed_table)["Table"]
    assert table["Parameters"]["table_type"] == "ICEBERG"
    assert table["Parameters"]["metadata_location"].startswith("s3://%s/processed/metadata/" % RESOURCES.lake_bucket)
    iceberg = lake_table.catalog_for(boto3.session.Session(), REGION).load_table(
        (RESOURCES.glue_database, RESOURCES.processed_table))
    assert [f.name for f in iceberg.schema().fields] == list(chalicelib_lake_table().COLUMN_NAMES)
    assert "customer_name" not in iceberg.schema().column_names
    assert [(f.name, str(f.transform)) for f in iceberg.spec().fields] == [("shipping_date_month", "month")]
    assert iceberg.properties["write.metadata.metrics.column.source_id"] == "full"
    assert iceberg.properties["vacuum_max_snapshot_age_seconds"] == "86400"

    again = deploy_up(project)
    assert actions(again)[("iceberg table", "%s.processed" % RESOURCES.glue_database)] == "unchanged"


def test_a_hive_style_processed_table_is_replaced(mocked, asl, project):
    deploy_up(project)
    glue, s3 = boto3.client("glue"), boto3.client("s3")
    glue.delete_table(DatabaseName=RESOURCES.glue_database, Name=RESOURCES.processed_table)
    glue.create_table(DatabaseName=RESOURCES.glue_database, TableInput={
        "Name": RESOURCES.processed_table, "PartitionKeys": [{"Name": "shipping_date", "Type": "string"}],
        "StorageDescriptor": {"Location": "s3://%s/processed/" % RESOURCES.lake_bucket, "Columns": []}})
    s3.put_object(Bucket=RESOURCES.lake_bucket, Key="processed/shipping_date=2026-01-01/a.parquet", Body=b"x")

    result = deploy_up(project)

    change = [c for c in result.changes if c.kind == "iceberg table"][0]
    assert change.action == "created" and "replaced the Hive-style table" in change.detail
    table = glue.get_table(DatabaseName=RESOURCES.glue_database, Name=RESOURCES.processed_table)["Table"]
    assert table["Parameters"]["table_type"] == "ICEBERG"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=RESOURCES.lake_bucket, Prefix="processed/")["Contents"]]
    assert all(k.startswith("processed/metadata/") for k in keys)  # the old files went


def chalicelib_lake_table():
    from chalicelib import lake_table

    return lake_table


def test_the_trigger_gets_an_encrypted_on_failure_queue_wired_once_its_function_exists(mocked, asl, project):
    deploy_up(project)
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=RESOURCES.landing_failures_queue)["QueueUrl"]
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["SqsManagedSseEnabled"])[
        "Attributes"]["SqsManagedSseEnabled"] == "true"
    # What `chalice deploy` makes; `deploy up` then sets its on-failure destination.
    lam = boto3.client("lambda")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                      "Principal": {"Service": "lambda.amazonaws.com"}}]}
    role = boto3.client("iam").create_role(RoleName="chalice-made", AssumeRolePolicyDocument=json.dumps(trust))
    lam.create_function(FunctionName="%s-on_landing" % RESOURCES.prefix, Runtime="python3.11",
                        Role=role["Role"]["Arn"], Handler="app.on_landing",
                        Code={"ZipFile": b"PK\x05\x06" + b"\x00" * 18})

    result = deploy_up(project)

    assert actions(result)[("lambda on-failure destination", "%s-on_landing" % RESOURCES.prefix)] == "created"
    config = lam.get_function_event_invoke_config(FunctionName="%s-on_landing" % RESOURCES.prefix)
    assert config["DestinationConfig"]["OnFailure"]["Destination"] == RESOURCES.landing_failures_queue_arn
    assert config["MaximumRetryAttempts"] == 2
    assert not deploy_up(project).changed


class _BarrierS3:
    """An S3 client whose put_object waits until ``parties`` uploads are under way at once."""

    def __init__(self, parties, failing_key=None):
        import threading

        self.barrier = threading.Barrier(parties, timeout=10)
        self.failing_key = failing_key
        self.put = []

    def head_object(self, Bucket, Key):
        raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")

    def put_object(self, Bucket, Key, Body, ContentType, Metadata):
        self.barrier.wait()  # BrokenBarrierError if the uploads went one after another
        if Key == self.failing_key:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"}}, "PutObject")
        self.put.append(Key)


def _assets_context(s3):
    ctx = DeployContext(session=None, resources=RESOURCES, out=io.StringIO())
    ctx._clients["s3"] = s3
    return ctx


def test_glue_assets_upload_side_by_side_and_report_in_key_order():
    from deploy import assets

    s3 = _BarrierS3(assets.UPLOADS_AT_ONCE)
    payloads = {"glue-assets/wheels/%s.whl" % name: name.encode() for name in "dbca"}
    changes = assets.ensure_assets(_assets_context(s3), "lake", payloads)
    assert [c.name for c in changes] == ["s3://lake/glue-assets/wheels/%s.whl" % n for n in "abcd"]
    assert {c.action for c in changes} == {"created"}
    assert sorted(s3.put) == sorted(payloads)


def test_a_failed_glue_asset_upload_stops_the_deploy_with_its_error():
    from deploy import assets

    s3 = _BarrierS3(assets.UPLOADS_AT_ONCE, failing_key="glue-assets/b.whl")
    ctx = _assets_context(s3)
    payloads = {"glue-assets/%s.whl" % name: b"x" for name in "abcd"}
    with pytest.raises(ClientError, match="AccessDenied"):
        assets.ensure_assets(ctx, "lake", payloads)
    assert [c.name for c in ctx.changes] == ["s3://lake/glue-assets/a.whl"]  # what was reported is true
    assert "glue-assets/b.whl" not in s3.put
