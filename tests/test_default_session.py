"""Clients made after another component froze boto3's default session still see the environment
as it is now. chalice.test (which the local stack and the app tests run handlers in) swaps
os.environ for a copy while a handler runs; a default session first made there keeps that copy,
so a later stack's CA file (AWS_CA_BUNDLE) was never trusted and its HTTPS calls failed."""
import os
import sys
from unittest import mock

import boto3
import pytest

import app as app_module
from chalicelib.trigger import PipelineTrigger
from deploy.iceberg_io import Boto3FileIO

GLUE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "glue")


def _verify_of(client):
    # The CA file the client's HTTP session verifies with (botocore keeps it on the endpoint).
    return client._endpoint.http_session._verify


def _app_client():
    app_module._clients.clear()
    return app_module._client("s3", "us-east-1")


def _glue_job_clients():
    if GLUE_DIR not in sys.path:  # the jobs import their modules as Glue's --extra-py-files puts them
        sys.path.insert(0, GLUE_DIR)
    import catalog
    import jobio

    return jobio.Storage().s3, catalog._glue_client({})


FACTORIES = {
    "deploy's Iceberg FileIO": lambda: [Boto3FileIO({"s3.region": "us-east-1"})._s3],
    "app's clients": lambda: [_app_client()],
    "the trigger's Step Functions client": lambda: [PipelineTrigger("arn", 0, region="us-east-1").sfn],
    "the Glue jobs' clients": _glue_job_clients,
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_a_client_trusts_the_ca_file_set_after_the_default_session_was_made(name, aws_credentials, tmp_path,
                                                                             monkeypatch):
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    frozen = dict(os.environ, AWS_CA_BUNDLE=str(tmp_path / "old-ca.pem"))
    with mock.patch.object(os, "environ", frozen):  # as chalice.test does
        boto3.client("s3", region_name="us-east-1")
    current = str(tmp_path / "current-ca.pem")
    monkeypatch.setenv("AWS_CA_BUNDLE", current)

    for client in FACTORIES[name]():
        assert _verify_of(client) == current


def test_deploys_iceberg_fileios_share_one_client_until_the_endpoint_or_ca_file_changes(aws_credentials, tmp_path,
                                                                                         monkeypatch):
    # pyiceberg makes a FileIO for every table load and commit: each used to parse botocore's S3 model.
    monkeypatch.setenv("AWS_CA_BUNDLE", str(tmp_path / "first-ca.pem"))
    first, second = Boto3FileIO({"s3.region": "us-east-1"}), Boto3FileIO({"s3.region": "us-east-1"})
    assert first._s3 is second._s3
    assert Boto3FileIO({"s3.region": "eu-west-1"})._s3 is not first._s3
    monkeypatch.setenv("AWS_CA_BUNDLE", str(tmp_path / "second-ca.pem"))
    assert Boto3FileIO({"s3.region": "us-east-1"})._s3 is not first._s3
