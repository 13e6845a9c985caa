"""The whole pipeline on the embedded stack, as a user runs it: ``python -m local run``.

Counts and totals are checked against ``tests/reference.py`` (an independent statement of the
validation rules), never against the pipeline's own code. The PII check runs the stack in-process
so every object of the lake can be inspected.
"""
import datetime as dt
import io
import json
import math
import os
import signal
import subprocess
import sys
import uuid

import pyarrow.parquet as pq
import pytest

from chalicelib import generator
from chalicelib.resources import ATHENA_RESULTS_PREFIX, MANIFEST_PREFIX, PROCESSED_PREFIX, RAW_PREFIX
from chalicelib.schema import PII_FIELDS
from tests import datafiles, reference
from tests.processes import processes_with

pytestmark = pytest.mark.e2e

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_TIMEOUT = 240
MARKER = "SHIPPING_ETL_E2E_MARKER"


def expected(source):
    """The reference's counts and totals for a file (bytes or path)."""
    return reference.evaluate(source)


def assert_close(actual, wanted, what):
    assert actual is not None, "%s: missing" % what
    assert math.isclose(actual, wanted, rel_tol=1e-6, abs_tol=1e-9), "%s: %r != %r" % (what, actual, wanted)


def assert_matches_reference(execution, ref):
    assert execution["status"] == "SUCCEEDED", execution
    assert execution["rows"] == {k: ref[k] for k in ("read", "valid", "quarantined", "duplicates")}
    for field, total in ref["totals"].items():
        assert_close(execution["totals"][field], total, "%s of %s" % (field, execution["source"]))


class Run:
    """One finished ``python -m local run`` subprocess."""

    def __init__(self, completed, marker):
        self.returncode = completed.returncode
        self.stdout = completed.stdout
        self.stderr = completed.stderr
        self.marker = marker
        lines = self.stdout.strip().splitlines()
        try:
            self.report = json.loads(lines[-1])
        except (IndexError, ValueError):
            self.report = None  # a crash: the tests' messages show stderr

    def __repr__(self):
        return "Run(rc=%s)\n--- stderr\n%s\n--- stdout\n%s" % (self.returncode, self.stderr[-4000:], self.stdout[-4000:])


