import datetime as dt
import io
import json
import math
import subprocess
import sys

import boto3
import pytest

from chalicelib import generator
from chalicelib.generator import CITIES, ShippingGenerator, landing_key, put_batch
from chalicelib.schema import FIELDS, INT64_MAX

from conftest import PROJECT_DIR

TODAY = dt.date(2026, 1, 30)
BUCKET = "landing-test"


def rule_violations(record):
    """The published validation rules (chalicelib/schema.py) as a list of broken ones."""
    problems = []
    if not isinstance(record, dict):
        return ["not an object"]
    for field in FIELDS:
        present = record.get(field.name) is not None
        value = record.get(field.name)
        if field.required and not present:
            problems.append("%s missing" % field.name)
            continue
        if not present:
            continue
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if field.kind == "id" and not (is_int and 0 < value <= INT64_MAX):
            problems.append("%s not a positive int64" % field.name)
        elif field.kind == "opt_int" and not (is_int and -INT64_MAX - 1 <= value <= INT64_MAX):
            problems.append("%s not an int64" % field.name)
        elif field.kind == "date":
            try:
                dt.datetime.strptime(value, "%Y/%m/%d")
                ok = len(value) == 10
            except (TypeError, ValueError):
                ok = False
            if not ok:
                problems.append("%s not YYYY/MM/DD" % field.name)
        elif field.kind == "text" and not (isinstance(value, str) and value):
            problems.append("%s not a non-empty string" % field.name)
        elif field.kind == "opt_text" and not isinstance(value, str):
            problems.append("%s not a string" % field.name)
        elif field.kind == "amount" and not (
            isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0
        ):
            problems.append("%s not a finite number >= 0" % field.name)
    return problems


def assert_valid(record):
    assert rule_violations(record) == []


def parse_lines(text):
    lines = text.splitlines()
    return [json.loads(line) for line in lines]


def test_every_record_is_valid_and_in_the_original_ranges():
    records = parse_lines(ShippingGenerator(seed=1, today=TODAY).ndjson(5000))

    assert len(records) == 5000
    for record in records:
        assert_valid(record)
        assert record["destination_city"] in CITIES
        assert 1000 <= record["shipping_cost"] <= 10000
        assert isinstance(record["shipping_cost"], float)
        assert 1000 <= record["quantity"] <= 10000
        assert 10 <= record["shipping_distance"] <= 100
        assert isinstance(record["product_id"], int) and record["product_id"] > 0
        assert record["customer_name"] and record["street_address"]
    assert {r["destination_city"] for r in records} == set(CITIES)


def test_shipping_dates_are_the_next_seven_days():
    records = generator.generate_records(2000, seed=2, today=TODAY)

    dates = {r["shipping_date"] for r in records}
    expected = {(TODAY + dt.timedelta(days=d)).strftime("%Y/%m/%d") for d in range(1, 8)}
    assert dates == expected


def test_days_limits_the_distinct_dates():
    records = generator.generate_records(500, seed=2, today=TODAY, days=1)

    assert {r["shipping_date"] for r in records} == {"2026/01/31"}


def test_shipping_ids_are_unique_within_and_across_batches():
    first = generator.generate_records(20000)
    second = generator.generate_records(20000)

    first_ids = {r["shipping_id"] for r in first}
    second_ids = {r["shipping_id"] for r in second}
    assert len(first_ids) == 20000
    assert len(second_ids) == 20000
    assert not first_ids & second_ids


def test_same_seed_same_output_and_other_seed_other_output():
    one = generator.generate_ndjson(300, seed=42, today=TODAY)
    again = generator.generate_ndjson(300, seed=42, today=TODAY)
    other = generator.generate_ndjson(300, seed=43, today=TODAY)

    assert one == again
    assert one != other


def test_ndjson_lines_hold_the_same_records_as_records():
    assert parse_lines(generator.generate_ndjson(700, seed=5, today=TODAY)) == (
        generator.generate_records(700, seed=5, today=TODAY)
    )


