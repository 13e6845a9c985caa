"""Glue job json-to-parquet: one NDJSON landing object -> typed Parquet (raw zone) + quarantine.

    python glue/json_to_parquet.py --source_uri s3://landing/incoming/x.json \\
        --target_uri s3://lake/raw/<sid>.parquet --quarantine_uri s3://lake/quarantine/<sid>.jsonl \\
        [--source_id <sid>] [--memory_limit 350MB] [--threads N] [--prover auto|c|duckdb]

Every ``--*_uri`` may also be a local path. Other arguments (Glue's own) are ignored.

Each non-blank line is checked against the published rules (``chalicelib.schema``). Valid lines
become rows of the raw Parquet file (schema fields, typed, plus ``source_id``); every other line
goes to the quarantine file as ``{"source", "line", "reason", "record"}`` with the line verbatim.
The counts ``{"source", "read", "valid", "quarantined"}`` are stored in the Parquet key-value
metadata under ``shipping_etl.counts`` and printed as one JSON line on stdout. A file without a
single valid line fails the job (the quarantine file is still written).

How: a gzip file (recognised by its magic bytes, whatever its name) is first decompressed into
the work directory. With the C prover installed (module shipping_ndjson, built from glue/native;
``--prover auto``, the default), each block of lines is read once, in C, on every core: the lines
it proves valid come back as typed Arrow columns, which DuckDB writes to the Parquet file as they
come; the few it cannot vouch for are kept aside and then judged by the exact rules below, which
also say why a line is bad (see convert_native). Without it (or with ``--prover duckdb``):
Most files hold no bad line at all, so the job first tries to *prove* that,
at the speed of DuckDB's own JSON reader (the fast path): one ``COPY (SELECT ... FROM
read_json(...)) TO ... (FORMAT parquet)`` whose typed read is paired with checks for everything
such a read silently bends (a number given as a string, a string given as a number, ``1.0`` for
an integer, ...) and which stops at the first row it cannot prove valid, while a second thread
scans the raw bytes for what DuckDB's reader accepts beyond strict JSON (NaN, Infinity, trailing
commas, vertical tabs). When both succeed, that Parquet file is the result (its counts, unknown
when DuckDB writes the footer, are patched into a placeholder of the same length). Otherwise
the file is checked line by line (the exact path): blocks of whole lines are cut into numbered
lines, and for each block one DuckDB COPY proves most lines valid with the same cheap checks,
writing them to a Parquet file of the block's own and the rest to a second one (PARTITION_BY);
only those few are then judged by the full rules, which say why a line is bad. This thread
cuts the next block while DuckDB checks one, so memory stays flat whatever the file size; at
the end one more COPY joins the blocks' files (and the few valid lines the proof could not vouch
for) into the raw Parquet file.

``--memory_limit`` bounds the whole job; DuckDB gets it less what the process needs besides
(jobio.duckdb_memory_limit).
"""
import array
import base64
import collections
import contextlib
import functools
import glob
import gzip
import json
import logging
import os
import re
import shutil
import struct
import sys
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

try:
    from chalicelib import redact, schema
except ImportError:  # run from a checkout: chalicelib lives next to this script's folder
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from chalicelib import redact, schema

import duckdb

import jobio

# The C prover (glue/native), when installed: see convert_native. Without it the job proves
# lines with DuckDB (convert_proven, convert_lines): the same result, about half as fast.
try:
    import shipping_ndjson
except ImportError:
    shipping_ndjson = None

# The fast path needs pyarrow only for the raw-byte scan of a large file, which imports it on its
# own thread while DuckDB converts; a small file's needs none of it.
pa = jobio.ImportedOnUse("pyarrow")
pc = jobio.ImportedOnUse("pyarrow.compute")

LOG = logging.getLogger("shipping_etl.json_to_parquet")

COUNTS_METADATA_KEY = jobio.COUNTS_METADATA_KEY
DEFAULT_MEMORY_LIMIT = "350MB"  # the whole job's, see jobio.duckdb_memory_limit
# The exact path reads and checks lines this many bytes at a time.
BLOCK_BYTES = 16 * 1024 * 1024
# The raw-byte scan of the fast path reads this many bytes at a time.
SCAN_BYTES = 16 * 1024 * 1024
PROGRESS_EVERY_BLOCKS = 16
# Lines per Arrow record batch handed to DuckDB (measured: fastest between 2,048 and 32,768).
LINES_PER_BATCH = 8192
GZIP_MAGIC = b"\x1f\x8b"
# Rows per Parquet row group of the raw file (both paths): half DuckDB's default. Each writer thread
# holds a row group until it is full, so this bounds the peak: measured over six runs each,
# 1x/4x peaks 255/269 MB median and 271/274 MB highest, against 283/298 and 290/340 MB with the
# default, at the same speed (about 1 MB per row group of this data).
ROW_GROUP_ROWS = 61440

NOT_JSON = "not valid JSON"
NOT_OBJECT = "not a JSON object"



@functools.lru_cache(maxsize=None)
def raw_schema():
    """The Arrow schema of the raw Parquet file: the schema fields, typed, and ``source_id``."""
    types = {"int64": pa.int64(), "date32": pa.date32(), "string": pa.string(), "float64": pa.float64()}
    return pa.schema([pa.field(f.name, types[f.arrow_type]) for f in schema.FIELDS]
                     + [pa.field(schema.SOURCE_ID_FIELD, pa.string())])


@functools.lru_cache(maxsize=None)
def _block_schema():
    return pa.schema([("first_line", pa.int64()), ("block", pa.string())])


@functools.lru_cache(maxsize=None)
def _lines_schema():
    return pa.schema([("line_no", pa.int64()), ("line", pa.string())])


def __getattr__(name):
    if name == "RAW_SCHEMA":  # kept as a module attribute, built on first use
        return raw_schema()
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def _sql_list(texts):
    return "[%s]" % ", ".join(jobio.sql_literal(text) for text in texts)


# -- the rules in SQL, exactly (with reasons) ----------------------------------------------------
# Each field is looked at as the JSON text of its value ``t`` (DuckDB re-serialises it: strings
# keep their quotes, numbers their digits; NULL when the member is absent or null) and as the
# typed value ``v`` computed from that text.

_DATE_SHAPE = "'\"[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]\"'"
_DATE_FORMAT = "'\"%s\"'" % schema.DATE_FORMAT  # the quotes are part of the JSON text
# A string's value: the text without its quotes, unless it holds an escape.
_STRING_VALUE = ("CASE WHEN contains({t}, '\\') THEN json_extract_string({t}, '$') "
                 "ELSE substr({t}, 2, length({t}) - 2) END")
