"""The pipeline's state machine, in Amazon States Language (JSONPath), built as plain dicts.

One builder makes both forms of the definition:

- ``build_definition(resources)``: the definition with a stage's real names and ARNs (what the
  deploy creates and the local stack runs);
- ``render_template()``: the same definition with ``${Placeholder}`` tokens in place of stage
  values, checked in as ``statemachine/pipeline.asl.json``. ``template_values(resources)`` maps
  each placeholder to its value and ``fill_template(text, values)`` substitutes them (the same
  substitution CloudFormation's ``DefinitionSubstitutions`` performs).

``python -m chalicelib.asl`` rewrites the checked-in file; ``python -m chalicelib.asl --check``
exits 1 when it is out of date.

The flow (steps in ``STEPS``): json-to-parquet (Glue job) -> crawl-raw -> normalize (Glue job) ->
query (Athena) -> notify (SNS). json-to-parquet also compares its output with the raw catalog
table and writes a decision (glue/catalog.py); crawl-raw runs the crawler only when that decision
asks for one, waits out another execution's crawl in its poll loop instead of failing, then has
the job check the catalog again (``--catalog_only``). normalize commits to the processed Iceberg
table, whose metadata is its catalog: there is nothing to crawl after it (hidden partitioning). Every Task retries its
transient errors (a failed job run or query once) and catches everything else into a per-step Pass
that records the step, then one failure branch publishes a failure notification and ends in a
Fail state whose cause is JSON ``{"step", "error", "cause"}``. docs/ORCHESTRATION.md explains it.
"""
import argparse
import json
import os
import sys

from chalicelib import monitoring, queries
from chalicelib.glue_jobs import JOB_TIMEOUT_MINUTES
from chalicelib import naming
from chalicelib.naming import output_keys
from chalicelib.resources import ATHENA_RESULTS_PREFIX
from chalicelib.schema import TOTALS

STEPS = ("json-to-parquet", "crawl-raw", "normalize", "query", "notify")

# Placeholder -> the Resources attribute that holds its value for a stage.
PLACEHOLDERS = {
    "LakeBucket": "lake_bucket",
    "GlueDatabase": "glue_database",
    "RawTable": "raw_table",
    "ProcessedTable": "processed_table",
    "JsonToParquetJob": "json_to_parquet_job",
    "NormalizeJob": "normalize_job",
    "RawCrawler": "raw_crawler",
    "AthenaWorkGroup": "athena_workgroup",
    "TopicArn": "topic_arn",
    "Region": "region",
    "Stage": "stage",
}

TEMPLATE_PATH = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "statemachine", "pipeline.asl.json"
)

# Task timeouts, sized per stage. A job state waits for the job's own Timeout (set by the deploy,
# chalicelib.glue_jobs) plus Glue's start-up and queueing, so Glue stops a runaway job before
# the state gives up on it. A catalog check reads no data: its run gets a short Timeout of its own.
GLUE_START_UP_SECONDS = 900
GLUE_JOB_TIMEOUT_SECONDS = {step: 60 * minutes + GLUE_START_UP_SECONDS
                            for step, minutes in JOB_TIMEOUT_MINUTES.items()}
CATALOG_CHECK_JOB_TIMEOUT_MINUTES = 5
CATALOG_CHECK_TIMEOUT_SECONDS = 60 * CATALOG_CHECK_JOB_TIMEOUT_MINUTES + GLUE_START_UP_SECONDS
# The workgroup cancels a query past its scan cutoff; 15 minutes is far beyond what the
# per-source totals query takes.
ATHENA_QUERY_TIMEOUT_SECONDS = 900
API_CALL_TIMEOUT_SECONDS = 60
# Bounds the whole execution, crawler polling included: two jobs, two crawls, catalog checks,
# one query.
EXECUTION_TIMEOUT_SECONDS = 4 * 3600

# Error names starting with "States." are reserved for Step Functions itself, and moto refuses a
# Fail state that reports one. Such errors (States.TaskFailed, States.Timeout, ...) end in
# FAILED_ON_STATES_ERROR with the prefix dropped ("TaskFailed"); the cause JSON keeps the
# original name.
RESERVED_ERROR_PREFIX = "States."

# Before any job runs: the input's identifiers are checked (a forged or corrupt start fails
# here, with no notification, since its identifiers cannot be trusted in one), and an object
# without a version id (an unversioned bucket) gets "" (Glue arguments are strings).
CHECK_INPUT = "CheckInput"
INVALID_INPUT = "InvalidInput"
NO_VERSION = "UnversionedObject"
INPUT_STATES = (CHECK_INPUT, INVALID_INPUT, NO_VERSION)
INVALID_INPUT_ERROR = "Pipeline.InvalidInput"

FAILURE_NOTICE = "NotifyFailure"
# The failure branch's first state: the failure's metric (chalicelib/monitoring.py), then the notice.
PUBLISH_FAILURE_METRICS = "PublishFailureMetrics"
CHOOSE_FAIL_STATE = "ChooseFailState"
FAILED = "Failed"
FAILED_ON_STATES_ERROR = "FailedOnStatesError"
# The shared failure branch: entered from every step, so it belongs to none of them.
FAILURE_STATES = (PUBLISH_FAILURE_METRICS, FAILURE_NOTICE, CHOOSE_FAIL_STATE, FAILED, FAILED_ON_STATES_ERROR)

