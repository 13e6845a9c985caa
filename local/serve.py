"""``python -m local up``: the embedded stack as a long-running service, for development.

``chalice local`` serves an app's routes but runs neither its schedule nor its S3 events. Here the
whole app runs: the stack is started and the ``local`` stage deployed (``local.stack.LocalStack``),
the app's routes (the ``/status`` API and the ``/`` dashboard) are served over HTTP on loopback,
the app's scheduled handler runs once at start and then on its schedule, and every object anyone
puts under ``incoming/`` in the landing bucket (``aws s3 cp``, boto3, ...) reaches the
``on_landing`` handler as its S3 event. It keeps going until Ctrl-C or SIGTERM, then stops every
thread and the stack and exits 0. The log has one line per event: batches generated, S3 events
delivered, executions ended, HTTP requests served.
"""
import contextlib
import datetime as dt
import http.server
import logging
import signal
import sys
import threading
import time
import uuid

from chalice.app import Rate

from local import lockdown
from local.cli import DEFAULT_PORT
from local.run import _uninterruptible, short_cause

log = logging.getLogger("local.serve")

LOOPBACK = "127.0.0.1"
SCHEDULED_HANDLER = "generate_batch"
RECONCILE_HANDLER = "reconcile"
ALARM_EVALUATION_SECONDS = 60
EXIT_FAILED = 1
_RATE_SECONDS = {Rate.MINUTES: 60, Rate.HOURS: 3600, Rate.DAYS: 86400}
# Headers the server sets itself from the body it sends.
_HOP_HEADERS = {"content-length", "transfer-encoding", "connection"}


# A slow or stalled client must not hold a thread: each connection's reads and writes time out.
SOCKET_TIMEOUT_SECONDS = 10
# Requests served at once; more wait for a free thread (the app serializes its calls anyway).
MAX_THREADS = 8
MAX_BODY_BYTES = 1024 * 1024


class _AppRequestHandler(http.server.BaseHTTPRequestHandler):
    """Hands each HTTP request to the server's ``handle`` and writes back its response."""

    server_version = "shipping-etl-local"
    timeout = SOCKET_TIMEOUT_SECONDS

    def _refuse(self, status, reason):
        payload = (reason + "\n").encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        log.warning("http %s %s -> %d: %s", self.command, self.path, status, reason)

    def _forward(self):
        started = time.monotonic()
        reason = lockdown.refusal(dict(self.headers.items()))
        if reason:
            return self._refuse(403, reason)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return self._refuse(400, "Content-Length is not a number")
        if length > MAX_BODY_BYTES:
            return self._refuse(413, "request body over %d bytes" % MAX_BODY_BYTES)
        body = self.rfile.read(length) if length > 0 else b""
        try:
            response = self.server.handle(self.command, self.path, dict(self.headers.items()), body)
            status, headers, payload = response.status_code, dict(response.headers or {}), response.body
        except Exception as error:  # the app's own errors are answers already; this is the adapter's
            log.error("http %s %s failed: %s: %s", self.command, self.path, type(error).__name__, error)
            status, headers = 500, {"Content-Type": "text/plain; charset=utf-8"}
            payload = "The local server failed to handle the request: %s\n" % error
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        payload = payload or b""
        self.send_response(status)
        if not any(name.lower() == "content-type" for name in headers):
            # API Gateway's (and chalice local's) default for a Lambda answer without one.
            headers["Content-Type"] = "application/json"
        for name, value in lockdown.without_cors(headers.items()):
            if name.lower() not in _HOP_HEADERS:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        log.info("http %s %s -> %d (%d ms)", self.command, self.path, status,
                 (time.monotonic() - started) * 1000)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _forward

    def log_message(self, format, *args):
        # Each request is logged once by _forward; http.server's own lines would repeat it.
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # A restarted service gets its port back at once, not after TIME_WAIT.
    allow_reuse_address = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_THREADS)

    def process_request(self, request, client_address):
        # At most MAX_THREADS requests at once: the accept loop waits for a free slot.
        self._slots.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class AppServer:
    """An app's HTTP routes served on a loopback port.

    ``handle(method, path, headers, body)`` answers each request with an object holding
    ``status_code``, ``headers`` and ``body`` (chalice.test's HTTPResponse, as
    ``ChaliceApp.request`` returns it). The port is bound when the object is made, so a taken
    port fails at once (OSError); requests are served from ``start()`` until ``stop()``.
    """

    def __init__(self, handle, port=0, host=LOOPBACK):
        try:
            self._server = _Server((host, port), _AppRequestHandler)
        except OSError as error:
            raise OSError(error.errno, "cannot serve on %s:%d (%s): stop what uses the port, or pass "
                          "--port 0 for any free port" % (host, port, error.strerror)) from None
        self._server.handle = handle
        self._thread = None

    @property
    def port(self):
        return self._server.server_address[1]

    @property
    def url(self):
        """``http://127.0.0.1:<port>``."""
        return "http://%s:%d" % (self._server.server_address[0], self.port)

    def start(self):
        """Serve requests on a daemon thread. Returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                            name="app-http", daemon=True)
            self._thread.start()
        return self

    def stop(self):
        """Stop serving and release the port. Idempotent."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._server.shutdown()
            thread.join(5)
        self._server.server_close()


