"""The Glue and Athena resources of the pipeline, as data.

``python -m deploy up`` creates exactly these (each ``*_definition`` is the keyword arguments of the
matching boto3 create call); the local stack reads the same definitions back through the Glue
API, so what runs locally is what is deployed. Stdlib only: chalicelib is packaged into the Lambda.

Sizes and limits a stage may tune (job capacity, the Athena scan cutoff) come from
``chalicelib.settings.Settings``; the functions take the stage's settings and default to
``Settings()``.
"""
import json

from chalicelib.resources import (
    ATHENA_RESULTS_PREFIX,
    GLUE_ASSETS_PREFIX,
    RAW_PREFIX,
)
from chalicelib.settings import Settings

# Glue Python shell on Python 3.9: the newest runtime Glue offers for shell jobs.
JOB_COMMAND = "pythonshell"
PYTHON_VERSION = "3.9"
GLUE_VERSION = "3.0"
# Capacity is Settings.glue_job_dpu: 1/16 DPU by default, the smallest shell job; both jobs
# stream their input and stay well inside its 1 GB.
# What the scripts import beyond the standard library and boto3, pinned to the newest versions
# with a CPython 3.9 wheel for Glue's platform (manylinux, glibc <= 2.26: pyarrow 21 has only
# manylinux_2_28; pyiceberg 0.10.0 is the newest release with cp39 wheels, and pyiceberg-core, cp39-abi3
# manylinux2014, holds the partition transforms its writer needs). The deploy resolves these (and their
# dependencies) to wheels, uploads them under GLUE_WHEELS_PREFIX and lists them in --extra-py-files
# (deploy.glue_wheels): no job run reaches a package index. .venv-glue tests the same versions
# (tests/glue_versions.py), and the local stack pins the same DuckDB and pyiceberg.
ADDITIONAL_PYTHON_MODULES = ("duckdb==1.4.5", "pyarrow==20.0.0", "pyiceberg==0.10.0", "pyiceberg-core==0.6.0")
# Their dependencies, pinned to releases that still support Python 3.9: a resolver that cannot see
# a release's Requires-Python (an index or mirror without it) would otherwise take the newest
# (requests, urllib3, fsspec, tenacity, click, ... now need 3.10), which Glue's pip then refuses.
# The deploy checks every resolved wheel's Requires-Python against 3.9 (deploy.glue_wheels). Also
# pinned: releases of charset-normalizer and mmh3 whose cp39 wheels carry a manylinux2014 tag (their
# newest carry only manylinux1 and manylinux_2_28).
GLUE_DEPENDENCY_PINS = (
    "annotated-types==0.7.0", "charset-normalizer==3.4.3", "click==8.1.8", "fsspec==2025.9.0",
    "markdown-it-py==3.0.0", "mmh3==5.1.0", "requests==2.32.5", "tenacity==9.1.2",
    "typing-inspection==0.4.1", "urllib3==2.5.0",
)
GLUE_WHEELS_PREFIX = GLUE_ASSETS_PREFIX + "wheels/"

# Job scripts: repository path -> key in the lake bucket.
JSON_TO_PARQUET_SCRIPT = "glue/json_to_parquet.py"
NORMALIZE_SCRIPT = "glue/normalize.py"
# The --extra-py-files zip: (name inside the zip, repository path). chalicelib keeps its package
# path so ``from chalicelib import schema`` works on Glue; jobio, catalog and jobentry are imported
# as top-level modules, datapath as a package.
LIBRARY_ZIP_MEMBERS = (
    ("chalicelib/__init__.py", "chalicelib/__init__.py"),
    ("chalicelib/schema.py", "chalicelib/schema.py"),
    ("chalicelib/lake_table.py", "chalicelib/lake_table.py"),
    ("chalicelib/identifiers.py", "chalicelib/identifiers.py"),
    ("chalicelib/redact.py", "chalicelib/redact.py"),
    ("chalicelib/jsonlog.py", "chalicelib/jsonlog.py"),
    ("jobio.py", "glue/jobio.py"),
    ("catalog.py", "glue/catalog.py"),
    ("jobentry.py", "glue/jobentry.py"),
    ("datapath/__init__.py", "glue/datapath/__init__.py"),
    ("datapath/blocks.py", "glue/datapath/blocks.py"),
    ("datapath/judge.py", "glue/datapath/judge.py"),
    ("datapath/pipeline.py", "glue/datapath/pipeline.py"),
    ("datapath/provers.py", "glue/datapath/provers.py"),
    ("datapath/rules_sql.py", "glue/datapath/rules_sql.py"),
    ("datapath/writer.py", "glue/datapath/writer.py"),
    ("lake_commit.py", "glue/lake_commit.py"),
    ("lake_io.py", "glue/lake_io.py"),
)
LIBRARY_ZIP_NAME = "shipping_etl_glue_libs.zip"
# The json-to-parquet job's C module (shipping_ndjson, glue/native), as a wheel the deploy builds
# and uploads beside the zip when it can (Linux x86_64 with a C compiler; without it the job takes
# its slower pure-DuckDB path). A Python shell job takes .whl files in --extra-py-files (AWS Glue
# developer guide, "Configuring job properties for Python shell jobs" > "Providing your own Python
# library" > "Using an Egg or Whl file"; --additional-python-modules takes no S3 files in shell
# jobs) and installs each with `python -m pip install --target=...` before the script runs (its
# runner's traceback in aws/aws-cdk#20481), so the object keeps the wheel's own file name: pip
# rejects any other. cp39-abi3: Glue's Python 3.9 and every later CPython; manylinux2014: glibc
# 2.17 and later, which the deploy checks before it tags the wheel so. Name and version are
# glue/native/pyproject.toml's (the deploy refuses a mismatch).
NATIVE_SOURCE_DIR = "glue/native"
NATIVE_SOURCES = ("pyproject.toml", "setup.py", "shipping_ndjson.c")
NATIVE_WHEEL_NAME = "shipping_etl_ndjson-1.0.0-cp39-abi3-manylinux2014_x86_64.whl"
NATIVE_WHEEL_JOBS = ("json-to-parquet",)

