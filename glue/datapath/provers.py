"""Provers: each turns a block of lines into the typed rows it can vouch for plus the lines it
cannot (bad, or valid but unusual), which the judge then decides. Two behind one interface:

- ``CProver``: glue/native (module shipping_ndjson), one pass over the block's bytes in C; its
  rows stay in its own buffers and reach the writer as an Arrow C stream without pyarrow.
- ``DuckDBProver``: the block cut into lines (pyarrow, no copy) and proven by one DuckDB query
  (datapath.rules_sql.proof_sql); what runs wherever the C module is not installed.

``prove(block)`` returns a ``Proof``; ``stream(batches)`` wraps an iterator of what the writer
gets (``Proof.batch`` objects and rescued Arrow record batches) as an object with
``__arrow_c_stream__``. Line numbers in a Proof are relative to the block (its first line is 0).
"""
import array
import functools
import os
import sys
import tempfile

import duckdb

from chalicelib import schema

import jobio
from datapath import rules_sql

try:
    import shipping_ndjson
except ImportError:
    shipping_ndjson = None

pa = jobio.ImportedOnUse("pyarrow")
pc = jobio.ImportedOnUse("pyarrow.compute")

# Bytes per block (``block_bytes`` of each prover): the C prover is fastest with 8 MB blocks, four
# at a time; the DuckDB prover with 16 MB, two at a time (each query then has enough lines for
# every thread).
# Lines per Arrow record batch handed to DuckDB (measured: fastest between 2,048 and 32,768).
LINES_PER_BATCH = 8192
_ARROW_TYPES = {"int64": "int64", "date32": "date32", "string": "string", "float64": "float64"}


class Proof:
    """What a prover made of one block: ``rows`` proven, ``batch`` (the proven rows for the
    writer, or None when there are none), ``doubtful`` (``[(line, bytes)]``: the other non-blank
    lines, without their LF, numbered from 0 in the block) and ``lines`` (physical lines in the
    block, blank ones included)."""

    __slots__ = ("rows", "batch", "doubtful", "lines")

    def __init__(self, rows, batch, doubtful, lines):
        self.rows, self.batch, self.doubtful, self.lines = rows, batch, doubtful, lines

    @property
    def non_blank(self):
        return self.rows + len(self.doubtful)


@functools.lru_cache(maxsize=None)
def record_schema():
    """The Arrow schema of the schema fields, typed (the rows provers and the judge give)."""
    return pa.schema([pa.field(f.name, getattr(pa, _ARROW_TYPES[f.arrow_type])()) for f in schema.FIELDS])


class CProver:
    """The C prover (shipping_ndjson). ``in_flight``: blocks it proves at once (it releases the
    GIL)."""

    name = "c"
    in_flight = 4
    block_bytes = 8 * 1024 * 1024

    def __init__(self):
        if shipping_ndjson is None:
            raise jobio.JobError("--prover c: the C prover (module shipping_ndjson, glue/native) is not installed")
        self.fields = schema.prover_fields()

    def prove(self, block):
        rows, proven, spots, lines = shipping_ndjson.prove(self.fields, block.data, block.size, 0, True)
        spots = array.array("q", spots)
        if sys.byteorder != "little":
            spots.byteswap()
        data = block.data
        doubtful = [(spots[k], bytes(data[spots[k + 1]:spots[k + 2]])) for k in range(0, len(spots), 3)]
        return Proof(rows, proven if rows else None, doubtful, lines)

    def stream(self, batches):
        fields = self.fields

        class Stream:
            def __arrow_c_stream__(self, requested_schema=None):
                return shipping_ndjson.arrow_stream(fields, functools.partial(next, batches, None))

        return Stream()


