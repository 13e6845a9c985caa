"""Runs a Glue job run the way Glue's Python shell does: the script the deploy uploaded to S3,
with its ``--extra-py-files`` importable, as ``python <script> --name value ...``.

Nothing is taken from the working tree: what runs is exactly what is in S3.

Starting a Python process that imports boto3, pyarrow and DuckDB costs most of a second of CPU,
which a burst of job runs (twenty files landing together: forty runs and more) pays again and
again on a two-core laptop. So, with ``preload`` (the default), each run is a fresh process forked
from a server process that has imported boto3 and pyarrow once (multiprocessing's forkserver);
the child gets the run's own argv, environment, working directory, ``sys.path`` (script folder,
``--extra-py-files``, the interpreter's own paths) and standard streams, then runs the script as
``__main__`` (when this process itself runs as ``python -m ...`` or ``python -c``: see
``_fork_server_usable``).

The jobs' libraries are the wheels the deploy uploaded and listed in ``--extra-py-files``
(deploy.glue_wheels: CPython 3.9 wheels for Glue's platform). Glue installs each with pip before
the script runs; here they are installed once per wheel set into ``build/glue-sites/<hash>/`` and that folder
comes first on the job's ``sys.path`` (and the fork server's, so the preloaded pyarrow is the
job's). This interpreter is CPython 3.11, which cannot load a cp39 binary, so "exactly what Glue
runs" is approximated: a wheel this interpreter can load (pure Python, abi3: pyiceberg-core, the
project's C module) is installed from the uploaded file itself; any other (a cp39 binary: pyarrow,
duckdb) is replaced by the same distribution at the same version for this interpreter (pip,
``--no-deps``, binary only). The set of distributions and every version are the uploaded ones;
libraries of this venv that no wheel provides stay visible behind them (Glue's runtime boto3 is one).

Forking a process that has threads is only safe when the code behind them prepares for it.
pyarrow's import starts two idle threads whose libraries do (jemalloc's and OpenBLAS's fork
handlers); DuckDB's import starts a task scheduler thread that the child would lack, so DuckDB is
imported by each run. None of the project's modules are preloaded: they come from the run's
``--extra-py-files``, as on Glue. ``preload=()`` runs ``python <script>`` instead.
"""
import hashlib
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import re
import runpy
import subprocess
import sys
import threading
import time
import uuid
from urllib.parse import urlparse

from botocore.exceptions import ClientError

LOG = logging.getLogger(__name__)

# Glue's own setup instructions; they configure the job's environment, which locally is the
# running interpreter's.
_SETUP_ARGUMENTS = ("--extra-py-files",)
_UNSAFE_PATH_PART = re.compile(r"[^A-Za-z0-9_.=-]+")
# Imported once by the fork server (see the module docstring for why not DuckDB).
PRELOAD_MODULES = ("boto3", "botocore.session", "botocore.client", "boto3.s3.transfer", "urllib3",
                   "concurrent.futures", "numpy", "pyarrow", "pyarrow.parquet", "pyarrow.compute",
                   "pyarrow.json", "pyiceberg.catalog.glue", "pyiceberg.table", "pyiceberg.io.pyarrow",
                   "pyiceberg.expressions", "local.glue_runner")
_fork_server_lock = threading.Lock()
# Held around Process.start() and join() of forked runs. start() polls every child this process
# started (multiprocessing.process._cleanup), and a poll reads the child's exit code from the fork
# server's pipe: two threads reading one child's code at once leave one of them an EOF, which
# multiprocessing reports as exit code 255. Measured: 683 of 3,000 runs with 8 threads on Python
# 3.11 (a run of 150 files here failed one job that way); none with this lock.
_fork_children_lock = threading.Lock()
_site_lock = threading.Lock()
SITE_INSTALL_TIMEOUT_SECONDS = 900
# The installed wheel sets, under the checkout (git ignores /build/), shared by every stack.
SITES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build", "glue-sites")
# The S3 objects job runs read (scripts, --extra-py-files: ~100 MB of wheels), as
# <bucket>/<ETag>/<key>: an object's ETag names its content, so every stack shares one download
# (a new work dir, as each test has, paid a second or more per stack for it).
DOWNLOADS_DIR = os.path.join(os.path.dirname(SITES_DIR), "glue-downloads")
_download_locks = {}  # cache path -> the lock of its one download
_download_locks_lock = threading.Lock()
_installs = set()  # pip processes installing a wheel set now: close() ends them


