"""Does the stage's Glue table already describe what a job wrote? If so, register the job's new
partitions directly; if not, say that a crawl is needed.

A crawl costs at least 10 minutes of crawler DPUs and one crawler runs one crawl at a time, so the
jobs run a crawler only when it would add something: after writing its output, a job compares the
output's columns, partition keys and location with the catalog table (glue:GetTable). When they
match, it registers its partitions itself (glue:BatchCreatePartition with the table's storage
descriptor; partitions that exist already are fine) and no crawl is needed. When the table is
missing or differs, a crawl is needed. Either way the job writes two small JSON objects:

- the *decision* at ``--catalog_decision_uri``: ``{"crawl", "crawler_running", "reason",
  "database", "table", "registered", "partitions"}``, which the state machine reads to choose
  whether to crawl. ``crawler_running`` (with ``--catalog_crawler``) says the stage's crawler was
  already crawling when a crawl was found needed: the state machine then waits for that crawl and
  asks again, instead of starting a crawl of its own that would likely be needless;
- the *request* beside it (``<decision>.request.json``): what the job wrote (columns, partition
  keys, location, partitions), so ``--catalog_only true`` can check again later without reading
  any data (the state machine does that after waiting out another execution's crawl).

Shipped to Glue as the top-level module ``catalog`` in the ``--extra-py-files`` zip, next to
``jobio``; imports only the standard library and boto3 (Python 3.9), and DuckDB when asked to
describe a Parquet file: the jobs hold it already, while importing pyarrow only to read one
schema would cost a job run 0.1 to 0.2 s.
"""
import json
import logging

import jobio

LOG = logging.getLogger("shipping_etl.catalog")

# Job arguments, all optional: without database, table and decision URI (which go together) a
# job leaves the catalog alone and writes no decision, as when it runs on local files.
OPTIONS = {
    "catalog_database": None,
    "catalog_table": None,
    "catalog_decision_uri": None,
    "catalog_region": None,
    "catalog_crawler": None,
    "catalog_only": "false",
}
# GetCrawler states of a crawler that is crawling (READY is the only idle one).
_CRAWLING = ("RUNNING", "STOPPING")
REQUEST_SUFFIX = ".request.json"
_PARTITION_BATCH = 100  # BatchCreatePartition's limit per call
_TRUE = ("1", "true", "yes")

# Glue/Hive type of each Arrow type the jobs write, as a Glue crawler catalogs Parquet.
_GLUE_TYPES = {
    "bool": "boolean",
    "int8": "tinyint",
    "int16": "smallint",
    "int32": "int",
    "int64": "bigint",
    "uint8": "smallint",
    "uint16": "int",
    "uint32": "bigint",
    "float": "float",
    "double": "double",
    "string": "string",
    "large_string": "string",
    "binary": "binary",
    "date32[day]": "date",
}
# The same for the type DuckDB reads a Parquet column as. Each Arrow type above reads back as
# one of these (dictionary and large_string as VARCHAR: Parquet has no such distinction), so a
# file gets the same Glue types from either table. TIMESTAMP comes in several units and zones
# (see duckdb_glue_type).
_DUCKDB_GLUE_TYPES = {
    "BOOLEAN": "boolean",
    "TINYINT": "tinyint",
    "SMALLINT": "smallint",
    "INTEGER": "int",
    "BIGINT": "bigint",
    "UTINYINT": "smallint",
    "USMALLINT": "int",
    "UINTEGER": "bigint",
    "FLOAT": "float",
    "DOUBLE": "double",
    "VARCHAR": "string",
    "BLOB": "binary",
    "DATE": "date",
}


class CatalogError(jobio.JobError):
    """The catalog cannot be read or changed; the message says what the job's role needs."""


# -- what a job wrote -----------------------------------------------------------------------


def glue_type(arrow_type):
    """The Glue column type a crawler records for an Arrow type, or None when this module does
    not know it (the job then asks for a crawl)."""
    text = str(arrow_type)
    if text.startswith("dictionary<values="):
        text = text[len("dictionary<values="):].split(",", 1)[0]
    if text.startswith("timestamp["):
        return "timestamp"
    return _GLUE_TYPES.get(text)


