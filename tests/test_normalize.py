"""The normalize Glue job: de-duplication, PII removal and partitioning against the independent
reference, re-runs that replace their own outputs, S3 through moto, and the script."""
import datetime
import json
import os
import subprocess
import sys

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import datafiles
import reference

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLUE_DIR = os.path.join(PROJECT_DIR, "glue")
if GLUE_DIR not in sys.path:
    sys.path.insert(0, GLUE_DIR)

import jobio  # noqa: E402
import json_to_parquet  # noqa: E402
import normalize  # noqa: E402

SCRIPT = os.path.join(GLUE_DIR, "normalize.py")
PII = ("customer_name", "street_address")


def make_raw(tmp_path, data, source_id="sid1", name="raw"):
    """Runs json_to_parquet on ``data``; returns the raw Parquet path."""
    folder = tmp_path / name
    folder.mkdir()
    source = datafiles.write(folder / "landing.json", data)
    target = folder / ("%s.parquet" % source_id)
    json_to_parquet.convert(source, str(target), str(folder / "q.jsonl"), "s3://landing/x.json", source_id)
    return str(target)


def run_main(raw, target, summary=None, *extra):
    args = ["--source_uri", raw, "--target_uri", str(target)] + (["--summary_uri", str(summary)] if summary else [])
    return normalize.main(args + list(extra))


def processed_files(target):
    return sorted(os.path.join(folder, name) for folder, _dirs, names in os.walk(target) for name in names)


def processed_rows(target):
    """Every row of the processed zone with its partition date (from the folder name)."""
    rows = []
    for path in processed_files(target):
        date = os.path.basename(os.path.dirname(path)).split("=", 1)[1]
        for row in pq.ParquetFile(path).read().to_pylist():
            rows.append(dict(row, shipping_date=date))
    return rows


def test_counts_and_totals_match_the_reference(tmp_path, capsys):
    data = datafiles.messy_bytes()
    raw = make_raw(tmp_path, data)
    target, summary_path = tmp_path / "processed", tmp_path / "manifests" / "sid1.json"

    summary = run_main(raw, target, summary_path)

    expected = reference.evaluate(data)
    assert summary["rows"] == {name: expected[name] for name in ("read", "valid", "quarantined", "duplicates")}
    rows = summary["rows"]
    assert rows["read"] == rows["valid"] + rows["quarantined"] + rows["duplicates"]
    assert summary["source"] == "s3://landing/x.json" and summary["source_id"] == "sid1" and summary["raw"] == raw
    processed = processed_rows(target)
    assert len(processed) == expected["valid"]
    for name, total in expected["totals"].items():
        assert sum(row[name] for row in processed) == pytest.approx(total, rel=1e-12)
    assert json.loads(summary_path.read_text()) == summary
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary


def test_pii_is_in_no_processed_file(tmp_path):
    data = datafiles.messy_bytes()
    target = tmp_path / "processed"
    run_main(make_raw(tmp_path, data), target)

    names = {r["customer_name"] for r in reference.analyze(data).kept if r["customer_name"]}
    addresses = {r["street_address"] for r in reference.analyze(data).kept if r["street_address"]}
    files = processed_files(target)
    assert files
    for path in files:
        table = pq.ParquetFile(path).read()  # the file alone, not its shipping_date=... folder
        assert not set(PII) & set(table.schema.names), path
        assert table.schema.names == ["shipping_id", "destination_city", "shipping_cost", "shipping_distance",
                                      "quantity", "product_id", "source_id"]
        values = {v for column in table.columns if pa.types.is_string(column.type) for v in column.to_pylist()}
        assert not values & (names | addresses), path


def test_partitions_hold_exactly_their_dates_rows(tmp_path):
    data = datafiles.messy_bytes()
    target = tmp_path / "processed"
    summary = run_main(make_raw(tmp_path, data), target)

    kept = reference.analyze(data).kept
    dates = sorted({r["shipping_date"].isoformat() for r in kept})
    assert summary["partitions"] == dates
    assert summary["outputs"] == [os.path.join(str(target), "shipping_date=%s" % d, "sid1.parquet") for d in dates]
    assert processed_files(target) == summary["outputs"]
    expected = sorted((r["shipping_date"].isoformat(), r["shipping_id"], r["shipping_cost"], r["product_id"]) for r in kept)
    got = sorted((r["shipping_date"], r["shipping_id"], r["shipping_cost"], r["product_id"]) for r in processed_rows(target))
    assert got == expected
    assert {r["source_id"] for r in processed_rows(target)} == {"sid1"}


