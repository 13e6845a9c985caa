"""The one module that reaches into moto's internals.

moto records Glue job runs, crawls and Athena queries but runs none of them, and its Step Functions
interpreter cannot wait for a Glue job or an Athena query (``.sync``). ``install()`` patches exactly
those places so that the engines given to it do the work:

- ``GlueBackend.start_job_run``: the run is created RUNNING; ``job_runner.run(job, arguments)``
  executes it on a background thread; the run ends SUCCEEDED or FAILED (with ErrorMessage,
  CompletedOn and ExecutionTime as Glue reports them).
- ``GlueBackend.start_crawler``: the crawler is RUNNING while ``crawler.crawl(definition)`` runs on a
  background thread, then READY with ``LastCrawl`` {Status SUCCEEDED|FAILED, ErrorMessage, ...}.
- ``AthenaBackend.start_query_execution``: ``query_engine.execute(sql, database, output_location)``
  (``parameters=`` the ExecutionParameters when given) runs the statement on a background thread
  (QUEUED -> RUNNING -> SUCCEEDED|FAILED with StateChangeReason and AthenaError); the result set
  is stored where GetQueryResults reads it, and GetQueryExecution reports the engine's
  StatementType, result file, DataScannedInBytes and DataManifestLocation.
- ``AthenaResponse.get_query_results``: pages as Athena does (at most 1,000 rows a page, the
  header row counting on the first, a signed NextToken valid only for its own query; an
  unfinished or failed query answers InvalidRequestException).
- ``GlueResponse.update_table``: Glue's optimistic locking of table versions. AWS refuses an
  UpdateTable whose ``VersionId`` is not the table's current version
  (ConcurrentModificationException); moto 5.2.5 ignores ``VersionId``, so two Iceberg commits
  from the same base both "won" and the first was lost. The check and the update run under one
  lock, as one step.
- ``moto.s3.notifications._get_s3_event``: an S3 event of a versioned bucket names the object's
  ``versionId`` (and a ``sequencer``), as S3's do; moto leaves both out.
- ``threaded_server``: moto's WSGI app over HTTPS (local.https_server, not moto's own server), wrapped by
  ``local.lockdown.LoopbackOnly`` (no CORS, loopback Host and Origin only).
- ``SNSBackend.publish`` (only when a ``publish_fault`` is given): a publish the fault names is
  refused with SNS's throttling error (``Throttled``), before anything is delivered.
- Speed, not behaviour (``install(..., speed=False)`` or ``LOCAL_MOTO_SPEED_PATCHES=0`` leaves
  them out): Step Functions parses a definition's ASL once (moto's pure-Python ANTLR
  parser runs again for every execution; the evaluation components are still built afresh for
  each) and each JSONPath once (jsonpath-ng builds its parser tables on every ``parse``); Task
  states reuse one boto3 client per service (moto makes a new one, with a new connection, for
  every call); the server's dispatcher lists moto's package folder once instead of on every
  request (under a global lock). With twenty executions at once these dominated the local
  stack's CPU time. S3 decodes an ``aws-chunked`` upload body in linear time (moto's decoder
  is quadratic: a 260 MB ``put_object`` took 23 s). A ``.sync`` task (Glue job run, Athena
  query) is checked again when a job run or query ends (at least every second) instead of
  every 0.5 s: AWS's ``.sync``
  integrations follow events rather than a fixed interval, and a 10-row file's jobs and query
  each waited up to half a second for moto's next check.
- Step Functions: ``glue:startJobRun.sync`` works (moto's callback bug is avoided) and
  ``athena:startQueryExecution.sync`` is a supported integration; both fail the task with
  ``States.TaskFailed`` when the run/query fails, as AWS does, and a retried attempt gets a
  task token of its own (moto reuses the first attempt's, and times the retry out at once).

All of this is private moto API, so moto is pinned exactly (requirements-dev.txt) and
``check_hook_points()`` fails loudly, naming what moved, when an upgrade changes any of it.
"""
import datetime
import functools
import importlib
import json
import logging
import threading
import time

MOTO_VERSION = "5.2.5"  # the version these hooks were written against (pinned in requirements-dev.txt)

LOG = logging.getLogger(__name__)

# Attribute set on moto's model objects (job run, crawl, query execution) that the hooks started.
_OUTCOME_ATTR = "local_stack_outcome"

# moto's state_manager models whose state the hooks drive by hand while installed: "manual"
# progression that never advances on its own.
_MANUAL_TRANSITION = {"progression": "manual", "times": 10 ** 9}
_MANAGED_MODELS = ("glue::job_run", "glue::crawl", "athena::execution")

_SFN_TASK = "moto.stepfunctions.parser.asl.component.state.exec.state_task"
_SFN_SERVICE = _SFN_TASK + ".service"

# (module, dotted attribute) pairs that install() relies on.
_HOOK_POINTS = (
    ("moto.glue.models", "GlueBackend.start_job_run"),
    ("moto.glue.models", "GlueBackend.get_job"),
    ("moto.glue.models", "GlueBackend.start_crawler"),
    ("moto.glue.models", "GlueBackend.get_crawler"),
    ("moto.glue.models", "FakeJob.as_dict"),
    ("moto.glue.models", "FakeJobRun.as_dict"),
    ("moto.glue.models", "FakeJobRun.status"),
    ("moto.glue.models", "FakeCrawler.as_dict"),
    ("moto.glue.models", "FakeCrawl.as_dict"),
    ("moto.glue.responses", "GlueResponse.update_table"),
    ("moto.glue.models", "FakeTable.update"),
    ("moto.glue.exceptions", "GlueClientError"),
    ("moto.athena.models", "AthenaBackend.start_query_execution"),
    ("moto.athena.models", "QueryResults"),
    ("moto.athena.models", "Execution.status"),
    ("moto.athena.responses", "AthenaResponse.get_query_execution"),
    ("moto.athena.responses", "AthenaResponse.get_query_results"),
    ("moto.athena.responses", "AthenaResponse.error"),
    ("moto.sns.models", "SNSBackend.publish"),
    ("moto.iam.access_control", "IAMRequestBase.check_action_permitted"),
    ("moto.iam.access_control", "IAMRequest"),
    ("moto.iam.access_control", "IAMPolicy.is_action_permitted"),
    ("moto.cloudwatch.responses", "CloudWatchResponse.put_metric_data"),
    ("moto.cloudwatch.models", "CloudWatchBackend.get_metric_statistics"),
    ("moto.s3.notifications", "_get_s3_event"),
    ("moto.moto_server.werkzeug_app", "DomainDispatcherApplication"),
    ("moto.moto_server.werkzeug_app", "create_backend_app"),
    ("moto.sns.exceptions", "SNSException"),
    ("moto.core.utils", "utcnow"),
    ("moto.core.config", "default_user_config"),
    ("moto.moto_api", "state_manager.set_transition"),
    ("moto.moto_api", "state_manager.unset_transition"),
    (_SFN_TASK + ".state_task_factory", "state_task_service_for"),
    (_SFN_SERVICE + ".state_task_service_aws_sdk", "StateTaskServiceAwsSdk._eval_service_task"),
    (_SFN_SERVICE + ".state_task_service_glue", "StateTaskServiceGlue._sync_to_start_job_run"),
    (_SFN_SERVICE + ".state_task_service_glue", "StateTaskServiceGlue._handle_start_job_run"),
    (_SFN_SERVICE + ".state_task_service_callback", "StateTaskServiceCallback._eval_integration_pattern"),
    (_SFN_SERVICE + ".state_task_service_callback", "StateTaskServiceCallback._build_sync_resolver"),
    (_SFN_SERVICE + ".state_task_service_callback", "StateTaskServiceCallback._from_error"),
    (_SFN_SERVICE + ".state_task_service_callback", "_DELAY_SECONDS_SYNC_CONDITION_CHECK"),
    ("moto.stepfunctions.parser.asl.eval.states", "ContextObject.update_task_token"),
    ("moto.stepfunctions.parser.asl.eval.callback.callback", "CallbackPoolManager.add"),
    (_SFN_SERVICE + ".resource", "ResourceCondition.Sync"),
    (_SFN_SERVICE + ".resource", "ResourceCondition.WaitForTaskToken"),
    ("moto.stepfunctions.parser.asl.utils.boto_client", "boto_client_for"),
    (_SFN_SERVICE + ".state_task_service_glue", "boto_client_for"),
    (_SFN_SERVICE + ".state_task_service_sns", "boto_client_for"),
    (_SFN_SERVICE + ".state_task_service_aws_sdk", "boto_client_for"),
    ("moto.settings", "moto_server_port"),
    ("moto.backends", "list_of_moto_modules"),
    ("moto.s3.responses", "S3Response._handle_encoded_body"),
    ("moto.stepfunctions.parser.asl.parse.asl_parser", "AmazonStateLanguageParser.parse"),
    ("moto.stepfunctions.parser.asl.parse.preprocessor", "Preprocessor"),
    ("moto.stepfunctions.parser.asl.utils.json_path", "parse"),
    ("moto.stepfunctions.parser.asl.component.common.path.result_path", "parse"),
    ("moto.stepfunctions.parser.asl.component.common.error_name.failure_event", "FailureEvent"),
    ("moto.stepfunctions.parser.asl.component.common.error_name.failure_event", "FailureEventException"),
    ("moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name", "CustomErrorName"),
    ("moto.stepfunctions.parser.asl.component.common.error_name.states_error_name", "StatesErrorName"),
    ("moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type",
     "StatesErrorNameType.StatesTaskFailed"),
    ("moto.stepfunctions.parser.asl.eval.event.event_detail", "EventDetails"),
    ("moto.stepfunctions.parser.api", "HistoryEventType.TaskFailed"),
    ("moto.stepfunctions.parser.api", "TaskFailedEventDetails"),
)


