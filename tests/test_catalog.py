"""glue/catalog.py: when a job's output needs a crawl, and the partitions it registers itself when
it does not; the jobs' catalog step and ``--catalog_only``, against moto's Glue catalog."""
import datetime
import json
import os
import subprocess
import sys

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests import datafiles, reference

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLUE_DIR = os.path.join(PROJECT_DIR, "glue")
if GLUE_DIR not in sys.path:
    sys.path.insert(0, GLUE_DIR)

import catalog  # noqa: E402
import jobio  # noqa: E402
import json_to_parquet  # noqa: E402
from chalicelib import schema  # noqa: E402

DATABASE = "shipping_etl_test"
LAKE = "s3://lake"
PROCESSED = LAKE + "/processed/"
FILE_SCHEMA = pa.schema([("shipping_id", pa.int64()), ("shipping_cost", pa.float64()),
                         ("destination_city", pa.string()), ("source_id", pa.dictionary(pa.int32(), pa.string()))])
COLUMNS = [{"Name": "shipping_id", "Type": "bigint"}, {"Name": "shipping_cost", "Type": "double"},
           {"Name": "destination_city", "Type": "string"}, {"Name": "source_id", "Type": "string"}]
PARQUET_SD = {
    "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
    "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
    "SerdeInfo": {"SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"},
}


@pytest.fixture
def glue(aws):
    client = boto3.client("glue")
    client.create_database(DatabaseInput={"Name": DATABASE})
    return client


def create_table(glue, columns=COLUMNS, location=PROCESSED, keys=("shipping_date",)):
    glue.create_table(DatabaseName=DATABASE, TableInput={
        "Name": "processed",
        "PartitionKeys": [{"Name": k, "Type": "string"} for k in keys],
        "Parameters": {"classification": "parquet"},
        "StorageDescriptor": dict(PARQUET_SD, Columns=columns, Location=location),
    })


def request(dates=("2024-01-15", "2024-01-16")):
    return catalog.describe_output(FILE_SCHEMA, PROCESSED, ["shipping_date"],
                                   {d: PROCESSED + "shipping_date=%s/" % d for d in dates})


def partitions(glue):
    found = glue.get_partitions(DatabaseName=DATABASE, TableName="processed")["Partitions"]
    return {p["Values"][0]: p["StorageDescriptor"] for p in found}


# -- describing what a job wrote ------------------------------------------------------------


@pytest.mark.parametrize("prover", ["c", "duckdb"])
def test_describe_parquet_of_a_raw_file_is_describe_output_of_its_arrow_schema(tmp_path, prover):
    source = datafiles.write(tmp_path / "landing.json", datafiles.clean_bytes(60, seed=4))
    raw = str(tmp_path / "sid1.parquet")
    json_to_parquet.convert(source, raw, str(tmp_path / "q.jsonl"), "s3://l/landing.json", "sid1", prover=prover)

    request = catalog.describe_parquet(raw, LAKE + "/raw/")

    assert request == catalog.describe_output(pq.read_schema(raw), LAKE + "/raw/")
    assert [(c["Name"], c["Type"]) for c in request["columns"]] == (
        [(f.name, f.glue_type) for f in schema.FIELDS] + [(schema.SOURCE_ID_FIELD, "string")])
    assert request["unknown_types"] == [] and request["partition_keys"] == [] and request["partitions"] == []


def test_describe_parquet_of_partition_files_is_describe_output_of_their_arrow_schema(tmp_path):
    source = datafiles.write(tmp_path / "landing.json", datafiles.messy_bytes(seed=5))
    raw = str(tmp_path / "sid1.parquet")
    json_to_parquet.convert(source, raw, str(tmp_path / "q.jsonl"), "s3://l/landing.json", "sid1")
    summary = _partition_files(raw, tmp_path / "processed")
    folders = {date: PROCESSED + "shipping_date=%s/" % date for date in summary["partitions"]}
    assert len(summary["outputs"]) > 1

    for written in summary["outputs"]:  # each in a shipping_date=... folder, which adds no column
        request = catalog.describe_parquet(written, PROCESSED, ["shipping_date"], folders)

        assert request == catalog.describe_output(pq.read_schema(written), PROCESSED, ["shipping_date"], folders)
        assert [(c["Name"], c["Type"]) for c in request["columns"]] == [
            (f.name, f.glue_type) for f in schema.processed_fields() if f.name != schema.PARTITION_FIELD
        ] + [(schema.SOURCE_ID_FIELD, "string")]
        assert [p["Values"] for p in request["partitions"]] == [[date] for date in summary["partitions"]]


