"""The local stack's engine adapters: the crawler stand-in and the Athena engine against moto
in-process, the Glue job runner against the embedded server (its subprocess needs an endpoint)."""
import io
import os
import subprocess
import sys
import time
import zipfile

import boto3
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from chalicelib.queries import TOTALS_COLUMNS, parse_totals, totals_sql
from chalicelib.schema import PARTITION_FIELD, SOURCE_ID_FIELD, processed_fields
from local import embedded, moto_hooks
from local.athena_engine import AthenaEngine, QueryError, render_double, render_value
from local.crawler import S3Crawler, table_name_for
from local.glue_runner import GlueJobRunner

REGION = "us-east-1"
LAKE = "lake-bucket"
DATABASE = "shipping_db"


# -- data -------------------------------------------------------------------------------------


def _processed_table(day, rows, source_id="src1"):
    """Rows of the processed zone for one shipping date (the partition column is in the path)."""
    return pa.table({
        "shipping_id": pa.array([1000 * day + i for i in range(rows)], pa.int64()),
        "destination_city": pa.array(["City%d" % (i % 3) for i in range(rows)]),
        "shipping_cost": pa.array([0.1 * i + day / 3.0 for i in range(rows)], pa.float64()),
        "shipping_distance": pa.array([1.5 * i + 7.0 for i in range(rows)], pa.float64()),
        "quantity": pa.array([float(i % 7) for i in range(rows)], pa.float64()),
        "product_id": pa.array([None if i % 4 == 0 else i for i in range(rows)], pa.int64()),
        SOURCE_ID_FIELD: pa.array([source_id] * rows),
    })


def _put_parquet(s3, key, table):
    sink = io.BytesIO()
    pq.write_table(table, sink)
    s3.put_object(Bucket=LAKE, Key=key, Body=sink.getvalue())


@pytest.fixture
def lake(aws):
    """Clients of an in-process moto with the lake bucket, the Glue database and a processed
    zone of two dates (plus a _SUCCESS marker Athena and crawlers skip)."""
    s3 = boto3.client("s3", region_name=REGION)
    glue = boto3.client("glue", region_name=REGION)
    s3.create_bucket(Bucket=LAKE)
    glue.create_database(DatabaseInput={"Name": DATABASE})
    tables = {}
    for day, rows in ((1, 40), (2, 25)):
        tables[day] = _processed_table(day, rows)
        _put_parquet(s3, "processed/%s=2024-01-%02d/src1.parquet" % (PARTITION_FIELD, day), tables[day])
    s3.put_object(Bucket=LAKE, Key="processed/_SUCCESS", Body=b"")
    return {"s3": s3, "glue": glue, "tables": tables}


def _crawler_definition(path, name="processed-crawler", prefix=""):
    return {"Name": name, "DatabaseName": DATABASE, "TablePrefix": prefix,
            "Targets": {"S3Targets": [{"Path": path}]}}


# -- crawler ----------------------------------------------------------------------------------


def test_crawler_catalogs_parquet_columns_and_hive_partitions(lake, tmp_path):
    crawler = S3Crawler(lake["glue"], lake["s3"], tmp_path)

    assert crawler.crawl(_crawler_definition("s3://%s/processed/" % LAKE)) == (True, None)

    table = lake["glue"].get_table(DatabaseName=DATABASE, Name="processed")["Table"]
    expected = {f.name: f.glue_type for f in processed_fields() if f.name != PARTITION_FIELD}
    expected[SOURCE_ID_FIELD] = "string"
    assert {c["Name"]: c["Type"] for c in table["StorageDescriptor"]["Columns"]} == expected
    assert table["PartitionKeys"] == [{"Name": PARTITION_FIELD, "Type": "string"}]
    assert table["StorageDescriptor"]["Location"] == "s3://%s/processed/" % LAKE
    assert table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"].endswith("ParquetHiveSerDe")
    assert table["StorageDescriptor"]["InputFormat"].endswith("MapredParquetInputFormat")
    partitions = lake["glue"].get_partitions(DatabaseName=DATABASE, TableName="processed")["Partitions"]
    assert sorted((p["Values"], p["StorageDescriptor"]["Location"]) for p in partitions) == [
        (["2024-01-01"], "s3://%s/processed/shipping_date=2024-01-01/" % LAKE),
        (["2024-01-02"], "s3://%s/processed/shipping_date=2024-01-02/" % LAKE),
    ]


