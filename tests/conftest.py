"""Shared fixtures: fake AWS credentials and region, an in-process moto mock, and the project and
ASL builder the deploy tests deploy."""
import os
import shutil
import sys

import pytest

import local  # noqa: F401  (points SSL_CERT_FILE at the stacks' trust bundle before pyarrow loads)
from moto import mock_aws

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if PROJECT_DIR not in sys.path:
    sys.path.insert(0, PROJECT_DIR)

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account


@pytest.fixture(autouse=True)
def _forget_ended_executions():
    """/status keeps what ended executions' descriptions said; moto reuses ARNs across tests."""
    from chalicelib import status

    status.ENDED_DESCRIPTIONS.clear()
    status.ENDED_HISTORIES.clear()
    yield


@pytest.fixture
def aws_credentials(monkeypatch):
    """Fake credentials and region, so nothing can reach a real AWS account, and no endpoint
    override, so moto's in-process mock answers every call."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SECURITY_TOKEN", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)


@pytest.fixture
def aws(aws_credentials):
    """An in-process moto mock of every AWS service for the duration of one test."""
    with mock_aws():
        yield


@pytest.fixture
def deploy_project(tmp_path):
    """A project dir holding what the deploy ships to Glue: chalicelib's shipped modules as they
    are, small stand-ins for the glue/ scripts and modules (from chalicelib.glue_jobs' lists)."""
    from chalicelib import glue_jobs

    shipped = [glue_jobs.JSON_TO_PARQUET_SCRIPT, glue_jobs.NORMALIZE_SCRIPT] + [
        repo_path for _name, repo_path in glue_jobs.LIBRARY_ZIP_MEMBERS]
    for repo_path in shipped:
        target = tmp_path / repo_path
        target.parent.mkdir(parents=True, exist_ok=True)
        if repo_path.startswith("chalicelib/"):
            shutil.copy(os.path.join(PROJECT_DIR, repo_path), target)
        else:
            target.write_text("# %s\nprint('run')\n" % os.path.basename(repo_path))
    return tmp_path


@pytest.fixture
def project(deploy_project):
    """``deploy_project``, by the name the deploy and security tests use."""
    return deploy_project


@pytest.fixture
def asl():
    """The ASL builder the deploy uses (the definition tests compare against it)."""
    from chalicelib import asl as module

    return module