class HookPointMissing(RuntimeError):
    """moto no longer has something the local stack's hooks patch or use."""


class _Outcome:
    """What the hooks record about a run/crawl/query they started."""

    def __init__(self):
        self.started = time.time()
        self.finished = None
        self.error_message = None
        self.user_error = True  # Athena's ErrorCategory: user (2) unless the engine itself broke
        self.details = {}  # what a query reported: statement type, result file, bytes scanned, ...

    def finish(self, error_message=None):
        self.error_message = error_message
        self.finished = time.time()

    def elapsed_seconds(self):
        return (self.finished or time.time()) - self.started


# -- checking ---------------------------------------------------------------------------------


def _moto_version():
    try:
        from importlib.metadata import version

        return version("moto")
    except Exception:  # pragma: no cover - metadata missing only in broken installs
        return "unknown"


def _resolve(module_name, dotted):
    obj = importlib.import_module(module_name)
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _check_instance_attributes():
    """Attributes set in constructors, which a class-level check cannot see."""
    from moto.athena.models import AthenaBackend, Execution
    from moto.glue.models import FakeCrawl, FakeCrawler, FakeJobRun, GlueBackend

    glue = GlueBackend("us-east-1", "123456789012")
    samples = (
        ("moto.glue.models.GlueBackend", lambda: glue, ("jobs", "crawlers")),
        ("moto.glue.models.FakeJobRun", lambda: FakeJobRun(job_name="hook-check"),
         ("job_run_id", "arguments", "completed_on", "modified_on")),
        ("moto.glue.models.FakeCrawler",
         lambda: FakeCrawler("hook-check", "role", "db", "", {}, "", [], "", {}, {}, {}, "", "", {}, glue),
         ("crawls", "crawl_elapsed_time")),
        ("moto.glue.models.FakeCrawl", lambda: FakeCrawl("hook-check"),
         ("end_time", "start_time", "log_group", "log_stream", "message_prefix")),
        ("moto.athena.models.AthenaBackend", lambda: AthenaBackend("us-east-1", "123456789012"),
         ("executions", "query_results", "work_groups")),
        ("moto.athena.models.Execution",
         lambda: Execution(query="SELECT 1", context=None, config=None, workgroup=None, execution_parameters=None),
         ("id", "query", "config", "workgroup", "end_time")),
    )
    problems = []
    for name, make, attributes in samples:
        try:
            instance = make()
        except Exception as exc:
            problems.append("%s(...) (cannot construct: %s)" % (name, exc))
            continue
        problems.extend("%s().%s" % (name, attr) for attr in attributes if not hasattr(instance, attr))
    return problems


def check_hook_points():
    """Verify every moto attribute the hooks patch or use still exists.

    Returns None. Raises HookPointMissing naming each moved attribute and the installed moto
    version; fix local/moto_hooks.py for that version or pin moto back to MOTO_VERSION.
    """
    missing = []
    for module_name, dotted in _HOOK_POINTS:
        try:
            _resolve(module_name, dotted)
        except (ImportError, AttributeError):
            missing.append("%s.%s" % (module_name, dotted))
    if not missing:
        missing = _check_instance_attributes()
    if missing:
        raise HookPointMissing(
            "moto %s no longer has: %s. local/moto_hooks.py was written for moto %s: pin "
            "moto==%s (requirements-dev.txt) or update the hooks."
            % (_moto_version(), ", ".join(missing), MOTO_VERSION, MOTO_VERSION)
        )


# -- small helpers ----------------------------------------------------------------------------


