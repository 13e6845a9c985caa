"""Glue job normalize: the raw Parquet of one landing object -> one commit to the processed
Iceberg table.

    python glue/normalize.py --source_uri s3://lake/raw/<sid>.parquet --database DB --table processed \
        --source_key s3://landing/incoming/x.json [--source_version_id V] [--source_id <sid>] \
        [--summary_uri s3://lake/manifests/<sid>.json] [--region R] [--max_commit_attempts N] \
        [--memory_limit 800MB] [--threads N]

``--source_uri`` and ``--summary_uri`` may also be local paths. Other arguments (Glue's own) are
ignored.

Removes exact duplicates (valid records identical on every schema field, PII included), drops the
PII fields, tags every row with ``source_id``, ``source_key`` (the landing object, without
version) and ``source_version_id``, and commits the rows to the Iceberg table in one transaction
that also deletes the rows an earlier version (or an earlier run) of the same key committed
(glue/lake_commit.py: newest version wins, lost races retried). The table's hidden partitioning
(month of shipping_date) decides the data files; nothing is registered and nothing is crawled.

How: DuckDB reads the raw file; copies of a record share its ``shipping_id``, so only the rows of
ids that occur more than once (found by reading that one column) go through an exact DISTINCT.
The rows reach the commit as a stream of Arrow batches in month order, and each data file is
written as its rows come in, so the job holds a bounded number of rows whatever the file's size.
``--memory_limit`` bounds DuckDB (it spills to disk beyond its share).

The summary ``{"source", "source_id", "source_key", "source_version_id", "raw", "rows": {"read",
"valid", "quarantined", "duplicates"}, "partitions" (months), "superseded", "commit"}`` goes to
``--summary_uri`` and, as one JSON line, to stdout. ``read`` and ``quarantined`` come from the
counts json_to_parquet stored in the raw file; ``valid`` counts the rows kept, so
``read = valid + quarantined + duplicates``. ``superseded`` is true when the table already held a
newer version of the key: nothing was committed.
"""
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import jobentry
import jobio
import lake_commit
from chalicelib import lake_table, redact, schema

import duckdb

pa = jobio.ImportedOnUse("pyarrow")

LOG = logging.getLogger("shipping_etl.normalize")

COUNTS_METADATA_KEY = jobio.COUNTS_METADATA_KEY
# The whole job's peak memory: a 1 GB Glue Python shell job with room to spare. DuckDB gets it
# less jobio.PROCESS_BASELINE_MB and spills to disk beyond that.
DEFAULT_MEMORY_LIMIT = "800MB"
# Copies of a record share it: de-duplication looks only at rows whose id occurs more than once.
_ID_FIELD = "shipping_id"


def _identifier(name):
    return '"%s"' % name.replace('"', '""')


def read_counts(path):
    """The counts ``{"source", "read", "valid", "quarantined"}`` json_to_parquet stored in a raw
    Parquet file, or None when it holds none. Raises OSError when the file is no Parquet file."""
    connection = duckdb.connect()
    try:
        found = connection.execute("SELECT value FROM parquet_kv_metadata(%s) WHERE key = %s" % (
            jobio.sql_literal(path), "encode(%s)" % jobio.sql_literal(COUNTS_METADATA_KEY))).fetchall()
    except duckdb.Error as exc:
        raise OSError(redact.error_summary(exc))
    finally:
        connection.close()
    return json.loads(found[0][0]) if found else None


def _row_counts(connection, paths):
    """``{path: rows}`` of Parquet files, from their footers."""
    if not paths:
        return {}
    listed = "[%s]" % ", ".join(jobio.sql_literal(path) for path in paths)
    return dict(connection.execute("SELECT file_name, num_rows FROM parquet_file_metadata(%s)" % listed).fetchall())


def dedup_sql(raw, columns, repeated):
    """A query over the relation ``raw`` returning ``columns`` of its rows with exact duplicates
    (rows equal on every schema field and ``source_id``) removed. ``repeated`` is a relation of
    the ``shipping_id`` values that occur more than once in ``raw``.

    Copies of a row share its ``shipping_id``: a row whose id occurs once is unique, and only
    the rows of the repeated ids go through an exact DISTINCT.
    """
    identity = ", ".join(_identifier(name) for name in schema.FIELD_NAMES + (schema.SOURCE_ID_FIELD,))
    selected = ", ".join(_identifier(name) for name in columns)
    return """
SELECT {selected} FROM {raw} WHERE {id} NOT IN (SELECT {id} FROM {repeated})
UNION ALL
SELECT {selected} FROM (SELECT DISTINCT {identity} FROM {raw} WHERE {id} IN (SELECT {id} FROM {repeated}))
""".format(selected=selected, raw=raw, id=_identifier(_ID_FIELD), repeated=repeated, identity=identity)


