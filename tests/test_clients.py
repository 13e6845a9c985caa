"""Clients nobody here wrote, against the local stack: awswrangler with its defaults, the AWS CLI
and boto3's paginators, as an analyst would use them (docs/ANALYSTS.md).

One stack for the module: a generated file of more than 1,000 rows goes through the pipeline
first; every sum is compared with ``tests/reference.py`` (an independent statement of the rules),
never with the pipeline's own code.
"""
import json
import math
import os
import subprocess
import sys
import time

import pytest

from chalicelib import generator
from chalicelib.resources import PROCESSED_PREFIX
from tests import datafiles, reference

pytestmark = pytest.mark.e2e

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = 2500
AMOUNTS = ("shipping_cost", "shipping_distance", "quantity")


def assert_sums(actual, wanted, what=""):
    for field in AMOUNTS:
        assert math.isclose(float(actual[field]), wanted[field], rel_tol=1e-9), (what, field, actual[field], wanted[field])


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from local.stack import LocalStack

    saved_profile = os.environ.pop("AWS_PROFILE", None)
    data = generator.generate_ndjson(ROWS, seed=15)
    data = data.encode() if isinstance(data, str) else data
    try:
        with LocalStack(work_dir=str(tmp_path_factory.mktemp("clients") / "stack")) as running:
            landed = running.land(data, key="incoming/clients.json")
            ended = running.wait_for_executions([landed.execution_name], timeout=240)
            assert ended[landed.execution_name]["status"] == "SUCCEEDED", ended
            running.expected = reference.evaluate(data)
            assert running.expected["valid"] > 1000
            yield running
    finally:
        if saved_profile is not None:
            os.environ["AWS_PROFILE"] = saved_profile


@pytest.fixture(scope="module")
def wr(stack):
    import awswrangler

    return awswrangler


def names(stack):
    return stack.resources.glue_database, stack.resources.athena_workgroup


def run_query(stack, sql, **kwargs):
    """Start a query through the stack's endpoint and wait; returns GetQueryExecution's QueryExecution."""
    athena = stack.client("athena")
    database, workgroup = names(stack)
    query_id = athena.start_query_execution(
        QueryString=sql, QueryExecutionContext={"Database": database}, WorkGroup=workgroup, **kwargs)["QueryExecutionId"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        execution = athena.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]
        if execution["Status"]["State"] not in ("QUEUED", "RUNNING"):
            return execution
        time.sleep(0.05)
    raise AssertionError("query %s did not end" % query_id)


# -- awswrangler --------------------------------------------------------------------------------


def test_awswrangler_catalog_and_s3_reads_match_the_reference(stack, wr):
    database, _workgroup = names(stack)

    assert database in wr.catalog.databases()["Database"].tolist()
    types = wr.catalog.get_table_types(database=database, table="processed")
    # The data files only (whatever else a table format keeps beside them); one file landed once.
    frame = wr.s3.read_parquet(stack.resources.lake_uri(PROCESSED_PREFIX), dataset=True, path_suffix=".parquet")
    # The raw zone is a plain Parquet table: read through the catalog (this file has no duplicates).
    assert stack.expected["duplicates"] == 0
    raw = wr.s3.read_parquet_table(database=database, table="raw")

    assert {"shipping_cost": "double", "quantity": "double"}.items() <= types.items()
    assert "customer_name" not in types
    assert len(frame) == len(raw) == stack.expected["valid"]
    assert_sums(frame.sum(numeric_only=True), stack.expected["totals"], "s3.read_parquet")
    assert_sums(raw.sum(numeric_only=True), stack.expected["totals"], "s3.read_parquet_table")


def test_read_sql_query_with_awswranglers_defaults_runs_ctas_and_drops_its_table(stack, wr):
    database, workgroup = names(stack)

    frame = wr.athena.read_sql_query("SELECT * FROM processed", database=database, workgroup=workgroup)

    assert len(frame) == stack.expected["valid"]
    assert_sums(frame.sum(numeric_only=True), stack.expected["totals"], "ctas_approach=True")
    statement = frame.query_metadata["Query"]
    assert statement.startswith('CREATE TABLE "%s"."temp_table_' % database)
    assert frame.query_metadata["Statistics"]["DataScannedInBytes"] > 0
    # awswrangler removed its temporary table and files; only the pipeline's tables remain.
    assert sorted(wr.catalog.tables(database=database)["Table"]) == ["processed", "raw"]


def test_read_sql_query_without_ctas_and_read_sql_table(stack, wr):
    database, workgroup = names(stack)
    sql = ("SELECT SUM(shipping_cost) AS shipping_cost, SUM(shipping_distance) AS shipping_distance, "
           "SUM(quantity) AS quantity, COUNT(*) AS shipments FROM processed")

    totals = wr.athena.read_sql_query(sql, database=database, workgroup=workgroup, ctas_approach=False).iloc[0]
    table = wr.athena.read_sql_table("processed", database=database, workgroup=workgroup)

    assert_sums(totals, stack.expected["totals"], "ctas_approach=False")
    assert totals["shipments"] == stack.expected["valid"]
    assert len(table) == stack.expected["valid"]
    assert_sums(table.sum(numeric_only=True), stack.expected["totals"], "read_sql_table")