def test_describe_parquet_gives_every_type_describe_output_knows_the_same_glue_type(tmp_path):
    table = pa.table({
        "flag": pa.array([True]), "tiny": pa.array([1], pa.int8()), "small": pa.array([1], pa.int16()),
        "regular": pa.array([1], pa.int32()), "Big": pa.array([1], pa.int64()),
        "utiny": pa.array([1], pa.uint8()), "usmall": pa.array([1], pa.uint16()), "uregular": pa.array([1], pa.uint32()),
        "single": pa.array([1.5], pa.float32()), "double": pa.array([1.5]), "text": pa.array(["a"]),
        "large_text": pa.array(["a"], pa.large_string()), "coded": pa.array(["a"]).dictionary_encode(),
        "bytes": pa.array([b"a"]), "day": pa.array([datetime.date(2024, 2, 29)]),
        "at_ms": pa.array([1], pa.timestamp("ms")), "at_utc": pa.array([1], pa.timestamp("us", tz="UTC")),
        "at_ns": pa.array([1], pa.timestamp("ns")),
    })
    path = str(tmp_path / "types.parquet")
    pq.write_table(table, path)

    request = catalog.describe_parquet(path, PROCESSED)

    assert request == catalog.describe_output(pq.read_schema(path), PROCESSED)
    assert request["unknown_types"] == []
    assert [c["Type"] for c in request["columns"]] == [
        "boolean", "tinyint", "smallint", "int", "bigint", "smallint", "int", "bigint", "float", "double",
        "string", "string", "string", "binary", "date", "timestamp", "timestamp", "timestamp"]


def test_describe_parquet_leaves_types_without_a_glue_type_to_a_crawl(tmp_path):
    path = str(tmp_path / "odd.parquet")
    pq.write_table(pa.table({"id": pa.array([1]), "huge": pa.array([1], pa.uint64()),
                             "price": pa.array([1], pa.decimal128(10, 2)), "tags": pa.array([[1]])}), path)

    request = catalog.describe_parquet(path, PROCESSED)

    assert request["unknown_types"] == ["huge (UBIGINT)", "price (DECIMAL(10,2))", "tags (BIGINT[])"]
    from_arrow = catalog.describe_output(pq.read_schema(path), PROCESSED)
    assert [u.split()[0] for u in from_arrow["unknown_types"]] == ["huge", "price", "tags"]
    assert [c["Name"] for c in request["columns"]] == [c["Name"] for c in from_arrow["columns"]]


def _partition_files(raw, out_dir):
    """Hive-style partition files (``shipping_date=YYYY-MM-DD/...``) of a raw file's non-PII
    columns, as DuckDB's PARTITION_BY writes them: ``{"partitions", "outputs"}``."""
    import duckdb

    kept = ", ".join(f.name for f in schema.processed_fields()) + ", " + schema.SOURCE_ID_FIELD
    duckdb.sql("COPY (SELECT %s FROM read_parquet('%s')) TO '%s' (FORMAT parquet, PARTITION_BY (shipping_date))"
               % (kept, raw, out_dir))
    outputs = sorted(os.path.join(folder, name) for folder, _dirs, names in os.walk(str(out_dir)) for name in names)
    return {"outputs": outputs,
            "partitions": sorted({os.path.basename(os.path.dirname(path)).split("=", 1)[1] for path in outputs})}


# -- the decision -----------------------------------------------------------------------------


def test_a_missing_table_needs_a_crawl(glue):
    decision = catalog.decide(glue, DATABASE, "processed", request())

    assert decision["crawl"] is True and decision["crawler_running"] is False
    assert decision["reason"] == "table %s.processed does not exist yet" % DATABASE


def test_a_matching_table_gets_the_partitions_and_needs_no_crawl(glue):
    create_table(glue)

    first = catalog.decide(glue, DATABASE, "processed", request())
    again = catalog.decide(glue, DATABASE, "processed", request(("2024-01-16", "2024-01-17")))

    assert first["crawl"] is False and first["registered"] == 2
    assert again["crawl"] is False and again["registered"] == 1  # one of the two was there
    registered = partitions(glue)
    assert sorted(registered) == ["2024-01-15", "2024-01-16", "2024-01-17"]
    descriptor = registered["2024-01-17"]
    assert descriptor["Location"] == PROCESSED + "shipping_date=2024-01-17/"
    assert descriptor["Columns"] == COLUMNS
    assert descriptor["SerdeInfo"] == PARQUET_SD["SerdeInfo"]


