"""The local Athena engine alone (moto in-process): the statements clients send besides SELECT,
parameters, Athena's types, what it refuses, and table resolvers."""
import io

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from local.athena_engine import AthenaEngine, QueryError, bind_parameters
from local.athena_tables import DataFile, ResolvedTable

REGION = "us-east-1"
LAKE = "lake-bucket"
DATABASE = "shipping_db"
RESULTS = "s3://%s/athena-results" % LAKE


def _parquet(s3, key, table):
    sink = io.BytesIO()
    pq.write_table(table, sink)
    s3.put_object(Bucket=LAKE, Key=key, Body=sink.getvalue())
    return len(sink.getvalue())


@pytest.fixture
def engine(aws, tmp_path):
    """An engine over one partitioned table ``orders`` (two partitions, one file each)."""
    s3 = boto3.client("s3", region_name=REGION)
    glue = boto3.client("glue", region_name=REGION)
    s3.create_bucket(Bucket=LAKE)
    glue.create_database(DatabaseInput={"Name": DATABASE})
    sizes = {}
    for day, amounts in (("2024-01-01", [1.5, 2.5]), ("2024-01-02", [4.0])):
        key = "orders/day=%s/part.parquet" % day
        sizes[key] = _parquet(s3, key, pa.table({"id": pa.array(range(len(amounts)), pa.int64()),
                                                  "amount": pa.array(amounts, pa.float64())}))
    glue.create_table(DatabaseName=DATABASE, TableInput={
        "Name": "orders", "TableType": "EXTERNAL_TABLE",
        "StorageDescriptor": {"Columns": [{"Name": "id", "Type": "bigint"}, {"Name": "amount", "Type": "double"}],
                              "Location": "s3://%s/orders/" % LAKE},
        "PartitionKeys": [{"Name": "day", "Type": "string"}],
    })
    for day in ("2024-01-01", "2024-01-02"):
        glue.create_partition(DatabaseName=DATABASE, TableName="orders", PartitionInput={
            "Values": [day], "StorageDescriptor": {"Location": "s3://%s/orders/day=%s/" % (LAKE, day)}})
    running = AthenaEngine(glue, s3, tmp_path / "athena")
    running.s3_client, running.glue_client, running.file_sizes = s3, glue, sizes
    return running


def run(engine, sql, query_id="q1", **kwargs):
    return engine.execute(sql, DATABASE, "%s/%s.csv" % (RESULTS, query_id), **kwargs)


def test_ctas_writes_parquet_a_glue_table_and_a_manifest_then_drop_removes_the_table(engine):
    result = run(engine, "CREATE TABLE tmp WITH (format = 'PARQUET') AS SELECT day, SUM(amount) AS total "
                         "FROM orders GROUP BY day", query_id="ctas1")

    assert result.columns == ["rows"] and result.rows == [["2"]] and result.statement_type == "DML"
    table = engine.glue_client.get_table(DatabaseName=DATABASE, Name="tmp")["Table"]
    assert table["StorageDescriptor"]["Location"] == "s3://%s/athena-results/tables/ctas1/" % LAKE
    assert [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]] == [("day", "string"), ("total", "double")]
    manifest = engine.s3_client.get_object(Bucket=LAKE, Key="athena-results/ctas1-manifest.csv")["Body"].read().decode()
    assert result.manifest_location == "%s/ctas1-manifest.csv" % RESULTS
    files = manifest.split()
    assert len(files) == 1 and files[0].startswith("s3://%s/athena-results/tables/ctas1/" % LAKE)
    assert run(engine, "SELECT SUM(total) AS t FROM tmp").rows == [["8.0"]]

    dropped = run(engine, "DROP TABLE `tmp`", query_id="drop1")
    assert dropped.statement_type == "DDL"
    with pytest.raises(QueryError, match="^TABLE_NOT_FOUND"):
        run(engine, "SELECT * FROM tmp")
    run(engine, "DROP TABLE IF EXISTS tmp")


