"""Athena queries run on DuckDB: the SQL is transpiled from Athena's dialect (Trino) with sqlglot,
each table is resolved through the Glue catalog to the S3 files Athena would read (see
``local.athena_tables``), and results come back as the strings Athena renders.

What runs is what Athena's clients send: queries (``SELECT``, ``WITH``, ``VALUES``, with ``?``
placeholders bound from ExecutionParameters, the ``"$path"`` pseudo-column and
``information_schema``), ``CREATE TABLE ... WITH (...) AS SELECT`` (CTAS: Parquet files written to
S3 plus a Glue table, as awswrangler's default ``read_sql_query`` issues it), ``UNLOAD``,
``DROP TABLE``, ``DESCRIBE`` and ``SHOW CREATE TABLE/TABLES/DATABASES/COLUMNS/PARTITIONS``.
Anything else fails as Athena fails it (``ERROR_NAME: detail``).

Locked down: DuckDB runs with external access disabled and may read only the local copies of
the lake's files (``allowed_directories``, then ``lock_configuration``), and table functions or
DuckDB functions Athena does not have (``read_text``, ``read_csv``, ``glob``, ...) are rejected
before DuckDB sees the query: a query reads the catalog's tables and nothing else.
"""
import datetime
import decimal
import logging
import math
import os
import re
import struct
import time
import uuid
from urllib.parse import urlparse

import duckdb
import sqlglot
from botocore.exceptions import ClientError
from sqlglot import exp

from local import athena_catalog, iceberg_tables
from local.athena_tables import (
    HiveParquetTables,
    S3ObjectCache,
    TableLocationError,
    duckdb_type,
    list_data_files,
    split_s3_uri,
)

LOG = logging.getLogger(__name__)

DEFAULT_CATALOG = "awsdatacatalog"

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
# Athena type names -> Glue column types (what a CTAS table records).
_GLUE_TYPES = {"varchar": "string", "integer": "int", "real": "float", "varbinary": "binary"}

# DuckDB functions that reach outside the query (files, settings, other databases) or exist only
# in DuckDB: Athena has none of them, so a query naming one fails before DuckDB sees it.
_FOREIGN_FUNCTION_PREFIXES = ("read_", "parquet_", "duckdb_", "pragma_", "iceberg_", "delta_", "sqlite_")
_FOREIGN_FUNCTIONS = {
    "glob", "getenv", "current_setting", "query", "query_table", "sniff_csv", "which_secret",
    "load_aws_credentials", "sql_auto_complete", "json_execute_serialized_sql", "enable_profiling",
    "checkpoint", "force_checkpoint", "arrow_scan", "seq_scan",
}
# Table functions Athena itself accepts in FROM.
_ATHENA_TABLE_FUNCTIONS = {"unnest"}
# First words of statements Athena knows (others are a syntax error there, DuckDB's COPY, PRAGMA,
# ATTACH, INSTALL, SET, CALL, ... included).
_ATHENA_STATEMENTS = {
    "ALTER", "ANALYZE", "CREATE", "DEALLOCATE", "DELETE", "DESCRIBE", "DROP", "EXECUTE", "EXPLAIN",
    "INSERT", "MERGE", "MSCK", "OPTIMIZE", "PREPARE", "SELECT", "SHOW", "TABLE", "UNLOAD", "UPDATE",
    "VACUUM", "VALUES", "WITH", "DESC", "REFRESH",
}
# First words of the statements the local engine runs (the rest of Athena's fail NOT_SUPPORTED).
_RUN_HERE = {"SELECT", "WITH", "VALUES", "TABLE", "CREATE", "DROP", "DESCRIBE", "DESC", "SHOW", "UNLOAD"}
_PATH_COLUMN = "$path"
_INFORMATION_SCHEMA = "information_schema"
_LOCAL_INFORMATION_SCHEMA = "__athena_information_schema"
_CTAS_COMPRESSION = {"SNAPPY": "snappy", "GZIP": "gzip", "ZSTD": "zstd", "LZ4": "lz4", "NONE": "none"}


class QueryError(Exception):
    """A query Athena would fail; the message reads like Athena's (``ERROR_NAME: detail``)."""

    user_error = True  # reported as Athena's "user" ErrorCategory


class QueryResult(tuple):
    """``(columns, rows)`` of one statement, plus what Athena reports about it:

    ``column_types`` (Athena's type name of each column), ``statement_type`` (``DML``, ``DDL``
    or ``UTILITY``), ``output_location`` (the result file written: ``<id>.csv``, or ``<id>.txt``
    for Hive DDL), ``text_result`` (True when Athena returns each row as one tab-separated value
    without a header row, as it does for DESCRIBE and SHOW), ``data_scanned_bytes`` (bytes of
    the data files read) and ``manifest_location`` (the list of files a CTAS/UNLOAD wrote).
    """

    def __new__(cls, columns, rows, column_types, statement_type="DML", output_location=None,
                text_result=False, data_scanned_bytes=0, manifest_location=None):
        result = super().__new__(cls, (columns, rows))
        result.column_types = column_types
        result.statement_type = statement_type
        result.output_location = output_location
        result.text_result = text_result
        result.data_scanned_bytes = data_scanned_bytes
        result.manifest_location = manifest_location
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


