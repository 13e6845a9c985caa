"""Iceberg tables in the local Athena engine: what Athena does with a ``table_type=ICEBERG`` table.

- Reading: pyiceberg plans the scan from the table's metadata (its current snapshot's manifests,
  partition values and column statistics), with the query's simple filters pushed down (``col =
  'literal'`` joined by AND: the per-file totals query's ``source_id = '...'``), so only the data
  files that may hold matching rows are read. DuckDB then runs the SQL over exactly those files.
  The bytes of those files are the query's ``DataScannedInBytes`` (Athena counts the bytes it
  reads; it reads less than whole files, so this is an upper bound of what AWS reports).
- Maintenance: ``OPTIMIZE <t> REWRITE DATA USING BIN_PACK`` rewrites each partition holding at
  least ``optimize_rewrite_data_file_threshold`` (5) data files into one file (sorted by
  ``source_id``, so per-source queries stay pruned), in one commit that keeps every row;
  ``VACUUM <t>`` expires snapshots older than ``vacuum_max_snapshot_age_seconds`` (keeping
  ``vacuum_min_snapshots_to_keep``) and deletes the data and manifest files no remaining snapshot
  references, as Athena's VACUUM does.
"""
import logging
import re
import time

from pyiceberg.catalog.glue import GlueCatalog
from pyiceberg.expressions import AlwaysTrue, And, EqualTo
from sqlglot import exp

from local.athena_tables import DataFile, ResolvedTable

LOG = logging.getLogger(__name__)

_MAINTENANCE = re.compile(
    r"^\s*(?P<verb>OPTIMIZE|VACUUM)\s+(?P<table>[\"\w.]+)(?P<rest>.*?)\s*;?\s*$", re.IGNORECASE | re.DOTALL)
_BIN_PACK = re.compile(r"^\s*REWRITE\s+DATA\s+USING\s+BIN_PACK\s*$", re.IGNORECASE)
DEFAULT_MIN_FILES = 5
DEFAULT_SNAPSHOT_AGE_SECONDS = 5 * 86400


class IcebergError(Exception):
    """A statement Athena would refuse on an Iceberg table; the message reads like Athena's."""

    user_error = True


def is_iceberg(definition):
    """Whether a Glue table definition (GetTable's ``Table``) is an Iceberg table."""
    return ((definition or {}).get("Parameters") or {}).get("table_type", "").upper() == "ICEBERG"


def catalog(glue_client, s3_client, metadata_only=False):
    """pyiceberg's Glue catalog over the engine's own clients' endpoint. ``metadata_only``: its
    FileIO is boto3's (deploy.iceberg_io: one kept-alive client for the process), for work that
    reads metadata and manifests only (planning a query's files). pyiceberg's default, pyarrow's
    S3 filesystem, is made afresh with every table load, and its new connections' TLS handshakes
    (both ends in this process) were a tenth of the stack's time in a burst of twenty files."""
    endpoint = s3_client.meta.endpoint_url
    properties = {"s3.endpoint": endpoint, "s3.region": s3_client.meta.region_name,
                  # The stack's own credentials (its plumbing role when IAM is enforced).
                  "s3.access-key-id": "testing", "s3.secret-access-key": "testing", "s3.session-token": "testing"}
    if metadata_only:
        properties["py-io-impl"] = "deploy.iceberg_io.Boto3FileIO"
    return GlueCatalog("glue", client=glue_client, **properties)


def _literal_filters(statement, table_node):
    """pyiceberg predicates for the top-level ``column = 'string'`` conjuncts of the WHERE of a
    single-table SELECT over ``table_node`` (nothing for anything more complex: the filter is an
    optimisation, DuckDB still applies the whole WHERE)."""
    if not isinstance(statement, exp.Select) or len(list(statement.find_all(exp.Table))) != 1:
        return AlwaysTrue()
    where = statement.args.get("where")
    if where is None:
        return AlwaysTrue()
    conjuncts, pending = [], [where.this]
    while pending:
        node = pending.pop()
        if isinstance(node, exp.And):
            pending.extend([node.left, node.right])
        elif isinstance(node, exp.Paren):
            pending.append(node.this)
        else:
            conjuncts.append(node)
    predicate = AlwaysTrue()
    for node in conjuncts:
        if not isinstance(node, exp.EQ):
            continue
        column, literal = node.left, node.right
        if isinstance(column, exp.Literal):
            column, literal = literal, column
        if isinstance(column, exp.Column) and isinstance(literal, exp.Literal) and literal.is_string:
            predicate = And(predicate, EqualTo(column.name.lower(), literal.this))
    return predicate


