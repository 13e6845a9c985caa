"""The C prover (glue/native/shipping_ndjson.c) against the independent reference (tests/reference.py).

The prover may leave a valid line to the exact rules ("doubtful": costs speed only), but a line
it proves must be one the rules accept, with exactly the values they give: ints, float64 bit for
bit, date32 days, unescaped UTF-8 strings, nulls for absent or null optional fields. Every test
here checks that line by line; how many valid lines were left doubtful (the prover's coverage)
is reported at the end of the module, not asserted, except for the generator's clean output,
which must be proven whole (the performance contract).
"""
import array
import datetime
import json
import random
import struct
import sys
import threading

import pyarrow as pa
import pytest

import reference
import shipping_ndjson
from chalicelib import schema
from chalicelib.generator import generate_ndjson

FIELDS = schema.prover_fields()
ARROW_TYPES = {"int64": pa.int64(), "date32": pa.date32(), "string": pa.string(), "float64": pa.float64()}
WIDTHS = {"int64": 8, "date32": 4, "float64": 8}
DAY = datetime.date(2026, 1, 1)

# category -> [lines, valid by the rules, proven, valid but left doubtful]
COVERAGE = {}


@pytest.fixture(scope="module", autouse=True)
def coverage_report(request):
    """Prints how many lines the rules accept the prover left doubtful, per category."""
    yield
    if not COVERAGE:
        return
    lines = ["native prover coverage (valid lines left to the exact rules):"]
    for category, (count, valid, proven, doubtful) in sorted(COVERAGE.items()):
        lines.append("  %-22s %6d lines, %6d valid, %6d proven, %5d valid but doubtful"
                     % (category, count, valid, proven, doubtful))
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is None:
        print("\n" + "\n".join(lines))
        return
    with capture.global_and_fixture_disabled():  # as capsys.disabled() does
        print("\n" + "\n".join(lines))


# -- running the prover and the rules --------------------------------------------------------

def run_prover(block, size=None, first_line=1, fields=FIELDS):
    """Calls prove and checks the shape of what it returns. Returns (records, doubtful triples,
    lines): records as dicts of Python values (dates as datetime.date, amounts as float)."""
    size = len(block) if size is None else size
    rows, columns, doubtful, lines = shipping_ndjson.prove(fields, block, size, first_line)
    assert len(columns) == len(fields)
    by_name = {f.name: f for f in schema.FIELDS}
    values = {}
    for (name, *_rule), (validity, data, offsets, nulls) in zip(fields, columns):
        field = by_name[name]
        if field.required:
            assert validity is None and nulls == 0, name
        if validity is None:
            assert nulls == 0, name
        else:
            assert nulls > 0 and len(validity) == (rows + 7) // 8, name
        if field.arrow_type == "string":
            assert len(offsets) == 4 * (rows + 1), name
        else:
            assert offsets is None and len(data) == WIDTHS[field.arrow_type] * rows, name
        buffers = [None if validity is None else pa.py_buffer(validity)]
        if offsets is not None:
            buffers.append(pa.py_buffer(offsets))
        buffers.append(pa.py_buffer(data))
        column = pa.Array.from_buffers(ARROW_TYPES[field.arrow_type], rows, buffers, null_count=nulls)
        column.validate(full=True)  # offsets in order and in range, strings valid UTF-8
        assert column.null_count == nulls, name
        values[name] = column.to_pylist()
    records = [{spec[0]: values[spec[0]][row] for spec in fields} for row in range(rows)]
    spots = array.array("q", doubtful)
    if sys.byteorder != "little":
        spots.byteswap()
    assert len(spots) % 3 == 0
    return records, [tuple(spots[k:k + 3]) for k in range(0, len(spots), 3)], lines


BLANK = "blank"


def judge(raw):
    """The rules' verdict on one physical line (without its LF): BLANK, the record's schema
    values, or the BadLine."""
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if reference._is_blank(raw):
        return BLANK
    try:
        return reference.check_record(reference.parse_line(raw))
    except reference.BadLine as exc:
        return exc


def same_value(field, expected, got):
    if field.kind == "amount":
        return type(got) is float and struct.pack("<d", expected) == struct.pack("<d", got)
    return type(got) is type(expected) and got == expected


def check_lines(lines, category=None, first_line=1, block_type=bytes):
    """Proves ``lines`` (bytes, no LF) as one block and compares every line with the rules.
    Returns [(line, verdict, proven)] for the non-blank lines."""
    assert all(b"\n" not in line for line in lines)
    block = block_type(b"".join(line + b"\n" for line in lines))
    records, doubtful, count = run_prover(block, first_line=first_line)
    assert count == len(lines)
    starts, at = [], 0
    for line in lines:
        starts.append(at)
        at += len(line) + 1
    doubtful_at = {}
    for line_no, start, end in doubtful:
        index = line_no - first_line
        assert 0 <= index < len(lines) and index not in doubtful_at
        assert (start, end) == (starts[index], starts[index] + len(lines[index]))
        doubtful_at[index] = True
    assert [t[0] for t in doubtful] == sorted(t[0] for t in doubtful)
    proven_rows = iter(records)
    outcome = []
    for index, line in enumerate(lines):
        verdict = judge(line)
        if verdict is BLANK:
            assert index not in doubtful_at, "blank line %r reported doubtful" % line[:200]
            continue
        proven = index not in doubtful_at
        if proven:
            record = next(proven_rows, None)
            assert record is not None, "fewer rows than proven lines"
            assert isinstance(verdict, dict), "proved a line the rules reject (%s): %r" % (verdict, line[:300])
            for field in schema.FIELDS:
                assert same_value(field, verdict[field.name], record[field.name]), (
                    "%s: rules %r, prover %r in %r" % (field.name, verdict[field.name], record[field.name], line[:300]))
        outcome.append((line, verdict, proven))
    assert next(proven_rows, None) is None, "more rows than proven lines"
    if category is not None:
        tally(category, outcome)
    return outcome