def _split_s3_uri(uri):
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
        raise ValueError("expected an s3://bucket/key URI, got %r" % uri)
    return parsed.netloc, parsed.path.lstrip("/")


def _safe(part):
    return _UNSAFE_PATH_PART.sub("_", part) or "_"


class GlueJobRunner:
    """Executes Glue job runs as subprocesses.

    ``s3_client`` reads the script and extra files (kept in DOWNLOADS_DIR, shared by every stack);
    ``work_dir`` holds one log per run (``logs/<job>/<run id>.log``) and the runs' working directories.
    ``python`` is the interpreter that runs the scripts; ``extra_env`` is added to the inherited
    environment (which carries ``AWS_ENDPOINT_URL`` and the credentials of the local stack).
    """

    def __init__(self, s3_client, work_dir, python=sys.executable, extra_env=None, preload=PRELOAD_MODULES):
        self.s3 = s3_client
        self.work_dir = os.path.abspath(work_dir)
        self.python = python
        self.extra_env = dict(extra_env or {})
        # Forking only makes sense for the interpreter this process runs.
        self.preload = tuple(preload or ()) if python == sys.executable else ()
        self._fork_context = None
        # The stage's own job scripts and the prefix of their --extra-py-files (set once the
        # stage is deployed: local.stack); None runs any. A job defined by anyone else with the
        # endpoint's (fake) credentials must not run code on this machine.
        self.allowed_scripts = None
        self.allowed_library_prefix = None
        self._fork_site = None
        # ``(role ARN, session name) -> (key, secret, token)``: each run under its job's role, as
        # on Glue (the local stack sets it when IAM is enforced); None: the inherited credentials.
        self.role_credentials = None

    def _refusal(self, job, arguments):
        """Why this job run may not run here, or None."""
        if self.allowed_scripts is None:
            return None
        script = job.get("Command", {}).get("ScriptLocation")
        if script not in self.allowed_scripts:
            return "script %s is not one of the stage's job scripts (%s)" % (
                script, ", ".join(sorted(self.allowed_scripts)))
        for uri in filter(None, (arguments.get("--extra-py-files") or "").split(",")):
            if not uri.strip().startswith(self.allowed_library_prefix or "\0"):
                return "--extra-py-files %s is not under the stage's assets (%s)" % (
                    uri.strip(), self.allowed_library_prefix)
        return None

    def log_path(self, job_name, run_id):
        """The log file of one run (stdout and stderr of the script)."""
        return os.path.join(self.work_dir, "logs", _safe(job_name), _safe(run_id) + ".log")

    # -- public -------------------------------------------------------------------------------

    def run(self, job, arguments):
        """Run one job run to completion.

        ``job`` is the job definition (Name, Command.ScriptLocation, DefaultArguments, Timeout in
        minutes); ``arguments`` the run's effective arguments (``--name: value``).
        Returns ``(True, None)`` when the script exits 0, else ``(False, message)`` where the
        message is the script's last stderr line, its exit code and the log path.
        """
        name = job["Name"]
        arguments = dict(arguments)
        arguments.setdefault("--JOB_NAME", name)
        run_id = arguments.get("--JOB_RUN_ID") or "run-%d-%s" % (time.time(), uuid.uuid4().hex[:8])
        log_path = self.log_path(name, run_id)
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        refusal = self._refusal(job, arguments)
        if refusal:
            message = "Job %s refused: %s" % (name, refusal)
            with open(log_path, "w") as log:
                log.write(message + "\n")
            return False, message
        try:
            script = self._fetch(job["Command"]["ScriptLocation"])
            python_path = self._fetch_extra_py_files(arguments.get("--extra-py-files", ""))
            site = self.wheel_site([p for p in python_path if p.endswith(".whl")])
        except (ClientError, ValueError, KeyError, WheelInstallFailed) as exc:
            message = "Job %s cannot start: %s" % (name, exc)
            with open(log_path, "w") as log:
                log.write(message + "\n")
            return False, message

        argv = [self.python, script]
        for key, value in arguments.items():
            if key not in _SETUP_ARGUMENTS:
                argv += [key, str(value)]
        timeout_minutes = job.get("Timeout")
        timeout = 60 * timeout_minutes if timeout_minutes else None
        run_dir = os.path.join(self.work_dir, "runs", _safe(run_id))
        os.makedirs(run_dir, exist_ok=True)
        LOG.info("glue job %s run %s: %s (log: %s)", name, run_id, " ".join(argv[1:]), log_path)
        # Wheels are installed (the site), not imported from their zip as other extra files are.
        python_path = ([site] if site else []) + [p for p in python_path if not p.endswith(".whl")]
        environment = self._environment(python_path)
        if self.role_credentials and job.get("Role"):
            key, secret, token = self.role_credentials(job["Role"], "glue-" + _safe(run_id)[:50])
            environment.update(AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret, AWS_SESSION_TOKEN=token,
                               AWS_SECURITY_TOKEN=token)
        if self.preload and _fork_server_usable():
            exit_code, last_error_line, timed_out = self._execute_forked(
                script, argv[2:], python_path, environment, run_dir, log_path, timeout, site)
        else:
            exit_code, last_error_line, timed_out = self._execute(argv, environment, run_dir, log_path, timeout)
        if exit_code == 0:
            return True, None
        if timed_out:
            reason = "Job run timed out after %d minutes" % timeout_minutes
        else:
            reason = _message_of(last_error_line) or "Command failed"
        return False, "%s (exit code %s; log: %s)" % (reason, exit_code, log_path)

    # -- internals ----------------------------------------------------------------------------

    def _environment(self, python_path):
        env = dict(os.environ)
        env.update(self.extra_env)
        env["PYTHONUNBUFFERED"] = "1"  # keeps stdout and stderr in order in the log
        if python_path:
            env["PYTHONPATH"] = os.pathsep.join(python_path)
        else:
            env.pop("PYTHONPATH", None)
        return env

    def _execute(self, argv, env, cwd, log_path, timeout):
        """Returns (exit code, last non-blank stderr line, timed out)."""
        timed_out = threading.Event()
        # stdout goes straight to the log; stderr passes through here so its last line can
        # become the run's ErrorMessage. Both share one O_APPEND file, so lines interleave.
        with open(log_path, "ab") as log:
            process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.PIPE)
            timer = _kill_after(timeout, process, timed_out)
            try:
                last_error_line = _copy_to_log(process.stderr, log)
                exit_code = process.wait()
            finally:
                if timer:
                    timer.cancel()
                process.stderr.close()
        return exit_code, last_error_line, timed_out.is_set()

    def close(self):
        """Stop the fork server this runner started, and multiprocessing's resource tracker that
        came with it, waiting for both to exit (runs still going finish on their own), so no
        helper process outlives the stack. Returns None."""
        for process in list(_installs):  # a wheel set being installed for a run that will not come
            process.kill()
        with _fork_server_lock:
            if self._fork_context is None:
                return
            self._fork_context = None
            from multiprocessing import forkserver, resource_tracker

            forkserver._forkserver._stop()
            resource_tracker._resource_tracker._stop()

    def _fork_server(self, site):
        """The fork server, started with ``site`` first on its ``sys.path`` so what it preloads
        (pyarrow) is the wheel set's. A wheel set with other versions of what it preloads restarts
        it; the two jobs' sets differ only by the C module's wheel and share one server."""
        if self._fork_context is not None and _preloaded_versions(self._fork_site) != _preloaded_versions(site):
            self.close()
        with _fork_server_lock:
            if self._fork_context is None:
                from multiprocessing import forkserver

                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(list(self.preload))
                # The server takes this process's sys.path when it starts.
                saved = list(sys.path)
                if site:
                    sys.path.insert(0, site)
                try:
                    forkserver.ensure_running()
                finally:
                    sys.path[:] = saved
                self._fork_context = context
                self._fork_site = site
            return self._fork_context

    # -- the jobs' wheels ---------------------------------------------------------------------

    def wheel_site(self, wheel_paths):
        """The folder holding ``wheel_paths`` (downloaded .whl files) installed for this
        interpreter, made once per wheel set; None without wheels. Raises WheelInstallFailed."""
        if not wheel_paths:
            return None
        # Named by the wheels' bucket, ETag and key: the same set has the same folder whatever
        # the work dir, so a new stack does not install it again.
        key = hashlib.sha256(json.dumps(sorted(os.path.relpath(p, DOWNLOADS_DIR) for p in wheel_paths)).encode())
        site = os.path.join(SITES_DIR, key.hexdigest()[:24])
        with _site_lock:
            if not os.path.exists(os.path.join(site, INSTALLED_MARKER)):
                install_wheel_set(self.python, wheel_paths, site)
        return site

    def _execute_forked(self, script, arguments, python_path, env, cwd, log_path, timeout, site=None):
        """As ``_execute``, in a process forked from the fork server."""
        context = self._fork_server(site)
        timed_out = threading.Event()
        reader, writer = context.Pipe(duplex=False)
        process = context.Process(target=run_forked_script, name="glue-job",
                                  args=(script, arguments, python_path, env, cwd, log_path, writer))
        with open(log_path, "ab") as log:
            try:
                with _fork_children_lock:
                    process.start()
            finally:
                writer.close()  # the child holds its own copy: EOF comes when it exits
            timer = _kill_after(timeout, process, timed_out)
            try:
                with os.fdopen(os.dup(reader.fileno()), "rb") as stderr:
                    last_error_line = _copy_to_log(stderr, log)
                # The exit code is there (or read already by another thread's start()) once the
                # sentinel is readable; only then is the lock taken, so no run waits on another.
                multiprocessing.connection.wait([process.sentinel])
                with _fork_children_lock:
                    process.join()
            finally:
                if timer:
                    timer.cancel()
                reader.close()
        return process.exitcode, last_error_line, timed_out.is_set()

    def _fetch_extra_py_files(self, extra_py_files):
        """Local paths for PYTHONPATH: zip/whl/egg files as they are, .py files by directory."""
        paths = []
        uris = [u.strip() for u in extra_py_files.split(",") if u.strip()]
        etags = self._listed_etags(uris)
        for uri in uris:
            local = self._fetch(uri, etags.get(uri))
            entry = os.path.dirname(local) if local.endswith(".py") else local
            if entry not in paths:
                paths.append(entry)
        return paths

    def _listed_etags(self, uris):
        """``{uri: ETag}`` of the objects among ``uris`` found by listing their folders: a job's
        thirty-odd libraries take one or two List calls per run instead of a HEAD each (a burst
        of job runs made these HEADs the endpoint's most frequent call)."""
        folders = {}
        for uri in uris:
            bucket, key = _split_s3_uri(uri)
            folders.setdefault((bucket, key.rpartition("/")[0]), set()).add(key)
        etags = {}
        for (bucket, folder), keys in folders.items():
            if len(keys) < 2:
                continue  # a HEAD is as cheap as a listing
            prefix = folder + "/" if folder else ""
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
            for page in pages:
                for entry in page.get("Contents", []):
                    if entry["Key"] in keys:
                        etags["s3://%s/%s" % (bucket, entry["Key"])] = entry["ETag"].strip('"')
        return etags

    def _fetch(self, uri, etag=None):
        """Download an S3 object into the cache, reusing it while its ETag (``etag``, else a
        HEAD's) is unchanged.

        Returns the local path. Raises ClientError (e.g. NoSuchKey) or ValueError for a bad URI.
        """
        bucket, key = _split_s3_uri(uri)
        if etag is None:
            etag = self.s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
        # The ETag is part of the path, so a new upload never overwrites a file a running job uses.
        local = os.path.join(DOWNLOADS_DIR, _safe(bucket), _safe(etag), *map(_safe, key.split("/")))
        if os.path.exists(local):
            return local
        # Runs starting together (twenty files landing at once on a new stack) would each
        # download the same ~100 MB of libraries: one downloads, the others wait for it.
        with self._download_lock(local):
            if not os.path.exists(local):
                os.makedirs(os.path.dirname(local), exist_ok=True)
                partial = "%s.%s.partial" % (local, uuid.uuid4().hex)
                self.s3.download_file(bucket, key, partial)
                os.replace(partial, local)
        return local

    def _download_lock(self, local):
        with _download_locks_lock:
            return _download_locks.setdefault(local, threading.Lock())


