"""Athena queries run on DuckDB: the SQL is transpiled from Athena's dialect (Trino) with sqlglot,
each table is resolved through the Glue catalog to the S3 files Athena would read, and results
come back as the strings Athena renders.

What Athena reads: for a partitioned table only the files under its *registered* partitions'
locations, with the partition values (typed as the catalog says) as columns; for an
unpartitioned table everything under its location. Files starting with ``_`` or ``.`` are skipped.
Files are copied into a local cache that mirrors ``bucket/key`` and is reused while the ETag
is unchanged.
"""
import datetime
import decimal
import logging
import math
import os
import re
import struct
import uuid
from urllib.parse import urlparse

import duckdb
import sqlglot
from botocore.exceptions import ClientError
from sqlglot import exp

from local import iceberg_tables

LOG = logging.getLogger(__name__)

DEFAULT_CATALOG = "awsdatacatalog"

# Glue/Hive column types -> DuckDB types. Complex types are read as the Parquet file has them.
_SCALAR_TYPES = {
    "boolean": "BOOLEAN",
    "tinyint": "TINYINT",
    "smallint": "SMALLINT",
    "int": "INTEGER",
    "integer": "INTEGER",
    "bigint": "BIGINT",
    "float": "FLOAT",
    "real": "FLOAT",
    "double": "DOUBLE",
    "string": "VARCHAR",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
    "binary": "BLOB",
}
_SIZED_TYPE = re.compile(r"^(varchar|char)\s*\(\s*\d+\s*\)$")
_DECIMAL_TYPE = re.compile(r"^decimal\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?$")

# DuckDB result types -> the type names Athena reports in ColumnInfo.
_ATHENA_TYPES = {
    "BOOLEAN": "boolean",
    "TINYINT": "tinyint",
    "SMALLINT": "smallint",
    "INTEGER": "integer",
    "BIGINT": "bigint",
    "HUGEINT": "bigint",  # DuckDB widens SUM(bigint); Athena keeps bigint
    "UTINYINT": "smallint",
    "USMALLINT": "integer",
    "UINTEGER": "bigint",
    "UBIGINT": "bigint",
    "FLOAT": "real",
    "DOUBLE": "double",
    "VARCHAR": "varchar",
    "DATE": "date",
    "TIMESTAMP": "timestamp",
    "TIMESTAMP WITH TIME ZONE": "timestamp with time zone",
    "TIME": "time",
    "BLOB": "varbinary",
    "UUID": "uuid",
    "INTERVAL": "interval day to second",
}


class QueryError(Exception):
    """A query Athena would fail; the message reads like Athena's (``ERROR_NAME: detail``)."""

    user_error = True  # reported as Athena's "user" ErrorCategory


class QueryResult(tuple):
    """``(columns, rows)``, plus ``column_types``: Athena's type name of each column."""

    def __new__(cls, columns, rows, column_types):
        result = super().__new__(cls, (columns, rows))
        result.column_types = column_types
        return result

    @property
    def columns(self):
        return self[0]

    @property
    def rows(self):
        return self[1]


# -- rendering values as Athena does ----------------------------------------------------------


def _java_decimal_string(text, exponent_limits=(-3, 7)):
    """Java's Double/Float.toString layout for a shortest round-trip digit string."""
    value = decimal.Decimal(text).normalize()
    sign, digits, exponent = value.as_tuple()
    magnitude = len(digits) - 1 + exponent  # power of ten of the first digit
    prefix = "-" if sign else ""
    digit_text = "".join(map(str, digits))
    low, high = exponent_limits
    if low <= magnitude < high:
        plain = format(abs(value), "f")
        if "." not in plain:
            plain += ".0"
        return prefix + plain
    mantissa = digit_text[0] + "." + (digit_text[1:] or "0")
    return "%s%sE%d" % (prefix, mantissa, magnitude)


