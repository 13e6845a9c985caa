"""The json-to-parquet job's C module (glue/native) as the wheel Glue installs.

``build_glue_wheel`` builds it with this interpreter's pip and setuptools (``pip wheel
--no-build-isolation``: offline, about a second), checks that the binary runs on any Linux with
glibc 2.17 or later (manylinux2014: glibc symbol versions up to 2.17, no library beyond glibc's),
and only then tags it ``manylinux2014_x86_64`` (setuptools tags what it builds ``linux_x86_64``,
which promises nothing about other machines). The bytes are reproducible (fixed
SOURCE_DATE_EPOCH, no build path in the binary: see glue/native/setup.py), so a second ``up``
finds the uploaded wheel unchanged.

Glue's Python shell runs on Linux x86_64, so the wheel is built only there, with a C compiler;
anywhere else ``NativeWheelUnavailable`` says why, and the deploy goes on without it (the job then
proves lines with DuckDB alone, slower).
"""
import base64
import hashlib
import importlib.metadata
import importlib.util
import io
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

from chalicelib import glue_jobs
from deploy.errors import DeployError

# 1980-01-01T00:00:00Z, the earliest time a zip entry holds (assets' zip uses the same).
SOURCE_DATE_EPOCH = "315532800"
BUILT_PLATFORM_TAG = "linux_x86_64"
GLUE_PLATFORM_TAG = "manylinux2014_x86_64"
# manylinux2014 (PEP 599): glibc 2.17; of its allowed libraries the module may only need glibc's.
MAX_GLIBC = (2, 17)
GLIBC_LIBRARIES = frozenset({"libc.so.6", "libpthread.so.0", "libm.so.6", "libdl.so.2", "librt.so.1"})
BUILD_TIMEOUT_SECONDS = 300
# Built wheels, by the hash of what went into them, under the project (git ignores /build/): the
# local stack deploys in every process it starts, and a build costs about a second and a half.
CACHE_DIR = "build/native-wheel"

# The same, in memory: a process (the tests, a long-running stack) deploys many times.
_built = {}


class NativeWheelUnavailable(Exception):
    """The wheel cannot be built on this machine; the message says why."""


def build_glue_wheel(project_dir):
    """The Glue wheel of ``project_dir``'s glue/native as bytes (to be named ``NATIVE_WHEEL_NAME``).

    Built with this interpreter's pip and setuptools, or taken from the cache when the sources,
    the interpreter and setuptools are the same. Raises NativeWheelUnavailable when it cannot be
    built here (not Linux x86_64, no C compiler, no Python headers, sources missing, the build
    failing, a binary Glue's glibc could not load), DeployError when glue/native and
    chalicelib.glue_jobs disagree on the wheel's name.
    """
    _check_machine()
    sources = _read_sources(Path(project_dir))
    key = _cache_key(sources)
    if key not in _built:
        cached = Path(project_dir) / CACHE_DIR / (key + ".whl")
        wheel = _read_cached(cached)
        if wheel is None:
            wheel = _build(sources)
            _write_cached(cached, wheel)
        _built[key] = wheel
    return _built[key]


def _cache_key(sources):
    """Hash of what decides the wheel's bytes: the sources, the interpreter and its setuptools."""
    try:
        setuptools_version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        setuptools_version = None
    digest = hashlib.sha256(repr((sys.executable, sys.version, setuptools_version,
                                  sysconfig.get_config_var("CC"), glue_jobs.NATIVE_WHEEL_NAME)).encode())
    for name, body in sorted(sources.items()):
        digest.update(name.encode() + b"\0" + hashlib.sha256(body).digest())
    return digest.hexdigest()


def _read_cached(path):
    """The cached wheel at ``path`` if it is there and still qualifies, else None."""
    try:
        wheel = path.read_bytes()
        return wheel if not manylinux2014_problems(wheel) else None
    except (OSError, zipfile.BadZipFile):
        return None


def _write_cached(path, wheel):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name("%s.%d.partial" % (path.name, os.getpid()))
        partial.write_bytes(wheel)
        os.replace(partial, path)  # whole or not at all, for a process deploying alongside
    except OSError:
        pass  # a read-only checkout: the next deploy builds again


def _check_machine():
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise NativeWheelUnavailable("Glue runs Linux x86_64 and this is %s %s"
                                     % (sys.platform, platform.machine()))
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        raise NativeWheelUnavailable("no C compiler (%s) found" % compiler)
    include = sysconfig.get_paths().get("include") or ""
    if not os.path.exists(os.path.join(include, "Python.h")):
        raise NativeWheelUnavailable("the Python headers (Python.h) are not installed")
    if importlib.util.find_spec("elftools") is None:
        raise NativeWheelUnavailable("pyelftools, which checks the binary, is not installed (make venv)")


def _read_sources(project_dir):
    source_dir = project_dir / glue_jobs.NATIVE_SOURCE_DIR
    try:
        return {name: (source_dir / name).read_bytes() for name in glue_jobs.NATIVE_SOURCES}
    except FileNotFoundError:
        raise NativeWheelUnavailable("%s/ is not complete under %s (it needs %s)" % (
            glue_jobs.NATIVE_SOURCE_DIR, project_dir, ", ".join(glue_jobs.NATIVE_SOURCES))) from None