def tally(category, outcome):
    counts = COVERAGE.setdefault(category, [0, 0, 0, 0])
    for _line, verdict, proven in outcome:
        valid = isinstance(verdict, dict)
        counts[0] += 1
        counts[1] += valid
        counts[2] += proven
        counts[3] += valid and not proven


# -- a hand-written corpus of tricky lines ---------------------------------------------------

BASE = (
    ("shipping_id", "1"),
    ("shipping_date", '"2024/02/29"'),
    ("customer_name", '"Ann"'),
    ("street_address", '"1 Main St"'),
    ("destination_city", '"main_city"'),
    ("shipping_cost", "1000.0"),
    ("shipping_distance", "12"),
    ("quantity", "3"),
    ("product_id", "7"),
)
DROP = object()


def _b(text):
    return text if isinstance(text, bytes) else text.encode("utf-8")


def rec(_first=(), _extra=(), _sep=b", ", _colon=b": ", _open=b"{", _close=b"}", **values):
    """A line: BASE's members with the raw values in ``values`` (DROP removes one), the raw
    (key, value) members ``_first`` before them and ``_extra`` after them."""
    members = [(_b(key), _b(value)) for key, value in _first]
    for name, value in BASE:
        value = values.pop(name, value)
        if value is not DROP:
            members.append((b'"%s"' % name.encode(), _b(value)))
    assert not values, values
    members += [(_b(key), _b(value)) for key, value in _extra]
    return _b(_open) + _b(_sep).join(key + _b(_colon) + value for key, value in members) + _b(_close)


VALID = rec()

ID_TOKENS = [
    "1", "12", '"12"', "1.0", "1e2", "1E2", "10e-1", "true", "false", "null", DROP, "-1", "-0", "0",
    "00", "01", "+1", "9223372036854775807", "9223372036854775808", "-9223372036854775808",
    "18446744073709551615", "18446744073709551616", "99999999999999999999", "1" * 400, "1" * 5000,
    "1.", ".1", "1e", "0x1", "\uff11", "NaN", "Infinity", "-Infinity", "[1]", "{}", "1 2", "- 1",
    "1000000000000000000", "999999999999999999", "4611686018427387904",
]

AMOUNT_TOKENS = [
    "0", "-0", "-0.0", "0.0", "0e0", "0E-0", "-0e5", "0e99999", "0e-99999", "0e100000",
    "0.000e123456789", "1", "12", '"12"', "true", "false", "null", DROP, "-1", "-1e-400", "1e2",
    "1E+2", "1e-2", "0.1", "0.3", "2.5", "1000.0", "1.5e3", "1e22", "1e23", "1e-22", "1e-23",
    "123e-22", "123e-25", "9007199254740992", "9007199254740993", "9007199254740993.0",
    "9007199254740992e22", "9007199254740993e-22", "9007199254740991e-22", "9007199254740991e23",
    "18014398509481985", "12345678901234567890", "1234567890123456789", "1.234567890123456789",
    "1.2345678901234567", "0.1000000000000000055511151231257827",
    "1.00000000000000011102230246251565404236316680908203125",
    "1.00000000000000011102230246251565404236316680908203124",
    "1.00000000000000011102230246251565404236316680908203126",
    "1.7976931348623157e308", "1.7976931348623158e308", "1.7976931348623159e308", "1e308", "1e309",
    "1e400", "-1e400", "5e-324", "4.9406564584124654e-324", "2.4703282292062327e-324",
    "2.4703282292062328e-324", "1e-400", "2.2250738585072014e-308", "2.2250738585072011e-308",
    "NaN", "-NaN", "Infinity", "-Infinity", "nan", "inf", "1.", ".5", "01.5", "1e", "1e+", "1.e5",
    "1_000", "\uff11\uff12", "0x10", "1" * 300, "1" * 400, "1" * 5000, "1" * 5000 + ".0",
    "0." + "0" * 400 + "1", "1e" + "9" * 30, "1e-" + "9" * 30, "10" * 10 + "e-20", "1e0000000000000000005",
    "0.0000000000000000001", "00000", "1.0e", "1e1.5", "[0]", '"0"',
    "7064.0", "7064.00000000000000000000", "70.64e2", "706400e-2", "0.7064e4",
    "123456789012345.678", "9007199254740992.5", "4503599627370496.5", "4503599627370497.5",
]

PRODUCT_TOKENS = [
    "null", DROP, "0", "-5", "-0", "1.0", '"7"', "true", "9223372036854775807", "9223372036854775808",
    "-9223372036854775808", "-9223372036854775809", "1e2", "[]", "{}", "nul", "Null", "NULL",
]

TEXT_TOKENS = [
    "null", DROP, '""', "123", "true", "{}", "[]", '"a"', r'"a\"b"', r'"a\\b"', r'"a\/b"',
    r'"\b\f\n\r\t"', r'"\u0041"', r'"\u00e9"', r'"\ud83d\ude00"', r'"\uD83D\uDE00"', r'"\ud83d"',
    r'"\ude00"', r'"\ud83d\u0041"', r'"\ud83dx"', r'"\ude00\ud83d"', r'"\ud83d\ud83d\ude00"',
    r'"\u0000"', r'"\u12"', r'"\u12G4"', r'"\U0041"', r'"\x41"', r'"\a"', r"'a'", r'"\'"', '"a',
    b'"a\\', b'"\x01"', b'"\x1f"', b'"\x7f"', b'"\ttab"', b'"\x00"', b'"caf\xc3\xa9"',
    b'"\xe2\x82\xac"', b'"\xf0\x9f\x98\x80"', b'"\xf4\x8f\xbf\xbf"', b'"\xef\xbb\xbf"',
    b'"\xc0\x80"', b'"\xc1\xbf"', b'"\xe0\x80\x80"', b'"\xe0\x9f\xbf"', b'"\xed\xa0\x80"',
    b'"\xed\xbf\xbf"', b'"\xed\xa0\xbd\xed\xb8\x80"', b'"\xf0\x80\x80\x80"', b'"\xf0\x8f\xbf\xbf"',
    b'"\xf4\x90\x80\x80"', b'"\xf5\x80\x80\x80"', b'"\xf8\x88\x80\x80\x80"', b'"\xff"', b'"\xfe"',
    b'"\x80"', b'"\xbf"', b'"\xe2\x82"', b'"\xc3"', b'"\xf0\x9f\x98"', b'"\xe2\x82x"', b'"\xc3\xc3\xa9"',
    '"\u2028\u2029"', '"  padded  "',
]

