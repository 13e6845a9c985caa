"""An independent, pure-Python statement of the published validation rules: the oracle tests
compare the pipeline's outputs against.

It shares nothing with ``glue/``: lines are split on ``b"\\n"`` only and parsed with the standard
``json`` module, made strict where that module is more lenient than the rules.

The rules (README, ``chalicelib.schema``), with the details they leave open made explicit:

- A UTF-8 byte order mark (EF BB BF) at the very start of the file is no part of the first line.
- A physical line is what lies between two ``b"\\n"``; a ``"\\r"`` before the ``"\\n"`` belongs to
  the line ending (CRLF). Line numbers count every physical line from 1.
- A line holding nothing but spaces, tabs and carriage returns is blank: skipped, not counted.
- Every other line is read: it must be UTF-8 and strict JSON (RFC 8259: no ``NaN``,
  ``Infinity``, trailing commas or lone ``\\u`` surrogates anywhere in the line) and a JSON object.
- A member given more than once: its first value counts (later ones are ignored like unknown
  fields).
- Field rules as in ``chalicelib/schema.py``: a JSON integer is written without fraction or
  exponent (``1.0`` and ``1e2`` are not integers), booleans are not numbers, dates are exactly
  ``YYYY/MM/DD`` in ASCII digits and name a real day (year 0001-9999).
- A valid record identical on all nine schema fields (amounts compared as float64) to an earlier
  valid record of the same file is a duplicate.

``read = valid + quarantined + duplicates`` where ``valid`` counts the records kept.
"""
import datetime
import gzip
import json
import math
import re
import sys

FIELD_NAMES = (
    "shipping_id", "shipping_date", "customer_name", "street_address", "destination_city",
    "shipping_cost", "shipping_distance", "quantity", "product_id",
)
AMOUNT_FIELDS = ("shipping_cost", "shipping_distance", "quantity")
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
_DATE = re.compile(r"([0-9]{4})/([0-9]{2})/([0-9]{2})", re.ASCII)
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
# Python refuses to turn integer literals longer than this into int; such a number is still JSON.
_INT_DIGITS_LIMIT = 4000
_MAX_NESTING = 20000


class BadLine(Exception):
    """A line the rules reject; ``str(exc)`` is why."""


def _reject_constant(name):
    raise BadLine("not valid JSON: %s is not a JSON number" % name)


def _parse_int(text):
    # A huge integer literal is valid JSON: keep it as a number that can never pass the
    # integer rules (out of int64) nor the amount rules (not finite).
    return int(text) if len(text) <= _INT_DIGITS_LIMIT else float("inf")


