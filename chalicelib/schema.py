"""The shipping record and its validation rules, as data: the one place to change a rule.

Used by the generator, both Glue jobs, the local crawler stand-in and the tests. Every other form
of a rule is derived from the data here: the DuckDB SQL that proves and judges lines
(glue/datapath/rules_sql.py), the C prover's field specification (``prover_fields``), and the
README's rules table (``rules_table``; a test checks the README holds exactly that table).
``tests/reference.py`` states the rules again by hand, as an independent oracle; a test checks
it covers the same fields and kinds. See docs/DESIGN.md, "Changing a rule or adding a field".

Shipped to Glue with ``--extra-py-files`` (as ``chalicelib/schema.py`` inside a zip), so it must
stay stdlib-only and Python 3.9-compatible.

Line rules (published in the README): each non-blank line is one record (blank lines are skipped
and not counted; CRLF is accepted; a UTF-8 byte order mark at the start of a file is skipped).
A record is valid when it is a strict JSON object and each field follows its kind's rule below.
Unknown fields are ignored. A valid record identical on the schema's fields to an earlier one in
the same file is a duplicate: dropped and counted. read = valid + quarantined + duplicates.
"""
from collections import namedtuple

INT64_MAX = 2 ** 63 - 1
INT64_MIN = -(2 ** 63)
DATE_FORMAT = "%Y/%m/%d"  # as producers write it
DATE_PATTERN = "YYYY/MM/DD"
# The longest line the jobs read (bytes, line end excluded). A longer line is quarantined with its
# first bytes, its length and the reason; both provers hold a line of this length in memory.
MAX_LINE_BYTES = 128 * 1024 * 1024

# A kind: what JSON value a field takes, as data.
#   json        "integer", "number", "string" or "date" (a string in DATE_FORMAT naming a real day)
#   required    absent or null makes the record invalid (otherwise both are a null value)
#   minimum     the smallest value allowed (numbers), or None
#   exclusive   the minimum itself is not allowed
#   min_length  the shortest string allowed (characters), or None
#   arrow_type, glue_type: the column's type in the raw Parquet file and in the Glue catalog
Kind = namedtuple("Kind", "json required minimum exclusive min_length arrow_type glue_type")

KINDS = {
    "id": Kind("integer", True, 0, True, None, "int64", "bigint"),
    "date": Kind("date", True, None, False, None, "date32", "date"),
    "text": Kind("string", True, None, False, 1, "string", "string"),
    "amount": Kind("number", True, 0, False, None, "float64", "double"),
    "opt_text": Kind("string", False, None, False, None, "string", "string"),
    "opt_int": Kind("integer", False, None, False, None, "int64", "bigint"),
}

Field = namedtuple("Field", "name kind arrow_type glue_type pii required")


def _field(name, kind, pii=False):
    rule = KINDS[kind]
    return Field(name, kind, rule.arrow_type, rule.glue_type, pii, rule.required)


FIELDS = (
    _field("shipping_id", "id"),
    _field("shipping_date", "date"),
    _field("customer_name", "opt_text", pii=True),
    _field("street_address", "opt_text", pii=True),
    _field("destination_city", "text"),
    _field("shipping_cost", "amount"),
    _field("shipping_distance", "amount"),
    _field("quantity", "amount"),
    _field("product_id", "opt_int"),
)

FIELD_NAMES = tuple(f.name for f in FIELDS)
PII_FIELDS = tuple(f.name for f in FIELDS if f.pii)
REQUIRED_FIELDS = tuple(f.name for f in FIELDS if f.required)
AMOUNT_FIELDS = tuple(f.name for f in FIELDS if f.kind == "amount")

# The processed zone is partitioned by this column, written as YYYY-MM-DD.
PARTITION_FIELD = "shipping_date"
# Added to every output row: which landing object it came from (see chalicelib.naming).
SOURCE_ID_FIELD = "source_id"

# Athena result columns of the totals query, as the original design named them, in order, with
# the record field each one sums and the key used in summaries.
TOTALS = (
    ("Total_Cost_in_$", "shipping_cost", "shipping_cost"),
    ("Total_Distance_in_miles", "shipping_distance", "shipping_distance"),
    ("Total_Fuel_Quantity_in_gal", "quantity", "quantity"),
)


def field(name):
    for f in FIELDS:
        if f.name == name:
            return f
    raise KeyError(name)


def processed_fields():
    """Fields kept downstream of the raw zone: everything but PII."""
    return tuple(f for f in FIELDS if not f.pii)


def _number_text(value):
    return "%g" % value


def describe(kind):
    """A kind's rule in words, as the README and the quarantine reasons say it."""
    rule = KINDS[kind]
    if rule.json == "integer":
        text = "a JSON integer"
    elif rule.json == "number":
        text = "a finite JSON number"
    elif rule.json == "date":
        text = "a string `%s` that is a real calendar date" % DATE_PATTERN
    else:
        text = "a non-empty string" if rule.min_length == 1 else "a string"
        if rule.min_length and rule.min_length > 1:
            text = "a string of at least %d characters" % rule.min_length
    if rule.minimum is not None:
        text += " %s %s" % (">" if rule.exclusive else ">=", _number_text(rule.minimum))
    if rule.json == "integer":
        text += " (fits int64)"
    if not rule.required:
        text = "absent, null or " + text
    return text


def rules_table():
    """The README's table of field rules (markdown): one row per rule, fields that share a kind
    together, in schema order."""
    rows, seen = ["| field | rule |", "|---|---|"], []
    for f in FIELDS:
        if f.kind in seen:
            continue
        seen.append(f.kind)
        names = [g.name for g in FIELDS if g.kind == f.kind]
        pii = " (PII)" if all(field(name).pii for name in names) else ""
        rows.append("| %s%s | %s |" % (", ".join("`%s`" % name for name in names), pii, describe(f.kind)))
    return "\n".join(rows)


def prover_fields():
    """The C prover's field specification: ``(name, json, required, minimum, exclusive,
    min_length)`` per field, in schema order, from the kinds' data (glue/native/shipping_ndjson.c
    reads it; minimum is a float or None, min_length an int, 0 for none)."""
    specs = []
    for f in FIELDS:
        rule = KINDS[f.kind]
        minimum = None if rule.minimum is None else float(rule.minimum)
        specs.append((f.name, rule.json, rule.required, minimum, bool(rule.exclusive), rule.min_length or 0))
    return tuple(specs)