CITY_TOKENS = ['""', '" "', r'"\u0020"', r'"\n"', r'"\""', "null", DROP, "5", "true", '"main_city"', "[]"]

DATE_TEXTS = [
    "0000/01/01", "0001/01/01", "9999/12/31", "2024/02/29", "2023/02/29", "1900/02/29", "2000/02/29",
    "2100/02/29", "2400/02/29", "2024/13/01", "2024/00/10", "2024/01/00", "2024/01/32", "2024/04/31",
    "2024/04/30", "2024/12/31", "2024/1/01", "2024/01/1", "2024-01-01", "\uff12\uff10\uff12\uff14/01/01",
    "2024/\uff10\uff11/01", "\u0662\u0660\u0662\u0664/01/01", " 2024/01/01", "2024/01/01 ",
    "24/01/01", "12024/01/01", "+024/01/01", "-001/01/01", "1970/01/01", "1969/12/31", "",
    "2024/01/01/", "2024//01/01", "2024/1a/01", "2024/02/3\u0660", "2024/O1/01",
]
DATE_TOKENS = [json.dumps(text) for text in DATE_TEXTS] + [
    json.dumps("2024/02/29", ensure_ascii=False), r'"2024\/01\/01"', r'"\u0032024/01/01"',
    r'"2024/01/0\u0031"', r'"2024/01/01\u0000"', r'"2024/01/01\n"', "null", DROP, "20240101", "true",
    '["2024/01/01"]', b'"2024/01/01\x00"', b'"\xef\xbc\x92024/01/01"',
]

UNKNOWN_VALUES = [
    "NaN", "Infinity", "-Infinity", "[1, [2, [NaN]]]", '{"y": {"z": Infinity}}', "[1, 2,]", '{"a": 1,}',
    '[[1, 2,]]', '{"a": {"b": 1,}}', "[,]", "[,1]", "{,}", "[1 2]", '{"a" 1}', '{"a": 1 "b": 2}',
    "{1: 2}", "{'a': 1}", "[]", "{}", "[[]]", '[{}, {"a": [null, true, false, -1.5e-3, "s"]}]',
    r'"\ud800"', r'["\udc00"]', r'{"\ud800": 1}', r'{"k": [1, {"j": "\udfff"}]}', r'"\ud83d\ude00"',
    r'"\ud800\ud800"', r'"\udbff\udfff"', r'"\u0000"', r'"\/\b"', b'"\xff"', b'["\xc0\x80"]',
    b'{"\xed\xa0\x80": 1}', b"\xff", "tru", "nul", "fals", "True", "None", "undefined", "01", "1.",
    "-", "1e400", "-1e400", "1" * 5000, b'"\x01"', '{"shipping_id": -1}', '{"shipping_id": 1, "shipping_id": 2}',
    "[" * 63 + "]" * 63, "[" * 64 + "]" * 64, "[" * 65 + "]" * 65, "[" * 66 + "]" * 66,
    '{"a":' * 64 + "1" + "}" * 64, '{"a":' * 65 + "1" + "}" * 65, "[" * 10000 + "]" * 10000,
    "[" * 10000, "[" * 5000 + "NaN" + "]" * 5000, "[1]]", "{}}", "[" + "1, " * 1000 + "1]",
    '"' + "\\\\" * 1000 + '"', "-0", "1E400", "0.5e-400",
]

UNKNOWN_KEYS = [
    r'"\u0078"', r'"a\nb"', r'"\/"', b'"\xff"', b'"\xc3\xa9"', r'"\ud800"', r'"\ud83d\ude00"',
    '""', '"x"', '"Shipping_ID"', '"shipping_idx"', '"shipping_i"', '" shipping_id"',
    r'"shipping_id\u0000"', b'"shipping_id\x00"', b'"\x7f"',
]


def structure_lines():
    base = VALID
    body = base[1:-1]
    return [
        b"{}", b"{ }", b"[]", b"[" + base + b"]", b'"string"', b"1", b"null", b"true", b'"' + base + b'"',
        base + base, base + b" " + base, base + b",", base + b"}", base[:-1], base[:-1] + b",}",
        b"{", b"}", b"", base + b"x", b"\xef\xbb\xbf" + base, base + b"\x00", b"\x00" + base,
        base + b"//c", b"/*c*/" + base, b"{," + body + b"}", b"{" + body + b",}", b"{" + body + b",,}",
        b"{" + body.replace(b", ", b",, ", 1) + b"}", b"{" + body.replace(b", ", b" ", 1) + b"}",
        b"{" + body.replace(b": ", b" ", 1) + b"}", b"{" + body.replace(b": ", b":: ", 1) + b"}",
        b"{" + body.replace(b": ", b"= ", 1) + b"}", b"{" + body.replace(b'"', b"'") + b"}",
        b"{" + body.replace(b'"shipping_id"', b"shipping_id") + b"}", b"{" + body + b"]",
        b"[" + body + b"}", b"{{" + body + b"}}", b"{" + body + b'} {"a": 1}',
        rec(_open=b"{", _close=b"}", _sep=b",", _colon=b":"),
        rec(_sep=b" ,\t", _colon=b" \t: \r"),
        rec(_open=b"{\r", _close=b"\r}"),
        b"\x1e" + base,  # a record separator (RFC 7464)
    ]