# Characters States.Format treats specially in a literal. Literals here avoid them rather than
# escape them: moto 5.2.5 parses intrinsic functions from the raw JSON text (JSON escapes not
# decoded), so no escape sequence reads the same there and on AWS. Text that needs them (the
# SQL's quotes) travels as state data. A newline is fine: JSON's "\n" becomes a newline on both.
_INTRINSIC_RESERVED = "'{}\\"

# -- error names ----------------------------------------------------------------------------


def _sdk_errors(service, names):
    """aws-sdk integration error names in both spellings: AWS reports ``Glue.X``, moto ``glue.X``."""
    errors = []
    for name in names:
        errors.append("%s.%s" % (service, name))
        errors.append("%s.%s" % (service.lower(), name))
    return errors


# A task that timed out on a quick API call is worth another try; a job or query that ran into
# its timeout is not (it would only run as long again).
TIMEOUT = "States.Timeout"
# What a failed Glue job run (.sync) or Athena query reports. In a Retry it matches every error
# but States.Timeout, so its retrier comes after the specific ones.
TASK_FAILED = "States.TaskFailed"
# A job at its MaxConcurrentRuns (GLUE_MAX_CONCURRENT_RUNS): the run waits its turn (see
# QUEUED_RUN_RETRY).
CONCURRENT_RUNS_EXCEEDED = "Glue.ConcurrentRunsExceededException"
GLUE_JOB_TRANSIENT_ERRORS = [
    "Glue.ThrottlingException",
    "Glue.InternalServiceException",
    "Glue.OperationTimeoutException",
]
GLUE_API_TRANSIENT_ERRORS = _sdk_errors(
    "Glue", ["ThrottlingException", "InternalServiceException", "OperationTimeoutException"]
) + [TIMEOUT]
CRAWLER_RUNNING_ERRORS = _sdk_errors("Glue", ["CrawlerRunningException"])
S3_TRANSIENT_ERRORS = _sdk_errors(
    "S3", ["S3Exception", "SlowDownException", "InternalErrorException"]) + [TIMEOUT]
# The account's quota of active queries is reached (see QUEUED_QUERY_RETRY).
ATHENA_QUOTA_EXCEEDED = "Athena.TooManyRequestsException"
ATHENA_INTERNAL_ERROR = "Athena.InternalServerException"
ATHENA_TRANSIENT_ERRORS = [ATHENA_QUOTA_EXCEEDED, ATHENA_INTERNAL_ERROR]
ATHENA_API_TRANSIENT_ERRORS = ATHENA_TRANSIENT_ERRORS + [TIMEOUT]
SNS_TRANSIENT_ERRORS = ["SNS.ThrottledException", "SNS.InternalErrorException", TIMEOUT]
CLOUDWATCH_TRANSIENT_ERRORS = _sdk_errors(
    "CloudWatch", ["LimitExceededException", "InternalServiceFaultException"]) + [TIMEOUT]

# Notifications carry these SNS message attributes, so a subscription can filter on them
# (e.g. an e-mail subscription for failures only).
OUTCOME_ATTRIBUTE = "outcome"
OUTCOME_SUCCEEDED = "succeeded"
OUTCOME_FAILED = "failed"


def _retry(errors, interval, attempts, backoff=2.0, max_delay=None):
    """One Retry entry with full jitter (IntervalSeconds is its upper bound)."""
    retrier = {
        "ErrorEquals": list(errors),
        "IntervalSeconds": interval,
        "MaxAttempts": attempts,
        "BackoffRate": backoff,
        # Concurrent executions retrying the same crawler or job spread out instead of colliding.
        "JitterStrategy": "FULL",
    }
    if max_delay is not None:
        retrier["MaxDelaySeconds"] = max_delay
    return retrier


# A failed job run or query is run once more, soon: S3 or Athena hiccups, a job killed by a
# lost node, make one fail now and then, and the outputs are idempotent. A second failure is final.
FAILED_ONCE_RETRY = _retry([TASK_FAILED], interval=2, attempts=1)
# Errors no retry can fix (a missing job, a role without permission, bad arguments): they come
# before FAILED_ONCE_RETRY, whose States.TaskFailed would match them too, and are not retried.
GLUE_JOB_PERMANENT_ERRORS = ["Glue.EntityNotFoundException", "Glue.AccessDeniedException",
                             "Glue.InvalidInputException"]