# Iceberg's primitive types as Glue names them (what the engine's views cast to).
_GLUE_TYPES = {"long": "bigint", "int": "int", "date": "date", "string": "string", "double": "double",
               "float": "float", "boolean": "boolean", "timestamp": "timestamp", "binary": "binary"}


class IcebergTables:
    """The engine's table resolver for Iceberg tables (``local.athena_tables`` interface): the
    data files of the table's current snapshot that the query may need (see module docstring)."""

    def __init__(self, glue_client, s3_client):
        self.glue = glue_client
        self.s3 = s3_client

    def resolve(self, definition, statement=None, node=None):
        """A ResolvedTable for an Iceberg ``definition`` (None for any other table), its files
        pruned by the simple filters of ``statement`` over ``node``."""
        if not is_iceberg(definition):
            return None
        database, name = definition["DatabaseName"], definition["Name"]
        table = catalog(self.glue, self.s3, metadata_only=True).load_table((database, name))
        columns = [(field.name.lower(), _GLUE_TYPES.get(str(field.field_type), "string"))
                   for field in table.schema().fields]
        row_filter = _literal_filters(statement, node) if statement is not None else AlwaysTrue()
        tasks = list(table.scan(row_filter=row_filter).plan_files()) if table.current_snapshot() else []
        if any(task.delete_files for task in tasks):
            raise IcebergError("NOT_SUPPORTED: the local query engine reads no Iceberg delete files "
                               "(merge-on-read); the pipeline's writers copy on write")
        # Data files are immutable: their path names their content (the cache's version key).
        files = [DataFile(task.file.file_path, task.file.file_size_in_bytes, "iceberg:" + task.file.file_path)
                 for task in tasks]
        for data_file in files:
            _split(data_file.uri)  # a data file outside S3 is refused
        LOG.debug("%s.%s: %d data file(s), filter %s", database, name, len(files), row_filter)
        return ResolvedTable(columns, [], files)


def _split(uri):
    if not uri.startswith("s3://"):
        raise IcebergError("HIVE_METASTORE_ERROR: data file %r is not in S3" % uri)
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


# -- maintenance --------------------------------------------------------------------------------


def maintenance_statement(sql):
    """``(verb, database or None, table)`` when ``sql`` is an OPTIMIZE or VACUUM statement, else
    None. Raises IcebergError for an OPTIMIZE Athena would not accept."""
    match = _MAINTENANCE.match(sql or "")
    if not match:
        return None
    verb = match.group("verb").upper()
    rest = match.group("rest")
    if verb == "OPTIMIZE" and not _BIN_PACK.match(rest):
        raise IcebergError("SYNTAX_ERROR: OPTIMIZE takes REWRITE DATA USING BIN_PACK (a WHERE clause is "
                           "not supported by the local engine)")
    if verb == "VACUUM" and rest.strip():
        raise IcebergError("SYNTAX_ERROR: VACUUM takes a table name only")
    parts = [p.strip('"').lower() for p in match.group("table").split(".")]
    if len(parts) > 2:
        parts = parts[-2:]
    return verb, (parts[0] if len(parts) == 2 else None), parts[-1]


def run_maintenance(engine, verb, database, name):
    """Runs OPTIMIZE or VACUUM on ``database.name``. Returns ``(columns, rows, scanned_bytes)``
    (Athena returns no rows for either)."""
    try:
        definition = engine.glue.get_table(DatabaseName=database, Name=name)["Table"]
    except engine.glue.exceptions.EntityNotFoundException:
        raise IcebergError("TABLE_NOT_FOUND: Table 'awsdatacatalog.%s.%s' does not exist" % (database, name))
    if not is_iceberg(definition):
        raise IcebergError("NOT_SUPPORTED: %s is only supported for Iceberg tables" % verb)
    table = catalog(engine.glue, engine.s3).load_table((database, name))
    if verb == "OPTIMIZE":
        scanned = optimize(table)
    else:
        vacuum(table, engine.s3)
        scanned = 0
    return [], [], scanned


