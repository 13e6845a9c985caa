"""Synthetic shipping records (the schema in chalicelib.schema), as NDJSON for the landing bucket.

Every record is valid by the published rules. Names and street addresses are Faker-realistic,
the cities and value ranges are the original design's, and ``product_id`` is always set.

Speed: Faker builds a row in ~0.5 ms, so it fills small pools of names and addresses once per
batch and the rows combine pool entries with ``random``, column by column, in chunks. Pool entries
are JSON-encoded once, so every line is one string format and still valid JSON.

Nothing is kept between batches (no files, no module state): ``shipping_id``s of a batch are a
consecutive run starting at a random 62-bit base, so separate batches do not collide (two batches of
a million rows overlap with probability ~1e-12), and the same seed gives the same batch.

CLI: ``python -m chalicelib.generator --rows N [--seed S] [--date YYYY-MM-DD]`` writes NDJSON to
stdout.
"""
import argparse
import datetime as dt
import json
import os
import random
import re
import sys
import uuid

from chalicelib.resources import INCOMING_PREFIX
from chalicelib.schema import DATE_FORMAT

# The original generator's destinations.
CITIES = (
    "serverless_island",
    "island_city",
    "machine_learning_island",
    "architect_city",
    "data_analytic_hanger",
    "main_city",
)
# Inclusive value ranges of the original generator.
SHIPPING_COST_RANGE = (1000, 10000)  # written as a float, as the original's randint(...) / 1.0
QUANTITY_RANGE = (1000, 10000)
SHIPPING_DISTANCE_RANGE = (10, 100)
PRODUCT_ID_RANGE = (1, 1000)
# Shipping dates fall on the DEFAULT_DAYS days after the reference day: near "now", and few
# distinct dates, because each one becomes a partition of the processed table.
DEFAULT_DAYS = 7
DEFAULT_POOL_SIZE = 2000
FAKER_LOCALE = "en_US"
# Room above the random id base, so base + rows stays within int64.
_ID_BASE_BITS = 62
_CHUNK_ROWS = 10000
_UNIQUE_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")

# One format per line; the %s fields for PII are already JSON-encoded strings.
_LINE = (
    '{"shipping_id": %d, "shipping_date": "%s", "customer_name": %s, "street_address": %s, '
    '"destination_city": "%s", "shipping_cost": %d.0, "shipping_distance": %d, "quantity": %d, '
    '"product_id": %d}\n'
)


def _utc_today():
    return dt.datetime.now(dt.timezone.utc).date()


class ShippingGenerator:
    """Builds batches of shipping records.

    ``seed``: same seed (and same ``today``), same output; ``None`` draws from the OS.
    ``today``: the reference day (a ``datetime.date``, default today in UTC); shipping dates fall
    on the ``days`` days after it. ``pool_size``: how many Faker names and addresses to draw;
    ``locale``: Faker's locale for them. Successive calls on one instance continue the id sequence.
    """

    def __init__(self, seed=None, today=None, days=DEFAULT_DAYS, pool_size=DEFAULT_POOL_SIZE,
                 locale=FAKER_LOCALE):
        if days < 1:
            raise ValueError("days must be >= 1, got %r" % (days,))
        if pool_size < 1:
            raise ValueError("pool_size must be >= 1, got %r" % (pool_size,))
        self._rng = random.Random(seed)
        today = today or _utc_today()
        self.shipping_dates = tuple(
            (today + dt.timedelta(days=offset)).strftime(DATE_FORMAT) for offset in range(1, days + 1)
        )
        self._pool_size = pool_size
        self._locale = locale
        self._names = None
        self._addresses = None
        self._next_id = self._rng.getrandbits(_ID_BASE_BITS) + 1

    def _pools(self, rows):
        """Returns (names, addresses), drawn once, no larger than the first batch needs."""
        if self._names is None:
            # Imported here: the CLI's --help and landing_key need no Faker.
            from faker import Faker

            fake = Faker(self._locale)
            fake.seed_instance(self._rng.getrandbits(64))
            size = max(1, min(self._pool_size, rows))
            self._names = tuple(fake.name() for _ in range(size))
            self._addresses = tuple(fake.street_address() for _ in range(size))
        return self._names, self._addresses

    def _columns(self, rows):
        """Yields chunks of columns: (ids, dates, name indexes, address indexes, cities, costs,
        distances, quantities, product ids)."""
        names, addresses = self._pools(rows)
        choices = self._rng.choices
        name_indexes = range(len(names))
        address_indexes = range(len(addresses))
        costs = range(SHIPPING_COST_RANGE[0], SHIPPING_COST_RANGE[1] + 1)
        distances = range(SHIPPING_DISTANCE_RANGE[0], SHIPPING_DISTANCE_RANGE[1] + 1)
        quantities = range(QUANTITY_RANGE[0], QUANTITY_RANGE[1] + 1)
        product_ids = range(PRODUCT_ID_RANGE[0], PRODUCT_ID_RANGE[1] + 1)
        remaining = rows
        while remaining > 0:
            n = min(_CHUNK_ROWS, remaining)
            first_id = self._next_id
            self._next_id += n
            remaining -= n
            yield (
                range(first_id, first_id + n),
                choices(self.shipping_dates, k=n),
                choices(name_indexes, k=n),
                choices(address_indexes, k=n),
                choices(CITIES, k=n),
                choices(costs, k=n),
                choices(distances, k=n),
                choices(quantities, k=n),
                choices(product_ids, k=n),
            )

    def records(self, rows):
        """Returns a list of ``rows`` record dicts."""
        result = []
        for ids, dates, name_ix, address_ix, cities, costs, distances, quantities, products in (
            self._columns(rows)
        ):
            for row in zip(
                ids, dates, name_ix, address_ix, cities, costs, distances, quantities, products
            ):
                result.append({
                    "shipping_id": row[0],
                    "shipping_date": row[1],
                    "customer_name": self._names[row[2]],
                    "street_address": self._addresses[row[3]],
                    "destination_city": row[4],
                    "shipping_cost": row[5] / 1.0,
                    "shipping_distance": row[6],
                    "quantity": row[7],
                    "product_id": row[8],
                })
        return result

    def ndjson_chunks(self, rows):
        """Yields NDJSON text (one record per line, each line ending in a newline) in chunks of up
        to 10,000 lines."""
        names, addresses = self._pools(rows)
        # json.dumps escapes quotes, backslashes, control and non-ASCII characters once per pool
        # entry instead of once per row.
        names = [json.dumps(name) for name in names]
        addresses = [json.dumps(address) for address in addresses]
        line = _LINE
        for ids, dates, name_ix, address_ix, cities, costs, distances, quantities, products in (
            self._columns(rows)
        ):
            yield "".join([
                line % (i, d, names[n], addresses[a], c, cost, dist, q, p)
                for i, d, n, a, c, cost, dist, q, p in zip(
                    ids, dates, name_ix, address_ix, cities, costs, distances, quantities, products
                )
            ])

    def ndjson(self, rows):
        """Returns ``rows`` records as one NDJSON string."""
        return "".join(self.ndjson_chunks(rows))


