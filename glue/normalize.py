"""Glue job normalize: the raw Parquet of one landing object -> the processed zone.

    python glue/normalize.py --source_uri s3://lake/raw/<sid>.parquet --target_uri s3://lake/processed/ \\
        [--summary_uri s3://lake/manifests/<sid>.json] [--source_id <sid>] [--memory_limit 800MB] [--threads N]

Every ``--*_uri`` may also be a local path. Other arguments (Glue's own) are ignored.

Removes exact duplicates (valid records identical on every schema field, PII included), drops the
PII fields and writes the rest, ``source_id`` included, partitioned by shipping date:
``<target>/shipping_date=YYYY-MM-DD/<source_id>.parquet`` (the partition column lives in the folder
name, not in the files). Outputs an earlier run of the same source wrote and this run does not
are deleted; the earlier run's summary says which they were (without one, the target is listed).

How: one DuckDB ``COPY ... TO ... (FORMAT parquet, PARTITION_BY (shipping_date))``. Copies of a
record share its ``shipping_id``, so only the rows of ids that occur more than once (found by
reading that one column) go through an exact DISTINCT; a file without repeated ids is copied
straight. ``--memory_limit`` bounds the whole job (DuckDB spills to disk beyond its share).

The summary ``{"source", "source_id", "raw", "rows": {"read", "valid", "quarantined",
"duplicates"}, "partitions", "outputs"}`` goes to ``--summary_uri`` and, as one JSON line, to
stdout. ``read`` and ``quarantined`` come from the counts json_to_parquet stored in the raw
file; ``valid`` counts the rows kept, so ``read = valid + quarantined + duplicates``.
"""
import json
import logging
import os
import re
import shutil
import sys

try:
    from chalicelib import redact, schema
except ImportError:  # run from a checkout: chalicelib lives next to this script's folder
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from chalicelib import redact, schema

import duckdb

import jobio


# Parquet metadata is read with DuckDB: pyarrow is needed only to merge split partition files.
pa = jobio.ImportedOnUse("pyarrow")
pq = jobio.ImportedOnUse("pyarrow.parquet")

LOG = logging.getLogger("shipping_etl.normalize")

COUNTS_METADATA_KEY = jobio.COUNTS_METADATA_KEY
# The whole job's peak memory: a 1 GB Glue Python shell job with room to spare. DuckDB gets it
# less jobio.PROCESS_BASELINE_MB and spills to disk beyond that.
DEFAULT_MEMORY_LIMIT = "800MB"
# Copies of a record share it: de-duplication looks only at rows whose id occurs more than once.
_ID_FIELD = "shipping_id"
PARTITION_FOLDER = re.compile(r"^%s=(\d{4}-\d{2}-\d{2})$" % schema.PARTITION_FIELD)


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


def output_name(source_id):
    """The file name of every partition file of one source."""
    return "%s.parquet" % source_id


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


def normalize(raw_path, out_dir, source_id, memory_limit=DEFAULT_MEMORY_LIMIT, threads=None, temp_dir=None):
    """De-duplicates and drops PII from the raw Parquet file at ``raw_path``, writing
    ``out_dir/shipping_date=YYYY-MM-DD/<source_id>.parquet`` (local paths). ``memory_limit`` is
    the job's (see jobio.duckdb_memory_limit); DuckDB spills to ``temp_dir`` beyond its share.

    Returns ``{"raw_rows": rows in the raw file, "partitions": {"YYYY-MM-DD": rows kept}}``.
    """
    kept = [f.name for f in schema.processed_fields() if f.name != schema.PARTITION_FIELD]
    kept.append(schema.SOURCE_ID_FIELD)
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
        repeats, dates = connection.execute(
            "SELECT (SELECT count(*) FROM repeated), count(DISTINCT %s) FROM %s"
            % (_identifier(schema.PARTITION_FIELD), raw)).fetchone()
        columns = kept + [schema.PARTITION_FIELD]
        if repeats:
            rows = dedup_sql(raw, columns, "repeated")
        else:
            rows = "SELECT %s FROM %s" % (", ".join(_identifier(name) for name in columns), raw)
        # One open file per partition: more, and DuckDB would start a second file for a date.
        connection.execute("SET partitioned_write_max_open_files = %d" % max(100, dates + 1))
        staging = os.path.join(out_dir, ".staging")
        os.makedirs(out_dir, exist_ok=True)
        connection.execute(
            "COPY ({rows}) TO {staging} (FORMAT parquet, PARTITION_BY ({partition}), "
            "FILENAME_PATTERN 'part_{{i}}')".format(
                rows=rows, partition=_identifier(schema.PARTITION_FIELD), staging=jobio.sql_literal(staging)))
        targets = {}
        for folder in sorted(os.listdir(staging)) if os.path.isdir(staging) else ():
            match = PARTITION_FOLDER.match(folder)
            if not match:
                raise RuntimeError("unexpected output folder %s in %s" % (folder, staging))
            parts = sorted(os.path.join(staging, folder, name) for name in os.listdir(os.path.join(staging, folder)))
            target = os.path.join(out_dir, folder, output_name(source_id))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if len(parts) == 1:
                os.replace(parts[0], target)
            else:
                _merge(parts, target)
            targets[match.group(1)] = target
        counts = _row_counts(connection, list(targets.values()))
    finally:
        connection.close()
    shutil.rmtree(staging, ignore_errors=True)
    return {"raw_rows": raw_rows, "partitions": {date: counts[target] for date, target in targets.items()}}


