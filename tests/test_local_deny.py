"""``python -m local run --deny ACTION``: with IAM enforced, a run whose principals lack ACTION
fails where AWS would, with AccessDenied naming the action."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
@pytest.mark.parametrize("action", ["s3:PutObject", "glue:GetTable"])
def test_a_denied_action_fails_the_run_with_access_denied_naming_it(tmp_path, action):
    completed = subprocess.run(
        [sys.executable, "-m", "local", "run", "--rows", "5", "--deny", action, "--json",
         "--work-dir", str(tmp_path)], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 1, completed.stderr[-3000:]
    assert "--deny %s: removed from" % action in completed.stderr
    report = json.loads(completed.stdout.splitlines()[-1])
    (execution,) = report["executions"]
    assert execution["status"] == "FAILED"
    assert "AccessDenied" in execution["cause"] and action in execution["cause"], execution["cause"]
