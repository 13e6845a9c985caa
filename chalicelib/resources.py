"""Names and ARNs of every AWS resource, derived from app name + stage (+ account, region).

The one place resource names are defined: the deploy creates these, the Lambdas, the state
machine and the local stack find them here.
"""
from dataclasses import dataclass

from chalicelib.settings import APP_NAME, Settings

# Prefixes inside the lake bucket. The raw and processed zones are crawled, so nothing else may
# live under them.
RAW_PREFIX = "raw/"
PROCESSED_PREFIX = "processed/"
QUARANTINE_PREFIX = "quarantine/"
MANIFEST_PREFIX = "manifests/"
ATHENA_RESULTS_PREFIX = "athena-results/"
GLUE_ASSETS_PREFIX = "glue-assets/"
# Prefix in the landing bucket that triggers the pipeline.
INCOMING_PREFIX = "incoming/"
# app.py's handlers other than the API's (chalice names their functions after them).
LAMBDA_HANDLERS = ("on_landing", "generate_batch", "reconcile", "maintain_lake")


@dataclass(frozen=True)
class Resources:
    stage: str
    account_id: str
    region: str
    app_name: str = APP_NAME

    @classmethod
    def from_settings(cls, settings: Settings):
        return cls(stage=settings.stage, account_id=settings.account_id, region=settings.region)

    # -- naming helpers ---------------------------------------------------------------------
    @property
    def prefix(self):
        """``shipping-etl-<stage>``: the start of every resource name."""
        return "%s-%s" % (self.app_name, self.stage)

    @property
    def _snake(self):
        # Glue databases and tables are lower-case with underscores (Athena needs no quoting).
        return self.prefix.replace("-", "_").lower()

    def _bucket(self, purpose):
        # Bucket names are global: account and region make them unique per deployment.
        return "%s-%s-%s-%s" % (self.prefix, purpose, self.account_id, self.region)

    def _arn(self, service, resource, region=True):
        return "arn:aws:%s:%s:%s:%s" % (service, self.region if region else "", self.account_id, resource)

    # -- S3 ---------------------------------------------------------------------------------
    @property
    def landing_bucket(self):
        return self._bucket("landing")

    @property
    def lake_bucket(self):
        """Raw, processed and quarantine zones, manifests, Athena results and Glue scripts."""
        return self._bucket("lake")

    @property
    def access_log_bucket(self):
        """S3 server access logs of the landing and lake buckets (``<bucket>/`` prefixes)."""
        return self._bucket("access-logs")

    def lake_uri(self, prefix=""):
        return "s3://%s/%s" % (self.lake_bucket, prefix)

    # -- Glue -------------------------------------------------------------------------------
    @property
    def glue_database(self):
        return self._snake

    @property
    def raw_table(self):
        return "raw"

    @property
    def processed_table(self):
        return "processed"

    @property
    def json_to_parquet_job(self):
        return "%s-json-to-parquet" % self.prefix

    @property
    def normalize_job(self):
        return "%s-normalize" % self.prefix

    @property
    def raw_crawler(self):
        return "%s-raw" % self.prefix

    @property
    def processed_crawler(self):
        return "%s-processed" % self.prefix

    # -- Athena, SNS, Step Functions ----------------------------------------------------------
    @property
    def athena_workgroup(self):
        return self.prefix

    @property
    def topic_name(self):
        return "%s-notifications" % self.prefix

    @property
    def topic_arn(self):
        return self._arn("sns", self.topic_name)

    @property
    def alarm_topic_name(self):
        """Where the stage's CloudWatch alarms notify (chalicelib/monitoring.py)."""
        return "%s-alarms" % self.prefix

    @property
    def alarm_topic_arn(self):
        return self._arn("sns", self.alarm_topic_name)

    @property
    def state_machine_name(self):
        return "%s-pipeline" % self.prefix

    @property
    def state_machine_arn(self):
        return self._arn("states", "stateMachine:%s" % self.state_machine_name)

    def execution_arn(self, execution_name):
        return self._arn("states", "execution:%s:%s" % (self.state_machine_name, execution_name))

    @property
    def state_machine_log_group(self):
        # /aws/vendedlogs/ is the prefix AWS recommends for logs delivered on a service's behalf:
        # it keeps the account's CloudWatch Logs resource policy from growing per log group.
        return "/aws/vendedlogs/states/%s" % self.state_machine_name

    @property
    def state_machine_log_group_arn(self):
        return self._arn("logs", "log-group:%s" % self.state_machine_log_group)

    @property
    def glue_job_log_group(self):
        """The stage's Glue jobs' log group (continuous logging): managed by the deploy, with
        retention and the stage's key, unlike Glue's account-wide default groups. Under
        /aws-glue/python-jobs/, where the jobs' role may write."""
        return "/aws-glue/python-jobs/%s" % self.prefix

    @property
    def managed_log_groups(self):
        """Every log group the deploy makes, with retention and the stage's key."""
        return ([self.state_machine_log_group, self.glue_job_log_group] + self.lambda_log_groups
                + [self.api_access_log_group])

    @property
    def api_access_log_group(self):
        """API Gateway's access log of the stage's REST API (``python -m deploy api``)."""
        return "/aws/apigateway/%s-access" % self.prefix

    @property
    def api_access_log_group_arn(self):
        return self._arn("logs", "log-group:%s" % self.api_access_log_group)

    # -- Lambda -------------------------------------------------------------------------------
    @property
    def lambda_functions(self):
        """Names chalice gives the stage's functions: ``<app>-<stage>`` serves the API, the
        others are ``<app>-<stage>-<handler>``."""
        return [self.prefix] + ["%s-%s" % (self.prefix, handler) for handler in LAMBDA_HANDLERS]

    @property
    def landing_failures_queue(self):
        """The S3 trigger's on-failure destination: events Lambda gave up on (after its two
        retries) wait here for the reconciler."""
        return "%s-landing-failures" % self.prefix

    @property
    def landing_failures_queue_arn(self):
        return self._arn("sqs", self.landing_failures_queue)

    @property
    def lambda_log_groups(self):
        return ["/aws/lambda/%s" % name for name in self.lambda_functions]

    # -- KMS --------------------------------------------------------------------------------
    @property
    def kms_key_alias(self):
        """The stage's customer managed key: encrypts the topic and the state machine's logs."""
        return "alias/%s" % self.prefix

    @property
    def kms_key_alias_arn(self):
        return self._arn("kms", self.kms_key_alias)

    # -- IAM --------------------------------------------------------------------------------
    @property
    def glue_security_configuration(self):
        """KMS for what the Glue jobs and crawlers write: S3 objects and CloudWatch logs."""
        return "%s-glue" % self.prefix

    @property
    def json_to_parquet_role(self):
        """The json-to-parquet job's own role (each job has one, with only its own prefixes)."""
        return "%s-json-to-parquet-job" % self.prefix

    @property
    def normalize_role(self):
        return "%s-normalize-job" % self.prefix

    @property
    def glue_job_roles(self):
        """``{job name: its role name}``."""
        return {self.json_to_parquet_job: self.json_to_parquet_role,
                self.normalize_job: self.normalize_role}

    @property
    def crawler_role(self):
        return "%s-crawler" % self.prefix

    @property
    def state_machine_role(self):
        return "%s-state-machine" % self.prefix

    def role_arn(self, role_name):
        return "arn:aws:iam::%s:role/%s" % (self.account_id, role_name)
