"""The normalize Glue job: de-duplication and PII removal against the independent reference, one
atomic commit per landing key to the processed Iceberg table (re-runs replace, the newest version
of a key wins, lost races are retried), on the embedded stack's S3 and Glue catalog (moto, with
Glue's optimistic locking of table versions), at the pyiceberg version the job runs on Glue."""
import datetime
import json
import os
import subprocess
import sys
import uuid

import boto3
import pytest

import datafiles
import reference

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLUE_DIR = os.path.join(PROJECT_DIR, "glue")
if GLUE_DIR not in sys.path:
    sys.path.insert(0, GLUE_DIR)

import jobio  # noqa: E402
import json_to_parquet  # noqa: E402
import lake_commit  # noqa: E402
import normalize  # noqa: E402

from chalicelib import lake_table  # noqa: E402

SCRIPT = os.path.join(GLUE_DIR, "normalize.py")
PII = ("customer_name", "street_address")
DATABASE = "lake_db"
LAKE_BUCKET = "lake"
KEY = "s3://landing/incoming/a.json"


class Lake:
    """A fresh Iceberg table (created as the deploy creates it) in the embedded stack's catalog."""

    def __init__(self, endpoint_url):
        from deploy import lake_table as deploy_lake_table

        self.endpoint_url = endpoint_url
        self.table = "processed_%s" % uuid.uuid4().hex[:8]
        self.catalog = lake_commit.load_catalog("us-east-1", endpoint_url)
        schema = deploy_lake_table.iceberg_schema()
        self.catalog.create_table((DATABASE, self.table), schema=schema,
                                  location="s3://%s/%s" % (LAKE_BUCKET, self.table),
                                  partition_spec=deploy_lake_table.partition_spec(schema),
                                  properties=lake_table.table_properties(86400))

    def load(self):
        return self.catalog.load_table((DATABASE, self.table))

    def rows(self):
        return self.load().scan().to_arrow().to_pylist()

    def data_files(self):
        return [task.file for task in self.load().scan().plan_files()]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The embedded stack: moto's S3 and Glue, with Glue's table-version check."""
    from local import embedded

    running = embedded.start(work_dir=str(tmp_path_factory.mktemp("stack")))
    try:
        running.reset()  # moto keeps resources per process, past a stopped server
        running.client("s3").create_bucket(Bucket=LAKE_BUCKET)
        running.client("s3").create_bucket(Bucket="landing")
        running.client("glue").create_database(DatabaseInput={"Name": DATABASE})
        yield running
    finally:
        running.stop()


@pytest.fixture
def lake(stack):
    return Lake(stack.endpoint_url)


def make_raw(tmp_path, data, source_id="sid1", name="raw"):
    """Runs json_to_parquet on ``data``; returns the raw Parquet path."""
    folder = tmp_path / name
    folder.mkdir()
    source = datafiles.write(folder / "landing.json", data)
    target = folder / ("%s.parquet" % source_id)
    json_to_parquet.convert(source, str(target), str(folder / "q.jsonl"), KEY, source_id)
    return str(target)


def run_main(raw, lake, summary=None, *extra):
    args = ["--source_uri", raw, "--database", DATABASE, "--table", lake.table]
    if summary:
        args += ["--summary_uri", str(summary)]
    return normalize.main(args + list(extra), catalog=lake.catalog)


def processed_rows(lake):
    """Every row of the table, shipping_date as YYYY-MM-DD."""
    return [dict(row, shipping_date=row["shipping_date"].isoformat()) for row in lake.rows()]


def test_counts_and_totals_match_the_reference(tmp_path, lake, capsys):
    data = datafiles.messy_bytes()
    summary_path = tmp_path / "manifests" / "sid1.json"

    summary = run_main(make_raw(tmp_path, data), lake, summary_path)

    expected = reference.evaluate(data)
    assert summary["rows"] == {name: expected[name] for name in ("read", "valid", "quarantined", "duplicates")}
    rows = summary["rows"]
    assert rows["read"] == rows["valid"] + rows["quarantined"] + rows["duplicates"]
    assert summary["source"] == KEY and summary["source_key"] == KEY and summary["source_id"] == "sid1"
    assert summary["superseded"] is False and summary["commit"]["attempts"] == 1
    processed = processed_rows(lake)
    assert len(processed) == expected["valid"]
    for name, total in expected["totals"].items():
        assert sum(row[name] for row in processed) == pytest.approx(total, rel=1e-12)
    assert {(r["source_id"], r["source_key"], r["source_version_id"]) for r in processed} == {("sid1", KEY, None)}
    assert json.loads(summary_path.read_text()) == summary
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary


def test_pii_is_in_no_column_and_no_data_file(tmp_path, lake):
    import pyarrow.parquet as pq

    run_main(make_raw(tmp_path, datafiles.messy_bytes()), lake)

    assert not set(PII) & set(lake.load().schema().column_names)
    s3 = boto3.client("s3", endpoint_url=lake.endpoint_url)
    for data_file in lake.data_files():
        bucket, key = jobio.split_s3(data_file.file_path)
        local = tmp_path / os.path.basename(key)
        s3.download_file(bucket, key, str(local))
        assert not set(PII) & set(pq.read_schema(str(local)).names)
        assert b"customer" not in local.read_bytes()


def test_rows_are_partitioned_by_month_of_shipping_date(tmp_path, lake):
    start = datetime.date(2023, 1, 1)
    dates = tuple((start + datetime.timedelta(days=n)).strftime("%Y/%m/%d") for n in range(0, 730, 3))
    records = datafiles.clean_records(1000, dates=dates)

    summary = run_main(make_raw(tmp_path, datafiles.ndjson(records)), lake)

    months = sorted({d[:7].replace("/", "-") for d in dates})
    assert summary["partitions"] == months
    files = lake.data_files()
    assert len(files) == len(months) == 24  # one data file per month, not one per date
    assert sum(f.record_count for f in files) == 1000
    spec = lake.load().spec()
    assert [(field.name, str(field.transform)) for field in spec.fields] == [("shipping_date_month", "month")]


def test_duplicates_are_exact_on_every_field_pii_included(tmp_path, lake):
    record = datafiles.clean_records(1)[0]
    lines = [record, record, dict(record, customer_name="Someone Else"), dict(record, quantity=float(record["quantity"]))]
    data = datafiles.ndjson(lines)
    summary = run_main(make_raw(tmp_path, data), lake)

    assert summary["rows"] == {"read": 4, "valid": 2, "quarantined": 0, "duplicates": 2}
    assert reference.evaluate(data)["duplicates"] == 2
    assert len(lake.rows()) == 2


def test_rows_sharing_an_id_are_kept_unless_equal_on_every_field(tmp_path, lake):
    record = datafiles.clean_records(1)[0]
    lines = [record, dict(record, shipping_cost=record["shipping_cost"] + 1), dict(record, product_id=None), record,
             dict(record, quantity=0.0), dict(record, quantity=-0.0)] + datafiles.clean_records(20, first_id=100)
    data = datafiles.ndjson(lines)

    summary = run_main(make_raw(tmp_path, data), lake)

    expected = reference.evaluate(data)
    assert summary["rows"] == {name: expected[name] for name in ("read", "valid", "quarantined", "duplicates")}
    assert summary["rows"]["duplicates"] == 2  # the repeated record, and -0.0 beside 0.0
    processed = processed_rows(lake)
    for name, total in expected["totals"].items():
        assert sum(row[name] for row in processed) == pytest.approx(total, rel=1e-12)


def test_rerun_replaces_the_keys_rows_in_one_commit_and_keeps_other_keys(tmp_path, lake):
    glue = boto3.client("glue", endpoint_url=lake.endpoint_url)
    first = datafiles.clean_records(30, dates=("2024/01/15", "2024/02/16", "2024/03/17"))
    run_main(make_raw(tmp_path, datafiles.ndjson(first), name="first"), lake)
    other = make_raw(tmp_path, datafiles.clean_bytes(5), source_id="other", name="other")
    run_main(other, lake, None, "--source_key", "s3://landing/incoming/other.json")
    version_before = int(glue.get_table(DatabaseName=DATABASE, Name=lake.table)["Table"]["VersionId"])

    second = datafiles.clean_records(10, seed=4, dates=("2024/02/16",))
    summary = run_main(make_raw(tmp_path, datafiles.ndjson(second), source_id="sid2", name="second"), lake)

    assert summary["commit"]["replaced"] is True
    rows = processed_rows(lake)
    assert sorted(r["shipping_id"] for r in rows if r["source_key"] == KEY) == [r["shipping_id"] for r in second]
    assert {r["source_id"] for r in rows if r["source_key"] == KEY} == {"sid2"}
    assert len([r for r in rows if r["source_key"] != KEY]) == 5
    # Delete and append are one catalog update: no reader ever saw the key half replaced.
    assert int(glue.get_table(DatabaseName=DATABASE, Name=lake.table)["Table"]["VersionId"]) == version_before + 1
    operations = [s.summary.operation.value for s in lake.load().snapshots()]
    assert operations[-2:] == ["delete", "append"]


def test_rerun_of_the_same_raw_file_leaves_the_same_rows(tmp_path, lake):
    raw = make_raw(tmp_path, datafiles.messy_bytes())
    first = run_main(raw, lake)
    rows = sorted(map(json.dumps, processed_rows(lake)))

    again = run_main(raw, lake)

    assert again["rows"] == first["rows"] and again["partitions"] == first["partitions"]
    assert sorted(map(json.dumps, processed_rows(lake))) == rows


def test_a_failed_commit_leaves_the_table_as_it_was(tmp_path, lake, monkeypatch):
    run_main(make_raw(tmp_path, datafiles.clean_bytes(20), name="first"), lake)
    before = sorted(map(json.dumps, processed_rows(lake)))

    def crash(*args, **kwargs):
        raise RuntimeError("the job died while committing")

    monkeypatch.setattr(type(lake.catalog), "commit_table", crash)
    with pytest.raises(RuntimeError):
        run_main(make_raw(tmp_path, datafiles.clean_bytes(7, seed=3), name="second"), lake)
    monkeypatch.undo()

    assert sorted(map(json.dumps, processed_rows(lake))) == before


# A commit's first attempt loads the table, writes its data files, then loads it again as the
# base of its commit: its second load is the one another writer must beat.
FIRST_ATTEMPT_LOADS = 2


class RacingCatalog:
    """The catalog, with another writer committing right after each load of the table numbered in
    ``at``: a commit built on that load is then from an outdated base."""

    def __init__(self, lake, at, rows_of):
        self.lake, self.at, self.rows_of = lake, set(at), rows_of
        self.loads = 0

    def load_table(self, identifier):
        table = self.lake.catalog.load_table(identifier)
        self.loads += 1
        if self.loads in self.at:
            key = "s3://landing/incoming/rival-%d.json" % self.loads
            lake_commit.commit(self.lake.catalog, DATABASE, self.lake.table, self.rows_of(key), key)
        return table


def _rows(tmp_path, key, count, seed):
    raw = make_raw(tmp_path, datafiles.clean_bytes(count, seed=seed), source_id="s%d" % seed, name="raw%d" % seed)
    return normalize.transform(raw, "s%d" % seed, key)[0]


@pytest.mark.parametrize("ours_first", [True, False])
def test_two_commits_from_the_same_base_both_land(tmp_path, lake, ours_first):
    """Both writers load the same snapshot; the one that commits second loses Glue's version
    check (pyiceberg 0.10.0 raises CommitFailedException and does not retry), is retried on the
    new base, and lands."""
    import pyiceberg

    ours = _rows(tmp_path, "s3://landing/incoming/ours.json", 8, 1)
    theirs = _rows(tmp_path, "s3://landing/incoming/theirs.json", 5, 2)
    waited = []
    if ours_first:
        stale = lake.load()  # the other writer's base, loaded before our commit
        result = lake_commit.commit(lake.catalog, DATABASE, lake.table, ours, "s3://landing/incoming/ours.json")
        assert result["attempts"] == 1

        class Stale:
            calls = 0

            def load_table(self, identifier):
                Stale.calls += 1
                return stale if Stale.calls <= FIRST_ATTEMPT_LOADS else lake.catalog.load_table(identifier)

        other = lake_commit.commit(Stale(), DATABASE, lake.table, theirs, "s3://landing/incoming/theirs.json",
                                   sleep=waited.append)
        assert other["attempts"] == 2
    else:
        racing = RacingCatalog(lake, [FIRST_ATTEMPT_LOADS], lambda key: theirs)
        result = lake_commit.commit(racing, DATABASE, lake.table, ours, "s3://landing/incoming/ours.json",
                                    sleep=waited.append)
        assert result["attempts"] == 2
    assert len(waited) == 1 and 0 <= waited[0] <= lake_commit.MAX_DELAY_SECONDS
    keys = [r["source_key"] for r in lake.rows()]
    assert keys.count("s3://landing/incoming/ours.json") == 8
    assert len(keys) - keys.count("s3://landing/incoming/ours.json") == 5
    assert pyiceberg.__version__ == "0.10.0"  # the version Glue installs (chalicelib/glue_jobs.py)


def test_a_commit_that_keeps_losing_gives_up_with_a_clear_error(tmp_path, lake):
    ours = _rows(tmp_path, "s3://landing/incoming/ours.json", 3, 1)
    racing = RacingCatalog(lake, range(1, 11), lambda key: ours.set_column(
        ours.schema.get_field_index("source_key"), "source_key",
        __import__("pyarrow").array([key] * ours.num_rows)))
    waited = []

    with pytest.raises(lake_commit.CommitConflict) as failure:
        lake_commit.commit(racing, DATABASE, lake.table, ours, "s3://landing/incoming/ours.json",
                           max_attempts=3, sleep=waited.append)

    assert "after 3 attempts" in str(failure.value)
    assert len(waited) == 2
    assert "s3://landing/incoming/ours.json" not in {r["source_key"] for r in lake.rows()}


def test_glue_refuses_an_update_from_an_outdated_table_version(stack, lake):
    glue = stack.client("glue")
    table = glue.get_table(DatabaseName=DATABASE, Name=lake.table)["Table"]
    table_input = {k: table[k] for k in ("Name", "StorageDescriptor", "Parameters", "TableType") if k in table}
    glue.update_table(DatabaseName=DATABASE, TableInput=table_input, VersionId=table["VersionId"])

    with pytest.raises(glue.exceptions.ConcurrentModificationException):
        glue.update_table(DatabaseName=DATABASE, TableInput=table_input, VersionId=table["VersionId"])


def test_newest_version_of_a_key_wins_whatever_the_commit_order(tmp_path, stack, lake):
    s3 = stack.client("s3")
    s3.create_bucket(Bucket="versioned")
    s3.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
    key = "s3://versioned/incoming/v.json"
    old_version = s3.put_object(Bucket="versioned", Key="incoming/v.json", Body=b"1")["VersionId"]
    new_version = s3.put_object(Bucket="versioned", Key="incoming/v.json", Body=b"2")["VersionId"]
    old_raw = make_raw(tmp_path, datafiles.clean_bytes(4, seed=1), source_id="old", name="old")
    new_raw = make_raw(tmp_path, datafiles.clean_bytes(6, seed=2), source_id="new", name="new")
    storage = jobio.Storage(s3)

    def run(raw, version):
        return normalize.main(["--source_uri", raw, "--database", DATABASE, "--table", lake.table, "--source_key", key,
                               "--source_version_id", version], storage=storage, catalog=lake.catalog)

    assert run(new_raw, new_version)["superseded"] is False
    late = run(old_raw, old_version)  # the older version's execution ends last

    assert late["superseded"] is True and late["commit"]["held_version_id"] == new_version
    old_rows = reference.evaluate(datafiles.clean_bytes(4, seed=1))
    assert late["rows"]["valid"] == old_rows["valid"]  # counted, though nothing was committed
    old_months = {json.loads(line)["shipping_date"][:7].replace("/", "-")
                  for line in datafiles.clean_bytes(4, seed=1).splitlines()}
    assert late["partitions"] == sorted(old_months)
    rows = lake.rows()
    assert len(rows) == 6 and {r["source_version_id"] for r in rows} == {new_version}

    again = run(new_raw, new_version)  # a re-run of the newest version still replaces
    assert again["superseded"] is False and again["commit"]["replaced"] is True
    assert len(lake.rows()) == 6


def test_raw_file_without_counts_metadata_needs_a_source_key(tmp_path, lake):
    import pyarrow.parquet as pq

    raw = tmp_path / "plain.parquet"
    table = pq.read_table(make_raw(tmp_path, datafiles.clean_bytes(5)))
    pq.write_table(table.replace_schema_metadata(None), raw)

    with pytest.raises(jobio.JobError) as failure:
        run_main(str(raw), lake)
    assert "--source_key" in str(failure.value)

    summary = run_main(str(raw), lake, None, "--source_key", "s3://landing/incoming/plain.json")
    assert summary["rows"] == {"read": 5, "valid": 5, "quarantined": 0, "duplicates": 0}
    assert summary["source_id"] == "plain"


def test_unreadable_source_is_reported(tmp_path, lake):
    bogus = tmp_path / "raw.parquet"
    bogus.write_text("not parquet")
    with pytest.raises(jobio.JobError) as failure:
        run_main(str(bogus), lake)
    assert "not a readable Parquet file" in str(failure.value)


def test_a_missing_table_is_reported_with_what_to_do(tmp_path, lake):
    with pytest.raises(jobio.JobError) as failure:
        normalize.main(["--source_uri", make_raw(tmp_path, datafiles.clean_bytes(3)), "--database", DATABASE,
                        "--table", "nope"], catalog=lake.catalog)
    assert "does not exist" in str(failure.value) and "deploy up" in str(failure.value)


def test_script_runs_and_ignores_glue_arguments(tmp_path, lake):
    raw = make_raw(tmp_path, datafiles.messy_bytes())
    summary_path = tmp_path / "m.json"
    env = dict(os.environ, AWS_ENDPOINT_URL=lake.endpoint_url, AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    done = subprocess.run([sys.executable, SCRIPT, "--JOB_NAME", "n", "--source_uri", raw, "--database", DATABASE,
                           "--table", lake.table, "--summary_uri", str(summary_path), "--region", "us-east-1",
                           "--job-bookmark-option", "job-bookmark-disable", "--memory_limit", "200MB"],
                          cwd=PROJECT_DIR, capture_output=True, text=True, timeout=180, env=env)

    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary == json.loads(summary_path.read_text())
    assert summary["rows"]["valid"] == reference.evaluate(datafiles.messy_bytes())["valid"] == len(lake.rows())


def test_s3_end_to_end_with_both_jobs(tmp_path, stack, lake):
    s3 = stack.client("s3")
    data = datafiles.messy_bytes()
    s3.put_object(Bucket="landing", Key="incoming/a.json.gz", Body=datafiles.gzipped(data))
    storage = jobio.Storage(s3)

    json_to_parquet.main(["--source_uri", "s3://landing/incoming/a.json.gz", "--target_uri", "s3://lake/raw/sid7.parquet",
                          "--quarantine_uri", "s3://lake/quarantine/sid7.jsonl", "--source_id", "sid7"], storage=storage)
    summary = normalize.main(["--source_uri", "s3://lake/raw/sid7.parquet", "--database", DATABASE, "--table", lake.table,
                              "--summary_uri", "s3://lake/manifests/sid7.json", "--source_key",
                              "s3://landing/incoming/a.json.gz", "--JOB_NAME", "n"], storage=storage, catalog=lake.catalog)

    expected = reference.evaluate(data)
    assert summary["rows"]["valid"] == expected["valid"] and summary["rows"]["duplicates"] == expected["duplicates"]
    assert summary["source"] == "s3://landing/incoming/a.json.gz"
    assert json.loads(s3.get_object(Bucket="lake", Key="manifests/sid7.json")["Body"].read()) == summary
    assert len(lake.rows()) == expected["valid"]


def test_a_large_month_is_cut_into_data_files_of_bounded_rows(tmp_path, lake, monkeypatch):
    """A month with more rows than a data file holds is written as several files, every row
    kept; rows arriving in any order are cut into months alike."""
    import pyarrow as pa

    monkeypatch.setattr(lake_commit, "ROWS_PER_DATA_FILE", 7)
    rows = _rows(tmp_path, "s3://landing/incoming/big.json", 40, 3)
    shuffled = rows.take(pa.array(list(range(1, rows.num_rows, 2)) + list(range(0, rows.num_rows, 2))))
    result = lake_commit.commit(lake.catalog, DATABASE, lake.table, shuffled, "s3://landing/incoming/big.json")

    table = lake.load()
    files = list(table.scan().plan_files())
    months = {row["shipping_date"][:7] for row in processed_rows(lake)}
    assert result["data_files"] == len(files) >= max(len(months), -(-rows.num_rows // 7))
    assert all(task.file.record_count <= 7 for task in files)
    assert sorted(map(json.dumps, processed_rows(lake))) == sorted(
        json.dumps(dict(row, shipping_date=row["shipping_date"].isoformat())) for row in rows.to_pylist())
    assert len({tuple(task.file.partition) for task in files}) == len(months)  # a file holds one month
    assert_files_hold_their_partitions_month(table)


def assert_files_hold_their_partitions_month(table):
    """Every data file's partition value is the month (months since 1970-01) of each of its rows."""
    import pyarrow.parquet as pq

    for task in table.scan().plan_files():
        [month] = task.file.partition
        with table.io.new_input(task.file.file_path).open() as stream:
            dates = pq.read_table(stream, columns=["shipping_date"]).column(0).to_pylist()
        assert {(d.year - 1970) * 12 + d.month - 1 for d in dates} == {month}, task.file.file_path


