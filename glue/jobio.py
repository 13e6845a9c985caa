"""I/O shared by the Glue job scripts: arguments as Glue passes them, locations that are either
``s3://bucket/key`` URIs or local paths, logging to stderr, and failures that say what to do.

Shipped to Glue as the top-level module ``jobio`` in the ``--extra-py-files`` zip; imports only
the standard library and boto3 (Python 3.9). boto3 reaches a local endpoint through the
``AWS_ENDPOINT_URL`` environment variable, so the same code runs on Glue, on the local stack and
on local files.
"""
import importlib
import importlib.abc
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import traceback

LOG = logging.getLogger("shipping_etl")

# Key in the raw Parquet file's key-value metadata under which json_to_parquet stores its counts
# {"source", "read", "valid", "quarantined"} (JSON) for normalize.
COUNTS_METADATA_KEY = "shipping_etl.counts"
S3_SCHEME = "s3://"
# Objects above this are uploaded by boto3's transfer manager, in parallel parts.
_MULTIPART_THRESHOLD = 64 * 1024 * 1024
_READ_CHUNK = 1024 * 1024


class JobError(Exception):
    """A failure the job reports as its last stderr line before exiting with status 1."""


# -- arguments ----------------------------------------------------------------------------


def parse_args(argv, required=(), optional=None):
    """Reads ``--name value`` (or ``--name=value``) pairs from ``argv`` (without the program name).

    Glue adds arguments of its own (``--JOB_NAME``, ``--job-bookmark-option``, ...): every name not
    in ``required`` or ``optional`` is ignored, with or without a value. Returns ``{name: value}``
    with the defaults of ``optional`` (``{name: default}``) filled in. Raises JobError naming the
    missing required arguments.
    """
    optional = dict(optional or {})
    wanted = set(required) | set(optional)
    values = {}
    index = 0
    while index < len(argv):
        token = argv[index]
        index += 1
        if not token.startswith("--"):
            continue
        name, has_value, value = token[2:].partition("=")
        if not has_value:
            if index < len(argv) and not argv[index].startswith("--"):
                value = argv[index]
                index += 1
            else:
                value = ""
        if name in wanted:
            values[name] = value
    missing = [name for name in required if not values.get(name)]
    if missing:
        raise JobError("missing argument(s): %s (pass them as --name value)"
                       % ", ".join("--" + name for name in missing))
    for name, default in optional.items():
        if values.get(name) in (None, ""):
            values[name] = default
    check_identifiers(values)
    return values


# Arguments whose values become S3 keys, SQL literals or file names: checked on entry
# (chalicelib/identifiers.py), so a forged run fails before it reads anything.
def check_identifiers(values):
    """Raises JobError naming the first argument whose value has not its documented shape."""
    from chalicelib import identifiers

    checks = (("source_id", identifiers.source_id), ("source_version_id", identifiers.version_id))
    for name, check in checks:
        if values.get(name) not in (None, ""):
            try:
                check(values[name])
            except identifiers.InvalidIdentifier as exc:
                raise JobError("--%s: %s" % (name, exc))


def positive_int(args, name):
    """``args[name]`` as an int > 0, or None when it is not set. Raises JobError otherwise."""
    value = args.get(name)
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise JobError("--%s must be a whole number > 0, got %r" % (name, value))
    return number


# What a job process holds besides DuckDB's buffer memory: the interpreter, pyarrow and DuckDB's
# code and their allocations outside DuckDB's buffer manager (measured: 100-150 MB).
PROCESS_BASELINE_MB = 150
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)?\s*$", re.IGNORECASE)
_UNITS = {"B": 1e-6, "KB": 1e-3, "MB": 1.0, "GB": 1e3, "TB": 1e6,
          "KIB": 1024 / 1e6, "MIB": 1024 ** 2 / 1e6, "GIB": 1024 ** 3 / 1e6, "TIB": 1024 ** 4 / 1e6}


def size_mb(text):
    """A size such as ``"800MB"``, ``"1GB"`` or ``"512MiB"`` in (decimal) megabytes, or None when
    ``text`` is not one."""
    match = _SIZE.match(text or "")
    if not match:
        return None
    return float(match.group(1)) * _UNITS[(match.group(2) or "B").upper()]