def _clean_name(name):
    """A database/table name as Athena resolves it: unquoted (``"x"`` and `` `x` ``), lower-case."""
    name = (name or "").strip()
    if len(name) >= 2 and name[0] == name[-1] and name[0] in "`\"":
        name = name[1:-1]
    return name.lower()


def _name_unnamed_columns(statement):
    """Name result columns without an alias ``_col<position>``, as Athena does (DuckDB would
    name them after the expression)."""
    select = _first_select(statement)
    if select is None:
        return
    named = (exp.Alias, exp.Column, exp.Star)
    select.set("expressions", [
        projection if isinstance(projection, named) else exp.alias_(projection, "_col%d" % index)
        for index, projection in enumerate(select.expressions)
    ])


def _first_select(statement):
    select = statement
    while isinstance(select, exp.SetOperation):
        select = select.this  # the first SELECT of a UNION names the columns
    return select if isinstance(select, exp.Select) else None


def _position(node):
    """Athena's ``line L:C`` of a parsed node, when sqlglot kept it."""
    meta = getattr(node, "meta", None) or {}
    if "line" in meta and "col" in meta:
        width = meta.get("end", 0) - meta.get("start", 0)
        return "line %d:%d: " % (meta["line"], max(1, meta["col"] - width))
    return ""


def _function_name(node):
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return node.sql_name().lower()


def _reject_foreign_functions(statement):
    """Athena's answer to table functions other than UNNEST and to DuckDB-only functions that
    reach outside the query (files, settings): the function does not exist."""
    for table in statement.find_all(exp.Table):
        if isinstance(table.this, exp.Func):
            name = _function_name(table.this)
            if name not in _ATHENA_TABLE_FUNCTIONS:
                raise QueryError("FUNCTION_NOT_FOUND: %sTable function '%s' not registered"
                                 % (_position(table.this), name))
    for function in statement.find_all(exp.Func):
        name = _function_name(function)
        if name.startswith(_FOREIGN_FUNCTION_PREFIXES) or name in _FOREIGN_FUNCTIONS:
            raise QueryError("FUNCTION_NOT_FOUND: %sFunction '%s' not registered" % (_position(function), name))


def _keep_date_trunc_type(statement):
    """Trino's date_trunc returns its argument's type (a timestamp stays a timestamp); DuckDB's
    returns a DATE for units of a day or more. ``least(date_trunc(u, x), x)`` is the same value
    (truncation never exceeds x) in x's type."""
    for node in list(statement.find_all(exp.TimestampTrunc, exp.DateTrunc)):
        argument = node.this
        if argument is None or isinstance(node.parent, exp.Least):
            continue
        node.replace(exp.Least(this=node.copy(), expressions=[argument.copy()]))


def _statement_word(sql):
    """``(first word upper-cased, the text after it)`` of a statement, comments skipped."""
    try:
        tokens = sqlglot.tokenize(sql, read="athena")
    except sqlglot.errors.TokenError:
        return "", sql
    # (Athena's tokenizer starts with an empty marker token.)
    first = next((t for t in tokens if t.text), None)
    if first is None:
        return "", ""
    return first.text.upper(), sql[first.end + 1:].strip().rstrip(";").strip()


def bind_parameters(sql, parameters):
    """``sql`` with each ``?`` placeholder replaced by the next ExecutionParameter, as Athena
    binds them (a parameter is a literal: ``'text'``, ``42``, ``DATE '2024-01-31'``, ...).

    Raises QueryError (INVALID_PARAMETER_USAGE) when the counts differ or a parameter is not a
    literal.
    """
    parameters = list(parameters or [])
    try:
        tokens = sqlglot.tokenize(sql, read="athena")
    except sqlglot.errors.TokenError:
        if parameters:
            raise QueryError("SYNTAX_ERROR: line 1:1: the query cannot be read") from None
        return sql
    placeholders = [t for t in tokens if t.token_type == sqlglot.tokens.TokenType.PLACEHOLDER and t.text == "?"]
    if len(placeholders) != len(parameters):
        raise QueryError("INVALID_PARAMETER_USAGE: line 1:1: Incorrect number of parameters: expected %d but found %d"
                         % (len(placeholders), len(parameters)))
    literal_nodes = (exp.Literal, exp.Boolean, exp.Null, exp.Neg, exp.Cast, exp.DataType, exp.DataTypeParam,
                     exp.Paren, exp.Interval, exp.Var)
    for number, value in enumerate(parameters, start=1):
        try:
            parsed = sqlglot.parse_one(str(value), read="athena")
        except sqlglot.errors.ParseError:
            parsed = None
        if parsed is None or not all(isinstance(n, literal_nodes) for n in parsed.walk()):
            raise QueryError("INVALID_PARAMETER_USAGE: execution parameter %d is not a literal: %s"
                             % (number, str(value)[:100]))
    for token, value in sorted(zip(placeholders, parameters), key=lambda p: p[0].start, reverse=True):
        sql = sql[:token.start] + "(%s)" % value + sql[token.end + 1:]
    return sql