def test_a_table_partitioned_otherwise_is_written_through_pyicebergs_own_partitioning(tmp_path, lake):
    """The commit writes month slices itself only for lake_table's spec; a table whose
    partitioning was changed (here: by day) still gets one data file per partition value."""
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import DayTransform

    table = lake.load()
    date_id = table.schema().find_field("shipping_date").field_id
    name = "by_day_%s" % uuid.uuid4().hex[:8]
    lake.catalog.create_table((DATABASE, name), schema=table.schema(), location="s3://%s/%s" % (LAKE_BUCKET, name),
                              partition_spec=PartitionSpec(PartitionField(date_id, 1000, DayTransform(), "day")),
                              properties=lake_table.table_properties(86400))
    rows = _rows(tmp_path, KEY, 30, 5)

    result = lake_commit.commit(lake.catalog, DATABASE, name, rows, KEY)

    written = lake.catalog.load_table((DATABASE, name))
    days = {row["shipping_date"] for row in rows.to_pylist()}
    assert result["data_files"] == len(days)
    assert written.scan().to_arrow().num_rows == rows.num_rows


class _Stream:
    """Rows handed to the commit as batches of ``batch_rows`` (in month order), noting at each
    batch read how many rows the data files written by then hold."""

    def __init__(self, rows, batch_rows, written):
        self.rows, self.batch_rows, self.written, self.seen = rows, batch_rows, written, []

    def batches(self):
        import pyarrow as pa

        def read():
            for batch in self.rows.to_batches(max_chunksize=self.batch_rows):
                self.seen.append((sum(self.written), batch.num_rows))
                yield batch

        return pa.RecordBatchReader.from_batches(self.rows.schema, read())