def test_recrawl_registers_only_new_partitions_and_keeps_the_table_version(lake, tmp_path):
    crawler = S3Crawler(lake["glue"], lake["s3"], tmp_path)
    crawler.crawl(_crawler_definition("s3://%s/processed/" % LAKE))
    _put_parquet(lake["s3"], "processed/shipping_date=2024-01-03/src2.parquet", _processed_table(3, 5, "src2"))

    assert crawler.crawl(_crawler_definition("s3://%s/processed/" % LAKE)) == (True, None)

    partitions = lake["glue"].get_partitions(DatabaseName=DATABASE, TableName="processed")["Partitions"]
    assert sorted(p["Values"][0] for p in partitions) == ["2024-01-01", "2024-01-02", "2024-01-03"]
    versions = lake["glue"].get_table_versions(DatabaseName=DATABASE, TableName="processed")["TableVersions"]
    assert len(versions) == 1


def test_crawler_names_unpartitioned_table_after_folder_with_prefix(lake, tmp_path):
    _put_parquet(lake["s3"], "raw/abc.parquet", _processed_table(1, 3))

    ok, error = S3Crawler(lake["glue"], lake["s3"], tmp_path).crawl(
        _crawler_definition("s3://%s/raw" % LAKE, prefix="zone_"))

    assert (ok, error) == (True, None)
    table = lake["glue"].get_table(DatabaseName=DATABASE, Name="zone_raw")["Table"]
    assert table["PartitionKeys"] == []
    assert table_name_for("s3://bucket/a/Some-Folder/") == "some_folder"


def test_crawl_fails_with_message_on_a_file_that_is_not_parquet(lake, tmp_path):
    lake["s3"].put_object(Bucket=LAKE, Key="processed/shipping_date=2024-01-01/notes.json", Body=b'{"a": 1}\n')

    ok, error = S3Crawler(lake["glue"], lake["s3"], tmp_path).crawl(_crawler_definition("s3://%s/processed/" % LAKE))

    assert ok is False
    assert "s3://%s/processed/shipping_date=2024-01-01/notes.json" % LAKE in error
    assert "Parquet" in error


def test_crawl_fails_when_files_disagree_on_a_column_type(lake, tmp_path):
    clash = pa.table({"shipping_id": pa.array(["not-a-number"])})
    _put_parquet(lake["s3"], "processed/shipping_date=2024-01-09/clash.parquet", clash)

    ok, error = S3Crawler(lake["glue"], lake["s3"], tmp_path).crawl(_crawler_definition("s3://%s/processed/" % LAKE))

    assert ok is False
    assert "shipping_id" in error and "bigint" in error and "string" in error


# -- Athena engine ----------------------------------------------------------------------------


@pytest.fixture
def catalogued(lake, tmp_path):
    S3Crawler(lake["glue"], lake["s3"], tmp_path / "crawler").crawl(_crawler_definition("s3://%s/processed/" % LAKE))
    lake["engine"] = AthenaEngine(lake["glue"], lake["s3"], tmp_path / "athena")
    return lake


def test_totals_query_equals_pyarrow_over_registered_partitions(catalogued):
    everything = pa.concat_tables(catalogued["tables"].values())

    columns, rows = catalogued["engine"].execute(
        totals_sql(DATABASE, "processed"), DATABASE, "s3://%s/athena-results/q1.csv" % LAKE)

    assert columns == [alias for alias, _expr, _key, _type in TOTALS_COLUMNS]
    totals = parse_totals(rows[0])
    assert totals["shipping_cost"] == pytest.approx(pc.sum(everything["shipping_cost"]).as_py(), rel=1e-12)
    assert totals["shipping_distance"] == pytest.approx(pc.sum(everything["shipping_distance"]).as_py(), rel=1e-12)
    assert totals["quantity"] == pytest.approx(pc.sum(everything["quantity"]).as_py(), rel=1e-12)
    assert totals["shipments"] == everything.num_rows
    assert totals["destinations"] == len(pc.unique(everything["destination_city"]))


