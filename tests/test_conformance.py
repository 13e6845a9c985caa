"""Inputs the job must survive, through the whole pipeline on both provers: a JSON conformance
corpus (JSONTestSuite's classes: must accept, must reject, implementation-defined) embedded in
records, and tens of thousands of randomly mutated records against the independent reference."""
import json
import os
import random
import sys

import pyarrow.parquet as pq
import pytest

import datafiles
import reference
from chalicelib.generator import generate_ndjson

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLUE_DIR = os.path.join(PROJECT_DIR, "glue")
if GLUE_DIR not in sys.path:
    sys.path.insert(0, GLUE_DIR)

import json_to_parquet  # noqa: E402

# Documents, as bytes, by JSONTestSuite's classes (y: must accept, n: must reject, i: either).
MUST_ACCEPT = [
    b"[]", b"{}", b"[[]]", b'[""]', b'["a"]', b"[1]", b"[-0]", b"[0e1]", b"[0E+1]", b"[1E-2]", b"[-1.5e+9]",
    b"[123e65]", b"[1.7976931348623157e308]", b"[5e-324]", b"[true, false, null]", b'{"a": {"b": [1, {"c": []}]}}',
    b'["\\u0060\\u012a\\u12AB"]', b'["\\uD801\\udc37"]', b'["\\ud83d\\ude39\\ud83d\\udc8d"]', b'["\\"\\\\\\/\\b\\f\\n\\r\\t"]',
    b'["\\u0000"]', b'["\xe2\x82\xac\xf0\x9d\x84\x9e"]', b'["\xef\xbf\xbf"]', b'["\xf4\x8f\xbf\xbf"]',
    b'{"a": 1, "a": 2}', b'{"": 0}', b"[ 1 , 2 ]", b" [1] ", b"\t[1]\t", b"\r[1]\r", b'["\x7f"]',
    b"[" * 500 + b"]" * 500, b'{"a":' * 300 + b"1" + b"}" * 300, b"[100000000000000000000000000000000000]",
    b'"simple string"', b"-0", b"0", b"null", b"[1e999999]",
]
MUST_REJECT = [
    b"[", b"]", b"{", b"[1,]", b"[,1]", b"[1,,2]", b'{"a": 1,}', b'{"a" 1}', b'{"a": }', b"{1: 2}", b"{'a': 1}",
    b'["a\x00"]', b'["a\tb"]', b'["\\x41"]', b'["\\u00G0"]', b'["\\ud800"]', b'["\\udc00"]', b'["\\ud800\\u0041"]',
    b'["\\uDFAA"]', b"[NaN]", b"[-Infinity]", b"[Infinity]", b"[nan]", b"[inf]", b"[01]", b"[-01]", b"[1.]",
    b"[.1]", b"[1.e1]", b"[+1]", b"[0x10]", b"[1e]", b"[1e+]", b"[-]", b"[True]", b"[nul]", b"[truex]",
    b"[1] [2]", b"[1]x", b"/* c */ [1]", b"[1] // c", b'["\xff"]', b'["\xc0\xaf"]', b'["\xed\xa0\x80"]',
    b'["\xf5\x80\x80\x80"]', b'["\xe2\x82"]', b"[\x0b1]", b"[1\x0c]", b"[\xc2\xa01]", b'{"a": 1}}', b"[" * 500,
    b'{"a": ' + b'{"b": ' * 2000, b"\x00", b"[\x00]", b"[1 2]", b'{"a":1 "b":2}', b"['a']", b"[\"a\"\"b\"]",
]
# Implementation-defined in JSONTestSuite: both provers must agree (and with the reference).
IMPLEMENTATION_DEFINED = [
    b"[1.0e+28]", b"[-1e-400]", b"[123456789012345678901234567890]", b"[1e309]", b"[-1e309]",
    b'["\\uDBFF\\uDFFF"]', b'["\\uFFFE"]', b'["\\uFDD0"]', b"[" * 100000 + b"]" * 100000,
]