def test_ctas_of_no_rows_writes_no_file_but_the_table_and_an_empty_manifest(engine):
    result = run(engine, "CREATE TABLE empty_one AS SELECT id, amount FROM orders WHERE amount < 0", query_id="e1")

    assert result.rows == [["0"]]
    manifest = engine.s3_client.get_object(Bucket=LAKE, Key="athena-results/e1-manifest.csv")["Body"].read()
    assert manifest == b""
    columns = engine.glue_client.get_table(DatabaseName=DATABASE, Name="empty_one")["Table"]["StorageDescriptor"]["Columns"]
    assert [(c["Name"], c["Type"]) for c in columns] == [("id", "bigint"), ("amount", "double")]
    assert run(engine, "SELECT COUNT(*) AS n FROM empty_one").rows == [["0"]]


def test_ctas_refuses_what_athena_refuses(engine):
    run(engine, "CREATE TABLE t1 WITH (external_location = 's3://%s/t1/') AS SELECT 1 AS a" % LAKE)
    with pytest.raises(QueryError, match="^ALREADY_EXISTS"):
        run(engine, "CREATE TABLE t1 AS SELECT 1 AS a")
    with pytest.raises(QueryError, match="^HIVE_PATH_ALREADY_EXISTS"):
        run(engine, "CREATE TABLE t2 WITH (external_location = 's3://%s/t1/') AS SELECT 1 AS a" % LAKE)
    with pytest.raises(QueryError, match="Column name not specified at position 2"):
        run(engine, "CREATE TABLE t3 AS SELECT 1 AS a, 2")
    with pytest.raises(QueryError, match="Column name 'a' specified more than once"):
        run(engine, "CREATE TABLE t3 AS SELECT 1 AS a, 2 AS a")


def test_unload_writes_parquet_and_a_manifest(engine):
    result = run(engine, "UNLOAD (SELECT id, amount FROM orders) TO 's3://%s/out/' WITH (format = 'PARQUET')" % LAKE,
                 query_id="u1")

    files = engine.s3_client.get_object(Bucket=LAKE, Key="athena-results/u1-manifest.csv")["Body"].read().decode().split()
    body = engine.s3_client.get_object(Bucket=LAKE, Key=files[0][len("s3://%s/" % LAKE):])["Body"].read()
    # No ORDER BY: like Athena, the engine promises no row order (several files are read in parallel).
    assert sorted(pq.read_table(io.BytesIO(body)).column("amount").to_pylist()) == [1.5, 2.5, 4.0]
    assert result.data_scanned_bytes == sum(engine.file_sizes.values())
    with pytest.raises(QueryError, match="^HIVE_PATH_ALREADY_EXISTS"):
        run(engine, "UNLOAD (SELECT 1 AS a) TO 's3://%s/out/' WITH (format = 'PARQUET')" % LAKE)


def test_describe_and_show_answer_as_hive_text(engine):
    described = run(engine, "DESCRIBE `orders`", query_id="d1")
    body = engine.s3_client.get_object(Bucket=LAKE, Key="athena-results/d1.txt")["Body"].read().decode()

    assert described.text_result and described.statement_type == "UTILITY"
    assert described.output_location == "%s/d1.txt" % RESULTS
    lines = body.splitlines()
    assert lines[0] == "%-20s\t%-20s\t%-20s" % ("id", "bigint", "")
    assert "# Partition Information" in body and lines[-1].startswith("day ")
    assert run(engine, "SHOW TABLES").rows == [["orders"]]
    assert run(engine, "SHOW TABLES IN %s 'ord*'" % DATABASE).rows == [["orders"]]
    assert run(engine, "SHOW COLUMNS IN orders").rows == [["id"], ["amount"], ["day"]]
    assert run(engine, "SHOW PARTITIONS orders").rows == [["day=2024-01-01"], ["day=2024-01-02"]]
    assert [DATABASE] in run(engine, "SHOW DATABASES").rows
    ddl = [r[0] for r in run(engine, "SHOW CREATE TABLE %s.orders" % DATABASE).rows]
    assert ddl[0] == "CREATE EXTERNAL TABLE `%s`.`orders`(" % DATABASE and "PARTITIONED BY ( " in ddl