def folder_of(uri):
    """The folder (ending in /) that holds the file at ``uri``."""
    return uri.rsplit("/", 1)[0] + "/"


def duckdb_glue_type(duckdb_type):
    """The Glue column type a crawler records for a column DuckDB reads as ``duckdb_type``
    (``DESCRIBE``'s name), or None when this module does not know it."""
    if duckdb_type.startswith("TIMESTAMP"):  # TIMESTAMP_MS, TIMESTAMP WITH TIME ZONE, ...
        return "timestamp"
    return _DUCKDB_GLUE_TYPES.get(duckdb_type)


def _request(columns, location, partition_keys, partitions):
    """``columns``: ``[(name, Glue type or None, the type's own name)]``."""
    described, unknown = [], []
    for name, kind, type_name in columns:
        if kind is None:
            unknown.append("%s (%s)" % (name, type_name))
        described.append({"Name": name.lower(), "Type": kind or type_name})
    listed = []
    for values, folder in sorted(dict(partitions).items()):
        values = [values] if isinstance(values, str) else list(values)
        listed.append({"Values": values, "Location": folder})
    return {
        "location": location,
        "columns": described,
        "unknown_types": unknown,
        "partition_keys": [{"Name": name.lower(), "Type": "string"} for name in partition_keys],
        "partitions": listed,
    }


def describe_output(arrow_schema, location, partition_keys=(), partitions=()):
    """The catalog request for a job's output.

    ``arrow_schema``: the schema of the files written (partition columns live in folder names,
    not in the files); ``location``: the table's folder; ``partition_keys``: names of the
    partition columns (typed string, as crawlers type folder values); ``partitions``:
    ``{value tuple or single value: folder URI}``. Returns a JSON-able dict.
    """
    return _request([(field.name, glue_type(field.type), str(field.type)) for field in arrow_schema],
                    location, partition_keys, partitions)


def parquet_columns(path, connection=None):
    """``[(name, DuckDB type name)]`` of the columns of the local Parquet file at ``path``, read
    from its footer with DuckDB (``connection``, or a connection of its own).

    Only the file's own columns: a ``key=value`` folder in the path adds none. Raises
    duckdb.Error when the file is not Parquet.
    """
    own = connection is None
    if own:
        import duckdb

        connection = duckdb.connect()
    try:
        # DuckDB would otherwise read a partition folder in the path as one more column.
        described = connection.execute("DESCRIBE SELECT * FROM read_parquet(%s, hive_partitioning = false)"
                                        % jobio.sql_literal(path)).fetchall()
    finally:
        if own:
            connection.close()
    return [(row[0], row[1]) for row in described]


def describe_parquet(path, location, partition_keys=(), partitions=(), connection=None):
    """The catalog request for a job's output, read from one of the Parquet files it wrote
    (``path``, local) with DuckDB: for every type ``describe_output`` knows, the same request as
    ``describe_output`` of the file's Arrow schema. Of the types it does not know, large and
    fixed-size binary read as binary and a null-typed column as int; the rest stay unknown,
    named as DuckDB names them. The other arguments are describe_output's; ``connection``: a
    DuckDB connection to use instead of a new one. Returns a JSON-able dict; raises
    duckdb.Error when the file is not Parquet.
    """
    return _request([(name, duckdb_glue_type(kind), kind) for name, kind in parquet_columns(path, connection)],
                    location, partition_keys, partitions)


def request_uri(decision_uri):
    """Where the request of the decision at ``decision_uri`` (a ``.json`` name) is kept."""
    if not decision_uri.endswith(".json"):
        raise jobio.JobError("--catalog_decision_uri must name a .json object, got %r" % decision_uri)
    return decision_uri[: -len(".json")] + REQUEST_SUFFIX


# -- the decision ---------------------------------------------------------------------------