class Schedule:
    """Runs ``job()`` on a daemon thread once at start, then every ``interval_seconds``, until
    ``stop()``. A failing run is logged and the schedule goes on, as EventBridge keeps invoking."""

    def __init__(self, job, interval_seconds, name="schedule"):
        if not interval_seconds > 0:
            raise ValueError("interval_seconds must be > 0, got %r" % (interval_seconds,))
        self.job = job
        self.interval_seconds = interval_seconds
        self.name = name
        self.runs = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        """Start the thread (its first run is now). Returns self."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.runs += 1
            try:
                self.job()
            except Exception as error:
                self.failures += 1
                if self._stop.is_set():
                    break  # the stack went away while stopping
                log.error("%s: run %d failed (%s: %s); next run in %g s", self.name, self.runs,
                          type(error).__name__, error, self.interval_seconds)
            if self._stop.wait(self.interval_seconds):
                break

    def stop(self, timeout=30):
        """Stop the thread, waiting up to ``timeout`` s for a run in progress."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)


class ExecutionWatcher:
    """Logs one line for every execution of the state machine that ends: its status, duration,
    row counts, or where and why it failed. Polls ListExecutions on a daemon thread."""

    def __init__(self, sfn_client, state_machine_arn, interval_seconds=1.0):
        self.sfn = sfn_client
        self.state_machine_arn = state_machine_arn
        self.interval_seconds = interval_seconds
        self.ended = {}  # execution name -> final status
        self._running = set()
        self._stop = threading.Event()
        self._thread = None

    def poll_once(self):
        """Check the newest executions once; returns the summaries of those that ended since the
        last check (each also logged)."""
        from chalicelib import status as summaries

        listed = self.sfn.list_executions(stateMachineArn=self.state_machine_arn, maxResults=100)
        ended = []
        for item in listed.get("executions", []):
            name = item["name"]
            if name in self.ended:
                continue
            if item["status"] == "RUNNING":
                self._running.add(name)
                continue
            self._running.discard(name)
            summary = summaries.summarize(self.sfn.describe_execution(executionArn=item["executionArn"]))
            self.ended[name] = summary["status"]
            log.info("%s", describe_ended(summary))
            ended.append(summary)
        return ended

    def start(self):
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="execution-watcher", daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval_seconds):
            try:
                self.poll_once()
            except Exception as error:
                if self._stop.is_set():
                    break
                log.warning("execution watcher: %s: %s; retrying", type(error).__name__, error)

    def stop(self, timeout=10):
        """Stop polling, after one last check so that a run that ended just before is logged."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            try:
                self.poll_once()
            except Exception as error:
                log.warning("execution watcher: last check failed: %s: %s", type(error).__name__, error)


def describe_ended(summary):
    """One log line for an ended execution's summary (chalicelib.status.summarize)."""
    duration = summary.get("duration_seconds")
    took = " in %.1f s" % duration if duration is not None else ""
    if summary.get("status") == "SUCCEEDED":
        rows = summary.get("rows") or {}
        totals = summary.get("totals") or {}
        counts = ", ".join("%s %s" % (rows.get(k), k) for k in ("read", "valid", "quarantined", "duplicates")
                           if rows.get(k) is not None)
        cost = totals.get("shipping_cost")
        return "execution %s SUCCEEDED%s: %s%s" % (
            summary.get("name"), took, counts or "no row counts",
            "; total cost $%.2f" % cost if isinstance(cost, (int, float)) else "")
    where = " at %s" % summary["failed_step"] if summary.get("failed_step") else ""
    cause = short_cause(summary.get("cause")) or ""
    cause = cause if len(cause) <= 300 else cause[:300] + "..."
    return "execution %s %s%s%s: %s%s" % (
        summary.get("name"), summary.get("status"), where, took, summary.get("error") or "no error name",
        " (%s)" % cause if cause else "")


