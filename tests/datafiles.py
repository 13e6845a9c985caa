"""Landing files for tests: clean ones, and messy ones holding every kind of line the validation
rules (README, chalicelib/schema.py) tell apart.

Everything is deterministic. Expected counts come from ``tests.reference``, never from here:
these helpers only say what they wrote.
"""
import gzip as gzip_module
import json
import random

CITIES = ("main_city", "island_city", "São Paulo", "Zürich", "Kraków", "Reykjavík", "東京", "Dakar")
FIRST_NAMES = ("Ana", "José", "Zoë", "Björn", "Anaïs", "Łukasz", "Nguyễn", "O'Brien", "Chloé", "李")
LAST_NAMES = ("Smith", "García", "Müller", "Nowak", "Dubois", "Øberg", "Đặng", "Шевченко")
STREETS = ("Main St", "Rua Augusta", "Bahnhofstraße", "Ulica Długa", "Laugavegur", "\"Quoted\" Lane")


def clean_records(rows, seed=0, first_id=1, dates=("2024/01/15", "2024/01/16", "2024/02/29")):
    """``rows`` distinct valid records (dicts) with unicode names and cities, every field set."""
    rng = random.Random(seed)
    records = []
    for offset in range(rows):
        records.append({
            "shipping_id": first_id + offset,
            "shipping_date": dates[offset % len(dates)],
            "customer_name": "%s %s" % (rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)),
            "street_address": "%d %s" % (rng.randint(1, 9999), rng.choice(STREETS)),
            "destination_city": rng.choice(CITIES),
            "shipping_cost": rng.randint(100, 1000000) / 100.0,
            "shipping_distance": float(rng.randint(1, 3000)),
            "quantity": rng.randint(1, 100),
            "product_id": rng.randint(1, 1000),
        })
    return records


def ndjson(records, crlf=False, ascii_only=False):
    """NDJSON bytes, one record per line, each line ended (``\\r\\n`` when ``crlf``)."""
    end = "\r\n" if crlf else "\n"
    return "".join(json.dumps(r, ensure_ascii=ascii_only) + end for r in records).encode("utf-8")


def clean_bytes(rows=50, seed=0, crlf=False):
    """A clean file's bytes: every line a distinct valid record."""
    return ndjson(clean_records(rows, seed=seed), crlf=crlf)


def _line(record, **changes):
    """A record as one JSON line, with fields replaced (value ``DROP`` removes the field)."""
    record = dict(record, **changes)
    return json.dumps({k: v for k, v in record.items() if v is not DROP}, ensure_ascii=False)


DROP = object()
_BASE = clean_records(1, seed=99, first_id=900000)[0]