def render_double(value):
    """A double as Athena prints it (Java's Double.toString): full precision, ``1.0E7`` style
    from ten million up and below 0.001."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    return _java_decimal_string(repr(value))


def render_real(value):
    """A real (float32) as Athena prints it: the shortest digits that round-trip in 32 bits."""
    if math.isnan(value) or math.isinf(value) or value == 0:
        return render_double(value)
    target = struct.unpack("f", struct.pack("f", value))[0]
    for digits in range(1, 10):
        text = "%.*e" % (digits - 1, value)
        if struct.unpack("f", struct.pack("f", float(text)))[0] == target:
            return _java_decimal_string(text)
    return _java_decimal_string(repr(value))


def render_value(value, duck_type=""):
    """One result value as Athena's VarCharValue string; None (SQL NULL) stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return render_real(value) if duck_type == "FLOAT" else render_double(value)
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, datetime.datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        return text + (" UTC" if value.tzinfo is not None else "")
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, datetime.time):
        return value.strftime("%H:%M:%S.%f")[:-3]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return " ".join("%02x" % b for b in bytes(value))
    if isinstance(value, list):
        return "[%s]" % ", ".join(_render_nested(v) for v in value)
    if isinstance(value, dict):
        return "{%s}" % ", ".join("%s=%s" % (_render_nested(k), _render_nested(v)) for k, v in value.items())
    return str(value)


def _render_nested(value):
    rendered = render_value(value)
    return "null" if rendered is None else rendered


def _athena_type(duck_type):
    if duck_type.startswith("DECIMAL"):
        return duck_type.lower()
    if duck_type.endswith("[]"):
        return "array"
    if duck_type.startswith("STRUCT"):
        return "row"
    if duck_type.startswith("MAP"):
        return "map"
    return _ATHENA_TYPES.get(duck_type, duck_type.lower())


def _csv_field(value):
    if value is None:
        return ""
    return '"%s"' % value.replace('"', '""')


def result_csv(columns, rows):
    """The result file Athena writes: every value double-quoted, NULL as an empty field."""
    lines = [",".join(_csv_field(c) for c in columns)]
    lines.extend(",".join(_csv_field(v) for v in row) for row in rows)
    return ("\n".join(lines) + "\n").encode("utf-8")


# -- SQL helpers -------------------------------------------------------------------------------


def _quote_identifier(name):
    return '"%s"' % name.replace('"', '""')


def _quote_literal(text):
    return "'%s'" % text.replace("'", "''")


def duckdb_type(glue_type):
    """DuckDB type for a Glue column type, or None to keep the file's own type."""
    kind = (glue_type or "").strip().lower()
    if kind in _SCALAR_TYPES:
        return _SCALAR_TYPES[kind]
    if _SIZED_TYPE.match(kind):
        return "VARCHAR"
    match = _DECIMAL_TYPE.match(kind)
    if match:
        precision, scale = match.group(1) or "10", match.group(2) or "0"
        return "DECIMAL(%s,%s)" % (precision, scale)
    return None


def _name_unnamed_columns(statement):
    """Name result columns without an alias ``_col<position>``, as Athena does (DuckDB would
    name them after the expression)."""
    select = statement
    while isinstance(select, exp.SetOperation):
        select = select.this  # the first SELECT of a UNION names the columns
    if not isinstance(select, exp.Select):
        return
    named = (exp.Alias, exp.Column, exp.Star)
    select.set("expressions", [
        projection if isinstance(projection, named) else exp.alias_(projection, "_col%d" % index)
        for index, projection in enumerate(select.expressions)
    ])


def _position(node):
    """Athena's ``line L:C`` of a parsed node, when sqlglot kept it."""
    meta = getattr(node, "meta", None) or {}
    if "line" in meta and "col" in meta:
        width = meta.get("end", 0) - meta.get("start", 0)
        return "line %d:%d: " % (meta["line"], max(1, meta["col"] - width))
    return ""


def _split_s3_location(location):
    parsed = urlparse(location or "")
    if parsed.scheme not in ("s3", "s3a", "s3n") or not parsed.netloc:
        raise QueryError("HIVE_METASTORE_ERROR: table location %r is not an S3 location" % location)
    prefix = parsed.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return parsed.netloc, prefix


def _is_data_key(relative_key):
    if not relative_key or relative_key.endswith("/") or relative_key.endswith("_$folder$"):
        return False
    return not any(part.startswith(("_", ".")) for part in relative_key.split("/"))