NO_RETRY_GLUE = {"ErrorEquals": GLUE_JOB_PERMANENT_ERRORS, "MaxAttempts": 0}
# A backfill lands hundreds of files at once and each run waits for a free slot of its job: with
# 8 attempts (about 14 minutes in all), 150 files landing together here already took 6 of them,
# and on Glue, where a run lasts minutes, such a backfill would fail executions. So a run waits
# as long as the execution may last (EXECUTION_TIMEOUT_SECONDS), asking again at most every 2
# minutes (with full jitter, 1 a minute on average: 1,000 waiting runs ask about 17 times a second).
QUEUED_RUN_RETRY = _retry([CONCURRENT_RUNS_EXCEEDED], interval=20, attempts=250, backoff=1.5, max_delay=120)
GLUE_JOB_RETRY = [QUEUED_RUN_RETRY, _retry(GLUE_JOB_TRANSIENT_ERRORS, interval=30, attempts=8, max_delay=300),
                  NO_RETRY_GLUE, FAILED_ONCE_RETRY]
GLUE_API_RETRY = _retry(GLUE_API_TRANSIENT_ERRORS, interval=2, attempts=5)
S3_RETRY = _retry(S3_TRANSIENT_ERRORS, interval=2, attempts=3)
ATHENA_API_RETRY = _retry(ATHENA_API_TRANSIENT_ERRORS, interval=5, attempts=5)
# Athena's quota of active DML queries (running and queued, per account and Region; 25 in
# Athena's own example, ATHENA_MAX_CONCURRENT_QUERIES locally) is shared with the analysts'
# queries. A totals query past it waits its turn for about an hour (5 s x1.5 up to 60 s, full
# jitter) instead of failing an execution whose rows are already committed.
QUEUED_QUERY_RETRY = _retry([ATHENA_QUOTA_EXCEEDED], interval=5, attempts=125, backoff=1.5,
                            max_delay=60)
# SNS throttles for seconds, not minutes: 1 + 2 + 4 s at most before the notification is given up.
SNS_RETRY = _retry(SNS_TRANSIENT_ERRORS, interval=1, attempts=3)
CLOUDWATCH_RETRY = _retry(CLOUDWATCH_TRANSIENT_ERRORS, interval=1, attempts=3)
NO_RETRY_ATHENA = {"ErrorEquals": ["Athena.InvalidRequestException", "Athena.AccessDeniedException"],
                   "MaxAttempts": 0}


# -- small helpers --------------------------------------------------------------------------


def _check_literal(text):
    """Raises ValueError if ``text`` cannot be a States.Format literal as it stands."""
    # ${Placeholder} tokens are replaced before any engine reads the definition.
    for name in PLACEHOLDERS:
        text = text.replace("${%s}" % name, "")
    bad = sorted(set(c for c in text if c in _INTRINSIC_RESERVED))
    if bad:
        raise ValueError("States.Format literal %r contains %s: pass such text as state data"
                         % (text, " ".join(bad)))


def _format(text, *args):
    """A ``States.Format`` call with literal ``text`` (one ``{}`` per argument)."""
    pieces = text.split("{}")
    if len(pieces) != len(args) + 1:
        raise ValueError("States.Format(%r) has %d {} for %d arguments"
                         % (text, len(pieces) - 1, len(args)))
    for piece in pieces:
        _check_literal(piece)
    return "States.Format(%s)" % ", ".join(["'%s'" % text] + list(args))


def _per_source(template):
    """States.Format of a ``naming.output_keys("{}")``-style template with ``$.source_id``."""
    return _format(template, "$.source_id")


def _camel(step):
    return "".join(part.capitalize() for part in step.split("-"))


def failure_recorder(step):
    """Name of the Pass state that records ``step`` as the failed step."""
    return "%sFailed" % _camel(step)


class _Builder:
    """Collects states in flow order and the step each state belongs to."""

    def __init__(self, names):
        self.names = names
        self.states = {}
        self.state_steps = {}

    def add(self, step, name, state):
        if name in self.states:
            raise ValueError("duplicate state %s" % name)
        self.states[name] = state
        if step is not None:
            self.state_steps[name] = step

    def task(self, step, name, resource, parameters, next_state, timeout, retry, result_path,
             result_selector=None, catch=()):
        """Adds a Task; ``catch``: catchers tried before the step's catch-all."""
        state = {
            "Type": "Task",
            "Resource": resource,
            "Parameters": parameters,
            "TimeoutSeconds": timeout,
            "Retry": retry,
            "Catch": list(catch) + [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error",
                                     "Next": failure_recorder(step)}],
            "Next": next_state,
        }
        if result_selector is not None:
            state["ResultSelector"] = result_selector
        state["ResultPath"] = result_path  # None (JSON null) discards the result
        self.add(step, name, state)


# -- the steps ------------------------------------------------------------------------------


def _job_run_selector():
    # The full JobRun holds datetimes and grows with the arguments: keep what a reader needs.
    return {"JobRunId.$": "$.Id", "JobRunState.$": "$.JobRunState", "ExecutionTime.$": "$.ExecutionTime"}


def _glue_job(b, step, name, job, arguments, result_path, next_state):
    b.task(
        step, name, "arn:aws:states:::glue:startJobRun.sync",
        {"JobName": job, "Arguments": arguments}, next_state,
        timeout=GLUE_JOB_TIMEOUT_SECONDS[step],
        retry=GLUE_JOB_RETRY,
        result_selector=_job_run_selector(),
        result_path=result_path,
    )