def test_unload_and_the_unload_approach(stack, wr):
    database, workgroup = names(stack)
    target = stack.resources.lake_uri("analyst/unload/")

    metadata = wr.athena.unload("SELECT shipping_cost, shipping_distance, quantity FROM processed",
                                path=target, database=database, workgroup=workgroup)
    unloaded = wr.s3.read_parquet(target)
    via_unload = wr.athena.read_sql_query("SELECT * FROM processed", database=database, workgroup=workgroup,
                                          ctas_approach=False, unload_approach=True,
                                          s3_output=stack.resources.lake_uri("analyst/unload-approach/"))

    assert metadata.manifest_location.endswith("-manifest.csv")
    assert len(unloaded) == len(via_unload) == stack.expected["valid"]
    assert_sums(unloaded.sum(numeric_only=True), stack.expected["totals"], "unload")
    assert_sums(via_unload.sum(numeric_only=True), stack.expected["totals"], "unload_approach")


def test_describe_table_and_show_create_table(stack, wr):
    database, workgroup = names(stack)

    described = wr.athena.describe_table("processed", database=database, workgroup=workgroup)
    ddl = wr.athena.show_create_table("processed", database=database, workgroup=workgroup)

    types = dict(zip(described["Column Name"], described["Type"]))
    assert types["shipping_cost"] == "double" and types["shipping_id"] == "bigint"
    assert "shipping_date" in types and "customer_name" not in types
    assert described["Column Name"].tolist() == list(types)  # each column once (partitions included)
    assert ddl.startswith("CREATE ") and "`%s`.`processed`" % database in ddl
    assert "`shipping_cost` double" in ddl and "customer_name" not in ddl

    # As Athena answers Hive DDL: a UTILITY statement, a .txt result, rows without a header.
    execution = run_query(stack, "DESCRIBE processed")
    assert execution["StatementType"] == "UTILITY"
    assert execution["ResultConfiguration"]["OutputLocation"].endswith("/%s.txt" % execution["QueryExecutionId"])
    rows = stack.client("athena").get_query_results(QueryExecutionId=execution["QueryExecutionId"])["ResultSet"]["Rows"]
    first = rows[0]["Data"][0]["VarCharValue"].split("\t")
    assert [f.strip() for f in first][:2] == ["shipping_id", "bigint"]  # then the column's comment, if any


def test_parameterized_queries_bind_execution_parameters(stack, wr):
    database, workgroup = names(stack)
    sql = "SELECT COUNT(*) AS n, SUM(shipping_cost) AS cost FROM processed WHERE quantity >= ? AND destination_city <> ?"

    for ctas in (True, False):
        frame = wr.athena.read_sql_query(sql, database=database, workgroup=workgroup, ctas_approach=ctas,
                                         params=["0", "'no such city'"], paramstyle="qmark")
        assert frame["n"].iloc[0] == stack.expected["valid"]
        assert math.isclose(frame["cost"].iloc[0], stack.expected["totals"]["shipping_cost"], rel_tol=1e-9)
    assert frame.query_metadata["ExecutionParameters"] == ["0", "'no such city'"]

    nothing = run_query(stack, sql, ExecutionParameters=["0"])
    assert nothing["Status"]["State"] == "FAILED"
    assert "Incorrect number of parameters: expected 2 but found 1" in nothing["Status"]["StateChangeReason"]


# -- boto3: paging, statistics, errors ----------------------------------------------------------


def test_get_query_results_paginator_pages_as_athena(stack):
    athena = stack.client("athena")
    execution = run_query(stack, "SELECT shipping_cost, shipping_distance, quantity FROM processed")
    query_id = execution["QueryExecutionId"]

    pages = list(athena.get_paginator("get_query_results").paginate(QueryExecutionId=query_id))

    sizes = [len(p["ResultSet"]["Rows"]) for p in pages]
    assert len(pages) > 1 and max(sizes) <= 1000 and sizes[0] == 1000
    rows = [[c.get("VarCharValue") for c in r["Data"]] for p in pages for r in p["ResultSet"]["Rows"]]
    assert rows[0] == ["shipping_cost", "shipping_distance", "quantity"]
    data = rows[1:]
    assert len(data) == stack.expected["valid"]
    sums = {field: math.fsum(float(r[i]) for r in data) for i, field in enumerate(AMOUNTS)}
    assert_sums(sums, stack.expected["totals"], "paginator")
    listed = stack.client("s3").list_objects_v2(Bucket=stack.resources.lake_bucket, Prefix=PROCESSED_PREFIX)
    data_files = [o for o in listed["Contents"] if o["Key"].endswith(".parquet")]
    assert execution["Statistics"]["DataScannedInBytes"] == sum(o["Size"] for o in data_files) > 0


