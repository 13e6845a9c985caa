"""The Glue job's C module (glue/native) as the wheel the deploy builds, uploads and lists for the
json-to-parquet job: its tags, that it loads on Glue's glibc and Python, that it is reproducible,
and what ``up`` does with it and without it (moto in-process)."""
import base64
import csv
import glob
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import boto3
import pytest

from chalicelib import glue_jobs
from chalicelib.resources import Resources
from deploy import native_wheel
from tests.deploying import STAGE, deploy_up

REPO_ROOT = Path(__file__).resolve().parent.parent
RESOURCES = Resources(stage=STAGE, account_id="123456789012", region="us-east-1")
WHEEL_URI = RESOURCES.lake_uri(glue_jobs.native_wheel_key())
ZIP_URI = RESOURCES.lake_uri(glue_jobs.library_zip_key())


def copy_native_sources(project_dir):
    target = Path(project_dir) / glue_jobs.NATIVE_SOURCE_DIR
    target.mkdir(parents=True, exist_ok=True)
    for name in glue_jobs.NATIVE_SOURCES:
        shutil.copy(REPO_ROOT / glue_jobs.NATIVE_SOURCE_DIR / name, target / name)
    return project_dir


def build_or_skip(project_dir):
    """``build_glue_wheel``, skipping (not failing) only where this machine cannot build it."""
    try:
        native_wheel._check_machine()
    except native_wheel.NativeWheelUnavailable as exc:
        pytest.skip("the Glue wheel cannot be built here: %s" % exc)
    return native_wheel.build_glue_wheel(project_dir)


@pytest.fixture(scope="session")
def glue_wheel(tmp_path_factory):
    """``(path, bytes)`` of the Glue wheel, built once per session (and kept in memory by
    deploy.native_wheel, so each ``up`` below reuses it)."""
    project = copy_native_sources(tmp_path_factory.mktemp("native"))
    started = time.perf_counter()
    body = build_or_skip(project)
    print("glue wheel built in %.2f s" % (time.perf_counter() - started))
    path = project / glue_jobs.NATIVE_WHEEL_NAME
    path.write_bytes(body)
    return path, body


@pytest.fixture
def native_project(project):
    """The deploy tests' project with glue/native in it."""
    return copy_native_sources(project)


def job_arguments(name):
    return boto3.client("glue").get_job(JobName=name)["Job"]["DefaultArguments"]


def actions(result):
    return {(change.kind, change.name): change.action for change in result.changes}