def _poll_until_ready(b, step, crawler, wait, get_state, is_ready, when_ready):
    """A poll loop: ``wait`` $.poll_seconds, read ``crawler``'s state into $.crawl, and go on to
    ``when_ready`` once it is READY, else back to ``wait``."""
    b.add(step, wait, {"Type": "Wait", "SecondsPath": "$.poll_seconds", "Next": get_state})
    # getCrawler returns datetimes (CreationTime, LastCrawl.StartTime): select strings only.
    b.task(step, get_state, "arn:aws:states:::aws-sdk:glue:getCrawler", {"Name": crawler}, is_ready,
           timeout=API_CALL_TIMEOUT_SECONDS, retry=[GLUE_API_RETRY],
           result_selector={"Name.$": "$.Crawler.Name", "State.$": "$.Crawler.State"},
           result_path="$.crawl")
    b.add(step, is_ready, {
        "Type": "Choice",
        "Choices": [{"Variable": "$.crawl.State", "StringEquals": "READY", "Next": when_ready}],
        "Default": wait,
    })


def _crawl(b, step, label, crawler, job, job_arguments, next_state):
    """The crawl step of one zone.

    Reads the decision the job wrote; when no crawl is needed (the job registered its partitions)
    goes straight on. Otherwise starts ``crawler``, polls until READY and continues only if its
    last crawl SUCCEEDED (a failed crawl is started once more). When another execution's crawl is
    running, waits for it in a poll loop, then has ``job`` check the catalog again
    (``--catalog_only``): that crawl may have made the table, and our partitions, or not.
    """
    read, needed = "Read%sCatalogDecision" % label, "Is%sCrawlNeeded" % label
    start, wait = "Start%sCrawl" % label, "WaitFor%sCrawl" % label
    get_state, is_ready = "Get%sCrawlerState" % label, "Is%sCrawlerReady" % label
    get_result, succeeded = "Get%sCrawlResult" % label, "Did%sCrawlSucceed" % label
    restart, restarted = "Restart%sCrawl" % label, "$.%s_crawl_restarted" % label.lower()
    wait_other, get_other = "WaitForRunning%sCrawl" % label, "GetRunning%sCrawlerState" % label
    other_done, recheck = "IsRunning%sCrawlDone" % label, "Recheck%sCatalog" % label
    not_succeeded = "%sCrawlDidNotSucceed" % label
    decision_key = output_keys("{}")["%s_catalog" % label.lower()]

    b.task(step, read, "arn:aws:states:::aws-sdk:s3:getObject",
           {"Bucket": b.names["LakeBucket"], "Key.$": _per_source(decision_key)}, needed,
           timeout=API_CALL_TIMEOUT_SECONDS, retry=[S3_RETRY],
           # Body only: the rest of GetObject's output holds datetimes (LastModified).
           result_selector={"decision.$": "States.StringToJson($.Body)"},
           result_path="$.catalog")
    b.add(step, needed, {
        "Type": "Choice",
        "Choices": [
            # Another execution's crawl was running when the job looked: ours would likely find
            # nothing new, so wait for that one and check again.
            {"And": [{"Variable": "$.catalog.decision.crawl", "BooleanEquals": True},
                     {"Variable": "$.catalog.decision.crawler_running", "BooleanEquals": True}],
             "Next": wait_other},
            {"Variable": "$.catalog.decision.crawl", "BooleanEquals": True, "Next": start},
        ],
        "Default": next_state,
    })
    b.task(step, start, "arn:aws:states:::aws-sdk:glue:startCrawler", {"Name": crawler}, wait,
           timeout=API_CALL_TIMEOUT_SECONDS, retry=[GLUE_API_RETRY],
           # Another execution's crawl is running: wait for it (not a fixed retry interval, which
           # would serialize executions), then check again.
           catch=[{"ErrorEquals": CRAWLER_RUNNING_ERRORS, "ResultPath": "$.crawl_conflict",
                   "Next": wait_other}],
           result_path=None)
    _poll_until_ready(b, step, crawler, wait, get_state, is_ready, get_result)
    # LastCrawl is absent until a crawler's first crawl ends, so it is read only once READY.
    b.task(step, get_result, "arn:aws:states:::aws-sdk:glue:getCrawler", {"Name": crawler}, succeeded,
           timeout=API_CALL_TIMEOUT_SECONDS, retry=[GLUE_API_RETRY],
           result_selector={"Name.$": "$.Crawler.Name", "State.$": "$.Crawler.State",
                            "Status.$": "$.Crawler.LastCrawl.Status"},
           result_path="$.crawl")
    b.add(step, succeeded, {
        "Type": "Choice",
        "Choices": [
            {"Variable": "$.crawl.Status", "StringEquals": "SUCCEEDED", "Next": next_state},
            # Crawls fail transiently too (throttled catalog, S3 errors): one more, then give up.
            {"Variable": restarted, "IsPresent": False, "Next": restart},
        ],
        "Default": not_succeeded,
    })
    b.add(step, restart, {"Type": "Pass", "Result": True, "ResultPath": restarted, "Next": start})
    b.add(step, not_succeeded, {
        "Type": "Pass",
        "Parameters": {
            "step": step,
            "error": "CrawlFailed",
            "cause.$": _format("Crawler {} finished with status {}", "$.crawl.Name", "$.crawl.Status"),
        },
        "ResultPath": "$.failure",
        "Next": PUBLISH_FAILURE_METRICS,
    })
    # Someone else's crawl is polled like our own, so the local stage (0 s) never sleeps and AWS
    # polls every $.poll_seconds.
    _poll_until_ready(b, step, crawler, wait_other, get_other, other_done, recheck)
    arguments = dict(job_arguments)
    arguments["--catalog_only"] = "true"
    b.task(step, recheck, "arn:aws:states:::glue:startJobRun.sync",
           {"JobName": job, "Arguments": arguments, "Timeout": CATALOG_CHECK_JOB_TIMEOUT_MINUTES}, read,
           timeout=CATALOG_CHECK_TIMEOUT_SECONDS, retry=GLUE_JOB_RETRY,
           result_selector=_job_run_selector(), result_path="$.catalog_check_run")