def duckdb_memory_limit(job_limit):
    """DuckDB's share of the job's memory limit ``job_limit`` (e.g. ``"800MB"``): the limit less
    PROCESS_BASELINE_MB, and at least a quarter of it. Returns a size DuckDB accepts; a
    ``job_limit`` that is no size comes back unchanged (DuckDB then says why it is not usable)."""
    total = size_mb(job_limit)
    if total is None:
        return job_limit
    return "%dMB" % max(total / 4, total - PROCESS_BASELINE_MB)


def duckdb_connection(duckdb, memory_limit, **settings):
    """An in-memory DuckDB connection whose memory is bounded by ``memory_limit`` (e.g.
    ``"600MB"``). ``duckdb`` is the module (jobio itself imports no DuckDB). Raises JobError
    when DuckDB refuses the limit."""
    # Background threads return freed memory to the system as DuckDB goes: without them the
    # peak RSS wanders (measured 220-340 MB for the same conversion) and grows with the input.
    config = dict({"allocator_background_threads": True}, **settings)
    try:
        return duckdb.connect(config=dict(config, memory_limit=memory_limit))
    except duckdb.Error as exc:
        raise JobError("--memory_limit %r is not usable (%s): pass a size such as 600MB" % (memory_limit, exc))


def sql_literal(text):
    """``text`` as a SQL string literal (DuckDB): quoted, its quotes doubled."""
    return "'%s'" % text.replace("'", "''")


# -- locations ------------------------------------------------------------------------------


def is_s3(uri):
    return uri.startswith(S3_SCHEME)


def split_s3(uri):
    """``s3://bucket/key`` -> ``(bucket, key)``. Raises JobError for anything else."""
    bucket, _, key = uri[len(S3_SCHEME):].partition("/")
    if not is_s3(uri) or not bucket:
        raise JobError("not an s3://bucket/key URI: %r" % uri)
    return bucket, key


def join(base, name):
    """``name`` inside the folder ``base`` (an s3:// prefix or a local directory)."""
    if is_s3(base):
        return base.rstrip("/") + "/" + name
    return os.path.join(base, *name.split("/"))


def stem(uri):
    """The last path component without its extension: ``s3://b/raw/abc.parquet`` -> ``abc``."""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return os.path.splitext(os.path.basename(name))[0]


_sessions = {}  # (process id, the AWS_ environment) -> the boto3 session clients are made from
_sessions_lock = threading.Lock()


def aws_client(service, **kwargs):
    """A new boto3 client for ``service`` from the process's one session.

    One session, because each new session parses botocore's data files again (service model,
    endpoints, rule sets: about 0.1 s a client, measured). Not boto3's default session: one
    inherited through a fork keeps its parent's environment, so the key holds the process id and
    the ``AWS_`` variables the credential chain and endpoint read. A session is not thread-safe,
    hence the lock; the clients it makes are.
    """
    import boto3

    key = (os.getpid(), tuple(sorted(item for item in os.environ.items() if item[0].startswith("AWS_"))))
    with _sessions_lock:
        if key not in _sessions:
            _sessions[key] = boto3.session.Session()
        return _sessions[key].client(service, **kwargs)


