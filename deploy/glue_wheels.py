"""The Glue jobs' libraries as wheels for Glue's platform, resolved, downloaded and checked here.

Glue's Python shell (Python 3.9, Glue 3.0) runs on Amazon Linux 2 (glibc 2.26). Given
``--additional-python-modules`` pins, pip there picks a wheel only when one is tagged for glibc
2.26 or older, and otherwise falls back to the source distribution, which does not build: the job
dies before its script runs. And it reaches the public index at every run. So the deploy does the
resolution once, here:

1. ``pip install --dry-run --report`` resolves the pins (``chalicelib.glue_jobs``'s
   ``ADDITIONAL_PYTHON_MODULES`` and ``GLUE_DEPENDENCY_PINS``, whatever they hold) and all their
   dependencies for CPython 3.9 (each release's Requires-Python checked against 3.9)
   on ``GLUE_PLATFORMS``, binary only; the report gives each wheel's file and the index's SHA-256.
2. ``pip download --require-hashes --no-deps`` fetches exactly those files, each checked against
   that hash (and again here after the download).
3. Every wheel's tags are checked (``glue_platform_problems``): CPython 3.9, abi3 or pure Python;
   manylinux with a glibc no newer than 2.26, or ``any``.
4. Every module the job code imports (``glue/``, parsed) must come from the standard library, the
   project's own files, Glue's runtime (boto3) or one of the wheels (``missing_modules``).

A pin without such a wheel fails the deploy with a message naming the pin and the command that
shows it. The result is cached under ``build/glue-wheels/<hash of the pins>/`` (with a manifest of
names, versions, files and hashes), so a deploy resolves once per pin set and later ones, the
local stack's included, need no network. The deploy uploads the wheels under
``glue-assets/wheels/`` and lists them in the jobs' ``--extra-py-files``.
"""
import ast
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from chalicelib import glue_jobs
from deploy.errors import DeployError

GLUE_PYTHON_VERSION = "3.9"
GLUE_ABI = "cp39"
# Amazon Linux 2's glibc: a manylinux wheel needing a newer one does not load there.
GLUE_MAX_GLIBC = (2, 26)
# The oldest tag shipped: manylinux2014 (glibc 2.17). pip on Glue would also take manylinux1/2010
# wheels, but the jobs' platform is documented (and checked) as manylinux2014..manylinux_2_26, so a
# dependency whose only tags are older or newer is pinned to a release that has one in that range.
GLUE_MIN_GLIBC = (2, 17)
GLUE_ARCH = "x86_64"
# What pip is told Glue's platform is: manylinux2014 (glibc 2.17) up to manylinux_2_26. pip also
# accepts older manylinux tags from these (manylinux1 = glibc 2.5, manylinux2010 = 2.12), which
# load on glibc 2.26 as well.
GLUE_PLATFORMS = ("manylinux2014_%s" % GLUE_ARCH,) + tuple(
    "manylinux_2_%d_%s" % (minor, GLUE_ARCH) for minor in range(17, GLUE_MAX_GLIBC[1] + 1))
# Modules Glue's Python shell provides itself (its runtime's boto3): not shipped.
GLUE_PROVIDED_MODULES = frozenset({"boto3", "botocore"})
# Under the checkout that runs the deploy (git ignores /build/), whatever project it deploys.
CACHE_DIR = Path(__file__).resolve().parent.parent / "build" / "glue-wheels"
MANIFEST = "manifest.json"
PIP_TIMEOUT_SECONDS = 900
_OLD_MANYLINUX_GLIBC = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_MANYLINUX = re.compile(r"^manylinux_(\d+)_(\d+)_(\w+)$")

_resolved = {}  # cache folder -> WheelSet, for processes that deploy many times


@dataclasses.dataclass(frozen=True)
class Wheel:
    """One resolved wheel: distribution name and version, file name, SHA-256 (hex)."""

    name: str
    version: str
    filename: str
    sha256: str

    def key(self):
        """Its key in the lake bucket."""
        return glue_jobs.glue_wheel_key(self.filename)


