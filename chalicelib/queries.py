"""The Athena SQL of the pipeline (Presto/Trino dialect, as Athena runs it).

The first three columns are the original design's query; the rest are added. The local stack
transpiles this same text to DuckDB.
"""
from chalicelib.schema import TOTALS

# (column alias, SQL expression, summary key, type) in result order. Types tell summaries how to
# parse Athena's VarCharValue strings. The sums are 0, not NULL, over no rows (a superseded file's
# query): a NULL cell has no VarCharValue, and the state machine reads the values by position.
TOTALS_COLUMNS = tuple(
    (alias, "COALESCE(SUM(%s), 0)" % field_name, key, "float") for alias, field_name, key in TOTALS
) + (
    ("Shipments", "COUNT(*)", "shipments", "int"),
    ("Destinations", "COUNT(DISTINCT destination_city)", "destinations", "int"),
    ("Average_Cost_per_Mile_in_$", "SUM(shipping_cost) / NULLIF(SUM(shipping_distance), 0)",
     "cost_per_mile", "float"),
)


def totals_sql(database, table, source_id=None):
    """Totals over the processed table; scoped to one landing object when source_id is given.

    With ``source_id=None`` and the ASL placeholder ``{}`` this is also the template the state
    machine fills with States.Format.
    """
    select = ", ".join('%s AS "%s"' % (expr, alias) for alias, expr, _key, _type in TOTALS_COLUMNS)
    sql = 'SELECT %s FROM "%s"."%s"' % (select, database, table)
    if source_id is not None:
        sql += " WHERE source_id = '%s'" % source_id
    return sql


def parse_totals(values):
    """Turn one result row (strings, in column order) into ``{summary key: number}``."""
    totals = {}
    for (alias, _expr, key, kind), raw in zip(TOTALS_COLUMNS, values):
        if raw is None or raw == "":
            totals[key] = None
        elif kind == "int":
            totals[key] = int(float(raw))
        else:
            totals[key] = float(raw)
    return totals