def _int_property(table, name, default):
    try:
        return int(table.properties.get(name, default))
    except ValueError:
        return default


def optimize(table):
    """Bin-packs each partition holding at least ``optimize_rewrite_data_file_threshold`` data
    files into one file, in one commit (a replace: row count and contents unchanged). Returns the
    bytes read."""
    from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files

    if table.current_snapshot() is None:
        return 0
    threshold = _int_property(table, "optimize_rewrite_data_file_threshold", DEFAULT_MIN_FILES)
    groups = {}
    for task in table.scan().plan_files():
        groups.setdefault((task.file.spec_id, tuple(task.file.partition)), []).append(task)
    rewrite = [tasks for tasks in groups.values() if len(tasks) >= threshold]
    if not rewrite:
        return 0
    arrow_scan = ArrowScan(table_metadata=table.metadata, io=table.io, projected_schema=table.schema(),
                           row_filter=AlwaysTrue())
    scanned, old_files, frames = 0, [], []
    sort_column = "source_id" if "source_id" in table.schema().column_names else None
    for tasks in rewrite:
        data = arrow_scan.to_table(tasks)
        if sort_column:
            data = data.sort_by(sort_column)
        frames.append(data)
        old_files.extend(task.file for task in tasks)
        scanned += sum(task.file.file_size_in_bytes for task in tasks)
    transaction = table.transaction()
    with transaction.update_snapshot().overwrite() as overwrite:
        for data_file in old_files:
            overwrite.delete_data_file(data_file)
        for data in frames:
            for data_file in _dataframe_to_data_files(table_metadata=transaction.table_metadata, df=data,
                                                      io=table.io, write_uuid=overwrite.commit_uuid):
                overwrite.append_data_file(data_file)
    transaction.commit_transaction()
    LOG.info("OPTIMIZE %s: %d data files in %d partition(s) rewritten", table.name(), len(old_files), len(rewrite))
    return scanned


def vacuum(table, s3, now=None):
    """Expires snapshots older than the table's ``vacuum_max_snapshot_age_seconds`` (keeping at
    least ``vacuum_min_snapshots_to_keep``, and always the current one), then deletes the files
    under the table's location that no remaining snapshot or metadata references."""
    now_ms = int((now if now is not None else time.time()) * 1000)
    max_age = _int_property(table, "vacuum_max_snapshot_age_seconds", DEFAULT_SNAPSHOT_AGE_SECONDS) * 1000
    keep_min = max(1, _int_property(table, "vacuum_min_snapshots_to_keep", 1))
    snapshots = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms, reverse=True)
    current = table.current_snapshot()
    keep = {s.snapshot_id for s in snapshots[:keep_min]}
    if current is not None:
        keep.add(current.snapshot_id)
    expire = [s.snapshot_id for s in snapshots
              if s.snapshot_id not in keep and now_ms - s.timestamp_ms > max_age]
    if expire:
        table.maintenance.expire_snapshots().by_ids(expire).commit()
        table = table.refresh()
    # Only files older than the retention: younger ones may belong to a commit in flight.
    _delete_unreferenced(table, s3, older_than_ms=now_ms - max_age)
    LOG.info("VACUUM %s: %d snapshot(s) expired", table.name(), len(expire))


def _delete_unreferenced(table, s3, older_than_ms):
    """Deletes data, manifest and manifest-list files under the table's location that no
    snapshot left references (what Athena's VACUUM calls orphan files)."""
    referenced = set()
    for snapshot in table.metadata.snapshots:
        referenced.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(table.io):
            referenced.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                referenced.add(entry.data_file.file_path)
    location = table.metadata.location.rstrip("/") + "/"
    bucket, prefix = _split(location)
    doomed = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            uri = "s3://%s/%s" % (bucket, obj["Key"])
            relative = obj["Key"][len(prefix):]
            if relative.startswith("metadata/") and relative.endswith(".metadata.json"):
                continue  # table metadata versions: pruned by write.metadata.previous-versions-max
            if uri not in referenced and obj["LastModified"].timestamp() * 1000 < older_than_ms:
                doomed.append({"Key": obj["Key"]})
    for start in range(0, len(doomed), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed[start:start + 1000], "Quiet": True})
    return len(doomed)