# Per-job limits. Each landing object starts one run of each job; runs of different objects
# overlap, and a run past the limit (Settings.glue_max_concurrent_runs, GLUE_MAX_CONCURRENT_RUNS)
# fails with ConcurrentRunsExceededException, which the state machine retries with backoff.
JOB_TIMEOUT_MINUTES = {"json-to-parquet": 30, "normalize": 30}

# Crawlers re-read everything under their target: new files land in existing folders (raw/) and
# CRAWL_NEW_FOLDERS_ONLY would miss them. Columns are added or changed in place; a vanished
# table or partition is only logged, so a crawl never drops what Athena queries.
RECRAWL_POLICY = {"RecrawlBehavior": "CRAWL_EVERYTHING"}
SCHEMA_CHANGE_POLICY = {"UpdateBehavior": "UPDATE_IN_DATABASE", "DeleteBehavior": "LOG"}
CRAWLER_CONFIGURATION = {
    "Version": 1.0,
    # Partitions follow the table's schema, so a partition written by an older run stays readable.
    "CrawlerOutput": {"Partitions": {"AddOrUpdateBehavior": "InheritFromTable"}},
    # All files under one target are one table, even if a run adds a column.
    "Grouping": {"TableGroupingPolicy": "CombineCompatibleSchemas"},
}


def asset_key(repo_path):
    """Key in the lake bucket for a file shipped to Glue (``glue-assets/<file name>``)."""
    return GLUE_ASSETS_PREFIX + repo_path.rsplit("/", 1)[-1]


def library_zip_key():
    """Key in the lake bucket of the ``--extra-py-files`` zip."""
    return GLUE_ASSETS_PREFIX + LIBRARY_ZIP_NAME


def native_wheel_key():
    """Key in the lake bucket of the C module's wheel (``glue-assets/<wheel file name>``)."""
    return GLUE_ASSETS_PREFIX + NATIVE_WHEEL_NAME


def glue_wheel_key(filename):
    """Key in the lake bucket of one of the jobs' library wheels (its own file name: pip
    rejects a wheel named otherwise)."""
    return GLUE_WHEELS_PREFIX + filename


def asset_sources():
    """``{key in the lake bucket: repository path}`` of the job scripts (the zip is built)."""
    return {asset_key(path): path for path in (JSON_TO_PARQUET_SCRIPT, NORMALIZE_SCRIPT)}


def database_definition(resources):
    """Keyword arguments of ``glue.create_database``."""
    return {
        "DatabaseInput": {
            "Name": resources.glue_database,
            "Description": "Shipping ETL (%s): raw and processed shipping records" % resources.stage,
        }
    }


def security_configuration_definition(resources, kms_key_arn):
    """Keyword arguments of ``glue.create_security_configuration``: the stage's key for the S3
    objects and the CloudWatch logs the jobs and crawlers write (Python shell jobs keep no
    bookmarks)."""
    return {
        "Name": resources.glue_security_configuration,
        "EncryptionConfiguration": {
            "S3Encryption": [{"S3EncryptionMode": "SSE-KMS", "KmsKeyArn": kms_key_arn}],
            "CloudWatchEncryption": {"CloudWatchEncryptionMode": "SSE-KMS", "KmsKeyArn": kms_key_arn},
            "JobBookmarksEncryption": {"JobBookmarksEncryptionMode": "DISABLED"},
        },
    }


def _extra_py_files(resources, step, native_wheel, glue_wheels):
    files = [library_zip_key()]
    if native_wheel and step in NATIVE_WHEEL_JOBS:
        files.append(native_wheel_key())
    files += [glue_wheel_key(filename) for filename in glue_wheels]
    return ",".join(resources.lake_uri(key) for key in files)


