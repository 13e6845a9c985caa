"""No record content outside the raw and quarantine zones: records whose names and addresses are
unique markers, with bad lines among them (lines that quote the markers where a parser chokes),
go through the pipeline under every ``--fail STEP``, with both provers and a job that crashes
mid-run; no log line, notification, ``/status`` answer or dashboard page may hold a marker.
"""
import glob
import json
import os
import subprocess
import sys
import uuid

import pytest

from chalicelib import redact
from chalicelib.asl import STEPS
from local.faults import TRIGGER
from tests import datafiles

pytestmark = pytest.mark.e2e

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_TIMEOUT = 300


def marked_file(path):
    """A landing file whose names and addresses are unique markers; returns the markers."""
    markers = []
    lines = []
    for index, record in enumerate(datafiles.clean_records(12, seed=77)):
        name, street = "Zq%sName" % uuid.uuid4().hex[:10], "Zq%sStreet" % uuid.uuid4().hex[:10]
        markers += [name, street]
        record = dict(record, customer_name=name, street_address=street)
        if index % 3 == 1:
            record["quantity"] = name  # a bad value holding a marker
        lines.append(json.dumps(record))
    bare = "Zq%sBare" % uuid.uuid4().hex[:10]
    markers.append(bare)
    lines.append('"%s, 1 Main St"' % bare)  # a line that is a JSON string, as in the issue
    lines.append('{"customer_name": "%s", ' % markers[0])  # a cut line
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")
    return markers


def leaks(text, markers):
    return sorted({m for m in markers if m in text})


def run(tmp_path, *args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    env.pop("AWS_ENDPOINT_URL", None)
    work = tmp_path / "stack"
    completed = subprocess.run(
        [sys.executable, "-m", "local", "run", "--json", "--work-dir", str(work), *args],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    logs = ""
    for path in glob.glob(str(work / "**" / "*.log"), recursive=True):
        with open(path, errors="replace") as f:
            logs += f.read()
    return completed, logs


@pytest.mark.parametrize("fault", [()] + [("--fail", step) for step in STEPS if step != "crawl-processed"]
                         + [("--fail", TRIGGER)])
def test_no_marker_leaves_the_pii_zones(tmp_path, fault):
    path = tmp_path / "people.json"
    markers = marked_file(path)

    completed, logs = run(tmp_path, "--file", str(path), *fault)

    # stdout holds every notification, the /status answer and the run's report
    assert completed.stdout.strip(), completed.stderr[-2000:]
    assert leaks(completed.stdout, markers) == []
    assert leaks(completed.stderr, markers) == []
    assert leaks(logs, markers) == []


def test_the_duckdb_prover_prints_no_record_content(tmp_path):
    path = tmp_path / "people.json"
    markers = marked_file(path)
    for prover in ("duckdb", "auto"):
        completed = subprocess.run(
            [sys.executable, os.path.join(PROJECT_DIR, "glue", "json_to_parquet.py"),
             "--source_uri", str(path), "--target_uri", str(tmp_path / ("t-%s.parquet" % prover)),
             "--quarantine_uri", str(tmp_path / ("q-%s.jsonl" % prover)), "--prover", prover],
            capture_output=True, text=True, timeout=120)
        assert completed.returncode == 0, completed.stderr[-2000:]
        assert leaks(completed.stdout + completed.stderr, markers) == []
        # ... while the quarantine zone keeps the bad lines verbatim
        with open(tmp_path / ("q-%s.jsonl" % prover)) as quarantined:
            assert leaks(quarantined.read(), markers)


def test_a_job_that_crashes_mid_run_logs_no_record_content(caplog):
    sys.path.insert(0, os.path.join(PROJECT_DIR, "glue"))
    import jobio

    marker = "Zq%sCrash" % uuid.uuid4().hex[:10]

    def crash(argv):
        raise ValueError('Could not convert string "%s, 1 Main St" at line 7, position 12' % marker)

    assert jobio.run(crash, []) == 1
    assert marker not in caplog.text
    assert "failed: ValueError (line 7, position 12)" in caplog.text


def test_error_summary_keeps_class_and_position_only():
    error = ValueError('Malformed JSON in line 3 at position 9: "Alice Smith, 1 Main St"')

    assert redact.error_summary(error) == "ValueError (line 3, position 9)"
    assert redact.scrub('got "Alice" and \'Bob\'') == 'got "<redacted>" and \'<redacted>\''