def _first_value_wins(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            # A dropped duplicate is still part of the line: it must be Unicode text too.
            json.dumps([key, value], ensure_ascii=False).encode("utf-8")
        obj.setdefault(key, value)
    return obj


def parse_line(raw):
    """Returns the record (dict) a non-blank physical line holds; raises BadLine."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadLine("not valid UTF-8 (byte %d)" % (exc.start + 1))
    limit = sys.getrecursionlimit()
    # JSON puts no bound on nesting; Python's json module recurses once per level.
    sys.setrecursionlimit(max(limit, _MAX_NESTING))
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int,
                           object_pairs_hook=_first_value_wins)
        # json.loads turns a lone \ud800 escape into a lone surrogate; JSON text is Unicode.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except BadLine:
        raise
    except UnicodeEncodeError:
        raise BadLine("not valid JSON: lone surrogate escape")
    except ValueError as exc:
        raise BadLine("not valid JSON: %s" % exc)
    finally:
        sys.setrecursionlimit(limit)
    if not isinstance(value, dict):
        raise BadLine("not a JSON object")
    return value


def _is_int(value):
    return type(value) is int  # bool is a subclass of int and is not a number here


def _finite_amount(value):
    if not (_is_int(value) or type(value) is float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def check_record(obj):
    """Returns the record's schema fields, typed (dates as ``datetime.date``, amounts as float);
    raises BadLine naming the first field that breaks a rule."""
    shipping_id = obj.get("shipping_id")
    if not (_is_int(shipping_id) and 0 < shipping_id <= INT64_MAX):
        raise BadLine("shipping_id must be an integer > 0")
    date_text = obj.get("shipping_date")
    match = _DATE.fullmatch(date_text) if isinstance(date_text, str) else None
    try:
        shipping_date = datetime.date(*(int(part) for part in match.groups())) if match else None
    except ValueError:
        shipping_date = None
    if shipping_date is None:
        raise BadLine("shipping_date must be a real date YYYY/MM/DD")
    for name in ("customer_name", "street_address"):
        if not (obj.get(name) is None or isinstance(obj.get(name), str)):
            raise BadLine("%s must be a string or null" % name)
    city = obj.get("destination_city")
    if not (isinstance(city, str) and city):
        raise BadLine("destination_city must be a non-empty string")
    amounts = {}
    for name in AMOUNT_FIELDS:
        number = _finite_amount(obj.get(name))
        if number is None or not number >= 0:
            raise BadLine("%s must be a finite number >= 0" % name)
        amounts[name] = number
    product_id = obj.get("product_id")
    if not (product_id is None or (_is_int(product_id) and INT64_MIN <= product_id <= INT64_MAX)):
        raise BadLine("product_id must be an integer or null")
    record = {name: obj.get(name) for name in FIELD_NAMES}
    record.update(amounts, shipping_date=shipping_date)
    return record


def _is_blank(raw):
    return raw.strip(b" \t\r") == b""


def read_bytes(source):
    """The file's bytes, gunzipped when they start with the gzip magic. ``source``: bytes or a path."""
    data = source if isinstance(source, (bytes, bytearray)) else open(source, "rb").read()
    data = bytes(data)
    return gzip.decompress(data) if data[:2] == _GZIP_MAGIC else data


class Analysis:
    """Every physical line's fate. ``kept``: valid records in file order (duplicates dropped);
    ``bad``: ``[(line number, reason, raw bytes without the line ending)]``; ``duplicate_lines``:
    line numbers of dropped duplicates; ``blank_lines``: line numbers skipped."""

    def __init__(self):
        self.kept = []
        self.kept_lines = []
        self.bad = []
        self.duplicate_lines = []
        self.blank_lines = []

    @property
    def read(self):
        return len(self.kept) + len(self.bad) + len(self.duplicate_lines)

    def counts(self):
        """``{"read", "valid", "quarantined", "duplicates", "totals": {amount field: sum}}``;
        sums are exact sums (math.fsum) of the kept records."""
        return {
            "read": self.read,
            "valid": len(self.kept),
            "quarantined": len(self.bad),
            "duplicates": len(self.duplicate_lines),
            "totals": {name: math.fsum(r[name] for r in self.kept) for name in AMOUNT_FIELDS},
        }


def analyze(source):
    """Applies the rules to a file (bytes or path, gzip or not). Returns an Analysis."""
    analysis = Analysis()
    seen = set()
    data = read_bytes(source)
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    for number, raw in enumerate(data.split(b"\n"), 1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if _is_blank(raw):
            analysis.blank_lines.append(number)
            continue
        try:
            record = check_record(parse_line(raw))
        except BadLine as exc:
            analysis.bad.append((number, str(exc), raw))
            continue
        identity = tuple(record[name] for name in FIELD_NAMES)
        if identity in seen:
            analysis.duplicate_lines.append(number)
            continue
        seen.add(identity)
        analysis.kept.append(record)
        analysis.kept_lines.append(number)
    return analysis


def evaluate(source):
    """``{"read", "valid", "quarantined", "duplicates", "totals": {"shipping_cost",
    "shipping_distance", "quantity"}}`` of a file (bytes or path, gzip or not), by the rules."""
    return analyze(source).counts()
