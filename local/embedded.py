"""The embedded stack: moto's server on a loopback port, in this process, with the adapters that
make Glue jobs, crawlers and Athena queries actually run.

    with embedded.start() as stack:      # every boto3 client now reaches stack.endpoint_url
        ...

``start()`` points this process's environment at the server (``AWS_ENDPOINT_URL``, fake
credentials, region), so boto3 clients made afterwards, and subprocesses such as Glue jobs, use
it; ``stop()`` restores the environment.

Roles: ``EmulatedAws`` (here) is the AWS endpoint alone: moto plus the engines that run what moto
only records. ``local.stack.LocalStack`` deploys the ``local`` stage onto it and wires the app
(S3 events, notifications); ``local.serve.LocalService`` serves that stack for ``local up``.
"""
import fcntl
import logging
import os
import socket
import threading
import urllib.request

import boto3
from botocore.config import Config

from chalicelib.settings import DEFAULT_REGION
from local import faults as fault_injection
from local import moto_hooks, tls
from local.athena_engine import AthenaEngine
from local.crawler import S3Crawler
from local.glue_runner import PRELOAD_MODULES, GlueJobRunner

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
_running = None  # the EmulatedAws of this process, while started


# Connections each of the stack's own S3 and Glue clients keeps open (see _start_in).
SHARED_CLIENT_CONNECTIONS = 64
# In a work dir while a stack uses it: holds the lock (flock, released when the process ends)
# and that process's id.
IN_USE_FILE = ".in-use"


class WorkDirInUse(OSError):
    """Another local stack (another process) is using the work dir."""

    def __init__(self, work_dir, holder):
        self.work_dir = work_dir
        super().__init__("%s is in use by another local stack (%s): stop it, or give this one another "
                         "folder with --work-dir" % (work_dir, "process %s" % holder if holder else "another process"))


def _claim(work_dir):
    """Locks ``work_dir`` for this process's stack; returns the open lock file. Two stacks in one
    folder would overwrite each other's TLS certificate (the other's clients then fail with
    CERTIFICATE_VERIFY_FAILED) and share job and query caches. Raises WorkDirInUse."""
    path = os.path.join(work_dir, IN_USE_FILE)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise WorkDirInUse(work_dir, holder) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


