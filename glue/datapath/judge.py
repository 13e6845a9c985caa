"""The judge: applies the exact rules to the lines a prover could not vouch for, and says why a
line is bad. DuckDB runs the rules' SQL (datapath.rules_sql.check_sql, derived from
chalicelib.schema); Python's json module, made strict, confirms that a line DuckDB's lenient
parser accepted is strict JSON (RFC 8259: no NaN, Infinity, trailing commas, other whitespace).
"""
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
    except (ValueError, RecursionError) as exc:
        return str(exc)
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
    outside = _STRING_LITERAL.sub('""', text)
    return any(char in outside for char in rules_sql.NON_JSON_WHITESPACE) or any(
        pattern.search(outside) for pattern in _LENIENT)


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
        bad, numbers, texts = [], [], []
        for number, raw in lines:
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad.append((number, "not valid UTF-8 (byte %d of the line)" % (exc.start + 1), raw))
                continue
            numbers.append(number)
            texts.append(text)
        rescued = None
        if texts:
            table = pa.Table.from_arrays([provers._ints(numbers), provers.strings([text.encode("utf-8") for text in texts])],
                                         names=["line_no", "line"])
            cursor = self.connection.cursor()
            try:
                cursor.register("lines", table)
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
                valid = checked.take(provers._ints(keep)).select(provers.record_schema().names)
                rescued = valid.cast(provers.record_schema()).combine_chunks().to_batches()[0]
        bad.sort(key=lambda item: item[0])
        return rescued, bad