# Rows per Arrow record batch read from DuckDB while the commit writes the data files.
BATCH_ROWS = 122880


class ProcessedRows:
    """The processed rows of one raw file (see open_rows): DuckDB's query over it, read as a
    stream of Arrow record batches in month order of ``shipping_date`` each time ``batches()``
    is called (lake_commit.commit writes the data files as they come, so the job never holds
    every row: 4M rows held whole took 316 MB). ``raw_rows``: the rows of the raw file."""

    def __init__(self, connection, query, raw_rows):
        self.connection, self.query, self.raw_rows = connection, query, raw_rows

    def batches(self):
        return self.connection.execute(self.query).fetch_record_batch(BATCH_ROWS)

    def count_and_months(self):
        """``(rows, [YYYY-MM...])`` of the query, without fetching its rows."""
        count, months = self.connection.execute(
            "SELECT count(*), list(DISTINCT strftime(%s, '%%Y-%%m')) FROM (%s)"
            % (_identifier(schema.PARTITION_FIELD), self.query)).fetchone()
        return count, sorted(month for month in months or () if month is not None)

    def close(self):
        self.connection.close()


def open_rows(raw_path, source_id, source_key, source_version_id=None, memory_limit=DEFAULT_MEMORY_LIMIT,
              threads=None, temp_dir=None):
    """The raw Parquet file at ``raw_path`` (local), de-duplicated and without its PII, as
    ProcessedRows: in the processed table's column order (chalicelib.lake_table.COLUMNS), every
    row tagged with ``source_id``, ``source_key`` and ``source_version_id``. ``memory_limit`` is
    the job's (see jobio.duckdb_memory_limit); DuckDB spills to ``temp_dir`` beyond its share.
    The caller closes it.
    """
    record_columns = [f.name for f in schema.processed_fields()]
    connection = jobio.duckdb_connection(duckdb, jobio.duckdb_memory_limit(memory_limit),
                                          preserve_insertion_order=False)
    try:
        if threads:
            connection.execute("SET threads = %d" % int(threads))
        if temp_dir:
            connection.execute("SET temp_directory = %s" % jobio.sql_literal(temp_dir))
        raw = "read_parquet(%s)" % jobio.sql_literal(raw_path)
        raw_rows = _row_counts(connection, [raw_path])[raw_path]
        # Reading the id column alone is cheap; most files repeat no id and skip de-duplication.
        connection.execute("CREATE TEMP TABLE repeated AS SELECT {id} FROM {raw} GROUP BY {id} HAVING count(*) > 1"
                           .format(id=_identifier(_ID_FIELD), raw=raw))
        repeats = connection.execute("SELECT count(*) FROM repeated").fetchone()[0]
        columns = record_columns + [schema.SOURCE_ID_FIELD]
        if repeats:
            rows = dedup_sql(raw, columns, "repeated")
        else:
            rows = "SELECT %s FROM %s" % (", ".join(_identifier(name) for name in columns), raw)
        # The source id the caller names wins over the raw file's: it names this landing version.
        tags = {schema.SOURCE_ID_FIELD: source_id, lake_table.SOURCE_KEY_FIELD: source_key,
                lake_table.SOURCE_VERSION_FIELD: source_version_id}
        selected = []
        for name in lake_table.COLUMN_NAMES:
            if name in tags:
                value = tags[name]
                selected.append("%s AS %s" % ("CAST(NULL AS VARCHAR)" if value is None else jobio.sql_literal(value),
                                              _identifier(name)))
            else:
                selected.append(_identifier(name))
        query = "SELECT %s FROM (%s)" % (", ".join(selected), rows)
        month = "date_trunc('month', %s)" % _identifier(schema.PARTITION_FIELD)
        # Rows of several months come in month order (nulls last), sorted by DuckDB on all its
        # threads: the commit cuts them into per-month data files as they come, with no sorted
        # copy in pyarrow (a 730-date file of 1M rows: 0.08 s here against 0.35 s for pyarrow's
        # sort and take). A file of one month (most files) is not sorted at all: on 4M such rows
        # the sort cost 1.1 s and 480 MB.
        if connection.execute("SELECT count(DISTINCT %s) > 1 FROM %s" % (month, raw)).fetchone()[0]:
            query += " ORDER BY %s NULLS LAST" % month
    except BaseException:
        connection.close()
        raise
    return ProcessedRows(connection, query, raw_rows)


def transform(raw_path, source_id, source_key, source_version_id=None, memory_limit=DEFAULT_MEMORY_LIMIT,
              threads=None, temp_dir=None):
    """open_rows' rows read whole: ``(rows, raw_rows)``, ``rows`` a pyarrow Table."""
    rows = open_rows(raw_path, source_id, source_key, source_version_id, memory_limit, threads, temp_dir)
    try:
        return rows.batches().read_all(), rows.raw_rows
    finally:
        rows.close()