def whitespace_lines():
    base = VALID
    return [
        b" " + base, b"\t" + base, b"\r" + base, base + b" ", base + b"\t", base + b"\r", base + b"\r\r",
        b" \t\r" + base + b" \t\r", rec(_sep=b",\x0b"), rec(_sep=b",\x0c"), b"\x0b" + base,
        base + b"\x0c", rec(_colon=b":\xc2\xa0"), b"\xc2\xa0" + base, rec(_sep=b",\x00"),
        rec(_sep=b",\r\r\r"), rec(_sep=b"," + b" " * 1000), rec(_colon=b":\t\t"),
        rec(_sep=b",\x85"), rec(_sep=b",\xe3\x80\x80"),
    ]


def blank_lines():
    return [b"", b" ", b"\t", b"\r", b" \t \r", b"\r\r", b" " * 10000, b"\x0b", b"\x0c", b"\xc2\xa0",
            b"\x00", b"\r \r"]


def duplicate_lines():
    return [
        rec(_extra=[('"shipping_id"', "2")]),
        rec(_extra=[('"shipping_id"', '"x"')]),
        rec(_first=[('"shipping_id"', '"x"')]),
        rec(_first=[('"shipping_id"', "5")]),
        rec(_extra=[('"customer_name"', '"Bob"')]),
        rec(customer_name="null", _extra=[('"customer_name"', '"Bob"')]),
        rec(customer_name=DROP, _extra=[('"customer_name"', "null"), ('"customer_name"', "5")]),
        rec(_extra=[('"product_id"', "-1")]),
        rec(_extra=[('"product_id"', "null")]),
        rec(destination_city='""', _extra=[('"destination_city"', '"a"')]),
        rec(_extra=[('"destination_city"', '""')]),
        rec(_extra=[('"shipping_date"', '"2024/02/30"')]),
        rec(_extra=[('"shipping_cost"', "NaN")]),
        rec(_extra=[('"shipping_cost"', "-1")]),
        rec(_extra=[('"x"', "1"), ('"x"', "2")]),
        rec(_extra=[('"x"', "1"), ('"x"', r'"\ud800"')]),
        rec(_extra=[('"x"', "1"), ('"x"', "NaN")]),
        rec(_extra=[('"x"', '{"k": 1, "k": "\\udc00"}')]),
        rec(_extra=[(r'"shipping\u005fid"', "-1")]),
        rec(_first=[(r'"shipping\u005fid"', "-1")]),
        rec(_first=[(r'"shipping\u005fid"', "2")]),
        rec(shipping_id=DROP, _extra=[(r'"shipping\u005fid"', "2")]),
        rec(shipping_id=DROP, _extra=[(r'"\u0073hipping_id"', "3")]),
        rec(shipping_id=DROP, _extra=[(r'"shipping_i\u0064"', "4")]),
        rec(shipping_id=DROP, _extra=[(r'"shipping\/id"', "4")]),
        rec(customer_name=DROP, _extra=[(r'"customer\u005fname"', "5")]),
        rec(_extra=[(r'"customer\u005fname"', "5")]),
        rec(_first=[(r'"customer\u005fname"', "5")]),
        rec(_first=[(r'"destination\u005Fcity"', '""')]),
    ]


def swar_lines():
    """Stop bytes at every position of the eight-byte window the string scanner reads."""
    specials = [b"\x1f", b"\x7f", b"\x80", b"\xc3\xa9", b"\\n", b'\\"', b"\xff", b"\x00", b"\\u0041",
                b"\xe2\x82\xac", b"\xed\xa0\x80", b'"', b"\\"]
    lines = []
    for k in range(18):
        for special in specials:
            text = b'"' + b"a" * k + special + b"b" * (17 - k) + b'"'
            lines.append(rec(customer_name=text))
            lines.append(rec(_extra=[('"x"', text)]))
        lines.append(rec(destination_city=b'"' + b"c" * k + b'"'))
        lines.append(rec(street_address=b'"' + b"s" * k))  # unterminated at the line's end
    return lines


