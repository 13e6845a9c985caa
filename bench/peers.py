"""The commands compared: our Glue jobs and the tools a user could reach for instead.

Every peer does less than our job does (no validation, no quarantine, no counts); that is the bar.
Each is a whole ``python`` process so start-up and imports are part of the price, as on Glue.
Paths reach the peers as arguments and are written into their SQL as quoted literals: DuckDB's
Python client runs ``execute(sql, [path])`` through a prepared statement, which costs the COPY a
third of a second more (measured; the row "duckdb COPY, path as ? parameter" shows it).
"""
import os
import sys

from chalicelib.schema import FIELDS, PII_FIELDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DUCKDB_TYPES = {"int64": "BIGINT", "date32": "DATE", "string": "VARCHAR", "float64": "DOUBLE"}
DUCKDB_COLUMNS = "{%s}" % ", ".join("'%s': '%s'" % (f.name, _DUCKDB_TYPES[f.arrow_type]) for f in FIELDS)
_POLARS_TYPES = {"int64": "pl.Int64", "date32": "pl.String", "string": "pl.String", "float64": "pl.Float64"}
POLARS_SCHEMA = "{%s}" % ", ".join("%r: %s" % (f.name, _POLARS_TYPES[f.arrow_type]) for f in FIELDS)
# As the issue measured it: a memory limit, insertion order not kept.
DUCKDB_SETUP = """
import duckdb, sys
def q(text):
    return "'" + text.replace("'", "''") + "'"
con = duckdb.connect()
con.execute("SET memory_limit='512MB'")
con.execute("SET preserve_insertion_order=false")
"""

DUCKDB_COPY = "duckdb COPY"
DUCKDB_COPY_EXCLUDE = "duckdb COPY EXCLUDE"
PANDAS = "pandas read_json+to_parquet (awswrangler's approach)"

_CONVERT = {
    DUCKDB_COPY: DUCKDB_SETUP + """
con.execute("COPY (SELECT * FROM read_json(" + q(sys.argv[1]) + ", format='newline_delimited', columns=%s, dateformat='%%Y/%%m/%%d')) TO " + q(sys.argv[2]) + " (FORMAT parquet)")
""" % DUCKDB_COLUMNS,
    "duckdb COPY, path as ? parameter": DUCKDB_SETUP + """
con.execute("COPY (SELECT * FROM read_json(?, format='newline_delimited', columns=%s, dateformat='%%Y/%%m/%%d')) TO " + q(sys.argv[2]) + " (FORMAT parquet)", [sys.argv[1]])
""" % DUCKDB_COLUMNS,
    "polars scan_ndjson+sink_parquet": """
import polars as pl, sys
pl.scan_ndjson(sys.argv[1], schema=%s).with_columns(pl.col('shipping_date').str.strptime(pl.Date, '%%Y/%%m/%%d')).sink_parquet(sys.argv[2])
""" % POLARS_SCHEMA,
    "pyarrow read_json+write_table": """
import sys, pyarrow as pa, pyarrow.compute as pc, pyarrow.json as pj, pyarrow.parquet as pq
opts = pj.ParseOptions(explicit_schema=pa.schema([('shipping_date', pa.string())]))
t = pj.read_json(sys.argv[1], parse_options=opts)
i = t.schema.get_field_index('shipping_date')
t = t.set_column(i, 'shipping_date', pc.strptime(t.column(i), format='%Y/%m/%d', unit='s').cast(pa.date32()))
pq.write_table(t, sys.argv[2])
""",
    # awswrangler's s3.read_json(lines=True) and s3.to_parquet run exactly these two pandas calls
    # (plus the S3 transfers); on local files the S3 part is left out in its favour.
    PANDAS: """
import sys, pandas as pd
dtypes = {'shipping_cost': 'float64', 'shipping_distance': 'float64', 'quantity': 'float64', 'shipping_date': 'string'}
df = pd.read_json(sys.argv[1], lines=True, dtype=dtypes)
df['shipping_date'] = pd.to_datetime(df['shipping_date'], format='%Y/%m/%d').dt.date
df.to_parquet(sys.argv[2])
""",
}

_NORMALIZE = {
    DUCKDB_COPY_EXCLUDE: DUCKDB_SETUP + """
con.execute("COPY (SELECT * EXCLUDE (%s) FROM read_parquet(" + q(sys.argv[1]) + ")) TO " + q(sys.argv[2]) + " (FORMAT parquet)")
""" % ", ".join(PII_FIELDS),
}


def convert_peers(include_slow=True):
    """``{name: argv-builder(source, target)}`` for the JSON -> Parquet peers (without the
    pandas one, which needs ~2.5 GB, unless ``include_slow``)."""
    return {name: _python_c(code) for name, code in _CONVERT.items() if include_slow or name != PANDAS}


def normalize_peers():
    """``{name: argv-builder(source, target)}`` for the normalize peers."""
    return {name: _python_c(code) for name, code in _NORMALIZE.items()}


def ours_convert(source, target, quarantine, prover=None):
    argv = [sys.executable, os.path.join(ROOT, "glue", "json_to_parquet.py"),
            "--source_uri", source, "--target_uri", target, "--quarantine_uri", quarantine]
    return argv + (["--prover", prover] if prover else [])


def c_prover_installed():
    """Whether the job finds the C prover (glue/native) in this interpreter."""
    import importlib.util

    return importlib.util.find_spec("shipping_ndjson") is not None


def ours_normalize(source, database, table, summary, memory_limit=None):
    argv = [sys.executable, os.path.join(ROOT, "glue", "normalize.py"), "--source_uri", source,
            "--database", database, "--table", table, "--summary_uri", summary, "--region", "us-east-1"]
    return argv + (["--memory_limit", memory_limit] if memory_limit else [])


def _python_c(code):
    def argv(source, target):
        return [sys.executable, "-c", code, source, target]
    return argv