# (what it shows, line bytes without the line ending); every line here breaks a rule.
BAD_LINES = (
    ("not JSON", b"this is not json"),
    ("truncated object", b'{"shipping_id": 1, "shipping_date": "2024/01/15"'),
    ("single quotes", b"{'shipping_id': 1}"),
    ("trailing comma", _line(_BASE)[:-1].encode() + b", }"),
    ("trailing comma in array", _line(_BASE, tags=[1, 2])[:-1].encode().replace(b"2]", b"2,]") + b"}"),
    ("NaN in an unknown field", _line(_BASE)[:-1].encode() + b', "note": NaN}'),
    ("lowercase nan amount", _line(_BASE, shipping_cost=0).encode().replace(b'"shipping_cost": 0', b'"shipping_cost": nan')),
    ("Infinity amount", _line(_BASE, shipping_cost=0).encode().replace(b'"shipping_cost": 0', b'"shipping_cost": Infinity')),
    ("-Infinity in an array", _line(_BASE)[:-1].encode() + b', "x": [1, -Infinity]}'),
    ("array", b"[1, 2, 3]"),
    ("number", b"42"),
    ("string", b'"a string"'),
    ("null", b"null"),
    ("boolean", b"true"),
    ("empty object", b"{}"),
    ("missing shipping_id", _line(_BASE, shipping_id=DROP).encode()),
    ("missing shipping_date", _line(_BASE, shipping_date=DROP).encode()),
    ("missing destination_city", _line(_BASE, destination_city=DROP).encode()),
    ("missing shipping_cost", _line(_BASE, shipping_cost=DROP).encode()),
    ("missing shipping_distance", _line(_BASE, shipping_distance=DROP).encode()),
    ("missing quantity", _line(_BASE, quantity=DROP).encode()),
    ("shipping_id zero", _line(_BASE, shipping_id=0).encode()),
    ("shipping_id negative", _line(_BASE, shipping_id=-5).encode()),
    ("shipping_id 1.0", _line(_BASE, shipping_id=1.0).encode()),
    ("shipping_id 1e2", _line(_BASE, shipping_id=7).encode().replace(b'"shipping_id": 7', b'"shipping_id": 1e2')),
    ("shipping_id string", _line(_BASE, shipping_id="7").encode()),
    ("shipping_id boolean", _line(_BASE, shipping_id=True).encode()),
    ("shipping_id beyond int64", _line(_BASE, shipping_id=2 ** 63).encode()),
    ("shipping_id null", _line(_BASE, shipping_id=None).encode()),
    ("date 2024/02/30", _line(_BASE, shipping_date="2024/02/30").encode()),
    ("date 2023/02/29", _line(_BASE, shipping_date="2023/02/29").encode()),
    ("date 2024/1/5", _line(_BASE, shipping_date="2024/1/5").encode()),
    ("date 2024-01-15", _line(_BASE, shipping_date="2024-01-15").encode()),
    ("date with a space", _line(_BASE, shipping_date=" 2024/01/15").encode()),
    ("date year 0000", _line(_BASE, shipping_date="0000/01/01").encode()),
    ("date month 13", _line(_BASE, shipping_date="2024/13/01").encode()),
    ("date full-width digits", _line(_BASE, shipping_date="２０２４/01/15").encode()),
    ("date as number", _line(_BASE, shipping_date=20240115).encode()),
    ("date empty", _line(_BASE, shipping_date="").encode()),
    ("date with time", _line(_BASE, shipping_date="2024/01/15 10:00").encode()),
    ("city empty", _line(_BASE, destination_city="").encode()),
    ("city number", _line(_BASE, destination_city=5).encode()),
    ("city null", _line(_BASE, destination_city=None).encode()),
    ("city array", _line(_BASE, destination_city=["main_city"]).encode()),
    ("cost string", _line(_BASE, shipping_cost="12").encode()),
    ("cost negative", _line(_BASE, shipping_cost=-1.5).encode()),
    ("cost boolean", _line(_BASE, shipping_cost=False).encode()),
    ("cost null", _line(_BASE, shipping_cost=None).encode()),
    ("cost 1e400", _line(_BASE, shipping_cost=0).encode().replace(b'"shipping_cost": 0', b'"shipping_cost": 1e400')),
    ("cost 400-digit integer", _line(_BASE, shipping_cost=10 ** 400).encode()),
    ("distance object", _line(_BASE, shipping_distance={"km": 5}).encode()),
    ("quantity negative", _line(_BASE, quantity=-0.1).encode()),
    ("customer_name number", _line(_BASE, customer_name=5).encode()),
    ("street_address object", _line(_BASE, street_address={"street": "x"}).encode()),
    ("customer_name boolean", _line(_BASE, customer_name=False).encode()),
    ("product_id string", _line(_BASE, product_id="x").encode()),
    ("product_id 1.5", _line(_BASE, product_id=1.5).encode()),
    ("product_id beyond int64", _line(_BASE, product_id=-(2 ** 63) - 1).encode()),
    ("product_id boolean", _line(_BASE, product_id=True).encode()),
    ("first of a repeated member is bad", b'{"shipping_id": "x", ' + _line(_BASE)[1:].encode()),
    ("lone surrogate escape", _line(_BASE, destination_city="X").encode().replace(b'"X"', b'"\\ud800"')),
    ("invalid UTF-8 in a string", _line(_BASE, destination_city="X").encode().replace(b'"X"', b'"S\xe3o Paulo"')),
    ("invalid UTF-8 overlong", _line(_BASE, customer_name="X").encode().replace(b'"X"', b'"\xc0\xaf"')),
    ("raw tab inside a string", _line(_BASE, customer_name="a\tb").encode().replace(b"\\t", b"\t")),
    ("byte order mark", b"\xef\xbb\xbf" + _line(_BASE).encode()),
    ("vertical tab only", b"\x0b"),
    ("two objects on one line", (_line(_BASE) + " " + _line(_BASE)).encode()),
    ("object split over two lines, first half", _line(_BASE)[:40].encode()),
    ("object split over two lines, second half", _line(_BASE)[40:].encode()),
)