def test_ndjson_escapes_quotes_backslashes_and_unicode(monkeypatch):
    tricky_names = ['Anna "Nan" O\'Neil', "Back\\slash", "Zoë Ångström", "山田 太郎"]

    class TrickyFaker:
        def __init__(self, locale):
            self.calls = 0

        def seed_instance(self, seed):
            pass

        def name(self):
            self.calls += 1
            return tricky_names[self.calls % len(tricky_names)]

        def street_address(self):
            return 'Line "1"\nLine 2\t\u2028'

    monkeypatch.setattr("faker.Faker", TrickyFaker)
    records = parse_lines(ShippingGenerator(seed=9, today=TODAY, pool_size=4).ndjson(400))

    assert {r["customer_name"] for r in records} == set(tricky_names)
    assert {r["street_address"] for r in records} == {'Line "1"\nLine 2\t\u2028'}
    for record in records:
        assert_valid(record)


def test_non_ascii_locale_still_gives_valid_json():
    text = ShippingGenerator(seed=3, today=TODAY, locale="ja_JP").ndjson(200)

    records = parse_lines(text)
    assert len(records) == 200
    assert any(any(ord(ch) > 127 for ch in r["customer_name"]) for r in records)


def test_zero_rows_gives_empty_output():
    assert generator.generate_ndjson(0, seed=1) == ""


def test_landing_key_is_under_incoming_by_utc_date():
    now = dt.datetime(2026, 3, 4, 23, 30, 5, tzinfo=dt.timezone(dt.timedelta(hours=-2)))

    assert landing_key(now, "abc123") == "incoming/2026/03/05/shipping-20260305T013005Z-abc123.json"
    assert landing_key(dt.datetime(2026, 3, 4, 1, 2, 3), "x_y-z") == (
        "incoming/2026/03/04/shipping-20260304T010203Z-x_y-z.json"
    )


@pytest.mark.parametrize("unique", ["", "a/b", "has space", "../up"])
def test_landing_key_refuses_unsafe_unique_parts(unique):
    with pytest.raises(ValueError, match="letters, digits"):
        landing_key(dt.datetime(2026, 3, 4), unique)


def test_put_batch_puts_a_valid_batch_into_the_bucket(aws):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    now = dt.datetime(2026, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)

    batch = put_batch(s3, BUCKET, rows=250, now=now, unique="u1")

    assert batch["key"] == "incoming/2026/05/06/shipping-20260506T070809Z-u1.json"
    obj = s3.get_object(Bucket=BUCKET, Key=batch["key"])
    assert obj["ETag"].strip('"') == batch["etag"]
    records = parse_lines(obj["Body"].read().decode("utf-8"))
    assert len(records) == batch["rows"] == 250
    for record in records:
        assert_valid(record)
    assert {r["shipping_date"] for r in records} <= {"2026/05/%02d" % d for d in range(7, 14)}


def test_put_batch_keys_of_separate_calls_differ(aws):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    now = dt.datetime(2026, 5, 6, 7, 8, 9)

    keys = {put_batch(s3, BUCKET, rows=1, now=now)["key"] for _ in range(3)}

    assert len(keys) == 3


def test_put_batch_into_a_missing_bucket_fails_with_no_such_bucket(aws):
    s3 = boto3.client("s3")

    with pytest.raises(s3.exceptions.ClientError) as raised:
        put_batch(s3, "no-such-bucket", rows=1)

    assert raised.value.response["Error"]["Code"] == "NoSuchBucket"


def test_cli_main_writes_the_requested_rows():
    out = io.StringIO()

    assert generator.main(["--rows", "123", "--seed", "7", "--date", "2026-01-30"], out=out) == 0

    assert out.getvalue() == generator.generate_ndjson(123, seed=7, today=TODAY)


def test_cli_runs_as_a_module_and_output_parses():
    result = subprocess.run(
        [sys.executable, "-m", "chalicelib.generator", "--rows", "40", "--seed", "1"],
        cwd=PROJECT_DIR, capture_output=True, text=True, check=True,
    )

    records = parse_lines(result.stdout)
    assert len(records) == 40
    for record in records:
        assert_valid(record)


def test_cli_help_explains_the_options(capsys):
    with pytest.raises(SystemExit) as exited:
        generator.main(["--help"])

    assert exited.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--rows", "--seed", "--date", "NDJSON"):
        assert option in help_text


def test_cli_rejects_a_bad_date(capsys):
    with pytest.raises(SystemExit) as exited:
        generator.main(["--rows", "1", "--date", "30/01/2026"])

    assert exited.value.code == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err
