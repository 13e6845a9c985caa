"""IAM, bucket, topic and key policy documents, each scoped to the resources its user needs.

No Allow statement of a role or of the Lambdas grants a wildcard action: every action is named.
Resource wildcards stay inside this stage's buckets, prefixes, tables and log groups;
``"Resource": "*"`` appears only with actions AWS offers no resource-level permission for
(``STAR_ONLY_ACTIONS``).
"""
from chalicelib.resources import (
    ATHENA_RESULTS_PREFIX,
    GLUE_ASSETS_PREFIX,
    INCOMING_PREFIX,
    MANIFEST_PREFIX,
    PROCESSED_PREFIX,
    QUARANTINE_PREFIX,
    RAW_PREFIX,
)

VERSION = "2012-10-17"

# Actions that take no resource ARN: IAM accepts them only with "Resource": "*".
# Step Functions' log delivery goes through CloudWatch Logs' account-wide delivery APIs.
LOG_DELIVERY_ACTIONS = (
    "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery", "logs:ListLogDeliveries", "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies", "logs:DescribeLogGroups",
)
XRAY_ACTIONS = ("xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules",
                "xray:GetSamplingTargets")
STAR_ONLY_ACTIONS = frozenset(LOG_DELIVERY_ACTIONS + XRAY_ACTIONS + ("cloudwatch:PutMetricData",))
# Who may administer (never use) the stage's key: the account, through its IAM policies.
KEY_ADMIN_ACTIONS = (
    "kms:CancelKeyDeletion", "kms:CreateAlias", "kms:DeleteAlias", "kms:DescribeKey",
    "kms:DisableKey", "kms:DisableKeyRotation", "kms:EnableKey", "kms:EnableKeyRotation",
    "kms:GetKeyPolicy", "kms:GetKeyRotationStatus", "kms:ListAliases", "kms:ListResourceTags",
    "kms:PutKeyPolicy", "kms:ScheduleKeyDeletion", "kms:TagResource", "kms:UntagResource",
    "kms:UpdateAlias", "kms:UpdateKeyDescription",
)


def _arn(resources, service, resource):
    return "arn:aws:%s:%s:%s:%s" % (service, resources.region, resources.account_id, resource)


def _bucket_arn(bucket):
    return "arn:aws:s3:::%s" % bucket


def _objects(bucket, *prefixes):
    return ["arn:aws:s3:::%s/%s*" % (bucket, prefix) for prefix in prefixes]


def _statement(sid, actions, resources, condition=None, effect="Allow", principal=None):
    statement = {"Sid": sid, "Effect": effect}
    if principal is not None:
        statement["Principal"] = principal
    statement["Action"] = sorted(actions)
    statement["Resource"] = resources
    if condition:
        statement["Condition"] = condition
    return statement


def _account_root(resources):
    return {"AWS": "arn:aws:iam::%s:root" % resources.account_id}


def _document(*statements):
    return {"Version": VERSION, "Statement": list(statements)}


def _catalog(resources):
    """ARNs of the Glue Data Catalog, this stage's database and its tables."""
    db = resources.glue_database
    return [
        _arn(resources, "glue", "catalog"),
        _arn(resources, "glue", "database/%s" % db),
        _arn(resources, "glue", "table/%s/*" % db),
    ]


def _log_group(resources, name, stream="*"):
    """ARN of log group ``name`` (stream None) or of its streams matching ``stream``."""
    arn = _arn(resources, "logs", "log-group:%s" % name)
    return arn if stream is None else "%s:log-stream:%s" % (arn, stream)


# Glue Python shell jobs log to groups under /aws-glue/python-jobs/ (output, error), one stream
# per run, named after the run id, so streams cannot be narrowed to a job. Crawlers log to one
# group, one stream per crawler.
GLUE_JOB_LOG_GROUPS = ("/aws-glue/python-jobs/*",)
CRAWLER_LOG_GROUP = "/aws-glue/crawlers"