def test_query_reads_only_registered_partitions(catalogued, tmp_path):
    _put_parquet(catalogued["s3"], "processed/shipping_date=2024-01-05/late.parquet", _processed_table(5, 11, "late"))
    count_sql = 'SELECT COUNT(*) AS n FROM "%s"."processed"' % DATABASE

    _columns, before = catalogued["engine"].execute(count_sql, DATABASE, None)
    S3Crawler(catalogued["glue"], catalogued["s3"], tmp_path / "recrawl").crawl(_crawler_definition("s3://%s/processed/" % LAKE))
    _columns, after = catalogued["engine"].execute(count_sql, DATABASE, None)

    assert before == [["65"]]
    assert after == [["76"]]


def test_partition_values_are_columns_typed_as_the_catalog_says(catalogued):
    result = catalogued["engine"].execute(
        "SELECT shipping_date, COUNT(*) AS n, SUM(product_id) AS p FROM processed "
        "WHERE source_id = 'src1' GROUP BY shipping_date ORDER BY shipping_date", DATABASE, None)

    columns, rows = result
    assert columns == ["shipping_date", "n", "p"]
    assert [r[:2] for r in rows] == [["2024-01-01", "40"], ["2024-01-02", "25"]]
    assert result.column_types == ["varchar", "bigint", "bigint"]


def test_query_writes_athena_style_csv_to_output_location(catalogued):
    catalogued["engine"].execute(
        "SELECT destination_city, product_id FROM processed WHERE shipping_id IN (1000, 1001) ORDER BY shipping_id",
        DATABASE, "s3://%s/athena-results/q2.csv" % LAKE)

    body = catalogued["s3"].get_object(Bucket=LAKE, Key="athena-results/q2.csv")["Body"].read().decode()
    assert body == '"destination_city","product_id"\n"City0",\n"City1","1"\n'


def test_unknown_table_and_column_fail_like_athena(catalogued):
    with pytest.raises(QueryError, match=r"^TABLE_NOT_FOUND: .*'awsdatacatalog\.%s\.nope' does not exist" % DATABASE):
        catalogued["engine"].execute("SELECT * FROM nope", DATABASE, None)
    with pytest.raises(QueryError, match=r"^SCHEMA_NOT_FOUND: .*Schema 'other_db' does not exist"):
        catalogued["engine"].execute("SELECT * FROM other_db.processed", DATABASE, None)
    with pytest.raises(QueryError, match=r"^COLUMN_NOT_FOUND: .*Column 'customer_name' cannot be resolved"):
        catalogued["engine"].execute("SELECT customer_name FROM processed", DATABASE, None)
    with pytest.raises(QueryError, match=r"^SYNTAX_ERROR"):
        catalogued["engine"].execute("SELEC 1", DATABASE, None)


def test_trino_semantics_integer_division_ctes_and_column_names(catalogued):
    columns, rows = catalogued["engine"].execute(
        "WITH t AS (SELECT 7 AS a, 2 AS b) SELECT a / b, CAST(a AS double) / b, b FROM t", DATABASE, None)

    assert columns == ["_col0", "_col1", "b"]
    assert rows == [["3", "3.5", "2"]]


def test_values_render_as_athena_prints_them():
    assert render_double(12345678.9) == "1.23456789E7"
    assert render_double(1500.0) == "1500.0"
    assert render_double(0.0001) == "1.0E-4"
    assert render_double(0.1 + 0.2) == "0.30000000000000004"
    assert render_value(None) is None
    assert render_value(True) == "true"


# -- Glue job runner (needs the embedded server: the job's subprocess calls S3) ---------------


@pytest.fixture
def stack(tmp_path, aws_credentials):
    with embedded.start(work_dir=str(tmp_path / "stack")) as running_stack:
        yield running_stack


