"""Shared fixtures: fake AWS credentials and region, and an in-process moto mock."""
import os
import sys

import pytest
from moto import mock_aws

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if PROJECT_DIR not in sys.path:
    sys.path.insert(0, PROJECT_DIR)

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account


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