class DuckDBProver:
    """Proves blocks with DuckDB on ``connection`` (a cursor per block, so blocks may be proven
    on several threads).

    A block is first proven whole by DuckDB's NDJSON reader, from a work file in ``work_dir``
    (the reader takes no buffer): when it vouches for every line, that is the block's proof (most
    blocks of most files). Otherwise the block is cut into lines and each is proven on its own
    (rules_sql.proof_sql), which also says which lines are left to the judge."""

    name = "duckdb"
    in_flight = 2
    block_bytes = 16 * 1024 * 1024

    def __init__(self, connection, work_dir=None):
        self.connection = connection
        self.work_dir = work_dir
        self._sql = {lenient: rules_sql.proof_sql(lenient) for lenient in (False, True)}

    def _prove_whole(self, block):
        """The Proof of a block whose every line DuckDB's reader proves valid, else None."""
        if may_be_lenient(block):
            return None
        lines = block.data.count(b"\n", 0, block.size)
        if block.size and block.data[block.size - 1] != 0x0A:
            lines += 1
        handle, path = tempfile.mkstemp(prefix="block-", suffix=".ndjson", dir=self.work_dir)
        cursor = self.connection.cursor()
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(memoryview(block.data)[:block.size])
            result = cursor.sql(rules_sql.block_proof_sql(path)).fetch_arrow_table()
        except duckdb.Error:
            return None  # a line its reader cannot take: proven line by line
        finally:
            cursor.close()
            os.remove(path)
        # A blank line is no row: then the rows cannot be numbered from the block alone.
        if result.num_rows != lines or not pc.all(result.column("proven")).as_py():
            return None
        rows = result.select(record_schema().names).cast(record_schema()).combine_chunks()
        return Proof(rows.num_rows, rows.to_batches()[0] if rows.num_rows else None, [], lines)

    def prove(self, block):
        if block.size > self.block_bytes:
            # One line longer than a block (see blocks.BlockReader): parsing it twice in SQL would
            # take several times its size in memory; the judge decides it alone.
            line = memoryview(block.data)[:block.size]
            return Proof(0, None, [(0, line[:-1] if line[-1:] == b"\n" else line)], 1)
        whole = self._prove_whole(block)
        if whole is not None:
            return whole
        lines, count, lenient, not_utf8 = _lines_table(block)
        cursor = self.connection.cursor()
        try:
            cursor.register("lines", ArrowStream(lines))
            # The relational API runs the query on all threads (execute().fetch_arrow_table() on one).
            result = cursor.sql(self._sql[lenient]).fetch_arrow_table()
        finally:
            cursor.close()
        proven_mask = result.column("proven")
        proven = result.filter(proven_mask).select(record_schema().names).cast(record_schema())
        others = result.filter(pc.invert(proven_mask))
        doubtful = [(number, _without_lf(line.encode("utf-8"))) for number, line in
                    zip(others.column("line_no").to_pylist(), others.column("line").to_pylist())]
        doubtful.extend(not_utf8)
        doubtful.sort(key=lambda item: item[0])
        batch = proven.combine_chunks().to_batches()[0] if proven.num_rows else None
        return Proof(proven.num_rows, batch, doubtful, count)

    def stream(self, batches):
        return ArrowStream(pa.RecordBatchReader.from_batches(record_schema(), batches))


class ArrowStream:
    """``table`` (a pyarrow Table or RecordBatchReader) for DuckDB to read once, as an Arrow C
    stream: DuckDB given the pyarrow object itself imports pyarrow.dataset to ask whether it is
    a dataset, with pyarrow's filesystems (0.07 s of a job run, where a file has a bad line)."""

    __slots__ = ("table",)

    def __init__(self, table):
        self.table = table

    def __arrow_c_stream__(self, requested_schema=None):
        return self.table.__arrow_c_stream__(requested_schema)


def _without_lf(line):
    return line[:-1] if line.endswith(b"\n") else line


def _ints(values, narrow=False):
    """An Arrow int64 (int32 when ``narrow``) array of ``values``, built from a buffer:
    pa.array() on Python values imports pandas to ask whether they are pandas objects."""
    data = array.array("i" if narrow else "q", values)
    return pa.Array.from_buffers(pa.int32() if narrow else pa.int64(), len(data), [None, pa.py_buffer(data)])


def strings(values):
    """A string Arrow array of ``values`` (UTF-8 bytes), built from buffers (see _ints)."""
    offsets, at = array.array("q", [0]), 0
    for value in values:
        at += len(value)
        offsets.append(at)
    return pa.Array.from_buffers(pa.large_string(), len(values),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(values))])


