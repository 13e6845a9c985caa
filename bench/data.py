"""Benchmark inputs, generated once and cached under bench/.cache/ (git-ignored)."""
import json
import os
import subprocess
import sys

from bench.peers import DUCKDB_COLUMNS, ROOT

CACHE = os.path.join(ROOT, "bench", ".cache")
# The reference day of the generated shipping dates: fixed, so every machine generates the same bytes.
REFERENCE_DAY = "2026-01-01"

# One bad line of each kind the validation rules reject, cycled through the file.
BAD_LINES = (
    "this is not json",
    '{"shipping_id": 1, "shipping_date": "2024/01/15"',
    '["an", "array"]',
    '{"shipping_date": "2024/01/15", "destination_city": "main_city", "shipping_cost": 1.0, "shipping_distance": 1.0, "quantity": 1.0}',
    '{"shipping_id": -5, "shipping_date": "2024/01/15", "destination_city": "main_city", "shipping_cost": 1.0, "shipping_distance": 1.0, "quantity": 1.0}',
    '{"shipping_id": 7, "shipping_date": "2024/02/30", "destination_city": "main_city", "shipping_cost": 1.0, "shipping_distance": 1.0, "quantity": 1.0}',
    '{"shipping_id": 8, "shipping_date": "2024/01/15", "destination_city": "", "shipping_cost": 1.0, "shipping_distance": 1.0, "quantity": 1.0}',
    '{"shipping_id": 9, "shipping_date": "2024/01/15", "destination_city": "main_city", "shipping_cost": "12", "shipping_distance": 1.0, "quantity": 1.0}',
    '{"shipping_id": 10, "shipping_date": "2024/01/15", "destination_city": "main_city", "shipping_cost": 1.0, "shipping_distance": -1.0, "quantity": 1.0}',
    '{"shipping_id": 11.5, "shipping_date": "2024/01/15", "destination_city": "main_city", "shipping_cost": 1.0, "shipping_distance": 1.0, "quantity": 1.0}',
    '{"shipping_id": 12, "shipping_date": "2024/01/15", "destination_city": "main_city", "shipping_cost": 1.0, "shipping_distance": 1.0, "quantity": 1.0, "product_id": "x"}',
)


def _path(name):
    return os.path.join(CACHE, name)


def generated(rows, seed, log):
    """Path of an NDJSON file of ``rows`` generated rows (cached)."""
    path = _path("clean-%d-seed%d-%s.json" % (rows, seed, REFERENCE_DAY))
    if not os.path.exists(path):
        os.makedirs(CACHE, exist_ok=True)
        log("generating %s rows -> %s" % (format(rows, ","), path))
        with open(path + ".tmp", "wb") as out:
            subprocess.run([sys.executable, "-m", "chalicelib.generator", "--rows", str(rows), "--seed", str(seed),
                            "--date", REFERENCE_DAY], stdout=out, check=True, cwd=ROOT)
        os.replace(path + ".tmp", path)
    return path


def history(rows, seed, days, log):
    """Path of an NDJSON file of ``rows`` generated rows whose shipping dates spread over
    ``days`` days (cached): a backfill of a shipment history."""
    path = _path("history-%d-seed%d-%ddays-%s.json" % (rows, seed, days, REFERENCE_DAY))
    if not os.path.exists(path):
        os.makedirs(CACHE, exist_ok=True)
        log("generating %s rows over %d days -> %s" % (format(rows, ","), days, path))
        code = ("import datetime, sys; from chalicelib.generator import ShippingGenerator; "
                "sys.stdout.write(ShippingGenerator(seed=%d, today=datetime.date.fromisoformat(%r), days=%d)"
                ".ndjson(%d))" % (seed, REFERENCE_DAY, days, rows))
        with open(path + ".tmp", "wb") as out:
            subprocess.run([sys.executable, "-c", code], stdout=out, check=True, cwd=ROOT)
        os.replace(path + ".tmp", path)
    return path


def with_bad_lines(clean_path, every, log):
    """The clean file with one bad line inserted after every ``every`` good lines (cached).

    Returns (path, number of bad lines inserted)."""
    path = clean_path.replace(".json", "-bad-every%d.json" % every)
    count_path = path + ".count"
    if not os.path.exists(count_path):
        log("writing %s" % path)
        inserted = 0
        with open(clean_path, "rb") as src, open(path, "wb") as out:
            for number, line in enumerate(src, 1):
                out.write(line)
                if number % every == 0:
                    out.write(BAD_LINES[inserted % len(BAD_LINES)].encode() + b"\n")
                    inserted += 1
        with open(count_path, "w") as f:
            f.write(str(inserted))
    with open(count_path) as f:
        return path, int(f.read())


def expected_stats(clean_path, log):
    """Row count, sums and distinct rows of a clean input, computed by DuckDB straight from the
    JSON (cached). Independent of our jobs: this is what their outputs are checked against."""
    path = clean_path + ".stats.json"
    if not os.path.exists(path):
        import duckdb

        log("computing expected row count and sums of %s" % clean_path)
        con = duckdb.connect()
        row = con.execute(
            "SELECT count(*), sum(shipping_cost), sum(shipping_distance), sum(quantity), "
            "count(DISTINCT (shipping_id, shipping_date, customer_name, street_address, destination_city, "
            "shipping_cost, shipping_distance, quantity, product_id)) "
            "FROM read_json(?, format='newline_delimited', columns=%s, dateformat='%%Y/%%m/%%d')" % DUCKDB_COLUMNS,
            [clean_path]).fetchone()
        stats = {"rows": row[0], "shipping_cost": row[1], "shipping_distance": row[2], "quantity": row[3],
                 "distinct_rows": row[4]}
        with open(path, "w") as f:
            json.dump(stats, f)
    with open(path) as f:
        return json.load(f)