def test_information_schema_and_the_path_column(engine):
    columns = run(engine, "SELECT column_name, data_type, extra_info FROM information_schema.columns "
                          "WHERE table_schema = '%s' AND table_name = 'orders' ORDER BY ordinal_position" % DATABASE)
    paths = run(engine, 'SELECT "$path", COUNT(*) AS n FROM orders GROUP BY 1 ORDER BY 1')

    assert columns.rows == [["id", "bigint", None], ["amount", "double", None], ["day", "varchar", "partition key"]]
    assert paths.rows == [["s3://%s/%s" % (LAKE, key), n] for key, n in zip(sorted(engine.file_sizes), ("2", "1"))]
    assert run(engine, "SELECT * FROM orders WHERE id = 0 ORDER BY day").columns == ["id", "amount", "day"]


def test_execution_parameters_bind_literals_in_order(engine):
    result = run(engine, "SELECT COUNT(*) AS n FROM orders WHERE day = ? AND amount > ?", parameters=["'2024-01-01'", "2"])

    assert result.rows == [["1"]]
    assert bind_parameters("SELECT '?' AS q, ? AS p", ["DATE '2024-01-31'"]) == "SELECT '?' AS q, (DATE '2024-01-31') AS p"
    with pytest.raises(QueryError, match="^INVALID_PARAMETER_USAGE: .*expected 2 but found 1"):
        run(engine, "SELECT ? AS a, ? AS b", parameters=["1"])
    with pytest.raises(QueryError, match="^INVALID_PARAMETER_USAGE: .*expected 1 but found 0"):
        run(engine, "SELECT ? AS a")
    for not_a_literal in ("(SELECT 1)", "1) UNION SELECT content FROM read_text('/etc/passwd') --", "id"):
        with pytest.raises(QueryError, match="^INVALID_PARAMETER_USAGE: execution parameter 1 is not a literal"):
            run(engine, "SELECT ? AS a", parameters=[not_a_literal])


def test_result_types_follow_athena(engine):
    result = run(engine, "SELECT date_trunc('month', date_parse('2024/05/17', '%Y/%m/%d')) AS m, "
                         "date_trunc('month', DATE '2024-05-17') AS d, SUM(id) AS s FROM orders")

    assert result.column_types == ["timestamp", "date", "bigint"]
    assert result.rows == [["2024-05-01 00:00:00.000", "2024-05-01", "1"]]
    zoned = run(engine, "SELECT from_iso8601_timestamp('2024-01-01T10:00:00.250+02:00') AS ts, 1.5 AS x")
    assert zoned.column_types == ["timestamp with time zone", "decimal(2,1)"]
    assert zoned.rows == [["2024-01-01 08:00:00.250 UTC", "1.5"]]


def test_data_scanned_is_the_bytes_of_the_files_read(engine):
    assert run(engine, "SELECT COUNT(*) AS n FROM orders").data_scanned_bytes == sum(engine.file_sizes.values())
    assert run(engine, "SELECT 1 AS one").data_scanned_bytes == 0


