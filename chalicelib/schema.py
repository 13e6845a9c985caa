"""The shipping record: one definition, used by the generator, both Glue jobs, the local
crawler stand-in and the tests.

Shipped to Glue with ``--extra-py-files`` (as ``chalicelib/schema.py`` inside a zip), so it must
stay stdlib-only and Python 3.9-compatible.

Validation rules (published in the README):
each non-blank line is one record (blank lines are skipped and not counted; CRLF is accepted).
A record is valid when it is a JSON object and
  - shipping_id is a JSON integer > 0 (and fits int64),
  - shipping_date is a string YYYY/MM/DD that is a real calendar date,
  - destination_city is a non-empty string,
  - shipping_cost, shipping_distance, quantity are finite JSON numbers >= 0,
  - customer_name, street_address are absent, null or strings,
  - product_id is absent, null or a JSON integer (fitting int64).
Unknown fields are ignored. A valid record identical on the schema's fields to an earlier one in
the same file is a duplicate: dropped and counted. read = valid + quarantined + duplicates.
"""
from collections import namedtuple

# kind: how a field is validated
#   id        JSON integer > 0, int64          (required)
#   date      "YYYY/MM/DD", real date -> date32 (required)
#   text      non-empty string                  (required)
#   amount    finite JSON number >= 0 -> float64 (required)
#   opt_text  absent, null or string
#   opt_int   absent, null or JSON integer, int64
Field = namedtuple("Field", "name kind arrow_type glue_type pii required")

FIELDS = (
    Field("shipping_id", "id", "int64", "bigint", False, True),
    Field("shipping_date", "date", "date32", "date", False, True),
    Field("customer_name", "opt_text", "string", "string", True, False),
    Field("street_address", "opt_text", "string", "string", True, False),
    Field("destination_city", "text", "string", "string", False, True),
    Field("shipping_cost", "amount", "float64", "double", False, True),
    Field("shipping_distance", "amount", "float64", "double", False, True),
    Field("quantity", "amount", "float64", "double", False, True),
    Field("product_id", "opt_int", "int64", "bigint", False, False),
)

FIELD_NAMES = tuple(f.name for f in FIELDS)
PII_FIELDS = tuple(f.name for f in FIELDS if f.pii)
REQUIRED_FIELDS = tuple(f.name for f in FIELDS if f.required)
AMOUNT_FIELDS = tuple(f.name for f in FIELDS if f.kind == "amount")

DATE_FORMAT = "%Y/%m/%d"  # as producers write it
INT64_MAX = 2 ** 63 - 1
INT64_MIN = -(2 ** 63)

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
