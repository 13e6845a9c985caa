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


def test_the_shared_modules_import_without_a_cycle_and_both_jobs_share_one_entry_point():
    code = ("import sys, jobio; assert 'catalog' not in sys.modules and 'jobentry' not in sys.modules; "
            "import catalog; assert 'jobentry' not in sys.modules; import jobentry")
    done = subprocess.run([sys.executable, "-c", code], cwd=GLUE_DIR, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=GLUE_DIR))
    assert done.returncode == 0, done.stderr
    for script in ("json_to_parquet.py", "normalize.py"):
        with open(os.path.join(GLUE_DIR, script), encoding="utf-8") as source:
            text = source.read()
        assert "jobentry.start(argv" in text and "jobentry.main(main)" in text, script
        assert "sys.path.insert" not in text and "parse_args(" not in text, script


def test_the_entry_point_parses_the_catalog_options_and_reports_errors_with_status_1(tmp_path, capsys):
    import jobentry

    job = jobentry.start(["--source_uri", "a", "--threads", "2", "--JOB_NAME", "x"], ("source_uri",),
                         {"threads": None})
    assert job.args["source_uri"] == "a" and job.threads == 2 and job.catalog is None and not job.catalog_only
    with pytest.raises(jobio.JobError, match="catalog arguments go together"):
        jobentry.start(["--source_uri", "a", "--catalog_database", "db"], ("source_uri",), {})

    def failing(argv):
        jobentry.start(argv, ("source_uri",), {})

    with pytest.raises(SystemExit) as exit_status:
        jobentry.main(failing)
    assert exit_status.value.code == 1