def _property_map(properties):
    """``{name: value}`` of a ``WITH (...)`` list (names lower-case; strings unquoted, arrays as lists)."""
    found = {}
    for prop in (properties.expressions if properties is not None else []):
        if isinstance(prop, exp.FileFormatProperty):
            name, value = "format", prop.this
        elif isinstance(prop, exp.PartitionedByProperty):
            name, value = "partitioned_by", prop.this
        elif isinstance(prop, exp.Property):
            name, value = str(prop.this.name if isinstance(prop.this, exp.Expression) else prop.this), prop.args.get("value")
        else:
            name, value = prop.key, prop.args.get("this")
        if isinstance(value, exp.Array):
            value = [v.name for v in value.expressions]
        elif isinstance(value, exp.Expression):
            value = value.name
        found[name.lower()] = value
    return found


_ZONED_TIMESTAMP = "TIMESTAMP WITH TIME ZONE"


def _zoned_timestamps_as_text(duck_sql, columns, duck_types):
    """The query again, with its zoned timestamps as the text Athena shows (in UTC): DuckDB's
    Python values for them need pytz, which nothing else here needs."""
    selects, positional = [], []
    for position, (name, duck_type) in enumerate(zip(columns, duck_types), start=1):
        column = "q.c%d" % position
        positional.append("c%d" % position)
        if duck_type == _ZONED_TIMESTAMP:
            column = "strftime(%s AT TIME ZONE 'UTC', '%%Y-%%m-%%d %%H:%%M:%%S.%%g') || ' UTC'" % column
        selects.append("%s AS %s" % (column, _quote_identifier(name)))
    return "SELECT %s FROM (%s) AS q(%s)" % (", ".join(selects), duck_sql, ", ".join(positional))


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
        self._table_resolvers = [iceberg_tables.IcebergTables(glue_client, s3_client),
                                 HiveParquetTables(glue_client, s3_client)]

    def add_table_resolver(self, resolver):
        """Let ``resolver.resolve(glue_table_definition, statement, node) -> ResolvedTable or None``
        answer for the tables it recognises (``statement``: the query, ``node``: its reference to
        the table, for pruning; both may be None) (None: not its kind); the last added is asked first, Hive-style
        Parquet last. Returns None."""
        self._table_resolvers.insert(0, resolver)

    # -- public ---------------------------------------------------------------------------------

    def execute(self, sql, database, output_location, parameters=None):
        """Run one statement; write its result file to ``output_location`` (an s3:// URI of
        ``<query id>.csv``; DESCRIBE/SHOW write ``<query id>.txt`` beside it) if given.

        ``parameters``: ExecutionParameters, bound to the ``?`` placeholders in order.
        Returns a QueryResult ``(columns, rows)`` with every value a string as Athena renders it
        (None for NULL). Raises QueryError with an Athena-like message (TABLE_NOT_FOUND,
        SCHEMA_NOT_FOUND, COLUMN_NOT_FOUND, SYNTAX_ERROR, NOT_SUPPORTED, ...).
        """
        maintenance = iceberg_tables.maintenance_statement(sql)
        if maintenance is not None:  # OPTIMIZE / VACUUM of an Iceberg table
            verb, db, table = maintenance
            _columns, _rows, scanned = iceberg_tables.run_maintenance(self, verb, db or _clean_name(database) or "default", table)
            return QueryResult([], [], [], "DML", output_location, data_scanned_bytes=scanned)
        if parameters:
            sql = bind_parameters(sql, parameters)
        elif "?" in sql:
            bind_parameters(sql, [])  # a placeholder without parameters fails as on Athena
        statement = self._parse(sql)
        database = _clean_name(database) or "default"
        if isinstance(statement, (exp.Query, exp.Values)):
            return self._select(statement, database, output_location)
        if isinstance(statement, exp.Create):
            return self._create_table_as(statement, database, output_location)
        if isinstance(statement, exp.Drop):
            return self._drop(statement, database, output_location)
        if isinstance(statement, exp.Describe):
            table = statement.this
            definition = self._table(*self._table_name(table, database), table)
            return self._text_result(["col_name", "data_type", "comment"],
                                     [line.split("\t") for line in athena_catalog.describe_lines(definition)],
                                     output_location, "UTILITY")
        command = str(statement.this).upper()
        text = statement.expression.name if isinstance(statement.expression, exp.Expression) else ""
        if command == "SHOW":
            return self._show(text, database, output_location)
        if command == "UNLOAD":
            return self._unload(text, database, output_location)
        raise QueryError("NOT_SUPPORTED: the local query engine does not run %s statements" % command)

    # -- parsing ----------------------------------------------------------------------------------

    def _parse(self, sql):
        word, rest = _statement_word(sql)
        if word and word not in _ATHENA_STATEMENTS and not word.startswith("("):
            raise QueryError("SYNTAX_ERROR: line 1:1: mismatched input '%s'. Expecting: 'ALTER', 'ANALYZE', "
                             "'CREATE', 'DESCRIBE', 'DROP', 'EXPLAIN', 'INSERT', 'SELECT', 'SHOW', 'UNLOAD', "
                             "'WITH', <query>" % word)
        if word in _ATHENA_STATEMENTS - _RUN_HERE:
            raise QueryError("NOT_SUPPORTED: the local query engine runs queries, CREATE TABLE AS SELECT, UNLOAD, "
                             "DROP TABLE, DESCRIBE and SHOW; not this %s statement" % word)
        if word in ("SHOW", "UNLOAD"):
            # sqlglot reads neither (it would log a warning and keep the text): so do we.
            return exp.Command(this=word, expression=exp.Literal.string(rest))
        try:
            statements = [s for s in sqlglot.parse(sql, read="athena") if s is not None]
        except sqlglot.errors.ParseError as exc:
            detail = exc.errors[0] if exc.errors else {}
            where = "line %s:%s: " % (detail.get("line"), detail.get("col")) if detail.get("line") else ""
            raise QueryError("SYNTAX_ERROR: %s%s" % (where, detail.get("description") or str(exc).splitlines()[0])) from None
        if len(statements) != 1:
            raise QueryError("SYNTAX_ERROR: Only one sql statement is allowed. Got: %d" % len(statements))
        statement = statements[0]
        supported = (
            isinstance(statement, (exp.Query, exp.Values))
            or (isinstance(statement, exp.Describe) and isinstance(statement.this, exp.Table))
            or (isinstance(statement, exp.Create) and str(statement.args.get("kind")).upper() == "TABLE"
                and isinstance(statement.expression, exp.Query))
            or (isinstance(statement, exp.Drop) and str(statement.args.get("kind")).upper() == "TABLE")
            or (isinstance(statement, exp.Command) and str(statement.this).upper() in ("SHOW", "UNLOAD"))
        )
        if not supported:
            raise QueryError("NOT_SUPPORTED: the local query engine runs queries, CREATE TABLE AS SELECT, UNLOAD, "
                             "DROP TABLE, DESCRIBE and SHOW; not this %s statement" % (word or "empty"))
        _reject_foreign_functions(statement)
        return statement

    @staticmethod
    def _table_name(node, database):
        if node.catalog and node.catalog.lower() != DEFAULT_CATALOG:
            raise QueryError("CATALOG_NOT_FOUND: %sCatalog '%s' does not exist" % (_position(node.this), node.catalog))
        return (node.db or database).lower(), node.name.lower()

    def _qualify_tables(self, statement, database):
        """Point every catalog table at ``"db"."table"``; returns {(db, table): node} in order,
        and whether information_schema is read."""
        cte_names = {cte.alias_or_name.lower() for cte in statement.find_all(exp.CTE)}
        tables, reads_information_schema = {}, False
        for node in statement.find_all(exp.Table):
            if not isinstance(node.this, exp.Identifier):
                continue  # UNNEST
            name = node.name.lower()
            if not node.db and name in cte_names:
                continue
            db, name = self._table_name(node, database)
            node.set("catalog", None)
            if db == _INFORMATION_SCHEMA:
                if name not in athena_catalog.INFORMATION_SCHEMA_COLUMNS:
                    raise QueryError("TABLE_NOT_FOUND: %sTable '%s.%s.%s' does not exist"
                                     % (_position(node.this), DEFAULT_CATALOG, db, name))
                node.set("db", exp.to_identifier(_LOCAL_INFORMATION_SCHEMA, quoted=True))
                reads_information_schema = True
            else:
                node.set("db", exp.to_identifier(db, quoted=True))
                tables.setdefault((db, name), node)
            identifier = exp.to_identifier(name, quoted=True)
            identifier.meta.update(node.this.meta)  # keeps the position for error messages
            node.set("this", identifier)
        return tables, reads_information_schema

    # -- catalog and files ------------------------------------------------------------------------

    def _table(self, db, table, node=None):
        try:
            return self.glue.get_table(DatabaseName=db, Name=table)["Table"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "EntityNotFoundException":
                raise
        where = _position(node.this) if node is not None else "line 1:1: "
        self._database(db, where)
        raise QueryError("TABLE_NOT_FOUND: %sTable '%s.%s.%s' does not exist" % (where, DEFAULT_CATALOG, db, table))

    def _database(self, db, where="line 1:1: "):
        try:
            self.glue.get_database(Name=db)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "EntityNotFoundException":
                raise QueryError("SCHEMA_NOT_FOUND: %sSchema '%s' does not exist" % (where, db)) from None
            raise

    def _resolve(self, definition, statement=None, node=None):
        for resolver in self._table_resolvers:
            try:
                resolved = resolver.resolve(definition, statement, node)
            except TableLocationError as exc:
                raise QueryError("HIVE_METASTORE_ERROR: table %s.%s: %s"
                                 % (definition.get("DatabaseName"), definition.get("Name"), exc)) from None
            if resolved is not None:
                return resolved
        raise QueryError("NOT_SUPPORTED: no reader for table %s.%s" % (definition.get("DatabaseName"), definition.get("Name")))

    def _register_table(self, connection, db, table, node, with_path, statement=None):
        """Create view ``"db"."table"`` with the catalog's columns over the table's files (plus
        ``"$path"`` when the query asks for it), those ``statement`` may need where the table's
        format can tell. Returns the bytes of the files it reads."""
        resolved = self._resolve(self._table(db, table, node), statement, node)
        schema = _quote_identifier(db)
        connection.execute("CREATE SCHEMA IF NOT EXISTS %s" % schema)
        view = "%s.%s" % (schema, _quote_identifier(table))
        all_columns = resolved.columns + resolved.partition_keys
        if not resolved.files:
            columns = ["CAST(NULL AS %s) AS %s" % (duckdb_type(t) or "VARCHAR", _quote_identifier(n))
                       for n, t in all_columns]
            if with_path:
                columns.append("CAST(NULL AS VARCHAR) AS %s" % _quote_identifier(_PATH_COLUMN))
            connection.execute("CREATE VIEW %s AS SELECT %s WHERE false" % (view, ", ".join(columns) or "NULL AS _empty"))
            return 0

        file_values = [[self.cache.local_path(f.uri, f.etag)] + list(f.partition_values) for f in resolved.files]
        paths = "[%s]" % ", ".join(_quote_literal(row[0]) for row in file_values)
        # Partition values come from the catalog, not from the cache's k=v folder names.
        source = ("read_parquet(%s, union_by_name = true, hive_partitioning = false, "
                  "filename = '__source_file')" % paths)
        present = {row[0].lower() for row in self._run(
            connection, "DESCRIBE SELECT * FROM %s" % source).fetchall()}
        selects = []
        for name, glue_type in resolved.columns:
            target = duckdb_type(glue_type)
            column = "d.%s" % _quote_identifier(name) if name in present else "NULL"
            selects.append("%s AS %s" % ("CAST(%s AS %s)" % (column, target) if target else column,
                                         _quote_identifier(name)))
        if with_path:
            # The cache mirrors bucket/key under its objects folder.
            selects.append("'s3://' || substr(d.__source_file, %d) AS %s"
                           % (len(self.cache.objects_root) + 2, _quote_identifier(_PATH_COLUMN)))
        if not resolved.partition_keys:
            connection.execute("CREATE VIEW %s AS SELECT %s FROM %s AS d" % (view, ", ".join(selects), source))
            return resolved.size_bytes

        files_table = "%s.%s" % (schema, _quote_identifier("__files_of_" + table))
        key_columns = ", ".join("%s VARCHAR" % _quote_identifier(n) for n, _t in resolved.partition_keys)
        connection.execute("CREATE TABLE %s (__source_file VARCHAR, %s)" % (files_table, key_columns))
        connection.executemany("INSERT INTO %s VALUES (%s)" % (files_table, ", ".join(["?"] * (1 + len(resolved.partition_keys)))),
                               file_values)
        for name, glue_type in resolved.partition_keys:
            target = duckdb_type(glue_type) or "VARCHAR"
            selects.append("CAST(p.%s AS %s) AS %s" % (_quote_identifier(name), target, _quote_identifier(name)))
        connection.execute(
            "CREATE VIEW %s AS SELECT %s FROM %s AS d JOIN %s AS p ON d.__source_file = p.__source_file"
            % (view, ", ".join(selects), source, files_table)
        )
        return resolved.size_bytes

    def _register_information_schema(self, connection):
        schema = _quote_identifier(_LOCAL_INFORMATION_SCHEMA)
        connection.execute("CREATE SCHEMA %s" % schema)
        for table, rows in athena_catalog.information_schema_rows(self.glue).items():
            names = athena_catalog.INFORMATION_SCHEMA_COLUMNS[table]
            columns = ", ".join("%s %s" % (_quote_identifier(n), "BIGINT" if n == "ordinal_position" else "VARCHAR")
                                for n in names)
            target = "%s.%s" % (schema, _quote_identifier(table))
            connection.execute("CREATE TABLE %s (%s)" % (target, columns))
            if rows:
                connection.executemany("INSERT INTO %s VALUES (%s)" % (target, ", ".join(["?"] * len(names))), rows)

    # -- running ----------------------------------------------------------------------------------

    def _connect(self):
        """A DuckDB connection that reads nothing but the cached lake files: external access
        off, the cache's folder the one allowed place, the configuration locked."""
        os.makedirs(self.cache.objects_root, exist_ok=True)
        connection = duckdb.connect(config={
            "memory_limit": self.memory_limit,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        })
        try:
            # Trino divides integers as integers; DuckDB would return a double.
            connection.execute("SET integer_division = true")
            connection.execute("SET allowed_directories = [%s]" % _quote_literal(self.cache.objects_root + os.sep))
            connection.execute("SET enable_external_access = false")
            connection.execute("SET lock_configuration = true")
        except BaseException:
            connection.close()
            raise
        return connection

    def _query(self, connection, statement, database):
        """Register what ``statement`` reads and run it. Returns (cursor, bytes scanned)."""
        _name_unnamed_columns(statement)
        _keep_date_trunc_type(statement)
        tables, reads_information_schema = self._qualify_tables(statement, database)
        with_path = any(c.name == _PATH_COLUMN for c in statement.find_all(exp.Column))
        scanned = 0
        for db, table in tables:
            scanned += self._register_table(connection, db, table, tables[(db, table)], with_path, statement)
        if reads_information_schema:
            self._register_information_schema(connection)
        duck_sql = statement.sql(dialect="duckdb")
        LOG.debug("query in DuckDB's dialect: %s", duck_sql)
        return self._run(connection, duck_sql), scanned

    def _select(self, statement, database, output_location):
        connection = self._connect()
        try:
            cursor, scanned = self._query(connection, statement, database)
            duck_types = [str(d[1]) for d in cursor.description]
            columns = [d[0] for d in cursor.description]
            if _ZONED_TIMESTAMP in duck_types:
                cursor = self._run(connection, _zoned_timestamps_as_text(statement.sql(dialect="duckdb"),
                                                                         columns, duck_types))
            rows = [[render_value(v, t) for v, t in zip(row, duck_types)] for row in cursor.fetchall()]
        finally:
            connection.close()
        if output_location:
            bucket, key = self._output_object(output_location)
            self.s3.put_object(Bucket=bucket, Key=key, Body=result_csv(columns, rows), ContentType="text/csv")
        return QueryResult(columns, rows, [_athena_type(t) for t in duck_types], "DML", output_location,
                           data_scanned_bytes=scanned)

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

    # -- results that are text (Hive DDL) ---------------------------------------------------------

    def _text_result(self, columns, rows, output_location, statement_type):
        location = None
        if output_location:
            location = re.sub(r"\.csv$", "", output_location) + ".txt"
            bucket, key = self._output_object(location)
            body = "".join("\t".join(row) + "\n" for row in rows).encode("utf-8")
            self.s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="text/plain")
        return QueryResult(columns, rows, ["string"] * len(columns), statement_type, location, text_result=True)

    _SHOW = (
        ("create_table", re.compile(r"^CREATE\s+TABLE\s+(?P<name>\S+)\s*;?\s*$", re.I | re.S)),
        ("tables", re.compile(r"^TABLES(?:\s+(?:IN|FROM)\s+(?P<db>[^\s']+))?(?:\s+(?:LIKE\s+)?'(?P<pattern>[^']*)')?\s*;?\s*$", re.I)),
        ("databases", re.compile(r"^(?:DATABASES|SCHEMAS)(?:\s+(?:LIKE\s+)?'(?P<pattern>[^']*)')?\s*;?\s*$", re.I)),
        ("columns", re.compile(r"^COLUMNS\s+(?:IN|FROM)\s+(?P<name>[^\s;]+)(?:\s+(?:IN|FROM)\s+(?P<db>[^\s;]+))?\s*;?\s*$", re.I)),
        ("partitions", re.compile(r"^PARTITIONS\s+(?P<name>[^\s;]+)\s*;?\s*$", re.I)),
    )

    def _show_table(self, name, database, db=None):
        parts = [_clean_name(p) for p in re.findall(r'`[^`]*`|"[^"]*"|[^.]+', name)]
        if len(parts) == 2:
            db, table = parts
        else:
            table = parts[-1] if parts else ""
        return self._table(_clean_name(db) if db else database, table)

    def _show(self, text, database, output_location):
        for kind, pattern in self._SHOW:
            match = pattern.match(text.strip())
            if not match:
                continue
            found = match.groupdict()
            if kind == "create_table":
                lines = athena_catalog.show_create_table_lines(self._show_table(found["name"], database))
                return self._text_result(["createtab_stmt"], [[line] for line in lines], output_location, "UTILITY")
            if kind == "tables":
                db = _clean_name(found.get("db")) or database
                self._database(db)
                names = athena_catalog.show_tables(self.glue, db, found.get("pattern"))
                return self._text_result(["tab_name"], [[n] for n in names], output_location, "UTILITY")
            if kind == "databases":
                names = athena_catalog.show_databases(self.glue, found.get("pattern"))
                return self._text_result(["database_name"], [[n] for n in names], output_location, "UTILITY")
            if kind == "columns":
                definition = self._show_table(found["name"], database, found.get("db"))
                return self._text_result(["field"], [[n] for n in athena_catalog.show_columns(definition)],
                                         output_location, "UTILITY")
            definition = self._show_table(found["name"], database)
            if not definition.get("PartitionKeys"):
                raise QueryError("NOT_SUPPORTED: Table %s is not partitioned" % found["name"])
            return self._text_result(["partition"], [[p] for p in athena_catalog.show_partitions(self.glue, definition)],
                                     output_location, "UTILITY")
        raise QueryError("NOT_SUPPORTED: the local query engine does not run SHOW %s" % (text.split(None, 1) or [""])[0])

    def _drop(self, statement, database, output_location):
        for node in statement.find_all(exp.Table):
            db, table = self._table_name(node, database)
            try:
                self.glue.delete_table(DatabaseName=db, Name=table)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "EntityNotFoundException":
                    raise
                if not statement.args.get("exists"):
                    self._database(db)
                    raise QueryError("TABLE_NOT_FOUND: line 1:1: Table '%s.%s.%s' does not exist"
                                     % (DEFAULT_CATALOG, db, table)) from None
        return self._text_result([], [], output_location, "DDL")

    # -- statements that write files (CTAS, UNLOAD) -------------------------------------------------

    @staticmethod
    def _check_result_columns(statement):
        """What Athena checks before writing a query's result as a table."""
        select = _first_select(statement)
        seen = set()
        for position, projection in enumerate(select.expressions if select else [], start=1):
            if isinstance(projection, exp.Star):
                continue
            if not isinstance(projection, (exp.Alias, exp.Column)):
                raise QueryError("MISSING_COLUMN_NAME: Column name not specified at position %d" % position)
            name = projection.alias_or_name.lower()
            if name in seen:
                raise QueryError("DUPLICATE_COLUMN_NAME: Column name '%s' specified more than once" % name)
            seen.add(name)

    def _arrow_result(self, statement, database):
        """Run a query for writing; returns (arrow table, Athena types, bytes scanned)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        connection = self._connect()
        try:
            cursor, scanned = self._query(connection, statement, database)
            duck_types = [str(d[1]) for d in cursor.description]
            table = cursor.fetch_arrow_table()
        finally:
            connection.close()
        for position, duck_type in enumerate(duck_types):
            if duck_type in ('"NULL"', "NULL"):
                raise QueryError("COLUMN_TYPE_UNKNOWN: Column type is unknown at position %d" % (position + 1))
            if duck_type == "HUGEINT":  # Athena's bigint
                table = table.set_column(position, table.schema.field(position).name,
                                         pc.cast(table.column(position), pa.int64()))
        return table, [_athena_type(t) for t in duck_types], scanned

    def _require_empty(self, location, what):
        if list_data_files(self.s3, location) or self._any_object(location):
            raise QueryError("HIVE_PATH_ALREADY_EXISTS: Target directory for %s already exists: %s" % (what, location))

    def _any_object(self, location):
        bucket, prefix = split_s3_uri(location)
        prefix = prefix if prefix.endswith("/") or not prefix else prefix + "/"
        return bool(self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount"))

    def _write_parquet(self, table, location, query_id, compression):
        """The query's rows as one Parquet file under ``location`` (none for no rows); returns the
        URIs written."""
        import io

        import pyarrow.parquet as pq

        if table.num_rows == 0:
            return []
        bucket, prefix = split_s3_uri(location.rstrip("/") + "/")
        key = "%s%s_%s_00000" % (prefix, time.strftime("%Y%m%d_%H%M%S", time.gmtime()), query_id)
        sink = io.BytesIO()
        pq.write_table(table, sink, compression=compression)
        self.s3.put_object(Bucket=bucket, Key=key, Body=sink.getvalue())
        return ["s3://%s/%s" % (bucket, key)]

    def _write_manifest(self, output_location, uris):
        if not output_location:
            return None
        manifest = re.sub(r"\.csv$", "", output_location) + "-manifest.csv"
        bucket, key = self._output_object(manifest)
        self.s3.put_object(Bucket=bucket, Key=key, Body="".join(u + "\n" for u in uris).encode("utf-8"))
        return manifest

    @staticmethod
    def _query_id(output_location):
        name = (output_location or "").rstrip("/").rsplit("/", 1)[-1]
        return re.sub(r"\.csv$", "", name) or uuid.uuid4().hex

    def _create_table_as(self, statement, database, output_location):
        target = statement.this
        if isinstance(target, exp.Schema):
            raise QueryError("NOT_SUPPORTED: CREATE TABLE AS SELECT takes no column list locally")
        db, table = self._table_name(target, database)
        properties = _property_map(statement.args.get("properties"))
        unsupported = sorted(set(properties) - {"format", "external_location", "write_compression",
                                                "parquet_compression", "table_type"})
        if unsupported:
            raise QueryError("NOT_SUPPORTED: the local query engine writes CTAS tables without %s" % ", ".join(unsupported))
        file_format = str(properties.get("format") or "PARQUET").upper()
        if file_format != "PARQUET" or str(properties.get("table_type") or "HIVE").upper() != "HIVE":
            raise QueryError("NOT_SUPPORTED: the local query engine writes CTAS tables as Hive Parquet only, not %s"
                             % file_format)
        compression = str(properties.get("write_compression") or properties.get("parquet_compression") or "GZIP").upper()
        if compression not in _CTAS_COMPRESSION:
            raise QueryError("INVALID_TABLE_PROPERTY: Unsupported compression: %s" % compression)
        self._database(db)
        try:
            self.glue.get_table(DatabaseName=db, Name=table)
            raise QueryError("ALREADY_EXISTS: line 1:1: Table '%s.%s.%s' already exists" % (DEFAULT_CATALOG, db, table))
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "EntityNotFoundException":
                raise
        query_id = self._query_id(output_location)
        location = properties.get("external_location")
        if not location:
            if not output_location:
                raise QueryError("INVALID_OUTPUT_LOCATION: CTAS needs external_location or a query result location")
            # Athena's place for a CTAS table without external_location.
            location = "%s/tables/%s" % (output_location.rsplit("/", 1)[0], query_id)
        try:
            split_s3_uri(location)
        except TableLocationError as exc:
            raise QueryError("INVALID_TABLE_PROPERTY: external_location %s" % exc) from None
        location = location.rstrip("/") + "/"
        self._require_empty(location, "table '%s.%s'" % (db, table))

        query = statement.expression
        self._check_result_columns(query)
        arrow_table, types, scanned = self._arrow_result(query, database)
        uris = self._write_parquet(arrow_table, location, query_id, _CTAS_COMPRESSION[compression])
        from local.crawler import PARQUET_INPUT_FORMAT, PARQUET_OUTPUT_FORMAT, PARQUET_SERDE

        self.glue.create_table(DatabaseName=db, TableInput={
            "Name": table,
            "TableType": "EXTERNAL_TABLE",
            "Parameters": {"classification": "parquet", "has_encrypted_data": "false",
                           "parquet.compression": compression},
            "StorageDescriptor": {
                "Columns": [{"Name": name, "Type": _GLUE_TYPES.get(kind, kind)}
                            for name, kind in zip(arrow_table.column_names, types)],
                "Location": location,
                "InputFormat": PARQUET_INPUT_FORMAT,
                "OutputFormat": PARQUET_OUTPUT_FORMAT,
                "SerdeInfo": {"SerializationLibrary": PARQUET_SERDE, "Parameters": {"serialization.format": "1"}},
            },
            "PartitionKeys": [],
        })
        manifest = self._write_manifest(output_location, uris)
        rows = [[str(arrow_table.num_rows)]]
        if output_location:
            bucket, key = self._output_object(output_location)
            self.s3.put_object(Bucket=bucket, Key=key, Body=result_csv(["rows"], rows), ContentType="text/csv")
        return QueryResult(["rows"], rows, ["bigint"], "DML", output_location,
                           data_scanned_bytes=scanned, manifest_location=manifest)

    _UNLOAD = re.compile(r"^\((?P<query>.*)\)\s*TO\s*'(?P<location>(?:[^']|'')*)'\s*WITH\s*\((?P<properties>.*)\)\s*;?\s*$",
                         re.I | re.S)

    def _unload(self, text, database, output_location):
        match = self._UNLOAD.match(text.strip())
        if not match:
            raise QueryError("SYNTAX_ERROR: line 1:1: UNLOAD needs (query) TO 's3://...' WITH (format = '...')")
        query = self._parse(match.group("query"))
        if not isinstance(query, (exp.Query, exp.Values)):
            raise QueryError("SYNTAX_ERROR: line 1:1: UNLOAD takes a SELECT query")
        try:
            wrapped = sqlglot.parse_one("CREATE TABLE t WITH (%s) AS SELECT 1" % match.group("properties"), read="athena")
        except sqlglot.errors.ParseError:
            raise QueryError("SYNTAX_ERROR: line 1:1: UNLOAD's WITH (...) cannot be read") from None
        properties = _property_map(wrapped.args.get("properties"))
        unsupported = sorted(set(properties) - {"format", "compression"})
        if unsupported:
            raise QueryError("NOT_SUPPORTED: the local query engine unloads without %s" % ", ".join(unsupported))
        file_format = str(properties.get("format") or "").upper()
        if file_format != "PARQUET":
            raise QueryError("NOT_SUPPORTED: the local query engine unloads PARQUET only, not %r" % (file_format or None))
        compression = str(properties.get("compression") or "GZIP").upper()
        if compression not in _CTAS_COMPRESSION:
            raise QueryError("INVALID_TABLE_PROPERTY: Unsupported compression: %s" % compression)
        location = match.group("location").replace("''", "'")
        try:
            split_s3_uri(location)
        except TableLocationError as exc:
            raise QueryError("INVALID_OUTPUT_LOCATION: UNLOAD location %s" % exc) from None
        self._require_empty(location.rstrip("/") + "/", "UNLOAD")
        arrow_table, _types, scanned = self._arrow_result(query, database)
        uris = self._write_parquet(arrow_table, location, self._query_id(output_location), _CTAS_COMPRESSION[compression])
        manifest = self._write_manifest(output_location, uris)
        return QueryResult([], [], [], "DML", output_location, data_scanned_bytes=scanned, manifest_location=manifest)


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
    if isinstance(exc, duckdb.PermissionException):
        return "PERMISSION_DENIED: %s" % first_line
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