_LARGEST_DOUBLE = "1.7976931348623157e308"

# kind -> (typed value of t, condition on t and v, what a valid value is)
_KINDS = {
    # A JSON integer has no fraction or exponent: its text survives a round trip through BIGINT
    # (and the cast fails beyond int64).
    "id": ("TRY_CAST({t} AS BIGINT)",
           "{v} > 0 AND {v}::VARCHAR = {t}",
           "a whole number > 0 (fitting int64)"),
    "opt_int": ("TRY_CAST({t} AS BIGINT)",
                "{t} IS NULL OR {v}::VARCHAR = {t}",
                "a whole number (fitting int64) or null"),
    "date": ("CAST(try_strptime({t}, %s) AS DATE)" % _DATE_FORMAT,
             "{v} IS NOT NULL AND {t} GLOB %s AND {t}[2:5] <> '0000'" % _DATE_SHAPE,
             "a real date written YYYY/MM/DD"),
    # NaN sorts above every number in DuckDB and infinity lies above the largest double: the
    # range leaves both out.
    "amount": ("TRY_CAST({t} AS DOUBLE)",
               "{v} BETWEEN 0 AND %s" % _LARGEST_DOUBLE,
               "a finite number >= 0"),
    "text": (_STRING_VALUE,
             "starts_with({t}, '\"') AND {t} <> '\"\"'",
             "a non-empty string"),
    "opt_text": (_STRING_VALUE,
                 "{t} IS NULL OR starts_with({t}, '\"')",
                 "a string or null"),
}

# What DuckDB's JSON reader accepts beyond strict JSON: NaN/Infinity literals (any case) and
# trailing commas. Each pattern starts with one fixed character, which keeps the scan fast; a
# match inside a string only costs a second look at that line.
LENIENT_JSON_PATTERNS = (
    r",[ \t\r]*(?:[}\]]|[-+]?(?i:nan|inf|infinity)[ \t\r]*[,}\]])",
    r":[ \t\r]*[-+]?(?i:nan|inf|infinity)[ \t\r]*[,}\]]",
    r"\[[ \t\r]*[-+]?(?i:nan|inf|infinity)[ \t\r]*[,}\]]",
)
_LENIENT_JSON_BYTES = tuple(re.compile(pattern.encode("ascii")) for pattern in LENIENT_JSON_PATTERNS)
# Below this many bytes Python's re scans faster than pyarrow's RE2 can be imported.
_SMALL_SCAN_BYTES = 256 * 1024
# Bytes DuckDB's line reader takes for whitespace around a JSON document and strict JSON does not.
NON_JSON_WHITESPACE = (b"\x0b", b"\x0c")
# What a blank line may hold: spaces, tabs, carriage returns.
_BLANK_CHARS = "' ' || chr(9) || chr(13)"


def check_sql(source_id, lenient_scan=False):
    """The query that checks the lines of the Arrow table ``blocks`` (first_line, block).

    Returns one row per non-blank line: ``line_no``; ``suspect`` (DuckDB accepted the line but
    it may not be strict JSON; always false unless ``lenient_scan``); ``reason`` (NULL when the
    line is valid); ``record`` (the line, when not valid or suspect); the typed schema fields and
    ``source_id``.
    """
    struct = "{%s}" % ", ".join('"%s": "JSON"' % f.name for f in schema.FIELDS)
    texts, values, checks, reasons, outputs = [], [], [], [], []
    reasons.append("WHEN NOT is_json THEN %s" % jobio.sql_literal(NOT_JSON))
    reasons.append("WHEN NOT starts_with(ltrim(line, %s), '{') THEN %s" % (_BLANK_CHARS, jobio.sql_literal(NOT_OBJECT)))
    for f in schema.FIELDS:
        value, condition, wanted = _KINDS[f.kind]
        t, v = "t_" + f.name, "v_" + f.name
        texts.append("r.%s::VARCHAR AS %s" % (f.name, t))
        values.append("%s AS %s" % (value.format(t=t), v))
        condition = "coalesce(%s, false)" % condition.format(t=t, v=v)
        checks.append(condition)
        if f.required:
            reasons.append("WHEN %s IS NULL THEN %s" % (t, jobio.sql_literal("%s is missing or null" % f.name)))
        reasons.append("WHEN NOT %s THEN %s || left(%s, 80)"
                       % (condition, jobio.sql_literal("%s must be %s, got " % (f.name, wanted)), t))
        outputs.append("%s AS %s" % (v, f.name))
    struct = jobio.sql_literal(struct)
    parse = "json_valid(line) AS is_json, CASE WHEN json_valid(line) THEN from_json(line, %s) END AS r" % struct
    if lenient_scan:
        suspect = "CASE WHEN is_json THEN %s ELSE false END" % " OR ".join(
            "regexp_matches(line, %s)" % jobio.sql_literal(p) for p in LENIENT_JSON_PATTERNS)
    else:
        suspect = "false"
    return """
WITH lines AS (
    SELECT first_line + generate_subscripts(parts, 1) - 1 AS line_no, unnest(parts) AS line
    FROM (SELECT first_line, string_split(block, chr(10)) AS parts FROM blocks)
), parsed AS (
    SELECT line_no, line, {parse} FROM lines
    -- not blank (most lines start with a brace, which spares the trim)
    WHERE CASE WHEN starts_with(line, '{{') THEN true ELSE trim(line, {blank}) <> '' END
), texts AS (
    SELECT line_no, line, is_json, {texts} FROM parsed
), typed AS (
    SELECT *, {values} FROM texts
), checked AS (
    SELECT *, {checks} AS ok, {suspect} AS suspect FROM typed
)
SELECT line_no, suspect,
       CASE WHEN ok THEN NULL ELSE CASE {reasons} ELSE 'invalid record' END END AS reason,
       CASE WHEN ok AND NOT suspect THEN NULL ELSE line END AS record,
       {outputs}, {source_id} AS {source_id_field}
FROM checked
""".format(parse=parse, blank=_BLANK_CHARS, texts=", ".join(texts),
           values=", ".join(values), checks=" AND ".join(checks), suspect=suspect,
           reasons=" ".join(reasons), outputs=", ".join(outputs),
           source_id=jobio.sql_literal(source_id), source_id_field=schema.SOURCE_ID_FIELD)


# -- the rules in SQL, as a proof (cheap, no reasons) --------------------------------------------
# Strings and dates are read as VARCHAR (DuckDB unescapes them), numbers as JSON (their text as
# written). A typed read bends: it turns the number 5 into the string '5', the string "12" into
# the number 12, 1.0 into the integer 1. So each condition below holds only for values that are
# valid under the rules *and* cannot have been bent; a value it cannot vouch for (e.g. the string
# "5" as a city, indistinguishable from the number 5) is left to the exact rules above.

