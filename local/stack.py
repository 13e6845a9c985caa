"""The whole pipeline on one laptop, in one object: embedded AWS, the deploy, S3 events, the app.

``LocalStack`` starts the emulated AWS endpoint (``local.embedded.EmulatedAws``: moto with the
Glue/crawler/Athena adapters), runs the project's own deploy for the ``local`` stage against it,
routes the landing bucket's S3 events to the Chalice ``on_landing`` handler and collects what the
SNS topic publishes. Everything after
``land()`` is driven by the S3 event, as on AWS.
"""
import fcntl
import importlib.util
import json
import io
import logging
import os
import sys
import threading
import time
import warnings
from dataclasses import dataclass

import boto3
from botocore.exceptions import ClientError

from chalicelib import identifiers, naming
from chalicelib.queries import parse_totals, totals_sql
from chalicelib.resources import INCOMING_PREFIX
from chalicelib.settings import DEFAULT_REGION
from local import faults as fault_injection
from local.events import HANDLER_NAME, LandingEvents

log = logging.getLogger("local")
# chalice.test warns, on the first request to a route with an IAM authorizer, that it lets every
# request through. That is the stated behaviour here (chalicelib/api_auth.py), said once at start
# in plain words instead of as a warning with a file path.
_CHALICE_LOCAL_AUTH_WARNING = "IAMAuthorizer is not a supported in local mode"

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGE = "local"
# The work dir of a stack given none, in the project; while taken, the next free of -2 .. -N.
DEFAULT_WORK_DIR = ".local-stack"
DEFAULT_WORK_DIRS = 9
# Locked (flock) in the project while a run deploys the stage, and while a run with settings of its
# own (--set) has written them into .chalice/: runs in one checkout then never read another's.
STAGE_FILES_LOCK = ".local-stage.lock"
# The local crawler stand-in finishes in milliseconds: the state machine need not wait between polls.
POLL_SECONDS = 0
TERMINAL_STATES = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
LOCAL_SNAPSHOT_RETENTION_SECONDS = 60


class ExecutionTimeout(TimeoutError):
    """Executions did not end in time; ``pending`` maps each execution name to its last state."""

    def __init__(self, timeout, pending):
        self.timeout = timeout
        self.pending = dict(pending)
        described = ", ".join(
            "%s (%s)" % (name, state or "never started: was the S3 event delivered?")
            for name, state in sorted(self.pending.items()))
        super().__init__(
            "timed out after %g s waiting for %d execution(s): %s. Raise the timeout, or look at the "
            "event and Glue log lines above for what is stuck." % (timeout, len(self.pending), described))


class QueryFailed(RuntimeError):
    """An Athena query ended FAILED or CANCELLED."""


@dataclass(frozen=True)
class Landed:
    """One object put into the landing bucket."""

    bucket: str
    key: str
    etag: str
    size: int
    version_id: str = None  # the landing bucket is versioned

    @property
    def uri(self):
        return "s3://%s/%s" % (self.bucket, self.key)

    @property
    def execution_name(self):
        """The execution the S3 event starts (chalicelib.naming, as the trigger names it)."""
        return naming.execution_name(self.bucket, self.key, self.etag, self.version_id)

    @property
    def source_id(self):
        return naming.source_id(self.bucket, self.key, self.etag, self.version_id)