def test_rows_stream_into_data_files_as_they_come_holding_a_bounded_number(tmp_path, lake, monkeypatch):
    """The rows reach the commit as a stream: data files are written while later rows are read,
    and no more rows are held than the files being written plus the one being filled; months
    that straddle batches are cut right, and the result counts the rows and the months."""
    monkeypatch.setattr(lake_commit, "ROWS_PER_DATA_FILE", 10)
    monkeypatch.setattr(lake_commit, "ROWS_IN_FLIGHT", 10)
    written = []
    original_write = lake_commit._MonthFiles._write

    def write(files, task):
        data_files = original_write(files, task)
        written.append(sum(f.record_count for f in data_files))
        return data_files

    monkeypatch.setattr(lake_commit._MonthFiles, "_write", write)
    rows = lake_commit._in_month_order(_rows(tmp_path, KEY, 120, 11))
    stream = _Stream(rows, 7, written)

    result = lake_commit.commit(lake.catalog, DATABASE, lake.table, stream, KEY)

    months = sorted({row["shipping_date"].strftime("%Y-%m") for row in rows.to_pylist()})
    assert (result["rows"], result["months"]) == (rows.num_rows, months)
    assert sorted(map(json.dumps, processed_rows(lake))) == sorted(
        json.dumps(dict(row, shipping_date=row["shipping_date"].isoformat())) for row in rows.to_pylist())
    files = lake.data_files()
    assert all(f.record_count <= 10 for f in files) and len(files) == result["data_files"]
    assert_files_hold_their_partitions_month(lake.load())
    read = 0
    for rows_written, batch_rows in stream.seen:
        # held: read but not yet in a written file; at most the files being written (10 rows),
        # the file being filled (10) and the batch in hand
        assert read - rows_written <= 10 + 10 + 7
        read += batch_rows
    assert stream.seen[-1][0] > 0  # files were written before the last rows were read