def _query(b, next_state):
    n = b.names
    step = "query"
    b.task(step, "ReadSummary", "arn:aws:states:::aws-sdk:s3:getObject",
           {"Bucket": n["LakeBucket"], "Key.$": _per_source(output_keys("{}")["manifest"])},
           "PrepareTotalsQuery",
           timeout=API_CALL_TIMEOUT_SECONDS,
           retry=[S3_RETRY],
           # Body only: the rest of GetObject's output holds datetimes (LastModified).
           result_selector={"document.$": "States.StringToJson($.Body)"},
           result_path="$.summary")
    # The SQL quotes the source id, and a quote cannot be written in a States.Format literal
    # the same way for AWS and moto: the template travels as data and is the format argument.
    b.add(step, "PrepareTotalsQuery", {
        "Type": "Pass",
        "Result": {"template": queries.totals_sql(n["GlueDatabase"], n["ProcessedTable"], "{}")},
        "ResultPath": "$.query",
        "Next": "RunTotalsQuery",
    })
    b.task(step, "RunTotalsQuery", "arn:aws:states:::athena:startQueryExecution.sync",
           {
               "QueryString.$": "States.Format($.query.template, $.source_id)",
               "WorkGroup": n["AthenaWorkGroup"],
               "QueryExecutionContext": {"Database": n["GlueDatabase"]},
               "ResultConfiguration": {
                   "OutputLocation": "s3://%s/%s" % (n["LakeBucket"], ATHENA_RESULTS_PREFIX)},
           },
           "GetTotals",
           timeout=ATHENA_QUERY_TIMEOUT_SECONDS,
           retry=[QUEUED_QUERY_RETRY, _retry([ATHENA_INTERNAL_ERROR], interval=5, attempts=5),
                  NO_RETRY_ATHENA, FAILED_ONCE_RETRY],
           # DataScannedInBytes: what the query cost (Athena bills by bytes scanned); it stays
           # flat as the table grows because the query is pruned to this source's data files.
           result_selector={"QueryExecutionId.$": "$.QueryExecution.QueryExecutionId",
                            "DataScannedInBytes.$": "$.QueryExecution.Statistics.DataScannedInBytes",
                            "TotalExecutionTimeInMillis.$":
                                "$.QueryExecution.Statistics.TotalExecutionTimeInMillis"},
           result_path="$.query.execution")
    b.task(step, "GetTotals", "arn:aws:states:::athena:getQueryResults",
           # The header row and the one row of totals.
           {"QueryExecutionId.$": "$.query.execution.QueryExecutionId", "MaxResults": 2},
           next_state,
           timeout=API_CALL_TIMEOUT_SECONDS,
           retry=[ATHENA_API_RETRY],
           # [*] yields a list on AWS and moto alike (moto turns Rows[1].Data[0].X into a list).
           # A NULL cell has no VarCharValue and [*] skips it; only the last column
           # (cost per mile) can be NULL, so the values still line up with the columns.
           result_selector={"columns.$": "$.ResultSet.Rows[0].Data[*].VarCharValue",
                            "values.$": "$.ResultSet.Rows[1].Data[*].VarCharValue"},
           result_path="$.query.results")


