"""IAM, bucket, topic and key policy documents, each scoped to the resources its user needs.

No Allow statement of a role or of the Lambdas grants a wildcard action: every action is named.
Resource wildcards stay inside this stage's buckets, prefixes, tables and log groups;
``"Resource": "*"`` appears only with actions AWS offers no resource-level permission for
(``STAR_ONLY_ACTIONS``).
"""
from chalicelib.monitoring import NAMESPACE as METRICS_NAMESPACE
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


def _publish_metrics(sid="PublishPipelineMetrics"):
    """PutMetricData takes no resource: the namespace condition keeps it to the pipeline's own."""
    return _statement(sid, ["cloudwatch:PutMetricData"], ["*"],
                      {"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}})


def _alarms(resources):
    """ARNs of the stage's CloudWatch alarms (chalicelib/monitoring.py names them)."""
    return [_arn(resources, "cloudwatch", "alarm:%s-*" % resources.prefix)]


def _account_root(resources):
    return {"AWS": "arn:aws:iam::%s:root" % resources.account_id}


def _document(*statements):
    return {"Version": VERSION, "Statement": list(statements)}


def _catalog(resources, tables=("*",)):
    """ARNs of the Glue Data Catalog, this stage's database and its ``tables`` (all by default)."""
    db = resources.glue_database
    return [
        _arn(resources, "glue", "catalog"),
        _arn(resources, "glue", "database/%s" % db),
    ] + [_arn(resources, "glue", "table/%s/%s" % (db, table)) for table in tables]


def _log_group(resources, name, stream="*"):
    """ARN of log group ``name`` (stream None) or of its streams matching ``stream``."""
    arn = _arn(resources, "logs", "log-group:%s" % name)
    return arn if stream is None else "%s:log-stream:%s" % (arn, stream)


# Glue Python shell jobs log to groups under /aws-glue/python-jobs/ (output, error), one stream
# per run, named after the run id, so streams cannot be narrowed to a job. Crawlers log to one
# group, one stream per crawler.
GLUE_JOB_LOG_GROUPS = ("/aws-glue/python-jobs/*",)
# With a security configuration Glue writes to groups named after it, all under /aws-glue/.
GLUE_LOG_GROUPS = "/aws-glue/*"
CRAWLER_LOG_GROUP = "/aws-glue/crawlers"


def _write_logs(sid, resources, groups, streams=("*",)):
    return [
        _statement(sid + "Groups", ["logs:CreateLogGroup"],
                   [_log_group(resources, group, None) for group in groups]),
        _statement(sid, ["logs:CreateLogStream", "logs:PutLogEvents"],
                   [_log_group(resources, group, stream) for group in groups for stream in streams]),
    ]


# -- trust -------------------------------------------------------------------------------------
def glue_trust(resources):
    """Who may assume the Glue job and crawler roles: the Glue service, only on behalf of this
    account's jobs and crawlers (confused deputy)."""
    return _document({
        "Effect": "Allow",
        "Principal": {"Service": "glue.amazonaws.com"},
        "Action": "sts:AssumeRole",
        "Condition": {
            "StringEquals": {"aws:SourceAccount": resources.account_id},
            "ArnLike": {"aws:SourceArn": _arn(resources, "glue", "*")},
        },
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
def _glue_job_policy(resources, read, written, buckets, catalog_statements):
    """A job reads ``read`` objects and its own scripts and wheels, writes ``written`` prefixes
    of the lake (its catalog decision under manifests/ included), lists ``buckets`` and may do
    what ``catalog_statements`` allow in the catalog."""
    lake = resources.lake_bucket
    return _document(
        # GetObjectVersion: a job reads exactly the version its execution names.
        _statement("ReadInput", ["s3:GetObject", "s3:GetObjectVersion"], read),
        _statement("ReadGlueAssets", ["s3:GetObject"], _objects(lake, GLUE_ASSETS_PREFIX)),
        _statement("WriteOwnZones", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                                     "s3:AbortMultipartUpload"], _objects(lake, *written)),
        # Listing lets a missing key answer 404 (not 403) and lets a job find stale outputs.
        _statement("ListBuckets", ["s3:ListBucket", "s3:GetBucketLocation"],
                   [_bucket_arn(bucket) for bucket in buckets]),
        *catalog_statements,
        _use_stage_key_through_s3(resources),
        _associate_glue_log_key(resources),
        *_write_logs("WriteJobLogs", resources, GLUE_JOB_LOG_GROUPS),
        _statement("PublishGlueMetrics", ["cloudwatch:PutMetricData"], ["*"],
                   {"StringEquals": {"cloudwatch:namespace": "Glue"}}),
    )


def json_to_parquet_policy(resources):
    """json-to-parquet reads landing objects (any version) and writes raw/ and quarantine/; it
    cannot touch the processed zone. It registers the raw table's partitions and, when a crawl is
    needed, first looks whether the raw crawler is crawling (glue/catalog.py)."""
    return _glue_job_policy(
        resources, _objects(resources.landing_bucket, INCOMING_PREFIX),
        (RAW_PREFIX, QUARANTINE_PREFIX, MANIFEST_PREFIX), (resources.landing_bucket, resources.lake_bucket),
        [_statement("RegisterPartitions", ["glue:GetTable", "glue:GetPartitions", "glue:BatchCreatePartition"],
                    _catalog(resources, [resources.raw_table])),
         _statement("ReadCrawlerState", ["glue:GetCrawler"],
                    [_arn(resources, "glue", "crawler/%s" % resources.raw_crawler)])])


def normalize_policy(resources):
    """normalize reads raw/ and writes processed/ (the Iceberg table's data and metadata); it
    reads neither landing nor quarantine objects. It commits to the processed table (UpdateTable:
    Glue checks the table's version) and lists a landing key's versions to order them (newest
    wins), which reads no object."""
    return _glue_job_policy(
        resources, _objects(resources.lake_bucket, RAW_PREFIX), (PROCESSED_PREFIX, MANIFEST_PREFIX),
        (resources.lake_bucket,),
        [_statement("CommitProcessedTable", ["glue:GetDatabase", "glue:GetTable", "glue:UpdateTable"],
                    _catalog(resources, [resources.processed_table])),
         _statement("ListLandingVersions", ["s3:ListBucketVersions"], [_bucket_arn(resources.landing_bucket)])])


def glue_job_policies(resources):
    """``{role name: policy}`` of the Glue jobs."""
    return {resources.json_to_parquet_role: json_to_parquet_policy(resources),
            resources.normalize_role: normalize_policy(resources)}


def _associate_glue_log_key(resources):
    """The Glue security configuration encrypts the job's and crawler's logs with the stage's
    key: Glue associates it with their log groups under /aws-glue/."""
    return _statement("EncryptGlueLogs", ["logs:AssociateKmsKey"],
                      [_log_group(resources, GLUE_LOG_GROUPS, None)])


def _use_stage_key_through_s3(resources, sid="UseStageKeyThroughS3"):
    """Encrypt and decrypt with KMS keys of this account only through S3 in this region (the
    buckets' default encryption: the stage's key). The roles exist before the key (its policy
    names one of them), so they cannot name its id; the key's own policy admits the account's
    principals only through S3."""
    return _statement(sid, ["kms:Decrypt", "kms:GenerateDataKey"],
                      [_arn(resources, "kms", "key/*")],
                      {"StringEquals": {"kms:ViaService": "s3.%s.amazonaws.com" % resources.region}})


def crawler_policy(resources):
    """The raw crawler reads the raw zone and maintains this stage's raw table."""
    lake = resources.lake_bucket
    return _document(
        _statement("ReadCrawledZones", ["s3:GetObject"], _objects(lake, RAW_PREFIX)),
        _statement("ListLake", ["s3:ListBucket", "s3:GetBucketLocation"], [_bucket_arn(lake)]),
        _use_stage_key_through_s3(resources),
        _associate_glue_log_key(resources),
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
        # Each execution's data-quality and timing figures (chalicelib/asl.py).
        _publish_metrics(),
        # Athena reads the processed zone and writes results with the caller's permissions.
        _use_stage_key_through_s3(resources),
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
    landing object (StartExecution alone: it is idempotent) and dead-letters what it cannot,
    ``generate_batch`` writes landing objects, ``reconcile`` lists landing object versions and
    executions, reads the dead letters and starts what is missing, ``maintain_lake`` runs the Iceberg
    table's OPTIMIZE and VACUUM through Athena. Each function gets only its own log group.
    """
    machine = resources.state_machine_name
    # ListExecutions and DescribeExecution also name Map-run and Express-execution ARNs; this
    # machine (Standard, no Map state) has none, so those stay within its own name.
    read_executions = _statement("ReadExecutions", ["states:DescribeExecution"], [
        resources.execution_arn("*"), _arn(resources, "states", "express:%s:*" % machine)])
    api, on_landing, generator, reconciler, maintainer = resources.lambda_functions
    start_pipeline = _statement("StartPipeline", ["states:StartExecution"], [resources.state_machine_arn])
    list_executions = _statement("ListExecutions", ["states:ListExecutions"], [
        resources.state_machine_arn, _arn(resources, "states", "mapRun:%s/*" % machine)])
    return {
        "api_handler": _document(
            list_executions,
            read_executions,
            # /status/{name}: the per-step timeline comes from the execution history.
            _statement("ReadExecutionHistory", ["states:GetExecutionHistory"], [resources.execution_arn("*")]),
            # The dashboard's data-quality view shows the stage's alarm states.
            _statement("ReadAlarms", ["cloudwatch:DescribeAlarms"], _alarms(resources)),
            _function_logs(resources, api)),
        "on_landing": _document(
            start_pipeline,
            # Lambda sends an event it gave up on to the on-failure destination with the
            # function's own role.
            _statement("DeadLetterFailedEvents", ["sqs:SendMessage"], [resources.landing_failures_queue_arn]),
            _function_logs(resources, on_landing)),
        "reconcile": _document(
            start_pipeline,
            list_executions,
            _statement("ListLandingVersions", ["s3:ListBucketVersions"],
                       ["arn:aws:s3:::%s" % resources.landing_bucket]),
            _statement("ReadDeadLetters", ["sqs:GetQueueUrl", "sqs:ReceiveMessage", "sqs:DeleteMessage"],
                       [resources.landing_failures_queue_arn]),
            _publish_metrics("PublishReconciledEvents"),
            _function_logs(resources, reconciler)),
        "generate_batch": _document(
            _statement("WriteLandingObjects", ["s3:PutObject"],
                       _objects(resources.landing_bucket, INCOMING_PREFIX)),
            _use_stage_key_through_s3(resources),
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
            _use_stage_key_through_s3(resources),
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


def _topic_document(resources, topic, *grants):
    """A topic's access policy: this account's IAM principals use it, ``grants`` add to that,
    and publishing is over TLS only."""
    return _document(
        _statement("AccountUsesTopic", [
            "sns:GetTopicAttributes", "sns:SetTopicAttributes", "sns:AddPermission",
            "sns:RemovePermission", "sns:DeleteTopic", "sns:Subscribe",
            "sns:ListSubscriptionsByTopic", "sns:Publish",
        ], topic, principal=_account_root(resources)),
        *grants,
        _statement("DenyInsecureTransport", ["sns:Publish"], topic, effect="Deny", principal="*",
                   condition={"Bool": {"aws:SecureTransport": "false"}}),
    )


def topic_policy(resources):
    """The topic's access policy: only this account's IAM principals use it, over TLS only.

    Replaces SNS's default, which names every principal ``*`` narrowed by a source-owner condition.
    """
    return _topic_document(resources, resources.topic_arn)


def alarm_topic_policy(resources):
    """The alarm topic's access policy: the account's IAM principals, and CloudWatch for this
    stage's alarms only; over TLS only."""
    topic = resources.alarm_topic_arn
    return _topic_document(
        resources, topic,
        _statement("StageAlarmsPublish", ["sns:Publish"], topic,
                   principal={"Service": "cloudwatch.amazonaws.com"},
                   condition={"ArnLike": {"aws:SourceArn": _alarms(resources)},
                              "StringEquals": {"aws:SourceAccount": resources.account_id}}))


def kms_key_policy(resources):
    """The key policy of the stage's customer managed key.

    The account administers the key (through IAM) but no one decrypts with it directly: the
    state machine's role uses it only through SNS for this topic, and CloudWatch Logs only for
    the stage's log groups (state machine, Lambdas). In a key policy "Resource": "*" means this key.
    """
    log_groups = [_log_group(resources, group, None)
                  for group in resources.managed_log_groups]
    region = resources.region
    return _document(
        _statement("AccountAdministersKey", KEY_ADMIN_ACTIONS, "*",
                   principal=_account_root(resources)),
        # The buckets' default encryption: the account's principals whose IAM policies allow it
        # (the jobs, crawlers, state machine, generator) use the key, only through S3.
        _statement("AccountUsesKeyThroughS3", ["kms:Decrypt", "kms:GenerateDataKey"], "*",
                   principal=_account_root(resources),
                   condition={"StringEquals": {"kms:ViaService": "s3.%s.amazonaws.com" % region,
                                               "kms:CallerAccount": resources.account_id}}),
        _statement("StateMachinePublishesToTopic", ["kms:GenerateDataKey", "kms:Decrypt"], "*",
                   principal={"AWS": resources.role_arn(resources.state_machine_role)},
                   condition={"StringEquals": {
                       "kms:ViaService": "sns.%s.amazonaws.com" % region,
                       "kms:EncryptionContext:aws:sns:topicArn": resources.topic_arn,
                   }}),
        # The alarm topic is encrypted with the key too: CloudWatch publishes to it.
        _statement("AlarmsPublishToAlarmTopic", ["kms:GenerateDataKey", "kms:Decrypt"], "*",
                   principal={"Service": "cloudwatch.amazonaws.com"},
                   condition={"StringEquals": {
                       "kms:EncryptionContext:aws:sns:topicArn": resources.alarm_topic_arn}}),
        _statement("LogsEncryptGlueLogs", ["kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom",
                                           "kms:ReEncryptTo", "kms:GenerateDataKey",
                                           "kms:GenerateDataKeyWithoutPlaintext", "kms:DescribeKey"],
                   "*", principal={"Service": "logs.%s.amazonaws.com" % region},
                   condition={"ArnLike": {"kms:EncryptionContext:aws:logs:arn":
                                          _log_group(resources, GLUE_LOG_GROUPS, None)}}),
        _statement("LogsEncryptStageLogs", [
            "kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo",
            "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:DescribeKey",
        ], "*", principal={"Service": "logs.%s.amazonaws.com" % region},
            condition={"ArnEquals": {"kms:EncryptionContext:aws:logs:arn": log_groups}}),
    )