def _build(sources):
    expected_built = glue_jobs.NATIVE_WHEEL_NAME.replace(GLUE_PLATFORM_TAG, BUILT_PLATFORM_TAG)
    with tempfile.TemporaryDirectory(prefix="shipping-etl-native-") as work:
        # A copy holding only the sources: no build/ or egg-info of an earlier local install
        # gets in, and the checkout stays clean.
        source_dir = os.path.join(work, "src")
        out_dir = os.path.join(work, "out")
        os.makedirs(source_dir)
        for name, body in sources.items():
            with open(os.path.join(source_dir, name), "wb") as handle:
                handle.write(body)
        env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH, PIP_DISABLE_PIP_VERSION_CHECK="1")
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                   "--wheel-dir", out_dir, source_dir]
        try:
            completed = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True,
                                       timeout=BUILD_TIMEOUT_SECONDS)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NativeWheelUnavailable("pip wheel did not finish: %s" % exc) from None
        if completed.returncode != 0:
            raise NativeWheelUnavailable("pip wheel failed: %s" % _last_error(completed))
        built = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
        if built != [expected_built]:
            raise DeployError(
                "glue/native built %s, but chalicelib.glue_jobs.NATIVE_WHEEL_NAME expects %s: make "
                "the name and version in glue/native/pyproject.toml and NATIVE_WHEEL_NAME agree."
                % (", ".join(built) or "nothing", expected_built))
        with open(os.path.join(out_dir, expected_built), "rb") as handle:
            wheel = handle.read()
    problems = manylinux2014_problems(wheel)
    if problems:
        raise NativeWheelUnavailable("the binary would not load on Glue (manylinux2014): %s"
                                     % "; ".join(problems))
    return retag(wheel, GLUE_PLATFORM_TAG)


def _last_error(completed):
    """The line of pip's output that says what went wrong: the compiler's first error, else
    pip's last."""
    lines = [line.strip() for line in (completed.stderr + completed.stdout).splitlines() if line.strip()]
    compiler_errors = [line for line in lines if ": error:" in line or ": fatal error:" in line]
    if compiler_errors:
        return compiler_errors[0]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["exit code %d" % completed.returncode])[-1]


def manylinux2014_problems(wheel):
    """Why the shared objects in ``wheel`` (bytes) do not qualify for manylinux2014_x86_64; [] if
    they do: x86_64 ELF, only glibc's libraries needed, glibc symbol versions <= 2.17."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    problems = []
    with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
        objects = [name for name in archive.namelist() if name.endswith(".so") or ".so." in name]
        if not objects:
            return ["no shared object in the wheel"]
        for name in objects:
            try:
                elf = ELFFile(io.BytesIO(archive.read(name)))
                problems += ["%s: %s" % (name, problem) for problem in _elf_problems(elf)]
            except ELFError as exc:
                problems.append("%s: not an ELF file (%s)" % (name, exc))
    return problems


def _elf_problems(elf):
    problems = []
    if elf["e_machine"] != "EM_X86_64":
        problems.append("built for %s, not x86_64" % elf["e_machine"])
    dynamic = elf.get_section_by_name(".dynamic")
    needed = [tag.needed for tag in dynamic.iter_tags("DT_NEEDED")] if dynamic else []
    problems += ["needs %s, which manylinux2014 does not promise" % library
                 for library in needed if library not in GLIBC_LIBRARIES]
    requirements = elf.get_section_by_name(".gnu.version_r")
    for _library, versions in (requirements.iter_versions() if requirements else ()):
        for version in versions:
            name = version.name
            if not name.startswith("GLIBC_"):
                continue
            try:
                number = tuple(int(part) for part in name[len("GLIBC_"):].split("."))
            except ValueError:
                problems.append("uses %s symbols" % name)  # GLIBC_PRIVATE
                continue
            if number > MAX_GLIBC:
                problems.append("uses %s symbols (manylinux2014 allows up to GLIBC_%d.%d)"
                                % ((name,) + MAX_GLIBC))
    return problems


def retag(wheel, platform_tag):
    """``wheel`` (bytes) with its platform tag set to ``platform_tag`` in WHEEL (and WHEEL's line
    in RECORD); every other member, name, time and order stays as it was, so the result is as
    reproducible as the input."""
    with zipfile.ZipFile(io.BytesIO(wheel)) as source:
        members = [(info, source.read(info.filename)) for info in source.infolist()]
    bodies = {info.filename: body for info, body in members}
    wheel_file = next(name for name in bodies if name.endswith(".dist-info/WHEEL"))
    record_file = wheel_file[:-len("WHEEL")] + "RECORD"

    lines = bodies[wheel_file].decode("utf-8").splitlines()
    for index, line in enumerate(lines):
        if line.startswith("Tag: "):
            python_tag, abi_tag, _platform = line[len("Tag: "):].split("-")
            lines[index] = "Tag: %s-%s-%s" % (python_tag, abi_tag, platform_tag)
    bodies[wheel_file] = ("\n".join(lines) + "\n").encode("utf-8")
    digest = base64.urlsafe_b64encode(hashlib.sha256(bodies[wheel_file]).digest()).rstrip(b"=")
    record = bodies[record_file].decode("utf-8").splitlines()
    for index, line in enumerate(record):
        if line.split(",", 1)[0] == wheel_file:
            record[index] = "%s,sha256=%s,%d" % (wheel_file, digest.decode(), len(bodies[wheel_file]))
    bodies[record_file] = ("\n".join(record) + "\n").encode("utf-8")

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as target:
        for info, _body in members:
            copied = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            copied.external_attr = info.external_attr
            copied.compress_type = info.compress_type
            target.writestr(copied, bodies[info.filename])
    return buffer.getvalue()