class EmulatedAws:
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
        self.faults = fault_injection.Faults()
        self._counted_crawler = None
        self._saved_environment = saved_environment
        self._saved_sfn_setting = saved_sfn_setting
        self._saved_log_levels = saved_log_levels
        self._stopped = False
        self.ca_bundle = None  # the CA file clients trust the HTTPS endpoint with (start() sets it)
        self.claim = None  # the work dir's lock file (start() sets it, stop() releases it)

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
            if self.claim is not None:
                self.claim.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()
        return False

    def __repr__(self):
        return "EmulatedAws(endpoint_url=%r, work_dir=%r%s)" % (
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


def speed_patches_wanted(environ=None):
    """Whether moto's speed-only patches are installed: on unless ``LOCAL_MOTO_SPEED_PATCHES`` is
    ``0``/``false``/``off`` (to tell a behaviour difference from a speed patch's doing)."""
    value = (os.environ if environ is None else environ).get("LOCAL_MOTO_SPEED_PATCHES", "")
    return value.strip().lower() not in ("0", "false", "no", "off")


def start(port=0, work_dir=".local-stack", speed_patches=None):
    """Start moto's server on 127.0.0.1 (a free port when 0) with the adapters installed.

    ``speed_patches``: install moto_hooks' speed-only patches (default: ``speed_patches_wanted()``);
    the behaviour patches are always installed.

    Sets ``AWS_ENDPOINT_URL``, ``MOTO_PORT`` (Step Functions' Task states call the server there),
    fake credentials and ``AWS_DEFAULT_REGION``/``AWS_REGION`` in os.environ; turns on Step
    Functions' execution of state machines. Returns the EmulatedAws. Raises RuntimeError when a
    stack is already running in this process (moto's backends and the hooks are per process),
    HookPointMissing when the installed moto does not fit the hooks, OSError when the port is taken,
    WorkDirInUse when another process's stack uses ``work_dir``.
    """
    global _running
    if speed_patches is None:
        speed_patches = speed_patches_wanted()

    with _running_lock:
        if _running is not None:
            raise RuntimeError("an embedded stack is already running in this process at %s; stop() it first"
                               % _running.endpoint_url)
        moto_hooks.check_hook_points()
        if port:
            _ensure_port_free(port)
        work_dir = os.path.abspath(work_dir)
        os.makedirs(work_dir, exist_ok=True)
        claim = _claim(work_dir)
        try:
            stack = _start_in(work_dir, port, speed_patches)
        except BaseException:
            claim.close()
            raise
        stack.claim = claim
        _running = stack
        LOG.info("embedded stack at %s (work dir %s)", stack.endpoint_url, work_dir)
        return stack


def _start_in(work_dir, port, speed_patches):
    """start()'s work, in a work dir this process has claimed: the EmulatedAws."""
    from local.lockdown import LoopbackOnly

    saved_log_levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL if name != "werkzeug" else logging.ERROR)

    # HTTPS, as AWS: a certificate made now, trusted through the stack's own CA file.
    ca_bundle, certificate, private_key = tls.make_certificates(os.path.join(work_dir, "tls"))
    server = moto_hooks.threaded_server("127.0.0.1", port, certificate, private_key, wrap=LoopbackOnly)
    server.start()
    host, bound_port = server.get_host_and_port()
    endpoint_url = "https://%s:%d" % (host, bound_port)
    environment = dict(_FAKE_CREDENTIALS)
    environment.update({
        "AWS_CA_BUNDLE": ca_bundle,
        "SSL_CERT_FILE": tls.trust(ca_bundle),
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
        # Shared by the job runner, the crawler and every query's thread: with boto3's default of
        # 10 pooled connections, a burst's concurrent queries opened (and TLS-handshook, both ends
        # in this process) a new connection for most object downloads.
        pooled = Config(max_pool_connections=SHARED_CLIENT_CONNECTIONS)
        s3 = session.client("s3", endpoint_url=endpoint_url, verify=ca_bundle, config=pooled)
        glue = session.client("glue", endpoint_url=endpoint_url, verify=ca_bundle, config=pooled)
        # The fork server's speed-only warm-up (local/fork_warmup.py) goes with moto's.
        preload = PRELOAD_MODULES + (("local.fork_warmup",) if speed_patches else ())
        job_runner = GlueJobRunner(s3, os.path.join(work_dir, "glue"), preload=preload)
        crawler = S3Crawler(glue, s3, os.path.join(work_dir, "crawler"))
        query_engine = AthenaEngine(glue, s3, os.path.join(work_dir, "athena"))
        stack = EmulatedAws(server, endpoint_url, bound_port, DEFAULT_REGION, work_dir, job_runner, crawler,
                            query_engine, saved_environment, saved_sfn_setting, saved_log_levels)
        stack.ca_bundle = ca_bundle
        stack._counted_crawler = fault_injection.FaultyCrawler(crawler, stack.faults)
        moto_hooks.install(fault_injection.FaultyJobRunner(job_runner, stack.faults), stack._counted_crawler,
                           fault_injection.FaultyQueryEngine(query_engine, stack.faults),
                           publish_fault=fault_injection.publish_fault(stack.faults),
                           speed=speed_patches, ca_bundle=ca_bundle)
    except BaseException:
        moto_hooks.set_state_machine_execution(saved_sfn_setting)
        _restore_environment(saved_environment)
        for name, level in saved_log_levels.items():
            logging.getLogger(name).setLevel(level)
        server.stop()
        raise
    return stack


def running():
    """The EmulatedAws started in this process, or None."""
    return _running

