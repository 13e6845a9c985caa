"""Quotas AWS enforces, enforced by the local stack: Glue's MaxConcurrentRuns per job, Athena's
limit on queries running at once; and the settings that set them."""
import time

import pytest
from botocore.exceptions import ClientError

from chalicelib import glue_jobs
from chalicelib.resources import Resources
from chalicelib.settings import Settings
from deploy.__main__ import build_parser
from local import embedded, moto_hooks
from local.cli import add_run_arguments as add_arguments

BUCKET = "quota-lake"
ROLE_ARN = "arn:aws:iam::123456789012:role/quota"
GATE_SCRIPT = """
import sys, time, boto3
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
s3 = boto3.client("s3")
for _attempt in range(600):
    if s3.list_objects_v2(Bucket=args["--bucket"], Prefix=args["--gate"]).get("KeyCount"):
        break
    time.sleep(0.05)
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with embedded.start(work_dir=str(tmp_path_factory.mktemp("stack"))) as running_stack:
        s3, glue = running_stack.client("s3"), running_stack.client("glue")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="glue-assets/gate.py", Body=GATE_SCRIPT.encode())
        glue.create_job(Name="gate-job", Role=ROLE_ARN, ExecutionProperty={"MaxConcurrentRuns": 2},
                        Command={"Name": "pythonshell", "ScriptLocation": "s3://%s/glue-assets/gate.py" % BUCKET})
        running_stack.client("athena").create_work_group(
            Name="quota", Configuration={"ResultConfiguration": {"OutputLocation": "s3://%s/results/" % BUCKET}})
        yield running_stack


def _state(glue, run_id):
    return glue.get_job_run(JobName="gate-job", RunId=run_id)["JobRun"]["JobRunState"]


def test_a_job_run_past_max_concurrent_runs_is_refused_until_one_ends(stack):
    glue, s3 = stack.client("glue"), stack.client("s3")
    runs = [glue.start_job_run(JobName="gate-job", Arguments={"--bucket": BUCKET, "--gate": "gates/a"})["JobRunId"]
            for _ in range(2)]
    with pytest.raises(ClientError) as refused:
        glue.start_job_run(JobName="gate-job", Arguments={"--bucket": BUCKET, "--gate": "gates/a"})
    assert refused.value.response["Error"]["Code"] == "ConcurrentRunsExceededException"

    s3.put_object(Bucket=BUCKET, Key="gates/a", Body=b"")
    deadline = time.time() + 60
    while any(_state(glue, r) == "RUNNING" for r in runs) and time.time() < deadline:
        time.sleep(0.05)
    assert [_state(glue, r) for r in runs] == ["SUCCEEDED", "SUCCEEDED"]
    third = glue.start_job_run(JobName="gate-job", Arguments={"--bucket": BUCKET, "--gate": "gates/a"})
    assert third["JobRunId"]


def test_concurrent_starts_never_exceed_the_limit(stack):
    from concurrent.futures import ThreadPoolExecutor

    glue, s3 = stack.client("glue"), stack.client("s3")
    deadline = time.time() + 60
    while any(run["JobRunState"] == "RUNNING" for run in glue.get_job_runs(JobName="gate-job")["JobRuns"]) \
            and time.time() < deadline:
        time.sleep(0.05)

    def start(_):
        try:
            return glue.start_job_run(JobName="gate-job",
                                      Arguments={"--bucket": BUCKET, "--gate": "gates/b"})["JobRunId"]
        except ClientError as error:
            return error.response["Error"]["Code"]

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(start, range(8)))
    s3.put_object(Bucket=BUCKET, Key="gates/b", Body=b"")
    assert outcomes.count("ConcurrentRunsExceededException") == 6, outcomes


def test_athena_refuses_a_query_past_the_concurrency_limit(stack):
    athena = stack.client("athena")
    previous = moto_hooks.set_athena_max_concurrent_queries(0)
    try:
        with pytest.raises(ClientError) as refused:
            athena.start_query_execution(QueryString="SELECT 1", WorkGroup="quota")
        assert refused.value.response["Error"]["Code"] == "TooManyRequestsException"
        assert "CONCURRENT_QUERY_LIMIT_EXCEEDED" in refused.value.response["Error"]["Message"]
    finally:
        moto_hooks.set_athena_max_concurrent_queries(previous)
    assert athena.start_query_execution(QueryString="SELECT 1", WorkGroup="quota")["QueryExecutionId"]


def test_the_query_limit_counts_queries_until_they_end():
    limit = moto_hooks._QueryLimit()
    limit.limit = 2
    limit.acquire()
    limit.acquire()
    with pytest.raises(Exception, match="concurrently \\(2\\)"):
        limit.acquire()
    limit.release()
    limit.acquire()
    assert limit.active == 2


def test_the_settings_reach_the_job_definition_and_the_cli():
    settings = Settings.from_env({"GLUE_MAX_CONCURRENT_RUNS": "2", "ATHENA_MAX_CONCURRENT_QUERIES": "3"})
    assert (settings.glue_max_concurrent_runs, settings.athena_max_concurrent_queries) == (2, 3)
    jobs = glue_jobs.job_definitions(Resources(stage="dev", account_id="123456789012", region="us-east-1"),
                                     settings)
    assert {job["ExecutionProperty"]["MaxConcurrentRuns"] for job in jobs} == {2}
    with pytest.raises(ValueError, match="GLUE_MAX_CONCURRENT_RUNS must be >= 1"):
        Settings.from_env({"GLUE_MAX_CONCURRENT_RUNS": "0"})
    deploy_args = build_parser().parse_args(["up", "--stage", "dev", "--set", "GLUE_MAX_CONCURRENT_RUNS=2"])
    import argparse

    run_args = add_arguments(argparse.ArgumentParser()).parse_args(
        ["--set", "GLUE_MAX_CONCURRENT_RUNS=2", "--set", "ATHENA_MAX_CONCURRENT_QUERIES=1"])
    assert deploy_args.overrides == [("GLUE_MAX_CONCURRENT_RUNS", "2")]
    assert run_args.overrides == [("GLUE_MAX_CONCURRENT_RUNS", "2"), ("ATHENA_MAX_CONCURRENT_QUERIES", "1")]
