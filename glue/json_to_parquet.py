"""Glue job json-to-parquet: one NDJSON landing object -> typed Parquet (raw zone) + quarantine.

    python glue/json_to_parquet.py --source_uri s3://landing/incoming/x.json \\
        --target_uri s3://lake/raw/<sid>.parquet --quarantine_uri s3://lake/quarantine/<sid>.jsonl \\
        [--source_id <sid>] [--memory_limit 300MB] [--threads N]

Every ``--*_uri`` may also be a local path. Other arguments (Glue's own) are ignored.

Each non-blank line is checked against the published rules (``chalicelib.schema``). Valid lines
become rows of the raw Parquet file (schema fields, typed, plus ``source_id``); every other line
goes to the quarantine file as ``{"source", "line", "reason", "record"}`` with the line verbatim.
The counts ``{"source", "read", "valid", "quarantined"}`` are stored in the Parquet key-value
metadata under ``shipping_etl.counts`` and printed as one JSON line on stdout. A file without a
single valid line fails the job (the quarantine file is still written).

How: the source is read in blocks of whole lines (gzip detected by its magic bytes). DuckDB
splits each block into numbered lines and validates them in SQL, parsing each line once with its
JSON reader; pyarrow writes the results while DuckDB checks the next block, so memory stays flat
whatever the file size. DuckDB's reader accepts a few things strict JSON does not (NaN,
Infinity, trailing commas); lines where those may occur are re-checked with Python's json module.
"""
import base64
import gzip
import json
import logging
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor

try:
    from chalicelib import schema
except ImportError:  # run from a checkout: chalicelib lives next to this script's folder
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from chalicelib import schema

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import jobio

LOG = logging.getLogger("shipping_etl.json_to_parquet")

COUNTS_METADATA_KEY = jobio.COUNTS_METADATA_KEY
DEFAULT_MEMORY_LIMIT = "300MB"
# Lines are read and checked this many bytes at a time; each block is cut into sub-blocks that
# DuckDB checks in parallel.
BLOCK_BYTES = 16 * 1024 * 1024
SUB_BLOCKS = 8
PROGRESS_EVERY_BLOCKS = 16
GZIP_MAGIC = b"\x1f\x8b"
# Columns with few distinct values, worth dictionary encoding; for the others (ids, names,
# addresses, amounts) building a dictionary costs more time than it saves space.
DICTIONARY_COLUMNS = ("shipping_date", "destination_city", "product_id", schema.SOURCE_ID_FIELD)

NOT_JSON = "not valid JSON"
NOT_OBJECT = "not a JSON object"

_ARROW_TYPES = {"int64": pa.int64(), "date32": pa.date32(), "string": pa.string(), "float64": pa.float64()}
RAW_SCHEMA = pa.schema([pa.field(f.name, _ARROW_TYPES[f.arrow_type]) for f in schema.FIELDS]
                       + [pa.field(schema.SOURCE_ID_FIELD, pa.string())])
_BLOCK_SCHEMA = pa.schema([("first_line", pa.int64()), ("block", pa.string())])


# -- the rules in SQL -------------------------------------------------------------------------
# Each field is looked at as the JSON text of its value ``t`` (DuckDB re-serialises it: strings
# keep their quotes, numbers their digits; NULL when the member is absent or null) and as the
# typed value ``v`` computed from that text.

_DATE_SHAPE = "'\"[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]\"'"
_DATE_FORMAT = "'\"%s\"'" % schema.DATE_FORMAT  # the quotes are part of the JSON text
# A string's value: the text without its quotes, unless it holds an escape.
_STRING_VALUE = ("CASE WHEN contains({t}, '\\') THEN json_extract_string({t}, '$') "
                 "ELSE substr({t}, 2, length({t}) - 2) END")

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
               "{v} BETWEEN 0 AND 1.7976931348623157e308",
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
# What a blank line may hold: spaces, tabs, carriage returns.
_BLANK_CHARS = "' ' || chr(9) || chr(13)"