def _wait_for_job_run(glue, job_name, run_id):
    deadline = time.time() + 60
    while time.time() < deadline:
        run = glue.get_job_run(JobName=job_name, RunId=run_id)["JobRun"]
        if run["JobRunState"] not in ("STARTING", "RUNNING", "STOPPING"):
            return run
        time.sleep(0.05)
    raise AssertionError("job run %s still %s" % (run_id, run["JobRunState"]))


def test_glue_job_runs_the_uploaded_script_with_its_arguments(stack):
    s3, glue = stack.client("s3"), stack.client("glue")
    s3.create_bucket(Bucket=LAKE)
    library = io.BytesIO()
    with zipfile.ZipFile(library, "w") as archive:
        archive.writestr("jobhelpers/__init__.py", "def greeting(name):\n    return 'hello ' + name\n")
    s3.put_object(Bucket=LAKE, Key="glue-assets/helpers.zip", Body=library.getvalue())
    s3.put_object(Bucket=LAKE, Key="glue-assets/write.py", Body=(
        "import sys, boto3\n"
        "from jobhelpers import greeting\n"
        "args = dict(zip(sys.argv[1::2], sys.argv[2::2]))\n"
        "body = greeting(args['--who']) + ' from ' + args['--JOB_NAME']\n"
        "boto3.client('s3').put_object(Bucket=args['--bucket'], Key='out/greeting.txt', Body=body.encode())\n"
    ).encode())
    glue.create_job(Name="writer", Role="role", Command={"Name": "pythonshell", "ScriptLocation":
                    "s3://%s/glue-assets/write.py" % LAKE},
                    DefaultArguments={"--extra-py-files": "s3://%s/glue-assets/helpers.zip" % LAKE, "--who": "nobody"})

    run_id = glue.start_job_run(JobName="writer", Arguments={"--who": "shipping", "--bucket": LAKE})["JobRunId"]
    started = glue.get_job_run(JobName="writer", RunId=run_id)["JobRun"]
    run = _wait_for_job_run(glue, "writer", run_id)

    assert started["JobRunState"] in ("RUNNING", "SUCCEEDED")
    assert run["JobRunState"] == "SUCCEEDED"
    assert "ErrorMessage" not in run
    assert run["CompletedOn"] >= run["StartedOn"]
    body = s3.get_object(Bucket=LAKE, Key="out/greeting.txt")["Body"].read()
    assert body == b"hello shipping from writer"


def test_glue_job_that_exits_1_fails_with_its_last_error_line(stack):
    s3, glue = stack.client("s3"), stack.client("glue")
    s3.create_bucket(Bucket=LAKE)
    s3.put_object(Bucket=LAKE, Key="glue-assets/fail.py",
                  Body=b"import sys\nprint('reading input')\nprint('no valid line in input', file=sys.stderr)\nsys.exit(1)\n")
    glue.create_job(Name="failing", Role="role",
                    Command={"Name": "pythonshell", "ScriptLocation": "s3://%s/glue-assets/fail.py" % LAKE})

    run = _wait_for_job_run(glue, "failing", glue.start_job_run(JobName="failing")["JobRunId"])

    assert run["JobRunState"] == "FAILED"
    assert run["ErrorMessage"].startswith("no valid line in input (exit code 1; log: ")
    log_path = run["ErrorMessage"].split("log: ", 1)[1].rstrip(")")
    with open(log_path) as log:
        assert log.read() == "reading input\nno valid line in input\n"


def test_glue_job_with_a_missing_script_fails_and_says_which(tmp_path, aws):
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=LAKE)
    runner = GlueJobRunner(s3, tmp_path)

    ok, error = runner.run({"Name": "ghost", "Command": {"ScriptLocation": "s3://%s/glue-assets/none.py" % LAKE}}, {})

    assert ok is False
    assert error.startswith("Job ghost cannot start: ")
    assert "404" in error