def schedule_seconds(app, handler_name=SCHEDULED_HANDLER):
    """Seconds between runs of the app's ``@app.schedule`` handler ``handler_name``.

    Raises ValueError when the app has no such handler or it runs on a cron expression (pass
    --every-minutes then).
    """
    for source in app.event_sources:
        if source.handler_string.rsplit(".", 1)[-1] != handler_name:
            continue
        expression = getattr(source, "schedule_expression", None)
        if isinstance(expression, Rate) and expression.unit in _RATE_SECONDS:
            return expression.value * _RATE_SECONDS[expression.unit]
        raise ValueError("%s runs on %r, not a rate: pass --every-minutes"
                         % (handler_name, getattr(expression, "to_string", lambda: expression)()))
    raise ValueError("the app has no scheduled handler %r" % handler_name)


def scheduled_event(resources, rule_name, now=None):
    """The event EventBridge hands a scheduled Lambda (``Scheduled Event`` from ``aws.events``)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": resources.account_id,
        "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": resources.region,
        "resources": ["arn:aws:events:%s:%s:rule/%s" % (resources.region, resources.account_id, rule_name)],
        "detail": {},
    }


class LocalService:
    """The stack, the app's HTTP routes, its schedule and its S3 events, running together.

    ``port``: the app's HTTP port on 127.0.0.1 (0: any free port). ``aws_port``: the embedded AWS
    endpoint's port (default: ``port + 1``, or any free port when ``port`` is 0).
    ``every_minutes``: the generator's interval (default: the app's own schedule). ``rows``:
    records per generated batch (default: the stage's GENERATOR_ROWS).
    """

    def __init__(self, port=DEFAULT_PORT, aws_port=None, every_minutes=None, rows=None, work_dir=None,
                 project_dir=None):
        from local.stack import PROJECT_DIR

        self.port = port
        if aws_port is None:
            aws_port = port + 1 if port and port < 65535 else 0
        self.aws_port = aws_port
        self.every_minutes = every_minutes
        self.rows = rows
        self.work_dir = work_dir
        self.project_dir = project_dir or PROJECT_DIR
        self.stack = None
        self.server = None
        self.schedule = None
        self.reconcile_schedule = None
        self.alarm_schedule = None
        self.watcher = None

    def start(self):
        """Bind the HTTP port, start and deploy the stack, then serve, watch and generate.
        Returns self. Raises OSError for a taken port, DeployError, RuntimeError; a failed start
        leaves nothing running."""
        from local.stack import LocalStack

        try:
            # The port first: a taken one fails in milliseconds, not after the deploy.
            self.server = AppServer(self._handle, port=self.port)
            self.stack = LocalStack(project_dir=self.project_dir, port=self.aws_port, work_dir=self.work_dir)
            self.stack.start()
            interval = (self.every_minutes * 60 if self.every_minutes
                        else schedule_seconds(self.stack.app.app))
            self.server.start()
            log.info("serving the app on %s", self.server.url)
            self.watcher = ExecutionWatcher(self.stack.client("stepfunctions"),
                                            self.stack.resources.state_machine_arn).start()
            self.schedule = Schedule(self.generate_batch, interval, name="schedule").start()
            self.reconcile_schedule = Schedule(
                self.reconcile, schedule_seconds(self.stack.app.app, RECONCILE_HANDLER), name="reconcile").start()
            # CloudWatch evaluates alarms every minute; moto never does (local/alarms.py).
            self.alarm_schedule = Schedule(self.stack.evaluate_alarms, ALARM_EVALUATION_SECONDS,
                                           name="alarms").start()
        except BaseException:
            self.stop()
            raise
        return self

    def _handle(self, method, path, headers, body):
        return self.stack.app.request(method, path, headers=headers, body=body)

    def generate_batch(self):
        """Invoke the app's scheduled handler as EventBridge would. Returns its result."""
        event = scheduled_event(self.stack.resources, "%s-%s" % (self.stack.resources.prefix, SCHEDULED_HANDLER))
        if self.rows:
            batch = self.stack.app.invoke_with_environment(
                SCHEDULED_HANDLER, event, {"GENERATOR_ROWS": str(self.rows)})
        else:
            batch = self.stack.app.invoke(SCHEDULED_HANDLER, event)
        log.info("schedule: %s put %s rows into s3://%s/%s", SCHEDULED_HANDLER, batch.get("rows"),
                 batch.get("bucket"), batch.get("key"))
        return batch

    def reconcile(self):
        """Invoke the app's reconciler as its schedule would. Returns its summary."""
        summary = self.stack.reconcile() or {}
        if summary.get("reconciled") or summary.get("dead_letters_resolved"):
            log.info("schedule: %s started %d execution(s), resolved %d dead-lettered event(s)",
                     RECONCILE_HANDLER, summary.get("reconciled", 0), summary.get("dead_letters_resolved", 0))
        return summary

    @property
    def url(self):
        return self.server.url

    def banner(self):
        """What a developer needs to use the service: URLs, the landing bucket, upload commands."""
        endpoint = self.stack.endpoint_url
        ca_bundle = self.stack.embedded.ca_bundle
        bucket = self.stack.resources.landing_bucket
        minutes = self.schedule.interval_seconds / 60.0
        return "\n".join([
            "Shipping ETL is running locally (stage %s). Ctrl-C stops it." % self.stack.stage,
            "  dashboard     %s/" % self.url,
            "  status API    %s/status   (one run: %s/status/<name>)" % (self.url, self.url),
            "  AWS endpoint  %s   (S3, Step Functions, Glue, Athena, SNS, SQS; credentials: any)" % endpoint,
            "  landing       s3://%s/incoming/" % bucket,
            "  generator     %s every %g min%s, first batch now" % (
                SCHEDULED_HANDLER, minutes, " (%d rows)" % self.rows if self.rows else ""),
            "  CA bundle     %s   (the endpoint's HTTPS certificate, made at start)" % ca_bundle,
            "  alarms        the stage's CloudWatch alarms, evaluated every %d s (dashboard: data quality)"
            % ALARM_EVALUATION_SECONDS,
            "Upload a file of NDJSON records to start a run:",
            "  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=testing AWS_DEFAULT_REGION=%s AWS_CA_BUNDLE=%s \\"
            % (self.stack.region, ca_bundle),
            "    aws s3 cp shipments.json s3://%s/incoming/ --endpoint-url %s" % (bucket, endpoint),
            "  python -c \"import boto3; boto3.client('s3', endpoint_url='%s', region_name='%s', "
            "aws_access_key_id='testing', aws_secret_access_key='testing', aws_session_token='testing', verify='%s')"
            ".upload_file('shipments.json', '%s', 'incoming/shipments.json')\"" % (
                endpoint, self.stack.region, ca_bundle, bucket),
        ])

    def stop(self):
        """Stop generating, watching and serving, then the stack. Idempotent."""
        for attribute in ("schedule", "reconcile_schedule", "alarm_schedule"):
            schedule = getattr(self, attribute)
            setattr(self, attribute, None)
            if schedule is not None:
                schedule.stop()
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            watcher.stop()
        server, self.server = self.server, None
        if server is not None:
            server.stop()
        stack, self.stack = self.stack, None
        if stack is not None:
            stack.stop()


def configure_logging():
    """One timestamped line per event on stderr; the engines' chatter stays quiet."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    for name in ("local", "deploy"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
    for noisy in ("werkzeug", "botocore", "boto3", "urllib3", "moto", "local.embedded"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


@contextlib.contextmanager
def _signals_stop(stop):
    """Ctrl-C (SIGINT) and SIGTERM (a `kill`, a supervisor) set ``stop``: the service then
    finishes what it is starting and shuts down in order. A second Ctrl-C interrupts at once.
    Installed even where SIGINT was ignored on start (a `&` job of a script): stopping the
    service with Ctrl-C or `kill -INT` is its documented use."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum, frame):
        if signum == signal.SIGINT and stop.is_set():
            raise KeyboardInterrupt
        log.info("stopping (%s)", signal.Signals(signum).name)
        stop.set()

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(args, out=None, stop=None):
    """Entry point of ``python -m local up`` with parsed arguments: runs until Ctrl-C, SIGTERM or
    ``stop`` (a threading.Event) is set. Returns the exit status: 0 after a clean stop, 1 when
    the service could not start."""
    from deploy import DeployError

    out = out or sys.stdout
    stop = stop or threading.Event()
    service = LocalService(port=args.port, aws_port=args.aws_port, every_minutes=args.every_minutes,
                           rows=args.rows, work_dir=args.work_dir)
    with _signals_stop(stop):
        try:
            try:
                service.start()
            except (OSError, RuntimeError, ValueError, DeployError) as error:
                log.error("could not start: %s", error)
                return EXIT_FAILED
            if not stop.is_set():
                out.write(service.banner() + "\n")
                out.flush()
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            log.info("interrupted: stopping")
        finally:
            with _uninterruptible():
                service.stop()
    log.info("stopped")
    return 0
