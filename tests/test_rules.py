"""The rules, once: every form of a rule is derived from chalicelib.schema's data or checked
against it here (the README's table, the SQL of both provers' paths, the C prover's field
specification), and the independent oracle (tests/reference.py) covers the same fields and kinds."""
import json
import os
import re
import subprocess
import sys

import pytest

import reference
from chalicelib import schema

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLUE_DIR = os.path.join(PROJECT_DIR, "glue")
if GLUE_DIR not in sys.path:
    sys.path.insert(0, GLUE_DIR)

from datapath import judge, provers, rules_sql  # noqa: E402

import duckdb  # noqa: E402

VALID = {"shipping_id": 7, "shipping_date": "2024/02/29", "customer_name": "Ana", "street_address": "1 Main St",
         "destination_city": "Dakar", "shipping_cost": 1.5, "shipping_distance": 2.0, "quantity": 3.0,
         "product_id": 9}


def test_the_readme_holds_the_rules_table_generated_from_the_schema():
    with open(os.path.join(PROJECT_DIR, "README.md"), encoding="utf-8") as readme:
        text = readme.read()
    assert schema.rules_table() in text
    assert "byte order mark" in text and "128 MiB" in text
    assert schema.MAX_LINE_BYTES == 128 * 1024 * 1024


def probes(kind):
    """``[(JSON value or DROP, valid by the kind's data)]`` for a field of ``kind``."""
    rule = schema.KINDS[kind]
    cases = [("DROP", not rule.required), (None, not rule.required), (True, False), ([], False), ({}, False)]
    if rule.json in ("integer", "number"):
        low = rule.minimum if rule.minimum is not None else -5
        cases += [(low, rule.minimum is None or not rule.exclusive), (low + 1, True), (low - 1, rule.minimum is None),
                  ("12", False)]
        cases += [(low + 1.5, rule.json == "number")]
    elif rule.json == "date":
        cases += [("2024/02/29", True), ("2023/02/29", False), ("2024-02-28", False), (20240228, False)]
    else:
        shortest = max(rule.min_length or 0, 0)
        cases += [("x" * shortest, True), (5, False)]
        if shortest:
            cases.append(("x" * (shortest - 1), False))
    return cases


def _line(field, value):
    record = dict(VALID)
    if value == "DROP":
        del record[field]
    else:
        record[field] = value
    return json.dumps(record).encode()


CASES = [(f.name, value, valid) for f in schema.FIELDS for value, valid in probes(f.kind)]


@pytest.mark.parametrize("field, value, valid", CASES, ids=["%s=%r" % (f, v) for f, v, _ in CASES])
def test_the_oracle_and_the_judge_follow_the_schemas_data(field, value, valid):
    line = _line(field, value)
    try:
        reference.check_record(reference.parse_line(line))
        oracle = True
    except reference.BadLine:
        oracle = False
    rescued, bad = judge.Judge(duckdb.connect()).judge([(0, line)])
    assert oracle == valid, "tests/reference.py disagrees with chalicelib.schema"
    assert (rescued is not None) == valid, bad
    if not valid:
        assert bad[0][1].startswith(field) or bad[0][1].startswith("not")


def test_the_oracle_covers_the_schemas_fields():
    assert reference.FIELD_NAMES == schema.FIELD_NAMES
    assert reference.AMOUNT_FIELDS == schema.AMOUNT_FIELDS
    assert (reference.INT64_MIN, reference.INT64_MAX) == (schema.INT64_MIN, schema.INT64_MAX)


def test_a_rule_changed_in_the_data_changes_every_derived_form(monkeypatch):
    """Raising the smallest amount to above 10 in chalicelib.schema alone changes the exact SQL,
    the proof SQL, the C prover's verdict and the README table."""
    from datapath.blocks import Block

    monkeypatch.setitem(schema.KINDS, "amount", schema.KINDS["amount"]._replace(minimum=10, exclusive=True))

    def line(quantity):
        return json.dumps(dict(VALID, shipping_cost=20.0, shipping_distance=30.0, quantity=quantity)).encode()

    rescued, bad = judge.Judge(duckdb.connect()).judge([(0, line(10.0)), (1, line(10.5))])
    assert rescued.num_rows == 1 and bad == [(0, "quantity must be a finite JSON number > 10, got 10.0", line(10.0))]
    data = line(10.0) + b"\n" + line(10.5) + b"\n"
    for prover in (provers.DuckDBProver(duckdb.connect()), provers.CProver()):
        proof = prover.prove(Block(bytearray(data), len(data)))
        assert proof.rows == 1 and [number for number, _line in proof.doubtful] == [0], prover.name
    assert "| a finite JSON number > 10 |" in schema.rules_table()


def test_no_limit_is_written_out_in_the_data_path():
    """The limits live in chalicelib/schema.py: the SQL and the C prover get them from there."""
    sources = {}
    for name in ("rules_sql.py", "provers.py", "judge.py"):
        with open(os.path.join(GLUE_DIR, "datapath", name), encoding="utf-8") as source:
            sources[name] = source.read()
    for name, text in sources.items():
        assert not re.search(r"[<>]=? *0\b|BETWEEN 0\b", text), name
    with open(os.path.join(GLUE_DIR, "native", "shipping_ndjson.c"), encoding="utf-8") as source:
        c_source = source.read()
    assert "n.i <= 0" not in c_source and "K_ID" not in c_source


def test_git_grep_finds_the_limits_in_one_place_outside_tests():
    done = subprocess.run(["git", "grep", "-n", "-e", "^MAX_LINE_BYTES =", "-e", "^DATE_FORMAT =", "-e", "^INT64_MAX =", "--",
                           ":!tests", ":!docs", ":!README.md"],
                          cwd=PROJECT_DIR, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        pytest.skip("git is not usable here: %s" % done.stderr.strip())
    files = {line.split(":", 1)[0] for line in done.stdout.splitlines()}
    assert files == {"chalicelib/schema.py"}, done.stdout


@pytest.mark.parametrize("value, valid", [("1" + "0" * 400, False), ("1e400", False), ("-0.0", True),
                                          ("0", True), ("12.5", True), ("true", False), ('"5"', False)])
def test_the_judges_python_rules_for_long_lines_agree_with_the_oracle(value, valid):
    record = json.dumps(VALID)[:-1] + ', "pad": "%s"}' % ("x" * (judge.LONG_LINE_BYTES + 1))
    line = record.replace('"quantity": 3.0', '"quantity": ' + value).encode()
    rescued, bad = judge.Judge(duckdb.connect()).judge([(0, line)])
    try:
        reference.check_record(reference.parse_line(line))
        oracle = True
    except reference.BadLine:
        oracle = False
    assert (rescued is not None) == valid == oracle, bad