def _embedded(index, document):
    record = datafiles.clean_records(1, seed=index, first_id=1000 + index)[0]
    return json.dumps(record).encode()[:-1] + b', "doc": ' + document + b"}"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The corpus embedded in records, each in turn, converted by both provers."""
    documents = MUST_ACCEPT + MUST_REJECT + IMPLEMENTATION_DEFINED
    data = b"\n".join(_embedded(index, document) for index, document in enumerate(documents)) + b"\n"
    folder = tmp_path_factory.mktemp("conformance")
    source = folder / "corpus.json"
    source.write_bytes(data)
    results = {}
    for prover in ("c", "duckdb"):
        quarantine = folder / ("%s.jsonl" % prover)
        counts = json_to_parquet.convert(str(source), str(folder / ("%s.parquet" % prover)), str(quarantine),
                                         "s3://landing/corpus.json", "sid", prover=prover, block_bytes=4096)
        bad = {json.loads(line)["line"]: json.loads(line)["reason"] for line in quarantine.read_text().splitlines()}
        results[prover] = (counts, bad, pq.read_table(folder / ("%s.parquet" % prover)).to_pylist())
    return data, results


def test_must_accept_documents_are_valid_on_both_provers(converted):
    _data, results = converted
    for prover, (_counts, bad, _rows) in results.items():
        wrongly = [(MUST_ACCEPT[number - 1], bad[number]) for number in range(1, len(MUST_ACCEPT) + 1) if number in bad]
        assert wrongly == [], prover


def test_must_reject_documents_are_quarantined_with_a_reason_on_both_provers(converted):
    _data, results = converted
    first = len(MUST_ACCEPT) + 1
    for prover, (_counts, bad, _rows) in results.items():
        kept = [MUST_REJECT[number - first] for number in range(first, first + len(MUST_REJECT)) if number not in bad]
        assert kept == [], prover
        assert all(reason.startswith("not valid") for number, reason in bad.items() if number >= first), prover


def test_both_provers_agree_line_for_line_and_with_the_reference(converted):
    data, results = converted
    (c_counts, c_bad, c_rows), (d_counts, d_bad, d_rows) = results["c"], results["duckdb"]
    assert set(c_bad) == set(d_bad)
    assert c_counts["valid"] == d_counts["valid"] and c_counts["quarantined"] == d_counts["quarantined"]
    key = lambda row: row["shipping_id"]  # noqa: E731
    assert sorted(c_rows, key=key) == sorted(d_rows, key=key)
    # The reference (Python's json module) cannot follow 100,000 levels: leave that line out.
    deep = len(MUST_ACCEPT) + len(MUST_REJECT) + len(IMPLEMENTATION_DEFINED)
    lines = data.split(b"\n")
    expected = {number for number, _why, _raw in reference.analyze(b"\n".join(lines[:deep - 1])).bad}
    assert {number for number in c_bad if number < deep} == expected


# -- tens of thousands of mutated records -----------------------------------------------------------


def test_mutated_records_match_the_reference_exactly_on_both_provers(tmp_path):
    from test_native_prover import mutate

    rng = random.Random(11)
    base = generate_ndjson(2000, seed=11).encode("utf-8").splitlines()
    lines = [mutate(rng, line.decode("utf-8")) if rng.random() < 0.5 else line
             for line in (rng.choice(base) for _ in range(30000))]
    data = b"\n".join(lines) + b"\n"
    source = tmp_path / "mutated.json"
    source.write_bytes(data)
    expected = reference.analyze(data)
    quarantined = {}
    for prover in ("c", "duckdb"):
        quarantine = tmp_path / ("%s.jsonl" % prover)
        counts = json_to_parquet.convert(str(source), str(tmp_path / ("%s.parquet" % prover)), str(quarantine),
                                         "s3://landing/mutated.json", "sid", prover=prover, block_bytes=256 * 1024)
        quarantined[prover] = [json.loads(line)["line"] for line in quarantine.read_text().splitlines()]
        assert counts["read"] == expected.read, prover
        assert counts["quarantined"] == len(expected.bad), prover
        assert counts["valid"] == len(expected.kept) + len(expected.duplicate_lines), prover
        rows = pq.read_table(tmp_path / ("%s.parquet" % prover))
        assert rows.num_rows == counts["valid"]
        for name in reference.AMOUNT_FIELDS:
            kept = [record[name] for record in expected.kept]
            assert abs(sum(rows.column(name).to_pylist()) - sum(kept) - sum(
                reference.check_record(reference.parse_line(lines[n - 1].rstrip(b"\r")))[name]
                for n in expected.duplicate_lines)) < 1e-6 * max(1.0, sum(kept)), (prover, name)
    assert quarantined["c"] == quarantined["duckdb"] == [number for number, _why, _raw in expected.bad]
    assert len(lines) >= 30000 and len(expected.bad) > 3000