@pytest.mark.parametrize("sql, error", [
    ("SELECT content FROM read_text('/etc/passwd')", "FUNCTION_NOT_FOUND: line 1:21: Table function 'read_text' not registered"),
    ("SELECT * FROM read_parquet('/etc/passwd')", "FUNCTION_NOT_FOUND"),
    ("SELECT * FROM glob('/etc/*')", "SYNTAX_ERROR"),  # sqlglot reads GLOB as Hive's operator
    ("SELECT read_blob('/etc/passwd') AS b", "FUNCTION_NOT_FOUND"),
    ("SELECT current_setting('allowed_directories') AS s", "FUNCTION_NOT_FOUND"),
    ("COPY orders TO '/tmp/x.csv'", "SYNTAX_ERROR: line 1:1: mismatched input 'COPY'"),
    ("INSTALL httpfs", "SYNTAX_ERROR: line 1:1: mismatched input 'INSTALL'"),
    ("SET enable_external_access = true", "SYNTAX_ERROR"),
    ("INSERT INTO orders SELECT 1, 2.0, 'x'", "NOT_SUPPORTED"),
    ("CREATE TABLE x (a int)", "NOT_SUPPORTED"),
    ("DESCRIBE SELECT 1", "NOT_SUPPORTED"),
    ("EXPLAIN SELECT 1", "NOT_SUPPORTED"),
    ("SELECT * FROM TABLE(read_text('/etc/passwd'))", "FUNCTION_NOT_FOUND"),
])
def test_statements_and_functions_athena_would_not_run_are_refused(engine, sql, error):
    with pytest.raises(QueryError) as refused:
        run(engine, sql)
    assert str(refused.value).startswith(error)


def test_duckdb_itself_reads_nothing_outside_the_cache(engine):
    # Below the SQL checks: the connection the engine queries with refuses any other file.
    import duckdb

    connection = engine._connect()
    try:
        with pytest.raises(duckdb.PermissionException):
            connection.execute("SELECT * FROM read_text('/etc/passwd')")
        with pytest.raises(duckdb.Error):
            connection.execute("SET enable_external_access = true")
    finally:
        connection.close()


def test_a_table_resolver_decides_which_files_a_table_reads(engine):
    class FirstPartitionOnly:
        """A stand-in for a table format with its own metadata (an Iceberg table, say)."""

        def resolve(self, definition, statement=None, node=None):
            if definition["Name"] != "orders":
                return None
            key = "orders/day=2024-01-01/part.parquet"
            return ResolvedTable(columns=[("id", "bigint"), ("amount", "double")],
                                 files=[DataFile("s3://%s/%s" % (LAKE, key), engine.file_sizes[key])])

    engine.add_table_resolver(FirstPartitionOnly())
    result = run(engine, "SELECT SUM(amount) AS s FROM orders")

    assert result.rows == [["4.0"]]
    assert result.data_scanned_bytes == engine.file_sizes["orders/day=2024-01-01/part.parquet"]


def test_the_object_cache_downloads_a_file_once_per_tag_it_is_keyed_by(aws, tmp_path):
    """Iceberg data files are keyed by their path (never rewritten), listed files by their S3
    ETag: either way a second query reads the local copy, and a changed ETag downloads again."""
    from local.athena_tables import S3ObjectCache

    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="cache-test-bucket")
    s3.put_object(Bucket="cache-test-bucket", Key="data/a.parquet", Body=b"first")
    gets = []
    s3.meta.events.register("before-call.s3.GetObject", lambda **kwargs: gets.append(1))
    cache = S3ObjectCache(s3, str(tmp_path))
    uri = "s3://cache-test-bucket/data/a.parquet"

    for _ in range(3):
        with open(cache.local_path(uri, "iceberg:" + uri), "rb") as handle:
            assert handle.read() == b"first"
    assert len(gets) == 1

    listed = s3.head_object(Bucket="cache-test-bucket", Key="data/a.parquet")["ETag"].strip('"')
    cache.local_path(uri, listed)
    cache.local_path(uri, listed)
    assert len(gets) == 2  # keyed by another tag: one download, then the copy
    s3.put_object(Bucket="cache-test-bucket", Key="data/a.parquet", Body=b"second")
    changed = s3.head_object(Bucket="cache-test-bucket", Key="data/a.parquet")["ETag"].strip('"')
    with open(cache.local_path(uri, changed), "rb") as handle:
        assert handle.read() == b"second"
    assert len(gets) == 3
