"""``local run --maintenance``: the lake maintenance run on the local stack, and what it changed.

Runs the same statements the scheduled maintenance sends to Athena on AWS
(chalicelib.lake_table.maintenance_statements: OPTIMIZE ... REWRITE DATA USING BIN_PACK, then
VACUUM) through the stack's Athena, and reports the processed table's layout before and after:
data files per partition, snapshots, data files and bytes.
"""
import logging
import time

from chalicelib.lake_table import maintenance_statements
from local import iceberg_tables

log = logging.getLogger("local")


def layout(stack):
    """``{"data_files", "bytes", "snapshots", "files_per_partition": {partition: n}}`` of the
    stack's processed table now."""
    resources = stack.resources
    table = iceberg_tables.catalog(stack.client("glue"), stack.client("s3")).load_table(
        (resources.glue_database, resources.processed_table))
    per_partition, files, size = {}, 0, 0
    if table.current_snapshot() is not None:
        for task in table.scan().plan_files():
            partition = "/".join(str(value) for value in task.file.partition)
            per_partition[partition] = per_partition.get(partition, 0) + 1
            files += 1
            size += task.file.file_size_in_bytes
    return {"data_files": files, "bytes": size, "snapshots": len(table.metadata.snapshots),
            "files_per_partition": dict(sorted(per_partition.items()))}


def _run_query(athena, sql, database, workgroup, timeout=600.0):
    qid = athena.start_query_execution(QueryString=sql, QueryExecutionContext={"Database": database},
                                       WorkGroup=workgroup)["QueryExecutionId"]
    deadline = time.monotonic() + timeout
    while True:
        execution = athena.get_query_execution(QueryExecutionId=qid)["QueryExecution"]
        state = execution["Status"]["State"]
        if state in ("SUCCEEDED", "FAILED", "CANCELLED"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError("%s still %s after %g s" % (sql, state, timeout))
        time.sleep(0.2)
    if state != "SUCCEEDED":
        raise RuntimeError("%s %s: %s" % (sql, state, execution["Status"].get("StateChangeReason")))
    return execution["Statistics"].get("DataScannedInBytes", 0)


def run_maintenance(stack):
    """Runs the maintenance statements on the stack's processed table through Athena. Returns
    ``{"statements", "seconds", "scanned_bytes", "before", "after"}`` (layouts)."""
    resources = stack.resources
    before = layout(stack)
    started = time.monotonic()
    scanned = 0
    statements = maintenance_statements(resources.glue_database, resources.processed_table)
    for sql in statements:
        log.info("maintenance: %s", sql)
        scanned += _run_query(stack.client("athena"), sql, resources.glue_database, resources.athena_workgroup)
    after = layout(stack)
    log.info("maintenance: %d data files -> %d, %d snapshots -> %d", before["data_files"], after["data_files"],
             before["snapshots"], after["snapshots"])
    return {"statements": list(statements), "seconds": round(time.monotonic() - started, 3),
            "scanned_bytes": scanned, "before": before, "after": after}
