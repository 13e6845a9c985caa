"""The rules of chalicelib.schema in DuckDB SQL, derived from its data: a cheap *proof* (which
vouches for plainly written valid lines) and the *exact rules* (which judge every other line and
name the reason). Nothing here states a limit of its own: each condition is built from a kind's
``json``, ``minimum``, ``exclusive`` and ``min_length``.
"""
from chalicelib import schema

import jobio

LARGEST_DOUBLE = "1.7976931348623157e308"
NOT_JSON = "not valid JSON"
NOT_OBJECT = "not a JSON object"
# What a blank line may hold: spaces, tabs, carriage returns.
BLANK_CHARS = "' ' || chr(9) || chr(13)"

# What DuckDB's JSON reader accepts beyond strict JSON: NaN/Infinity literals (any case) and
# trailing commas. Each pattern starts with one fixed character, which keeps the scan fast; a
# match inside a string only costs a second look at that line.
LENIENT_JSON_PATTERNS = (
    r",[ \t\r]*(?:[}\]]|[-+]?(?i:nan|inf|infinity)[ \t\r]*[,}\]])",
    r":[ \t\r]*[-+]?(?i:nan|inf|infinity)[ \t\r]*[,}\]]",
    r"\[[ \t\r]*[-+]?(?i:nan|inf|infinity)[ \t\r]*[,}\]]",
)
# Bytes DuckDB's line reader takes for whitespace around a JSON document and strict JSON does not.
NON_JSON_WHITESPACE = ("\x0b", "\x0c")


def _minimum(rule, v):
    """The condition of a kind's minimum on the typed value ``v`` (None without one)."""
    if rule.minimum is None:
        return None
    return "%s %s %r" % (v, ">" if rule.exclusive else ">=", rule.minimum)


def _all(*conditions):
    return " AND ".join("(%s)" % c for c in conditions if c)


# -- the exact rules (with reasons) ----------------------------------------------------------
# Each field is looked at as the JSON text of its value ``t`` (DuckDB re-serialises it: strings
# keep their quotes, numbers their digits; NULL when the member is absent or null) and as the
# typed value ``v`` computed from that text.

_DATE_SHAPE = "'\"%s\"'" % schema.DATE_PATTERN.replace("YYYY", "[0-9]" * 4).replace("MM", "[0-9]" * 2).replace("DD", "[0-9]" * 2)
_DATE_FORMAT = "'\"%s\"'" % schema.DATE_FORMAT  # the quotes are part of the JSON text
# A string's value: the text without its quotes, unless it holds an escape.
_STRING_VALUE = ("CASE WHEN contains({t}, '\\') THEN json_extract_string({t}, '$') "
                 "ELSE substr({t}, 2, length({t}) - 2) END")


def exact_rule(kind, t, v):
    """``(typed value of t, condition on t and v)`` of a kind's exact rule, as SQL."""
    rule = schema.KINDS[kind]
    if rule.json == "integer":
        # A JSON integer has no fraction or exponent: its text survives a round trip through
        # BIGINT (and the cast fails beyond int64).
        value, condition = "TRY_CAST(%s AS BIGINT)" % t, _all("%s::VARCHAR = %s" % (v, t), _minimum(rule, v))
    elif rule.json == "number":
        # NaN sorts above every number in DuckDB and infinity lies above the largest double: the
        # range leaves both out.
        value = "TRY_CAST(%s AS DOUBLE)" % t
        condition = _all("%s BETWEEN -%s AND %s" % (v, LARGEST_DOUBLE, LARGEST_DOUBLE), _minimum(rule, v))
    elif rule.json == "date":
        value = "CAST(try_strptime(%s, %s) AS DATE)" % (t, _DATE_FORMAT)
        condition = "%s IS NOT NULL AND %s GLOB %s AND %s[2:5] <> '0000'" % (v, t, _DATE_SHAPE, t)
    else:
        value = _STRING_VALUE.format(t=t)
        condition = _all("starts_with(%s, '\"')" % t,
                         rule.min_length and "length(%s) >= %d" % (v, rule.min_length))
    if not rule.required:
        condition = "%s IS NULL OR (%s)" % (t, condition)
    return value, condition


