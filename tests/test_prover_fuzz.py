"""Property-based fuzzing of the C prover (glue/native) against the independent reference: every
line it proves must be valid by the rules, with the rules' values. Bounded: FUZZ_EXAMPLES
examples per property (default 400); `make test` also runs it under ASan/UBSan."""
import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.generator import generate_ndjson
from test_native_prover import check_lines

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "400"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)
BASE = generate_ndjson(50, seed=21).encode("utf-8").splitlines()
# Bytes that matter to a JSON lexer, drawn more often than the rest.
INTERESTING = b'{}[]",:\\ \t\r\x00\x0b\x0c-+.eE0123456789tfnul/\x7f\x80\xbf\xc2\xdf\xe0\xed\xef\xf0\xf4\xff'

byte = st.one_of(st.sampled_from(list(INTERESTING)), st.integers(0, 255)).map(lambda b: bytes([b]))
edit = st.tuples(st.sampled_from(["insert", "replace", "delete", "cut", "repeat"]), st.integers(0, 10 ** 6), byte)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8)


def apply(line, edits):
    for kind, at, value in edits:
        at %= len(line) + 1
        if kind == "insert":
            line = line[:at] + value + line[at:]
        elif kind == "replace":
            line = line[:at] + value + line[at + 1:]
        elif kind == "delete":
            line = line[:at] + line[at + 1:]
        elif kind == "cut":
            line = line[:at]
        else:
            line = line[:at] + line[at:at + 8] + line[at:]
    return line.replace(b"\n", b" ")


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(BASE), st.lists(edit, max_size=4)), min_size=1, max_size=8))
def test_byte_mutations_are_never_proven_wrongly(picks):
    check_lines([apply(line, edits) for line, edits in picks])


@FUZZ
@given(st.sampled_from(BASE), st.sampled_from(["shipping_id", "shipping_date", "customer_name", "destination_city",
                                               "shipping_cost", "quantity", "product_id", "other"]),
       json_value, st.booleans())
def test_any_json_value_in_any_field_is_never_proven_wrongly(line, name, value, ascii_only):
    record = json.loads(line)
    record[name] = value
    check_lines([json.dumps(record, ensure_ascii=ascii_only).encode("utf-8")])


def test_the_module_under_test_is_the_one_asked_for():
    """Under `make test-native-sanitizers` the sanitized build must be the one imported."""
    import shipping_ndjson

    expected = os.environ.get("SHIPPING_NDJSON_EXPECTED")
    if expected:
        assert os.path.dirname(os.path.abspath(shipping_ndjson.__file__)) == os.path.abspath(expected)