def _sql_literal(text):
    return "'%s'" % text.replace("'", "''")


def check_sql(source_id, lenient_scan=False, validate_json=True):
    """The query that checks the lines of the Arrow table ``blocks`` (first_line, block).

    Returns one row per non-blank line: ``line_no``; ``suspect`` (DuckDB accepted the line but
    it may not be strict JSON; always false unless ``lenient_scan``); ``reason`` (NULL when the
    line is valid); ``record`` (the line, when not valid or suspect); the typed schema fields and
    ``source_id``. Without ``validate_json`` the query is cheaper but fails on a line that is not
    JSON at all.
    """
    struct = "{%s}" % ", ".join('"%s": "JSON"' % f.name for f in schema.FIELDS)
    texts, values, checks, reasons, outputs = [], [], [], [], []
    reasons.append("WHEN NOT is_json THEN %s" % _sql_literal(NOT_JSON))
    reasons.append("WHEN NOT starts_with(ltrim(line, %s), '{') THEN %s" % (_BLANK_CHARS, _sql_literal(NOT_OBJECT)))
    for f in schema.FIELDS:
        value, condition, wanted = _KINDS[f.kind]
        t, v = "t_" + f.name, "v_" + f.name
        texts.append("r.%s::VARCHAR AS %s" % (f.name, t))
        values.append("%s AS %s" % (value.format(t=t), v))
        condition = "coalesce(%s, false)" % condition.format(t=t, v=v)
        checks.append(condition)
        if f.required:
            reasons.append("WHEN %s IS NULL THEN %s" % (t, _sql_literal("%s is missing or null" % f.name)))
        reasons.append("WHEN NOT %s THEN %s || left(%s, 80)"
                       % (condition, _sql_literal("%s must be %s, got " % (f.name, wanted)), t))
        outputs.append("%s AS %s" % (v, f.name))
    struct = _sql_literal(struct)
    if validate_json:
        parse = "json_valid(line) AS is_json, CASE WHEN json_valid(line) THEN from_json(line, %s) END AS r" % struct
    else:
        parse = "true AS is_json, from_json(line, %s) AS r" % struct
    if lenient_scan:
        suspect = "CASE WHEN is_json THEN %s ELSE false END" % " OR ".join(
            "regexp_matches(line, %s)" % _sql_literal(p) for p in LENIENT_JSON_PATTERNS)
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
           source_id=_sql_literal(source_id), source_id_field=schema.SOURCE_ID_FIELD)


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


