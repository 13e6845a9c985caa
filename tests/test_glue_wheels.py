"""The Glue jobs' libraries: resolved to wheels Glue's Python 3.9 shell can install, or a clear error.

The first two tests ask the package index (through pip and its cache) afresh, so they fail as
soon as a pin loses its wheel for Glue's platform.
"""
import json
import zipfile

import pytest

from chalicelib import glue_jobs
from deploy import DeployError, glue_wheels
from local.glue_runner import local_requirement
from tests import glue_versions


def _name(spec):
    return spec.split("==")[0].lower().replace("_", "-")


def test_every_pin_resolves_to_glue_platform_wheels(tmp_path):
    wheel_set = glue_wheels.resolve(glue_versions.ROOT, cache_dir=tmp_path)
    names = {w.name.lower().replace("_", "-"): w for w in wheel_set.wheels}
    for spec in glue_jobs.ADDITIONAL_PYTHON_MODULES:
        name, version = spec.split("==")
        assert names[_name(spec)].version == version, spec
    problems = [p for w in wheel_set.wheels for p in glue_wheels.glue_platform_problems(w.filename)]
    assert problems == []
    for wheel in wheel_set.wheels:
        python_tags, abi_tags, platforms = glue_wheels.wheel_tags(wheel.filename)
        assert python_tags & {"cp39", "py3", "py2"} or "abi3" in abi_tags, wheel.filename
        assert "any" in platforms or any(p.startswith("manylinux") for p in platforms), wheel.filename
    # The files are there, with the hashes pip checked.
    assert set(wheel_set.payloads()) == {w.key() for w in wheel_set.wheels}
    # A second resolution of the same pins comes from the cache, without pip.
    again = glue_wheels.resolve(glue_versions.ROOT, cache_dir=tmp_path, python="/nonexistent/python")
    assert again.wheels == wheel_set.wheels


def test_a_pin_without_a_glue_wheel_fails_the_deploy_clearly(tmp_path):
    # pyarrow 21 ships CPython 3.9 only as manylinux_2_28 (glibc 2.28): Glue 3.0 has glibc 2.26.
    with pytest.raises(DeployError, match=r"pyarrow==21\.0\.0 has no wheel for Glue's Python shell"):
        glue_wheels.resolve(glue_versions.ROOT, pins=("pyarrow==21.0.0",), cache_dir=tmp_path)


def test_the_glue_venv_tests_the_pinned_versions():
    requirements = glue_versions.glue_requirements()
    for spec in glue_jobs.ADDITIONAL_PYTHON_MODULES:
        assert spec in requirements
    assert "pyarrow==20.0.0" in glue_jobs.ADDITIONAL_PYTHON_MODULES


@pytest.mark.parametrize("filename, ok", [
    ("pyarrow-20.0.0-cp39-cp39-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", True),
    ("duckdb-1.4.5-cp39-cp39-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl", True),
    ("pyiceberg_core-0.6.0-cp39-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", True),
    ("six-1.17.0-py2.py3-none-any.whl", True),
    ("pyarrow-21.0.0-cp39-cp39-manylinux_2_28_x86_64.whl", False),
    ("pyarrow-20.0.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", False),
    ("x-1.0-cp39-cp39-linux_x86_64.whl", False),
    ("x-1.0-cp39-cp39-manylinux2014_aarch64.whl", False),
    ("x-1.0-cp39-cp39-macosx_11_0_x86_64.whl", False),
    # Only older and newer tags than the documented range (manylinux2014..manylinux_2_26).
    ("mmh3-5.2.0-cp39-cp39-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl", False),
    ("mmh3-5.1.0-cp39-cp39-manylinux_2_5_x86_64.manylinux1_x86_64.manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
     True),
])
def test_glue_platform_tags(filename, ok):
    assert (glue_wheels.glue_platform_problems(filename) == []) is ok


@pytest.mark.parametrize("requires, ok", [(None, True), (">=3.9", True), (">=3.7,!=3.8.*", True),
                                          (">=3.10", False), ("~=3.11", False)])