PROOF_TYPES = {"id": "JSON", "opt_int": "JSON", "amount": "JSON",
               "date": "VARCHAR", "text": "VARCHAR", "opt_text": "VARCHAR"}
# A VARCHAR read of a number, boolean, array or object is that value's JSON text, which DuckDB's
# own parser accepts; a string whose content is no JSON text (nearly every name, address and
# city), or one starting with a quote, can only have been a string. (Comparing the first
# character first, to spare most values the parse, measured slower.)
_CERTAIN_STRING = "(NOT json_valid({c}) OR starts_with({c}, '\"'))"
# The JSON text of a number is an integer unless it has a fraction or an exponent. (BIGINT's
# cast alone would take 1.0 and 1e2.)
_INTEGER_TEXT = "NOT (contains({c}::VARCHAR, '.') OR contains({c}::VARCHAR, 'e') OR contains({c}::VARCHAR, 'E'))"

# kind -> (typed value, condition that proves the value valid); {c} is the column as read.
_PROOFS = {
    "id": ("TRY_CAST({c}::VARCHAR AS BIGINT)", "{v} > 0 AND %s" % _INTEGER_TEXT),
    "opt_int": ("TRY_CAST({c}::VARCHAR AS BIGINT)", "({c} IS NULL OR ({v} IS NOT NULL AND %s))" % _INTEGER_TEXT),
    "amount": ("TRY_CAST({c}::VARCHAR AS DOUBLE)", "{v} BETWEEN 0 AND %s" % _LARGEST_DOUBLE),
    # The shape leaves DuckDB's date cast (which takes more than YYYY/MM/DD) only real dates to
    # reject; year 0 it reads as 1 BC.
    "date": ("TRY_CAST({c} AS DATE)",
             "{c} GLOB '[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]' AND year({v}) >= 1"),
    "text": ("{c}", "{c} <> '' AND %s" % _CERTAIN_STRING),
    "opt_text": ("{c}", "({c} IS NULL OR %s)" % _CERTAIN_STRING),
}


def proof_columns():
    """The ``columns`` argument of ``read_json`` (and the struct of ``from_json``) that reads the
    schema fields the way the proof needs them, as DuckDB struct text."""
    return "{%s}" % ", ".join('"%s": "%s"' % (f.name, PROOF_TYPES[f.kind]) for f in schema.FIELDS)


def proof_sql(relation, source_id, keep=(), also=None):
    """A SELECT over ``relation`` (which has the schema fields as read with ``proof_columns``,
    plus the columns named in ``keep``). Returns the ``keep`` columns, the typed schema fields
    and ``source_id`` (RAW_SCHEMA's names), and ``proven``: true when the row is certainly valid
    (and the SQL condition ``also`` holds), false when the exact rules must judge it."""
    values, conditions = [], [] if also is None else [also]
    for f in schema.FIELDS:
        value, condition = _PROOFS[f.kind]
        column, v = '"%s"' % f.name, "v_" + f.name
        values.append("%s AS %s" % (value.format(c=column), v))
        conditions.append(condition.format(c=column, v=v))
    outputs = ["v_%s AS %s" % (f.name, f.name) for f in schema.FIELDS]
    return """
SELECT {keep}{outputs}, {source_id} AS {source_id_field}, coalesce({conditions}, false) AS proven
FROM (SELECT *, {values} FROM {relation})
""".format(keep="".join("%s, " % name for name in keep), outputs=", ".join(outputs),
           source_id=jobio.sql_literal(source_id), source_id_field=schema.SOURCE_ID_FIELD,
           conditions=" AND ".join(conditions), values=", ".join(values), relation=relation)


# -- pure transforms ---------------------------------------------------------------------------


def strict_json_error(text):
    """Why ``text`` is not strict JSON (RFC 8259), or None when it is."""
    def reject(name):
        raise ValueError("%s is not a JSON number" % name)

    try:
        json.loads(text, parse_constant=reject)
    except (ValueError, RecursionError) as exc:
        return str(exc)
    return None


def is_gzip(path):
    """Whether the file starts with the gzip magic bytes."""
    with open(path, "rb") as probe:
        return probe.read(2) == GZIP_MAGIC


def open_source(path):
    """A binary stream of the file's lines, gunzipped when it starts with the gzip magic."""
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def lenient_json_match(text):
    """Whether a string or binary Arrow array's values might hold what DuckDB's JSON reader
    accepts beyond strict JSON (a pattern of LENIENT_JSON_PATTERNS matches somewhere)."""
    return any(pc.any(pc.match_substring_regex(text, pattern)).as_py() for pattern in LENIENT_JSON_PATTERNS)


def _ints(values, narrow=False):
    """An Arrow int64 (int32 when ``narrow``) array of ``values`` (ints), built from a buffer:
    pa.array() and pa.scalar() on Python values import pandas (a quarter of a second) to ask
    whether they are pandas objects."""
    data = array.array("i" if narrow else "q", values)
    return pa.Array.from_buffers(pa.int32() if narrow else pa.int64(), len(data), [None, pa.py_buffer(data)])


def _whole(buffer):
    """A one-value binary Arrow array over ``buffer`` (an Arrow Buffer), without copying."""
    return pa.Array.from_buffers(pa.binary(), 1, [None, _ints([0, buffer.size], narrow=True).buffers()[1], buffer])


def raw_bytes_are_strict(stream, stop=None, chunk_bytes=SCAN_BYTES):
    """Scans a binary stream for what DuckDB's NDJSON reader accepts and strict JSON does not:
    NaN/Infinity literals, trailing commas (LENIENT_JSON_PATTERNS) and the whitespace bytes of
    NON_JSON_WHITESPACE. Returns False at the first sign of one (a pattern may also match inside
    a string: False means "not proven", not "bad"), True when there is none. ``stop`` (a
    threading.Event) ends the scan early, returning False."""
    buffer = bytearray(chunk_bytes)
    rest = 0  # bytes carried over from the last chunk's incomplete final line
    while not (stop is not None and stop.is_set()):
        got = stream.readinto(memoryview(buffer)[rest:])
        length = rest + (got or 0)
        if length == 0:
            return True
        # Patterns never span lines: scan up to the last line end, carry the rest over.
        cut = length if not got else buffer.rfind(b"\n", 0, length) + 1
        if cut == 0:  # a line longer than the buffer: grow it
            buffer.extend(bytes(len(buffer)))
            rest = length
            continue
        if any(buffer.find(byte, 0, cut) >= 0 for byte in NON_JSON_WHITESPACE):
            return False
        if cut < _SMALL_SCAN_BYTES:
            if any(pattern.search(buffer, 0, cut) for pattern in _LENIENT_JSON_BYTES):
                return False
        elif lenient_json_match(_whole(pa.py_buffer(memoryview(buffer)[:cut]))):
            return False
        buffer[:length - cut] = buffer[cut:length]
        rest = length - cut
    return False


