"""The one writer: streams the rows of a stream (Arrow C stream of the schema fields) into the
raw Parquet file with DuckDB, and the bad lines into the quarantine file as JSON lines.

The raw file carries the job's counts in its key-value metadata (``jobio.COUNTS_METADATA_KEY``,
read by normalize). DuckDB writes the footer before the counts are known (the stream is read
once, as it comes): the metadata holds a placeholder of the final length, which ``finish``
overwrites in place. Writing the file a second time instead would double the cost of the job.
"""
import base64
import json
import os
import uuid

from chalicelib import schema

import jobio

# Rows per Parquet row group: half DuckDB's default. Each writer thread holds a row group until
# it is full, so this bounds the peak (measured: 1x/4x peaks 255/269 MB median against 283/298 MB
# with the default, at the same speed).
ROW_GROUP_ROWS = 61440
_FOOTER_TAIL = 8  # a Parquet file ends with the footer's length (4 bytes, little-endian) and PAR1


class CountsDoNotReconcile(jobio.JobError):
    """Rows or lines were lost between the provers and the outputs."""


def counts_text(counts):
    return json.dumps(counts, sort_keys=True)


class ParquetWriter:
    """Writes the raw Parquet file at ``path`` on ``connection``; ``source`` and ``source_id``
    name the landing object."""

    def __init__(self, connection, path, source, source_id):
        self.connection, self.path, self.source_id = connection, path, source_id
        width = len(counts_text({"source": source, "read": 10 ** 19, "valid": 10 ** 19, "quarantined": 10 ** 19}))
        self._placeholder = ('{"pending": "%s"}' % uuid.uuid4().hex).ljust(width)

    def write(self, stream):
        """Writes every row of ``stream`` (an object with ``__arrow_c_stream__``). Returns how
        many rows DuckDB wrote."""
        cursor = self.connection.cursor()
        try:
            cursor.register("rows_to_write", stream)
            return self.copy(cursor, "rows_to_write")
        finally:
            cursor.close()

    def copy(self, cursor, relation):
        """Writes every row of the SQL ``relation`` (the schema fields, typed) with ``cursor``.
        Returns how many rows DuckDB wrote."""
        return cursor.execute(
            "COPY (SELECT *, %s AS %s FROM %s) TO %s (FORMAT parquet, COMPRESSION snappy, "
            "ROW_GROUP_SIZE %d, KV_METADATA {%s: %s})" % (
                jobio.sql_literal(self.source_id), schema.SOURCE_ID_FIELD, relation, jobio.sql_literal(self.path),
                ROW_GROUP_ROWS, jobio.sql_literal(jobio.COUNTS_METADATA_KEY),
                jobio.sql_literal(self._placeholder))).fetchone()[0]

    def finish(self, counts):
        """Puts ``counts`` into the file's metadata where the placeholder is."""
        patch_metadata_value(self.path, self._placeholder.encode("ascii"),
                             counts_text(counts).ljust(len(self._placeholder)).encode("ascii"))

    def discard(self):
        if os.path.exists(self.path):
            os.remove(self.path)


def patch_metadata_value(path, placeholder, value):
    """Replaces the key-value metadata value ``placeholder`` in the footer of the Parquet file at
    ``path`` by ``value`` (bytes of the same length), in place. Raises ValueError when the file
    is no Parquet file or its footer does not hold the placeholder exactly once."""
    if len(placeholder) != len(value):
        raise ValueError("a metadata value can only be replaced by one of the same length")
    size = os.path.getsize(path)
    with open(path, "r+b") as parquet:
        parquet.seek(max(0, size - _FOOTER_TAIL))
        tail = parquet.read(_FOOTER_TAIL)
        footer_length = int.from_bytes(tail[:4], "little")
        if len(tail) != _FOOTER_TAIL or tail[4:] != b"PAR1" or footer_length > size - _FOOTER_TAIL:
            raise ValueError("%s is not a Parquet file" % path)
        start = size - _FOOTER_TAIL - footer_length
        parquet.seek(start)
        footer = parquet.read(footer_length)
        at = footer.find(placeholder)
        if at < 0 or footer.find(placeholder, at + 1) >= 0:
            raise ValueError("the footer of %s does not hold the placeholder exactly once" % path)
        parquet.seek(start + at)
        parquet.write(value)


def quarantine_entry(source, line_no, reason, raw, **more):
    """A quarantine record; ``raw`` is the line's bytes without its ending."""
    entry = {"source": source, "line": line_no, "reason": reason, "record": raw.decode("utf-8", "replace")}
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        # The text above replaced the undecodable bytes; keep them exactly too.
        entry["record_base64"] = base64.b64encode(raw).decode("ascii")
    entry.update(more)
    return entry


class QuarantineWriter:
    """Writes quarantine entries as JSON lines (the file is created with the first entry)."""

    def __init__(self, path):
        self.path = path
        self.rows = 0
        self._out = None

    def write(self, entries):
        if not entries:
            return
        if self._out is None:
            self._out = open(self.path, "w", encoding="utf-8")
        self._out.writelines(json.dumps(entry, ensure_ascii=False) + "\n" for entry in entries)
        self.rows += len(entries)

    def close(self):
        if self._out is not None:
            self._out.close()