def test_a_release_for_newer_pythons_fails_the_deploy_clearly(requires, ok):
    # An index that omits Requires-Python lets pip --python-version 3.9 pick such a release.
    metadata = {"name": "requests", "version": "9.9", "requires_python": requires}
    if ok:
        glue_wheels._check_requires_python(metadata)
    else:
        with pytest.raises(DeployError, match="requires Python .* GLUE_DEPENDENCY_PINS"):
            glue_wheels._check_requires_python(metadata)


def _wheel(path, modules):
    with zipfile.ZipFile(path, "w") as archive:
        for module in modules:
            archive.writestr(module, "")
        archive.writestr("x-1.0.dist-info/RECORD", "")
    return path


def test_a_job_import_no_pin_provides_is_reported(tmp_path):
    (tmp_path / "glue").mkdir()
    (tmp_path / "glue" / "job.py").write_text(
        "import os\nimport duckdb\nimport boto3\nimport yaml.loader\n"
        "try:\n    import shipping_ndjson\nexcept ImportError:\n    pass\n")
    wheel = _wheel(tmp_path / "duckdb-1.4.5-cp39-cp39-manylinux_2_26_x86_64.whl",
                   ["duckdb/__init__.py", "_duckdb.cpython-39-x86_64-linux-gnu.so"])
    wheel_set = glue_wheels.WheelSet((), (glue_wheels.Wheel("duckdb", "1.4.5", wheel.name, ""),), tmp_path)
    assert glue_wheels.missing_modules(tmp_path, wheel_set) == {"yaml"}


def test_the_local_runner_installs_loadable_wheels_as_uploaded(tmp_path):
    abi3 = tmp_path / "shipping_etl_ndjson-1.0.0-cp39-abi3-manylinux2014_x86_64.whl"
    cp39 = tmp_path / "pyarrow-20.0.0-cp39-cp39-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    pure = tmp_path / "six-1.17.0-py2.py3-none-any.whl"
    assert local_requirement(str(abi3)) == str(abi3)
    assert local_requirement(str(pure)) == str(pure)
    # CPython 3.11 cannot load a cp39 binary: the same release, built for this interpreter.
    assert local_requirement(str(cp39)) == "pyarrow==20.0.0"


def _cache_folder(path, pins, content):
    wheel = glue_wheels.Wheel("example", "1.0", "example-1.0-py3-none-any.whl", "0" * 64)
    path.mkdir()
    (path / wheel.filename).write_bytes(content)
    manifest = {"pins": list(pins), "wheels": [{"name": wheel.name, "version": wheel.version,
                                                 "filename": wheel.filename, "sha256": wheel.sha256}]}
    (path / glue_wheels.MANIFEST).write_text(json.dumps(manifest))
    return wheel


def test_a_download_finished_second_keeps_the_cache_another_process_put_there(tmp_path):
    # Two test workers (or deploys) on a fresh checkout download the same pins at once: the one
    # that finishes second must not remove the folder the first is reading its wheels from.
    pins = ("example==1.0",)
    directory, partial = tmp_path / "key", tmp_path / "key.123.partial"
    _cache_folder(directory, pins, b"theirs")
    _cache_folder(partial, pins, b"ours")
    kept = glue_wheels._publish(partial, directory, pins)
    assert kept.directory == directory and [w.name for w in kept.wheels] == ["example"]
    assert (directory / "example-1.0-py3-none-any.whl").read_bytes() == b"theirs"
    assert not partial.exists()


def test_a_download_replaces_a_stale_cache_folder(tmp_path):
    pins = ("example==1.0",)
    directory, partial = tmp_path / "key", tmp_path / "key.123.partial"
    directory.mkdir()
    (directory / "leftover.whl").write_bytes(b"old")  # no manifest: a folder left half written
    _cache_folder(partial, pins, b"ours")
    assert glue_wheels._publish(partial, directory, pins) is None
    assert (directory / "example-1.0-py3-none-any.whl").read_bytes() == b"ours"
    assert not (directory / "leftover.whl").exists() and not partial.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["key"]
