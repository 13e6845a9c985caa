"""``deploy.up`` against moto in-process, as the deploy and security tests run it."""
import functools
import io

import boto3

from deploy import up

from conftest import REGION

STAGE = "dev"


@functools.lru_cache(maxsize=None)
def shared_session():
    # One session for all tests: a fresh one re-reads botocore's endpoint and service models
    # (about half a second). Its credentials are the fixtures' fake ones either way.
    return boto3.session.Session(region_name=REGION)


def deploy_up(project_dir, **kwargs):
    """``deploy.up`` of the ``dev`` stage, quietly and without waiting; returns its result."""
    kwargs.setdefault("tls_only_policy", False)  # moto denies every object call under it
    kwargs.setdefault("session", shared_session())
    kwargs.setdefault("environ", {})
    kwargs.setdefault("out", io.StringIO())
    return up(STAGE, project_dir=project_dir, sleep=lambda seconds: None, **kwargs)