def _notify(b):
    n = b.names
    step = "notify"
    b.add(step, "SummarizeRun", {
        "Type": "Pass",
        "Parameters": {
            "source.$": "$.source_uri",
            "source_id.$": "$.source_id",
            "rows.$": "$.summary.document.rows",
            "superseded.$": "$.summary.document.superseded",
            "query": {
                "columns.$": "$.query.results.columns",
                "values.$": "$.query.results.values",
                "query_execution_id.$": "$.query.execution.QueryExecutionId",
                "scanned_bytes.$": "$.query.execution.DataScannedInBytes",
            },
        },
        "ResultPath": "$.result",
        "Next": "Notify",
    })
    # Readable lines, each total labelled as the original query named it, then the JSON.
    text = ("Shipping ETL processed {}\nSource id: {}\n"
            "Rows read: {}, valid: {}, quarantined: {}, duplicates: {}"
            + "".join("\n%s: {}" % alias for alias, _field, _key in TOTALS)
            + "\nAthena query: {}\n\n{}")
    args = (["$.result.source", "$.result.source_id", "$.result.rows.read", "$.result.rows.valid",
             "$.result.rows.quarantined", "$.result.rows.duplicates"]
            + ["States.ArrayGetItem($.result.query.values, %d)" % i for i in range(len(TOTALS))]
            + ["$.result.query.query_execution_id", "States.JsonToString($.result)"])
    b.task(step, "Notify", "arn:aws:states:::sns:publish",
           {
               "TopicArn": n["TopicArn"],
               "Subject.$": _format("Shipping ETL: source {} processed", "$.source_id"),
               "Message.$": _format(text, *args),
               "MessageAttributes": _message_attributes(OUTCOME_SUCCEEDED, "$.source_id"),
           },
           "PublishRunMetrics",
           timeout=API_CALL_TIMEOUT_SECONDS,
           retry=[SNS_RETRY],
           result_selector={"notification_id.$": "$.MessageId"},
           result_path="$.published")
    _publish_metrics(b, step, "PublishRunMetrics", _run_metric_data(n["Stage"]), "Done")
    b.add(step, "Done", {
        "Type": "Pass",
        "Parameters": {"output.$": "States.JsonMerge($.result, $.published, false)"},
        "OutputPath": "$.output",
        "End": True,
    })


def _metric_datum(name, unit, value, dimensions):
    datum = {"MetricName": name, "Unit": unit, "Dimensions": dimensions}
    if isinstance(value, str):
        datum["Value.$"] = value
    else:
        datum["Value"] = value
    return datum


def _stage_and_producer(stage):
    """The two dimension sets every figure is published with (chalicelib/monitoring.py)."""
    return ([{"Name": "Stage", "Value": stage}],
            [{"Name": "Stage", "Value": stage}, {"Name": "Producer", "Value.$": "$.producer"}])


def _run_metric_data(stage):
    data = []
    for name, unit, path in monitoring.RUN_METRICS:
        for dimensions in _stage_and_producer(stage):
            data.append(_metric_datum(name, unit, path or 1, dimensions))
    for step, path in (("json-to-parquet", "$.json_to_parquet_run.ExecutionTime"),
                       ("normalize", "$.normalize_run.ExecutionTime")):
        data.append(_metric_datum(monitoring.STEP_SECONDS, "Seconds", path,
                                  [{"Name": "Stage", "Value": stage}, {"Name": "Step", "Value": step}]))
    data.append(_metric_datum(monitoring.STEP_MILLISECONDS, "Milliseconds",
                              "$.query.execution.TotalExecutionTimeInMillis",
                              [{"Name": "Stage", "Value": stage}, {"Name": "Step", "Value": "query"}]))
    return data


def _failure_metric_data(stage):
    by_stage, by_producer = _stage_and_producer(stage)
    by_step = by_stage + [{"Name": "Step", "Value.$": "$.failure.step"}]
    return [_metric_datum(monitoring.EXECUTIONS_FAILED, "Count", 1, dimensions)
            for dimensions in (by_stage, by_producer, by_step)]


def _publish_metrics(b, step, name, metric_data, next_state):
    """One PutMetricData of the execution's figures. Metrics must never fail the data's
    processing: an error is kept in $.metrics_error and the flow goes on."""
    b.add(step, name, {
        "Type": "Task",
        "Resource": "arn:aws:states:::aws-sdk:cloudwatch:putMetricData",
        "Parameters": {"Namespace": monitoring.NAMESPACE, "MetricData": metric_data},
        "TimeoutSeconds": API_CALL_TIMEOUT_SECONDS,
        "Retry": [CLOUDWATCH_RETRY],
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.metrics_error", "Next": next_state}],
        "ResultPath": None,
        "Next": next_state,
    })


def _message_attributes(outcome, source_id_path, step_path=None):
    attributes = {
        OUTCOME_ATTRIBUTE: {"DataType": "String", "StringValue": outcome},
        "source_id": {"DataType": "String", "StringValue.$": source_id_path},
    }
    if step_path is not None:
        attributes["step"] = {"DataType": "String", "StringValue.$": step_path}
    return attributes