def _job(resources, settings, name, step, script, description, native_wheel, glue_wheels):
    return {
        "Name": name,
        "Description": description,
        "Role": resources.role_arn(resources.glue_job_roles[name]),
        "Command": {
            "Name": JOB_COMMAND,
            "ScriptLocation": resources.lake_uri(asset_key(script)),
            "PythonVersion": PYTHON_VERSION,
        },
        "GlueVersion": GLUE_VERSION,
        "SecurityConfiguration": resources.glue_security_configuration,
        "MaxCapacity": settings.glue_job_dpu,
        "Timeout": JOB_TIMEOUT_MINUTES[step],
        # The state machine owns retries: it knows which errors are transient.
        "MaxRetries": 0,
        "ExecutionProperty": {"MaxConcurrentRuns": settings.glue_max_concurrent_runs},
        "DefaultArguments": {
            "--job-language": "python",
            "--extra-py-files": _extra_py_files(resources, step, native_wheel, glue_wheels),
            # Into the stage's own log group (retention, the stage's key), not Glue's shared ones.
            "--enable-continuous-cloudwatch-log": "true",
            "--continuous-log-logGroup": resources.glue_job_log_group,
            # The stage in every JSON log line of the job (chalicelib/jsonlog.py).
            "--stage": resources.stage,
        },
    }


def job_definitions(resources, settings=None, native_wheel=False, glue_wheels=()):
    """Keyword arguments of ``glue.create_job`` for both jobs, in pipeline order.

    ``native_wheel``: the C module's wheel is uploaded (``native_wheel_key()``), so the jobs of
    ``NATIVE_WHEEL_JOBS`` list it in ``--extra-py-files``. ``glue_wheels``: file names of the
    library wheels uploaded under ``GLUE_WHEELS_PREFIX`` (what ADDITIONAL_PYTHON_MODULES resolves
    to), listed in every job's ``--extra-py-files``.
    """
    settings = settings or Settings()
    return [
        _job(resources, settings, resources.json_to_parquet_job, "json-to-parquet",
             JSON_TO_PARQUET_SCRIPT,
             "NDJSON landing object -> typed Parquet in the raw zone; bad lines to quarantine",
             native_wheel, glue_wheels),
        _job(resources, settings, resources.normalize_job, "normalize", NORMALIZE_SCRIPT,
             "Raw Parquet -> PII-free, de-duplicated rows, one atomic commit to the processed Iceberg table",
             native_wheel, glue_wheels),
    ]


def _crawler(resources, name, prefix, description):
    return {
        "Name": name,
        "Description": description,
        "Role": resources.role_arn(resources.crawler_role),
        "DatabaseName": resources.glue_database,
        # The table is named after the target's folder: raw/ -> "raw", processed/ -> "processed".
        "Targets": {"S3Targets": [{"Path": resources.lake_uri(prefix)}]},
        "RecrawlPolicy": dict(RECRAWL_POLICY),
        "SchemaChangePolicy": dict(SCHEMA_CHANGE_POLICY),
        "Configuration": json.dumps(CRAWLER_CONFIGURATION, sort_keys=True),
        "CrawlerSecurityConfiguration": resources.glue_security_configuration,
    }


def crawler_definitions(resources):
    """Keyword arguments of ``glue.create_crawler`` for the crawlers: the raw zone's only. The
    processed zone is an Iceberg table (chalicelib.lake_table): its metadata is its catalog."""
    return [
        _crawler(resources, resources.raw_crawler, RAW_PREFIX,
                 "Catalogs the raw zone as table %s" % resources.raw_table),
    ]


def workgroup_definition(resources, settings=None, kms_key_arn=None):
    """Keyword arguments of ``athena.create_work_group``.

    The workgroup's settings are enforced, so every query lands its results (encrypted with the
    stage's key, ``kms_key_arn``, when given: results can hold PII; else SSE-S3) under
    ``athena-results/`` of the lake bucket whatever the caller asks for, and a query that scans
    more than ``settings.athena_bytes_scanned_cutoff`` bytes is cancelled.
    """
    settings = settings or Settings()
    encryption = ({"EncryptionOption": "SSE_KMS", "KmsKey": kms_key_arn} if kms_key_arn
                  else {"EncryptionOption": "SSE_S3"})
    return {
        "Name": resources.athena_workgroup,
        "Description": "Shipping ETL (%s) queries" % resources.stage,
        "Configuration": {
            "ResultConfiguration": {
                "OutputLocation": resources.lake_uri(ATHENA_RESULTS_PREFIX),
                "EncryptionConfiguration": encryption,
            },
            "EnforceWorkGroupConfiguration": True,
            "BytesScannedCutoffPerQuery": settings.athena_bytes_scanned_cutoff,
            "PublishCloudWatchMetricsEnabled": True,
            "EngineVersion": {"SelectedEngineVersion": "Athena engine version 3"},
        },
    }