def check_sql(source_id):
    """The query that judges the lines of the Arrow table ``lines`` (line_no, line): one row per
    line with ``line_no``; ``reason`` (NULL when the line is valid by DuckDB's reading; a line
    it accepts must still be strict JSON, see datapath.judge); ``line``; the typed schema fields
    and ``source_id``."""
    struct = "{%s}" % ", ".join('"%s": "JSON"' % f.name for f in schema.FIELDS)
    texts, values, checks, reasons, outputs = [], [], [], [], []
    reasons.append("WHEN NOT is_json THEN %s" % jobio.sql_literal(NOT_JSON))
    reasons.append("WHEN NOT starts_with(ltrim(line, %s), '{') THEN %s" % (BLANK_CHARS, jobio.sql_literal(NOT_OBJECT)))
    for f in schema.FIELDS:
        t, v = "t_" + f.name, "v_" + f.name
        value, condition = exact_rule(f.kind, t, v)
        texts.append("r.%s::VARCHAR AS %s" % (f.name, t))
        values.append("%s AS %s" % (value, v))
        condition = "coalesce(%s, false)" % condition
        checks.append(condition)
        if f.required:
            reasons.append("WHEN %s IS NULL THEN %s" % (t, jobio.sql_literal("%s is missing or null" % f.name)))
        reasons.append("WHEN NOT %s THEN %s || left(%s, 80)"
                       % (condition, jobio.sql_literal("%s must be %s, got " % (f.name, schema.describe(f.kind))), t))
        outputs.append("%s AS %s" % (v, f.name))
    parse = "json_valid(line) AS is_json, CASE WHEN json_valid(line) THEN from_json(line, %s) END AS r" % jobio.sql_literal(struct)
    return """
WITH parsed AS (SELECT line_no, line, {parse} FROM lines),
texts AS (SELECT line_no, line, is_json, {texts} FROM parsed),
typed AS (SELECT *, {values} FROM texts),
checked AS (SELECT *, {checks} AS ok FROM typed)
SELECT line_no, CASE WHEN ok THEN NULL ELSE CASE {reasons} ELSE 'invalid record' END END AS reason, line,
       {outputs}, {source_id} AS {source_id_field}
FROM checked
""".format(parse=parse, texts=", ".join(texts), values=", ".join(values), checks=" AND ".join(checks),
           reasons=" ".join(reasons), outputs=", ".join(outputs), source_id=jobio.sql_literal(source_id),
           source_id_field=schema.SOURCE_ID_FIELD)


# -- the proof (cheap, no reasons) -------------------------------------------------------------
# Strings and dates are read as VARCHAR (DuckDB unescapes them), numbers as JSON (their text as
# written). A typed read bends: it turns the number 5 into the string '5', the string "12" into
# the number 12, 1.0 into the integer 1. So each condition below holds only for values that are
# valid under the rules *and* cannot have been bent; a value it cannot vouch for (e.g. the string
# "5" as a city, indistinguishable from the number 5) is left to the exact rules.

# A VARCHAR read of a number, boolean, array or object is that value's JSON text, which DuckDB's
# own parser accepts; a string whose content is no JSON text (nearly every name, address and
# city), or one starting with a quote, can only have been a string.
_CERTAIN_STRING = "(NOT json_valid({c}) OR starts_with({c}, '\"'))"
# The JSON text of a number is an integer unless it has a fraction or an exponent. (BIGINT's
# cast alone would take 1.0 and 1e2.)
_INTEGER_TEXT = "NOT (contains({c}::VARCHAR, '.') OR contains({c}::VARCHAR, 'e') OR contains({c}::VARCHAR, 'E'))"
_PROOF_TYPES = {"integer": "JSON", "number": "JSON", "date": "VARCHAR", "string": "VARCHAR"}