def test_get_query_results_honours_max_results_and_validates_next_token(stack):
    from botocore.exceptions import ClientError

    athena = stack.client("athena")
    query_id = run_query(stack, "SELECT shipping_id FROM processed ORDER BY shipping_id")["QueryExecutionId"]
    other_id = run_query(stack, "SELECT 1 AS one")["QueryExecutionId"]

    first = athena.get_query_results(QueryExecutionId=query_id, MaxResults=10)
    second = athena.get_query_results(QueryExecutionId=query_id, MaxResults=10, NextToken=first["NextToken"])

    assert len(first["ResultSet"]["Rows"]) == 10 and len(second["ResultSet"]["Rows"]) == 10
    assert first["ResultSet"]["Rows"][0]["Data"][0]["VarCharValue"] == "shipping_id"
    assert "NextToken" not in athena.get_query_results(QueryExecutionId=other_id)
    for token in ("garbage", first["NextToken"][:-4] + "AAAA"):
        with pytest.raises(ClientError) as refused:
            athena.get_query_results(QueryExecutionId=query_id, NextToken=token)
        assert refused.value.response["Error"]["Code"] == "InvalidRequestException"
    with pytest.raises(ClientError) as foreign:
        athena.get_query_results(QueryExecutionId=other_id, NextToken=first["NextToken"])
    assert foreign.value.response["Error"]["Code"] == "InvalidRequestException"
    with pytest.raises(ClientError) as too_many:
        athena.get_query_results(QueryExecutionId=query_id, MaxResults=1001)
    assert too_many.value.response["Error"]["Code"] == "InvalidRequestException"


@pytest.mark.parametrize("sql", [
    "SELECT content FROM read_text('/etc/passwd')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM glob('/*')",
    "SELECT read_text('/etc/hostname') AS t",
    "COPY (SELECT 1) TO '/tmp/copied.csv'",
    "ATTACH '/tmp/other.db'",
    "PRAGMA version",
])
def test_the_engine_reads_nothing_outside_the_lake(stack, sql):
    execution = run_query(stack, sql)

    assert execution["Status"]["State"] == "FAILED"
    error = execution["Status"]["AthenaError"]
    assert error["ErrorCategory"] == 2 and error["ErrorMessage"] == execution["Status"]["StateChangeReason"]
    assert error["ErrorMessage"].split(":")[0] in ("FUNCTION_NOT_FOUND", "SYNTAX_ERROR")
    assert "root:" not in error["ErrorMessage"]


# -- the AWS CLI --------------------------------------------------------------------------------


def aws(*args):
    """Run the AWS CLI (awscli, pinned in requirements-dev.txt) against the stack's endpoint (the
    environment embedded.start set: AWS_ENDPOINT_URL, fake credentials, region). Returns its
    parsed JSON output, or its text for commands that print text (s3 cp)."""
    command = [os.path.join(os.path.dirname(sys.executable), "aws"), *args, "--output", "json"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout) if args[0] != "s3" else completed.stdout


def test_aws_cli_lands_a_file_runs_it_and_queries_the_table(stack, tmp_path):
    data = datafiles.clean_bytes(rows=40, seed=151)
    path = tmp_path / "cli.json"
    path.write_bytes(data)
    key = "incoming/cli.json"
    database, workgroup = names(stack)

    copied = aws("s3", "cp", str(path), "s3://%s/%s" % (stack.resources.landing_bucket, key), "--no-progress")
    head = stack.client("s3").head_object(Bucket=stack.resources.landing_bucket, Key=key)
    etag = head["ETag"].strip('"')
    from chalicelib import naming

    # The landing bucket is versioned: the execution is named for this version of the key.
    name = naming.execution_name(stack.resources.landing_bucket, key, etag, head.get("VersionId"))
    assert stack.wait_for_executions([name], timeout=240)[name]["status"] == "SUCCEEDED"
    listed = aws("stepfunctions", "list-executions", "--state-machine-arn", stack.resources.state_machine_arn)
    started = aws("athena", "start-query-execution", "--work-group", workgroup,
                  "--query-execution-context", "Database=%s" % database,
                  "--query-string", "SELECT SUM(shipping_cost) AS shipping_cost, SUM(shipping_distance) AS "
                                    "shipping_distance, SUM(quantity) AS quantity FROM processed WHERE source_id = ?",
                  "--execution-parameters", "'%s'" % naming.source_id(stack.resources.landing_bucket, key, etag,
                                                                         head.get("VersionId")))
    query_id = started["QueryExecutionId"]
    deadline = time.monotonic() + 60
    while aws("athena", "get-query-execution", "--query-execution-id", query_id)["QueryExecution"]["Status"]["State"] \
            in ("QUEUED", "RUNNING") and time.monotonic() < deadline:
        time.sleep(0.1)
    results = aws("athena", "get-query-results", "--query-execution-id", query_id)

    assert copied.startswith("upload: ")
    assert name in [e["name"] for e in listed["executions"]]
    header, row = [[c.get("VarCharValue") for c in r["Data"]] for r in results["ResultSet"]["Rows"]]
    assert header == list(AMOUNTS)
    assert_sums(dict(zip(header, row)), reference.evaluate(data)["totals"], "aws athena")