def open_source(path):
    """A binary stream of the file's lines, gunzipped when it starts with the gzip magic."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == GZIP_MAGIC else open(path, "rb")


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
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raw = line[:-1] if line.endswith(b"\r") else line
            bad.append(_quarantine_entry(source, first_line + offset,
                                         "not valid UTF-8 (byte %d of the line)" % (exc.start + 1), raw))
            lines[offset] = b""
    return b"\n".join(lines)


class Block:
    """One block of lines ready for DuckDB: ``table`` (Arrow: first_line, block), ``lines``
    (how many physical lines it holds), ``lenient`` (whether a line may use DuckDB's JSON
    leniencies), ``bad`` (quarantine entries of lines that are not UTF-8, blanked in ``table``)."""

    def __init__(self, table, lines, lenient, bad):
        self.table, self.lines, self.lenient, self.bad = table, lines, lenient, bad


def prepare_block(first_line, block, size, source, pieces=SUB_BLOCKS):
    """Cuts ``block[:size]`` (bytes or bytearray of whole lines, the first numbered
    ``first_line``) at line ends into up to ``pieces`` rows of an Arrow table, without copying.
    Returns a Block."""
    bounds = [0]
    for index in range(1, pieces):
        cut = block.find(b"\n", size * index // pieces, size) + 1
        if cut > bounds[-1]:
            bounds.append(cut)
    if bounds[-1] < size:
        bounds.append(size)
    buffer = pa.py_buffer(block)
    bad = []
    batches = []
    line = first_line
    lenient = False
    for start, end in zip(bounds, bounds[1:]):
        offsets = pa.array([0, end - start], pa.int32()).buffers()[1]
        piece = pa.Array.from_buffers(pa.binary(), 1, [None, offsets, buffer.slice(start, end - start)])
        try:
            text = piece.cast(pa.string())
        except pa.ArrowInvalid:
            text = pa.array([_without_invalid_utf8(line, bytes(block[start:end]), source, bad).decode("utf-8")])
        lenient = lenient or any(pc.any(pc.match_substring_regex(text, pattern)).as_py()
                                 for pattern in LENIENT_JSON_PATTERNS)
        batches.append(pa.record_batch([pa.array([line], pa.int64()), text], schema=_BLOCK_SCHEMA))
        line += block.count(b"\n", start, end)
    return Block(pa.Table.from_batches(batches, schema=_BLOCK_SCHEMA), line - first_line, lenient, bad)


class LineChecker:
    """Checks blocks of lines with DuckDB. ``memory_limit`` bounds DuckDB's memory (e.g.
    ``"300MB"``); ``threads`` its parallelism (default: one per CPU).

    Lines are first parsed without validating them as JSON, which is cheaper; from the first
    block holding a line that is not JSON on, every line is validated first.
    """

    def __init__(self, source, source_id, memory_limit=DEFAULT_MEMORY_LIMIT, threads=None, temp_dir=None):
        self.source = source
        self.connection = jobio.duckdb_connection(duckdb, memory_limit, preserve_insertion_order=True)
        if threads:
            self.connection.execute("SET threads = %d" % int(threads))
        if temp_dir:
            self.connection.execute("SET temp_directory = %s" % _sql_literal(temp_dir))
        self._sql = {(lenient, validate): check_sql(source_id, lenient_scan=lenient, validate_json=validate)
                     for lenient in (False, True) for validate in (False, True)}
        self.validate_json = False

    def close(self):
        self.connection.close()

    def check(self, block):
        """Returns ``(valid rows as an Arrow table in RAW_SCHEMA, [quarantine entries])`` for a
        Block, entries in line order."""
        try:
            checked = self._query(block)
        except duckdb.InvalidInputException:
            if self.validate_json:
                raise
            # A line is not JSON: from_json failed on it. Validate from now on.
            self.validate_json = True
            checked = self._query(block)
        bad = list(block.bad)
        valid = self._settle(checked, bad)
        bad.sort(key=lambda entry: entry["line"])
        return valid.select(RAW_SCHEMA.names).cast(RAW_SCHEMA), bad

    def _query(self, block):
        cursor = self.connection.cursor()
        try:
            cursor.register("blocks", block.table)
            # The relational API runs the query on all threads (execute().fetch_arrow_table() on one).
            return cursor.sql(self._sql[block.lenient, self.validate_json]).fetch_arrow_table()
        finally:
            cursor.close()

    def _settle(self, checked, bad):
        """The valid rows of ``checked``; the others become entries of ``bad``. Lines DuckDB's
        lenient reader accepted are valid only if they are strict JSON too."""
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
            valid = pa.concat_tables([valid, checked.take(pa.array(rescued, pa.int64()))])
        return valid


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _not_json_detail(line):
    """Why DuckDB's JSON parser refused a line Python's json module reads."""
    if _SURROGATE_ESCAPE.search(line):
        return "unpaired \\u surrogate escape"
    return "rejected by the JSON parser"


class RawWriter:
    """Writes valid rows to a Parquet file, created with the first row. Each block's rows form
    one row group (about 55,000 rows of 16 MiB of NDJSON)."""

    def __init__(self, path):
        self.path = path
        self.rows = 0
        self._writer = None

    def write(self, table):
        if not table.num_rows:
            return
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, RAW_SCHEMA, compression="snappy",
                                            use_dictionary=list(DICTIONARY_COLUMNS))
        self._writer.write_table(table, row_group_size=table.num_rows)
        self.rows += table.num_rows

    def close(self, metadata):
        """Finishes the file with ``metadata`` (str -> str) in its key-value metadata. Returns
        whether a file was written (only when there was a valid row)."""
        if self._writer is None:
            return False
        self._writer.add_key_value_metadata(metadata)
        self._writer.close()
        return True

    def abort(self):
        """Closes and removes the unfinished file."""
        if self._writer is not None:
            self._writer.close()
        if os.path.exists(self.path):
            os.remove(self.path)


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


def convert(source_path, target_path, quarantine_path, source, source_id,
            memory_limit=DEFAULT_MEMORY_LIMIT, threads=None, temp_dir=None, block_bytes=BLOCK_BYTES):
    """NDJSON file -> raw Parquet at ``target_path`` + quarantine JSON lines at
    ``quarantine_path``, all local files. ``source`` is the URI named in the quarantine entries
    and the counts; ``source_id`` fills the ``source_id`` column.

    Writes the Parquet file only if a line is valid and the quarantine file only if one is not.
    Returns the counts ``{"source", "read", "valid", "quarantined"}``.
    """
    checker = LineChecker(source, source_id, memory_limit=memory_limit, threads=threads, temp_dir=temp_dir)
    raw = RawWriter(target_path)
    quarantine = QuarantineWriter(quarantine_path)

    def store(result):
        valid, bad = result
        raw.write(valid)
        quarantine.write(bad)

    try:
        # DuckDB checks one block while this thread prepares the next and writes the previous one.
        with open_source(source_path) as stream, ThreadPoolExecutor(max_workers=1) as pool:
            in_flight = None
            first_line = 1
            for number, (buffer, size) in enumerate(BlockReader(stream, block_bytes), 1):
                block = prepare_block(first_line, buffer, size, source)
                first_line += block.lines
                submitted = pool.submit(checker.check, block)
                if in_flight is not None:
                    store(in_flight.result())
                in_flight = submitted
                if number % PROGRESS_EVERY_BLOCKS == 0:
                    LOG.info("%d lines read so far (%d valid)", first_line - 1, raw.rows)
            if in_flight is not None:
                store(in_flight.result())
    except BaseException:
        raw.abort()
        quarantine.close()
        raise
    finally:
        checker.close()
    quarantine.close()
    counts = {"source": source, "read": raw.rows + quarantine.rows, "valid": raw.rows,
              "quarantined": quarantine.rows}
    raw.close({COUNTS_METADATA_KEY: json.dumps(counts, sort_keys=True)})
    return counts


# -- the job ------------------------------------------------------------------------------------

ARGUMENTS = ("source_uri", "target_uri", "quarantine_uri")
OPTIONS = {"source_id": None, "memory_limit": DEFAULT_MEMORY_LIMIT, "threads": None}


def main(argv, storage=None):
    """Runs the job on ``argv`` (Glue-style arguments). Returns the counts; raises JobError."""
    args = jobio.parse_args(argv, ARGUMENTS, OPTIONS)
    threads = jobio.positive_int(args, "threads")
    storage = storage or jobio.Storage()
    source, target, quarantine = args["source_uri"], args["target_uri"], args["quarantine_uri"]
    source_id = args["source_id"] or jobio.stem(target)
    with jobio.WorkDir() as work:
        LOG.info("reading %s", source)
        local_source = storage.fetch(source, work)
        local_target = os.path.join(work, "raw.parquet")
        local_quarantine = os.path.join(work, "quarantine.jsonl")
        counts = convert(local_source, local_target, local_quarantine, source, source_id,
                         memory_limit=args["memory_limit"], threads=threads, temp_dir=work)
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
    jobio.print_result(counts)
    return counts


if __name__ == "__main__":
    sys.exit(jobio.run(main))