def proof_rule(kind, c, v):
    """``(typed value, condition that proves the value valid)`` of a kind, as SQL over the column
    ``c`` read as ``proof_columns`` says."""
    rule = schema.KINDS[kind]
    if rule.json == "integer":
        value = "TRY_CAST(%s::VARCHAR AS BIGINT)" % c
        condition = _all("%s IS NOT NULL" % v, _INTEGER_TEXT.format(c=c), _minimum(rule, v))
    elif rule.json == "number":
        value = "TRY_CAST(%s::VARCHAR AS DOUBLE)" % c
        condition = _all("%s BETWEEN -%s AND %s" % (v, LARGEST_DOUBLE, LARGEST_DOUBLE), _minimum(rule, v))
    elif rule.json == "date":
        # The shape leaves DuckDB's date cast (which takes more than YYYY/MM/DD) only real dates
        # to reject; year 0 it reads as 1 BC.
        value = "TRY_CAST(%s AS DATE)" % c
        condition = "%s GLOB %s AND year(%s) >= 1" % (c, _DATE_SHAPE.replace('"', ""), v)
    else:
        value = c
        condition = _all(_CERTAIN_STRING.format(c=c), rule.min_length and "length(%s) >= %d" % (c, rule.min_length))
    if not rule.required:
        condition = "%s IS NULL OR (%s)" % (c, condition)
    return value, condition


def proof_columns():
    """The struct of ``from_json`` that reads the schema fields the way the proof needs them."""
    return "{%s}" % ", ".join('"%s": "%s"' % (f.name, _PROOF_TYPES[schema.KINDS[f.kind].json])
                              for f in schema.FIELDS)


def _proof_select(relation, keep):
    """The proof over ``relation`` (the schema fields as ``proof_columns`` reads them, plus the
    columns named in ``keep``): those columns, the typed schema fields and ``proven``."""
    values, conditions = [], []
    for f in schema.FIELDS:
        value, condition = proof_rule(f.kind, '"%s"' % f.name, "v_" + f.name)
        values.append("%s AS v_%s" % (value, f.name))
        conditions.append(condition)
    return """SELECT {keep}{outputs}, coalesce({conditions}, false) AS proven
FROM (SELECT *, {values} FROM {relation})""".format(
        keep="".join("%s, " % name for name in keep),
        outputs=", ".join('v_%s AS "%s"' % (f.name, f.name) for f in schema.FIELDS),
        conditions=" AND ".join("(%s)" % c for c in conditions), values=", ".join(values), relation=relation)


def proof_sql(lenient_scan):
    """The proof over the Arrow table ``lines`` (line_no, line): one row per non-blank line with
    ``line_no``, ``line`` (NULL when proven), the typed schema fields and ``proven`` (false also
    for a line that may use DuckDB's JSON leniencies, when ``lenient_scan``).

    Every line is validated before from_json parses it (from_json fails the whole query on a
    line that is not JSON)."""
    parse = "CASE WHEN json_valid(line) THEN from_json(line, %s) END" % jobio.sql_literal(proof_columns())
    lenient = " OR ".join("regexp_matches(line, %s)" % jobio.sql_literal(p) for p in LENIENT_JSON_PATTERNS)
    relation = """(
    SELECT line_no, line, {lenient} AS lenient, {fields}
    FROM (SELECT line_no, line, {parse} AS r FROM lines
          -- not blank (most lines start with a brace, which spares the trim)
          WHERE CASE WHEN starts_with(line, '{{') THEN true ELSE trim(line, {blank}) <> '' END)
)""".format(lenient=lenient if lenient_scan else "false",
            fields=", ".join('r."%s" AS "%s"' % (f.name, f.name) for f in schema.FIELDS),
            parse=parse, blank=BLANK_CHARS + " || chr(10)")
    return """
SELECT line_no, CASE WHEN proven AND NOT lenient THEN NULL ELSE line END AS line, {outputs},
       proven AND NOT lenient AS proven
FROM ({proof})
""".format(outputs=", ".join('"%s"' % f.name for f in schema.FIELDS),
           proof=_proof_select(relation, keep=("line_no", "line", "lenient")))


def block_proof_sql(path):
    """The proof of a whole block of lines at once, read from the file at ``path`` by DuckDB's
    NDJSON reader (much faster than one parse per line): the typed schema fields and ``proven``
    per non-blank line. It fails on a line its reader cannot take; its reader is lenient (see
    LENIENT_JSON_PATTERNS), so the caller scans the raw bytes for that first."""
    read_json = "read_json(%s, format='newline_delimited', columns=%s)" % (
        jobio.sql_literal(path), proof_columns().replace('"', "'"))
    return _proof_select(read_json, keep=())
