"""The embedded stack: moto's server on a loopback port, in this process, with the adapters that
make Glue jobs, crawlers and Athena queries actually run.

    with embedded.start() as stack:      # every boto3 client now reaches stack.endpoint_url
        ...

``start()`` points this process's environment at the server (``AWS_ENDPOINT_URL``, fake
credentials, region), so boto3 clients made afterwards, and subprocesses such as Glue jobs, use
it; ``stop()`` restores the environment.
"""
import logging
import os
import socket
import threading
import urllib.request

import boto3

from chalicelib.asl import OUTCOME_ATTRIBUTE, OUTCOME_FAILED
from chalicelib.settings import DEFAULT_REGION
from local import moto_hooks
from local.athena_engine import AthenaEngine
from local.crawler import S3Crawler
from local import tls
from local.glue_runner import GlueJobRunner

LOG = logging.getLogger(__name__)

_FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
}
# Request logs and the Step Functions interpreter's failure dumps drown the pipeline's output;
# failures still surface through the APIs (execution history, job run ErrorMessage, ...).
_QUIET_LOGGERS = ("werkzeug", "moto.stepfunctions.parser")

_running_lock = threading.Lock()
_running = None  # the EmbeddedStack of this process, while started


class InjectedFault(Exception):
    """A failure the local stack made on purpose (``Faults``); never the engines' own fault."""

    injected = True
    user_error = False


