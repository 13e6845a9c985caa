"""A key is one logical file: ``python -m local run --file A --file B --key KEY`` lands both at
one key, as two versions, and each execution reads exactly its own version; the whole table then
holds only the newest version's rows, whatever order the executions finish in."""
import json
import os
import subprocess
import sys

import pytest

from tests import datafiles, reference

pytestmark = pytest.mark.e2e

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_TIMEOUT = 300
KEY = "incoming/same.json"


def run_json(tmp_path, *args):
    env = dict(os.environ)
    env.pop("AWS_ENDPOINT_URL", None)
    completed = subprocess.run(
        [sys.executable, "-m", "local", "run", "--json", "--work-dir", str(tmp_path / "stack"), *args],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert completed.stdout.strip(), completed.stderr[-3000:]
    return completed.returncode, json.loads(completed.stdout.strip().splitlines()[-1]), completed.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("versions")
    a = datafiles.write(folder / "a.json", datafiles.clean_bytes(rows=50, seed=11))
    b = datafiles.write(folder / "b.json", datafiles.messy_bytes(seed=12))
    return a, b


@pytest.mark.parametrize("order", ["a-then-b", "b-then-a"])
def test_each_execution_reads_its_own_version(tmp_path, files, order):
    first, second = files if order == "a-then-b" else files[::-1]

    returncode, report, stderr = run_json(tmp_path, "--file", first, "--file", second, "--key", KEY)

    assert returncode == 0, stderr[-3000:]
    executions = report["executions"]
    assert [e["status"] for e in executions] == ["SUCCEEDED", "SUCCEEDED"]
    assert executions[0]["source"] == executions[1]["source"]
    assert executions[0]["source"].endswith("/" + KEY)
    for execution, path in zip(executions, (first, second)):
        wanted = reference.evaluate(path)
        assert execution["rows"] == {k: wanted[k] for k in ("read", "valid", "quarantined", "duplicates")}


@pytest.mark.parametrize("order", ["a-then-b", "b-then-a"])
def test_the_newest_version_of_a_key_wins(tmp_path, files, order):
    first, second = files if order == "a-then-b" else files[::-1]

    returncode, report, stderr = run_json(tmp_path, "--file", first, "--file", second, "--key", KEY)

    assert returncode == 0, stderr[-3000:]
    assert [e["status"] for e in report["executions"]] == ["SUCCEEDED", "SUCCEEDED"]
    newest = reference.evaluate(second)
    assert report["totals"]["shipments"] == newest["valid"]
    for field in ("shipping_cost", "shipping_distance", "quantity"):
        assert report["totals"][field] == pytest.approx(newest["totals"][field], rel=1e-9, abs=1e-6)
