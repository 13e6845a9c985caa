"""``up`` and ``down``: every resource of one stage, in dependency order.

Both work against whatever endpoint boto3 reaches: AWS, or an emulator named by
``AWS_ENDPOINT_URL`` (the local stack). Both are idempotent: ``up`` on an up-to-date stage and
``down`` on a removed one change nothing and succeed.
"""
import dataclasses
import os
import re
import time
from collections import Counter
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import glue_jobs
from chalicelib.resources import Resources
from chalicelib.settings import DEFAULT_REGION, Settings
from deploy import (
    assets,
    athena,
    buckets,
    chalice_config,
    glue,
    glue_wheels,
    iam,
    kms,
    lake_table,
    logs,
    monitoring,
    native_wheel,
    policies,
    queues,
    stepfunctions,
    topic,
)
from deploy.context import ABSENT, KEPT, UNCHANGED, DeployContext, label
from deploy.errors import DeployError, explain, is_aws_endpoint

REPO_ROOT = Path(__file__).resolve().parent.parent
_STAGE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
_BUCKET_NAME_MAX = 63


@dataclasses.dataclass
class DeployResult:
    """What ``up`` or ``down`` did: one Change per resource, in the order they were handled."""

    stage: str
    resources: Resources
    settings: Settings
    changes: list
    dry_run: bool

    @property
    def changed(self):
        """True when anything was (or, in a dry run, would be) created, updated or deleted."""
        return any(change.action not in (UNCHANGED, ABSENT, KEPT) for change in self.changes)

    def counts(self):
        """``{action: number of resources}``."""
        return dict(Counter(change.action for change in self.changes))


def check_stage(stage):
    """Raise DeployError unless ``stage`` can be part of every resource name (bucket rules)."""
    if not stage or not _STAGE.match(stage):
        raise DeployError("Stage %r is not usable in resource names: use lower-case letters, "
                          "digits and inner hyphens, e.g. dev or prod-eu." % stage)


def _region(region, session, environ):
    return (region or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
            or session.region_name or DEFAULT_REGION)


def _account_id(session, region):
    return session.client("sts", region_name=region).get_caller_identity()["Account"]


def stage_settings(stage, account_id, region, project_dir, environ, overrides=None):
    """Settings for ``stage``: ``overrides``, then the environment, over the stage's config values.

    ``overrides`` (``--set NAME=VALUE``) win, even when empty (that clears a value such as
    NOTIFICATION_EMAIL); then a value set non-empty in the environment; otherwise what
    ``.chalice/config.json`` holds for the stage is kept, so a deploy never resets a tuned value
    to its default. Stage, account and region are the deploy's own. Raises DeployError for an
    unusable value.
    """
    merged = chalice_config.stage_environment(project_dir, stage)
    merged.update(chalice_config.stage_deploy_settings(project_dir, stage))
    merged.update((key, value) for key, value in environ.items() if value != "")
    merged.update(overrides or {})
    try:
        settings = Settings.from_env(merged)
    except ValueError as exc:
        raise DeployError("Bad setting: %s" % exc) from None
    return dataclasses.replace(settings, stage=stage, account_id=account_id, region=region)


def _begin(stage, region, session, environ, out, dry_run, sleep):
    check_stage(stage)
    session = session or boto3.session.Session(region_name=region)
    region = _region(region, session, environ)
    account_id = _account_id(session, region)
    resources = Resources(stage=stage, account_id=account_id, region=region)
    if len(resources.landing_bucket) > _BUCKET_NAME_MAX or len(resources.lake_bucket) > _BUCKET_NAME_MAX:
        raise DeployError("Stage %r makes bucket names longer than %d characters (%s): use a "
                          "shorter stage." % (stage, _BUCKET_NAME_MAX, resources.lake_bucket))
    return DeployContext(session, resources, dry_run=dry_run, out=out, sleep=sleep)


def _where(ctx):
    where = "account %s in %s" % (ctx.resources.account_id, ctx.resources.region)
    s3 = ctx.client("s3")
    return where if is_aws_endpoint(s3) else "%s via %s" % (where, s3.meta.endpoint_url)