# (what it shows, line bytes): valid although unusual.
ODD_VALID_LINES = (
    ("unknown fields", _line(_BASE, shipping_id=910001, note="late", tags=[1, {"a": None}])),
    ("optional fields absent", _line(_BASE, shipping_id=910002, customer_name=DROP, street_address=DROP, product_id=DROP)),
    ("optional fields null", _line(_BASE, shipping_id=910003, customer_name=None, street_address=None, product_id=None)),
    ("integer amounts and zeros", _line(_BASE, shipping_id=910004, shipping_cost=0, shipping_distance=7, quantity=-0.0)),
    ("large amount", _line(_BASE, shipping_id=910005, shipping_distance=123456789012.5)),
    ("escaped slashes and unicode escapes", json.dumps(dict(_BASE, shipping_id=910006)).replace("/", "\\/")),
    ("escaped date digits", _line(_BASE, shipping_id=910007).replace('"2024/', '"\\u0032024/')),
    ("emoji and NUL in strings", json.dumps(dict(_BASE, shipping_id=910008, customer_name="Bob \U0001F69A\u0000"))),
    ("surrounding whitespace", " \t" + _line(_BASE, shipping_id=910009) + "  "),
    ("leap day", _line(_BASE, shipping_id=910010, shipping_date="2024/02/29")),
    ("extreme ids", _line(_BASE, shipping_id=2 ** 63 - 1, product_id=-(2 ** 63))),
    ("repeated member: first value counts", _line(_BASE, shipping_id=910011)[:-1] + ', "shipping_id": "x"}'),
    ("city of one space", _line(_BASE, shipping_id=910012, destination_city=" ")),
    ("year 9999", _line(_BASE, shipping_id=910013, shipping_date="9999/12/31")),
    ("year 0001", _line(_BASE, shipping_id=910014, shipping_date="0001/01/01")),
    ("deeply nested unknown field", _line(_BASE, shipping_id=910016)[:-1] + ', "deep": ' + "[" * 3000 + "]" * 3000 + "}"),
    ("NaN-looking text inside strings", _line(_BASE, shipping_id=910015, street_address="1, Infinity Loop: NaN, inf", customer_name="a,]")),
)

BLANK_LINES = (b"", b"   ", b"\t", b"\r", b" \t \r")


def messy_bytes(seed=0):
    """A file mixing valid records (unicode, CRLF endings), every kind of bad line, blank and
    whitespace-only lines, exact and reformatted duplicates, and the odd-but-valid lines."""
    good = clean_records(20 + len(BAD_LINES), seed=seed, first_id=1000)
    lines = []
    for index, record in enumerate(good[:20]):
        lines.append(_line(record).encode())
        if index % 4 == 0:
            lines.append(BLANK_LINES[index // 4 % len(BLANK_LINES)])
    for index, (_kind, bad) in enumerate(BAD_LINES):
        lines.append(bad)
        lines.append(_line(good[20 + index]).encode())
    for _kind, odd in ODD_VALID_LINES:
        lines.append(odd.encode("utf-8"))
    # Duplicates of earlier valid records: verbatim, reformatted (key order, spacing, 10 vs 10.0),
    # and differing only in an unknown field. A record differing only in PII is not a duplicate.
    lines.append(_line(good[0]).encode())
    reordered = dict(reversed(list(good[1].items())))
    reordered["quantity"] = float(reordered["quantity"])
    lines.append(json.dumps(reordered, ensure_ascii=True, separators=(",", ":")).encode())
    lines.append(_line(good[2], comment="resent").encode())
    lines.append(_line(good[3], customer_name="Someone Else").encode())
    lines += BLANK_LINES
    # CRLF on every third line (blank lines keep their own endings).
    return b"".join(line + (b"\r\n" if n % 3 == 0 and line not in BLANK_LINES else b"\n")
                    for n, line in enumerate(lines))


def all_bad_bytes():
    """A file in which no line is valid (but some are blank)."""
    return b"\n".join(bad for _kind, bad in BAD_LINES[:12]) + b"\n\n"


def gzipped(data):
    """``data`` gzip-compressed (deterministic: no timestamp)."""
    return gzip_module.compress(data, mtime=0)


def write(path, data, gzip=False):
    """Writes ``data`` (gzip-compressed when ``gzip``) to ``path``; returns the path as a string."""
    with open(path, "wb") as out:
        out.write(gzipped(data) if gzip else data)
    return str(path)