class BlockReader:
    """Iterates over a binary stream in blocks of whole lines, about ``block_bytes`` each.

    Yields ``(buffer, length)``: the block is ``buffer[:length]``; only the last block may lack a
    final newline. Blocks are read into ``buffers`` reusable buffers in turn (a new allocation
    per block would make the heap creep), so a block must be done with once ``buffers - 1``
    more blocks have been read.
    """

    def __init__(self, stream, block_bytes=BLOCK_BYTES, buffers=2):
        self.stream = stream
        self.block_bytes = block_bytes
        self._buffers = [None] * buffers

    def __iter__(self):
        rest = b""
        turn = 0
        while True:
            buffer = self._buffers[turn]
            if buffer is None or len(buffer) < max(self.block_bytes, 2 * len(rest)):
                # A line longer than a block makes its buffer grow.
                buffer = self._buffers[turn] = bytearray(max(self.block_bytes, 2 * len(rest)))
            turn = (turn + 1) % len(self._buffers)
            buffer[:len(rest)] = rest
            length = len(rest)
            view = memoryview(buffer)
            while length < len(buffer):
                got = self.stream.readinto(view[length:])
                if not got:
                    break
                length += got
            view.release()
            if length == 0:
                return
            cut = buffer.rfind(b"\n", 0, length) + 1
            if length < len(buffer):  # end of the stream
                yield buffer, length
                return
            if cut == 0:  # no line end yet: read on into a bigger buffer
                rest = bytes(buffer[:length])
                turn = (turn - 1) % len(self._buffers)
                continue
            rest = bytes(buffer[cut:length])
            yield buffer, cut


def _quarantine_entry(source, line_no, reason, raw):
    """A quarantine record; ``raw`` is the line's bytes without its ending."""
    entry = {"source": source, "line": line_no, "reason": reason,
             "record": raw.decode("utf-8", "replace")}
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        # The text above replaced the undecodable bytes; keep them exactly too.
        entry["record_base64"] = base64.b64encode(raw).decode("ascii")
    return entry


def _without_invalid_utf8(first_line, piece, source, bad):
    """``piece`` with each line that is not UTF-8 blanked out (line numbers stay put); the
    blanked lines are appended to ``bad`` as quarantine entries."""
    lines = piece.split(b"\n")
    for offset, line in enumerate(lines):
        entry = _invalid_utf8_entry(source, first_line + offset, line)
        if entry is not None:
            bad.append(entry)
            lines[offset] = b""
    return b"\n".join(lines)


def _invalid_utf8_entry(source, line_no, line):
    """The quarantine entry of ``line`` (bytes, without its LF) if it is not UTF-8, else None."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raw = line[:-1] if line.endswith(b"\r") else line
        return _quarantine_entry(source, line_no, "not valid UTF-8 (byte %d of the line)" % (exc.start + 1), raw)
    return None


class Block:
    """One block of numbered lines ready for DuckDB: ``lines`` (Arrow table line_no, line; each
    line keeps its line end), ``count`` (how many physical lines it holds), ``lenient`` (whether
    a line may use DuckDB's JSON leniencies), ``bad`` (quarantine entries of lines that are not
    UTF-8, blanked in ``lines``)."""

    def __init__(self, lines, count, lenient, bad):
        self.lines, self.count, self.lenient, self.bad = lines, count, lenient, bad


def prepare_block(first_line, block, size, source):
    """Cuts ``block[:size]`` (bytes or bytearray of whole lines, the first numbered
    ``first_line``) into numbered lines, an Arrow table whose strings point into ``block``
    (no copy). Returns a Block."""
    buffer = pa.py_buffer(block).slice(0, size)
    bad = []
    text = _whole(buffer)
    try:
        text = text.cast(pa.string())
    except pa.ArrowInvalid:
        buffer = pa.py_buffer(_without_invalid_utf8(first_line, bytes(block[:size]), source, bad))
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
    numbers = _ints(range(first_line, first_line + count))
    # DuckDB splits the work on an Arrow table by record batches: several, so all threads work.
    table = pa.Table.from_arrays([numbers, lines], schema=_lines_schema())
    table = pa.Table.from_batches(table.to_batches(max_chunksize=LINES_PER_BATCH), schema=_lines_schema())
    return Block(table, len(ends), lenient_json_match(text), bad)


def _lines_proof_sql(source_id, lenient_scan):
    """The proof query over the Arrow table ``lines`` (line_no, line): one row per non-blank
    line with ``line_no``, RAW_SCHEMA's columns, ``proven`` (false also for a line that may use
    DuckDB's JSON leniencies, when ``lenient_scan``) and ``line`` (only when not proven).

    Every line is validated before from_json parses it (from_json fails the whole query on a
    line that is not JSON); parsing object-shaped lines without it measured no faster."""
    struct = jobio.sql_literal(proof_columns())
    parse = "CASE WHEN json_valid(line) THEN from_json(line, %s) END" % struct
    lenient = " OR ".join("regexp_matches(line, %s)" % jobio.sql_literal(p) for p in LENIENT_JSON_PATTERNS)
    fields = ", ".join('r."%s" AS "%s"' % (f.name, f.name) for f in schema.FIELDS)
    relation = """(
    SELECT line_no, line, {lenient} AS lenient, {fields}
    FROM (SELECT line_no, line, {parse} AS r FROM lines
          -- not blank (most lines start with a brace, which spares the trim)
          WHERE CASE WHEN starts_with(line, '{{') THEN true ELSE trim(line, {blank}) <> '' END)
)""".format(lenient=lenient if lenient_scan else "false", fields=fields, parse=parse,
            blank=_BLANK_CHARS + " || chr(10)")
    return """