def _summary(ctx, verb):
    counts = Counter(change.action for change in ctx.changes)
    parts = ", ".join("%d %s" % (n, label(action, ctx.dry_run)) for action, n in sorted(counts.items()))
    prefix = "Dry run, nothing changed: " if ctx.dry_run else ""
    ctx.say("%s%s %d resources (%s)." % (prefix, verb, len(ctx.changes), parts))


def _run(body):
    """Run ``body()``, turning botocore failures into DeployErrors that say what to do."""
    try:
        return body()
    except (BotoCoreError, ClientError) as exc:
        explained = explain(exc)
        if explained is None:
            raise
        raise explained from exc


def _write_chalice_files(ctx, project_dir, stage, settings, resources):
    """The stage's .chalice/config.json values and one policy file per Lambda."""
    lambda_policies = policies.lambda_policies(resources)
    chalice_config.write_config(ctx, project_dir, stage, settings.lambda_environment(),
                                settings.deploy_environment(), functions=list(lambda_policies))
    for function, policy in lambda_policies.items():
        chalice_config.write_policy(ctx, project_dir, stage, policy, function)


def up(stage, region=None, project_dir=None, dry_run=False, session=None, environ=None,
       out=None, sleep=time.sleep, tls_only_policy=None, overrides=None):
    """Create or update every resource of ``stage`` and write its Chalice config and policy.

    ``project_dir`` is the Chalice project (the repository root by default): ``.chalice/`` is
    written there and ``glue/`` and ``chalicelib/`` are read from there. Progress goes to
    ``out`` (stdout by default). ``tls_only_policy``: put the TLS-only bucket policies; by
    default only when the endpoint is AWS's (emulators deny everything under such a policy, see
    ``deploy.buckets.ensure_bucket``). ``overrides``: ``{setting name: value}`` over the
    environment and the stage's kept values (see ``stage_settings``). Returns a DeployResult;
    raises DeployError with what to do.
    """
    environ = os.environ if environ is None else environ
    project_dir = Path(project_dir) if project_dir else REPO_ROOT

    def body():
        ctx = _begin(stage, region, session, environ, out, dry_run, sleep)
        resources = ctx.resources
        settings = stage_settings(stage, resources.account_id, resources.region, project_dir, environ,
                                  overrides)
        # Everything read from disk or built locally first: a missing file stops the deploy
        # before it changes anything.
        payloads = assets.asset_payloads(project_dir)
        try:
            payloads[glue_jobs.native_wheel_key()] = native_wheel.build_glue_wheel(project_dir)
            wheel_left_out = None
        except native_wheel.NativeWheelUnavailable as exc:
            wheel_left_out = str(exc)
        wheel_set = glue_wheels.resolve(project_dir)
        payloads.update(wheel_set.payloads())
        definition = stepfunctions.build_definition(resources)

        ctx.say("%s stage %s: %s" % ("Planning" if dry_run else "Deploying", stage, _where(ctx)))
        if wheel_left_out:
            ctx.say("warning: the Glue wheel of the C module (glue/native) cannot be built here (%s): "
                    "it is left out, and the %s job will use its slower pure-DuckDB path."
                    % (wheel_left_out, " and ".join(glue_jobs.NATIVE_WHEEL_JOBS)))
        s3_endpoint = ctx.client("s3").meta.endpoint_url
        on_aws = is_aws_endpoint(ctx.client("s3"))
        # An emulator that speaks HTTPS (the local stack) gets them too; over plain HTTP they
        # would refuse every request.
        tls_only = (on_aws or s3_endpoint.startswith("https://")) if tls_only_policy is None else tls_only_policy
        if not tls_only:
            ctx.say("note: TLS-only bucket policies left out (%s)"
                    % ("turned off" if tls_only_policy is False else "plain-HTTP emulator endpoint"))
        for name, description, trust, policy in iam.role_definitions(resources, settings):
            iam.ensure_role(ctx, name, description, trust, policy)
        # After the roles: the key policy names the state machine's role. Before the buckets,
        # which encrypt with it (landing, raw, quarantine, Athena results hold PII).
        _key_change, key_arn = kms.ensure_key(ctx, policies.kms_key_policy(resources))
        stage_key = key_arn or resources.kms_key_alias_arn  # a dry run before the key exists
        sources = (resources.landing_bucket, resources.lake_bucket)
        buckets.ensure_bucket(ctx, resources.access_log_bucket, tls_only,
                              lifecycle_rules=buckets.access_log_lifecycle(settings),
                              policy_statements=buckets.access_log_statements(
                                  resources, resources.access_log_bucket, sources))
        buckets.ensure_bucket(ctx, resources.landing_bucket, tls_only, versioned=True,
                              lifecycle_rules=buckets.landing_lifecycle(settings), kms_key_arn=stage_key,
                              access_log=(resources.access_log_bucket, resources.landing_bucket + "/"))
        buckets.ensure_bucket(ctx, resources.lake_bucket, tls_only,
                              lifecycle_rules=buckets.lake_lifecycle(settings), kms_key_arn=stage_key,
                              access_log=(resources.access_log_bucket, resources.lake_bucket + "/"))
        assets.ensure_assets(ctx, resources.lake_bucket, payloads)
        glue.ensure_database(ctx, glue_jobs.database_definition(resources))
        glue.ensure_security_configuration(
            ctx, glue_jobs.security_configuration_definition(resources, stage_key))
        for job in glue_jobs.job_definitions(resources, settings, native_wheel=not wheel_left_out,
                                             glue_wheels=wheel_set.filenames()):
            glue.ensure_job(ctx, job)
        for crawler in glue_jobs.crawler_definitions(resources):
            glue.ensure_crawler(ctx, crawler)
        # The processed crawler of earlier deploys: the Iceberg table needs none.
        lake_table.remove_processed_crawler(ctx)
        athena.ensure_workgroup(ctx, glue_jobs.workgroup_definition(resources, settings, stage_key))
        topic.ensure_topic(ctx)
        topic.ensure_email_subscription(ctx, settings.notification_email)
        queues.ensure_failures_queue(ctx, resources)
        queues.wire_on_failure(ctx, resources)
        # CloudWatch alarms (notifying their own topic) and the dashboard: docs/OPERATIONS.md.
        monitoring.ensure(ctx, settings)
        # The Lambdas' groups too: made here, they get the retention and key before the
        # functions first log (chalice's log_retention_in_days breaks its terraform packaging).
        for group in resources.managed_log_groups:
            logs.ensure_log_group(ctx, group, settings.log_retention_days, key_arn)
        stepfunctions.ensure_state_machine(ctx, definition, settings)
        # Last: replacing a Hive-style processed table rebuilds it with the normalize job, which
        # needs the job, its role and its assets in place.
        lake_table.ensure_table(ctx, settings)
        _write_chalice_files(ctx, project_dir, stage, settings, resources)

        _summary(ctx, "Stage %s:" % stage)
        if not dry_run:
            ctx.say("Next: chalice deploy --stage %s (the first time, then deploy up again: it sets "
                    "the S3 trigger's on-failure destination)" % stage)
        return DeployResult(stage, resources, settings, ctx.changes, dry_run)

    return _run(body)