class ChaliceApp:
    """The project's Chalice app for one stage, called as Lambda and API Gateway would call it.

    Uses ``chalice.test.Client``, which applies the stage's environment variables from
    ``.chalice/config.json`` while a handler runs. It does so by swapping ``os.environ`` for the
    whole process, so calls are serialized: the event poller and ``status()`` run on different
    threads.
    """

    def __init__(self, project_dir, stage, log_path=None):
        from chalice.cli.factory import CLIFactory
        from chalice.test import Client

        self.project_dir = project_dir
        self.stage = stage
        # Where the app's log lines go, as Lambda ships them to CloudWatch Logs (JSON lines).
        self.log_path = log_path
        self.environment = dict(
            CLIFactory(project_dir).create_config_obj(chalice_stage_name=stage).environment_variables or {})
        self.app = self._load_app()
        self._route_app_log()
        self._client = Client(self.app, stage_name=stage, project_dir=project_dir)
        warnings.filterwarnings("ignore", message=_CHALICE_LOCAL_AUTH_WARNING, category=UserWarning)
        log.info("API routes answer unsigned requests here; on AWS, /status and / need requests signed "
                 "by an IAM principal (python -m chalicelib.api_auth)")
        self._lock = threading.Lock()

    def _load_app(self):
        # app.py reads its settings when it is imported (the S3 event's bucket is fixed then), so
        # import a fresh copy with the stage's environment applied, as chalice does at deploy time.
        path = os.path.join(self.project_dir, "app.py")
        if not os.path.exists(path):
            raise RuntimeError("no app.py in %s: run from the project's root" % self.project_dir)
        added_path = self.project_dir not in sys.path
        if added_path:
            sys.path.insert(0, self.project_dir)
        spec = importlib.util.spec_from_file_location("app", path)
        module = importlib.util.module_from_spec(spec)
        saved_env = {k: os.environ.get(k) for k in self.environment}
        saved_module = sys.modules.get("app")
        sys.modules["app"] = module
        try:
            os.environ.update(self.environment)
            spec.loader.exec_module(module)
        finally:
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            if saved_module is None:
                sys.modules.pop("app", None)
            else:
                sys.modules["app"] = saved_module
            if added_path:
                sys.path.remove(self.project_dir)
        return module.app

    def _route_app_log(self):
        # Chalice logs to stdout, which Lambda ships to CloudWatch; here stdout carries results, and
        # the event poller already reports each invocation: only the app's warnings are shown. Every
        # line, in the app's own (JSON) format, goes to ``log_path``, the local stand-in for the
        # functions' log groups.
        app_log = self.app.log
        app_format = None
        for handler in list(app_log.handlers):
            if getattr(handler, "local_stack_file", False):
                # An earlier stack's file: the app's logger is one per process (named after the app).
                app_log.removeHandler(handler)
                handler.close()
            elif isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.stderr):
                app_format = app_format or handler.formatter
                app_log.removeHandler(handler)
        if self.log_path:
            os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
            to_file = logging.FileHandler(self.log_path, encoding="utf-8", delay=True)
            to_file.setFormatter(app_format or logging.Formatter("%(levelname)s %(message)s"))
            to_file.setLevel(logging.INFO)
            to_file.local_stack_file = True
            app_log.addHandler(to_file)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("app %(name)s: %(levelname)s %(message)s"))
        handler.setLevel(logging.WARNING)
        app_log.addHandler(handler)

    def invoke(self, function_name, event):
        """Run a Lambda handler of the app with ``event``. Returns its result; raises what it raises."""
        return self.invoke_with_environment(function_name, event, {})

    def get(self, path):
        """GET a route of the app. Returns (status code, parsed JSON body or None)."""
        with self._lock:
            response = self._client.http.get(path)
        return response.status_code, response.json_body

    def request(self, method, path, headers=None, body=b""):
        """Send an HTTP request to the app's routes, as API Gateway would. Returns chalice's
        HTTPResponse (``status_code``, ``headers``, ``body`` bytes)."""
        with self._lock:
            return self._client.http.request(method, path, headers=headers or {}, body=body or b"")

    def invoke_with_environment(self, function_name, event, environment):
        """Like ``invoke``, with ``environment`` set over the stage's variables for this call
        (as a per-function ``environment_variables`` entry in .chalice/config.json would be)."""
        from chalice.cli.factory import CLIFactory
        from chalice.test import TestLambdaClient

        # As Lambda sets it: the function's name (``<app>-<stage>-<handler>``), which its log lines carry.
        environment = dict({"AWS_LAMBDA_FUNCTION_NAME": "%s-%s-%s" % (self.app.app_name, self.stage, function_name)},
                           **environment)
        config = CLIFactory(self.project_dir).create_config_obj(
            chalice_stage_name=self.stage,
            user_provided_params={"environment_variables": environment})
        with self._lock:
            return TestLambdaClient(self.app, config).invoke(function_name, event).payload