def test_duplicates_are_exact_on_every_field_pii_included(tmp_path):
    record = datafiles.clean_records(1)[0]
    lines = [record, record, dict(record, customer_name="Someone Else"), dict(record, quantity=float(record["quantity"]))]
    data = datafiles.ndjson(lines)
    summary = run_main(make_raw(tmp_path, data), tmp_path / "processed")

    assert summary["rows"] == {"read": 4, "valid": 2, "quarantined": 0, "duplicates": 2}
    assert reference.evaluate(data)["duplicates"] == 2


def test_rerun_replaces_its_outputs_and_removes_stale_partitions(tmp_path):
    target, summary_path = tmp_path / "processed", tmp_path / "sid1.json"
    first = datafiles.clean_records(30, dates=("2024/01/15", "2024/01/16", "2024/01/17"))
    run_main(make_raw(tmp_path, datafiles.ndjson(first), name="first"), target, summary_path)
    assert len(processed_files(target)) == 3

    second = datafiles.clean_records(10, seed=4, dates=("2024/01/16",))
    summary = run_main(make_raw(tmp_path, datafiles.ndjson(second), name="second"), target, summary_path)

    assert processed_files(target) == [os.path.join(str(target), "shipping_date=2024-01-16", "sid1.parquet")]
    assert summary["outputs"] == processed_files(target)
    assert sorted(r["shipping_id"] for r in processed_rows(target)) == [r["shipping_id"] for r in second]


def test_rerun_of_the_same_raw_file_leaves_the_same_rows(tmp_path):
    target, summary_path = tmp_path / "processed", tmp_path / "sid1.json"
    raw = make_raw(tmp_path, datafiles.messy_bytes())
    first = run_main(raw, target, summary_path)
    rows = sorted(map(json.dumps, processed_rows(target)))

    again = run_main(raw, target, summary_path)

    assert again == first
    assert sorted(map(json.dumps, processed_rows(target))) == rows


def test_without_a_summary_stale_outputs_are_found_by_listing_and_other_sources_kept(tmp_path):
    target = tmp_path / "processed"
    old = datafiles.clean_records(6, dates=("2024/03/01", "2024/03/02"))
    run_main(make_raw(tmp_path, datafiles.ndjson(old), name="old"), target)
    other = make_raw(tmp_path, datafiles.ndjson(old), source_id="other", name="other")
    run_main(other, target)
    (target / "shipping_date=2024-03-02" / "notes.txt").write_text("not ours")

    new = datafiles.clean_records(2, dates=("2024/03/01",))
    run_main(make_raw(tmp_path, datafiles.ndjson(new), name="new"), target)

    assert processed_files(target) == sorted([
        os.path.join(str(target), "shipping_date=2024-03-01", "other.parquet"),
        os.path.join(str(target), "shipping_date=2024-03-01", "sid1.parquet"),
        os.path.join(str(target), "shipping_date=2024-03-02", "notes.txt"),
        os.path.join(str(target), "shipping_date=2024-03-02", "other.parquet"),
    ])


def test_many_dates_give_one_file_per_partition(tmp_path):
    start = datetime.date(2020, 1, 1)
    dates = tuple((start + datetime.timedelta(days=n)).strftime("%Y/%m/%d") for n in range(150))
    records = datafiles.clean_records(3000, dates=dates)
    target = tmp_path / "processed"
    summary = run_main(make_raw(tmp_path, datafiles.ndjson(records)), target, None, "--threads", "2")

    assert len(summary["partitions"]) == 150
    assert len(processed_files(target)) == 150
    assert sum(pq.read_metadata(p).num_rows for p in processed_files(target)) == 3000


def test_split_partition_files_are_merged_into_one(tmp_path):
    table = pq.read_table(make_raw(tmp_path, datafiles.clean_bytes(10)))
    # Where DuckDB's PARTITION_BY leaves them: a folder name that some pyarrow versions read as a column.
    folder = tmp_path / "shipping_date=2024-01-15"
    folder.mkdir()
    parts = [str(folder / "data_0.parquet"), str(folder / "data_1.parquet")]
    pq.write_table(table.slice(0, 4), parts[0])
    pq.write_table(table.slice(4), parts[1])

    normalize._merge(parts, str(tmp_path / "merged.parquet"))

    assert pq.read_table(tmp_path / "merged.parquet").to_pylist() == table.to_pylist()