def _write_logs(sid, resources, groups, streams=("*",)):
    return [
        _statement(sid + "Groups", ["logs:CreateLogGroup"],
                   [_log_group(resources, group, None) for group in groups]),
        _statement(sid, ["logs:CreateLogStream", "logs:PutLogEvents"],
                   [_log_group(resources, group, stream) for group in groups for stream in streams]),
    ]


# -- trust -------------------------------------------------------------------------------------
def glue_trust():
    """Who may assume the Glue job and crawler roles: the Glue service."""
    return _document({
        "Effect": "Allow",
        "Principal": {"Service": "glue.amazonaws.com"},
        "Action": "sts:AssumeRole",
    })


def state_machine_trust(resources):
    """Step Functions, only on behalf of this account's state machines (confused deputy)."""
    return _document({
        "Effect": "Allow",
        "Principal": {"Service": "states.amazonaws.com"},
        "Action": "sts:AssumeRole",
        "Condition": {
            "StringEquals": {"aws:SourceAccount": resources.account_id},
            "ArnLike": {"aws:SourceArn": _arn(resources, "states", "stateMachine:*")},
        },
    })


# -- role policies -----------------------------------------------------------------------------
def glue_job_policy(resources):
    """The jobs read landing objects and their own scripts, write the lake's zones (catalog
    decisions under manifests/ included), register the partitions they write in this stage's
    tables and look whether its crawlers are crawling."""
    lake, landing = resources.lake_bucket, resources.landing_bucket
    written = (RAW_PREFIX, PROCESSED_PREFIX, QUARANTINE_PREFIX, MANIFEST_PREFIX)
    return _document(
        _statement("ReadLandingObjects", ["s3:GetObject"], _objects(landing, INCOMING_PREFIX)),
        _statement("ReadGlueAssets", ["s3:GetObject"], _objects(lake, GLUE_ASSETS_PREFIX)),
        _statement("WriteLakeZones", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                                      "s3:AbortMultipartUpload"], _objects(lake, *written)),
        # Listing lets a missing key answer 404 (not 403) and lets a job find stale outputs.
        _statement("ListBuckets", ["s3:ListBucket", "s3:GetBucketLocation"],
                   [_bucket_arn(landing), _bucket_arn(lake)]),
        # Normalize orders a landing key's versions (newest wins in the processed table).
        _statement("ListLandingVersions", ["s3:ListBucketVersions"], [_bucket_arn(landing)]),
        # UpdateTable: the Iceberg commits of normalize (Glue checks the table's version).
        _statement("RegisterPartitions", ["glue:GetTable", "glue:GetPartitions",
                                          "glue:BatchCreatePartition", "glue:UpdateTable",
                                          "glue:GetDatabase"], _catalog(resources)),
        # A job that finds a crawl needed first looks whether one is running (glue/catalog.py).
        _statement("ReadCrawlerState", ["glue:GetCrawler"],
                   [_arn(resources, "glue", "crawler/%s" % resources.raw_crawler)]),
        *_write_logs("WriteJobLogs", resources, GLUE_JOB_LOG_GROUPS),
        _statement("PublishGlueMetrics", ["cloudwatch:PutMetricData"], ["*"],
                   {"StringEquals": {"cloudwatch:namespace": "Glue"}}),
    )


def crawler_policy(resources):
    """The raw crawler reads the raw zone and maintains this stage's raw table."""
    lake = resources.lake_bucket
    return _document(
        _statement("ReadCrawledZones", ["s3:GetObject"], _objects(lake, RAW_PREFIX)),
        _statement("ListLake", ["s3:ListBucket", "s3:GetBucketLocation"], [_bucket_arn(lake)]),
        _statement("MaintainTables", [
            "glue:GetDatabase", "glue:GetTable", "glue:GetTables", "glue:CreateTable",
            "glue:UpdateTable", "glue:GetPartition", "glue:GetPartitions", "glue:CreatePartition",
            "glue:BatchCreatePartition", "glue:BatchGetPartition", "glue:UpdatePartition",
            "glue:BatchUpdatePartition",
        ], _catalog(resources)),
        *_write_logs("WriteCrawlerLogs", resources, [CRAWLER_LOG_GROUP],
                     streams=(resources.raw_crawler,)),
    )