def _error_code(exc):
    return str((getattr(exc, "response", None) or {}).get("Error", {}).get("Code", ""))


def _same_location(a, b):
    return (a or "").rstrip("/") == (b or "").rstrip("/")


def differences(table, request):
    """Why ``table`` (GetTable's ``Table``) does not describe the request's files: a list of
    reasons, empty when it does. Columns the table has and the files lack are fine (they read
    as NULL); missing columns, other types, other partition keys or another location are not."""
    reasons = []
    descriptor = table.get("StorageDescriptor") or {}
    if not _same_location(descriptor.get("Location"), request["location"]):
        reasons.append("the table's location is %s, the files are under %s"
                       % (descriptor.get("Location"), request["location"]))
    catalog_columns = {c["Name"].lower(): (c.get("Type") or "").lower()
                       for c in descriptor.get("Columns") or []}
    for column in request["columns"]:
        kind = catalog_columns.get(column["Name"])
        if kind is None:
            reasons.append("column %s is not in the table" % column["Name"])
        elif kind != column["Type"].lower():
            reasons.append("column %s is %s in the table, %s in the files" % (column["Name"], kind, column["Type"]))
    if request.get("unknown_types"):
        reasons.append("no known Glue type for %s" % ", ".join(request["unknown_types"]))
    table_keys = [(k["Name"].lower(), (k.get("Type") or "").lower()) for k in table.get("PartitionKeys") or []]
    wanted_keys = [(k["Name"], k["Type"]) for k in request["partition_keys"]]
    if table_keys != wanted_keys:
        reasons.append("the table is partitioned by %s, the files by %s"
                       % ([k for k, _t in table_keys] or "nothing", [k for k, _t in wanted_keys] or "nothing"))
    return reasons


def _partition_input(table, partition):
    descriptor = dict(table.get("StorageDescriptor") or {})
    descriptor["Location"] = partition["Location"]
    classification = (table.get("Parameters") or {}).get("classification", "parquet")
    return {"Values": partition["Values"], "StorageDescriptor": descriptor,
            "Parameters": {"classification": classification}}


def register_partitions(glue, database, table, partitions):
    """Registers ``partitions`` (``[{"Values", "Location"}]``) of ``table`` (GetTable's ``Table``)
    with the table's storage descriptor. Partitions that exist already count as registered.
    Returns how many were created now. Raises CatalogError for any other refusal."""
    created = 0
    for start in range(0, len(partitions), _PARTITION_BATCH):
        batch = partitions[start:start + _PARTITION_BATCH]
        try:
            response = glue.batch_create_partition(
                DatabaseName=database, TableName=table["Name"],
                PartitionInputList=[_partition_input(table, p) for p in batch])
        except Exception as exc:
            raise CatalogError("cannot register partitions of %s.%s: %s (the job's role needs "
                               "glue:BatchCreatePartition on the table)" % (database, table["Name"], exc))
        errors = response.get("Errors") or []
        refused = [e for e in errors if (e.get("ErrorDetail") or {}).get("ErrorCode") != "AlreadyExistsException"]
        if refused:
            first = refused[0]
            raise CatalogError("cannot register partition %s of %s.%s: %s" % (
                first.get("PartitionValues"), database, table["Name"],
                (first.get("ErrorDetail") or {}).get("ErrorMessage")))
        created += len(batch) - len(errors)
    return created


def crawler_running(glue, crawler):
    """Whether ``crawler`` is crawling now. Raises CatalogError when it cannot be read."""
    try:
        state = glue.get_crawler(Name=crawler)["Crawler"].get("State")
    except Exception as exc:
        raise CatalogError("cannot read crawler %s: %s (the job's role needs glue:GetCrawler)" % (crawler, exc))
    return state in _CRAWLING