def _failure_branch(b):
    for step in STEPS:
        b.add(step, failure_recorder(step), {
            "Type": "Pass",
            "Parameters": {"step": step, "error.$": "$.error.Error", "cause.$": "$.error.Cause"},
            "ResultPath": "$.failure",
            "Next": PUBLISH_FAILURE_METRICS,
        })
    _publish_metrics(b, None, PUBLISH_FAILURE_METRICS, _failure_metric_data(b.names["Stage"]), FAILURE_NOTICE)
    message = _format(
        "Shipping ETL failed at step {}\nError: {}\nCause: {}\nSource: {}\nExecution: {}\n\n{}",
        "$.failure.step", "$.failure.error", "$.failure.cause", "$.source_uri",
        "$$.Execution.Id", "States.JsonToString($.failure)")
    b.add(None, FAILURE_NOTICE, {
        "Type": "Task",
        "Resource": "arn:aws:states:::sns:publish",
        "Parameters": {
            "TopicArn": b.names["TopicArn"],
            "Subject.$": _format("Shipping ETL: step {} failed for source {}",
                                 "$.failure.step", "$.source_id"),
            "Message.$": message,
            "MessageAttributes": _message_attributes(OUTCOME_FAILED, "$.source_id", "$.failure.step"),
        },
        "TimeoutSeconds": API_CALL_TIMEOUT_SECONDS,
        "Retry": [SNS_RETRY],
        # Losing the notification must not hide the failure: go on to the Fail state.
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.notify_error",
                   "Next": CHOOSE_FAIL_STATE}],
        "ResultPath": None,
        "Next": CHOOSE_FAIL_STATE,
    })
    b.add(None, CHOOSE_FAIL_STATE, {
        "Type": "Choice",
        "Choices": [{"Variable": "$.failure.error", "StringMatches": RESERVED_ERROR_PREFIX + "*",
                     "Next": FAILED_ON_STATES_ERROR}],
        "Default": FAILED,
    })
    cause = "States.JsonToString($.failure)"
    b.add(None, FAILED, {"Type": "Fail", "ErrorPath": "$.failure.error", "CausePath": cause})
    b.add(None, FAILED_ON_STATES_ERROR, {
        "Type": "Fail",
        "ErrorPath": "States.ArrayGetItem(States.StringSplit($.failure.error, '.'), 1)",
        "CausePath": cause,
    })


def _not_matching(variable, *patterns):
    return [{"Not": {"Variable": variable, "StringMatches": p}} for p in patterns]


def _check_input(b, first_state):
    """The Choice that checks the input's identifiers (chalicelib.identifiers; the jobs check
    the exact shapes again when they parse their arguments), as far as ASL's wildcards can."""
    valid = {"And": [
        {"Variable": "$.source_id", "IsPresent": True},
        {"Variable": "$.source_id", "IsString": True},
        *_not_matching("$.source_id", "*'*", "*\\\\*", "* *", "*/*", "*\"*"),
        {"Variable": "$.key", "IsPresent": True},
        {"Variable": "$.key", "StringMatches": "incoming/*"},
        *_not_matching("$.key", "*/../*", "*\\\\*"),
        {"Variable": "$.source_uri", "IsPresent": True},
        {"Variable": "$.source_uri", "StringMatches": "s3://*/incoming/*"},
        *_not_matching("$.source_uri", "*/../*", "*\\\\*"),
    ]}
    unversioned = {"Or": [{"Variable": "$.version_id", "IsPresent": False},
                          {"Variable": "$.version_id", "IsNull": True}]}
    step = STEPS[0]  # the input check belongs to the first step, whose job reads the input
    b.add(step, CHECK_INPUT, {
        "Type": "Choice",
        "Choices": [
            {"Not": valid, "Next": INVALID_INPUT},
            {"And": [{"Variable": "$.version_id", "IsPresent": True},
                     {"Variable": "$.version_id", "IsString": True}], "Next": first_state},
            {**unversioned, "Next": NO_VERSION},
        ],
        "Default": INVALID_INPUT,
    })
    b.add(step, NO_VERSION, {"Type": "Pass", "Result": "", "ResultPath": "$.version_id",
                             "Next": first_state})
    b.add(step, INVALID_INPUT, {
        "Type": "Fail", "Error": INVALID_INPUT_ERROR,
        "Cause": "The execution input's source_id, key, source_uri or version_id does not have "
                 "the shape the trigger gives them (chalicelib/identifiers.py): nothing was read.",
    })


CHECK_PRODUCER = "CheckProducer"
NO_PRODUCER = "NoProducer"


def _check_producer(b, next_state):
    """The trigger names the landing key's producer (chalicelib.naming.producer), the metrics'
    Producer dimension; an execution started without one gets "none"."""
    step = STEPS[0]
    b.add(step, CHECK_PRODUCER, {
        "Type": "Choice",
        "Choices": [{"And": [{"Variable": "$.producer", "IsPresent": True},
                             {"Variable": "$.producer", "IsString": True}], "Next": next_state}],
        "Default": NO_PRODUCER,
    })
    b.add(step, NO_PRODUCER, {"Type": "Pass", "Result": naming.NO_PRODUCER, "ResultPath": "$.producer",
                              "Next": next_state})