@dataclasses.dataclass(frozen=True)
class WheelSet:
    """The jobs' wheels for Glue's platform: ``wheels`` (in pip's install order) and the folder
    holding their files."""

    pins: tuple
    wheels: tuple
    directory: Path

    def payloads(self):
        """``{key in the lake bucket: bytes}``; raises DeployError when a cached file changed."""
        payloads = {}
        for wheel in self.wheels:
            body = (self.directory / wheel.filename).read_bytes()
            if hashlib.sha256(body).hexdigest() != wheel.sha256:
                raise DeployError("%s under %s does not match its recorded SHA-256: delete that "
                                  "folder and deploy again." % (wheel.filename, self.directory))
            payloads[wheel.key()] = body
        return payloads

    def filenames(self):
        return [wheel.filename for wheel in self.wheels]


def pins_key(pins):
    """Hash naming a resolution: the pins and the platform they are resolved for."""
    text = json.dumps([sorted(pins), GLUE_PYTHON_VERSION, GLUE_ABI, GLUE_PLATFORMS])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def resolve(project_dir, pins=None, python=sys.executable, cache_dir=None):
    """The WheelSet for ``pins`` (default: ``glue_jobs.ADDITIONAL_PYTHON_MODULES``), checked
    against the job code under ``project_dir``.

    Taken from the cache (``cache_dir``, default CACHE_DIR) when this pin set was resolved before,
    else resolved and downloaded with ``python``'s pip (which needs the package index once). Raises
    DeployError when a pin (or a dependency) has no wheel for Glue's platform, pip fails, a file
    does not match its hash, or a job imports a module nothing provides.
    """
    pins = tuple(pins if pins is not None
                 else glue_jobs.ADDITIONAL_PYTHON_MODULES + glue_jobs.GLUE_DEPENDENCY_PINS)
    key = pins_key(pins)
    directory = Path(cache_dir or CACHE_DIR) / key
    wheel_set = _resolved.get(directory) or _read_cached(directory, pins)
    if wheel_set is None:
        wheel_set = _download(directory, pins, python)
    problems = [problem for wheel in wheel_set.wheels for problem in glue_platform_problems(wheel.filename)]
    if problems:
        raise DeployError("The Glue jobs' libraries include wheels Glue cannot load: %s"
                          % "; ".join(problems))
    missing = missing_modules(project_dir, wheel_set)
    if missing:
        raise DeployError(
            "The Glue job code imports %s, which no pin in chalicelib/glue_jobs.py "
            "ADDITIONAL_PYTHON_MODULES provides (nor the standard library or Glue's runtime): add "
            "a pin." % ", ".join(sorted(missing)))
    _resolved[directory] = wheel_set
    return wheel_set


def _read_cached(directory, pins):
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("pins") != list(pins):
        return None
    wheels = tuple(Wheel(**entry) for entry in manifest["wheels"])
    if not all((directory / wheel.filename).is_file() for wheel in wheels):
        return None
    return WheelSet(pins, wheels, directory)