# -- the wheel -------------------------------------------------------------------------------------
def test_wheel_is_cp39_abi3_manylinux2014_with_a_true_record(glue_wheel):
    path, body = glue_wheel
    pyproject = tomllib.loads((REPO_ROOT / "glue/native/pyproject.toml").read_text())["project"]
    dist = "%s-%s" % (pyproject["name"].replace("-", "_"), pyproject["version"])
    assert glue_jobs.NATIVE_WHEEL_NAME == dist + "-cp39-abi3-manylinux2014_x86_64.whl"

    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        names = archive.namelist()
        assert "shipping_ndjson.abi3.so" in names
        wheel_file = archive.read(dist + ".dist-info/WHEEL").decode()
        assert re.findall(r"^Tag: (.*)$", wheel_file, re.M) == ["cp39-abi3-manylinux2014_x86_64"]
        assert "Root-Is-Purelib: false" in wheel_file
        # RECORD names every member with its hash and size (the retag rewrote WHEEL).
        rows = list(csv.reader(io.StringIO(archive.read(dist + ".dist-info/RECORD").decode())))
        assert sorted(row[0] for row in rows) == sorted(names)
        for name, digest, size in rows:
            if name.endswith("RECORD"):
                continue
            data = archive.read(name)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert (digest, int(size)) == ("sha256=" + expected, len(data)), name
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_auditwheel_confirms_manylinux2014(glue_wheel):
    path, body = glue_wheel
    assert native_wheel.manylinux2014_problems(body) == []
    completed = subprocess.run([sys.executable, "-m", "auditwheel", "show", str(path)],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    shown = " ".join(completed.stdout.split())
    assert 'consistent with the following platform tag: "manylinux_2_17_x86_64"' in shown, shown


def test_check_refuses_a_binary_that_needs_a_newer_glibc(tmp_path):
    """pthread_create is GLIBC_2.34 where libpthread went into libc: such a build would not load
    on Glue. (Skipped where the machine's glibc is older than that, or without gcc.)"""
    if shutil.which("gcc") is None:
        pytest.skip("no gcc")
    source = tmp_path / "threads.c"
    source.write_text("#include <pthread.h>\n"
                      "static void *run(void *arg) { return arg; }\n"
                      "int start(pthread_t *thread) { return pthread_create(thread, 0, run, 0); }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(tmp_path / "threads.so"), str(source), "-pthread"],
                   check=True, timeout=60)
    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(tmp_path / "threads.so", "threads.so")
    glibc = tuple(int(part) for part in os.confstr("CS_GNU_LIBC_VERSION").split()[1].split(".")[:2])
    if glibc < (2, 34):
        pytest.skip("glibc %d.%d gives pthread_create an older version" % glibc)
    problems = native_wheel.manylinux2014_problems(wheel.getvalue())
    assert problems and "GLIBC_2.34" in problems[0], problems


def test_same_sources_give_the_same_bytes(glue_wheel, tmp_path, monkeypatch):
    """Built again, elsewhere, without the caches: the same bytes, so a deploy from another
    checkout or a clean one finds the uploaded wheel unchanged."""
    _path, body = glue_wheel
    monkeypatch.setattr(native_wheel, "_built", {})
    assert native_wheel.build_glue_wheel(copy_native_sources(tmp_path)) == body
    assert [p.name for p in (tmp_path / native_wheel.CACHE_DIR).iterdir()][0].endswith(".whl")


def _python39():
    """A working Python 3.9 (Glue's), if this machine has one."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for candidate in [shutil.which("python3.9")] + sorted(glob.glob(os.path.join(root, "versions/3.9*/bin/python3.9"))):
        if candidate and subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


def test_pip_installs_it_as_glue_does_and_it_imports(glue_wheel, tmp_path):
    """Glue's runner: ``pip install --target`` on Python 3.9 (pip checks the tags against that);
    the module then imports there (when this machine has a 3.9) and here (3.11, stable ABI)."""
    path, _body = glue_wheel
    target = tmp_path / "glue-libs"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--no-index", "--no-deps", "--only-binary=:all:", "--target", str(target),
                    "--platform", "manylinux2014_x86_64", "--python-version", "3.9",
                    "--implementation", "cp", str(path)], check=True, timeout=120)
    probe = "import sys; sys.path.insert(0, %r); import shipping_ndjson; print(shipping_ndjson.__file__)" % str(target)
    for python in filter(None, [sys.executable, _python39()]):
        completed = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
        assert completed.returncode == 0, (python, completed.stderr)
        assert completed.stdout.strip() == str(target / "shipping_ndjson.abi3.so")


# -- deploy ----------------------------------------------------------------------------------------
def test_up_uploads_the_wheel_for_the_json_to_parquet_job(aws, asl, native_project, glue_wheel):
    _path, body = glue_wheel
    first = deploy_up(native_project)
    second = deploy_up(native_project)

    assert actions(first)[("glue asset", WHEEL_URI)] == "created"
    assert actions(second)[("glue asset", WHEEL_URI)] == "unchanged"
    assert not second.changed and len(second.changes) == len(first.changes)
    uploaded = boto3.client("s3").get_object(Bucket=RESOURCES.lake_bucket, Key=glue_jobs.native_wheel_key())
    assert uploaded["Body"].read() == body and uploaded["ContentType"] == "application/zip"
    # The zip, the C module's wheel (json-to-parquet only), then the libraries' wheels.
    assert job_arguments(RESOURCES.json_to_parquet_job)["--extra-py-files"].startswith(ZIP_URI + "," + WHEEL_URI + ",")
    normalize_files = job_arguments(RESOURCES.normalize_job)["--extra-py-files"].split(",")
    assert normalize_files[0] == ZIP_URI and WHEEL_URI not in normalize_files


def test_changed_c_source_uploads_a_new_wheel(aws, asl, native_project, glue_wheel):
    deploy_up(native_project)
    source = native_project / glue_jobs.NATIVE_SOURCE_DIR / "shipping_ndjson.c"
    source.write_text(source.read_text() + "\nint shipping_ndjson_changed = 1;\n")

    result = deploy_up(native_project)

    assert actions(result)[("glue asset", WHEEL_URI)] == "updated"
    assert actions(result)[("glue job", RESOURCES.json_to_parquet_job)] == "unchanged"


def test_up_without_a_buildable_wheel_warns_and_leaves_it_out(aws, asl, native_project, glue_wheel,
                                                             monkeypatch):
    deploy_up(native_project)  # with the wheel: a later deploy without it stops listing it

    def unavailable(project_dir):
        raise native_wheel.NativeWheelUnavailable("no C compiler (gcc) found")

    monkeypatch.setattr(native_wheel, "build_glue_wheel", unavailable)
    out = io.StringIO()
    result = deploy_up(native_project, out=out)

    printed = out.getvalue()
    assert "warning:" in printed and "no C compiler (gcc) found" in printed
    assert "json-to-parquet job will use its slower pure-DuckDB path" in printed
    assert ("glue asset", WHEEL_URI) not in actions(result)
    assert actions(result)[("glue job", RESOURCES.json_to_parquet_job)] == "updated"
    files = job_arguments(RESOURCES.json_to_parquet_job)["--extra-py-files"].split(",")
    assert files[0] == ZIP_URI and WHEEL_URI not in files


def test_dry_run_shows_the_wheel_or_the_warning(aws, asl, native_project, glue_wheel, monkeypatch):
    out = io.StringIO()
    deploy_up(native_project, dry_run=True, out=out)
    assert re.search(r"would create\s+glue asset\s+%s" % re.escape(WHEEL_URI), out.getvalue())
    assert "warning:" not in out.getvalue()

    def elsewhere():
        raise native_wheel.NativeWheelUnavailable("Glue runs Linux x86_64 and this is darwin arm64")

    monkeypatch.setattr(native_wheel, "_check_machine", elsewhere)
    out = io.StringIO()
    planned = deploy_up(native_project, dry_run=True, out=out)
    assert "this is darwin arm64" in out.getvalue() and "pure-DuckDB" in out.getvalue()
    assert ("glue asset", WHEEL_URI) not in actions(planned)


def test_makefile_rebuilds_the_module_from_the_same_sources():
    """make's prerequisites (rebuild on change) are the files the deploy builds from."""
    makefile = (REPO_ROOT / "Makefile").read_text()
    listed = re.search(r"^NATIVE_SOURCES := (.*)$", makefile, re.M).group(1).split()
    assert listed == ["%s/%s" % (glue_jobs.NATIVE_SOURCE_DIR, name) for name in glue_jobs.NATIVE_SOURCES]
    assert sorted(p.name for p in (REPO_ROOT / glue_jobs.NATIVE_SOURCE_DIR).iterdir()
                  if p.is_file()) == sorted(glue_jobs.NATIVE_SOURCES)
