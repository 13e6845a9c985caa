"""Fault injection through ``python -m local run``: every step failing for good (``--fail``) or
once (``--fail-once``), duplicate S3 events (``--redeliver``), and crawls only when they add
something.

Most runs share one stack, in this process, through the command's own code path
(``local.run.run`` with the parsed command line): the catalog then exists after the first run,
as on a stage in use. The crawl steps' faults and the redelivery go through the real command
line, each on a new stack, whose empty catalog makes the crawls happen. Counts and totals are
checked against ``tests/reference.py``.
"""
import io
import itertools
import json
import math
import os
import subprocess
import sys

import pytest

from local import run as local_run
from local.__main__ import build_parser
from tests import datafiles, reference

pytestmark = pytest.mark.e2e

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_TIMEOUT = 240
IN_PROCESS_STEPS = ("json-to-parquet", "normalize", "query", "notify")
CRAWL_STEPS = ("crawl-raw",)  # the processed zone is an Iceberg table: never crawled
# Steps after which a file's rows are in the processed table even when the execution fails.
STEPS_AFTER_LOADING = ("query", "notify")


class Run:
    """A finished run: exit status, stdout, the ``--json`` report, the notifications printed."""

    def __init__(self, returncode, stdout, stderr=""):
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        lines = stdout.strip().splitlines()
        try:
            self.report = json.loads(lines[-1])
        except (IndexError, ValueError):
            self.report = None
        section = stdout.split("== GET /status", 1)[0]
        self.notifications = [n.strip() for n in section.split("\n-- ")[1:]]
        try:
            self.status = json.loads(stdout.split("== GET /status\n", 1)[1].split("\n== totals", 1)[0])
        except (IndexError, ValueError):
            self.status = None

    @property
    def execution(self):
        [execution] = self.report["executions"]
        return execution

    def __repr__(self):
        return "Run(rc=%s)\n--- stderr\n%s\n--- stdout\n%s" % (
            self.returncode, self.stderr[-3000:], self.stdout[-3000:])