class NotificationInbox:
    """An SQS queue subscribed (raw message delivery) to the pipeline's SNS topic."""

    def __init__(self, resources, sns_client=None, sqs_client=None):
        self.resources = resources
        self._sns = sns_client
        self._sqs = sqs_client
        self.queue_url = None
        self.messages = []

    @property
    def sns(self):
        if self._sns is None:
            self._sns = boto3.session.Session().client("sns")
        return self._sns

    @property
    def sqs(self):
        if self._sqs is None:
            self._sqs = boto3.session.Session().client("sqs")
        return self._sqs

    def subscribe(self):
        """Create the queue and subscribe it to the topic. Returns the queue URL."""
        self.queue_url = self.sqs.create_queue(QueueName="%s-inbox" % self.resources.topic_name)["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.sns.subscribe(TopicArn=self.resources.topic_arn, Protocol="sqs", Endpoint=queue_arn,
                           Attributes={"RawMessageDelivery": "true"})
        return self.queue_url

    def collect(self, wait_seconds=0):
        """Receive what has arrived (waiting up to ``wait_seconds`` for a first message).

        Returns every message body received so far, in arrival order.
        """
        wait = wait_seconds
        while True:
            response = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                                WaitTimeSeconds=wait)
            batch = response.get("Messages", [])
            if not batch:
                return list(self.messages)
            for message in batch:
                self.messages.append(message["Body"])
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
            wait = 0