def summarize(raw_uri, source_id, counts, raw_rows, kept_rows, months, commit=None):
    """The run summary (see the module docstring). ``counts``: the raw file's counts or None."""
    if counts is None:
        LOG.warning("%s holds no %s metadata: counting its rows as read, none as quarantined",
                    raw_uri, COUNTS_METADATA_KEY)
        counts = {"source": raw_uri, "read": raw_rows, "quarantined": 0}
    summary = {
        "source": counts.get("source") or raw_uri,
        "source_id": source_id,
        "raw": raw_uri,
        "rows": {"read": counts["read"], "valid": kept_rows, "quarantined": counts["quarantined"],
                 "duplicates": raw_rows - kept_rows},
        "partitions": months,
    }
    if commit is not None:
        summary.update(superseded=commit["superseded"], commit=commit)
    return summary


ARGUMENTS = ("source_uri", "database", "table")
OPTIONS = {"summary_uri": None, "source_id": None, "source_key": None, "source_version_id": None,
           "region": None, "max_commit_attempts": str(lake_commit.DEFAULT_MAX_ATTEMPTS),
           "memory_limit": DEFAULT_MEMORY_LIMIT, "threads": None}


def main(argv, storage=None, catalog=None):
    """Runs the job on ``argv`` (Glue-style arguments). Returns the summary; raises JobError.
    ``catalog``: a pyiceberg catalog to use instead of the account's Glue catalog."""
    job = jobentry.start(argv, ARGUMENTS, OPTIONS, storage)
    args, threads, storage = job.args, job.threads, job.storage
    max_attempts = jobio.positive_int(args, "max_commit_attempts")
    source, summary_uri = args["source_uri"], args["summary_uri"]
    source_id = args["source_id"] or jobio.stem(source)
    version_id = args["source_version_id"] or None
    with jobio.WorkDir() as work, ThreadPoolExecutor(max_workers=1) as helper:
        # pyiceberg's import and the catalog's boto3 clients cost about half a second of Python:
        # made on a helper thread while DuckDB, which releases the GIL, reads the raw file.
        catalog_ready = helper.submit(lake_commit.load_catalog, args["region"]) if catalog is None else None
        LOG.info("reading %s", source)
        local_raw = storage.fetch(source, work)
        try:
            counts = read_counts(local_raw)
        except (pa.ArrowInvalid, OSError) as exc:
            raise jobio.JobError("%s is not a readable Parquet file (%s): pass the raw file "
                                 "json_to_parquet wrote" % (source, exc))
        # The landing object: named by the state machine; else what json_to_parquet recorded.
        source_key = args["source_key"] or (counts or {}).get("source")
        if not source_key:
            raise jobio.JobError("--source_key is missing and %s records no source: pass the landing "
                                 "object as --source_key s3://bucket/key" % source)
        rows = open_rows(local_raw, source_id, source_key, version_id,
                         memory_limit=args["memory_limit"], threads=threads, temp_dir=work)
        try:
            catalog = catalog or catalog_ready.result()
            result = lake_commit.commit(
                catalog, args["database"], args["table"], rows, source_key, version_id,
                s3=storage.s3 if version_id else None, max_attempts=max_attempts,
                snapshot_properties={"source-id": source_id})
            kept, months = ((result["rows"], result["months"]) if not result["superseded"]
                            else rows.count_and_months())
        finally:
            rows.close()
        summary = summarize(source, source_id, counts, rows.raw_rows, kept, months, result)
        summary["source_key"] = source_key
        summary["source_version_id"] = version_id
        row_counts = summary["rows"]
        if result["superseded"]:
            LOG.info("superseded: %s.%s already holds version %s of %s; nothing committed",
                     args["database"], args["table"], result["held_version_id"], source_key)
        else:
            LOG.info("%d rows read: %d committed to %s.%s in %d data file(s) (snapshot %s, attempt %d%s; "
                     "%.2f s, %.2f s of it writing the data files), %d duplicates, %d quarantined earlier",
                     row_counts["read"], row_counts["valid"], args["database"], args["table"],
                     result["data_files"], result["snapshot_id"], result["attempts"],
                     ", replacing the key's earlier rows" if result["replaced"] else "",
                     result["seconds"], result["write_seconds"], row_counts["duplicates"], row_counts["quarantined"])
        if summary_uri:
            storage.put_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", summary_uri, work)
            LOG.info("wrote %s", summary_uri)
    jobio.print_result(summary)
    return summary


if __name__ == "__main__":
    jobentry.main(main)