def state_machine_policy(resources, settings=None):
    """Run the two jobs and crawlers, query the processed table, notify the topic; deliver
    execution logs (unless the log level is OFF) and traces (when tracing is on).

    Publishing to the encrypted topic also needs the stage's key, which its key policy grants
    this role (``kms_key_policy``).
    """
    lake = resources.lake_bucket
    jobs = [_arn(resources, "glue", "job/%s" % name)
            for name in (resources.json_to_parquet_job, resources.normalize_job)]
    crawlers = [_arn(resources, "glue", "crawler/%s" % resources.raw_crawler)]
    statements = [
        # .sync polls the run and stops it when the execution is stopped.
        _statement("RunGlueJobs", ["glue:StartJobRun", "glue:GetJobRun", "glue:GetJobRuns",
                                   "glue:BatchStopJobRun"], jobs),
        _statement("RunCrawlers", ["glue:StartCrawler", "glue:GetCrawler"], crawlers),
        _statement("RunQueries", ["athena:StartQueryExecution", "athena:GetQueryExecution",
                                  "athena:GetQueryResults", "athena:StopQueryExecution",
                                  "athena:GetWorkGroup"],
                   [_arn(resources, "athena", "workgroup/%s" % resources.athena_workgroup)]),
        _statement("ReadDataCatalog", ["athena:GetDataCatalog"],
                   [_arn(resources, "athena", "datacatalog/AwsDataCatalog")]),
        # Athena reads the catalog and the data with the caller's permissions.
        _statement("ReadTables", ["glue:GetDatabase", "glue:GetTable", "glue:GetTables",
                                  "glue:GetPartition", "glue:GetPartitions",
                                  "glue:BatchGetPartition"], _catalog(resources)),
        _statement("ReadProcessedAndManifests", ["s3:GetObject"],
                   _objects(lake, PROCESSED_PREFIX, MANIFEST_PREFIX)),
        _statement("WriteQueryResults", ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload",
                                         "s3:ListMultipartUploadParts"],
                   _objects(lake, ATHENA_RESULTS_PREFIX)),
        _statement("ListLake", ["s3:ListBucket", "s3:GetBucketLocation",
                                "s3:ListBucketMultipartUploads"], [_bucket_arn(lake)]),
        _statement("Notify", ["sns:Publish"], [resources.topic_arn]),
    ]
    if settings is None or settings.state_machine_log_level != "OFF":
        statements.append(_statement("DeliverExecutionLogs", LOG_DELIVERY_ACTIONS, ["*"]))
    if settings is not None and settings.state_machine_tracing:
        statements.append(_statement("WriteTraces", XRAY_ACTIONS, ["*"]))
    return _document(*statements)


def _function_logs(resources, function):
    # The deploy makes the functions' log groups (with retention and key): only streams here.
    return _statement("WriteLogs", ["logs:CreateLogStream", "logs:PutLogEvents"],
                      [_log_group(resources, "/aws/lambda/%s" % function)])


