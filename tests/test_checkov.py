"""checkov on the `chalice package --pkg-format terraform` output: every finding is one that
docs/DEPLOY.md ("What checkov reports, and why it stays") justifies, and every justified finding
still occurs (a fixed one must leave the docs too).

checkov runs from its own venv (.venv-checkov, `make .venv-checkov/.installed`; its dependencies
clash with the project's), offline (--skip-download).
"""
import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.test_packaging import build_package

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKOV = REPO_ROOT / ".venv-checkov" / "bin" / "checkov"
DOCS = REPO_ROOT / "docs" / "DEPLOY.md"
_ROW = re.compile(r"^\| `(CKV2?_AWS_\d+)` \| ([^|]+) \|")

pytestmark = pytest.mark.skipif(not CHECKOV.exists(),
                                reason="checkov is not installed: make .venv-checkov/.installed (make test does)")


def justified_findings():
    """``{(check id, resource)}`` from the docs' table (resources listed comma-separated)."""
    found = set()
    for line in DOCS.read_text().splitlines():
        match = _ROW.match(line)
        if match:
            for resource in match.group(2).split(","):
                found.add((match.group(1), resource.strip().strip("`")))
    return found


def checkov_findings(folder):
    """``{(check id, resource name)}`` checkov fails on the package in ``folder``."""
    # checkov 3.3's Terraform-JSON parser fails on the `terraform` block's plain attributes
    # (required_version): it holds only version constraints, so it is left out of what is checked.
    document = json.loads((folder / "chalice.tf.json").read_text())
    document.pop("terraform", None)
    checked = folder / "checkov"
    checked.mkdir(exist_ok=True)
    (checked / "chalice.tf.json").write_text(json.dumps(document))
    completed = subprocess.run(
        [str(CHECKOV), "-d", str(checked), "--framework", "terraform_json", "--quiet", "--compact",
         "--skip-download", "-o", "json"], capture_output=True, text=True, timeout=600)
    report = json.loads(completed.stdout)
    assert report["summary"]["parsing_errors"] == 0, completed.stderr[-2000:]
    assert report["summary"]["passed"] > 0
    return {(failed["check_id"], failed["resource"].rsplit(".", 1)[-1])
            for failed in report["results"]["failed_checks"]}


def test_checkov_reports_only_the_findings_the_docs_justify(tmp_path_factory):
    justified = justified_findings()
    assert justified, "the docs' table of justified findings is missing"
    assert checkov_findings(build_package(tmp_path_factory)) == justified