def test_raw_file_without_counts_metadata_counts_its_rows_as_read(tmp_path):
    raw = tmp_path / "plain.parquet"
    table = pq.read_table(make_raw(tmp_path, datafiles.clean_bytes(5)))
    pq.write_table(table.replace_schema_metadata(None), raw)

    summary = run_main(str(raw), tmp_path / "processed")

    assert summary["rows"] == {"read": 5, "valid": 5, "quarantined": 0, "duplicates": 0}
    assert summary["source_id"] == "plain"


def test_unreadable_source_is_reported(tmp_path):
    bogus = tmp_path / "raw.parquet"
    bogus.write_text("not parquet")
    with pytest.raises(jobio.JobError) as failure:
        run_main(str(bogus), tmp_path / "processed")
    assert "not a readable Parquet file" in str(failure.value)


def test_script_runs_on_local_paths_and_ignores_glue_arguments(tmp_path):
    raw = make_raw(tmp_path, datafiles.messy_bytes())
    target, summary_path = tmp_path / "processed", tmp_path / "m.json"
    done = subprocess.run([sys.executable, SCRIPT, "--JOB_NAME", "n", "--source_uri", raw, "--target_uri", str(target),
                           "--summary_uri", str(summary_path), "--job-bookmark-option", "job-bookmark-disable",
                           "--memory_limit", "200MB"], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary == json.loads(summary_path.read_text())
    assert summary["rows"]["valid"] == reference.evaluate(datafiles.messy_bytes())["valid"]


def test_s3_end_to_end_with_both_jobs(aws, tmp_path):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="landing")
    s3.create_bucket(Bucket="lake")
    data = datafiles.messy_bytes()
    s3.put_object(Bucket="landing", Key="incoming/a.json.gz", Body=datafiles.gzipped(data))
    # A partition file of this source left by an earlier run with other dates.
    s3.put_object(Bucket="lake", Key="processed/shipping_date=1999-01-01/sid7.parquet", Body=b"stale")
    s3.put_object(Bucket="lake", Key="processed/shipping_date=1999-01-01/other.parquet", Body=b"another source")

    json_to_parquet.main(["--source_uri", "s3://landing/incoming/a.json.gz", "--target_uri", "s3://lake/raw/sid7.parquet",
                          "--quarantine_uri", "s3://lake/quarantine/sid7.jsonl", "--source_id", "sid7"])
    summary = normalize.main(["--source_uri", "s3://lake/raw/sid7.parquet", "--target_uri", "s3://lake/processed/",
                              "--summary_uri", "s3://lake/manifests/sid7.json", "--JOB_NAME", "n"])

    expected = reference.evaluate(data)
    assert summary["rows"]["valid"] == expected["valid"] and summary["rows"]["duplicates"] == expected["duplicates"]
    assert summary["source"] == "s3://landing/incoming/a.json.gz"
    stored = json.loads(s3.get_object(Bucket="lake", Key="manifests/sid7.json")["Body"].read())
    assert stored == summary
    keys = sorted(item["Key"] for item in s3.list_objects_v2(Bucket="lake", Prefix="processed/")["Contents"])
    assert keys == sorted(["processed/shipping_date=1999-01-01/other.parquet"]
                          + ["processed/shipping_date=%s/sid7.parquet" % d for d in summary["partitions"]])
    assert summary["outputs"] == ["s3://lake/processed/shipping_date=%s/sid7.parquet" % d for d in summary["partitions"]]


def test_rows_sharing_an_id_are_kept_unless_equal_on_every_field(tmp_path):
    record = datafiles.clean_records(1)[0]
    lines = [record, dict(record, shipping_cost=record["shipping_cost"] + 1), dict(record, product_id=None), record,
             dict(record, quantity=0.0), dict(record, quantity=-0.0)] + datafiles.clean_records(20, first_id=100)
    data = datafiles.ndjson(lines)

    summary = run_main(make_raw(tmp_path, data), tmp_path / "processed")

    expected = reference.evaluate(data)
    assert summary["rows"] == {name: expected[name] for name in ("read", "valid", "quarantined", "duplicates")}
    assert summary["rows"]["duplicates"] == 2  # the repeated record, and -0.0 beside 0.0
    processed = processed_rows(tmp_path / "processed")
    for name, total in expected["totals"].items():
        assert sum(row[name] for row in processed) == pytest.approx(total, rel=1e-12)


def test_a_file_without_repeated_ids_is_copied_whole(tmp_path):
    data = datafiles.clean_bytes(200, seed=7)

    summary = run_main(make_raw(tmp_path, data), tmp_path / "processed")

    assert summary["rows"] == {"read": 200, "valid": 200, "quarantined": 0, "duplicates": 0}
    assert len(processed_rows(tmp_path / "processed")) == 200