class LocalStack:
    """The embedded stack with the ``local`` stage deployed and S3 events flowing.

    Usable as a context manager; ``stop()`` is idempotent and leaves no server or thread behind.
    """

    def __init__(self, project_dir=PROJECT_DIR, port=0, work_dir=None, stage=STAGE, redeliver=1,
                 overrides=None, deny=(), enforce_iam=True):
        self.project_dir = os.path.abspath(project_dir)
        # ``{setting: value}`` for this stack's deploy (``--set NAME=VALUE``), as ``deploy up --set``
        # takes them; the stage's files in .chalice/ are put back as they were when it stops.
        self.overrides = dict(overrides or {})
        # IAM actions removed from every policy of the stage before anything runs (--deny).
        self.deny = tuple(deny or ())
        self.enforce_iam = enforce_iam
        self._saved_chalice_files = None
        self._stage_files_lock = None
        self.redeliver = redeliver
        # Crawler poll interval new executions get; None: the stage's (POLL_SECONDS).
        self.poll_seconds = None
        self.port = port
        # None: .local-stack in the project, or .local-stack-2, -3, ... while another stack (a
        # `local up` in another terminal) uses it.
        self._work_dir_chosen = work_dir is not None
        self.work_dir = work_dir or os.path.join(self.project_dir, DEFAULT_WORK_DIR)
        self.stage = stage
        self.resources = None
        self.embedded = None
        self.app = None
        self.events = None
        self.inbox = None
        self.deploy_result = None
        self._landed_keys = set()
        self._clients = {}

    # -- lifecycle ----------------------------------------------------------------------------
    def _start_embedded(self):
        from local import embedded

        if self._work_dir_chosen:
            return embedded.start(port=self.port, work_dir=self.work_dir)
        default = self.work_dir
        for number in range(1, DEFAULT_WORK_DIRS + 1):
            candidate = default if number == 1 else "%s-%d" % (default, number)
            try:
                started = embedded.start(port=self.port, work_dir=candidate)
            except embedded.WorkDirInUse as exc:
                in_use = exc
                continue
            if number > 1:
                log.info("%s is in use by another local stack: this one works in %s", default, candidate)
            self.work_dir = candidate
            return started
        raise in_use

    def start(self):
        """Start the server, deploy the stage, wire events and notifications. Returns self."""
        from local import embedded

        try:
            self.embedded = self._start_embedded()
            # moto keeps its resources per process, past a stopped server: a new stack starts
            # from an empty account, as a new deployment would.
            self.embedded.reset()
            log.info("stack up on %s", self.embedded.endpoint_url)
            self.deploy_result = self._deploy()
            self.resources = self.deploy_result.resources
            self._allow_stage_scripts()
            from local import moto_hooks

            moto_hooks.set_athena_max_concurrent_queries(
                self.deploy_result.settings.athena_max_concurrent_queries)
            for action in self.deny:
                self._deny(action)
            if self.enforce_iam:
                self._enforce_iam()
            self.app = ChaliceApp(self.project_dir, self.stage, log_path=self.lambda_log_path)
            deliver = fault_injection.FaultyTrigger(self._invoke_handler, self.embedded.faults, HANDLER_NAME)
            failures_queue_url = self.client("sqs").get_queue_url(
                QueueName=self.resources.landing_failures_queue)["QueueUrl"]
            self.events = LandingEvents(self.resources, deliver,
                                        s3_client=self.client("s3"), sqs_client=self.client("sqs"),
                                        redeliver=self.redeliver, failures_queue_url=failures_queue_url)
            self.events.configure()
            self.events.start()
            self.inbox = NotificationInbox(self.resources, sns_client=self.client("sns"),
                                           sqs_client=self.client("sqs"))
            self.inbox.subscribe()
        except BaseException:
            self.stop()
            raise
        return self

    def _allow_stage_scripts(self):
        from chalicelib import glue_jobs
        from chalicelib.resources import GLUE_ASSETS_PREFIX

        runner = self.embedded.job_runner
        runner.allowed_scripts = {self.resources.lake_uri(glue_jobs.asset_key(script))
                                  for script in (glue_jobs.JSON_TO_PARQUET_SCRIPT, glue_jobs.NORMALIZE_SCRIPT)}
        runner.allowed_library_prefix = self.resources.lake_uri(GLUE_ASSETS_PREFIX)
    def _enforce_iam(self):
        """From now on every request is checked against its caller's policies (moto's IAM
        enforcement): each Glue job run under its job's role, the state machine's tasks under
        its role; the stack's own plumbing (events, the in-process Lambdas, crawler and Athena
        engine) keeps the stack's credentials. docs/DEPLOY.md says what moto cannot check."""
        from local import moto_hooks

        r = self.resources
        moto_hooks.enforce_iam(r.account_id, r.region, r.role_arn(r.state_machine_role))
        self.embedded.job_runner.role_credentials = (
            lambda role_arn, session: moto_hooks.role_credentials(r.account_id, r.region, role_arn, session))
        log.info("IAM enforced: Glue jobs and the state machine run under their own roles")

    def _deny(self, action):
        """Remove ``action`` from every inline policy of the stage's roles (a statement left
        without actions goes); returns how many statements lost it."""
        iam = self.client("iam")
        prefix = self.resources.prefix + "-"
        removed = 0
        for page in iam.get_paginator("list_roles").paginate():
            for role in page["Roles"]:
                if not role["RoleName"].startswith(prefix):
                    continue
                for name in iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]:
                    document = iam.get_role_policy(RoleName=role["RoleName"], PolicyName=name)["PolicyDocument"]
                    statements = []
                    for statement in document["Statement"]:
                        actions = statement.get("Action")
                        actions = [actions] if isinstance(actions, str) else list(actions or [])
                        kept = [a for a in actions if a.lower() != action.lower()]
                        if len(kept) != len(actions):
                            removed += 1
                            if not kept:
                                continue
                            statement = dict(statement, Action=kept)
                        statements.append(statement)
                    iam.put_role_policy(RoleName=role["RoleName"], PolicyName=name,
                                        PolicyDocument=json.dumps(dict(document, Statement=statements)))
        log.info("--deny %s: removed from %d statement(s) of the stage's policies", action, removed)
        return removed

    def _invoke_handler(self, function_name, event):
        if self.poll_seconds is None:
            return self.app.invoke(function_name, event)
        # As if the stage's POLL_SECONDS were set otherwise for this function.
        return self.app.invoke_with_environment(function_name, event, {"POLL_SECONDS": str(self.poll_seconds)})

    def _deploy(self):
        import deploy

        # The deploy takes a stage's settings from the environment over what .chalice/config.json
        # holds: pass only what reaches AWS, so a run rewrites the checked-in local stage unchanged
        # whatever this shell sets, except that the local stage never waits between crawler polls.
        environ = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
        environ["POLL_SECONDS"] = str(POLL_SECONDS)
        # A local run lasts minutes: maintenance keeps a minute of the processed table's snapshots.
        environ["SNAPSHOT_RETENTION_SECONDS"] = str(LOCAL_SNAPSHOT_RETENTION_SECONDS)
        output = io.StringIO()
        # The deploy reads the stage's settings from .chalice/ and writes them back; --set values
        # stay written there until this run stops (then the files are put back).
        self._stage_files_lock = _lock_stage_files(self.project_dir, exclusive=bool(self.overrides))
        if self.overrides:
            self._saved_chalice_files = _read_files(os.path.join(self.project_dir, ".chalice"))
            log.info("settings for this run: %s", ", ".join(
                "%s=%s" % item for item in sorted(self.overrides.items())))
        try:
            result = deploy.up(self.stage, project_dir=self.project_dir, environ=environ, out=output,
                               overrides=self.overrides)
        except Exception:
            if output.getvalue().strip():
                log.error("deploy of stage %s failed; its output:\n%s", self.stage, output.getvalue().rstrip())
            raise
        finally:
            if not self.overrides:
                self._release_stage_files()
        log.debug("%s", output.getvalue().rstrip())
        counts = ", ".join("%d %s" % (n, action) for action, n in sorted(result.counts().items()))
        log.info("deployed stage %s (%d resources: %s)", self.stage, len(result.changes), counts)
        return result

    def stop(self):
        """Stop event delivery and the server (which restores the environment). Safe to call twice."""
        events, self.events = self.events, None
        if events is not None:
            events.stop()
        embedded, self.embedded = self.embedded, None
        if embedded is not None:
            embedded.stop()
        self._clients = {}
        saved, self._saved_chalice_files = self._saved_chalice_files, None
        if saved is not None:
            _restore_files(os.path.join(self.project_dir, ".chalice"), saved)
        self._release_stage_files()

    def _release_stage_files(self):
        held, self._stage_files_lock = self._stage_files_lock, None
        if held is not None:
            held.close()

    def __enter__(self):
        return self.start() if self.embedded is None else self

    def __exit__(self, *exc_info):
        self.stop()

    def client(self, service):
        """A boto3 client for the stack (one per service, shared)."""
        if service not in self._clients:
            if self.embedded is None:
                raise RuntimeError("the stack is not running: call start() first")
            self._clients[service] = self.embedded.client(service)
        return self._clients[service]

    @property
    def endpoint_url(self):
        if self.embedded is None:
            raise RuntimeError("the stack is not running: call start() first")
        return self.embedded.endpoint_url

    @property
    def region(self):
        return self.embedded.region if self.embedded is not None else DEFAULT_REGION

    @property
    def lambda_log_path(self):
        """The app's log lines (JSON, chalicelib/jsonlog.py), every function's: what Lambda would
        ship to the functions' log groups. The Glue jobs' are under ``glue/logs/`` beside it."""
        return os.path.join(self.work_dir, "lambda", "app.log")

    def glue_log_paths(self):
        """The Glue job runs' logs (stdout and stderr of each run), oldest first."""
        import glob

        return sorted(glob.glob(os.path.join(self.work_dir, "glue", "logs", "*", "*.log")), key=os.path.getmtime)

    # -- faults -------------------------------------------------------------------------------
    def inject_fault(self, step, once=False):
        """Make every attempt of ``step`` (local.faults.FAULT_STEPS) fail (``once``: only the first
        attempt in each execution; for a crawl step, the crawler's first crawl; for the trigger,
        each object's first delivery). Returns None."""
        self.embedded.faults.fail(fault_injection.target(self.resources, step), step, once=once)

    def set_crawl_seconds(self, seconds):
        """Every local crawl takes at least ``seconds`` from now on (0: as fast as it can)."""
        self.embedded.faults["crawl_seconds"] = float(seconds or 0)

    def clear_faults(self):
        """Remove every injected fault and crawl delay."""
        self.embedded.faults.clear()

    @property
    def crawls(self):
        """Crawls this stack has run so far (every crawler together)."""
        return sum(self.embedded.crawl_counts.values())

    # -- using it -----------------------------------------------------------------------------
    def land(self, path_or_bytes, key=None):
        """Put a file's bytes, unchanged, into the landing bucket under ``incoming/``.

        ``key`` defaults to ``incoming/<file name>`` (``incoming/batch.json`` for bytes), made unique
        within this stack; a ``key`` given is used as it is (landed again: a new version of it). Returns a ``Landed``; its S3 event starts the pipeline.
        """
        if isinstance(path_or_bytes, (bytes, bytearray)):
            body, name = bytes(path_or_bytes), "batch.json"
        else:
            with open(path_or_bytes, "rb") as f:
                body = f.read()
            name = os.path.basename(os.fspath(path_or_bytes))
        if key is None:
            key = unique_key(INCOMING_PREFIX + name, self._landed_keys)
        else:
            identifiers.object_key(key, INCOMING_PREFIX)  # ValueError naming what is wrong
        self._landed_keys.add(key)
        bucket = self.resources.landing_bucket
        response = self.client("s3").put_object(Bucket=bucket, Key=key, Body=body)
        landed = Landed(bucket=bucket, key=key, etag=response["ETag"].strip('"'), size=len(body),
                        version_id=response.get("VersionId"))
        log.info("landed %s (%d bytes)", landed.uri, landed.size)
        return landed

    def reconcile(self):
        """Run the app's reconciler once, as its schedule would. Returns its summary."""
        from local.serve import scheduled_event

        event = scheduled_event(self.resources, "%s-reconcile" % self.resources.prefix)
        return self.app.invoke("reconcile", event)

    def evaluate_alarms(self):
        """Evaluates the stage's CloudWatch alarms on the metrics published so far, as CloudWatch
        would (moto only stores them: local/alarms.py), and notifies the alarm topic of each
        change. Returns ``{alarm name: state}``."""
        from local import alarms

        return alarms.evaluate(self.client("cloudwatch"), self.resources.prefix + "-",
                               sns=self.client("sns"))

    def wait_for_dead_letters(self, target, timeout=120.0):
        """Wait until ``target`` events in all have been given up on (Lambda's retries exhausted,
        ``events.dropped``). Returns True when they have, False on timeout."""
        deadline = time.monotonic() + timeout
        while self.events.dropped < target:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
        return True

    def wait_for_executions(self, names, timeout=300.0, poll_seconds=0.2):
        """Wait until every named execution has ended (see ``wait_for_executions``)."""
        return wait_for_executions(self.client("stepfunctions"), self.resources, names,
                                   timeout=timeout, poll_seconds=poll_seconds)

    def status(self, limit=None):
        """The app's ``GET /status`` response body. Raises RuntimeError on a non-200 answer."""
        path = "/status" if limit is None else "/status?limit=%d" % limit
        code, body = self.app.get(path)
        if code != 200:
            raise RuntimeError("GET %s answered %s: %s" % (path, code, body))
        return body

    def notifications(self, wait_seconds=0):
        """Every message the SNS topic published so far (bodies, in arrival order)."""
        return self.inbox.collect(wait_seconds=wait_seconds)

    def query_totals(self, timeout=60.0):
        """Run the totals query over the whole processed table once, through Athena.

        Returns ``{summary key: number}`` (chalicelib.queries.parse_totals). Raises QueryFailed.
        """
        athena = self.client("athena")
        database = self.resources.glue_database
        qid = athena.start_query_execution(
            QueryString=totals_sql(database, self.resources.processed_table),
            QueryExecutionContext={"Database": database},
            WorkGroup=self.resources.athena_workgroup,
        )["QueryExecutionId"]
        deadline = time.monotonic() + timeout
        while True:
            status = athena.get_query_execution(QueryExecutionId=qid)["QueryExecution"]["Status"]
            if status["State"] == "SUCCEEDED":
                break
            if status["State"] in ("FAILED", "CANCELLED"):
                raise QueryFailed("totals query %s %s: %s" % (
                    qid, status["State"], status.get("StateChangeReason", "no reason given")))
            if time.monotonic() >= deadline:
                raise QueryFailed("totals query %s still %s after %g s" % (qid, status["State"], timeout))
            time.sleep(0.1)
        rows = athena.get_query_results(QueryExecutionId=qid)["ResultSet"]["Rows"]
        if len(rows) < 2:
            raise QueryFailed("totals query %s returned no data row" % qid)
        return parse_totals([cell.get("VarCharValue") for cell in rows[1]["Data"]])