def cli(tmp_path, *args):
    """``python -m local run --json ARGS`` in a subprocess, on a new stack."""
    env = dict(os.environ)
    env.pop("AWS_ENDPOINT_URL", None)
    completed = subprocess.run(
        [sys.executable, "-m", "local", "run", "--json", "--work-dir", str(tmp_path / "stack"), *args],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    return Run(completed.returncode, completed.stdout, completed.stderr)


def assert_close(actual, wanted, what):
    assert actual is not None, "%s: missing" % what
    assert math.isclose(actual, wanted, rel_tol=1e-9, abs_tol=1e-6), "%s: %r != %r" % (what, actual, wanted)


def assert_matches_reference(execution, path):
    ref = reference.evaluate(path)
    assert execution["status"] == "SUCCEEDED", execution
    assert execution["rows"] == {k: ref[k] for k in ("read", "valid", "quarantined", "duplicates")}
    for field, total in ref["totals"].items():
        assert_close(execution["totals"][field], total, field)


def assert_totals_cover(totals, paths):
    """The whole processed table holds every row of ``paths`` exactly once (and nothing else)."""
    refs = [reference.evaluate(p) for p in paths]
    assert totals["shipments"] == sum(r["valid"] for r in refs)
    for field in ("shipping_cost", "shipping_distance", "quantity"):
        assert_close(totals[field], math.fsum(r["totals"][field] for r in refs), field)


def assert_failed_at(run, step):
    assert run.returncode != 0, run
    execution = run.execution
    assert execution["status"] == "FAILED", run
    assert execution["failed_step"] == step, run
    [notice] = run.notifications
    assert "Shipping ETL failed at step %s" % step in notice, notice


# -- one stack for most runs ------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from local.stack import LocalStack

    with LocalStack(work_dir=str(tmp_path_factory.mktemp("stack"))) as started:
        yield started


@pytest.fixture(scope="module")
def loaded():
    """Files whose rows the shared stack's processed table holds (in landing order)."""
    return []


_SEEDS = itertools.count(1000)


@pytest.fixture
def new_file(tmp_path):
    """Makes a new landing file on each call, alternately messy (bad lines, duplicates) and clean."""

    def make():
        seed = next(_SEEDS)
        data = datafiles.messy_bytes(seed=seed) if seed % 2 else datafiles.clean_bytes(rows=40, seed=seed)
        return datafiles.write(tmp_path / ("file-%d.json" % seed), data)

    return make


def run_here(stack, *args):
    """``python -m local run --json ARGS`` through the command's code, on the shared stack."""
    parsed = build_parser().parse_args(["run", "--json", *args])
    out = io.StringIO()
    returncode = local_run.run(parsed, out=out, stack=stack)
    return Run(returncode, out.getvalue())


def task_failures(stack, execution_name):
    """The errors of the execution's failed task attempts, in order."""
    sfn = stack.client("stepfunctions")
    events = sfn.get_execution_history(executionArn=stack.resources.execution_arn(execution_name),
                                       maxResults=1000)["events"]
    return [e["taskFailedEventDetails"]["error"] for e in events if e["type"] == "TaskFailed"]


def landing_body(stack, execution):
    bucket, key = execution["source"][len("s3://"):].split("/", 1)
    return stack.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


# The first two runs make the tables, then show a file with the same schema crawls nothing.

def test_first_file_crawls_the_raw_zone_only(stack, new_file, loaded):
    path = new_file()

    run = run_here(stack, "--file", path)

    assert run.returncode == 0, run
    assert_matches_reference(run.execution, path)
    assert run.report["crawls"] == 1  # the raw table did not exist; the Iceberg table needs no crawl
    loaded.append(path)
    assert_totals_cover(run.report["totals"], loaded)


def test_second_file_with_the_same_schema_runs_no_crawler_and_is_queryable(stack, new_file, loaded):
    path = new_file()

    run = run_here(stack, "--file", path)

    assert run.returncode == 0, run
    assert_matches_reference(run.execution, path)
    assert run.report["crawls"] == 0
    loaded.append(path)
    # Its rows reached Athena through the Iceberg commit alone.
    assert_totals_cover(run.report["totals"], loaded)
    assert not [e for e in task_failures(stack, run.execution["name"])]


# -- every step, failing for good and failing once ---------------------------------------------

@pytest.mark.parametrize("step", IN_PROCESS_STEPS)
def test_fail_step_ends_failed_with_a_notification_and_the_landing_object_intact(stack, new_file, loaded, step):
    path = new_file()

    run = run_here(stack, "--file", path, "--fail", step)

    assert_failed_at(run, step)
    assert "--fail %s" % step in run.execution["cause"]  # the injected fault, as the step saw it
    with open(path, "rb") as landed:
        assert landing_body(stack, run.execution) == landed.read()
    if step in STEPS_AFTER_LOADING:
        loaded.append(path)  # the data was loaded; only the query or the notice failed
    assert_totals_cover(stack.query_totals(), loaded)


@pytest.mark.parametrize("step", IN_PROCESS_STEPS)
def test_fail_once_step_succeeds_through_its_retry_with_exact_totals(stack, new_file, loaded, step):
    path = new_file()

    run = run_here(stack, "--file", path, "--fail-once", step)

    assert run.returncode == 0, run
    assert_matches_reference(run.execution, path)
    loaded.append(path)
    assert_totals_cover(run.report["totals"], loaded)
    assert len(task_failures(stack, run.execution["name"])) == 1  # the injected failure, retried
    [notice] = run.notifications
    assert "Shipping ETL processed" in notice


def test_rerun_after_a_failure_loads_every_row_once(stack, new_file, loaded):
    # Drop files, have a job fail, fix the cause, re-run: the failed run left nothing behind
    # that a re-run would count twice, and a re-run of a loaded file replaces its own outputs.
    failing, fine = new_file(), new_file()
    run = run_here(stack, "--file", failing, "--file", fine, "--fail", "normalize")
    assert [e["status"] for e in run.report["executions"]] == ["FAILED", "FAILED"], run
    assert_totals_cover(stack.query_totals(), loaded)  # nothing of theirs reached the table
    sfn = stack.client("stepfunctions")

    reruns = []
    for execution in run.report["executions"]:
        described = sfn.describe_execution(executionArn=stack.resources.execution_arn(execution["name"]))
        name = "rerun-" + json.loads(described["input"])["source_id"]
        sfn.start_execution(stateMachineArn=stack.resources.state_machine_arn, name=name,
                            input=described["input"])
        reruns.append(name)
    ended = stack.wait_for_executions(reruns, timeout=RUN_TIMEOUT)
    assert [e["status"] for e in ended.values()] == ["SUCCEEDED", "SUCCEEDED"]
    loaded.extend([failing, fine])
    assert_totals_cover(stack.query_totals(), loaded)

    again = reruns[0] + "-again"
    sfn.start_execution(stateMachineArn=stack.resources.state_machine_arn, name=again,
                        input=ended[reruns[0]]["input"])
    assert stack.wait_for_executions([again], timeout=RUN_TIMEOUT)[again]["status"] == "SUCCEEDED"
    assert_totals_cover(stack.query_totals(), loaded)


def _table_version(stack):
    """The processed table's current Iceberg metadata file, as the Glue catalog names it."""
    table = stack.client("glue").get_table(DatabaseName=stack.resources.glue_database,
                                           Name=stack.resources.processed_table)["Table"]
    return table["Parameters"]["metadata_location"]


def test_a_corrected_file_whose_normalize_fails_leaves_the_keys_rows_as_they_were(stack, new_file, loaded):
    # A loaded file is corrected and re-uploaded at its key; normalize fails on the correction:
    # the table keeps the first version's rows, untouched (no half source). Fixed, the correction
    # replaces them.
    first, corrected = new_file(), new_file()
    run = run_here(stack, "--file", first)
    assert run.returncode == 0, run
    loaded.append(first)
    key = run.execution["source"].split("/", 3)[3]
    before = _table_version(stack)

    failed = run_here(stack, "--file", corrected, "--key", key, "--fail", "normalize")

    assert_failed_at(failed, "normalize")
    assert _table_version(stack) == before
    assert_totals_cover(stack.query_totals(), loaded)

    fixed = run_here(stack, "--file", corrected, "--key", key)
    assert fixed.returncode == 0, fixed
    loaded[loaded.index(first)] = corrected
    assert_totals_cover(fixed.report["totals"], loaded)


# -- crawl steps and redelivery, through the command line on new stacks -----------------------

@pytest.mark.parametrize("step", CRAWL_STEPS)
def test_fail_crawl_step_ends_failed_with_a_notification(tmp_path, new_file, step):
    path = new_file()

    run = cli(tmp_path, "--file", path, "--fail", step)

    assert_failed_at(run, step)
    assert run.report["totals"] is None
    assert "finished with status FAILED" in run.execution["cause"]
    # The first crawl, and the one more the state machine allows a failed crawl.
    assert run.report["crawls"] == 2


@pytest.mark.parametrize("step", CRAWL_STEPS)
def test_fail_once_crawl_step_succeeds_by_crawling_again(tmp_path, new_file, step):
    path = new_file()

    run = cli(tmp_path, "--file", path, "--fail-once", step)

    assert run.returncode == 0, run
    assert_matches_reference(run.execution, path)
    assert_totals_cover(run.report["totals"], [path])
    assert run.report["crawls"] == 2  # the raw zone's crawl, twice


def test_redelivered_events_start_one_execution_per_object(tmp_path, new_file):
    paths = [new_file(), new_file()]

    run = cli(tmp_path, "--file", paths[0], "--file", paths[1], "--redeliver", "3")

    assert run.returncode == 0, run
    for execution, path in zip(run.report["executions"], paths):
        assert_matches_reference(execution, path)
    # Each copy's StartExecution named the same execution (idempotent): six answers, two runs.
    assert sum(run.report["events"].values()) == 6
    assert len(run.status["executions"]) == 2  # Step Functions itself lists two executions
    assert_totals_cover(run.report["totals"], paths)
    assert len(run.notifications) == 2


# -- the trigger: lost events, through the command line on new stacks --------------------------

def test_fail_trigger_is_recovered_by_the_reconciler_with_exact_totals(tmp_path, new_file):
    path = new_file()

    run = cli(tmp_path, "--file", path, "--fail", "trigger")

    assert run.returncode == 0, run
    assert_matches_reference(run.execution, path)
    assert run.report["reconciled"] == 1
    assert run.report["events"] == {}  # no delivery got through: the reconciler started it
    assert_totals_cover(run.report["totals"], [path])
    assert "sent to the on-failure destination" in run.stderr


def test_fail_once_trigger_is_recovered_by_lambdas_retry(tmp_path, new_file):
    path = new_file()

    run = cli(tmp_path, "--file", path, "--fail-once", "trigger")

    assert run.returncode == 0, run
    assert_matches_reference(run.execution, path)
    assert run.report["reconciled"] == 0
    assert run.report["events"] == {"started": 1}
    assert_totals_cover(run.report["totals"], [path])
    assert "retrying (attempt 1 of 3)" in run.stderr  # the first delivery failed, its retry started it
