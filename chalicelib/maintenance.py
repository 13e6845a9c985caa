"""The scheduled maintenance of the processed Iceberg table: compaction, then snapshot expiry.

The ``maintain_lake`` Lambda (app.py, every ``MAINTENANCE_HOURS``) runs
``chalicelib.lake_table.maintenance_statements`` through Athena in the stage's workgroup, one
after the other, each awaited: ``OPTIMIZE ... REWRITE DATA USING BIN_PACK`` then ``VACUUM``.
docs/LAKE.md explains what each does and costs. Stdlib + boto3 (the Lambda's packages).
"""
import time

from chalicelib.lake_table import maintenance_statements

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
# The Lambda runs up to 15 minutes; a day's compaction takes well under one.
DEFAULT_TIMEOUT_SECONDS = 840.0


class MaintenanceFailed(RuntimeError):
    """A maintenance statement ended FAILED or CANCELLED, or did not end in time."""


def run(athena, resources, sleep=time.sleep, timeout=DEFAULT_TIMEOUT_SECONDS, clock=time.monotonic):
    """Runs the statements in order on ``resources``' processed table through ``athena``.

    Returns ``[{"statement", "query_execution_id", "state", "scanned_bytes", "seconds"}]``.
    Raises MaintenanceFailed naming the statement and Athena's reason.
    """
    deadline = clock() + timeout
    results = []
    for sql in maintenance_statements(resources.glue_database, resources.processed_table):
        started = clock()
        query_id = athena.start_query_execution(
            QueryString=sql, WorkGroup=resources.athena_workgroup,
            QueryExecutionContext={"Database": resources.glue_database})["QueryExecutionId"]
        delay = 0.5
        while True:
            execution = athena.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]
            state = execution["Status"]["State"]
            if state in TERMINAL:
                break
            if clock() > deadline:
                raise MaintenanceFailed("%s (query %s) still %s when the maintenance run had to end: "
                                        "it goes on in Athena; the next run continues" % (sql, query_id, state))
            sleep(delay)
            delay = min(delay * 2, 10.0)
        if state != "SUCCEEDED":
            raise MaintenanceFailed("%s (query %s) %s: %s" % (
                sql, query_id, state, execution["Status"].get("StateChangeReason", "no reason given")))
        results.append({"statement": sql, "query_execution_id": query_id, "state": state,
                        "scanned_bytes": (execution.get("Statistics") or {}).get("DataScannedInBytes"),
                        "seconds": round(clock() - started, 3)})
    return results