def api(stage, region=None, project_dir=None, session=None, environ=None, out=None, sleep=time.sleep):
    """After ``chalice deploy``: throttle the stage's REST API and send its access log to the
    group ``up`` made (deploy.api_stage). Returns a DeployResult; raises DeployError with what
    to do."""
    from deploy import api_stage

    environ = os.environ if environ is None else environ
    project_dir = Path(project_dir) if project_dir else REPO_ROOT

    def body():
        ctx = _begin(stage, region, session, environ, out, False, sleep)
        settings = Settings(stage=stage, account_id=ctx.resources.account_id, region=ctx.resources.region)
        api_stage.ensure_api_stage(ctx, api_stage.rest_api_id(project_dir, stage))
        _summary(ctx, "Stage %s API:" % stage)
        return DeployResult(stage, ctx.resources, settings, ctx.changes, False)

    return _run(body)


def write_chalice_files(stage, account_id, region=None, project_dir=None, environ=None, out=None,
                        overrides=None):
    """Only what ``chalice package`` needs from a deploy, with no AWS call and no account: the
    stage's ``.chalice/config.json`` values and the Lambdas' policy files, for ``account_id``.

    The rest of ``up`` is a dry run: nothing else is read or changed. Returns a DeployResult;
    raises DeployError for a bad stage, account or setting.
    """
    environ = os.environ if environ is None else environ
    project_dir = Path(project_dir) if project_dir else REPO_ROOT
    check_stage(stage)
    if not re.match(r"^\d{12}$", account_id or ""):
        raise DeployError("--account-id must be a 12-digit AWS account id, got %r" % account_id)
    region = region or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    resources = Resources(stage=stage, account_id=account_id, region=region)
    ctx = DeployContext(None, resources, dry_run=False, out=out)
    settings = stage_settings(stage, account_id, region, project_dir, environ, overrides)
    ctx.say("Writing the chalice files of stage %s for account %s in %s (no AWS call)"
            % (stage, account_id, region))
    _write_chalice_files(ctx, project_dir, stage, settings, resources)
    _summary(ctx, "Stage %s:" % stage)
    ctx.say("Next: chalice package --pkg-format terraform --stage %s out/" % stage)
    return DeployResult(stage, resources, settings, ctx.changes, False)