def _lock_stage_files(project_dir, exclusive):
    """The project's STAGE_FILES_LOCK, held shared (a run deploying) or exclusive (a run with
    --set settings); waits, and says so, while another run holds it the other way."""
    handle = open(os.path.join(project_dir, STAGE_FILES_LOCK), "a")
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    try:
        fcntl.flock(handle.fileno(), mode | fcntl.LOCK_NB)
    except OSError:
        log.info("waiting for another local run in this project: it is deploying the stage, or its "
                 "--set settings are in .chalice/ until it ends")
        fcntl.flock(handle.fileno(), mode)
    return handle


def _read_files(folder):
    """``{name: bytes}`` of the files directly in ``folder`` (none when it is missing)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return {}
    files = {}
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                files[name] = handle.read()
    return files


def _restore_files(folder, saved):
    """Put ``folder``'s files back to ``saved`` (``_read_files``): rewrite what changed, remove
    what is new."""
    for name, body in _read_files(folder).items():
        if name not in saved:
            os.remove(os.path.join(folder, name))
        elif body != saved[name]:
            with open(os.path.join(folder, name), "wb") as handle:
                handle.write(saved[name])
    for name, body in saved.items():
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            with open(path, "wb") as handle:
                handle.write(body)


def unique_key(key, taken):
    """``key``, or ``<folder>/<stem>-N.<ext>`` with the smallest N >= 2 not in ``taken``.

    Two landed files of the same name must not overwrite each other: the first execution would
    read the second file.
    """
    folder, _, name = key.rpartition("/")
    stem, dot, ext = name.partition(".")
    candidate, n = key, 1
    while candidate in taken:
        n += 1
        candidate = "%s/%s-%d%s%s" % (folder, stem, n, dot, ext)
    return candidate


def wait_for_executions(sfn, resources, names, timeout=300.0, poll_seconds=0.2):
    """Wait until every named execution of the stage's state machine has ended.

    An execution that does not exist yet is waited for (its S3 event may still be on the way).
    Returns ``{name: describe_execution response}`` in the order given. Raises ExecutionTimeout
    naming the executions still running (or never started) after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    done, state = {}, {name: None for name in names}
    while True:
        # One ListExecutions per poll, however many are awaited; each is described once, when it ends.
        listed = _execution_states(sfn, resources.state_machine_arn)
        for name in names:
            if name in done or name not in listed:
                continue
            state[name] = listed[name]
            if listed[name] in TERMINAL_STATES:
                described = sfn.describe_execution(executionArn=resources.execution_arn(name))
                done[name] = described
                log.info("execution %s: %s in %s", name, described["status"], _duration(described))
        if len(done) == len(state):
            return {name: done[name] for name in names}
        if time.monotonic() >= deadline:
            raise ExecutionTimeout(timeout, {n: s for n, s in state.items() if n not in done})
        time.sleep(poll_seconds)


def _execution_states(sfn, state_machine_arn):
    """``{execution name: status}`` of every execution of the state machine (none before it exists)."""
    states = {}
    try:
        for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=state_machine_arn):
            states.update((e["name"], e["status"]) for e in page["executions"])
    except ClientError as error:
        if error.response["Error"]["Code"] != "StateMachineDoesNotExist":
            raise
    return states


def _duration(described):
    start, stop = described.get("startDate"), described.get("stopDate")
    if start is None or stop is None:
        return "?"
    return "%.1f s" % (stop - start).total_seconds()

