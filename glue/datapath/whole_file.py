"""The whole-file route of the DuckDB prover: one COPY converts the whole file at once, or gives
way to the block pipeline at the first doubt.

DuckDB's NDJSON reader, run over the whole file by one query on every thread, is several times
faster than proving it block by block and fetching the rows (measured in bench/, see
docs/PERFORMANCE.md). The COPY pairs the reader's typed read with the proof
(rules_sql.block_proof_sql) and stops at the first row the proof cannot vouch for. Meanwhile a
thread reads the same bytes with blocks.BlockReader and looks for what the reader accepts beyond
strict JSON (provers.may_be_lenient), counting the lines. The file written is the result only
when the COPY proved every row, the scan found nothing, every line is a row, and the file holds
the rows the COPY wrote; else nothing of it remains and the block pipeline converts the file.
"""
import logging
import os
import threading

import duckdb

import jobio
from datapath import blocks, provers, rules_sql, writer

LOG = logging.getLogger("shipping_etl.json_to_parquet")

SCAN_BLOCK_BYTES = 16 * 1024 * 1024
_NOT_PROVEN = "a row is not proven valid"


class _Scan:
    """The scan of the raw bytes, on a thread of its own: ``lines`` (physical lines, None when
    the bytes may hold a leniency or a line too long for the reader), ``error`` (SourceChanged)."""

    def __init__(self, path, name, on_doubt):
        self.path, self.name, self.on_doubt = path, name, on_doubt
        self.stop = threading.Event()
        self.lines = self.error = None
        self._thread = threading.Thread(target=self._run, name="raw-scan", daemon=True)

    def start(self):
        self._thread.start()

    def join(self):
        self._thread.join()

    def _run(self):
        try:
            self.lines = self._count()
        except blocks.SourceChanged as exc:
            self.error = exc
        except Exception as exc:  # any doubt of the scan's own: the block pipeline decides
            LOG.info("the scan of the raw bytes stopped: %s", exc)
        if self.lines is None and not self.stop.is_set():
            self.on_doubt()

    def _count(self):
        lines = 0
        # A line longer than a block (beyond what DuckDB's reader takes by default) is a doubt,
        # left unread.
        for item in blocks.BlockReader(self.path, self.name, SCAN_BLOCK_BYTES, 1, max_line=SCAN_BLOCK_BYTES):
            if self.stop.is_set() or not isinstance(item, blocks.Block) or provers.may_be_lenient(item):
                return None
            data, size = item.data, item.size
            lines += data.count(b"\n", 0, size) + (1 if size and data[size - 1] != 0x0A else 0)
        return lines


def convert(connection, parquet, path, name):
    """Writes the rows of the uncompressed NDJSON file at ``path`` (``name``: its URI) with
    ``parquet`` (a writer.ParquetWriter, its file not yet written) on ``connection``, when every
    line is proven valid at once. Returns the number of rows (the file is then complete but for
    ``parquet.finish``), or None, leaving no file. Raises SourceChanged."""
    cursor = connection.cursor()
    scan = _Scan(path, name, cursor.interrupt)  # no need to finish a conversion that cannot be used
    relation = "(SELECT * EXCLUDE (proven) FROM (%s) WHERE CASE WHEN proven THEN true ELSE error(%s) END)" % (
        rules_sql.block_proof_sql(path), jobio.sql_literal(_NOT_PROVEN))
    rows = why = None
    before = os.stat(path)
    try:
        scan.start()
        try:
            rows = parquet.copy(cursor, relation)
            blocks.check_unchanged(name, before, os.stat(path))
            written = cursor.execute("SELECT num_rows FROM parquet_file_metadata(%s)"
                                     % jobio.sql_literal(parquet.path)).fetchone()[0]
        except duckdb.Error as exc:
            rows, why = None, str(exc).strip().splitlines()[0][:200]
        finally:
            if rows is None:
                scan.stop.set()  # the scan's answer no longer matters
            scan.join()
    finally:
        cursor.close()
    if scan.error is not None:
        parquet.discard()
        raise scan.error
    if rows and written != rows:
        parquet.discard()
        raise writer.CountsDoNotReconcile("%s: %d rows proven valid but %d in the Parquet file" % (name, rows, written))
    if rows is not None and scan.lines is None:
        rows, why = None, "the raw bytes may hold NaN, Infinity, trailing commas, other whitespace or a long line"
    elif rows is not None and rows != scan.lines:
        rows, why = None, "%d rows from %d lines (blank lines)" % (rows, scan.lines)
    if not rows:
        LOG.info("not every line proven valid at once (%s): proving block by block", why or "no line")
        parquet.discard()
        return None
    return rows