def down(stage, region=None, delete_data=False, dry_run=False, session=None, environ=None,
         out=None, sleep=time.sleep):
    """Remove what ``up`` created for ``stage``; the buckets (data) only with ``delete_data``.

    The Chalice app itself is removed by ``chalice delete --stage <stage>``. Returns a
    DeployResult; raises DeployError with what to do.
    """
    environ = os.environ if environ is None else environ

    def body():
        ctx = _begin(stage, region, session, environ, out, dry_run, sleep)
        resources = ctx.resources
        ctx.say("%s stage %s: %s" % ("Planning removal of" if dry_run else "Removing", stage,
                                     _where(ctx)))
        # Users first, then what they use: the state machine runs jobs and crawlers, the
        # crawlers write the database, and the roles go last.
        stepfunctions.delete_state_machine(ctx)
        for crawler in glue_jobs.crawler_definitions(resources):
            glue.delete_crawler(ctx, crawler["Name"])
        for job in glue_jobs.job_definitions(resources):
            glue.delete_job(ctx, job["Name"])
        glue.delete_database(ctx, resources.glue_database)
        glue.delete_security_configuration(ctx, resources.glue_security_configuration)
        athena.delete_workgroup(ctx, resources.athena_workgroup)
        topic.delete_topic(ctx)
        monitoring.delete(ctx)
        queues.delete_failures_queue(ctx, resources)
        for group in resources.managed_log_groups:
            logs.delete_log_group(ctx, group)
        # After the topic and the log group, which it encrypts.
        kms.delete_key(ctx)
        assets.delete_assets(ctx, resources.lake_bucket)
        for name, _description, _trust, _policy in iam.role_definitions(resources):
            iam.delete_role(ctx, name)
        for bucket in (resources.landing_bucket, resources.lake_bucket, resources.access_log_bucket):
            if delete_data:
                buckets.delete_bucket(ctx, bucket)
            elif buckets.bucket_exists(ctx, bucket):
                ctx.record(KEPT, buckets.KIND, bucket, "holds data; --delete-data removes it")
            else:
                ctx.record(ABSENT, buckets.KIND, bucket)

        _summary(ctx, "Stage %s:" % stage)
        if not dry_run:
            ctx.say("The app itself is removed with: chalice delete --stage %s" % stage)
        settings = Settings(stage=stage, account_id=resources.account_id, region=resources.region)
        return DeployResult(stage, resources, settings, ctx.changes, dry_run)

    return _run(body)