def test_rows_out_of_month_order_fail_the_commit_and_leave_the_table(tmp_path, lake):
    """A stream promises month order; one that breaks it fails with a clear error, nothing committed."""
    import pyarrow as pa

    rows = lake_commit._in_month_order(_rows(tmp_path, KEY, 60, 12))
    reversed_rows = rows.take(pa.array(range(rows.num_rows - 1, -1, -1)))
    assert len({d.month for d in rows.column("shipping_date").to_pylist()}) > 1

    with pytest.raises(jobio.JobError, match="not in month order"):
        lake_commit.commit(lake.catalog, DATABASE, lake.table, _Stream(reversed_rows, 5, []), KEY)
    assert lake.load().current_snapshot() is None


def test_a_commit_computes_the_tables_metadata_a_bounded_number_of_times(tmp_path, lake, monkeypatch):
    """pyiceberg 0.10.0 deep-copies the whole table metadata each time a transaction's metadata
    is read, twice per data file added: the commit reads it once per staged change instead, so
    a commit's cost does not grow with its data files times the table's snapshots."""
    import pyarrow as pa
    import pyiceberg.table

    rows = _rows(tmp_path, KEY, 120, 13)
    spread = [datetime.date(2024, 1 + n % 12, 1 + n % 28) for n in range(rows.num_rows)]  # twelve months
    rows = rows.set_column(rows.schema.get_field_index("shipping_date"), rows.schema.field("shipping_date"),
                           pa.array(spread, pa.date32()))
    months = 12
    calls = []
    original = pyiceberg.table.update_table_metadata

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(pyiceberg.table, "update_table_metadata", counted)
    result = lake_commit.commit(lake.catalog, DATABASE, lake.table, rows, KEY)

    assert result["data_files"] == months
    assert len(calls) <= 4, len(calls)