class Faults(dict):
    """Fault injection, read by the adapters on every job run, crawl, query and publish (change it
    at any time; ``clear()`` removes every fault).

    Keys:
      ``crawl_seconds`` (float): every crawl takes at least this long (the crawler stays RUNNING),
      as AWS crawls take minutes; lets a pipeline's polling loop be exercised.

    ``fail(target, step, once)`` makes the adapter behind ``target`` fail:
      ``("job", job name)`` its runs end FAILED (a ``--catalog_only`` run is the crawl step's
      catalog check, not a run of the job's step: it is left alone);
      ``("crawler", crawler name)`` its crawls end FAILED;
      ``("query", None)`` every Athena query ends FAILED;
      ``("publish", topic ARN)`` its publishes are throttled, except failure notifications
      (message attribute ``outcome`` = ``failed``), so the failure path can still report.
    With ``once`` only the first attempt per key fails: per source id for job runs and
    publishes, per query text (which names the source) for queries, per crawler for crawls
    (a crawler is shared by every execution).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._rules = {}  # target -> (step, once)
        self._failed_keys = set()  # (target, key) already failed once

    def fail(self, target, step, once=False):
        """Arms a fault for ``target`` (see the class docstring), reported as ``step``. Returns None."""
        with self._lock:
            self._rules[target] = (step, bool(once))

    def clear(self):
        with self._lock:
            super().clear()
            self._rules.clear()
            self._failed_keys.clear()

    @property
    def armed(self):
        """``{target: (step, once)}`` of the faults armed now."""
        with self._lock:
            return dict(self._rules)

    def check(self, target, key):
        """The failure message when this attempt at ``target`` must fail, else None."""
        with self._lock:
            rule = self._rules.get(target)
            if rule is None:
                return None
            step, once = rule
            if once:
                if (target, key) in self._failed_keys:
                    return None
                self._failed_keys.add((target, key))
                return ("Injected fault (--fail-once %s): the first attempt of step %s fails"
                        % (step, step))
            return "Injected fault (--fail %s): every attempt of step %s fails" % (step, step)


def _is_true(value):
    return str(value or "").strip().lower() in ("1", "true", "yes")


class _FaultyJobRunner:
    """Delegates to the real job runner unless a job fault says this run fails."""

    def __init__(self, runner, faults):
        self._runner = runner
        self._faults = faults

    def run(self, job, arguments):
        if not _is_true(arguments.get("--catalog_only")):
            key = arguments.get("--source_id") or arguments.get("--source_uri")
            message = self._faults.check(("job", job.get("Name")), key)
            if message:
                return False, message
        return self._runner.run(job, arguments)


class _FaultyCrawler:
    """Delegates to the real crawler, applying the crawl faults first; counts the crawls."""

    def __init__(self, crawler, faults):
        self._crawler = crawler
        self._faults = faults
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.counts = {}  # crawler name -> crawls started

    def stop_waiting(self):
        """Ends every crawl's ``crawl_seconds`` wait at once: stopping the stack must not wait
        for a slow crawl (Ctrl-C during ``local run --crawl-seconds``)."""
        self._stopping.set()

    def crawl(self, definition):
        name = definition.get("Name")
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + 1
        delay = float(self._faults.get("crawl_seconds") or 0)
        if delay > 0 and self._stopping.wait(delay):
            return False, "the local stack stopped during the crawl"
        message = self._faults.check(("crawler", name), name)
        if message:
            return False, message
        return self._crawler.crawl(definition)


class _FaultyQueryEngine:
    """Delegates to the real query engine unless a query fault says this query fails."""

    def __init__(self, engine, faults):
        self._engine = engine
        self._faults = faults

    def execute(self, sql, database, output_location):
        message = self._faults.check(("query", None), sql)
        if message:
            raise InjectedFault(message)
        return self._engine.execute(sql, database, output_location)


def _publish_fault(faults):
    def refusal(topic_arn, subject, attributes):
        if attributes.get(OUTCOME_ATTRIBUTE) == OUTCOME_FAILED:
            return None  # the failure path must still be able to report
        return faults.check(("publish", topic_arn), attributes.get("source_id") or subject)
    return refusal


class EmbeddedStack:
    """A running embedded stack. Use ``stop()`` or a ``with`` block to shut it down."""

    def __init__(self, server, endpoint_url, port, region, work_dir, job_runner, crawler, query_engine,
                 saved_environment, saved_sfn_setting, saved_log_levels):
        self._server = server
        self.endpoint_url = endpoint_url
        self.port = port
        self.region = region
        self.work_dir = work_dir
        self.job_runner = job_runner
        self.crawler = crawler
        self.query_engine = query_engine
        self.faults = Faults()
        self._counted_crawler = None
        self._saved_environment = saved_environment
        self._saved_sfn_setting = saved_sfn_setting
        self._saved_log_levels = saved_log_levels
        self._stopped = False
        self.ca_bundle = None  # the CA file clients trust the HTTPS endpoint with (start() sets it)

    @property
    def crawl_counts(self):
        """``{crawler name: crawls started}`` since the stack started (a copy)."""
        counter = self._counted_crawler
        return dict(counter.counts) if counter is not None else {}

    def client(self, service_name):
        """A boto3 client of this stack (explicit endpoint and region: independent of os.environ)."""
        return boto3.client(service_name, endpoint_url=self.endpoint_url, region_name=self.region,
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            aws_session_token="testing", verify=self.ca_bundle)

    def reset(self):
        """Forget every resource (moto's /moto-api/reset); the hooks stay installed. Returns None."""
        import ssl

        request = urllib.request.Request(self.endpoint_url + "/moto-api/reset", data=b"", method="POST")
        context = ssl.create_default_context(cafile=self.ca_bundle) if self.ca_bundle else None
        with urllib.request.urlopen(request, timeout=30, context=context):
            pass
        self.faults.clear()

    def stop(self):
        """Uninstall the hooks, stop the server, restore the environment. Idempotent."""
        global _running
        if self._stopped:
            return
        self._stopped = True
        if self._counted_crawler is not None:
            self._counted_crawler.stop_waiting()
        moto_hooks.uninstall()
        moto_hooks.set_state_machine_execution(self._saved_sfn_setting)
        try:
            self.job_runner.close()
            self._server.stop()
        finally:
            _restore_environment(self._saved_environment)
            for name, level in self._saved_log_levels.items():
                logging.getLogger(name).setLevel(level)
            with _running_lock:
                if _running is self:
                    _running = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()
        return False

    def __repr__(self):
        return "EmbeddedStack(endpoint_url=%r, work_dir=%r%s)" % (
            self.endpoint_url, self.work_dir, ", stopped" if self._stopped else "")


def _set_environment(values):
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    return saved


def _restore_environment(saved):
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _ensure_port_free(port):
    """Raise OSError if 127.0.0.1:port cannot be bound (moto's server thread would only print
    the error and never signal that it is ready)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise OSError(exc.errno, "port %d on 127.0.0.1 is not free (%s): stop what uses it, or "
                          "pass port=0 for any free port" % (port, exc.strerror)) from None


def start(port=0, work_dir=".local-stack"):
    """Start moto's server on 127.0.0.1 (a free port when 0) with the adapters installed.

    Sets ``AWS_ENDPOINT_URL``, ``MOTO_PORT`` (Step Functions' Task states call the server there),
    fake credentials and ``AWS_DEFAULT_REGION``/``AWS_REGION`` in os.environ; turns on Step
    Functions' execution of state machines. Returns the EmbeddedStack. Raises RuntimeError when a
    stack is already running in this process (moto's backends and the hooks are per process),
    HookPointMissing when the installed moto does not fit the hooks, OSError when the port is taken.
    """
    global _running
    with _running_lock:
        if _running is not None:
            raise RuntimeError("an embedded stack is already running in this process at %s; stop() it first"
                               % _running.endpoint_url)
        moto_hooks.check_hook_points()
        if port:
            _ensure_port_free(port)
        work_dir = os.path.abspath(work_dir)
        os.makedirs(work_dir, exist_ok=True)
        saved_log_levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL if name != "werkzeug" else logging.ERROR)

        # HTTPS, as AWS: a certificate made now, trusted through the stack's own CA file.
        ca_bundle, certificate, private_key = tls.make_certificates(os.path.join(work_dir, "tls"))
        server = moto_hooks.threaded_server("127.0.0.1", port, certificate, private_key)
        server.start()
        host, bound_port = server.get_host_and_port()
        endpoint_url = "https://%s:%d" % (host, bound_port)
        environment = dict(_FAKE_CREDENTIALS)
        environment.update({
            "AWS_CA_BUNDLE": ca_bundle,
            "AWS_ENDPOINT_URL": endpoint_url,
            "MOTO_PORT": str(bound_port),
            "AWS_DEFAULT_REGION": DEFAULT_REGION,
            "AWS_REGION": DEFAULT_REGION,
        })
        saved_environment = _set_environment(environment)
        saved_sfn_setting = moto_hooks.set_state_machine_execution(True)
        try:
            session = boto3.session.Session(region_name=DEFAULT_REGION, aws_access_key_id="testing",
                                            aws_secret_access_key="testing", aws_session_token="testing")
            s3 = session.client("s3", endpoint_url=endpoint_url, verify=ca_bundle)
            glue = session.client("glue", endpoint_url=endpoint_url, verify=ca_bundle)
            job_runner = GlueJobRunner(s3, os.path.join(work_dir, "glue"))
            crawler = S3Crawler(glue, s3, os.path.join(work_dir, "crawler"))
            query_engine = AthenaEngine(glue, s3, os.path.join(work_dir, "athena"))
            stack = EmbeddedStack(server, endpoint_url, bound_port, DEFAULT_REGION, work_dir, job_runner, crawler,
                                  query_engine, saved_environment, saved_sfn_setting, saved_log_levels)
            stack.ca_bundle = ca_bundle
            stack._counted_crawler = _FaultyCrawler(crawler, stack.faults)
            moto_hooks.install(_FaultyJobRunner(job_runner, stack.faults), stack._counted_crawler,
                               _FaultyQueryEngine(query_engine, stack.faults),
                               publish_fault=_publish_fault(stack.faults), ca_bundle=ca_bundle)
        except BaseException:
            moto_hooks.set_state_machine_execution(saved_sfn_setting)
            _restore_environment(saved_environment)
            for name, level in saved_log_levels.items():
                logging.getLogger(name).setLevel(level)
            server.stop()
            raise
        _running = stack
        LOG.info("embedded stack at %s (work dir %s)", endpoint_url, work_dir)
        return stack


def running():
    """The EmbeddedStack started in this process, or None."""
    return _running