def lambda_policies(resources):
    """Each Chalice Lambda's own policy: ``{chalice function key: document}``.

    ``api_handler`` (``/status`` and ``/``) reads executions, ``on_landing`` starts one per
    landing object (and reads it back when the start was a duplicate), ``generate_batch``
    writes landing objects. Each function gets only its own log group.
    """
    machine = resources.state_machine_name
    # ListExecutions and DescribeExecution also name Map-run and Express-execution ARNs; this
    # machine (Standard, no Map state) has none, so those stay within its own name.
    read_executions = _statement("ReadExecutions", ["states:DescribeExecution"], [
        resources.execution_arn("*"), _arn(resources, "states", "express:%s:*" % machine)])
    api, on_landing, generator, maintainer = resources.lambda_functions
    return {
        "api_handler": _document(
            _statement("ListExecutions", ["states:ListExecutions"], [
                resources.state_machine_arn, _arn(resources, "states", "mapRun:%s/*" % machine)]),
            read_executions,
            # /status/{name}: the per-step timeline comes from the execution history.
            _statement("ReadExecutionHistory", ["states:GetExecutionHistory"], [resources.execution_arn("*")]),
            _function_logs(resources, api)),
        "on_landing": _document(
            _statement("StartPipeline", ["states:StartExecution"], [resources.state_machine_arn]),
            read_executions,
            _function_logs(resources, on_landing)),
        "generate_batch": _document(
            _statement("WriteLandingObjects", ["s3:PutObject"],
                       _objects(resources.landing_bucket, INCOMING_PREFIX)),
            _function_logs(resources, generator)),
        # OPTIMIZE and VACUUM run with the caller's permissions: Athena reads and rewrites the
        # table's files and commits a new version of it to the catalog.
        "maintain_lake": _document(
            _statement("RunMaintenanceQueries", ["athena:StartQueryExecution", "athena:GetQueryExecution",
                                                 "athena:GetWorkGroup"],
                       [_arn(resources, "athena", "workgroup/%s" % resources.athena_workgroup)]),
            _statement("CommitTable", ["glue:GetDatabase", "glue:GetTable", "glue:UpdateTable"],
                       _catalog(resources)),
            _statement("RewriteTableFiles", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                                             "s3:AbortMultipartUpload"],
                       _objects(resources.lake_bucket, PROCESSED_PREFIX, ATHENA_RESULTS_PREFIX)),
            _statement("ListLake", ["s3:ListBucket", "s3:GetBucketLocation"], [_bucket_arn(resources.lake_bucket)]),
            _function_logs(resources, maintainer)),
    }


def tls_only_bucket_policy(bucket):
    """Refuse every request to ``bucket`` that does not arrive over TLS.

    A Deny on every S3 action is the point here: it removes rights, it grants none.
    """
    return _document({
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [_bucket_arn(bucket), "%s/*" % _bucket_arn(bucket)],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    })


def topic_policy(resources):
    """The topic's access policy: only this account's IAM principals use it, over TLS only.

    Replaces SNS's default, which names every principal ``*`` narrowed by a source-owner condition.
    """
    topic = resources.topic_arn
    return _document(
        _statement("AccountUsesTopic", [
            "sns:GetTopicAttributes", "sns:SetTopicAttributes", "sns:AddPermission",
            "sns:RemovePermission", "sns:DeleteTopic", "sns:Subscribe",
            "sns:ListSubscriptionsByTopic", "sns:Publish",
        ], topic, principal=_account_root(resources)),
        _statement("DenyInsecureTransport", ["sns:Publish"], topic, effect="Deny", principal="*",
                   condition={"Bool": {"aws:SecureTransport": "false"}}),
    )


def kms_key_policy(resources):
    """The key policy of the stage's customer managed key.

    The account administers the key (through IAM) but no one decrypts with it directly: the
    state machine's role uses it only through SNS for this topic, and CloudWatch Logs only for
    the stage's log groups (state machine, Lambdas). In a key policy "Resource": "*" means this key.
    """
    log_groups = [_log_group(resources, group, None)
                  for group in [resources.state_machine_log_group] + resources.lambda_log_groups]
    region = resources.region
    return _document(
        _statement("AccountAdministersKey", KEY_ADMIN_ACTIONS, "*",
                   principal=_account_root(resources)),
        _statement("StateMachinePublishesToTopic", ["kms:GenerateDataKey", "kms:Decrypt"], "*",
                   principal={"AWS": resources.role_arn(resources.state_machine_role)},
                   condition={"StringEquals": {
                       "kms:ViaService": "sns.%s.amazonaws.com" % region,
                       "kms:EncryptionContext:aws:sns:topicArn": resources.topic_arn,
                   }}),
        _statement("LogsEncryptStageLogs", [
            "kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo",
            "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:DescribeKey",
        ], "*", principal={"Service": "logs.%s.amazonaws.com" % region},
            condition={"ArnEquals": {"kms:EncryptionContext:aws:logs:arn": log_groups}}),
    )
