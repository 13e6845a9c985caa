"""The judge: applies the exact rules to the lines a prover could not vouch for, and says why a
line is bad. DuckDB runs the rules' SQL (datapath.rules_sql.check_sql, derived from
chalicelib.schema); Python's json module, made strict, confirms that a line DuckDB's lenient
parser accepted is strict JSON (RFC 8259: no NaN, Infinity, trailing commas, other whitespace).
"""
import datetime
import json
import re

from chalicelib import schema

import jobio
from datapath import provers, rules_sql

pa = jobio.ImportedOnUse("pyarrow")
pc = jobio.ImportedOnUse("pyarrow.compute")


def strict_json_error(text):
    """Why ``text`` is not strict JSON (RFC 8259), or None when it is."""
    def reject(name):
        raise ValueError("%s is not a JSON number" % name)

    try:
        json.loads(text, parse_constant=reject)
    except ValueError as exc:
        return str(exc)
    except RecursionError:
        return None  # nested deeper than Python's parser follows: the caller's parser has said why
    return None


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _not_json_detail(text):
    """Why DuckDB's JSON parser refused a line Python's json module reads."""
    if _SURROGATE_ESCAPE.search(text):
        return "unpaired \\u surrogate escape"
    return "rejected by the JSON parser"


_STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"')
_LENIENT = tuple(re.compile(pattern) for pattern in rules_sql.LENIENT_JSON_PATTERNS)


def beyond_strict_json(text):
    """Whether a line DuckDB's parser accepted uses what it accepts beyond strict JSON (NaN,
    Infinity, trailing commas, vertical tab or form feed as whitespace) outside its strings.
    Iterative: a line nested 100,000 deep is looked at like any other."""
    # A match outside the strings (the patterns hold no quote) is a match in the whole line too:
    # most lines have none, and are spared taking their strings out (a third of the time).
    return _lenient(text) and _lenient(_STRING_LITERAL.sub('""', text))


def _lenient(text):
    return any(char in text for char in rules_sql.NON_JSON_WHITESPACE) or any(
        pattern.search(text) for pattern in _LENIENT)


# A line longer than this is judged in Python (python_rules): DuckDB's JSON functions take many
# times a line's size in memory and time on a line of tens of megabytes.
LONG_LINE_BYTES = 1024 * 1024
_DATE = re.compile(r"[0-9]{4}/[0-9]{2}/[0-9]{2}", re.ASCII)
# Python refuses to turn integer literals longer than this into int; such a number is still JSON
# (and can pass no rule: out of int64, not finite as a double).
_INT_DIGITS_LIMIT = 4000


def _parse_int(text):
    return int(text) if len(text) <= _INT_DIGITS_LIMIT else float("inf")


def _first_value_wins(pairs):
    obj = {}
    for key, value in pairs:
        obj.setdefault(key, value)
    return obj


def _typed(kind, value):
    """``(valid, typed value)`` of a JSON value (None: absent or null) under a kind's rule."""
    rule = schema.KINDS[kind]
    if value is None:
        return not rule.required, None
    if rule.json in ("integer", "number") and type(value) in (int, float):
        if rule.json == "integer" and not (type(value) is int and schema.INT64_MIN <= value <= schema.INT64_MAX):
            return False, None
        try:
            number = float(value) if rule.json == "number" else value
        except OverflowError:  # an integer beyond the largest double: not finite
            return False, None
        if rule.json == "number" and number in (float("inf"), float("-inf")):
            return False, None
        if rule.minimum is not None and not (number > rule.minimum if rule.exclusive else number >= rule.minimum):
            return False, None
        return True, number
    if rule.json == "date" and isinstance(value, str) and _DATE.fullmatch(value):
        try:
            return True, datetime.datetime.strptime(value, schema.DATE_FORMAT).date()
        except ValueError:
            return False, None
    if rule.json == "string" and isinstance(value, str) and len(value) >= (rule.min_length or 0):
        return True, value
    return False, None


