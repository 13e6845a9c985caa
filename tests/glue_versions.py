"""Prints the requirements of a venv for the Glue jobs' tests at the library versions Glue installs.

``make test`` runs the jobs' tests a second time in .venv-glue, built from this output: the
project's pinned requirements, with every library the jobs get on Glue
(chalicelib.glue_jobs.ADDITIONAL_PYTHON_MODULES, and the dependency pins the project also names)
at Glue's version instead of the newer one.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from chalicelib.glue_jobs import ADDITIONAL_PYTHON_MODULES, GLUE_DEPENDENCY_PINS  # noqa: E402

_NAME = re.compile(r"^\s*([A-Za-z0-9._-]+)")


def _name(spec):
    return _NAME.match(spec).group(1).lower().replace("_", "-")


def read_requirements(path):
    """The requirement lines of ``path``, with the files it includes (``-r``) inlined."""
    lines = []
    with open(path) as handle:
        for line in handle:
            line = line.split("#", 1)[0].strip()
            if line.startswith("-r "):
                lines += read_requirements(os.path.join(os.path.dirname(path), line[3:].strip()))
            elif line:
                lines.append(line)
    return lines


def glue_requirements(path=os.path.join(ROOT, "requirements-dev.txt")):
    glue = {_name(spec): spec for spec in ADDITIONAL_PYTHON_MODULES}
    lines = [glue.pop(_name(line), line) for line in read_requirements(path)]
    # The jobs' dependencies at the versions Glue gets, where the project names them at all.
    named = {_name(line) for line in lines}
    dependencies = [spec for spec in GLUE_DEPENDENCY_PINS if _name(spec) in named]
    lines = [line for line in lines if _name(line) not in {_name(spec) for spec in dependencies}]
    return lines + sorted(glue.values()) + dependencies


if __name__ == "__main__":
    print("\n".join(glue_requirements()))