class S3ObjectCache:
    """Local copies of S3 objects at ``<root>/objects/<bucket>/<key>``, reused while the ETag is
    unchanged (recorded beside them under ``<root>/etags/``). Downloads land under a temporary
    name and are renamed into place, so concurrent queries never read a partial file."""

    def __init__(self, s3_client, root):
        self.s3 = s3_client
        self.root = os.path.abspath(root)

    def _paths(self, bucket, key):
        parts = [p for p in key.split("/") if p not in ("", ".", "..")]
        return (os.path.join(self.root, "objects", bucket, *parts),
                os.path.join(self.root, "etags", bucket, *parts))

    def list_data_files(self, bucket, prefix):
        """``(key, etag)`` of the data files under a prefix (recursively)."""
        found = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if _is_data_key(obj["Key"][len(prefix):]):
                    found.append((obj["Key"], obj["ETag"].strip('"')))
        return found

    def local_path(self, bucket, key, etag):
        """Path of a current local copy of ``s3://bucket/key``; downloads it when missing or stale."""
        data_path, etag_path = self._paths(bucket, key)
        try:
            with open(etag_path) as handle:
                if handle.read() == etag and os.path.exists(data_path):
                    return data_path
        except FileNotFoundError:
            pass
        for path in (data_path, etag_path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        suffix = ".%s.partial" % uuid.uuid4().hex
        response = self.s3.get_object(Bucket=bucket, Key=key)
        with open(data_path + suffix, "wb") as handle:
            for chunk in response["Body"].iter_chunks(1 << 20):
                handle.write(chunk)
        os.replace(data_path + suffix, data_path)
        with open(etag_path + suffix, "w") as handle:
            handle.write(response["ETag"].strip('"'))
        os.replace(etag_path + suffix, etag_path)
        return data_path


class AthenaEngine:
    """Executes Athena SQL on DuckDB over the Glue catalog's S3 data.

    ``glue_client``/``s3_client`` are boto3 clients of the local stack; ``work_dir`` holds the S3
    file cache (``s3-cache/``); ``memory_limit`` caps each query's DuckDB.
    """

    def __init__(self, glue_client, s3_client, work_dir, memory_limit="1GB"):
        self.glue = glue_client
        self.s3 = s3_client
        self.cache = S3ObjectCache(s3_client, os.path.join(os.path.abspath(work_dir), "s3-cache"))
        self.memory_limit = memory_limit

    # -- public ---------------------------------------------------------------------------------

    def execute(self, sql, database, output_location):
        """Run one query; write its result CSV to ``output_location`` (an s3:// URI) if given.

        Returns a QueryResult ``(columns, rows)`` with every value a string as Athena renders it
        (None for NULL). Raises QueryError with an Athena-like message (TABLE_NOT_FOUND,
        SCHEMA_NOT_FOUND, COLUMN_NOT_FOUND, SYNTAX_ERROR, NOT_SUPPORTED, ...).
        """
        database = (database or "default").lower()
        maintenance = iceberg_tables.maintenance_statement(sql)
        if maintenance is not None:  # OPTIMIZE / VACUUM of an Iceberg table
            verb, db, table = maintenance
            columns, rows, scanned = iceberg_tables.run_maintenance(self, verb, db or database, table)
            result = QueryResult(columns, rows, [])
            result.scanned_bytes = scanned
            return result
        statement = self._parse(sql)
        tables = self._qualify_tables(statement, database)
        scanned = 0
        connection = duckdb.connect(config={"memory_limit": self.memory_limit})
        try:
            # Trino divides integers as integers; DuckDB would return a double.
            connection.execute("SET integer_division = true")
            for db, table in tables:
                scanned += self._register_table(connection, db, table, tables[(db, table)], statement) or 0
            duck_sql = statement.sql(dialect="duckdb")
            LOG.debug("query in DuckDB's dialect: %s", duck_sql)
            cursor = self._run(connection, duck_sql)
            duck_types = [str(d[1]) for d in cursor.description]
            columns = [d[0] for d in cursor.description]
            rows = [[render_value(v, t) for v, t in zip(row, duck_types)] for row in cursor.fetchall()]
        finally:
            connection.close()
        if output_location:
            bucket, key = self._output_object(output_location)
            self.s3.put_object(Bucket=bucket, Key=key, Body=result_csv(columns, rows), ContentType="text/csv")
        result = QueryResult(columns, rows, [_athena_type(t) for t in duck_types])
        result.scanned_bytes = scanned
        return result

    # -- parsing ----------------------------------------------------------------------------------

    @staticmethod
    def _parse(sql):
        try:
            statements = [s for s in sqlglot.parse(sql, read="athena") if s is not None]
        except sqlglot.errors.ParseError as exc:
            detail = exc.errors[0] if exc.errors else {}
            where = "line %s:%s: " % (detail.get("line"), detail.get("col")) if detail.get("line") else ""
            raise QueryError("SYNTAX_ERROR: %s%s" % (where, detail.get("description") or str(exc).splitlines()[0])) from None
        if len(statements) != 1:
            raise QueryError("SYNTAX_ERROR: Only one sql statement is allowed. Got: %d" % len(statements))
        statement = statements[0]
        if not isinstance(statement, (exp.Query, exp.Values)):
            raise QueryError("NOT_SUPPORTED: the local query engine runs SELECT queries only, got: %s"
                             % sql.strip().split(None, 1)[0].upper())
        _name_unnamed_columns(statement)
        return statement

    @staticmethod
    def _qualify_tables(statement, database):
        """Point every catalog table at ``"db"."table"``; returns {(db, table): node} in order."""
        cte_names = {cte.alias_or_name.lower() for cte in statement.find_all(exp.CTE)}
        tables = {}
        for node in statement.find_all(exp.Table):
            if not isinstance(node.this, exp.Identifier):
                continue  # table functions, UNNEST
            name = node.name.lower()
            if not node.db and name in cte_names:
                continue
            if node.catalog and node.catalog.lower() != DEFAULT_CATALOG:
                raise QueryError("CATALOG_NOT_FOUND: %sCatalog '%s' does not exist" % (_position(node.this), node.catalog))
            db = (node.db or database).lower()
            node.set("catalog", None)
            node.set("db", exp.to_identifier(db, quoted=True))
            identifier = exp.to_identifier(name, quoted=True)
            identifier.meta.update(node.this.meta)  # keeps the position for error messages
            node.set("this", identifier)
            tables.setdefault((db, name), node)
        return tables

    # -- catalog and files ------------------------------------------------------------------------

    def _table(self, db, table, node):
        try:
            return self.glue.get_table(DatabaseName=db, Name=table)["Table"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "EntityNotFoundException":
                raise
        where = _position(node.this)
        try:
            self.glue.get_database(Name=db)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "EntityNotFoundException":
                raise QueryError("SCHEMA_NOT_FOUND: %sSchema '%s' does not exist" % (where, db)) from None
            raise
        raise QueryError("TABLE_NOT_FOUND: %sTable '%s.%s.%s' does not exist" % (where, DEFAULT_CATALOG, db, table))

    def _partitions(self, db, table):
        partitions = []
        for page in self.glue.get_paginator("get_partitions").paginate(DatabaseName=db, TableName=table):
            partitions.extend(page["Partitions"])
        return partitions

    def _files(self, location):
        bucket, prefix = _split_s3_location(location)
        return [self.cache.local_path(bucket, key, etag) for key, etag in self.cache.list_data_files(bucket, prefix)]

    def _register_table(self, connection, db, table, node, statement=None):
        """Create view ``"db"."table"`` with the catalog's columns over the table's files.
        Returns the bytes of the files it reads for an Iceberg table, else None."""
        definition = self._table(db, table, node)
        descriptor = definition.get("StorageDescriptor") or {}
        data_columns = [(c["Name"].lower(), c.get("Type", "string")) for c in descriptor.get("Columns") or []]
        partition_keys = [(c["Name"].lower(), c.get("Type", "string")) for c in definition.get("PartitionKeys") or []]
        schema = _quote_identifier(db)
        connection.execute("CREATE SCHEMA IF NOT EXISTS %s" % schema)
        view = "%s.%s" % (schema, _quote_identifier(table))
        if iceberg_tables.is_iceberg(definition):
            return iceberg_tables.register_view(self, connection, view, definition, statement, node)

        if partition_keys:
            file_values = []
            for partition in self._partitions(db, table):
                location = (partition.get("StorageDescriptor") or {}).get("Location")
                for path in self._files(location):
                    file_values.append([path] + list(partition["Values"]))
        else:
            file_values = [[path] for path in self._files(descriptor.get("Location"))]

        if not file_values:
            columns = ", ".join("CAST(NULL AS %s) AS %s" % (duckdb_type(t) or "VARCHAR", _quote_identifier(n))
                                for n, t in data_columns + partition_keys)
            connection.execute("CREATE VIEW %s AS SELECT %s WHERE false" % (view, columns or "NULL AS _empty"))
            return

        paths = "[%s]" % ", ".join(_quote_literal(row[0]) for row in file_values)
        # Partition values come from the catalog, not from the cache's k=v folder names.
        source = ("read_parquet(%s, union_by_name = true, hive_partitioning = false, "
                  "filename = '__source_file')" % paths)
        present = {row[0].lower() for row in self._run(
            connection, "DESCRIBE SELECT * FROM %s" % source).fetchall()}
        selects = []
        for name, glue_type in data_columns:
            target = duckdb_type(glue_type)
            column = "d.%s" % _quote_identifier(name) if name in present else "NULL"
            selects.append("%s AS %s" % ("CAST(%s AS %s)" % (column, target) if target else column,
                                         _quote_identifier(name)))
        if not partition_keys:
            connection.execute("CREATE VIEW %s AS SELECT %s FROM %s AS d" % (view, ", ".join(selects), source))
            return

        files_table = "%s.%s" % (schema, _quote_identifier("__files_of_" + table))
        key_columns = ", ".join("%s VARCHAR" % _quote_identifier(n) for n, _t in partition_keys)
        connection.execute("CREATE TABLE %s (__source_file VARCHAR, %s)" % (files_table, key_columns))
        connection.executemany("INSERT INTO %s VALUES (%s)" % (files_table, ", ".join(["?"] * (1 + len(partition_keys)))),
                               file_values)
        for name, glue_type in partition_keys:
            target = duckdb_type(glue_type) or "VARCHAR"
            selects.append("CAST(p.%s AS %s) AS %s" % (_quote_identifier(name), target, _quote_identifier(name)))
        connection.execute(
            "CREATE VIEW %s AS SELECT %s FROM %s AS d JOIN %s AS p ON d.__source_file = p.__source_file"
            % (view, ", ".join(selects), source, files_table)
        )

    # -- running ----------------------------------------------------------------------------------

    @staticmethod
    def _run(connection, sql):
        try:
            return connection.execute(sql)
        except duckdb.Error as exc:
            raise QueryError(_athena_message(exc)) from None

    @staticmethod
    def _output_object(output_location):
        parsed = urlparse(output_location)
        if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
            raise QueryError("INVALID_OUTPUT_LOCATION: %r is not an s3://bucket/key location" % output_location)
        return parsed.netloc, parsed.path.lstrip("/")


_MISSING_COLUMN = re.compile(r'Referenced column "([^"]+)" not found')
_DUCKDB_LINE = re.compile(r"LINE (\d+):")


def _athena_message(exc):
    """An Athena-like message for a DuckDB error."""
    text = str(exc)
    first_line = text.splitlines()[0] if text else type(exc).__name__
    first_line = re.sub(r"^[A-Za-z ]+ Error: ", "", first_line)
    missing = _MISSING_COLUMN.search(text)
    if missing:
        line = _DUCKDB_LINE.search(text)
        where = "line %s: " % line.group(1) if line else ""
        return ("COLUMN_NOT_FOUND: %sColumn '%s' cannot be resolved or requester is not authorized to "
                "access requested resources" % (where, missing.group(1)))
    if isinstance(exc, duckdb.ParserException):
        return "SYNTAX_ERROR: %s" % first_line
    if isinstance(exc, duckdb.BinderException):
        return "SYNTAX_ERROR: %s" % first_line
    if isinstance(exc, duckdb.ConversionException):
        return "INVALID_CAST_ARGUMENT: %s" % first_line
    if isinstance(exc, duckdb.OutOfMemoryException):
        return "EXCEEDED_LOCAL_MEMORY_LIMIT: %s" % first_line
    if isinstance(exc, (duckdb.IOException, duckdb.InvalidInputException)):
        return "HIVE_BAD_DATA: %s" % first_line
    return "GENERIC_INTERNAL_ERROR: %s" % first_line