class Storage:
    """Reads and writes locations that are s3:// URIs or local paths.

    ``s3_client`` is made on first use (boto3's default chain: credentials, region and
    ``AWS_ENDPOINT_URL`` from the environment) unless one is given.
    """

    def __init__(self, s3_client=None):
        self._s3 = s3_client

    @property
    def s3(self):
        if self._s3 is None:
            self._s3 = aws_client("s3")
        return self._s3

    def _transfer_config(self):
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(multipart_threshold=_MULTIPART_THRESHOLD,
                              multipart_chunksize=_MULTIPART_THRESHOLD)

    def fetch(self, uri, work_dir, version_id=None):
        """A local path holding the object at ``uri`` (exactly its version ``version_id`` when
        given): the path itself for a local file, else a download into ``work_dir``. Raises
        JobError when it does not exist or cannot be read."""
        if not is_s3(uri):
            if not os.path.isfile(uri):
                raise JobError("%s does not exist or is not a file" % uri)
            return uri
        bucket, key = split_s3(uri)
        local = os.path.join(work_dir, "source-" + (os.path.basename(key) or "object"))
        try:
            # One streaming GET: no HEAD first and no transfer threads, which is what a small
            # object's run time is made of (and one connection is plenty for a 1/16-DPU job).
            version = {"VersionId": version_id} if version_id else {}
            body = self.s3.get_object(Bucket=bucket, Key=key, **version)["Body"]
            with open(local, "wb") as out:
                for chunk in body.iter_chunks(_READ_CHUNK):
                    out.write(chunk)
        except Exception as exc:  # botocore raises ClientError or its own read errors
            raise JobError("cannot read %s%s: %s (check that the object exists and that the job's "
                           "role may s3:GetObject%s it)" % (
                               uri, " version %s" % version_id if version_id else "", _aws_message(exc),
                               "Version" if version_id else ""))
        return local

    def put(self, local_path, uri):
        """Publishes the local file at ``uri`` (replacing what is there). A local destination is
        replaced atomically, so readers never see half a file."""
        if is_s3(uri):
            bucket, key = split_s3(uri)
            try:
                if os.path.getsize(local_path) <= _MULTIPART_THRESHOLD:
                    with open(local_path, "rb") as body:
                        self.s3.put_object(Bucket=bucket, Key=key, Body=body)
                else:
                    self.s3.upload_file(local_path, bucket, key, Config=self._transfer_config())
            except Exception as exc:
                raise JobError("cannot write %s: %s (check that the bucket exists and that the "
                               "job's role may s3:PutObject there)" % (uri, _aws_message(exc)))
            return
        folder = os.path.dirname(os.path.abspath(uri))
        os.makedirs(folder, exist_ok=True)
        handle, staged = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="-" + os.path.basename(uri))
        os.close(handle)
        try:
            shutil.copyfile(local_path, staged)
            os.replace(staged, uri)
        except BaseException:
            if os.path.exists(staged):
                os.remove(staged)
            raise

    def put_text(self, text, uri, work_dir):
        """Publishes ``text`` (UTF-8) at ``uri``."""
        handle, local = tempfile.mkstemp(dir=work_dir, suffix=".txt")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        self.put(local, uri)

    def read_text(self, uri):
        """The UTF-8 text at ``uri``, or None when nothing is there."""
        if not is_s3(uri):
            if not os.path.isfile(uri):
                return None
            with open(uri, encoding="utf-8") as source:
                return source.read()
        bucket, key = split_s3(uri)
        try:
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            if _aws_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise JobError("cannot read %s: %s" % (uri, _aws_message(exc)))
        return body.decode("utf-8")

    def delete(self, uri):
        """Removes what is at ``uri``; nothing there is fine."""
        if not is_s3(uri):
            if os.path.isfile(uri):
                os.remove(uri)
            return
        bucket, key = split_s3(uri)
        try:
            self.s3.delete_object(Bucket=bucket, Key=key)
        except Exception as exc:
            raise JobError("cannot delete %s: %s (the job's role needs s3:DeleteObject on its own "
                           "outputs)" % (uri, _aws_message(exc)))

    def list_files(self, prefix_uri):
        """Every file (object) below the folder (prefix) ``prefix_uri``, as URIs or paths."""
        if not is_s3(prefix_uri):
            found = []
            for folder, _dirs, files in os.walk(prefix_uri):
                found.extend(os.path.join(folder, name) for name in files)
            return sorted(found)
        bucket, prefix = split_s3(prefix_uri.rstrip("/") + "/")
        found = []
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                found.extend("s3://%s/%s" % (bucket, item["Key"]) for item in page.get("Contents", ()))
        except Exception as exc:
            raise JobError("cannot list %s: %s (the job's role needs s3:ListBucket)"
                           % (prefix_uri, _aws_message(exc)))
        return sorted(found)


def _aws_code(exc):
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _aws_message(exc):
    code = _aws_code(exc)
    return "%s: %s" % (code, exc) if code else str(exc)


# -- running ----------------------------------------------------------------------------------