INSTALLED_MARKER = "wheel-set.json"


class WheelInstallFailed(RuntimeError):
    """The job's wheels could not be installed for this interpreter; the message says why."""


def local_requirement(wheel_path, python=sys.executable):
    """What installs ``wheel_path``'s distribution for ``python``: the file itself when
    ``python`` can load it, else ``name==version`` (the same release, built for ``python``)."""
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename

    name, version, _build, tags = parse_wheel_filename(os.path.basename(wheel_path))
    if python == sys.executable and tags & set(sys_tags()):
        return wheel_path
    return "%s==%s" % (name, version)


def _preloaded_versions(site):
    """The distributions in ``site`` the fork server may preload (their dist-info names)."""
    if not site:
        return ()
    tops = {module.split(".")[0] for module in PRELOAD_MODULES}
    return tuple(sorted(entry for entry in os.listdir(site)
                        if entry.endswith(".dist-info") and entry.split("-")[0].lower() in tops))


def install_wheel_set(python, wheel_paths, site):
    """Install the distributions of ``wheel_paths`` for ``python`` into ``site`` (see the module
    docstring), whole or not at all; records what was installed from where in ``site``."""
    requirements = [local_requirement(path, python) for path in sorted(wheel_paths)]
    partial = "%s.%d.partial" % (site, os.getpid())
    if os.path.exists(partial):
        import shutil

        shutil.rmtree(partial)
    command = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
               "--only-binary=:all:", "--no-compile", "--target", partial] + requirements
    LOG.info("installing the Glue jobs' wheels for this interpreter into %s", site)
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as exc:
        raise WheelInstallFailed("pip install of the job's wheels did not start: %s" % exc) from None
    _installs.add(process)
    try:
        stdout, stderr = process.communicate(timeout=SITE_INSTALL_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise WheelInstallFailed("pip install of the job's wheels did not finish in %d s"
                                 % SITE_INSTALL_TIMEOUT_SECONDS) from None
    finally:
        _installs.discard(process)
    completed = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    if completed.returncode != 0:
        lines = [line for line in (completed.stderr + completed.stdout).splitlines()
                 if line.strip() and "is ignored" not in line]
        raise WheelInstallFailed("the job's wheels (%s) do not install here: %s"
                                 % (", ".join(os.path.basename(p) for p in wheel_paths),
                                    (lines or ["pip failed"])[-1]))
    record = {"wheels": [os.path.basename(p) for p in sorted(wheel_paths)],
              "installed": [os.path.basename(r) for r in requirements]}
    with open(os.path.join(partial, INSTALLED_MARKER), "w") as handle:
        json.dump(record, handle, indent=1)
    os.makedirs(os.path.dirname(site), exist_ok=True)
    try:
        os.replace(partial, site)
    except OSError:  # another process made it meanwhile
        import shutil

        shutil.rmtree(partial, ignore_errors=True)


def _kill_after(timeout, process, timed_out):
    """A started daemon timer that sets ``timed_out`` and kills ``process`` after ``timeout``
    seconds (None without a timeout); the caller cancels it once the process has ended."""
    if not timeout:
        return None

    def kill_on_timeout():
        timed_out.set()
        process.kill()

    timer = threading.Timer(timeout, kill_on_timeout)
    timer.daemon = True
    timer.start()
    return timer


def _copy_to_log(stderr, log):
    """Copies a job's stderr (binary lines) to its log as it comes; returns the last non-blank
    line, which becomes the run's ErrorMessage (None when there is none)."""
    last_error_line = None
    for line in stderr:
        log.write(line)
        log.flush()
        if line.strip():
            last_error_line = line.decode("utf-8", "replace").strip()
    return last_error_line


def _fork_server_usable():
    """Whether a forked run stays free of this process's main script: multiprocessing imports
    the main module into each child, which is harmless for ``python -m pkg`` (a package's
    ``__main__`` is skipped) and ``python -c``, but would run a plain script's top level again."""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None:
        return name == "__main__" or name.endswith(".__main__")
    return getattr(main, "__file__", None) is None


def _interpreter_paths():
    """The entries of ``sys.path`` that ``python <script>`` has too: the standard library and
    site-packages, not this process's working directory or PYTHONPATH."""
    prefixes = tuple(sorted({sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}))
    return [entry for entry in sys.path if entry and entry.startswith(prefixes)]


def run_forked_script(script, arguments, python_path, env, cwd, log_path, stderr_writer):
    """Body of a forked job run: becomes ``python <script> <arguments>`` with ``env``, in ``cwd``,
    stdout appended to ``log_path``, stderr into ``stderr_writer``; exits with the script's status."""
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log_fd, 1)
    os.close(log_fd)
    os.dup2(stderr_writer.fileno(), 2)
    stderr_writer.close()
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.close(null_fd)
    # Unbuffered, as PYTHONUNBUFFERED=1 makes a new interpreter: stdout and stderr stay in order.
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True, write_through=True)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = [script] + list(arguments)
    sys.path[:] = [os.path.dirname(script)] + list(python_path) + _interpreter_paths()
    runpy.run_path(script, run_name="__main__")


def _message_of(line):
    """The message of a job's stderr line: the jobs log JSON lines (chalicelib/jsonlog.py), and
    a run's ErrorMessage is the last one's message, as the job wrote it."""
    if line and line.startswith("{"):
        try:
            entry = json.loads(line)
        except ValueError:
            return line
        if isinstance(entry, dict) and isinstance(entry.get("message"), str):
            return entry["message"]
    return line