def long_lines():
    mb = 1 << 20
    return [
        rec(customer_name=b'"' + b"a" * (2 * mb) + b'"'),
        rec(customer_name=b'"' + b"ab\\n" * (mb // 2) + b'"'),
        rec(customer_name=b'"' + "\u00e9\u20ac".encode() * (mb // 4) + b'"'),
        rec(customer_name=b'"' + b"a" * (2 * mb) + b'\xff"'),
        rec(customer_name=b'"' + b"a" * (2 * mb) + b'\\ud800"'),
        rec(_extra=[('"x"', b'"' + b"x" * (3 * mb // 2) + b'"')]),
        rec(_extra=[('"x"', b"[" + b"1.5, " * (mb // 4) + b"1]")]),
        rec(_extra=[('"x"', b"[" + b"1.5, " * (mb // 4) + b"]")]),
        rec(_extra=[('"x"', b"[" + b"{}, " * (mb // 4) + b"NaN]")]),
        VALID + b" " * (2 * mb),
        VALID + b" " * (2 * mb) + b"x",
        rec(destination_city=b'"' + b"c" * (2 * mb) + b'"', shipping_cost="0." + "1" * mb),
    ]


def corpus():
    """(category, line) pairs."""
    cases = [("valid", VALID), ("valid", rec(customer_name="null", street_address="null", product_id="null")),
             ("valid", rec(customer_name=DROP, street_address=DROP, product_id=DROP)),
             ("valid", b"{" + b", ".join(reversed(VALID[1:-1].split(b", "))) + b"}")]
    cases += [("shipping_id", rec(shipping_id=t)) for t in ID_TOKENS]
    for name in ("shipping_cost", "shipping_distance", "quantity"):
        cases += [("amount", rec(**{name: t})) for t in AMOUNT_TOKENS]
    cases += [("product_id", rec(product_id=t)) for t in PRODUCT_TOKENS]
    for name in ("customer_name", "street_address", "destination_city"):
        cases += [("text", rec(**{name: t})) for t in TEXT_TOKENS]
    cases += [("destination_city", rec(destination_city=t)) for t in CITY_TOKENS]
    cases += [("shipping_date", rec(shipping_date=t)) for t in DATE_TOKENS]
    cases += [("unknown_value", rec(_extra=[('"x"', v)])) for v in UNKNOWN_VALUES]
    cases += [("unknown_value", rec(_first=[('"x"', v)])) for v in UNKNOWN_VALUES[:30]]
    cases += [("unknown_key", rec(_extra=[(k, "1")])) for k in UNKNOWN_KEYS]
    cases += [("unknown_key", rec(_first=[(k, '"v"')])) for k in UNKNOWN_KEYS]
    cases += [("structure", line) for line in structure_lines()]
    cases += [("structure", b"[" * 10000), ("structure", b"[" * 10000 + b"]" * 10000),
              ("structure", b'{"a":' * 10000 + b"1" + b"}" * 10000)]
    cases += [("whitespace", line) for line in whitespace_lines()]
    cases += [("blank", line) for line in blank_lines()]
    cases += [("duplicate", line) for line in duplicate_lines()]
    cases += [("swar", line) for line in swar_lines()]
    cases += [("long_line", line) for line in long_lines()]
    return cases


CORPUS = corpus()


@pytest.mark.parametrize("category", sorted({category for category, _ in CORPUS}))
def test_corpus_lines_proven_only_when_valid_with_the_rules_values(category):
    lines = [line for c, line in CORPUS if c == category]
    check_lines(lines, category)
    # One line per block as well: a line's fate does not depend on its neighbours.
    for line in lines:
        check_lines([line])


def test_the_corpus_holds_lines_the_prover_must_prove():
    """Plainly written valid lines: leaving them doubtful would only cost speed, but these are
    what producers write, so a prover that stops proving them has lost its point."""
    plain = [VALID, rec(customer_name="null", street_address="null", product_id="null"),
             rec(customer_name=DROP, street_address=DROP, product_id=DROP), rec(shipping_cost="0"),
             rec(shipping_cost="0.1"), rec(shipping_cost="1e2"), rec(shipping_cost="12.50"),
             rec(customer_name=r'"O\"Brien \\ \/ \t"'), rec(customer_name=b'"Zo\xc3\xab \xe2\x82\xac"'),
             rec(_extra=[('"note"', '{"a": [1, 2.5, true, null, "s"]}')]), b"  " + VALID + b"\r",
             rec(_sep=b",", _colon=b":"), rec(shipping_id="9223372036854775807"),
             rec(shipping_date='"0001/01/01"'), rec(shipping_date='"9999/12/31"')]
    outcome = check_lines(plain)
    assert [proven for _line, _verdict, proven in outcome] == [True] * len(plain)


# -- a seeded random fuzz ----------------------------------------------------------------------

FUZZ_SEED = 20260101
FUZZ_LINES = 4000
INTERESTING_BYTES = b'"\\{}[],: \t\r0123456789.-+eEtfnul/\x00\x01\x0b\x0c\x1f\x7f\x80\xbf\xc0\xc3\xe2\xed\xf0\xf4\xff'
FUZZ_VALUES = [
    "null", "true", "false", '""', '"12"', "NaN", "Infinity", "-Infinity", "-1", "0", "-0", "1e400",
    "[]", "{}", "[1,]", '{"a":1,}', r'"\ud800"', r'"\ud83d\ude00"', '"2024/02/30"', '"2024/02/29"',
    "[[[[[[1]]]]]]", '{"a": [NaN]}', "9223372036854775808", '"\\u0000"', "1.0", "5e-324",
]


def _number_variants(rng, value):
    n = int(value)
    choices = [
        "%d" % n, "%d.0" % n, "%de0" % n, "%dE+00" % n, "%d.000e0" % n, "%d0e-1" % n,
        "0.%de%d" % (n, len(str(n))), "-%d" % n, "0%d" % n, "%d." % n, "+%d" % n, "%d e1" % n,
        "%.17g" % (n / 7), "%.25g" % (n / 3), "%.3e" % (n * 1.1),
        "%d.%s" % (n, "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 25)))),
        repr(rng.uniform(0, 1e6)), repr(rng.uniform(0, 1e-3)), "%de%d" % (n, rng.randint(-30, 30)),
        "%d.%de%d" % (rng.randint(0, 99), rng.randint(0, 10 ** rng.randint(1, 18)), rng.randint(-330, 330)),
        str(rng.randint(0, 2 ** 70)), str(rng.randint(2 ** 53 - 3, 2 ** 53 + 3)), "%d" % (n * 10 ** 18),
        "1e400", "5e-324", "-0.0", "0e5", '"%d"' % n, "%d_0" % n,
    ]
    return rng.choice(choices)


def _date_variant(rng):
    y = rng.choice([rng.randint(0, 10000), 2024, 2023, 1900, 2000, 1])
    m = rng.choice([rng.randint(0, 13), 2])
    d = rng.choice([rng.randint(0, 32), 29, 28, 31])
    form = rng.choice(["%04d/%02d/%02d", "%d/%d/%d", "%04d-%02d-%02d", "%04d/%02d/%02d "])
    return json.dumps(form % (y, m, d))


def _escaped(rng, text):
    """``text`` (a JSON string token) with one character written as an escape."""
    inner = text[1:-1]
    if not inner:
        return text
    at = rng.randrange(len(inner))
    if inner[at] == "\\":
        return text
    escape = "\\/" if inner[at] == "/" and rng.random() < 0.5 else "\\u%04x" % ord(inner[at])
    return '"' + inner[:at] + escape + inner[at + 1:] + '"'


def mutate(rng, line):
    """A random variant of a generated (valid) line: token mutations, then byte mutations."""
    members = [[json.dumps(key), json.dumps(value), value] for key, value in json.loads(line, object_pairs_hook=list)]
    for _ in range(rng.choice((0, 1, 1, 1, 2, 3))):
        kind = rng.randrange(11)
        member = rng.choice(members) if members else None
        if member is None:
            break
        if kind == 0 and isinstance(member[2], (int, float)) and not isinstance(member[2], bool):
            member[1] = _number_variants(rng, member[2])
        elif kind == 1:
            member[1] = rng.choice(FUZZ_VALUES)
        elif kind == 2:
            copy = list(member)
            if rng.random() < 0.5:
                copy[1] = rng.choice(FUZZ_VALUES)
            members.insert(rng.randint(0, len(members)), copy)
        elif kind == 3:
            members.remove(member)
        elif kind == 4:
            rng.shuffle(members)
        elif kind == 5:
            members.insert(rng.randint(0, len(members)), ['"u%d"' % rng.randrange(3), rng.choice(FUZZ_VALUES), None])
        elif kind == 6:
            member[0] = _escaped(rng, member[0])
        elif kind == 7 and isinstance(member[2], str):
            member[1] = _escaped(rng, member[1])
        elif kind == 8:
            token = rng.randrange(2)
            quote = [i for i, c in enumerate(member[token]) if c == '"']
            if quote:
                at = rng.choice(quote)
                member[token] = member[token][:at] + "'" + member[token][at + 1:]
        elif kind == 9:
            shipping_date = [m for m in members if m[0] == '"shipping_date"']
            if shipping_date:
                shipping_date[0][1] = _date_variant(rng)
        elif kind == 10 and isinstance(member[2], str):
            ranges = ((0x20, 0x7e), (0x80, 0x7ff), (0x800, 0xffff), (0x10000, 0x10ffff), (0xd800, 0xdfff), (0, 0x1f))
            text = "".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(rng.randint(0, 12)))
            member[1] = json.dumps(text, ensure_ascii=rng.random() < 0.5)
    spaces = ["", " ", " ", "  ", "\t", "\r", "\x0b", " \x0c"]
    separators = [rng.choice(spaces[:6]) if rng.random() < 0.97 else rng.choice(spaces) for _ in range(4)]
    text = ("{" + separators[0] + ("," + separators[1]).join(
        key + separators[2] + ":" + separators[3] + value for key, value, _ in members) + "}")
    if rng.random() < 0.05:
        text = text[:-1] + ",}"
    data = text.encode("utf-8", "surrogatepass")
    for _ in range(rng.choice((0, 0, 0, 1, 1, 2, 3))):
        kind = rng.randrange(6)
        at = rng.randrange(len(data) + 1)
        byte = bytes([rng.choice(INTERESTING_BYTES) if rng.random() < 0.7 else rng.randrange(256)])
        if kind == 0:
            data = data[:at] + data[at + 1:]
        elif kind == 1:
            data = data[:at] + byte + data[at:]
        elif kind == 2:
            data = data[:at] + byte + data[at + 1:]
        elif kind == 3:
            data = data[:at]
        elif kind == 4:
            end = min(len(data), at + rng.randint(1, 20))
            data = data[:end] + data[at:end] + data[end:]
        else:
            other = rng.randrange(len(data) + 1)
            a, b = sorted((at, other))
            if b < len(data):
                data = data[:a] + data[b:b + 1] + data[a + 1:b] + data[a:a + 1] + data[b + 1:]
    return data.replace(b"\n", b" ")


def test_fuzzed_generator_lines():
    rng = random.Random(FUZZ_SEED)
    base = generate_ndjson(200, seed=FUZZ_SEED, today=DAY).encode("utf-8").splitlines()
    lines = [mutate(rng, rng.choice(base).decode("utf-8")) for _ in range(FUZZ_LINES)]
    # Blocks of varying size, so the prover's reused buffers meet every size of block.
    at = 0
    while at < len(lines):
        size = rng.randint(1, 700)
        check_lines(lines[at:at + size], "fuzz", first_line=at + 1,
                    block_type=bytearray if rng.random() < 0.5 else bytes)
        at += size
    counts = COVERAGE["fuzz"]
    assert counts[1] > FUZZ_LINES // 10 and counts[1] < counts[0] - FUZZ_LINES // 10, (
        "the fuzz should mix valid and invalid lines: %r" % counts)


def _random_number(rng):
    digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 20))).lstrip("0") or "0"
    text = digits
    if rng.random() < 0.6:
        text += "." + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 20)))
    if rng.random() < 0.4:
        text += rng.choice("eE") + rng.choice(["", "+", "-"]) + str(rng.randint(0, 40))
    return text


def test_random_amounts_are_correctly_rounded():
    """Decimal numbers of every length around the prover's fast path (up to 19 digits, up to
    2^53, powers of ten up to 1e22): the double it gives is the correctly rounded one."""
    rng = random.Random(FUZZ_SEED + 1)
    lines = [rec(**{rng.choice(schema.AMOUNT_FIELDS): _random_number(rng)}) for _ in range(20000)]
    suffixes = ["", ".0", "e0", "e-1", "e22", "e-22", "e23", "e-23"]
    lines += [rec(shipping_cost="%d%s" % (rng.randint(0, 2 ** 54), rng.choice(suffixes))) for _ in range(5000)]
    check_lines(lines, "amount_random")


# -- line numbering and blocks -----------------------------------------------------------------

def test_line_numbers_count_blank_lines_and_start_at_first_line():
    bad = rec(shipping_id="0")
    lines = [b"", b"  \t\r", VALID, bad, b"\r", rec(shipping_id="2"), b"", bad, b"\t"]
    block = b"\n".join(lines)  # the last line has no line end
    records, doubtful, count = run_prover(block, first_line=100)
    assert count == len(lines)
    assert [line_no for line_no, _start, _end in doubtful] == [103, 107]
    for _line_no, start, end in doubtful:
        assert block[start:end] == bad
    assert [r["shipping_id"] for r in records] == [1, 2]
    records, doubtful, count = run_prover(block, first_line=0)
    assert [line_no for line_no, _start, _end in doubtful] == [3, 7]


def test_a_last_line_without_line_end_counts_and_is_proven():
    block = VALID + b"\n" + rec(shipping_id="2")
    records, doubtful, count = run_prover(block)
    assert (len(records), doubtful, count) == (2, [], 2)
    block = VALID + b"\n" + rec(shipping_id="-2")
    records, doubtful, count = run_prover(block, first_line=7)
    assert (len(records), count) == (1, 2)
    assert doubtful == [(8, len(VALID) + 1, len(block))]


def test_crlf_line_ends_stay_in_the_doubtful_span():
    bad = rec(shipping_id="0")
    block = VALID + b"\r\n" + bad + b"\r\n"
    records, doubtful, count = run_prover(block)
    assert len(records) == 1 and count == 2
    assert doubtful == [(2, len(VALID) + 2, len(block) - 1)]


def test_only_size_bytes_of_a_bytearray_are_read():
    bad = rec(shipping_id="0")
    text = VALID + b"\n" + bad + b"\n"
    block = bytearray(text + rec(shipping_id="2") + b"\n" + bad + b"\n" + b"garbage" * 100)
    records, doubtful, count = run_prover(block, size=len(text), first_line=10)
    assert (len(records), count) == (1, 2)
    assert doubtful == [(11, len(VALID) + 1, len(text) - 1)]
    # Cut inside a line: what lies before the cut is the last line.
    records, doubtful, count = run_prover(block, size=len(text) + 20)
    assert (len(records), count) == (1, 3)
    assert doubtful[-1] == (3, len(text), len(text) + 20)


def test_empty_and_blank_blocks():
    for block in (b"", bytearray(), b"\n", b"\n\n\n", b" \r\n\t\n\r", bytearray(b"\n" * 5)):
        records, doubtful, count = run_prover(block)
        assert records == [] and doubtful == []
        assert count == block.count(b"\n") + (not block.endswith(b"\n") and len(block) > 0)
    assert run_prover(bytearray(VALID + b"\n"), size=0) == ([], [], 0)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        shipping_ndjson.prove(FIELDS, VALID, len(VALID) + 1, 1)
    with pytest.raises(ValueError):
        shipping_ndjson.prove(FIELDS, VALID, -1, 1)
    with pytest.raises(TypeError):
        shipping_ndjson.prove(FIELDS, VALID.decode(), len(VALID), 1)
    with pytest.raises(TypeError):
        shipping_ndjson.prove(FIELDS, memoryview(VALID), len(VALID), 1)
    with pytest.raises(TypeError):
        shipping_ndjson.prove(list(FIELDS), VALID, len(VALID), 1)
    with pytest.raises(ValueError):
        shipping_ndjson.prove((("shipping_id", "int", True, None, False, 0),), VALID, len(VALID), 1)
    with pytest.raises(TypeError):  # the (name, kind) pairs of before: the rule's data is missing
        shipping_ndjson.prove((("shipping_id", "id"),), VALID, len(VALID), 1)
    with pytest.raises(ValueError):
        shipping_ndjson.prove((("x", "integer", True, None, False, -1),), VALID, len(VALID), 1)
    with pytest.raises(TypeError):
        shipping_ndjson.prove((("x", "integer", True, "0", False, 0),), VALID, len(VALID), 1)
    with pytest.raises(ValueError):
        shipping_ndjson.prove((("x", "integer", True, None, False, 0),) * 65, VALID, len(VALID), 1)
    # No fields: refused (a pooled prover would compare keys with an earlier call's names).
    with pytest.raises(ValueError):
        shipping_ndjson.prove((), b'{"": 1}\n' + VALID, len(VALID) + 8, 1)
    with pytest.raises(TypeError):
        shipping_ndjson.prove(("shipping_id",), VALID, len(VALID), 1)
    # Still fine after the failures (the provers go back to their pool).
    records, doubtful, _count = run_prover(VALID)
    assert len(records) == 1 and doubtful == []


def test_fields_in_another_order():
    fields = tuple(reversed(FIELDS))
    lines = [VALID, rec(customer_name="null", product_id=DROP), rec(shipping_id="0")]
    records, doubtful, _count = run_prover(b"\n".join(lines), fields=fields)
    expected = [judge(line) for line in lines[:2]]
    assert records == expected and [t[0] for t in doubtful] == [3]


def test_successive_and_concurrent_calls_do_not_share_state():
    """The prover keeps its buffers between calls: a block with nulls, then one without,
    then blocks proven on several threads at once, each as it is alone."""
    with_nulls = [rec(customer_name="null", product_id=DROP, shipping_id=str(k)) for k in range(1, 20)]
    without = [rec(shipping_id=str(k), customer_name='"n%d"' % k) for k in range(1, 30)]
    assert check_lines(with_nulls)
    assert check_lines(without)
    rng = random.Random(7)
    base = generate_ndjson(300, seed=7, today=DAY).encode("utf-8").splitlines()
    blocks = []
    for k in range(16):
        lines = [mutate(rng, line.decode("utf-8")) if rng.random() < 0.2 else line
                 for line in base[k * 10:k * 10 + 140]]
        blocks.append(b"".join(line + b"\n" for line in lines))
    alone = [run_prover(block) for block in blocks]
    results = [None] * len(blocks)

    def work(k):
        for _ in range(5):
            got = run_prover(blocks[k])
            assert results[k] is None or results[k] == got
            results[k] = got

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(blocks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == alone


def test_a_bytearray_cannot_be_resized_while_it_is_proven():
    """The prover reads the block with the GIL released: meanwhile the bytearray must keep its
    bytes where they are (a resize may move or free them under the prover)."""
    line = VALID + b"\n"
    block = bytearray(line * (32 * 1024 * 1024 // len(line)))
    size = len(block)
    result = []
    thread = threading.Thread(target=lambda: result.append(shipping_ndjson.prove(FIELDS, block, size, 1)))
    refused = 0
    thread.start()
    while thread.is_alive():
        try:
            block.extend(b"x" * 4096)
            del block[size:]
        except BufferError:
            refused += 1
    thread.join()
    assert result and result[0][0] == size // len(line) and result[0][2] == b""
    assert refused > 0, "the bytearray could be resized while it was being proven"


# -- the performance contract ---------------------------------------------------------------

def test_clean_generator_output_is_proven_whole():
    text = generate_ndjson(20000, seed=1, today=DAY).encode("utf-8")
    lines = text.splitlines()
    outcome = check_lines(lines, "generator_clean")
    assert len(outcome) == 20000
    assert all(proven for _line, _verdict, proven in outcome), "a clean generated line was left doubtful"
    records, doubtful, count = run_prover(bytearray(text))
    assert (len(records), doubtful, count) == (20000, [], 20000)


# -- the Arrow C stream (prove(..., borrow=True) + arrow_stream), as json_to_parquet uses it ----


class _Stream:
    def __init__(self, next_block):
        self._next = next_block

    def __arrow_c_stream__(self, requested_schema=None):
        return shipping_ndjson.arrow_stream(FIELDS, self._next)


def _stream_of(blocks):
    capsules = iter([shipping_ndjson.prove(FIELDS, block, len(block), 1, True)[1] for block in blocks])
    return _Stream(lambda: next(capsules, None))


def test_the_arrow_stream_carries_the_proven_rows_with_the_schema_types():
    blocks = [generate_ndjson(300, seed=5).encode(), rec(customer_name="null", product_id="null") + b"\nnot json\n",
              generate_ndjson(40, seed=6).encode()]
    reader = pa.RecordBatchReader.from_stream(_stream_of(blocks))
    table = reader.read_all()
    table.validate(full=True)

    assert [(f.name, f.type) for f in table.schema] == [(f.name, ARROW_TYPES[f.arrow_type]) for f in schema.FIELDS]
    expected = [record for block in blocks for record in run_prover(block)[0]]
    assert table.num_rows == len(expected) == 341
    assert table.to_pylist() == expected


def test_an_arrow_stream_left_unread_or_failing_frees_what_it_holds():
    # Released unread: the capsule's destructor releases the stream and the blocks it holds.
    for _ in range(50):
        _stream_of([generate_ndjson(100, seed=7).encode()]).__arrow_c_stream__()

    def failing():
        raise RuntimeError("the block reader broke")

    with pytest.raises(Exception, match="the block reader broke"):
        pa.RecordBatchReader.from_stream(_Stream(failing)).read_all()
    with pytest.raises(ValueError):
        shipping_ndjson.arrow_stream((), failing)
    with pytest.raises(ValueError):
        shipping_ndjson.arrow_stream((("shipping_id", "int", True, None, False, 0),), failing)


def test_the_prover_takes_no_file_descriptor_only_bytes_the_job_read():
    # It never maps a file (a file that shrinks while mapped kills the process with SIGBUS).
    with pytest.raises(TypeError):
        shipping_ndjson.prove(FIELDS, (0, 0), 10, 1)


def test_rescued_batches_join_the_stream_and_foreign_ones_are_refused():
    block = generate_ndjson(30, seed=11).encode()
    rescued = pa.RecordBatch.from_pylist(run_prover(generate_ndjson(3, seed=12).encode())[0], schema=pa.schema(
        [pa.field(f.name, ARROW_TYPES[f.arrow_type]) for f in schema.FIELDS]))
    items = iter([shipping_ndjson.prove(FIELDS, block, len(block), 1, True)[1], rescued])
    table = pa.RecordBatchReader.from_stream(_Stream(lambda: next(items, None))).read_all()
    assert table.num_rows == 33 and table.to_pylist()[30:] == rescued.to_pylist()

    foreign = pa.RecordBatch.from_pylist([{"x": 1}])
    items = iter([foreign])
    with pytest.raises(Exception, match="not the stream's"):
        pa.RecordBatchReader.from_stream(_Stream(lambda: next(items, None))).read_all()


@pytest.mark.parametrize("kind, minimum, exclusive, min_length, text, proven", [
    ("integer", 10.0, False, 0, b"10", True), ("integer", 10.0, True, 0, b"10", False),
    ("integer", 10.0, True, 0, b"11", True), ("number", 0.5, False, 0, b"0.5", True),
    ("number", 0.5, True, 0, b"0.5", False), ("number", 0.5, False, 0, b"0.25", False),
    ("string", None, False, 3, rb'"\u00e9t\u00e9"', True), ("string", None, False, 3, rb'"\u00e9t"', False),
    ("string", None, False, 3, '"été"'.encode(), True), ("string", None, False, 3, '"ét"'.encode(), False),
])
def test_the_limits_come_from_the_field_spec(kind, minimum, exclusive, min_length, text, proven):
    fields = (("v", kind, True, minimum, exclusive, min_length),)
    line = b'{"v": ' + text + b"}\n"
    rows, _columns, doubtful, _lines = shipping_ndjson.prove(fields, line, len(line), 1)
    assert (rows == 1) == proven and len(doubtful) == (0 if proven else 24)  # one triple of int64