class WorkDir:
    """A scratch directory for one run (downloads, staged outputs, DuckDB spill files), removed
    afterwards. ``TMPDIR`` chooses where it lives."""

    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix="shipping-etl-")
        return self.path

    def __exit__(self, *exc_info):
        shutil.rmtree(self.path, ignore_errors=True)


_stderr_handler = []  # the handler configure_logging() made, if it made one


def configure_logging():
    """Progress and errors to stderr (Glue ships it to CloudWatch), one line each: JSON lines
    (chalicelib/jsonlog.py) once ``log_context`` has named the run. Like logging.basicConfig, does
    nothing when the process already logs somewhere (a test run)."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    _stderr_handler[:] = [handler]


def log_context(component, stage, source_id=None, execution=None):
    """From now on the job's stderr lines are JSON objects naming ``component`` (the job), the
    ``stage``, the landing object's ``source_id`` and the ``execution``, so one Logs Insights
    query follows a landing object (docs/OPERATIONS.md). Returns None; a no-op unless
    configure_logging() made the stderr handler (the job runs as a script)."""
    try:
        from chalicelib import jsonlog
    except ImportError:  # a bare caller without chalicelib keeps the plain lines
        return
    for handler in _stderr_handler:
        handler.setFormatter(jsonlog.JsonFormatter(
            stage=stage or None, component=component,
            context=jsonlog.fields(source_id=source_id, execution=execution)))


def print_result(result):
    """The job's result as one JSON line on stdout."""
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()


class ImportedOnUse:
    """Stands for the module ``name``, imported when one of its attributes is first used.

    pyarrow takes a fifth of a second to import; a job that can do without it for a given input
    (small files, DuckDB reading Parquet metadata) should not wait for it, and a job that needs it
    can import it on a thread while DuckDB works."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attribute):
        return getattr(importlib.import_module(self._name), attribute)


class WithoutPandasOrNumpy(importlib.abc.MetaPathFinder):
    """While installed (first in ``sys.meta_path``), ``import pandas`` and ``import numpy``
    fail as if they were not installed.

    DuckDB's and pyarrow's Python layers import pandas, when it is there, only to ask whether an
    object is a DataFrame. The jobs never hand them one, and the import costs a quarter of a
    second per run (a second on a busy machine): most of a small file's conversion. numpy they
    import at start, for results the jobs never ask for (0.05 s, and OpenBLAS threads that
    spin: 0.1 CPU s per run measured on json_to_parquet).
    """

    UNUSED = ("pandas", "numpy")

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.UNUSED:
            raise ModuleNotFoundError("the Glue jobs do not use %s" % name.partition(".")[0], name=name)
        return None


def _redacted(exc, how):
    """``exc`` as chalicelib.redact's ``how`` (``scrub`` or ``error_summary``) gives it: never
    record content. The jobs put chalicelib on the path; a bare caller may lack it, and then
    gets the error's class alone. An ImportError names code, never data: kept whole."""
    if isinstance(exc, ImportError):
        return "%s: %s" % (type(exc).__name__, exc)
    try:
        from chalicelib import redact
    except ImportError:
        return type(exc).__name__
    return redact.scrub(str(exc)) if how == "scrub" else redact.error_summary(exc)


def run(job, argv=None):
    """Runs ``job(argv)`` as a script: returns the exit status (0 on success). A JobError's
    message is the last line on stderr; any other exception is logged with its traceback.
    pandas and numpy cannot be imported meanwhile (see WithoutPandasOrNumpy)."""
    configure_logging()
    argv = sys.argv[1:] if argv is None else argv
    blocker = WithoutPandasOrNumpy()
    sys.meta_path.insert(0, blocker)
    try:
        job(argv)
    except JobError as exc:
        LOG.error("%s", _redacted(exc, "scrub"))
        return 1
    except Exception as exc:
        # The traceback's frames, not its message: an engine's message may quote a record.
        LOG.error("unexpected failure, traceback (most recent call last):\n%s",
                  "".join(traceback.format_tb(exc.__traceback__)).rstrip())
        LOG.error("failed: %s", _redacted(exc, "error_summary"))
        return 1
    finally:
        sys.meta_path.remove(blocker)
    return 0
