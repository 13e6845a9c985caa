"""Answers Athena gives from the Glue catalog alone: DESCRIBE, SHOW TABLES/DATABASES/COLUMNS/
PARTITIONS, SHOW CREATE TABLE and the rows of ``information_schema``.

Athena runs these through Hive's DDL path: the result file is ``<query id>.txt`` with one line per
row, fields separated by tabs, and DESCRIBE pads each field to 20 characters (what awswrangler's
``describe_table`` and ``show_create_table`` parse).
"""
import re

CATALOG = "awsdatacatalog"
_FIELD_WIDTH = 20  # Hive's MetaDataFormatUtils alignment


def _padded(*fields):
    return "\t".join(("%-*s" % (_FIELD_WIDTH, f)) for f in fields)


def hive_pattern(pattern):
    """A compiled regex for Hive's SHOW ... LIKE pattern: ``*`` is any text, ``|`` separates
    alternatives, case-insensitive; None matches everything."""
    if pattern is None:
        return None
    alternatives = [re.escape(p.strip()).replace(r"\*", ".*") for p in pattern.split("|")]
    return re.compile(r"^(?:%s)$" % "|".join(alternatives), re.IGNORECASE)


def _columns(definition):
    descriptor = definition.get("StorageDescriptor") or {}
    return descriptor.get("Columns") or []


def describe_lines(definition):
    """``DESCRIBE table``: columns, then the partition section Hive prints."""
    lines = [_padded(c["Name"], c.get("Type", "string"), c.get("Comment", "")) for c in _columns(definition)]
    partition_keys = definition.get("PartitionKeys") or []
    for c in partition_keys:
        lines.append(_padded(c["Name"], c.get("Type", "string"), c.get("Comment", "")))
    if partition_keys:
        lines.extend(["\t".join(["", "", ""]), "\t".join(["# Partition Information", "", ""]),
                      _padded("# col_name", "data_type", "comment"), "\t".join(["", "", ""])])
        lines.extend(_padded(c["Name"], c.get("Type", "string"), c.get("Comment", "")) for c in partition_keys)
    return lines


def show_create_table_lines(definition):
    """``SHOW CREATE TABLE``: the Hive DDL that recreates the table."""
    descriptor = definition.get("StorageDescriptor") or {}
    serde = descriptor.get("SerdeInfo") or {}
    columns = _columns(definition)
    lines = ["CREATE EXTERNAL TABLE `%s`.`%s`(" % (definition["DatabaseName"], definition["Name"])]
    lines.extend("  `%s` %s%s" % (c["Name"], c.get("Type", "string"), "," if i < len(columns) - 1 else ")")
                 for i, c in enumerate(columns))
    partition_keys = definition.get("PartitionKeys") or []
    if partition_keys:
        lines.append("PARTITIONED BY ( ")
        lines.extend("  `%s` %s%s" % (c["Name"], c.get("Type", "string"), "," if i < len(partition_keys) - 1 else ")")
                     for i, c in enumerate(partition_keys))
    if serde.get("SerializationLibrary"):
        lines += ["ROW FORMAT SERDE ", "  '%s' " % serde["SerializationLibrary"]]
    if descriptor.get("InputFormat"):
        lines += ["STORED AS INPUTFORMAT ", "  '%s' " % descriptor["InputFormat"]]
    if descriptor.get("OutputFormat"):
        lines += ["OUTPUTFORMAT ", "  '%s'" % descriptor["OutputFormat"]]
    if descriptor.get("Location"):
        lines += ["LOCATION", "  '%s'" % descriptor["Location"]]
    parameters = sorted((definition.get("Parameters") or {}).items())
    if parameters:
        lines.append("TBLPROPERTIES (")
        lines.extend("  '%s'='%s'%s" % (k, v, "," if i < len(parameters) - 1 else ")")
                     for i, (k, v) in enumerate(parameters))
    return lines


def _databases(glue):
    names = []
    for page in glue.get_paginator("get_databases").paginate():
        names.extend(d["Name"] for d in page["DatabaseList"])
    return sorted(names)


def _tables(glue, database):
    tables = []
    for page in glue.get_paginator("get_tables").paginate(DatabaseName=database):
        tables.extend(page["TableList"])
    return sorted(tables, key=lambda t: t["Name"])


def show_databases(glue, pattern=None):
    regex = hive_pattern(pattern)
    return [name for name in _databases(glue) if regex is None or regex.match(name)]


def show_tables(glue, database, pattern=None):
    regex = hive_pattern(pattern)
    return [t["Name"] for t in _tables(glue, database) if regex is None or regex.match(t["Name"])]


def show_columns(definition):
    return [c["Name"] for c in _columns(definition) + (definition.get("PartitionKeys") or [])]


def show_partitions(glue, definition):
    keys = [c["Name"] for c in definition.get("PartitionKeys") or []]
    lines = []
    paginator = glue.get_paginator("get_partitions")
    for page in paginator.paginate(DatabaseName=definition["DatabaseName"], TableName=definition["Name"]):
        for partition in page["Partitions"]:
            lines.append("/".join("%s=%s" % kv for kv in zip(keys, partition["Values"])))
    return sorted(lines)


def _athena_type_name(glue_type):
    kind = (glue_type or "string").lower()
    return {"string": "varchar", "int": "integer", "float": "real"}.get(kind, kind)


# Column names of the information_schema tables Athena answers (Trino's, plus Athena's extra_info).
INFORMATION_SCHEMA_COLUMNS = {
    "schemata": ("catalog_name", "schema_name"),
    "tables": ("table_catalog", "table_schema", "table_name", "table_type"),
    "views": ("table_catalog", "table_schema", "table_name", "view_definition"),
    "columns": ("table_catalog", "table_schema", "table_name", "column_name", "ordinal_position",
                "column_default", "is_nullable", "data_type", "comment", "extra_info"),
}


def information_schema_rows(glue):
    """``{table: rows}`` of Athena's information_schema over the whole Glue catalog (every value a
    string or None, except ``ordinal_position``, an int)."""
    schemata, tables, views, columns = [], [], [], []
    for database in _databases(glue):
        schemata.append((CATALOG, database))
        for table in _tables(glue, database):
            is_view = table.get("TableType") == "VIRTUAL_VIEW"
            tables.append((CATALOG, database, table["Name"], "VIEW" if is_view else "BASE TABLE"))
            if is_view:
                views.append((CATALOG, database, table["Name"], table.get("ViewOriginalText")))
            described = [(c, None) for c in _columns(table)]
            described += [(c, "partition key") for c in table.get("PartitionKeys") or []]
            for position, (column, extra) in enumerate(described, start=1):
                columns.append((CATALOG, database, table["Name"], column["Name"], position, None, "YES",
                                _athena_type_name(column.get("Type")), column.get("Comment"), extra))
    schemata.append((CATALOG, "information_schema"))
    return {"schemata": schemata, "tables": tables, "views": views, "columns": columns}
