"""The Glue jobs' shared I/O helpers: memory limits, and the job runner keeping pandas out."""
import os
import subprocess
import sys

import pytest

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLUE_DIR = os.path.join(PROJECT_DIR, "glue")
if GLUE_DIR not in sys.path:
    sys.path.insert(0, GLUE_DIR)

import jobio  # noqa: E402


@pytest.mark.parametrize("text, megabytes", [
    ("800MB", 800.0), ("1GB", 1000.0), ("512MiB", 512 * 1024 ** 2 / 1e6), (" 2.5 gb ", 2500.0),
    ("1000000000", 1000.0), ("lots", None), ("", None), ("-5MB", None),
])
def test_sizes_are_read_as_duckdb_writes_them(text, megabytes):
    assert jobio.size_mb(text) == megabytes


def test_duckdb_gets_the_job_limit_less_what_the_process_needs_besides():
    assert jobio.duckdb_memory_limit("800MB") == "%dMB" % (800 - jobio.PROCESS_BASELINE_MB)
    assert jobio.duckdb_memory_limit("1GB") == "%dMB" % (1000 - jobio.PROCESS_BASELINE_MB)
    # A small limit still leaves DuckDB a quarter of it.
    assert jobio.duckdb_memory_limit("160MB") == "40MB"
    # Not a size: DuckDB is handed it and says why it is not usable.
    assert jobio.duckdb_memory_limit("lots") == "lots"


def test_a_job_run_cannot_import_pandas_or_numpy_and_the_process_can_again_afterwards():
    seen = []

    def job(argv):
        seen.append([type(finder).__name__ for finder in sys.meta_path])

    assert jobio.run(job, []) == 0
    assert "WithoutPandasOrNumpy" in seen[0]
    assert not any(isinstance(finder, jobio.WithoutPandasOrNumpy) for finder in sys.meta_path)
    for name in ("pandas.core.frame", "numpy", "numpy.linalg"):
        with pytest.raises(ModuleNotFoundError):
            jobio.WithoutPandasOrNumpy().find_spec(name)
    assert jobio.WithoutPandasOrNumpy().find_spec("numpyro") is None
    assert jobio.WithoutPandasOrNumpy().find_spec("json") is None


def test_a_job_script_that_imports_pandas_fails_and_says_so():
    code = "import sys, jobio; sys.exit(jobio.run(lambda argv: __import__('pandas')))"
    done = subprocess.run([sys.executable, "-c", code], cwd=GLUE_DIR, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=GLUE_DIR))

    assert done.returncode == 1
    assert "the Glue jobs do not use pandas" in done.stderr