def test_forked_job_runs_side_by_side_all_report_their_own_exit_code(tmp_path, aws):
    # Each run's exit code comes from the fork server over a pipe, and Process.start() in any
    # thread polls every child: unguarded, a run that succeeded was now and then reported as
    # exit code 255 (a 150-file backfill lost one job run that way).
    from concurrent.futures import ThreadPoolExecutor

    from local import glue_runner

    if not glue_runner._fork_server_usable():
        pytest.skip("this interpreter's main module cannot be imported by a forked run")
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=LAKE)
    s3.put_object(Bucket=LAKE, Key="glue-assets/quick.py", Body=b"import sys\nsys.exit(int(sys.argv[2]) % 2)\n")
    runner = GlueJobRunner(s3, tmp_path, preload=("json",))
    job = {"Name": "quick", "Command": {"ScriptLocation": "s3://%s/glue-assets/quick.py" % LAKE}}
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(lambda n: runner.run(job, {"--n": str(n)}), range(240)))
    finally:
        runner.close()

    exit_codes = [None if ok else error.split("(exit code ", 1)[1].split(";")[0] for ok, error in results]
    assert exit_codes == [None if n % 2 == 0 else "1" for n in range(240)]


def test_stopping_the_stack_restores_moto_and_the_environment(tmp_path, aws_credentials):
    from moto.glue.models import GlueBackend
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_callback

    original = GlueBackend.start_job_run
    stack = embedded.start(work_dir=str(tmp_path))
    try:
        assert GlueBackend.start_job_run is not original
        assert state_task_service_callback._DELAY_SECONDS_SYNC_CONDITION_CHECK == moto_hooks.SYNC_CHECK_SECONDS
        with pytest.raises(RuntimeError, match="already running"):
            embedded.start(work_dir=str(tmp_path))
        with pytest.raises(RuntimeError, match="already installed"):
            moto_hooks.install(stack.job_runner, stack.crawler, stack.query_engine)
    finally:
        stack.stop()

    assert GlueBackend.start_job_run is original
    assert state_task_service_callback._DELAY_SECONDS_SYNC_CONDITION_CHECK == 0.5
    assert "AWS_ENDPOINT_URL" not in os.environ
    assert embedded.running() is None


def test_a_work_dir_serves_one_stack_and_a_default_one_moves_aside(tmp_path):
    # A second stack in the same folder would overwrite the first's TLS certificate: the first
    # one's job processes then fail with CERTIFICATE_VERIFY_FAILED. The folder is claimed by
    # another process here (a `local up` in another terminal), and freed when that one ends.
    from local.stack import LocalStack

    work = tmp_path / "stack"
    work.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from local import embedded; held = embedded._claim(sys.argv[1]); "
         "print('claimed', flush=True); sys.stdin.read()", str(work)],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        with pytest.raises(embedded.WorkDirInUse, match=r"stack is in use by another local stack \(process %d\)"
                           % holder.pid):
            embedded.start(work_dir=str(work))
        assert embedded.running() is None
        # Given no work dir, a stack takes the next free folder beside the default one.
        stack = LocalStack()
        stack.work_dir = str(work)  # as if this were the project's .local-stack
        assert stack._start_embedded().work_dir == str(work) + "-2" == stack.work_dir
        embedded.running().stop()
    finally:
        holder.communicate("")
    with embedded.start(work_dir=str(work)) as running_stack:
        assert running_stack.work_dir == str(work)


def test_a_run_waits_while_another_runs_settings_are_in_the_stage_files(tmp_path):
    # A run with --set writes its settings into .chalice/ until it ends; another run's deploy
    # reading them meanwhile would deploy them too (and could put them back for good).
    import threading

    from local import stack as local_stack

    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys; held = open(sys.argv[1], 'a'); "
         "fcntl.flock(held.fileno(), fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()",
         str(tmp_path / local_stack.STAGE_FILES_LOCK)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    locked = threading.Event()
    taken = []

    def deploy_side():
        taken.append(local_stack._lock_stage_files(str(tmp_path), exclusive=False))
        locked.set()

    try:
        assert holder.stdout.readline().strip() == "held"
        waiter = threading.Thread(target=deploy_side, daemon=True)
        waiter.start()
        assert not locked.wait(1.0)
    finally:
        holder.communicate("")
    assert locked.wait(30)
    # Runs without --set only read the files: they share the lock.
    again = local_stack._lock_stage_files(str(tmp_path), exclusive=False)
    again.close()
    taken[0].close()