def run_local(tmp_path, *args):
    marker = uuid.uuid4().hex
    env = dict(os.environ, **{MARKER: marker})
    env.pop("AWS_ENDPOINT_URL", None)
    completed = subprocess.run(
        [sys.executable, "-m", "local", "run", "--json", "--work-dir", str(tmp_path / "stack"), *args],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    return Run(completed, marker)


def chalice_dir_status():
    """``git status`` of .chalice/: what a run must leave as it found it."""
    return subprocess.run(["git", "status", "--porcelain", "--", ".chalice"], cwd=PROJECT_DIR,
                          capture_output=True, text=True, check=True).stdout


# -- clean and messy files, one run ------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("landing")
    return {
        "clean": datafiles.write(folder / "clean.json", datafiles.clean_bytes(rows=200, seed=3)),
        "messy": datafiles.write(folder / "messy.json", datafiles.messy_bytes(seed=5)),
    }


@pytest.fixture(scope="module")
def files_run(files, tmp_path_factory):
    before = chalice_dir_status()
    run = run_local(tmp_path_factory.mktemp("run"), "--file", files["clean"], "--file", files["messy"])
    run.chalice_status_changed = chalice_dir_status() != before
    return run


def test_clean_and_messy_files_run_to_success(files_run):
    assert files_run.returncode == 0, files_run
    assert files_run.report is not None, files_run
    assert [e["status"] for e in files_run.report["executions"]] == ["SUCCEEDED", "SUCCEEDED"], files_run


def test_clean_file_counts_and_totals_equal_the_reference(files, files_run):
    clean = files_run.report["executions"][0]
    assert clean["source"].endswith("/incoming/clean.json")
    ref = expected(files["clean"])
    assert ref["quarantined"] == 0 and ref["duplicates"] == 0  # the file is what its name says
    assert_matches_reference(clean, ref)


def test_messy_file_counts_and_totals_equal_the_reference(files, files_run):
    messy = files_run.report["executions"][1]
    assert messy["source"].endswith("/incoming/messy.json")
    ref = expected(files["messy"])
    assert ref["quarantined"] > 50 and ref["duplicates"] > 0  # the file is what its name says
    assert_matches_reference(messy, ref)


def test_top_level_totals_cover_every_landed_file(files, files_run):
    refs = [expected(files["clean"]), expected(files["messy"])]
    totals = files_run.report["totals"]
    for field in ("shipping_cost", "shipping_distance", "quantity"):
        assert_close(totals[field], math.fsum(r["totals"][field] for r in refs), field)
    assert totals["shipments"] == sum(r["valid"] for r in refs)


def test_two_files_crawl_the_raw_zone_once_or_wait_for_it(files_run):
    # Landing together on a new stage, both find the raw table missing; one crawls, the other
    # waits for that crawl (a second crawl only when the two decisions race its end). The
    # processed zone is an Iceberg table: never crawled.
    assert 1 <= files_run.report["crawls"] <= 2, files_run.report["crawls"]
    assert files_run.report["events"] == {"started": 2}


def test_run_prints_notifications_and_status(files_run):
    assert "== notifications (2)" in files_run.stdout
    assert "Total_Cost_in_$" in files_run.stdout
    assert "== GET /status" in files_run.stdout
    for line in ("stack up on https://127.0.0.1:", "deployed stage local (", "landed s3://",
                 ": SUCCEEDED in "):
        assert line in files_run.stderr, files_run
    # chalice.test's warning about the status routes' IAM authorizer is said once, plainly.
    assert "Warning" not in files_run.stderr, files_run
    assert "API routes answer unsigned requests here" in files_run.stderr, files_run


def test_run_leaves_no_process_and_no_change_to_the_checkout(files_run):
    assert processes_with(files_run.marker) == []
    assert not files_run.chalice_status_changed, chalice_dir_status()


# -- generated batch -----------------------------------------------------------------------------

def test_generated_batch_runs_to_success(tmp_path):
    run = run_local(tmp_path, "--rows", "50", "--seed", "7")

    assert run.returncode == 0, run
    [execution] = run.report["executions"]
    # the batch is reproducible from its seed and the day in its landing key
    day = dt.datetime.strptime(execution["source"].split("/incoming/", 1)[1][:10], "%Y/%m/%d").date()
    body = generator.generate_ndjson(50, seed=7, today=day)
    ref = expected(body.encode("utf-8"))
    assert ref["valid"] == 50
    assert_matches_reference(execution, ref)
    assert execution["totals"]["shipping_cost"] == run.report["totals"]["shipping_cost"]


# -- a file with no valid line -----------------------------------------------------------------

def test_all_bad_file_fails_at_json_to_parquet(tmp_path):
    path = datafiles.write(tmp_path / "all-bad.json", datafiles.all_bad_bytes())
    assert expected(path)["valid"] == 0

    run = run_local(tmp_path, "--file", path)

    assert run.returncode != 0, run
    [execution] = run.report["executions"]
    assert execution["status"] == "FAILED", run
    assert execution["failed_step"] == "json-to-parquet", run
    assert "json-to-parquet" in run.stdout.split("== GET /status")[0]  # the failure notification
    assert run.report["totals"] is None
    assert processes_with(run.marker) == []


# -- timeout -------------------------------------------------------------------------------------

def test_timeout_names_the_execution_and_fails(tmp_path):
    run = run_local(tmp_path, "--rows", "5", "--timeout", "0.5")

    assert run.returncode == 1, run
    assert "timed out after 0.5 s waiting for 1 execution(s)" in run.stderr, run
    [execution] = run.report["executions"]
    assert execution["status"] in ("RUNNING", "NOT_STARTED"), run
    assert execution["error"] == "timed out after 0.5 s"
    assert processes_with(run.marker) == []


# -- Ctrl-C --------------------------------------------------------------------------------------

def test_interrupt_stops_cleanly(tmp_path):
    marker = uuid.uuid4().hex
    env = dict(os.environ, **{MARKER: marker})
    env.pop("AWS_ENDPOINT_URL", None)
    # Each crawl takes a minute: the run cannot finish (and be stopping already, Ctrl-C ignored
    # while the stack shuts down) by the time the signal lands, however fast the jobs are.
    process = subprocess.Popen(
        [sys.executable, "-m", "local", "run", "--rows", "20", "--crawl-seconds", "60",
         "--work-dir", str(tmp_path / "stack")],
        cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in process.stderr:
            seen.append(line)
            if line.startswith("glue job "):  # the job server process is up, the crawl comes next
                break
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, "".join(seen) + err
    assert "interrupted" in err
    assert processes_with(marker) == []


# -- PII stays in the raw zone -----------------------------------------------------------------

def _pii_values(*sources):
    values = set()
    for source in sources:
        for record in reference.analyze(source).kept:
            for field in PII_FIELDS:
                value = record.get(field)
                # short values ("a,]") could match by chance inside numbers or JSON punctuation
                if isinstance(value, str) and len(value.strip()) >= 5:
                    values.add(value)
    return values


def parquet_text(data):
    """Every value of a Parquet file, as JSON text."""
    return json.dumps(pq.read_table(io.BytesIO(data)).to_pylist(), default=str, ensure_ascii=False)


def _found(text, values):
    return sorted(v for v in values if v in text)


def test_pii_appears_nowhere_downstream_of_the_raw_zone(tmp_path):
    from local.stack import LocalStack

    messy = datafiles.messy_bytes(seed=11)
    batch = generator.generate_ndjson(30, seed=4).encode("utf-8")
    pii = _pii_values(messy, batch)
    assert len(pii) > 20

    with LocalStack(work_dir=str(tmp_path / "stack")) as stack:
        # landed together: each execution's outputs, catalog decisions included, are inspected
        names = [stack.land(body, key=key).execution_name
                 for body, key in ((messy, "incoming/pii/messy.json"), (batch, "incoming/pii/batch.json"))]
        ended = stack.wait_for_executions(names, timeout=180)
        assert [ended[name]["status"] for name in names] == ["SUCCEEDED", "SUCCEEDED"]
        stack.query_totals()  # its result CSV lands in athena-results/ too
        notifications = stack.notifications()
        status = json.dumps(stack.status(), ensure_ascii=False)
        s3 = stack.client("s3")
        lake = stack.resources.lake_bucket

        def objects(prefix):
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=lake, Prefix=prefix)
            return [o["Key"] for page in pages for o in page.get("Contents", [])]

        def body(key):
            return s3.get_object(Bucket=lake, Key=key)["Body"].read()

        parquet_keys = [k for k in objects(PROCESSED_PREFIX) if k.endswith(".parquet")]
        result_keys = objects(ATHENA_RESULTS_PREFIX)
        manifest_keys = objects(MANIFEST_PREFIX)
        assert parquet_keys and manifest_keys
        assert any(k.endswith(".raw-catalog.json") for k in manifest_keys)
        assert not any(k.endswith(".processed-catalog.json") for k in manifest_keys)  # Iceberg: no crawl
        assert any(k.endswith(".csv") for k in result_keys)
        raw_text = "".join(parquet_text(body(k)) for k in objects(RAW_PREFIX) if k.endswith(".parquet"))

        for key in parquet_keys:
            columns = pq.read_schema(io.BytesIO(body(key))).names
            assert not set(PII_FIELDS) & set(columns), key
            assert _found(parquet_text(body(key)), pii) == [], key
        for key in result_keys + manifest_keys:
            assert _found(body(key).decode("utf-8", "replace"), pii) == [], key
    for message in notifications:
        assert _found(message, pii) == []
    assert len(notifications) == 2
    assert _found(status, pii) == []
    # the check can fail: the raw zone does hold the values
    assert _found(raw_text, pii)