def _pip(python, arguments, what):
    command = [python, "-m", "pip"] + arguments
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    try:
        completed = subprocess.run(command, capture_output=True, text=True, env=env,
                                   timeout=PIP_TIMEOUT_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DeployError("pip could not %s: %s" % (what, exc)) from None
    return completed


def _platform_arguments():
    arguments = ["--only-binary=:all:", "--python-version", GLUE_PYTHON_VERSION,
                 "--implementation", "cp", "--abi", GLUE_ABI, "--abi", "abi3", "--abi", "none"]
    for platform in GLUE_PLATFORMS:
        arguments += ["--platform", platform]
    return arguments


def _no_wheel_message(pins, output):
    """DeployError text for a resolution pip could not finish."""
    match = re.search(r"No matching distribution found for (\S+)", output)
    culprit = match.group(1) if match else None
    check = ("pip download %s --no-deps --only-binary=:all: --python-version %s %s -d /tmp/w"
             % (culprit or "NAME==VERSION", GLUE_PYTHON_VERSION,
                " ".join("--platform " + p for p in (GLUE_PLATFORMS[0], GLUE_PLATFORMS[-1]))))
    if culprit:
        return ("%s has no wheel for Glue's Python shell (CPython %s, manylinux with glibc <= %d.%d, "
                "x86_64): Glue would fall back to building it from source, which fails before the "
                "job starts. Pin a version that has such a wheel (chalicelib/glue_jobs.py "
                "ADDITIONAL_PYTHON_MODULES); check a version with: %s"
                % ((culprit, GLUE_PYTHON_VERSION) + GLUE_MAX_GLIBC + (check,)))
    lines = [line for line in output.splitlines() if line.strip() and "is ignored" not in line]
    return ("pip could not resolve the Glue jobs' pins %s for Glue's platform: %s"
            % (", ".join(pins), (lines or ["no output"])[-1]))


def _download(directory, pins, python):
    with tempfile.TemporaryDirectory(prefix="shipping-etl-glue-wheels-") as work:
        report_path = os.path.join(work, "report.json")
        resolved = _pip(python, ["install", "--dry-run", "--ignore-installed", "--quiet",
                                 "--target", os.path.join(work, "target"), "--report", report_path]
                        + _platform_arguments() + list(pins), "resolve the Glue jobs' pins")
        if resolved.returncode != 0:
            raise DeployError(_no_wheel_message(pins, resolved.stderr + resolved.stdout))
        with open(report_path) as handle:
            report = json.load(handle)
        wanted = []
        for item in report["install"]:
            info = item["download_info"]
            sha256 = (info.get("archive_info", {}).get("hashes") or {}).get("sha256")
            filename = info["url"].rsplit("/", 1)[-1]
            if not sha256 or not filename.endswith(".whl"):
                raise DeployError("pip resolved %s for the Glue jobs without a wheel and hash (%s): "
                                  "Glue needs wheels." % (item["metadata"]["name"], info["url"]))
            _check_requires_python(item["metadata"])
            wanted.append(Wheel(item["metadata"]["name"], item["metadata"]["version"], filename, sha256))
        requirements = os.path.join(work, "requirements.txt")
        with open(requirements, "w") as handle:
            for wheel in wanted:
                handle.write("%s==%s --hash=sha256:%s\n" % (wheel.name, wheel.version, wheel.sha256))
        partial = Path(str(directory) + ".%d.partial" % os.getpid())
        partial.mkdir(parents=True, exist_ok=True)
        downloaded = _pip(python, ["download", "--no-deps", "--require-hashes", "--quiet", "-d",
                                   str(partial), "-r", requirements] + _platform_arguments(),
                          "download the Glue jobs' wheels")
        if downloaded.returncode != 0:
            raise DeployError(_no_wheel_message(pins, downloaded.stderr + downloaded.stdout))
        for wheel in wanted:
            path = partial / wheel.filename
            if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != wheel.sha256:
                raise DeployError("the downloaded %s does not match the index's SHA-256" % wheel.filename)
        manifest = {"pins": list(pins), "python_version": GLUE_PYTHON_VERSION,
                    "platforms": list(GLUE_PLATFORMS),
                    "wheels": [dataclasses.asdict(wheel) for wheel in wanted]}
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        return _publish(partial, directory, pins) or WheelSet(pins, tuple(wanted), directory)


def _publish(partial, directory, pins):
    """Moves the wheels downloaded to ``partial`` to the cache folder ``directory``. When another
    process (a parallel test worker, a second deploy) has put the same pins there meanwhile, its
    folder is kept, since it may be reading from it, and returned as a WheelSet; else None."""
    theirs = _read_cached(directory, pins)
    if theirs is None and directory.exists():
        # A stale or broken folder: renamed aside first, so it is never half removed in place.
        stale = Path(str(directory) + ".%d.stale" % os.getpid())
        os.replace(directory, stale)
        shutil.rmtree(stale, ignore_errors=True)
    if theirs is None:
        try:
            os.replace(partial, directory)
            return None
        except OSError:
            theirs = _read_cached(directory, pins)  # another process won the rename
            if theirs is None:
                raise
    shutil.rmtree(partial, ignore_errors=True)
    return theirs


# -- checks --------------------------------------------------------------------------------------
def _check_requires_python(metadata):
    """Raises DeployError when a resolved release does not support Glue's Python: pip given
    ``--python-version`` trusts the index to filter by Requires-Python, and an index or mirror
    that omits it lets a release for newer Pythons through (which Glue's pip then refuses)."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    requires = metadata.get("requires_python")
    try:
        supported = not requires or SpecifierSet(requires).contains(GLUE_PYTHON_VERSION + ".0")
    except InvalidSpecifier:
        supported = False
    if not supported:
        raise DeployError(
            "%s %s requires Python %s, and Glue's Python shell runs %s: pin a release of %s that supports "
            "%s in chalicelib/glue_jobs.py GLUE_DEPENDENCY_PINS" % (
                metadata["name"], metadata["version"], requires, GLUE_PYTHON_VERSION, metadata["name"],
                GLUE_PYTHON_VERSION))


def wheel_tags(filename):
    """``(python tags, abi tags, platform tags)`` of a wheel file name (sets of strings)."""
    stem = filename[:-len(".whl")]
    parts = stem.split("-")
    if len(parts) not in (5, 6):
        raise ValueError("not a wheel file name: %r" % filename)
    python, abi, platform = parts[-3:]
    return set(python.split(".")), set(abi.split(".")), set(platform.split("."))


def _platform_glibc(platform):
    """glibc (major, minor) a manylinux x86_64 platform tag needs; None for other tags."""
    for old, glibc in _OLD_MANYLINUX_GLIBC.items():
        if platform == "%s_%s" % (old, GLUE_ARCH):
            return glibc
    match = _MANYLINUX.match(platform)
    if match and match.group(3) == GLUE_ARCH:
        return int(match.group(1)), int(match.group(2))
    return None


def glue_platform_problems(filename):
    """Why Glue's Python 3.9 shell cannot install wheel ``filename``; [] when it can."""
    try:
        pythons, abis, platforms = wheel_tags(filename)
    except ValueError as exc:
        return [str(exc)]
    problems = []
    if not (pythons & {"cp39", "py3", "py39"} or ("abi3" in abis and any(
            p.startswith("cp3") and p[3:].isdigit() and int(p[3:]) <= 9 for p in pythons))):
        problems.append("%s is not for CPython 3.9 (python tags %s)" % (filename, ",".join(sorted(pythons))))
    if not abis & {"cp39", "abi3", "none"}:
        problems.append("%s has ABI %s, not cp39/abi3/none" % (filename, ",".join(sorted(abis))))
    if "any" not in platforms:
        glibcs = [_platform_glibc(p) for p in platforms]
        if not any(glibc is not None and GLUE_MIN_GLIBC <= glibc <= GLUE_MAX_GLIBC for glibc in glibcs):
            problems.append("%s is tagged %s: no manylinux x86_64 tag from manylinux2014 (glibc %d.%d) to "
                            "manylinux_%d_%d" % ((filename, ",".join(sorted(platforms))) + GLUE_MIN_GLIBC
                                                 + GLUE_MAX_GLIBC))
    return problems


def wheel_modules(path):
    """Top-level module names a wheel file provides (from its RECORD's paths)."""
    import zipfile

    names = set()
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            top = member.split("/", 1)[0]
            if top.endswith((".dist-info", ".data")):
                continue
            if "/" in member:
                names.add(top)
            elif member.endswith(".py"):
                names.add(member[:-3])
            elif ".so" in member or member.endswith(".pyd"):
                names.add(member.split(".", 1)[0])
    return names


def job_imports(project_dir):
    """Top-level modules imported by the job code under glue/ (not glue/native's build files),
    except inside ``try: ... except ImportError`` blocks, which the code does without."""
    imported = set()
    root = Path(project_dir) / "glue"
    for path in sorted(root.rglob("*.py")):
        if "native" in path.relative_to(root).parts:
            continue
        tree = ast.parse(path.read_text(), str(path))
        optional = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(
                    _catches_import_error(handler) for handler in node.handlers):
                optional.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    return imported


def _catches_import_error(handler):
    names = []
    if isinstance(handler.type, ast.Name):
        names = [handler.type.id]
    elif isinstance(handler.type, ast.Tuple):
        names = [e.id for e in handler.type.elts if isinstance(e, ast.Name)]
    return bool({"ImportError", "ModuleNotFoundError"} & set(names))


def project_modules(project_dir):
    """Modules the project ships itself: the zip's members, the scripts and glue/'s modules."""
    names = {member.split("/", 1)[0].rsplit(".py", 1)[0] for member, _path in glue_jobs.LIBRARY_ZIP_MEMBERS}
    root = Path(project_dir) / "glue"
    names.update(path.stem for path in root.glob("*.py"))
    names.update(path.name for path in root.iterdir() if (path / "__init__.py").exists())
    return names


def missing_modules(project_dir, wheel_set):
    """Modules the jobs import that nothing on Glue would provide."""
    provided = set(GLUE_PROVIDED_MODULES) | project_modules(project_dir) | set(sys.stdlib_module_names)
    for wheel in wheel_set.wheels:
        provided |= wheel_modules(wheel_set.directory / wheel.filename)
    return job_imports(project_dir) - provided