SELECT line_no, CASE WHEN proven THEN NULL ELSE line END AS line, {columns}, proven
FROM ({proof})
""".format(columns=", ".join(raw_schema().names),
           proof=proof_sql(relation, source_id, keep=("line_no", "line"), also="NOT lenient"))


class LineChecker:
    """Checks blocks of lines with DuckDB (the exact path), writing each block's valid rows to a
    Parquet file of its own in ``parts_dir``. ``memory_limit`` is the job's (e.g. ``"350MB"``;
    DuckDB gets it less what the process needs besides, see jobio.duckdb_memory_limit);
    ``threads`` DuckDB's parallelism (default: one per CPU).

    Every line first meets the cheap proof, in one COPY that writes the proven rows (and the
    others, with their line, to a second file: PARTITION_BY); the few lines it cannot vouch for
    are then judged by the exact rules (check_sql), which also give the reasons.
    """

    def __init__(self, source, source_id, parts_dir, memory_limit=DEFAULT_MEMORY_LIMIT, threads=None,
                 temp_dir=None):
        self.source = source
        self.parts_dir = parts_dir
        self.connection = jobio.duckdb_connection(duckdb, jobio.duckdb_memory_limit(memory_limit),
                                                  preserve_insertion_order=False)
        if threads:
            self.connection.execute("SET threads = %d" % int(threads))
        if temp_dir:
            self.connection.execute("SET temp_directory = %s" % jobio.sql_literal(temp_dir))
        self._proof = {lenient: _lines_proof_sql(source_id, lenient) for lenient in (False, True)}
        self._exact = {lenient: check_sql(source_id, lenient_scan=lenient) for lenient in (False, True)}
        self._blocks = 0

    def close(self):
        self.connection.close()

    def check(self, block):
        """Checks a Block. Returns ``(proven, rescued, bad)``: how many rows were proven valid
        (written to the block's file), the valid rows the proof could not vouch for (an Arrow
        table in RAW_SCHEMA, or None) and the quarantine entries, in line order."""
        self._blocks += 1
        folder = os.path.join(self.parts_dir, "%08d" % self._blocks)
        rows = self._copy(self._proof[block.lenient], block, folder)
        bad = list(block.bad)
        rescued = None
        doubtful_files = glob.glob(os.path.join(folder, "proven=false", "*.parquet"))
        doubtful = 0
        if doubtful_files:
            lines = self._query("SELECT line_no AS first_line, line AS block FROM read_parquet(%s)"
                                % _sql_list(doubtful_files))
            doubtful = lines.num_rows
            rescued = self.judge(lines.cast(_block_schema()), bad, block.lenient)
        bad.sort(key=lambda entry: entry["line"])
        return rows - doubtful, rescued, bad

    def judge(self, lines, bad, lenient=True):
        """Judges ``lines`` (an Arrow table in _block_schema: each line, without its line
        end, as a block of its own, numbered) by the exact rules. Returns the valid rows (an
        Arrow table in RAW_SCHEMA, or None); appends a quarantine entry per bad line to ``bad``.
        ``lenient``: whether a line may use DuckDB's JSON leniencies (then each valid-looking
        one that might is checked as strict JSON too)."""
        valid = self._settle(self._query(self._exact[lenient], "blocks", lines), bad)
        if not valid.num_rows:
            return None
        return valid.select(raw_schema().names).cast(raw_schema())

    def _copy(self, sql, block, folder):
        cursor = self.connection.cursor()
        try:
            cursor.register("lines", block.lines)
            return cursor.execute("COPY (%s) TO %s (FORMAT parquet, COMPRESSION snappy, PARTITION_BY (proven))"
                                  % (sql, jobio.sql_literal(folder))).fetchone()[0]
        finally:
            cursor.close()

    def copy_stream(self, stream, target_path, placeholder, source_id):
        """Writes the rows of ``stream`` (Arrow batches of the schema fields, typed) to the raw
        Parquet file at ``target_path``, with ``source_id`` and ``placeholder`` as its counts
        (see _counts_placeholder). Returns how many rows it wrote."""
        cursor = self.connection.cursor()
        try:
            cursor.register("proven", stream)
            return cursor.execute("COPY (SELECT *, %s AS %s FROM proven) TO %s (%s)" % (
                jobio.sql_literal(source_id), schema.SOURCE_ID_FIELD, jobio.sql_literal(target_path),
                _copy_options(placeholder))).fetchone()[0]
        finally:
            cursor.close()

    def _query(self, sql, name=None, table=None):
        """The result of ``sql`` as an Arrow table, with ``table`` registered as ``name``."""
        cursor = self.connection.cursor()
        try:
            if name is not None:
                cursor.register(name, table)
            # The relational API runs the query on all threads (execute().fetch_arrow_table() on one).
            return cursor.sql(sql).fetch_arrow_table()
        finally:
            cursor.close()

    def _settle(self, checked, bad):
        """The valid rows of ``checked`` (check_sql's result); the others become entries of
        ``bad``. Lines DuckDB's lenient reader accepted are valid only if they are strict JSON
        too."""
        clean = pc.and_(pc.is_null(checked.column("reason")), pc.invert(checked.column("suspect")))
        if checked.num_rows == 0 or pc.all(clean).as_py():
            return checked
        doubtful = pc.indices_nonzero(pc.invert(clean))
        rows = checked.take(doubtful).select(["line_no", "suspect", "reason", "record"]).to_pylist()
        rescued = []
        for index, row in zip(doubtful.to_pylist(), rows):
            record = row["record"]
            raw = record[:-1] if record.endswith("\r") else record
            reason = row["reason"]
            if row["suspect"] or reason == NOT_JSON:
                error = strict_json_error(raw)
                if error:
                    reason = "%s: %s" % (NOT_JSON, error)
                elif reason is None:
                    rescued.append(index)
                    continue
                else:
                    reason = "%s: %s" % (NOT_JSON, _not_json_detail(raw))
            bad.append(_quarantine_entry(self.source, row["line_no"], reason, raw.encode("utf-8")))
        valid = checked.filter(clean)
        if rescued:
            valid = pa.concat_tables([valid, checked.take(_ints(rescued))])
        return valid


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _not_json_detail(line):
    """Why DuckDB's JSON parser refused a line Python's json module reads."""
    if _SURROGATE_ESCAPE.search(line):
        return "unpaired \\u surrogate escape"
    return "rejected by the JSON parser"


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
        """Returns whether a file was written."""
        if self._out is None:
            return False
        self._out.close()
        return True


def _counts(source, valid, quarantined):
    return {"source": source, "read": valid + quarantined, "valid": valid, "quarantined": quarantined}


def _counts_text(counts):
    return json.dumps(counts, sort_keys=True)


def convert_lines(source_path, target_path, quarantine_path, source, source_id,
                  memory_limit=DEFAULT_MEMORY_LIMIT, threads=None, temp_dir=None, block_bytes=BLOCK_BYTES):
    """The exact path of ``convert``: every line is numbered and checked; bad lines are
    quarantined. Same arguments and result as ``convert``."""
    parts_dir = tempfile.mkdtemp(prefix="parts-", dir=temp_dir)
    checker = LineChecker(source, source_id, parts_dir, memory_limit=memory_limit, threads=threads,
                          temp_dir=temp_dir)
    quarantine = QuarantineWriter(quarantine_path)
    proven, rescued = 0, []

    def store(result):
        nonlocal proven
        rows, valid, bad = result
        proven += rows
        if valid is not None:
            rescued.append(valid)
        quarantine.write(bad)

    try:
        with _no_partial_outputs(quarantine, target_path):
            # DuckDB checks one block while this thread prepares the next.
            with open_source(source_path) as stream, ThreadPoolExecutor(max_workers=1) as pool:
                in_flight = None
                first_line = 1
                for number, (buffer, size) in enumerate(BlockReader(stream, block_bytes), 1):
                    block = prepare_block(first_line, buffer, size, source)
                    first_line += block.count
                    submitted = pool.submit(checker.check, block)
                    if in_flight is not None:
                        store(in_flight.result())
                    in_flight = submitted
                    if number % PROGRESS_EVERY_BLOCKS == 0:
                        LOG.info("%d lines read so far (%d valid)", first_line - 1, proven)
                if in_flight is not None:
                    store(in_flight.result())
            quarantine.close()
            valid = proven + sum(table.num_rows for table in rescued)
            counts = _counts(source, valid, quarantine.rows)
            if valid:
                files = sorted(glob.glob(os.path.join(parts_dir, "*", "proven=true", "*.parquet")))
                _merge_parts(checker.connection, files, rescued, target_path, _counts_text(counts))
    finally:
        checker.close()
        shutil.rmtree(parts_dir, ignore_errors=True)
    return counts


def _merge_parts(connection, files, rescued, target_path, counts_text):
    """Writes the raw Parquet file: the proven rows (the Parquet ``files``) and the
    ``rescued`` Arrow tables, with ``counts_text`` in the key-value metadata."""
    columns = ", ".join('"%s"' % name for name in raw_schema().names)
    selects = []
    if files:
        selects.append("SELECT %s FROM read_parquet(%s)" % (columns, _sql_list(files)))
    cursor = connection.cursor()
    try:
        if rescued:
            cursor.register("rescued", pa.concat_tables(rescued))
            selects.append("SELECT %s FROM rescued" % columns)
        cursor.execute("COPY (%s) TO %s (FORMAT parquet, COMPRESSION snappy, ROW_GROUP_SIZE %d, KV_METADATA {%s: %s})"
                       % (" UNION ALL ".join(selects), jobio.sql_literal(target_path), ROW_GROUP_ROWS,
                          jobio.sql_literal(COUNTS_METADATA_KEY), jobio.sql_literal(counts_text)))
    finally:
        cursor.close()


# -- the fast path ------------------------------------------------------------------------------

_FOOTER_TAIL = 8  # a Parquet file ends with the footer's length (4 bytes, little-endian) and PAR1


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


def _counts_placeholder(source):
    """DuckDB writes the footer before the counts are known: its metadata holds this
    placeholder, as long as any final counts text (padded with spaces, which JSON ignores),
    patched in place with patch_metadata_value."""
    width = len(_counts_text(_counts(source, 10 ** 19, 0)))
    return ('{"pending": "%s"}' % uuid.uuid4().hex).ljust(width).encode("ascii")


def _patch_counts(target_path, placeholder, counts):
    """Puts ``counts`` where DuckDB wrote ``placeholder`` (see _counts_placeholder)."""
    patch_metadata_value(target_path, placeholder, _counts_text(counts).ljust(len(placeholder)).encode("ascii"))


@contextlib.contextmanager
def _no_partial_outputs(quarantine, target_path):
    """On failure: closes the quarantine file (a QuarantineWriter) and removes a half-written
    Parquet file at ``target_path``."""
    try:
        yield
    except BaseException:
        quarantine.close()
        if os.path.exists(target_path):
            os.remove(target_path)
        raise


def _copy_options(placeholder):
    """The options of the COPY that writes the raw Parquet file, ``placeholder`` (bytes) as
    its counts."""
    return "FORMAT parquet, COMPRESSION snappy, ROW_GROUP_SIZE %d, KV_METADATA {%s: %s}" % (
        ROW_GROUP_ROWS, jobio.sql_literal(COUNTS_METADATA_KEY), jobio.sql_literal(placeholder.decode("ascii")))


def convert_proven(source_path, target_path, source, source_id, memory_limit=DEFAULT_MEMORY_LIMIT,
                   threads=None, temp_dir=None):
    """The fast path of ``convert`` for an uncompressed NDJSON file: proves every line valid
    while DuckDB converts it, or gives up.

    Returns the counts (nothing quarantined) when every non-blank line is proven valid and the
    Parquet file at ``target_path`` is complete; returns None (and leaves no file) when a line
    may be bad, or when there is no line at all.
    """
    placeholder = _counts_placeholder(source)
    read_json = "read_json(%s, format='newline_delimited', columns=%s)" % (
        jobio.sql_literal(source_path), proof_columns().replace('"', "'"))
    sql = ("COPY (SELECT * EXCLUDE (proven) FROM ({proof}) "
           "WHERE CASE WHEN proven THEN true ELSE error('a row is not proven valid') END) "
           "TO {target} ({options})").format(proof=proof_sql(read_json, source_id),
                                             target=jobio.sql_literal(target_path), options=_copy_options(placeholder))
    connection = jobio.duckdb_connection(duckdb, jobio.duckdb_memory_limit(memory_limit),
                                         preserve_insertion_order=False)
    stop, strict = threading.Event(), []

    def scan():
        try:
            with open(source_path, "rb") as stream:
                answer = raw_bytes_are_strict(stream, stop)
        except OSError:
            answer = False
        if stop.is_set():
            return  # stopped: the conversion failed already
        strict.append(answer)
        if not answer:
            connection.interrupt()  # no need to finish a conversion that cannot be used

    scanner = threading.Thread(target=scan, name="raw-scan", daemon=True)
    rows, why = None, None
    try:
        if threads:
            connection.execute("SET threads = %d" % int(threads))
        if temp_dir:
            connection.execute("SET temp_directory = %s" % jobio.sql_literal(temp_dir))
        scanner.start()
        rows = connection.execute(sql).fetchone()[0]
    except duckdb.Error as exc:
        why = redact.error_summary(exc)  # DuckDB quotes the offending line: record content
    finally:
        if rows is None:
            stop.set()  # the scan's answer no longer matters
        if scanner.is_alive():
            scanner.join()
        connection.close()
    if strict and not strict[0]:
        rows, why = None, "the raw bytes may hold NaN, Infinity, trailing commas or vertical tabs"
    if not rows:
        if why:
            LOG.info("not every line proven valid at once (%s): checking line by line", why)
        if os.path.exists(target_path):
            os.remove(target_path)
        return None
    counts = _counts(source, rows, 0)
    _patch_counts(target_path, placeholder, counts)
    return counts


# -- the native path ----------------------------------------------------------------------------
# The C prover (glue/native/shipping_ndjson.c) reads each block of lines in one pass and returns
# the typed columns of the lines it proves valid, and where the others are. DuckDB writes the
# proven rows to Parquet as they come; the others (1% of a messy file, none of a clean one) are
# kept in a work file and judged afterwards by the exact rules, which say why a line is bad.

NATIVE_BLOCK_BYTES = 8 * 1024 * 1024
# Blocks being proven at once.
NATIVE_IN_FLIGHT = 4
# Doubtful lines are judged in batches of about this many bytes.
JUDGE_BYTES = 16 * 1024 * 1024
_PROVER_FIELDS = tuple((f.name, f.kind) for f in schema.FIELDS)


class DoubtfulLines:
    """The lines the prover could not vouch for, in line order, kept in a work file (a file
    may hold nothing else) and read back in batches."""

    _HEADER = struct.Struct("<qI")  # line number, length

    def __init__(self, path):
        self.path = path
        self.count = 0
        self._out = None

    def add(self, line_no, line):
        if self._out is None:
            self._out = open(self.path, "wb")
        self._out.write(self._HEADER.pack(line_no, len(line)))
        self._out.write(line)
        self.count += 1

    def close(self):
        if self._out is not None:
            self._out.close()

    def batches(self, batch_bytes=JUDGE_BYTES):
        """Yields lists of ``(line_no, line)`` (bytes without the LF), about ``batch_bytes``
        each."""
        self.close()
        if self._out is None:
            return
        with open(self.path, "rb") as stream:
            batch, size = [], 0
            while True:
                header = stream.read(self._HEADER.size)
                if not header:
                    break
                line_no, length = self._HEADER.unpack(header)
                batch.append((line_no, stream.read(length)))
                size += length
                if size >= batch_bytes:
                    yield batch
                    batch, size = [], 0
            if batch:
                yield batch


def _strings(values):
    """A string Arrow array of ``values`` (UTF-8 bytes), built from buffers (see _ints)."""
    offsets, at = array.array("i", [0]), 0
    for value in values:
        at += len(value)
        offsets.append(at)
    return pa.Array.from_buffers(pa.string(), len(values), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(values))])


class _ProvenRows:
    """The proven rows as an Arrow stream (the PyCapsule interface), made by the C prover
    itself: each batch is a block's rows where the prover left them, and no pyarrow is needed.
    ``blocks`` yields the capsules of proven rows (prove(..., borrow=True)); an exception it
    raises is kept in ``failure`` (DuckDB only sees its text)."""

    def __init__(self, blocks):
        self._blocks = blocks
        self.failure = None

    def _next(self):
        try:
            return next(self._blocks, None)
        except BaseException as exc:
            self.failure = exc
            raise

    def __arrow_c_stream__(self, requested_schema=None):
        return shipping_ndjson.arrow_stream(_PROVER_FIELDS, self._next)


_CUT_SEARCH_BYTES = 64 * 1024


def file_blocks(fd, size, block_bytes):
    """``(offset, length)`` of the blocks of whole lines of the open file ``fd`` (``size``
    bytes), about ``block_bytes`` each: a block ends after the last line end within reach, or,
    when a line is longer than that, after the line's end."""
    start = 0
    while start < size:
        end = min(start + block_bytes, size)
        if end < size:
            end = _last_line_end(fd, start, end) or _next_line_end(fd, end, size)
        yield start, end - start
        start = end


def _last_line_end(fd, start, end):
    """The offset after the last LF in [start, end) of the file, or None."""
    while end > start:
        at = max(start, end - _CUT_SEARCH_BYTES)
        found = os.pread(fd, end - at, at).rfind(b"\n")
        if found >= 0:
            return at + found + 1
        end = at
    return None


def _next_line_end(fd, start, size):
    """The offset after the first LF at or after ``start``, or ``size``."""
    while start < size:
        chunk = os.pread(fd, min(_CUT_SEARCH_BYTES, size - start), start)
        found = chunk.find(b"\n")
        if found >= 0:
            return start + found + 1
        start += len(chunk)
    return size


def _prove_blocks(path, doubtful, workers, block_bytes):
    """Yields ``(rows, proven)`` per block of the file at ``path`` as the prover returns them
    (proven: the capsule of its proven rows), in order, adding the lines it could not prove to
    ``doubtful``. ``workers`` blocks are proven at once (the prover releases the GIL); it maps
    each block of the file itself."""
    pending = collections.deque()
    first_line, number = 1, 0
    with open(path, "rb") as source, ThreadPoolExecutor(max_workers=workers) as pool:
        fd = source.fileno()
        blocks = file_blocks(fd, os.fstat(fd).st_size, block_bytes)
        try:
            while True:
                while len(pending) < NATIVE_IN_FLIGHT:
                    block = next(blocks, None)
                    if block is None:
                        break
                    offset, size = block
                    pending.append((offset, pool.submit(shipping_ndjson.prove, _PROVER_FIELDS, (fd, offset), size, 0, True)))
                if not pending:
                    return
                offset, proving = pending.popleft()
                rows, proven, spots, lines = proving.result()
                spots = array.array("q", spots)
                for at in range(0, len(spots), 3):
                    start, end = offset + spots[at + 1], offset + spots[at + 2]
                    doubtful.add(first_line + spots[at], os.pread(fd, end - start, start))
                first_line += lines
                number += 1
                if number % PROGRESS_EVERY_BLOCKS == 0:
                    LOG.info("%d lines read so far (%d doubtful)", first_line - 1, doubtful.count)
                yield rows, proven
        finally:
            for _, proving in pending:
                proving.cancel()


def _judge_doubtful(checker, doubtful, source, quarantine):
    """Judges the doubtful lines by the exact rules: the bad ones go to ``quarantine``.
    Returns the valid ones, as a list of Arrow tables in RAW_SCHEMA."""
    rescued = []
    for batch in doubtful.batches():
        bad, numbers, lines = [], [], []
        for line_no, line in batch:
            entry = _invalid_utf8_entry(source, line_no, line)
            if entry is None:
                numbers.append(line_no)
                lines.append(line)
            else:
                bad.append(entry)
        if lines:
            table = pa.Table.from_arrays([_ints(numbers), _strings(lines)], schema=_block_schema())
            valid = checker.judge(table, bad)
            if valid is not None:
                rescued.append(valid)
        bad.sort(key=lambda entry: entry["line"])
        quarantine.write(bad)
    return rescued


def convert_native(source_path, target_path, quarantine_path, source, source_id,
                   memory_limit=DEFAULT_MEMORY_LIMIT, threads=None, temp_dir=None,
                   block_bytes=NATIVE_BLOCK_BYTES):
    """``convert`` with the C prover (shipping_ndjson): one pass over the file proves the
    lines and DuckDB writes the proven rows as they come; then the exact rules judge the rest.
    Same arguments and result as ``convert``, but ``source_path`` must be uncompressed and
    ``temp_dir`` is required."""
    checker = LineChecker(source, source_id, temp_dir, memory_limit=memory_limit, threads=threads,
                          temp_dir=temp_dir)
    doubtful = DoubtfulLines(os.path.join(temp_dir, "doubtful.bin"))
    quarantine = QuarantineWriter(quarantine_path)
    placeholder = _counts_placeholder(source)
    try:
        with _no_partial_outputs(quarantine, target_path):
            proven = _prove_blocks(source_path, doubtful, threads or os.cpu_count() or 1, block_bytes)
            rows_of = _ProvenRows(capsule for rows, capsule in proven if rows)
            try:
                rows = checker.copy_stream(rows_of, target_path, placeholder, source_id)
            except duckdb.Error:
                if rows_of.failure is not None:
                    raise rows_of.failure
                raise
            if doubtful.count:
                LOG.info("%d lines proven valid, %d left to the exact rules", rows, doubtful.count)
            rescued = _judge_doubtful(checker, doubtful, source, quarantine)
            quarantine.close()
            valid = rows + sum(table.num_rows for table in rescued)
            counts = _counts(source, valid, quarantine.rows)
            if not valid:
                os.remove(target_path)
            elif rescued:
                proven_path = os.path.join(temp_dir, "proven.parquet")
                os.replace(target_path, proven_path)
                _merge_parts(checker.connection, [proven_path], rescued, target_path, _counts_text(counts))
            else:
                _patch_counts(target_path, placeholder, counts)
    finally:
        doubtful.close()
        checker.close()
    return counts


def _plain_copy(source_path, work_dir):
    """The path of an uncompressed copy of a gzip file in ``work_dir`` (the path itself for an
    uncompressed file)."""
    if not is_gzip(source_path):
        return source_path
    plain = os.path.join(work_dir, "source.ndjson")
    with gzip.open(source_path, "rb") as packed, open(plain, "wb") as out:
        shutil.copyfileobj(packed, out, 1024 * 1024)
    return plain


PROVERS = ("auto", "c", "duckdb")


def convert(source_path, target_path, quarantine_path, source, source_id,
            memory_limit=DEFAULT_MEMORY_LIMIT, threads=None, temp_dir=None, block_bytes=None,
            fast=True, prover="auto"):
    """NDJSON file (gzip or not) -> raw Parquet at ``target_path`` + quarantine JSON lines at
    ``quarantine_path``, all local files. ``source`` is the URI named in the quarantine entries
    and the counts; ``source_id`` fills the ``source_id`` column. ``prover``: ``"c"`` proves
    lines with the C prover (convert_native; JobError when it is not installed), ``"duckdb"``
    with DuckDB, ``"auto"`` with the C prover when it is installed. With DuckDB, ``fast=False``
    skips the attempt to prove the whole file valid at once (the exact path alone gives the
    same result). ``block_bytes``: the size of the blocks lines are read in (each path has
    its default).

    Writes the Parquet file only if a line is valid and the quarantine file only if one is not.
    Returns the counts ``{"source", "read", "valid", "quarantined"}``.
    """
    scratch = None
    if temp_dir is None:
        scratch = temp_dir = tempfile.mkdtemp(prefix="json-to-parquet-")
    try:
        plain = _plain_copy(source_path, temp_dir)
        if _use_c_prover(prover):
            LOG.info("checking lines with the C prover")
            return convert_native(plain, target_path, quarantine_path, source, source_id,
                                  memory_limit=memory_limit, threads=threads, temp_dir=temp_dir,
                                  block_bytes=block_bytes or NATIVE_BLOCK_BYTES)
        LOG.info("checking lines with DuckDB%s", "" if shipping_ndjson else " (the C prover, glue/native, is not installed)")
        counts = None
        if fast:
            counts = convert_proven(plain, target_path, source, source_id, memory_limit=memory_limit,
                                    threads=threads, temp_dir=temp_dir)
        if counts is None:
            counts = convert_lines(plain, target_path, quarantine_path, source, source_id,
                                   memory_limit=memory_limit, threads=threads, temp_dir=temp_dir,
                                   block_bytes=block_bytes or BLOCK_BYTES)
        return counts
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _use_c_prover(prover):
    if prover not in PROVERS:
        raise jobio.JobError("--prover must be one of %s, got %r" % (", ".join(PROVERS), prover))
    if prover == "c" and shipping_ndjson is None:
        raise jobio.JobError("--prover c: the C prover (module shipping_ndjson, glue/native) is not installed")
    return prover != "duckdb" and shipping_ndjson is not None


# -- the job ------------------------------------------------------------------------------------

ARGUMENTS = ("source_uri", "target_uri", "quarantine_uri")
OPTIONS = {"source_id": None, "source_version_id": None, "memory_limit": DEFAULT_MEMORY_LIMIT, "threads": None, "prover": "auto"}


def main(argv, storage=None):
    """Runs the job on ``argv`` (Glue-style arguments). Returns the counts; raises JobError."""
    # The catalog step (glue/catalog.py) runs only when asked.
    args, catalog = jobio.parse_job_args(argv, ARGUMENTS, OPTIONS)
    threads = jobio.positive_int(args, "threads")
    storage = storage or jobio.Storage()
    if catalog is not None and catalog.catalog_only(args):
        return catalog.recheck(args, storage)
    source, target, quarantine = args["source_uri"], args["target_uri"], args["quarantine_uri"]
    source_id = args["source_id"] or jobio.stem(target)
    with jobio.WorkDir() as work:
        LOG.info("reading %s", source)
        local_source = storage.fetch(source, work, version_id=args["source_version_id"])
        local_target = os.path.join(work, "raw.parquet")
        local_quarantine = os.path.join(work, "quarantine.jsonl")
        counts = convert(local_source, local_target, local_quarantine, source, source_id,
                         memory_limit=args["memory_limit"], threads=threads, temp_dir=work,
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
    sys.exit(jobio.run(main))