def test_columns_the_files_lack_are_fine(glue):
    create_table(glue, columns=COLUMNS + [{"Name": "added_later", "Type": "string"}])

    assert catalog.decide(glue, DATABASE, "processed", request())["crawl"] is False


@pytest.mark.parametrize("change, reason", [
    (dict(columns=COLUMNS[:2]), "column destination_city is not in the table"),
    (dict(columns=[dict(COLUMNS[0], Type="int")] + COLUMNS[1:]), "column shipping_id is int in the table, bigint in the files"),
    (dict(keys=()), "the table is partitioned by nothing, the files by ['shipping_date']"),
    (dict(location=LAKE + "/elsewhere/"), "the table's location is s3://lake/elsewhere/"),
])
def test_a_table_that_differs_from_the_files_needs_a_crawl_and_gets_nothing(glue, change, reason):
    create_table(glue, **change)

    decision = catalog.decide(glue, DATABASE, "processed", request())

    assert decision["crawl"] is True
    assert reason in decision["reason"]
    if change.get("keys", True):
        assert partitions(glue) == {}


def test_a_crawl_needed_while_the_crawler_runs_says_so(glue):
    glue.create_crawler(Name="processed-crawler", Role="role", DatabaseName=DATABASE,
                        Targets={"S3Targets": [{"Path": PROCESSED}]})
    idle = catalog.decide(glue, DATABASE, "processed", request(), crawler="processed-crawler")
    glue.start_crawler(Name="processed-crawler")

    busy = catalog.decide(glue, DATABASE, "processed", request(), crawler="processed-crawler")

    assert idle["crawl"] is True and idle["crawler_running"] is False
    assert busy["crawl"] is True and busy["crawler_running"] is True
    assert "crawler processed-crawler is crawling now" in busy["reason"]


def test_catalog_arguments_go_together():
    with pytest.raises(jobio.JobError, match="catalog arguments go together"):
        catalog.enabled({"catalog_database": DATABASE})
    assert catalog.enabled({}) is False
    with pytest.raises(jobio.JobError, match="--catalog_only needs"):
        catalog.catalog_only({"catalog_only": "true"})


def _catalog_args(tmp_path, table):
    return ["--catalog_database", DATABASE, "--catalog_table", table,
            "--catalog_decision_uri", str(tmp_path / ("%s-catalog.json" % table))]


def test_jobs_decide_for_what_they_wrote_and_check_again_without_data(glue, tmp_path):
    source = datafiles.write(tmp_path / "landing.json", datafiles.messy_bytes(seed=3))
    raw = str(tmp_path / "raw" / "sid1.parquet")
    os.makedirs(os.path.dirname(raw))
    convert = ["--source_uri", source, "--target_uri", raw, "--quarantine_uri", str(tmp_path / "q.jsonl"),
               "--source_id", "sid1"]

    json_to_parquet.main(convert + _catalog_args(tmp_path, "raw"))

    raw_decision = json.loads((tmp_path / "raw-catalog.json").read_text())
    assert raw_decision["crawl"] is True and raw_decision["table"] == "raw"
    request_text = (tmp_path / ("raw-catalog" + catalog.REQUEST_SUFFIX)).read_text()
    raw_request = json.loads(request_text)
    assert [c["Name"] for c in raw_request["columns"]][:3] == ["shipping_id", "shipping_date", "customer_name"]
    assert {"Name": "shipping_date", "Type": "date"} in raw_request["columns"]
    assert raw_request["partition_keys"] == []

    # A crawl made the table meanwhile: checking again reads no data, only the stored request.
    glue.create_table(DatabaseName=DATABASE, TableInput={
        "Name": "raw", "Parameters": {"classification": "parquet"},
        "StorageDescriptor": dict(PARQUET_SD, Columns=raw_request["columns"], Location=raw_request["location"])})
    os.remove(raw)
    decision = json_to_parquet.main(convert + _catalog_args(tmp_path, "raw") + ["--catalog_only", "true"])

    assert decision["crawl"] is False
    assert json.loads((tmp_path / "raw-catalog.json").read_text()) == decision
    assert (tmp_path / ("raw-catalog" + catalog.REQUEST_SUFFIX)).read_text() == request_text


def test_catalog_only_needs_the_request_of_an_earlier_run(glue, tmp_path):
    with pytest.raises(jobio.JobError, match="run the job without --catalog_only first"):
        json_to_parquet.main(["--source_uri", "r.json", "--target_uri", str(tmp_path / "r.parquet"),
                              "--quarantine_uri", str(tmp_path / "q.jsonl")]
                             + _catalog_args(tmp_path, "raw") + ["--catalog_only", "true"])
