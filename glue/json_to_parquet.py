"""Glue job json-to-parquet: one NDJSON landing object -> typed Parquet (raw zone) + quarantine.

    python glue/json_to_parquet.py --source_uri s3://landing/incoming/x.json \\
        --target_uri s3://lake/raw/<sid>.parquet --quarantine_uri s3://lake/quarantine/<sid>.jsonl \\
        [--source_id <sid>] [--memory_limit 350MB] [--threads N] [--prover auto|c|duckdb]

Every ``--*_uri`` may also be a local path. Other arguments (Glue's own) are ignored.

Each non-blank line is checked against the published rules (``chalicelib.schema``). Valid lines
become rows of the raw Parquet file (schema fields, typed, plus ``source_id``); every other line
goes to the quarantine file as ``{"source", "line", "reason", "record"}`` with the line verbatim
(a line longer than ``schema.MAX_LINE_BYTES`` keeps its first bytes, and its ``length``). The
counts ``{"source", "read", "valid", "quarantined"}`` are stored in the Parquet key-value
metadata under ``shipping_etl.counts`` and printed as one JSON line on stdout. A file without a
single valid line fails the job (the quarantine file is still written).

How: the package ``datapath`` (reader -> prover -> judge -> writer, see datapath.pipeline).
``--prover`` chooses who proves lines valid: the C module shipping_ndjson (glue/native, ``c``),
DuckDB (``duckdb``), or the C module when it is installed (``auto``, the default). Both give the
same result. ``--memory_limit`` bounds the whole job; DuckDB gets it less what the process needs
besides (jobio.duckdb_memory_limit).
"""
import logging
import os

import jobentry
import jobio
from datapath import pipeline
from datapath.pipeline import DEFAULT_MEMORY_LIMIT, convert  # noqa: F401  (the job's transform)

LOG = logging.getLogger("shipping_etl.json_to_parquet")

ARGUMENTS = ("source_uri", "target_uri", "quarantine_uri")
OPTIONS = {"source_id": None, "source_version_id": None, "memory_limit": DEFAULT_MEMORY_LIMIT, "threads": None, "prover": "auto"}


def main(argv, storage=None):
    """Runs the job on ``argv`` (Glue-style arguments). Returns the counts; raises JobError."""
    job = jobentry.start(argv, ARGUMENTS, OPTIONS, storage)
    if job.catalog_only:
        return job.recheck()
    args, storage, catalog = job.args, job.storage, job.catalog
    source, target, quarantine = args["source_uri"], args["target_uri"], args["quarantine_uri"]
    source_id = args["source_id"] or jobio.stem(target)
    with jobio.WorkDir() as work:
        LOG.info("reading %s", source)
        local_source = storage.fetch(source, work, version_id=args["source_version_id"])
        local_target = os.path.join(work, "raw.parquet")
        local_quarantine = os.path.join(work, "quarantine.jsonl")
        counts = pipeline.convert(local_source, local_target, local_quarantine, source, source_id,
                                  memory_limit=args["memory_limit"], threads=job.threads, temp_dir=work,
                                  prover=args["prover"])
        LOG.info("%d lines read: %d valid, %d quarantined", counts["read"], counts["valid"], counts["quarantined"])
        if counts["quarantined"]:
            storage.put(local_quarantine, quarantine)
            LOG.info("wrote %s", quarantine)
        else:
            storage.delete(quarantine)  # left by an earlier run of the same source, if any
        if not counts["valid"]:
            storage.delete(target)
            jobio.print_result(counts)
            where = " (see %s)" % quarantine if counts["quarantined"] else ""
            raise jobio.JobError("no valid record in %s: %d lines read, %d quarantined%s"
                                 % (source, counts["read"], counts["quarantined"], where))
        storage.put(local_target, target)
        LOG.info("wrote %s", target)
        if catalog is not None:
            request = catalog.describe_parquet(local_target, catalog.folder_of(target))
            catalog.settle(args, storage, work, request)
    jobio.print_result(counts)
    return counts


if __name__ == "__main__":
    jobentry.main(main)