def decide(glue, database, table_name, request, crawler=None):
    """Compares the request with the catalog table and registers its partitions when they match.

    Returns the decision ``{"crawl", "crawler_running", "reason", "database", "table",
    "registered", "partitions"}``: ``crawl`` is True when the table is missing or differs from the
    files (nothing is registered then: the crawl will); ``crawler_running`` is True when, in that
    case, ``crawler`` is crawling already. Raises CatalogError when the catalog cannot be read or
    changed.
    """
    decision = {"database": database, "table": table_name, "registered": 0,
                "partitions": len(request["partitions"]), "crawler_running": False}

    def crawl(reason):
        running = bool(crawler) and crawler_running(glue, crawler)
        if running:
            reason += "; crawler %s is crawling now: wait for it, then check again" % crawler
        return dict(decision, crawl=True, crawler_running=running, reason=reason)

    try:
        table = glue.get_table(DatabaseName=database, Name=table_name)["Table"]
    except Exception as exc:
        if _error_code(exc) != "EntityNotFoundException":
            raise CatalogError("cannot read table %s.%s: %s (the job's role needs glue:GetTable)"
                               % (database, table_name, exc))
        return crawl("table %s.%s does not exist yet" % (database, table_name))
    reasons = differences(table, request)
    if reasons:
        return crawl("; ".join(reasons))
    created = register_partitions(glue, database, table, request["partitions"])
    if request["partitions"]:
        reason = "table matches the files; %d of %d partition(s) registered now, the rest were there" % (
            created, len(request["partitions"]))
    else:
        reason = "table matches the files; it is not partitioned, so its location covers them"
    return dict(decision, crawl=False, reason=reason, registered=created)


# -- the job's side -------------------------------------------------------------------------


def enabled(args):
    """Whether the job was asked to keep the catalog (database, table and decision URI given)."""
    wanted = ("catalog_database", "catalog_table", "catalog_decision_uri")
    given = [name for name in wanted if args.get(name)]
    if given and len(given) < len(wanted):
        raise jobio.JobError("catalog arguments go together: pass %s"
                             % ", ".join("--" + name for name in wanted))
    return bool(given)


def catalog_only(args):
    """Whether ``--catalog_only`` asks for the catalog check alone (no data is read or written)."""
    only = str(args.get("catalog_only") or "").strip().lower() in _TRUE
    if only and not enabled(args):
        raise jobio.JobError("--catalog_only needs --catalog_database, --catalog_table and "
                             "--catalog_decision_uri")
    return only


def _glue_client(args):
    return jobio.aws_client("glue", region_name=args.get("catalog_region") or None)


def settle(args, storage, work_dir, request=None, glue=None):
    """Decides for the job's output and writes the decision (and, given one, the request).

    ``request``: ``describe_parquet(...)`` (or ``describe_output(...)``) of what the job just
    wrote; None re-reads the request an earlier run of the job wrote (``--catalog_only``).
    Returns the decision, or None when the catalog arguments are absent. Raises
    JobError/CatalogError.
    """
    if not enabled(args):
        return None
    decision_uri = args["catalog_decision_uri"]
    if request is None:
        text = storage.read_text(request_uri(decision_uri))
        if text is None:
            raise jobio.JobError("no catalog request at %s: run the job without --catalog_only first"
                                 % request_uri(decision_uri))
        request = json.loads(text)
    else:
        storage.put_text(json.dumps(request, indent=1, sort_keys=True) + "\n", request_uri(decision_uri), work_dir)
    glue = glue or _glue_client(args)
    decision = decide(glue, args["catalog_database"], args["catalog_table"], request,
                      crawler=args.get("catalog_crawler"))
    storage.put_text(json.dumps(decision, sort_keys=True) + "\n", decision_uri, work_dir)
    LOG.info("catalog %s.%s: %s -> %s", decision["database"], decision["table"], decision["reason"],
             ("wait for the running crawl" if decision["crawler_running"] else "crawl needed")
             if decision["crawl"] else "no crawl needed")
    return decision


def recheck(args, storage, glue=None):
    """The whole ``--catalog_only`` run: decide again from the stored request. Returns the
    decision; raises JobError."""
    with jobio.WorkDir() as work:
        decision = settle(args, storage, work, glue=glue)
    jobio.print_result({"catalog": decision})
    return decision
