"""The local Athena engine on the processed Iceberg table: scan planning prunes the per-file
query to that source's data files (and reports their bytes), and OPTIMIZE / VACUUM compact the
table and bound its snapshots without changing a row."""
import os
import sys
import time

import pytest

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLUE_DIR = os.path.join(PROJECT_DIR, "glue")
if GLUE_DIR not in sys.path:
    sys.path.insert(0, GLUE_DIR)

import lake_commit  # noqa: E402

from chalicelib import lake_table  # noqa: E402
from chalicelib.queries import parse_totals, totals_sql  # noqa: E402

DATABASE = "lake_db"


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    import datetime

    import pyarrow as pa

    from deploy import lake_table as deploy_lake_table
    from local import embedded
    from local.athena_engine import AthenaEngine

    work = tmp_path_factory.mktemp("stack")
    stack = embedded.start(work_dir=str(work))
    try:
        stack.reset()  # moto keeps resources per process, past a stopped server
        stack.client("s3").create_bucket(Bucket="lake")
        stack.client("glue").create_database(DatabaseInput={"Name": DATABASE})
        catalog = lake_commit.load_catalog("us-east-1", stack.endpoint_url)
        schema = deploy_lake_table.iceberg_schema()
        catalog.create_table((DATABASE, "processed"), schema=schema, location="s3://lake/processed",
                             partition_spec=deploy_lake_table.partition_spec(schema),
                             properties=dict(lake_table.table_properties(60), **{"vacuum_max_snapshot_age_seconds": "1"}))
        sources = {}
        for index in range(6):
            rows = 40
            start = datetime.date(2024, 1, 1)
            table = pa.table({
                "shipping_id": pa.array(range(rows), pa.int64()),
                "shipping_date": pa.array([start + datetime.timedelta(days=(i * 11) % 200) for i in range(rows)],
                                          pa.date32()),
                "destination_city": pa.array(["city%d" % (i % 3) for i in range(rows)]),
                "shipping_cost": pa.array([float(index * 100 + i) for i in range(rows)]),
                "shipping_distance": pa.array([2.0] * rows), "quantity": pa.array([1.5] * rows),
                "product_id": pa.array([None] * rows, pa.int64()),
                "source_id": pa.array(["sid%d" % index] * rows),
                "source_key": pa.array(["s3://landing/incoming/f%d.json" % index] * rows),
                "source_version_id": pa.array([None] * rows, pa.string())})
            lake_commit.commit(catalog, DATABASE, "processed", table, "s3://landing/incoming/f%d.json" % index)
            sources["sid%d" % index] = table
        engine = AthenaEngine(stack.client("glue"), stack.client("s3"), str(work / "athena"))
        yield {"engine": engine, "catalog": catalog, "sources": sources}
    finally:
        stack.stop()


def _query(lake, sql):
    return lake["engine"].execute(sql, DATABASE, None)


def _totals(lake, source_id=None):
    result = _query(lake, totals_sql(DATABASE, "processed", source_id))
    return parse_totals(result.rows[0]), result.data_scanned_bytes


def _files(lake):
    return [t.file for t in lake["catalog"].load_table((DATABASE, "processed")).scan().plan_files()]


def test_per_file_query_reads_only_that_sources_files_and_reports_their_bytes(lake):
    files = _files(lake)
    own = [f for f in files if f.lower_bounds]  # every file holds one source here
    totals, scanned = _totals(lake, "sid3")

    assert totals["shipments"] == 40
    assert totals["shipping_cost"] == sum(300.0 + i for i in range(40))
    whole_totals, whole = _totals(lake)
    assert whole_totals["shipments"] == 240
    assert 0 < scanned and scanned * 5 < whole == sum(f.file_size_in_bytes for f in own)


def test_optimize_compacts_each_partition_and_vacuum_bounds_snapshots_rows_unchanged(lake):
    before_totals, _ = _totals(lake)
    before_files = _files(lake)
    table = lake["catalog"].load_table((DATABASE, "processed"))
    snapshots_before = len(table.metadata.snapshots)
    partitions = {tuple(f.partition) for f in before_files}
    assert len(before_files) == 6 * len(partitions)

    _query(lake, "OPTIMIZE %s.processed REWRITE DATA USING BIN_PACK" % DATABASE)
    after_files = _files(lake)
    assert len(after_files) == len(partitions)  # one file per partition
    assert _totals(lake) [0] == before_totals
    assert _totals(lake, "sid3")[0]["shipments"] == 40

    time.sleep(1.5)  # past the table's 1 s snapshot retention
    _query(lake, 'VACUUM "%s"."processed"' % DATABASE)
    table = lake["catalog"].load_table((DATABASE, "processed"))
    assert snapshots_before + 1 > len(table.metadata.snapshots) == 1
    assert _totals(lake)[0] == before_totals
    s3_keys = [o["Key"] for o in lake["engine"].s3.list_objects_v2(Bucket="lake", Prefix="processed/data/")["Contents"]]
    assert len(s3_keys) == len(partitions)  # the replaced files went


def test_other_statements_on_an_iceberg_table_are_refused_clearly(lake):
    from local.iceberg_tables import IcebergError

    with pytest.raises(IcebergError, match="BIN_PACK"):
        _query(lake, "OPTIMIZE %s.processed REWRITE DATA USING SORT" % DATABASE)