def _build(names):
    """(definition, {state name: step}) for the given names (real values or placeholders)."""
    missing = sorted(set(PLACEHOLDERS) - set(names))
    if missing:
        raise ValueError("names missing: %s" % ", ".join(missing))
    b = _Builder(names)
    _check_input(b, CHECK_PRODUCER)
    _check_producer(b, "ConvertToParquet")
    lake = names["LakeBucket"]
    keys = output_keys("{}")

    def lake_uri(key):
        return _per_source("s3://%s/%s" % (lake, key))

    def catalog_arguments(table, crawler, decision_key):
        # Where the job checks its output against the catalog and writes its decision.
        return {
            "--catalog_database": names["GlueDatabase"],
            "--catalog_table": table,
            "--catalog_crawler": crawler,
            "--catalog_decision_uri.$": lake_uri(decision_key),
            "--catalog_region": names["Region"],
        }

    to_parquet = {
        "--source_uri.$": "$.source_uri",
        "--target_uri.$": lake_uri(keys["raw"]),
        "--quarantine_uri.$": lake_uri(keys["quarantine"]),
        "--source_id.$": "$.source_id",
        "--source_version_id.$": "$.version_id",
        # Named in every JSON log line of the run (chalicelib/jsonlog.py).
        "--execution_name.$": "$$.Execution.Name",
    }
    to_parquet.update(catalog_arguments(names["RawTable"], names["RawCrawler"], keys["raw_catalog"]))
    normalize = {
        "--source_uri.$": lake_uri(keys["raw"]),
        "--database": names["GlueDatabase"],
        "--table": names["ProcessedTable"],
        "--summary_uri.$": lake_uri(keys["manifest"]),
        "--source_id.$": "$.source_id",
        # The landing object (a new version of it replaces its rows) and which version this is.
        "--source_key.$": "$.source_uri",
        "--source_version_id.$": "$.version_id",  # "" for an unversioned object (CheckInput)
        "--region": names["Region"],
        "--execution_name.$": "$$.Execution.Name",
    }
    _glue_job(b, "json-to-parquet", "ConvertToParquet", names["JsonToParquetJob"], to_parquet,
              "$.json_to_parquet_run", "ReadRawCatalogDecision")
    _crawl(b, "crawl-raw", "Raw", names["RawCrawler"], names["JsonToParquetJob"], to_parquet, "Normalize")
    _glue_job(b, "normalize", "Normalize", names["NormalizeJob"], normalize, "$.normalize_run", "ReadSummary")
    _query(b, "SummarizeRun")
    _notify(b)
    _failure_branch(b)
    definition = {
        "Comment": "Shipping ETL: NDJSON landing object -> Parquet (raw) -> crawl -> normalized, "
                   "PII-free rows committed to the processed Iceberg table -> Athena totals -> SNS summary. "
                   "Generated by chalicelib/asl.py; do not edit by hand.",
        "StartAt": CHECK_INPUT,
        "TimeoutSeconds": EXECUTION_TIMEOUT_SECONDS,
        "States": b.states,
    }
    return definition, b.state_steps


def _placeholder_names():
    return {name: "${%s}" % name for name in PLACEHOLDERS}


# {state name: step} for every state outside FAILURE_STATES (each step's failure recorder
# belongs to its step). Fault injection and /status map states to steps with it.
STATE_STEPS = _build(_placeholder_names())[1]


def step_of(state_name):
    """The step a state belongs to, or None for the shared failure branch; KeyError if unknown."""
    if state_name in FAILURE_STATES:
        return None
    return STATE_STEPS[state_name]


def template_values(resources):
    """{placeholder: value} for a stage (``resources`` is a ``chalicelib.resources.Resources``)."""
    return {name: getattr(resources, attribute) for name, attribute in PLACEHOLDERS.items()}


def build_definition(resources):
    """The state machine definition (a dict) with the stage's real names and ARNs."""
    return _build(template_values(resources))[0]


def render_template():
    """The definition with ``${Placeholder}`` tokens: pretty JSON, sorted keys, trailing newline."""
    return json.dumps(_build(_placeholder_names())[0], indent=2, sort_keys=True) + "\n"


def fill_template(text, values):
    """``text`` (a rendered template) with every ``${Placeholder}`` replaced by its value.

    Raises ValueError naming the placeholders ``values`` lacks.
    """
    missing = sorted(name for name in PLACEHOLDERS if "${%s}" % name in text and name not in values)
    if missing:
        raise ValueError("no value for placeholder(s): %s" % ", ".join(missing))
    for name, value in values.items():
        # Placeholders sit inside JSON strings: escape the value as JSON string content.
        text = text.replace("${%s}" % name, json.dumps(str(value))[1:-1])
    return text


def main(argv=None, path=TEMPLATE_PATH):
    """Write (or with --check, verify) the rendered template at ``path``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m chalicelib.asl",
        description="Render the pipeline's state machine to %s." % os.path.relpath(path))
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the file differs from what chalicelib/asl.py builds")
    args = parser.parse_args(argv)
    rendered = render_template()
    if args.check:
        try:
            with open(path, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        if current != rendered:
            sys.stderr.write("%s is %s: run `python -m chalicelib.asl` and commit the result.\n"
                      % (path, "missing" if current is None else "out of date"))
            return 1
        sys.stdout.write("%s is up to date.\n" % path)
        return 0
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(rendered)
    sys.stdout.write("wrote %s\n" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