def generate_records(rows, seed=None, today=None, days=DEFAULT_DAYS):
    """Returns a list of ``rows`` valid record dicts (see ShippingGenerator for the arguments)."""
    return ShippingGenerator(seed=seed, today=today, days=days).records(rows)


def generate_ndjson(rows, seed=None, today=None, days=DEFAULT_DAYS):
    """Returns ``rows`` valid records as NDJSON text (see ShippingGenerator for the arguments)."""
    return ShippingGenerator(seed=seed, today=today, days=days).ndjson(rows)


def landing_key(now, unique):
    """Returns ``incoming/YYYY/MM/DD/shipping-<YYYYMMDDTHHMMSSZ>-<unique>.json`` for ``now`` in UTC
    (a naive datetime is taken as UTC).

    Raises ValueError when ``unique`` is empty or holds characters other than [A-Za-z0-9_-].
    """
    unique = str(unique)
    if not _UNIQUE_SAFE.match(unique):
        raise ValueError(
            "unique must be a non-empty string of letters, digits, '_' or '-', got %r" % (unique,)
        )
    if now.tzinfo is not None:
        now = now.astimezone(dt.timezone.utc)
    return "%s%s/shipping-%s-%s.json" % (
        INCOMING_PREFIX, now.strftime("%Y/%m/%d"), now.strftime("%Y%m%dT%H%M%SZ"), unique
    )


def put_batch(s3_client, bucket, rows, seed=None, now=None, unique=None):
    """Generates ``rows`` records in memory and puts them into ``bucket`` under ``landing_key``.

    ``now`` (default: the current UTC time) names the key and is the reference day of the shipping
    dates; ``unique`` (default: a random hex string) keeps keys of the same second apart.
    Returns ``{"bucket", "key", "rows", "bytes", "etag"}``; raises botocore's ClientError when the
    put fails (e.g. NoSuchBucket: deploy the stage first).
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    if now.tzinfo is not None:
        now = now.astimezone(dt.timezone.utc)
    key = landing_key(now, unique or uuid.uuid4().hex[:12])
    body = ShippingGenerator(seed=seed, today=now.date()).ndjson(rows).encode("utf-8")
    response = s3_client.put_object(
        Bucket=bucket, Key=key, Body=body, ContentType="application/x-ndjson"
    )
    return {
        "bucket": bucket,
        "key": key,
        "rows": rows,
        "bytes": len(body),
        "etag": (response.get("ETag") or "").strip('"'),
    }


def _date_arg(text):
    try:
        return dt.datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise argparse.ArgumentTypeError("expected a date as YYYY-MM-DD, got %r" % text) from None


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a whole number, got %r" % text) from None
    if value < 0:
        raise argparse.ArgumentTypeError("expected a number >= 0, got %d" % value)
    return value


def main(argv=None, out=None):
    """CLI entry point; writes NDJSON to ``out`` (default stdout). Returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m chalicelib.generator",
        description="Write synthetic shipping records as NDJSON (one JSON object per line) to "
        "stdout. Every record is valid by the schema in chalicelib/schema.py; customer_name and "
        "street_address are realistic fake PII.",
    )
    parser.add_argument("--rows", type=_positive_int, required=True, help="number of records")
    parser.add_argument(
        "--seed", type=int, default=None,
        help="seed for a reproducible batch (same seed and --date, same output; "
        "default: a fresh random batch with fresh shipping_ids)",
    )
    parser.add_argument(
        "--date", type=_date_arg, default=None,
        help="reference day YYYY-MM-DD (default: today, UTC); shipping dates fall on the "
        "--days days after it",
    )
    parser.add_argument(
        "--days", type=int, default=DEFAULT_DAYS, choices=range(1, 366), metavar="DAYS",
        help="how many distinct shipping dates, 1-365 (default: %d)" % DEFAULT_DAYS,
    )
    args = parser.parse_args(argv)
    out = out or sys.stdout
    generator = ShippingGenerator(seed=args.seed, today=args.date, days=args.days)
    try:
        for chunk in generator.ndjson_chunks(args.rows):
            out.write(chunk)
        out.flush()
    except BrokenPipeError:
        # `... | head` closes the pipe early: not an error. Point stdout at devnull so the
        # interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