def _whole(buffer):
    """A one-value binary Arrow array over ``buffer`` (an Arrow Buffer), without copying."""
    return pa.Array.from_buffers(pa.binary(), 1, [None, _ints([0, buffer.size], narrow=True).buffers()[1], buffer])


_NON_JSON_WHITESPACE_BYTES = tuple(char.encode("ascii") for char in rules_sql.NON_JSON_WHITESPACE)


def may_be_lenient(block):
    """Whether a Block's bytes might hold what DuckDB's JSON reader accepts beyond strict JSON:
    two memchr passes (bytearray.find; Arrow's match_substring took 40 times as long) and one of
    RE2 per pattern (each starts with one fixed byte, which RE2 skips to: the three alternated
    in one pattern took twice as long)."""
    data, size = block.data, block.size
    if any(data.find(char, 0, size) != -1 for char in _NON_JSON_WHITESPACE_BYTES):
        return True
    text = _whole(pa.py_buffer(data).slice(0, size))
    return any(pc.any(pc.match_substring_regex(text, pattern)).as_py() for pattern in rules_sql.LENIENT_JSON_PATTERNS)


def _without_invalid_utf8(piece):
    """``piece`` with each line that is not UTF-8 blanked out (line numbers stay put), and those
    lines as ``[(line, bytes)]``."""
    lines = piece.split(b"\n")
    bad = []
    for number, line in enumerate(lines):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad.append((number, line))
            lines[number] = b""
    return b"\n".join(lines), bad


def _lines_table(block):
    """The block cut into numbered lines: an Arrow table (line_no, line) whose strings point into
    the block (no copy), how many physical lines it holds, whether a line may use DuckDB's JSON
    leniencies, and the lines that are not UTF-8 (blanked in the table, for the judge)."""
    buffer = pa.py_buffer(block.data).slice(0, block.size)
    not_utf8 = []
    text = _whole(buffer)
    try:
        text = text.cast(pa.string())
    except pa.ArrowInvalid:
        cleaned, not_utf8 = _without_invalid_utf8(bytes(block.data[:block.size]))
        buffer = pa.py_buffer(cleaned)
        text = _whole(buffer).cast(pa.string())
    newline = pa.Array.from_buffers(pa.uint8(), 1, [None, pa.py_buffer(b"\n")])[0]
    ends = pc.indices_nonzero(pc.equal(pa.Array.from_buffers(pa.uint8(), buffer.size, [None, buffer]), newline))
    count = len(ends)
    starts = [_ints([0], narrow=True)]
    if count:
        starts.append(pc.add(ends.cast(pa.int32()), _ints([1], narrow=True)[0]))
    if not count or ends[-1].as_py() + 1 < buffer.size:  # the last line has no line end
        starts.append(_ints([buffer.size], narrow=True))
        count += 1
    offsets = pa.concat_arrays(starts)
    lines = pa.Array.from_buffers(pa.string(), count, [None, offsets.buffers()[1], buffer])
    table = pa.Table.from_arrays([_ints(range(count)), lines], names=["line_no", "line"])
    # DuckDB splits the work on an Arrow table by record batches: several, so all threads work.
    table = pa.Table.from_batches(table.to_batches(max_chunksize=LINES_PER_BATCH), schema=table.schema)
    lines_in_block = len(ends) + (1 if (not len(ends) or ends[-1].as_py() + 1 < buffer.size) and buffer.size else 0)
    return table, lines_in_block, may_be_lenient(block), not_utf8


def make(choice, connection, block_bytes=None, work_dir=None):
    """The prover ``--prover`` names: ``"c"``, ``"duckdb"`` or ``"auto"`` (the C prover when it is
    installed). Raises JobError for anything else, or ``c`` without the module."""
    choices = ("auto", "c", "duckdb")
    if choice not in choices:
        raise jobio.JobError("--prover must be one of %s, got %r" % (", ".join(choices), choice))
    chosen = CProver() if choice == "c" or (choice == "auto" and shipping_ndjson is not None) else DuckDBProver(connection, work_dir)
    if block_bytes:
        chosen.block_bytes = block_bytes
    return chosen