def _merge(parts, target):
    """Writes the rows of several Parquet files with one schema into one file, part by part."""
    with pq.ParquetWriter(target, pq.read_schema(parts[0]), compression="snappy") as writer:
        for part in parts:
            # ParquetFile reads the file alone: read_table would add the shipping_date=... folder
            # as a column (pyarrow 21, the version Glue installs, does).
            writer.write_table(pq.ParquetFile(part).read())


def summarize(raw_uri, source_id, counts, result, outputs):
    """The run summary (see the module docstring). ``counts``: the raw file's counts or None."""
    kept = sum(result["partitions"].values())
    raw_rows = result["raw_rows"]
    if counts is None:
        LOG.warning("%s holds no %s metadata: counting its rows as read, none as quarantined",
                    raw_uri, COUNTS_METADATA_KEY)
        counts = {"source": raw_uri, "read": raw_rows, "quarantined": 0}
    return {
        "source": counts.get("source") or raw_uri,
        "source_id": source_id,
        "raw": raw_uri,
        "rows": {"read": counts["read"], "valid": kept, "quarantined": counts["quarantined"],
                 "duplicates": raw_rows - kept},
        "partitions": sorted(result["partitions"]),
        "outputs": outputs,
    }


def _own_output(uri, target, source_id):
    """Whether ``uri`` is a partition file of ``source_id`` directly below ``target``."""
    prefix = jobio.join(target, "")
    if not uri.startswith(prefix):
        return False
    folder, _, name = uri[len(prefix):].replace(os.sep, "/").partition("/")
    return name == output_name(source_id) and bool(PARTITION_FOLDER.match(folder))


def previous_outputs(storage, target, source_id, summary_uri):
    """What an earlier run of this source wrote: its summary's outputs, else what a listing of
    ``target`` finds. Only files of this source below ``target`` count."""
    text = storage.read_text(summary_uri) if summary_uri else None
    if text:
        try:
            found = json.loads(text).get("outputs") or []
        except ValueError:
            LOG.warning("ignoring %s: not a JSON summary; listing %s instead", summary_uri, target)
            found = storage.list_files(target)
    else:
        found = storage.list_files(target)
    return sorted(uri for uri in found if _own_output(uri, target, source_id))


ARGUMENTS = ("source_uri", "target_uri")
OPTIONS = {"summary_uri": None, "source_id": None, "memory_limit": DEFAULT_MEMORY_LIMIT, "threads": None}


def main(argv, storage=None):
    """Runs the job on ``argv`` (Glue-style arguments). Returns the summary; raises JobError."""
    # The catalog step (glue/catalog.py) runs only when asked.
    args, catalog = jobio.parse_job_args(argv, ARGUMENTS, OPTIONS)
    threads = jobio.positive_int(args, "threads")
    storage = storage or jobio.Storage()
    if catalog is not None and catalog.catalog_only(args):
        return catalog.recheck(args, storage)
    source, target, summary_uri = args["source_uri"], args["target_uri"], args["summary_uri"]
    source_id = args["source_id"] or jobio.stem(source)
    with jobio.WorkDir() as work:
        LOG.info("reading %s", source)
        local_raw = storage.fetch(source, work)
        try:
            counts = read_counts(local_raw)
        except (pa.ArrowInvalid, OSError) as exc:
            raise jobio.JobError("%s is not a readable Parquet file (%s): pass the raw file "
                                 "json_to_parquet wrote" % (source, exc))
        local_out = os.path.join(work, "processed")
        result = normalize(local_raw, local_out, source_id, memory_limit=args["memory_limit"],
                           threads=threads, temp_dir=work)
        earlier = previous_outputs(storage, target, source_id, summary_uri)
        outputs = []
        for date in sorted(result["partitions"]):
            folder = "%s=%s" % (schema.PARTITION_FIELD, date)
            uri = jobio.join(target, "%s/%s" % (folder, output_name(source_id)))
            storage.put(os.path.join(local_out, folder, output_name(source_id)), uri)
            outputs.append(uri)
        for stale in sorted(set(earlier) - set(outputs)):
            LOG.info("removing %s (written by an earlier run, not by this one)", stale)
            storage.delete(stale)
        summary = summarize(source, source_id, counts, result, outputs)
        rows = summary["rows"]
        LOG.info("%d rows read: %d kept in %d partitions, %d duplicates, %d quarantined earlier",
                 rows["read"], rows["valid"], len(outputs), rows["duplicates"], rows["quarantined"])
        if summary_uri:
            storage.put_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", summary_uri, work)
            LOG.info("wrote %s", summary_uri)
        if catalog is not None:
            folders = {date: jobio.join(target, "%s=%s/" % (schema.PARTITION_FIELD, date))
                       for date in result["partitions"]}
            written = os.path.join(local_out, "%s=%s" % (schema.PARTITION_FIELD, min(result["partitions"])),
                                   output_name(source_id))
            request = catalog.describe_parquet(written, jobio.join(target, ""), [schema.PARTITION_FIELD], folders)
            catalog.settle(args, storage, work, request)
    jobio.print_result(summary)
    return summary


if __name__ == "__main__":
    sys.exit(jobio.run(main))
