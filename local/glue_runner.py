"""Runs a Glue job run the way Glue's Python shell does: the script the deploy uploaded to S3,
with its ``--extra-py-files`` importable, as ``python <script> --name value ...``.

Nothing is taken from the working tree: what runs is exactly what is in S3.
"""
import logging
import os
import re
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


def _split_s3_uri(uri):
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
        raise ValueError("expected an s3://bucket/key URI, got %r" % uri)
    return parsed.netloc, parsed.path.lstrip("/")


def _safe(part):
    return _UNSAFE_PATH_PART.sub("_", part) or "_"


class GlueJobRunner:
    """Executes Glue job runs as subprocesses.

    ``s3_client`` reads the script and extra files; ``work_dir`` holds the download cache
    (``cache/``), one log per run (``logs/<job>/<run id>.log``) and the runs' working directories.
    ``python`` is the interpreter that runs the scripts; ``extra_env`` is added to the inherited
    environment (which carries ``AWS_ENDPOINT_URL`` and the credentials of the local stack).
    """

    def __init__(self, s3_client, work_dir, python=sys.executable, extra_env=None):
        self.s3 = s3_client
        self.work_dir = os.path.abspath(work_dir)
        self.python = python
        self.extra_env = dict(extra_env or {})

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
        try:
            script = self._fetch(job["Command"]["ScriptLocation"])
            python_path = self._fetch_extra_py_files(arguments.get("--extra-py-files", ""))
        except (ClientError, ValueError, KeyError) as exc:
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
        exit_code, last_error_line, timed_out = self._execute(argv, self._environment(python_path), run_dir,
                                                              log_path, timeout)
        if exit_code == 0:
            return True, None
        if timed_out:
            reason = "Job run timed out after %d minutes" % timeout_minutes
        else:
            reason = last_error_line or "Command failed"
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
        last_error_line = None
        timed_out = threading.Event()
        # stdout goes straight to the log; stderr passes through here so its last line can
        # become the run's ErrorMessage. Both share one O_APPEND file, so lines interleave.
        with open(log_path, "ab") as log:
            process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.PIPE)

            def kill_on_timeout():
                timed_out.set()
                process.kill()

            timer = threading.Timer(timeout, kill_on_timeout) if timeout else None
            if timer:
                timer.daemon = True
                timer.start()
            try:
                for line in process.stderr:
                    log.write(line)
                    log.flush()
                    if line.strip():
                        last_error_line = line.decode("utf-8", "replace").strip()
                exit_code = process.wait()
            finally:
                if timer:
                    timer.cancel()
                process.stderr.close()
        return exit_code, last_error_line, timed_out.is_set()

    def _fetch_extra_py_files(self, extra_py_files):
        """Local paths for PYTHONPATH: zip/whl/egg files as they are, .py files by directory."""
        paths = []
        for uri in (u.strip() for u in extra_py_files.split(",")):
            if not uri:
                continue
            local = self._fetch(uri)
            entry = os.path.dirname(local) if local.endswith(".py") else local
            if entry not in paths:
                paths.append(entry)
        return paths

    def _fetch(self, uri):
        """Download an S3 object into the cache, reusing it while its ETag is unchanged.

        Returns the local path. Raises ClientError (e.g. NoSuchKey) or ValueError for a bad URI.
        """
        bucket, key = _split_s3_uri(uri)
        etag = self.s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
        # The ETag is part of the path, so a new upload never overwrites a file a running job uses.
        local = os.path.join(self.work_dir, "cache", _safe(bucket), _safe(etag), *map(_safe, key.split("/")))
        if not os.path.exists(local):
            os.makedirs(os.path.dirname(local), exist_ok=True)
            partial = "%s.%s.partial" % (local, uuid.uuid4().hex)
            self.s3.download_file(bucket, key, partial)
            os.replace(partial, local)
        return local