def _json_safe(value):
    """A copy of a boto3 response with datetimes as epoch milliseconds, as Step Functions'
    optimised integrations return them (datetimes would also break moto's DescribeExecution)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return int(value.timestamp() * 1000)
    return value


def _start_thread(name, target, *args):
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread


def _describe_failure(exc):
    return "%s: %s" % (type(exc).__name__, exc)


# -- Glue job runs ----------------------------------------------------------------------------


def _job_run_hooks(job_runner):
    from moto.core.utils import utcnow
    from moto.glue.models import FakeJobRun, GlueBackend

    original_start = GlueBackend.start_job_run
    original_as_dict = FakeJobRun.as_dict

    def run_in_background(run, definition, arguments, outcome):
        try:
            succeeded, error_message = job_runner.run(definition, arguments)
        except Exception as exc:  # the runner broke: the run fails, the server lives on
            LOG.exception("job runner failed for %s", definition.get("Name"))
            succeeded, error_message = False, _describe_failure(exc)
        if not succeeded and not error_message:
            error_message = "Job run failed"
        outcome.finish(None if succeeded else error_message)
        run.completed_on = run.modified_on = utcnow()
        if run.status == "RUNNING":  # a stop request meanwhile keeps its own state
            run.status = "SUCCEEDED" if succeeded else "FAILED"
        _note_task_ended(run.job_run_id)

    def start_job_run(backend, name, *args, **kwargs):
        # moto checks the job's MaxConcurrentRuns against its runs STARTING or RUNNING
        # (ConcurrentRunsExceededException); one lock makes that check and the new run's state
        # one step, so concurrent starts cannot both pass it.
        with _job_start_lock:
            run_id = original_start(backend, name, *args, **kwargs)
            job = backend.get_job(name)
            run = next(r for r in job.job_runs if r.job_run_id == run_id)
            run.status = "RUNNING"
        outcome = _Outcome()
        setattr(run, _OUTCOME_ATTR, outcome)
        arguments = dict(run.arguments or {})
        # Glue itself passes these to every script.
        arguments.setdefault("--JOB_NAME", name)
        arguments["--JOB_RUN_ID"] = run_id
        _start_thread("glue-job-%s" % name, run_in_background, run, job.as_dict(), arguments, outcome)
        return run_id

    def job_run_as_dict(run):
        data = original_as_dict(run)
        outcome = getattr(run, _OUTCOME_ATTR, None)
        if outcome is None:
            return data
        data["ExecutionTime"] = int(round(outcome.elapsed_seconds()))
        if outcome.finished is None:
            data.pop("CompletedOn", None)
        if outcome.error_message:
            data["ErrorMessage"] = outcome.error_message
        return data

    return [(GlueBackend, "start_job_run", start_job_run), (FakeJobRun, "as_dict", job_run_as_dict)]


# -- Glue crawlers ----------------------------------------------------------------------------

# FakeCrawl keeps moto's own states (FakeCrawler.status understands only these); Glue's
# LastCrawl.Status names them differently.
_LAST_CRAWL_STATUS = {"COMPLETED": "SUCCEEDED", "STOPPED": "CANCELLED", "FAILED": "FAILED"}


def _crawler_hooks(crawler_engine):
    from moto.core.utils import utcnow
    from moto.glue.models import FakeCrawl, FakeCrawler, GlueBackend

    original_start = GlueBackend.start_crawler
    original_crawler_as_dict = FakeCrawler.as_dict
    original_crawl_as_dict = FakeCrawl.as_dict

    def crawl_in_background(crawler, crawl, definition, outcome):
        try:
            succeeded, error_message = crawler_engine.crawl(definition)
        except Exception as exc:
            LOG.exception("crawler failed for %s", definition.get("Name"))
            succeeded, error_message = False, _describe_failure(exc)
        if not succeeded and not error_message:
            error_message = "Crawl failed"
        outcome.finish(None if succeeded else error_message)
        crawl.end_time = utcnow()
        if crawl.status == "STOPPING":
            crawl.status = "STOPPED"
        else:
            crawl.status = "COMPLETED" if succeeded else "FAILED"
        crawler.crawl_elapsed_time = 0

    def start_crawler(backend, name):
        original_start(backend, name)  # raises CrawlerRunningException while a crawl runs
        crawler = backend.get_crawler(name)
        crawl = crawler.crawls[-1]
        crawl.status = "RUNNING"
        outcome = _Outcome()
        setattr(crawl, _OUTCOME_ATTR, outcome)
        definition = original_crawler_as_dict(crawler)
        _start_thread("glue-crawl-%s" % name, crawl_in_background, crawler, crawl, definition, outcome)

    def crawler_as_dict(crawler):
        data = original_crawler_as_dict(crawler)
        crawls = list(crawler.crawls)
        if crawls and getattr(crawls[-1], _OUTCOME_ATTR, None) is not None:
            current = crawls[-1]
            if current.status in ("RUNNING", "STOPPING"):
                # LastCrawl describes the last finished crawl, not the one in progress.
                data["CrawlElapsedTime"] = int(getattr(current, _OUTCOME_ATTR).elapsed_seconds() * 1000)
                crawls = crawls[:-1]
            data.pop("LastCrawl", None)
            if crawls:
                last = crawls[-1]
                last_crawl = {
                    "LogGroup": last.log_group,
                    "LogStream": last.log_stream,
                    "MessagePrefix": last.message_prefix,
                    "StartTime": last.start_time,
                    "Status": _LAST_CRAWL_STATUS.get(last.status, last.status),
                }
                outcome = getattr(last, _OUTCOME_ATTR, None)
                if outcome is not None and outcome.error_message:
                    last_crawl["ErrorMessage"] = outcome.error_message
                data["LastCrawl"] = last_crawl
        return data

    def crawl_as_dict(crawl):
        data = original_crawl_as_dict(crawl)
        outcome = getattr(crawl, _OUTCOME_ATTR, None)
        if outcome is not None and outcome.error_message:
            data["ErrorMessage"] = outcome.error_message
        return data

    return [
        (GlueBackend, "start_crawler", start_crawler),
        (FakeCrawler, "as_dict", crawler_as_dict),
        (FakeCrawl, "as_dict", crawl_as_dict),
    ]


# -- Glue table versions ------------------------------------------------------------------------


def _table_version_hooks():
    from moto.glue.exceptions import GlueClientError
    from moto.glue.responses import GlueResponse

    original_update = GlueResponse.update_table
    version_lock = threading.Lock()

    class ConcurrentModificationException(GlueClientError):
        def __init__(self, message):
            super().__init__("ConcurrentModificationException", message)

    def update_table(response):
        expected = response.parameters.get("VersionId")
        with version_lock:
            if expected:
                database_name = response.parameters.get("DatabaseName")
                table_name = (response.parameters.get("TableInput") or {}).get("Name")
                table = response.glue_backend.get_table(database_name, table_name)
                current = str(table._current_version)
                if str(expected) != current:
                    raise ConcurrentModificationException(
                        "Update table failed due to concurrent modifications: version %s is not the "
                        "current version %s of %s.%s" % (expected, current, database_name, table_name))
            return original_update(response)

    return [(GlueResponse, "update_table", update_table)]


# -- quotas -------------------------------------------------------------------------------------

_job_start_lock = threading.Lock()


class _QueryLimit:
    """Athena's limit on queries running at once (its account quota): a start past it is refused
    with TooManyRequestsException, as Athena refuses it. None: no limit."""

    def __init__(self):
        self._lock = threading.Lock()
        self.limit = None
        self.active = 0

    def acquire(self):
        from moto.core.exceptions import JsonRESTError

        with self._lock:
            if self.limit is not None and self.active >= self.limit:
                raise JsonRESTError(
                    "TooManyRequestsException",
                    "You have exceeded the limit for the number of queries you can run "
                    "concurrently (%d). Reduce the number of concurrent queries submitted by this "
                    "account. (Reason: CONCURRENT_QUERY_LIMIT_EXCEEDED)" % self.limit)
            self.active += 1

    def release(self):
        with self._lock:
            self.active = max(0, self.active - 1)


_athena_queries = _QueryLimit()


def set_athena_max_concurrent_queries(limit):
    """Queries the local Athena runs at once (None: unlimited). Returns the previous limit."""
    previous, _athena_queries.limit = _athena_queries.limit, limit
    return previous


# -- TLS: the server and the bucket policies' aws:SecureTransport ---------------------------------

_request_context = threading.local()


def threaded_server(ip_address, port, certificate=None, private_key=None, wrap=None):
    """moto's WSGI app served over HTTPS (``certificate``/``private_key``: PEM files) by
    local.https_server (keep-alive, a thread pool; moto's own server closes every connection),
    noting for each request whether it came over TLS (aws:SecureTransport), wrapped by ``wrap``
    when given (local.lockdown.LoopbackOnly: no CORS, loopback only)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    from local.https_server import HttpsServer

    app = DomainDispatcherApplication(create_backend_app)

    def noting_transport(environ, start_response):
        _request_context.secure = environ.get("wsgi.url_scheme") == "https"
        return app(environ, start_response)

    served = wrap(noting_transport) if wrap is not None else noting_transport
    return HttpsServer(served, ip_address, port, certificate, private_key)


def _condition_holds(operator, key, expected, context):
    """One condition of a bucket policy against the request's ``context`` (a key it lacks
    makes the condition false, as on AWS)."""
    if key not in context:
        return False
    actual = context[key]
    expected = expected if isinstance(expected, list) else [expected]
    if operator == "Bool":
        return any(str(value).lower() == actual for value in expected)
    if operator in ("StringEquals", "ArnEquals"):
        return actual in expected
    if operator in ("StringLike", "ArnLike"):
        import fnmatch

        return any(fnmatch.fnmatchcase(actual, value) for value in expected)
    return False


def _bucket_policy_hooks():
    """moto applies a bucket policy statement's Condition only for StringEquals, and denies
    when a condition does not match even on a Deny statement: the TLS-only policy
    (Deny if aws:SecureTransport is false) would deny every request. Here a statement applies
    only when all its conditions hold for the request (aws:SecureTransport from how it came)."""
    from moto.iam.access_control import IAMPolicyStatement, PermissionResult
    from moto.s3.models import FakeBucket

    def get_permission(bucket, action, resource):
        if bucket.policy is None:
            return PermissionResult.NEUTRAL
        context = {"aws:SecureTransport": "true" if getattr(_request_context, "secure", False) else "false"}
        statements = json.loads(bucket.policy.decode()).get("Statement", [])
        result = PermissionResult.NEUTRAL
        for statement in statements if isinstance(statements, list) else [statements]:
            conditions = statement.get("Condition") or {}
            if not all(_condition_holds(operator, key, expected, context)
                       for operator, values in conditions.items() for key, expected in values.items()):
                continue
            unconditional = {k: v for k, v in statement.items() if k != "Condition"}
            permission = IAMPolicyStatement(unconditional).is_action_permitted(action, resource)
            if permission == PermissionResult.DENIED:
                return permission
            if permission == PermissionResult.PERMITTED:
                result = permission
        return result

    return [(FakeBucket, "get_permission", get_permission)]


_tls = {"ca_bundle": None}  # set by install(): the server speaks HTTPS, trusted through this CA
# Credentials of the state machine's role for its Task states (enforce_iam()), else moto's own.
_task_credentials = {"value": None}


# -- IAM enforcement ------------------------------------------------------------------------------

ADMIN_ROLE = "local-stack-plumbing"


def enforce_iam(account_id, region, state_machine_role_arn=None):
    """Turn on moto's IAM enforcement for every later request. The stack's own plumbing keeps
    working with its fixed ``testing`` credentials, which become an assumed role allowed
    everything; every other caller needs credentials of a role (``role_credentials``), checked
    against that role's policies. ``state_machine_role_arn``: the Task states of every
    execution call AWS as that role. Returns None.

    What moto checks: the action, against every policy of the caller; S3 also the bucket and key
    ARNs and bucket policies. What it cannot: resource ARNs outside S3 (a Glue or Athena action is
    allowed for any resource once the action is), conditions other than the few this module
    evaluates, KMS key policies and grants, service-linked permissions (Athena reading data with
    the caller's rights), and trust policies of service principals.
    """
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam.models import iam_backends
    from moto.sts.models import sts_backends

    iam = iam_backends[account_id]["aws"]
    role_arn = "arn:aws:iam::%s:role/%s" % (account_id, ADMIN_ROLE)
    try:
        iam.get_role(ADMIN_ROLE)
    except Exception:  # noqa: BLE001 -- moto's NoSuchEntity
        iam.create_role(ADMIN_ROLE, json.dumps({"Version": "2012-10-17", "Statement": []}), "/", None,
                        "the local stack's own plumbing", [], None)
    iam.put_role_policy(ADMIN_ROLE, "everything", json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    sts = sts_backends[account_id]["aws"]
    if sts.get_assumed_role_from_access_key("testing") is None:
        plumbing = sts.assume_role(region, "plumbing", role_arn, None, 43200, None)
        plumbing.access_key_id = plumbing.access_key.access_key_id = "testing"
        plumbing.secret_access_key = plumbing.access_key.secret_access_key = "testing"
        plumbing.session_token = "testing"
    _task_credentials["value"] = (role_credentials(account_id, region, state_machine_role_arn, "states")
                                  if state_machine_role_arn else None)
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0


def stop_enforcing_iam():
    """Back to moto's default: no request is authenticated. Returns None."""
    from moto import settings

    settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
    _task_credentials["value"] = None


def role_credentials(account_id, region, role_arn, session_name):
    """``(access key id, secret, session token)`` of a fresh session of ``role_arn``, made by
    the STS backend directly (a service assumes its role; no caller's rights are involved)."""
    from moto.sts.models import sts_backends

    assumed = sts_backends[account_id]["aws"].assume_role(region, session_name[:64], role_arn, None, 43200, None)
    return assumed.access_key_id, assumed.secret_access_key, assumed.session_token


def _iam_enforcement_hooks():
    """moto checks non-S3 actions against the resource "*" (it does not know their ARNs), which
    a policy naming its resources never matches: there, only the action is checked. S3's
    AccessDenied names the action, as AWS's message does."""
    from moto.iam.access_control import IAMPolicyStatement, S3IAMRequest
    from moto.s3.exceptions import S3ClientError

    original_matches = IAMPolicyStatement._check_element_matches

    def check_element_matches(statement, element, value):
        if element in ("Resource", "NotResource") and value == "*":
            return element == "Resource"
        return original_matches(statement, element, value)

    def raise_access_denied(request):
        raise S3ClientError("AccessDenied", "User: %s is not authorized to perform: %s because no "
                            "identity-based policy allows the %s action"
                            % (request._access_key.arn, request._action, request._action))

    return [(IAMPolicyStatement, "_check_element_matches", check_element_matches),
            (S3IAMRequest, "_raise_access_denied", raise_access_denied)]


def _cloudwatch_iam_hooks():
    """CloudWatch signs as ``monitoring``, so moto names its actions ``monitoring:X``; IAM's prefix
    is ``cloudwatch:``. PutMetricData is also checked against the ``cloudwatch:namespace``
    condition of the caller's policies (the only way its permission is scoped), which moto
    never evaluates."""
    from moto import settings
    from moto.cloudwatch.responses import CloudWatchResponse
    from moto.iam.access_control import IAMPolicy, IAMRequest, IAMRequestBase, PermissionResult

    original_check = IAMRequestBase.check_action_permitted
    original_put = CloudWatchResponse.put_metric_data

    def check_action_permitted(request, resource):
        if request._action.startswith("monitoring:"):
            request._action = "cloudwatch:" + request._action[len("monitoring:"):]
        return original_check(request, resource)

    def put_metric_data(response):
        if settings.INITIAL_NO_AUTH_ACTION_COUNT == 0 and "Authorization" in response.headers:
            request = IAMRequest(account_id=response.current_account, method=response.method,
                                 path=response.raw_path, data=response.data, body=response.raw_body,
                                 headers=response.headers, action="PutMetricData")
            request._action = "cloudwatch:PutMetricData"
            context = {"cloudwatch:namespace": response._get_param("Namespace")}
            results = [IAMPolicy(policy).is_action_permitted(request._action, "*", None, context)
                       for policy in request._access_key.collect_policies()]
            if PermissionResult.DENIED in results or PermissionResult.PERMITTED not in results:
                request._raise_access_denied()
        return original_put(response)

    return [(IAMRequestBase, "check_action_permitted", check_action_permitted),
            (CloudWatchResponse, "put_metric_data", put_metric_data)]


def _cloudwatch_statistics_hooks():
    """GetMetricStatistics: moto counts every datum whose dimensions include the asked ones; AWS
    only those with exactly the asked set. The pipeline publishes each figure per stage and per
    stage and producer, so moto would count it twice."""
    from moto.cloudwatch.models import CloudWatchBackend

    original = CloudWatchBackend.get_metric_statistics

    def get_metric_statistics(backend, namespace, metric_name, start_time, end_time, period, stats,
                              dimensions, unit=None):
        wanted = sorted((d["Name"], d.get("Value")) for d in dimensions or [])
        result = []
        for statistics in original(backend, namespace, metric_name, start_time, end_time, period, stats,
                                   dimensions, unit):
            statistics.metric_data = [datum for datum in statistics.metric_data
                                      if sorted((d.name, d.value) for d in datum.dimensions) == wanted]
            if statistics.metric_data:
                result.append(statistics)
        return result

    return [(CloudWatchBackend, "get_metric_statistics", get_metric_statistics)]


# Pooled connections of each Step Functions task client: every running execution's task calls
# through its service's one client, and with boto3's default of 10 a burst of twenty .sync checks
# discarded (and later re-opened, with a TLS handshake) a connection on most calls.
SFN_CLIENT_CONNECTIONS = 64


def _over_https(client, region, service):
    """``client`` (moto's Step Functions client for the server, http://localhost:$MOTO_PORT)
    made again over HTTPS, trusting the stack's CA, when the server speaks HTTPS."""
    ca_bundle = _tls["ca_bundle"]
    credentials = _task_credentials["value"]
    if (not ca_bundle or not client.meta.endpoint_url.startswith("http://")) and not credentials:
        return client
    import boto3
    from botocore.config import Config

    endpoint = client.meta.endpoint_url
    if ca_bundle and endpoint.startswith("http://"):
        endpoint = "https://" + endpoint[len("http://"):]
    key, secret, token = credentials or ("ak", "sk", None)
    return boto3.client(
        service_name=service, region_name=region, aws_access_key_id=key, aws_secret_access_key=secret,
        aws_session_token=token, endpoint_url=endpoint, verify=ca_bundle or None,
        config=Config(parameter_validation=False, retries={"max_attempts": 0, "total_max_attempts": 1},
                      max_pool_connections=SFN_CLIENT_CONNECTIONS,
                      connect_timeout=client.meta.config.connect_timeout,
                      read_timeout=client.meta.config.read_timeout))


# Attempts of a Step Functions task's call that never reached the service.
UNSENT_CALL_ATTEMPTS = 4


def _retry_unsent_calls(client):
    """``client`` retries a call whose connection failed before the request was sent (refused,
    timed out connecting, or a failed TLS handshake), up to UNSENT_CALL_ATTEMPTS, and nothing
    else. On AWS a task's call to Glue or SNS is the service's own and never fails that way;
    here it crosses the local endpoint's TLS, and under load one handshake in several thousand
    has failed (the execution then ended in States.Runtime, which no Retry matches). moto makes
    the client with retries off, rightly for everything else: a call that may have reached the
    service (StartJobRun) must not be sent twice."""
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, SSLError

    def needs_retry(attempts, caught_exception=None, **_):
        if isinstance(caught_exception, (SSLError, EndpointConnectionError, ConnectTimeoutError)) \
                and attempts < UNSENT_CALL_ATTEMPTS:
            return 0.1 * attempts
        return None

    client.meta.events.register("needs-retry", needs_retry, unique_id="local-retry-unsent-calls")
    return client


# -- Athena -----------------------------------------------------------------------------------


def _effective_output_location(execution):
    """Where Athena writes the result CSV: the workgroup's location when it enforces its
    configuration (moto's default) or the query names none; ``<location>/<query id>.csv``."""
    config = execution.config if isinstance(execution.config, dict) else {}
    workgroup_config = (getattr(execution.workgroup, "configuration", None) or {})
    workgroup_location = (workgroup_config.get("ResultConfiguration") or {}).get("OutputLocation")
    location = config.get("OutputLocation")  # moto already appended "<id>.csv"
    if workgroup_location and (workgroup_config.get("EnforceWorkGroupConfiguration", True) or not location):
        location = workgroup_location.rstrip("/") + "/%s.csv" % execution.id
    if location:
        config["OutputLocation"] = location
        execution.config = config
    return location


def _result_rows(columns, rows, text_result=False):
    if text_result:
        # Hive DDL answers (DESCRIBE, SHOW): no header row, each row one tab-separated value.
        return [{"Data": [{"VarCharValue": "\t".join(v or "" for v in row)}]} for row in rows]
    header = {"Data": [{"VarCharValue": name} for name in columns]}
    data = [{"Data": [{} if value is None else {"VarCharValue": value} for value in row]} for row in rows]
    return [header] + data


def _column_info(columns, column_types):
    info = []
    for index, name in enumerate(columns):
        kind = column_types[index] if column_types and index < len(column_types) else "varchar"
        precision, scale = 0, 0
        if kind.startswith("decimal(") and kind.endswith(")"):
            precision, scale = (int(x) for x in kind[len("decimal("):-1].split(","))
            kind = "decimal"
        info.append({
            "CatalogName": "hive",
            "SchemaName": "",
            "TableName": "",
            "Name": name,
            "Label": name,
            "Type": kind,
            "Precision": precision,
            "Scale": scale,
            "Nullable": "UNKNOWN",
            "CaseSensitive": kind in ("varchar", "char", "string"),
        })
    return info


# GetQueryResults pages as Athena does: at most this many rows a page (the header row of the
# first page included), a NextToken only while rows remain, and a token only for its own query.
MAX_RESULTS_PER_PAGE = 1000


class _PageTokens:
    """Opaque, tamper-evident NextTokens: ``<query id>:<offset>`` signed with a key of this process."""

    def __init__(self):
        import secrets

        self._key = secrets.token_bytes(32)

    def _signature(self, payload):
        import hashlib
        import hmac

        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()[:32]

    def make(self, query_id, offset):
        import base64

        payload = "%s:%d" % (query_id, offset)
        return base64.urlsafe_b64encode(("%s:%s" % (payload, self._signature(payload))).encode()).decode()

    def offset(self, token, query_id):
        """The row offset ``token`` stands for, or None when it is not a token of this query."""
        import base64
        import binascii
        import hmac

        try:
            text = base64.urlsafe_b64decode(token.encode()).decode()
            token_query, offset, signature = text.rsplit(":", 2)
        except (ValueError, binascii.Error, UnicodeError):
            return None
        payload = "%s:%s" % (token_query, offset)
        if token_query != query_id or not hmac.compare_digest(signature, self._signature(payload)):
            return None
        return int(offset)


def _athena_hooks(query_engine):
    from moto.athena.models import AthenaBackend, QueryResults
    from moto.athena.responses import AthenaResponse

    original_start = AthenaBackend.start_query_execution
    original_get = AthenaResponse.get_query_execution
    original_results = AthenaResponse.get_query_results
    tokens = _PageTokens()

    def query_in_background(backend, execution, database, output_location, outcome):
        execution.status = "RUNNING"
        options = {}
        if execution.execution_parameters:
            options["parameters"] = list(execution.execution_parameters)
        try:
            _run_query(backend, execution, database, output_location, outcome, options)
        finally:
            _athena_queries.release()

    def _run_query(backend, execution, database, output_location, outcome, options):
        try:
            result = query_engine.execute(execution.query, database, output_location, **options)
            columns, rows = result
            text_result = bool(getattr(result, "text_result", False))
            backend.query_results[execution.id] = QueryResults(
                rows=_result_rows(columns, rows, text_result),
                column_info=_column_info(columns, getattr(result, "column_types", None)),
            )
            outcome.details = {
                "statement_type": getattr(result, "statement_type", None),
                "output_location": getattr(result, "output_location", None),
                "data_scanned_bytes": int(getattr(result, "data_scanned_bytes", 0) or 0),
                "manifest_location": getattr(result, "manifest_location", None),
            }
            if outcome.details["output_location"] and isinstance(execution.config, dict):
                execution.config["OutputLocation"] = outcome.details["output_location"]
            outcome.finish()
            state = "SUCCEEDED"
        except Exception as exc:
            # The engine raises Athena-like messages ("TABLE_NOT_FOUND: ...") for what Athena
            # would reject; anything else is the engine's own fault (or an injected one).
            outcome.user_error = bool(getattr(exc, "user_error", False))
            if not outcome.user_error and not getattr(exc, "injected", False):
                LOG.exception("query engine failed on %r", execution.query)
            outcome.finish(str(exc) or _describe_failure(exc))
            state = "FAILED"
        execution.end_time = time.time()
        if execution.status == "RUNNING":  # StopQueryExecution meanwhile leaves it CANCELLED
            execution.status = state
        _note_task_ended(execution.id)

    def start_query_execution(backend, query, context, config, workgroup, execution_parameters):
        _athena_queries.acquire()  # raises TooManyRequestsException past the limit
        try:
            return start_counted(backend, query, context, config, workgroup, execution_parameters)
        except BaseException:
            _athena_queries.release()
            raise

    def start_counted(backend, query, context, config, workgroup, execution_parameters):
        """Starts the query; the slot it holds is released when it ends (here or in its thread)."""
        query_id = original_start(backend, query, context, config, workgroup, execution_parameters)
        execution = backend.executions[query_id]
        outcome = _Outcome()
        setattr(execution, _OUTCOME_ATTR, outcome)
        if query_id in backend.query_results:
            # Results queued through moto's own API win: keep that feature usable in tests.
            outcome.finish()
            execution.status = "SUCCEEDED"
            _athena_queries.release()
            return query_id
        execution.status = "QUEUED"
        output_location = _effective_output_location(execution)
        if not output_location:
            outcome.finish(
                "No output location provided. An output location is required either through the "
                "Workgroup result configuration setting or as an API input."
            )
            execution.status = "FAILED"
            _athena_queries.release()
            return query_id
        database = (context or {}).get("Database") or "default"
        _start_thread("athena-%s" % query_id, query_in_background, backend, execution, database,
                      output_location, outcome)
        return query_id

    def get_query_execution(response):
        body = json.loads(original_get(response))
        query = body["QueryExecution"]
        execution = response.athena_backend.executions.get(query["QueryExecutionId"])
        outcome = getattr(execution, _OUTCOME_ATTR, None)
        if outcome is None:
            return json.dumps(body)
        status = query["Status"]
        millis = int(outcome.elapsed_seconds() * 1000)
        query["Statistics"].update({"EngineExecutionTimeInMillis": millis, "TotalExecutionTimeInMillis": millis})
        details = getattr(outcome, "details", None) or {}
        query["Statistics"]["DataScannedInBytes"] = details.get("data_scanned_bytes", 0)
        if details.get("manifest_location"):
            query["Statistics"]["DataManifestLocation"] = details["manifest_location"]
        if details.get("statement_type"):
            query["StatementType"] = details["statement_type"]
        if outcome.finished is None:
            status.pop("CompletionDateTime", None)
        if outcome.error_message:
            status["StateChangeReason"] = outcome.error_message
            status["AthenaError"] = {
                "ErrorCategory": 2 if outcome.user_error else 1,
                "ErrorType": 1006 if outcome.user_error else 401,
                "Retryable": False,
                "ErrorMessage": outcome.error_message,
            }
        return json.dumps(body)

    def get_query_results(response):
        query_id = response._get_param("QueryExecutionId")
        backend = response.athena_backend
        execution = backend.executions.get(query_id)
        outcome = getattr(execution, _OUTCOME_ATTR, None)
        if outcome is None:
            return original_results(response)
        state = execution.status
        if state in ("QUEUED", "RUNNING"):
            return response.error("Query has not yet finished. Current state: %s" % state, 400)
        if state != "SUCCEEDED":
            reason = outcome.error_message or "Query %s ended %s" % (query_id, state)
            return response.error("Query did not finish successfully. Final query state: %s\n%s" % (state, reason), 400)
        max_results = response._get_param("MaxResults")
        if max_results is None:
            max_results = MAX_RESULTS_PER_PAGE
        max_results = int(max_results)
        if not 1 <= max_results <= MAX_RESULTS_PER_PAGE:
            return response.error(
                "1 validation error detected: Value '%d' at 'maxResults' failed to satisfy constraint: "
                "Member must have value less than or equal to %d" % (max_results, MAX_RESULTS_PER_PAGE), 400)
        offset = 0
        next_token = response._get_param("NextToken")
        if next_token is not None:
            offset = tokens.offset(next_token, query_id)
            if offset is None:
                return response.error("The NextToken is not valid for this query: %s" % next_token[:64], 400)
        results = backend.query_results.get(query_id) or QueryResults(rows=[], column_info=[])
        page = results.rows[offset:offset + max_results]
        body = {"UpdateCount": 0, "ResultSet": {"Rows": page, "ResultSetMetadata": {"ColumnInfo": results.column_info}}}
        if offset + max_results < len(results.rows):
            body["NextToken"] = tokens.make(query_id, offset + max_results)
        return json.dumps(body)

    return [
        (AthenaBackend, "start_query_execution", start_query_execution),
        (AthenaResponse, "get_query_execution", get_query_execution),
        (AthenaResponse, "get_query_results", get_query_results),
    ]


# -- SNS ----------------------------------------------------------------------------------------


def _sns_hooks(publish_fault):
    from moto.sns.exceptions import SNSException
    from moto.sns.models import SNSBackend

    original_publish = SNSBackend.publish

    class Throttled(SNSException):
        # The shape name; moto answers with its error code "Throttled" and HTTP 429, as SNS does.
        code = "ThrottledException"

    def publish(backend, message, arn, *args, **kwargs):
        subject = kwargs.get("subject", args[1] if len(args) > 1 else None)
        attributes = kwargs.get("message_attributes", args[2] if len(args) > 2 else None) or {}
        values = {name: value.get("Value") for name, value in attributes.items()}
        refusal = publish_fault(arn, subject, values)
        if refusal:
            raise Throttled(refusal)
        return original_publish(backend, message, arn, *args, **kwargs)

    return [(SNSBackend, "publish", publish)]


# -- Step Functions ---------------------------------------------------------------------------


def _task_service_classes():
    """Task-service classes for glue and athena, built on moto's own (imported lazily: the
    Step Functions parser is heavy)."""
    from botocore.exceptions import ClientError
    from botocore.response import StreamingBody
    from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import CustomErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.resource import (
        ResourceCondition,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk import (
        StateTaskServiceAwsSdk,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_callback import (
        StateTaskServiceCallback,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_glue import (
        StateTaskServiceGlue,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    # moto's callback base dereferences the task's callback endpoint unconditionally, and only
    # services that declare waitForTaskToken get one: declaring it is what makes .sync work.
    # The ASL itself may still not use .waitForTaskToken (rejected below, as AWS does).
    patterns = {ResourceCondition.Sync, ResourceCondition.WaitForTaskToken}

    def fresh_task_token(env):
        # moto makes one task token (and callback endpoint) per state, not per attempt. The
        # first attempt's end interrupts that endpoint, so a retried .sync task would find it
        # interrupted and time out at once (States.Timeout): each attempt gets its own, as on AWS.
        token = env.states.context_object.update_task_token()
        env.callback_pool_manager.add(token)

    def reject_wait_for_task_token(service):
        if service.resource.condition == ResourceCondition.WaitForTaskToken:
            raise ValueError(
                "The resource provided %s is not supported: %s has no .waitForTaskToken "
                "integration." % (service.resource.resource_arn, service.resource.service_name)
            )

    class GlueTaskService(StateTaskServiceGlue):
        """moto's Glue integration with a working ``startJobRun.sync``."""

        def __init__(self):
            StateTaskServiceCallback.__init__(self, supported_integration_patterns=set(patterns))

        def _validate_service_integration_is_supported(self):
            super()._validate_service_integration_is_supported()
            reject_wait_for_task_token(self)

        def _eval_integration_pattern(self, env, *args, **kwargs):
            fresh_task_token(env)
            super()._eval_integration_pattern(env, *args, **kwargs)

        def _sync_to_start_job_run(self, env, resource_runtime_part, normalised_parameters, state_credentials):
            run_id = env.stack[-1]["JobRunId"]  # StartJobRun's output, which moto's method pops
            poll = super()._sync_to_start_job_run(env, resource_runtime_part, normalised_parameters,
                                                  state_credentials)

            def poll_json_safe():
                job_run = poll()
                return None if job_run is None else _json_safe(job_run)

            return _watching(run_id, poll_json_safe)

    supported_athena_parameters = {
        "startqueryexecution": {
            "QueryString", "ClientRequestToken", "QueryExecutionContext", "ResultConfiguration",
            "WorkGroup", "ExecutionParameters", "ResultReuseConfiguration",
        },
        "stopqueryexecution": {"QueryExecutionId"},
        "getqueryexecution": {"QueryExecutionId"},
        "getqueryresults": {"QueryExecutionId", "NextToken", "MaxResults"},
    }

    class AthenaTaskService(StateTaskServiceCallback):
        """Athena's optimised integration: request-response for the four actions AWS supports,
        and ``startQueryExecution.sync``, which polls GetQueryExecution like moto's Glue .sync."""

        def __init__(self):
            super().__init__(supported_integration_patterns=set(patterns))

        def _get_supported_parameters(self):
            return supported_athena_parameters.get(self.resource.api_action.lower())

        def _eval_integration_pattern(self, env, *args, **kwargs):
            fresh_task_token(env)
            super()._eval_integration_pattern(env, *args, **kwargs)

        def _validate_service_integration_is_supported(self):
            super()._validate_service_integration_is_supported()
            reject_wait_for_task_token(self)
            condition = self.resource.condition
            if condition is not None and self.resource.api_action.lower() != "startqueryexecution":
                raise ValueError(
                    "The resource provided %s is not supported: only startQueryExecution has a "
                    ".sync integration." % self.resource.resource_arn
                )

        def _client(self, resource_runtime_part, state_credentials):
            return _sfn_client(resource_runtime_part.region, "athena")

        def _from_error(self, env, ex):
            if isinstance(ex, ClientError):
                error_name = "Athena.%s" % ex.response["Error"]["Code"]
                return FailureEvent(
                    env=env,
                    error_name=CustomErrorName(error_name),
                    event_type=HistoryEventType.TaskFailed,
                    event_details=EventDetails(
                        taskFailedEventDetails=TaskFailedEventDetails(
                            error=error_name,
                            cause=ex.response["Error"]["Message"],
                            resource=self._get_sfn_resource(),
                            resourceType=self._get_sfn_resource_type(),
                        )
                    ),
                )
            return super()._from_error(env=env, ex=ex)

        def _eval_service_task(self, env, resource_runtime_part, normalised_parameters, state_credentials):
            client = self._client(resource_runtime_part, state_credentials)
            response = getattr(client, self._get_boto_service_action())(**normalised_parameters)
            response.pop("ResponseMetadata", None)
            env.stack.append(_json_safe(response))

        def _build_sync_resolver(self, env, resource_runtime_part, normalised_parameters, state_credentials):
            query_id = env.stack.pop()["QueryExecutionId"]
            client = self._client(resource_runtime_part, state_credentials)

            def poll_query_execution():
                response = client.get_query_execution(QueryExecutionId=query_id)
                response.pop("ResponseMetadata", None)
                status = response["QueryExecution"]["Status"]
                state = status["State"]
                if state in ("QUEUED", "RUNNING"):
                    return None
                if state == "SUCCEEDED":
                    return _json_safe(response)
                cause = status.get("StateChangeReason") or "Query %s ended %s" % (query_id, state)
                raise FailureEventException(
                    FailureEvent(
                        env=env,
                        error_name=StatesErrorName(typ=StatesErrorNameType.StatesTaskFailed),
                        event_type=HistoryEventType.TaskFailed,
                        event_details=EventDetails(
                            taskFailedEventDetails=TaskFailedEventDetails(
                                resource=self._get_sfn_resource(),
                                resourceType=self._get_sfn_resource_type(),
                                error=StatesErrorNameType.StatesTaskFailed.to_name(),
                                cause=cause,
                            )
                        ),
                    )
                )

            return _watching(query_id, poll_query_execution)

    class AwsSdkTaskService(StateTaskServiceAwsSdk):
        """moto's aws-sdk integration, with a streamed response member (S3 GetObject's Body) read
        into text as Step Functions returns it: moto leaves the unread stream in the state's
        result, where States.StringToJson($.Body) fails."""

        def _eval_service_task(self, env, resource_runtime_part, normalised_parameters, state_credentials):
            super()._eval_service_task(env, resource_runtime_part, normalised_parameters, state_credentials)
            response = env.stack[-1]
            if isinstance(response, dict):
                for key, value in list(response.items()):
                    if isinstance(value, StreamingBody):
                        response[key] = value.read().decode("utf-8")

    return GlueTaskService, AthenaTaskService, AwsSdkTaskService


def _step_functions_hooks():
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import state_task_factory

    original_factory = state_task_factory.state_task_service_for
    glue_service, athena_service, aws_sdk_service = _task_service_classes()

    def state_task_service_for(service_name):
        if service_name == "glue":
            return glue_service()
        if service_name == "athena":
            return athena_service()
        if service_name == "aws-sdk":
            return aws_sdk_service()
        return original_factory(service_name)

    return [(state_task_factory, "state_task_service_for", state_task_service_for)]


# -- speed ----------------------------------------------------------------------------------------

# A running .sync task (Glue job run, Athena query) is checked again as soon as it ends, and at
# least every SYNC_CHECK_CEILING_SECONDS (a run stopped by StopJobRun, say); moto checks every
# 0.5 s, and a fixed 0.05 s made twenty running jobs cost the endpoint 400 GetJobRun calls a
# second. Waking every waiting task whenever any one ended still cost a 20-file burst about 1,000
# GetJobRun calls (20 waiting x 60 ends), so a task whose resolver names it (``_watching``) waits
# for its own end. Its ceiling is longer: the end of every run and query is noted, so only a
# BatchStopJobRun, or a stopped execution, is seen up to that late. SYNC_CHECK_SECONDS: the wait
# after the first check of a task without a name.
SYNC_CHECK_SECONDS = 0.05
SYNC_CHECK_CEILING_SECONDS = 1.0
SYNC_NAMED_CHECK_CEILING_SECONDS = 5.0
_task_ended = threading.Condition()
_tasks_ended = [0]  # how many job runs and queries have ended: a change wakes the unnamed checks
_ended_tasks = set()  # the job run and query ids that ended and that no check has seen end yet
_check_state = threading.local()


def _note_task_ended(task_id=None):
    with _task_ended:
        _tasks_ended[0] += 1
        if task_id is not None:
            _ended_tasks.add(task_id)
        _task_ended.notify_all()


def _watching(task_id, resolve):
    """A .sync task's resolver that tells the sleep after it which task it waits for (and forgets
    the task's end once its check has seen it: ``local up`` runs for days)."""

    def resolve_watched():
        _check_state.task = None
        try:
            result = resolve()
        except BaseException:
            _forget_end(task_id)  # the task failed: its check saw it end
            raise
        if result is not None:
            _forget_end(task_id)
        else:  # still running: the next sleep waits for this task's end
            _check_state.task = task_id
        return result

    return resolve_watched


def _forget_end(task_id):
    with _task_ended:
        _ended_tasks.discard(task_id)


class _UntilTaskEnds:
    """Stands in for the ``time`` module of moto's .sync loop: its ``sleep`` between two checks
    of a task returns when that task ends (or at the ceiling), at once when it ended while the
    task was being checked. A task not named by its resolver wakes when any run or query ends."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds):
        task = getattr(_check_state, "task", None)
        seen = getattr(_check_state, "seen", None)
        with _task_ended:
            if task is not None:
                if _task_ended.wait_for(lambda: task in _ended_tasks, timeout=SYNC_NAMED_CHECK_CEILING_SECONDS):
                    _ended_tasks.discard(task)
                return
            if seen is None:  # the task's first wait: nothing known about the check before it
                _task_ended.wait(timeout=seconds)
            elif seen == _tasks_ended[0]:
                _task_ended.wait(timeout=SYNC_CHECK_CEILING_SECONDS)
            _check_state.seen = _tasks_ended[0]

_CLIENT_MODULES = (
    "moto.stepfunctions.parser.asl.utils.boto_client",
    _SFN_SERVICE + ".state_task_service_glue",
    _SFN_SERVICE + ".state_task_service_sns",
    _SFN_SERVICE + ".state_task_service_aws_sdk",
)


def _speed_hooks():
    from moto import backends
    from moto.settings import moto_server_port
    from moto.stepfunctions.parser.asl.utils import boto_client

    original_client_for = boto_client.boto_client_for
    clients, lock = {}, threading.Lock()

    def boto_client_for(region, service, state_credentials=None):
        # moto's own function ignores state_credentials (every client uses fixed fake keys).
        # botocore clients are thread-safe; the port is part of the key because a process may
        # start a new stack (and server) after stopping one.
        key = (region, service, moto_server_port(), _tls["ca_bundle"], _task_credentials["value"])
        with lock:
            if key not in clients:
                clients[key] = _retry_unsent_calls(
                    _over_https(original_client_for(region=region, service=service), region, service))
            return clients[key]

    modules = tuple(backends.list_of_moto_modules())  # the installed package does not change

    def list_of_moto_modules():
        return iter(modules)

    patches = [(importlib.import_module(name), "boto_client_for", boto_client_for) for name in _CLIENT_MODULES]
    patches.append((backends, "list_of_moto_modules", list_of_moto_modules))
    # moto's poll loop looks the constant up on every pass, so setting it here is enough.
    callback_module = importlib.import_module(_SFN_SERVICE + ".state_task_service_callback")
    patches.append((callback_module, "_DELAY_SECONDS_SYNC_CONDITION_CHECK", SYNC_CHECK_SECONDS))
    patches.append((callback_module, "time", _UntilTaskEnds()))
    return patches + _parse_once_hooks() + [_aws_chunked_hook()]


def decode_aws_chunked(body):
    """The payload of an ``aws-chunked`` request body (``<hex size>\\r\\n<bytes>\\r\\n``... up to
    a chunk of size 0; the trailing checksum lines after it are ignored), as moto's
    ``S3Response._handle_encoded_body`` decodes it, in linear time: moto appends every chunk to
    one bytes object, so a 260 MB ``put_object`` (boto3 sends aws-chunked bodies over HTTPS, in
    1 MB chunks) took 23 s."""
    import io

    if not body:
        return b""
    if isinstance(body, bytes):
        body = io.BytesIO(body)
    chunks = []
    size = int(body.readline().strip(), 16)
    while size > 0:
        chunks.append(body.read(size))
        body.readline()  # the chunk's closing \r\n
        size = int(body.readline().strip(), 16)
    return b"".join(chunks)


def _aws_chunked_hook():
    from moto.s3.responses import S3Response

    def _handle_encoded_body(self, body):
        return decode_aws_chunked(body)

    return (S3Response, "_handle_encoded_body", _handle_encoded_body)


_PARSED_DEFINITIONS_KEPT = 16


def _parse_once_hooks():
    from moto.stepfunctions.parser.asl.component.common.path import result_path
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
    from moto.stepfunctions.parser.asl.parse.preprocessor import Preprocessor
    from moto.stepfunctions.parser.asl.utils import json_path

    original_parse = AmazonStateLanguageParser.parse
    trees, lock = {}, threading.Lock()

    def parse(definition):
        # The ANTLR tree is read-only once built; the components that hold an execution's
        # progress come from a new Preprocessor each time, exactly as moto builds them.
        with lock:
            tree = trees.get(definition)
        if tree is None:
            program, tree = original_parse(definition)  # raises on a syntax error: nothing kept
            with lock:
                if len(trees) >= _PARSED_DEFINITIONS_KEPT:
                    trees.pop(next(iter(trees)))
                trees[definition] = tree
            return program, tree
        return Preprocessor().visit(tree), tree

    patches = [(AmazonStateLanguageParser, "parse", staticmethod(parse))]
    for module in (json_path, result_path):
        # A parsed JSONPath is immutable; find() and update() only read it.
        patches.append((module, "parse", functools.lru_cache(maxsize=4096)(module.parse)))
    return patches


def _sfn_client(region, service):
    """The (shared) client Step Functions' Task states use for ``service``."""
    from moto.stepfunctions.parser.asl.utils import boto_client

    return boto_client.boto_client_for(region=region, service=service)


# -- S3 events and the server ----------------------------------------------------------------


def _s3_event_hooks():
    from moto.s3 import notifications

    original = notifications._get_s3_event

    def get_s3_event(event_name, bucket, key, notification_id):
        event = original(event_name, bucket, key, notification_id)
        version_id = getattr(key, "version_id", None)
        if version_id and version_id != "null":
            for record in event.get("Records", []):
                obj = record["s3"]["object"]
                obj["versionId"] = version_id
                # S3's sequencer orders events of one key; a nanosecond clock is as good here.
                obj.setdefault("sequencer", "%016X" % time.time_ns())
        return event

    return [(notifications, "_get_s3_event", get_s3_event)]


# -- install / uninstall ----------------------------------------------------------------------

_lock = threading.Lock()
_installed = None  # list of (owner, attribute, original value) while installed


def is_installed():
    """True while install() is in effect."""
    return _installed is not None


def install(job_runner, crawler, query_engine, publish_fault=None, speed=True, ca_bundle=None):
    """Make moto run Glue jobs, crawls and Athena queries with the given engines.

    ``job_runner.run(job: dict, arguments: dict) -> (succeeded, error_message)``;
    ``crawler.crawl(crawler: dict) -> (succeeded, error_message)``;
    ``query_engine.execute(sql, database, output_location[, parameters=[...]]) -> (columns, rows)``
    (rows of strings or None; optional attributes ``column_types`` (Athena type names),
    ``statement_type``, ``output_location``, ``text_result``, ``data_scanned_bytes`` and
    ``manifest_location`` say what GetQueryExecution/GetQueryResults report), raising on failure
    (an exception with ``user_error = True`` is reported as Athena reports user errors);
    ``publish_fault(topic_arn, subject, {attribute: value}) -> refusal message or None``, when
    given, may refuse an SNS publish with a throttling error.
    ``speed``: also install the speed-only patches (``_speed_hooks``); they change no behaviour,
    so switching them off (to rule them out) gives the same results, slower. ``ca_bundle``: the
    server speaks HTTPS with a certificate this CA file signed (Step Functions' tasks call it so).
    Returns None. Raises HookPointMissing when moto moved something, RuntimeError when already
    installed (call uninstall() first).
    """
    global _installed
    check_hook_points()
    with _lock:
        if _installed is not None:
            raise RuntimeError("moto hooks are already installed; call local.moto_hooks.uninstall() first")
        from moto.moto_api import state_manager

        patches = (
            _job_run_hooks(job_runner)
            + _crawler_hooks(crawler)
            + _table_version_hooks()
            + _athena_hooks(query_engine)
            + (_sns_hooks(publish_fault) if publish_fault is not None else [])
            + _step_functions_hooks()
            + _s3_event_hooks()
            + (_speed_hooks() if speed else [])
            + _bucket_policy_hooks()
            + _iam_enforcement_hooks()
            + _cloudwatch_iam_hooks()
            + _cloudwatch_statistics_hooks()
        )
        _tls["ca_bundle"] = ca_bundle
        applied = []
        for owner, attribute, replacement in patches:
            # A class's own __dict__ entry keeps a staticmethod a staticmethod when restored.
            own = vars(owner) if isinstance(owner, type) else {}
            applied.append((owner, attribute, own[attribute] if attribute in own else getattr(owner, attribute)))
            setattr(owner, attribute, replacement)
        for model in _MANAGED_MODELS:
            state_manager.set_transition(model, dict(_MANUAL_TRANSITION))
        _installed = applied


def uninstall():
    """Restore moto as it was before install(). Returns None; a no-op when not installed.

    Runs, crawls and queries already started finish on their threads.
    """
    global _installed
    with _lock:
        if _installed is None:
            return
        from moto.moto_api import state_manager

        for owner, attribute, original in reversed(_installed):
            setattr(owner, attribute, original)
        _tls["ca_bundle"] = None
        stop_enforcing_iam()
        for model in _MANAGED_MODELS:
            state_manager.unset_transition(model)
        _installed = None


def set_state_machine_execution(enabled):
    """Turn moto's Step Functions interpreter on (True) or off in this process.

    Returns the previous setting, so callers can restore it.
    """
    from moto.core.config import default_user_config

    section = default_user_config.setdefault("stepfunctions", {})
    previous = bool(section.get("execute_state_machine", False))
    section["execute_state_machine"] = bool(enabled)
    return previous