def python_rules(text):
    """The exact rules in Python, from chalicelib.schema's data, for one line: returns
    ``(reason or None, {field: typed value})``."""
    def reject(name):
        raise ValueError("%s is not a JSON number" % name)

    try:
        value = json.loads(text, parse_constant=reject, parse_int=_parse_int, object_pairs_hook=_first_value_wins)
        if _SURROGATE_ESCAPE.search(text):
            json.dumps(value, ensure_ascii=False).encode("utf-8")  # a lone surrogate cannot be encoded
    except UnicodeEncodeError:
        return "%s: unpaired \\u surrogate escape" % rules_sql.NOT_JSON, None
    except ValueError as exc:
        return "%s: %s" % (rules_sql.NOT_JSON, exc), None
    except RecursionError:
        return "%s: nested deeper than the line length allows to check" % rules_sql.NOT_JSON, None
    if not isinstance(value, dict):
        return rules_sql.NOT_OBJECT, None
    typed = {}
    for f in schema.FIELDS:
        raw = value.get(f.name)
        ok, typed[f.name] = _typed(f.kind, raw)
        if not ok:
            if raw is None:
                return "%s is missing or null" % f.name, None
            return "%s must be %s, got %s" % (f.name, schema.describe(f.kind), json.dumps(raw)[:80]), None
    return None, typed


class Judge:
    """Judges lines on ``connection`` (a cursor per call: lines may be judged on several
    threads)."""

    def __init__(self, connection, source_id="none"):
        self.connection = connection
        self._sql = rules_sql.check_sql(source_id)

    def judge(self, lines):
        """``lines``: ``[(line number, bytes without the LF)]``. Returns ``(rescued, bad)``: the
        valid ones as an Arrow record batch of the schema fields (or None) and the others as
        ``[(line number, reason, bytes without the line end)]``, in line order."""
        bad, numbers, texts, long_rows = [], [], [], []
        for number, raw in lines:
            if raw[-1:] == b"\r":
                raw = raw[:-1]
            try:
                text = str(raw, "utf-8")
            except UnicodeDecodeError as exc:
                bad.append((number, "not valid UTF-8 (byte %d of the line)" % (exc.start + 1), bytes(raw)))
                continue
            if len(raw) > LONG_LINE_BYTES:
                reason, typed = python_rules(text)
                if reason is None:
                    long_rows.append(typed)
                else:
                    bad.append((number, reason, bytes(raw)))
                continue
            numbers.append(number)
            texts.append(text)
        rescued = self._rows(long_rows) if long_rows else None
        if texts:
            table = pa.Table.from_arrays([provers._ints(numbers), provers.strings([text.encode("utf-8") for text in texts])],
                                         names=["line_no", "line"])
            cursor = self.connection.cursor()
            try:
                cursor.register("lines", provers.ArrowStream(table))
                checked = cursor.execute(self._sql).fetch_arrow_table()
            finally:
                cursor.close()
            keep = []
            for index, (number, reason, text) in enumerate(zip(checked.column("line_no").to_pylist(),
                                                                  checked.column("reason").to_pylist(),
                                                                  checked.column("line").to_pylist())):
                if reason != rules_sql.NOT_JSON and beyond_strict_json(text):
                    reason = "%s: %s" % (rules_sql.NOT_JSON, strict_json_error(text) or "not strict JSON")
                elif reason == rules_sql.NOT_JSON:
                    reason = "%s: %s" % (rules_sql.NOT_JSON, strict_json_error(text) or _not_json_detail(text))
                if reason is None:
                    keep.append(index)
                else:
                    bad.append((number, reason, text.encode("utf-8")))
            if keep:
                if rescued is not None:  # rare: long and short lines valid in one block
                    keep_rows = checked.take(provers._ints(keep)).select(provers.record_schema().names)
                    rescued = self._rows(keep_rows.to_pylist() + rescued.to_pylist())
                else:
                    valid = checked.take(provers._ints(keep)).select(provers.record_schema().names)
                    rescued = valid.cast(provers.record_schema()).combine_chunks().to_batches()[0]
        bad.sort(key=lambda item: item[0])
        return rescued, bad

    @staticmethod
    def _rows(rows):
        """An Arrow record batch of the schema fields from ``[{field: typed value}]``."""
        record = provers.record_schema()
        return pa.RecordBatch.from_arrays([pa.array([row[name] for row in rows], record.field(name).type)
                                           for name in record.names], schema=record)
