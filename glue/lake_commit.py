"""One landing object's rows -> the processed Iceberg table, in one atomic commit.

The commit protocol (docs/DESIGN.md, "The processed table"):

1. load the table (its current snapshot) through the Glue catalog;
2. find which version of the landing key the table holds (from the data files' exact column
   statistics on ``source_key``/``source_version_id``, reading data only for files that mix
   sources, as compacted ones do); when that version is NEWER than ours in S3's order of the
   key's versions (``ListObjectVersions``), stop: the job reports ``"superseded": true`` and the
   table is left alone. The first attempt then writes the data files and loads the table again,
   so its commit is built on the table as it is after the writing. A retry settles what changed
   since from the snapshots' summaries (every commit names its key and version there);
3. one transaction: delete the key's earlier rows (whole data files, dropped from metadata alone
   when they hold nothing else; rewritten when they do), append ours (one data file per month of
   ``shipping_date``), commit. Readers see the old rows or the new ones, never a mix;
4. a commit that loses the race against another writer (Glue's optimistic check of the table's
   version: ``CommitFailedException``; pyiceberg 0.10.0, the version Glue installs, does not retry
   it) starts again at 1 after a jittered exponential backoff on the scale of the attempt's own
   length, up to ``max_attempts``. The data
   files written once are reused by every attempt while the table's schema and partition spec
   stay the same.

Python 3.9 (Glue's Python shell): pyiceberg 0.10.0 and pyiceberg-core 0.6.x.
"""
import collections
import functools
import logging
import os
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

try:
    from chalicelib import lake_table
except ImportError:  # run from a checkout: chalicelib lives next to this script's folder
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from chalicelib import lake_table

import jobio

LOG = logging.getLogger("shipping_etl.lake_commit")

# Twenty files landing together on a two-core machine needed up to 12 attempts, 7 since attempts
# got shorter (measured, docs/LAKE.md).
DEFAULT_MAX_ATTEMPTS = 30
FIRST_DELAY_SECONDS = 0.2
MAX_DELAY_SECONDS = 10.0
# Rows per data file at most (about 30 MB of Parquet here); maintenance bin-packs small files
# later.
ROWS_PER_DATA_FILE = 1000000
# The rows come as a stream; each data file is written on a thread once its rows are in, while
# the next file's rows are read. Rows being written at once at most (so the job holds at most
# twice this), and files: 4M rows of one month peaked at 973 MB held whole, 731 MB with two
# files of 1M rows written at once and 655 MB with one, in the same time (3.0 s).
ROWS_IN_FLIGHT = ROWS_PER_DATA_FILE
FILES_IN_FLIGHT = 2


# Snapshot summary properties of every commit (set by commit()): the landing key whose rows the
# commit replaced and the version it committed ("" for none).
SOURCE_KEY_PROPERTY = "source-key"
SOURCE_VERSION_PROPERTY = "source-version-id"


class CommitConflict(jobio.JobError):
    """Every attempt lost the race against other writers of the table."""


def load_catalog(region=None, endpoint_url=None):
    """pyiceberg's Glue catalog for the job's account and region. ``endpoint_url`` (default:
    ``AWS_ENDPOINT_URL``, set only for an emulator) reaches Glue and S3 there."""
    from botocore.config import Config
    from pyiceberg.catalog.glue import MAX_RETRIES, STANDARD_RETRY_MODE, GlueCatalog

    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
    # Writes and metadata reads through boto3 (glue/lake_io.py: fewer requests per commit).
    properties = {"type": "glue", "py-io-impl": "lake_io.BotoFileIO"}
    if region:
        properties.update({"glue.region": region, "s3.region": region})
    if endpoint_url:
        properties.update({"glue.endpoint": endpoint_url, "s3.endpoint": endpoint_url})
    # The Glue client pyiceberg would make (its retry settings), but from the job's one boto3
    # session: a session of its own parses botocore's data files again.
    glue = jobio.aws_client("glue", region_name=region, endpoint_url=endpoint_url,
                            config=Config(retries={"max_attempts": MAX_RETRIES, "mode": STANDARD_RETRY_MODE}))
    catalog = GlueCatalog("glue", client=glue, **properties)
    # The FileIO's module and S3 client, made now rather than at the first table load: normalize
    # makes the catalog on a helper thread while DuckDB works.
    import lake_io

    lake_io.client(endpoint_url, region)
    return catalog


def load_table(catalog, database, table):
    """The table; raises JobError saying what to do when it does not exist."""
    from pyiceberg.exceptions import NoSuchTableError

    try:
        return catalog.load_table((database, table))
    except NoSuchTableError:
        raise jobio.JobError("Iceberg table %s.%s does not exist: `python -m deploy up` creates it"
                             % (database, table))


def _field_id(table, name):
    return table.schema().find_field(name).field_id


def held_versions(table, source_key):
    """``{versionId or None}`` of the landing key ``source_key`` that the table holds rows of
    (empty when it holds none). Reads data only for files whose statistics do not settle it."""
    from pyiceberg.conversions import from_bytes
    from pyiceberg.expressions import EqualTo
    from pyiceberg.types import StringType

    if table.current_snapshot() is None:
        return set()
    key_id = _field_id(table, lake_table.SOURCE_KEY_FIELD)
    version_id = _field_id(table, lake_table.SOURCE_VERSION_FIELD)
    scan = table.scan(row_filter=EqualTo(lake_table.SOURCE_KEY_FIELD, source_key),
                      selected_fields=(lake_table.SOURCE_KEY_FIELD, lake_table.SOURCE_VERSION_FIELD))
    versions, unsettled = set(), []
    for task in scan.plan_files():
        data_file = task.file

        def bound(bounds, field_id):
            raw = (bounds or {}).get(field_id)
            return None if raw is None else from_bytes(StringType(), raw)

        key_low, key_high = bound(data_file.lower_bounds, key_id), bound(data_file.upper_bounds, key_id)
        if key_low != source_key or key_high != source_key:
            unsettled.append(task)  # rows of several keys (compacted): read it
            continue
        nulls = (data_file.null_value_counts or {}).get(version_id, 0)
        low, high = bound(data_file.lower_bounds, version_id), bound(data_file.upper_bounds, version_id)
        if nulls:
            versions.add(None)
        if low is not None and low == high:
            versions.add(low)
        elif low is not None:
            unsettled.append(task)
    if unsettled:
        rows = scan.to_arrow().to_pylist()
        versions.update(row[lake_table.SOURCE_VERSION_FIELD] for row in rows
                        if row[lake_table.SOURCE_KEY_FIELD] == source_key)
    return versions


def _string_bound(bounds, field_id):
    from pyiceberg.conversions import from_bytes
    from pyiceberg.types import StringType

    raw = (bounds or {}).get(field_id)
    return None if raw is None else from_bytes(StringType(), raw)


def held_versions_since(table, source_key, known_snapshot_id, known):
    """``held_versions`` for a table that was at snapshot ``known_snapshot_id`` holding versions
    ``known`` of the key, from the snapshots appended since alone (each adds one small manifest),
    so a commit that lost a race re-checks without reading the whole table's manifests. Falls
    back to ``held_versions`` when something else happened since (a delete or a rewrite, or
    history it cannot follow)."""
    from pyiceberg.manifest import ManifestEntryStatus

    current = table.current_snapshot()
    if current is None or known_snapshot_id is None:
        return held_versions(table, source_key)
    newer, snapshot = [], current
    while snapshot is not None and snapshot.snapshot_id != known_snapshot_id:
        newer.append(snapshot)
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    if snapshot is None:
        return held_versions(table, source_key)
    key_id = _field_id(table, lake_table.SOURCE_KEY_FIELD)
    version_id = _field_id(table, lake_table.SOURCE_VERSION_FIELD)
    versions = set(known)
    for snapshot in reversed(newer):  # oldest first
        # A commit of this job names its landing key in its summary (SOURCE_KEY_PROPERTY): one
        # naming another key neither adds nor removes rows of ours, and one naming ours leaves
        # exactly its own version. Settled from the table's metadata, with no manifest read.
        committed_key = snapshot.summary[SOURCE_KEY_PROPERTY] if snapshot.summary else None
        if committed_key is not None:
            if committed_key == source_key:
                versions = {snapshot.summary[SOURCE_VERSION_PROPERTY] or None}
            continue
        operation = snapshot.summary.operation.value if snapshot.summary else None
        if operation != "append":
            return held_versions(table, source_key)
        for manifest in snapshot.manifests(table.io):
            if manifest.added_snapshot_id != snapshot.snapshot_id:
                continue
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                if entry.status != ManifestEntryStatus.ADDED:
                    continue
                data_file = entry.data_file
                low = _string_bound(data_file.lower_bounds, key_id)
                high = _string_bound(data_file.upper_bounds, key_id)
                if low is None or high is None or not low <= source_key <= high:
                    continue
                if low != high:
                    return held_versions(table, source_key)
                version_low = _string_bound(data_file.lower_bounds, version_id)
                version_high = _string_bound(data_file.upper_bounds, version_id)
                if (data_file.null_value_counts or {}).get(version_id, 0):
                    versions.add(None)
                if version_low is not None and version_low == version_high:
                    versions.add(version_low)
                elif version_low is not None:
                    return held_versions(table, source_key)
    return versions


def _split_key(source_key):
    bucket, key = jobio.split_s3(source_key)
    return bucket, key


def version_order(s3, source_key):
    """The key's versionIds, newest first (S3's order, as ListObjectVersions returns them)."""
    bucket, key = _split_key(source_key)
    order = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key):
        for entry in page.get("Versions", []) + page.get("DeleteMarkers", []):
            if entry["Key"] == key:
                order.append((entry["LastModified"], entry["VersionId"], entry.get("IsLatest")))
    # One page lists a key's versions newest first; across Versions and DeleteMarkers (and
    # pages) the same holds by LastModified, with the latest first among equal times.
    order.sort(key=lambda item: (item[0], bool(item[2])), reverse=True)
    return [version for _modified, version, _latest in order]


def newer_version(held, version_id, order):
    """The version in ``held`` that is newer than ``version_id`` by ``order`` (newest first), or
    None. An unversioned object (``version_id`` None) or versions S3 no longer lists never win
    over the object being committed."""
    if version_id is None or version_id not in order:
        return None
    position = order.index(version_id)
    newer = [v for v in held if v is not None and v in order and order.index(v) < position]
    return newer[0] if newer else None


def _backoff(attempt, rng, attempt_seconds=0.0):
    # Full jitter, on the scale of how long an attempt takes here (at least FIRST_DELAY_SECONDS):
    # writers that collided spread out over a few attempts' time instead of colliding again,
    # and fewer attempts at once make each one shorter.
    scale = max(FIRST_DELAY_SECONDS, attempt_seconds)
    return rng.uniform(0, min(MAX_DELAY_SECONDS, scale * (2 ** (attempt - 1))))


class TableRows:
    """A pyarrow Table as commit() takes rows: ``batches()`` gives them in month order (sorted
    into one copy when they are not)."""

    def __init__(self, table):
        self.table = table

    def batches(self):
        import pyarrow as pa

        rows = _in_month_order(self.table)
        return pa.RecordBatchReader.from_batches(rows.schema, rows.to_batches())


def _months(dates):
    """Months of a date array as year * 12 + month (null for a null date)."""
    import pyarrow.compute as pc

    return pc.add(pc.multiply(pc.year(dates), 12), pc.month(dates))


def _in_month_order(rows):
    import pyarrow.compute as pc

    months = _months(rows.column(lake_table.PARTITION_SPEC[0][0])).combine_chunks()
    if _sorted_nulls_last(months):
        return rows
    return rows.take(pc.sort_indices(months))  # nulls at the end


def _sorted_nulls_last(values):
    import pyarrow.compute as pc

    valid = len(values) - values.null_count
    if values.null_count and pc.any(pc.is_valid(values.slice(valid))).as_py():
        return False
    head = values.slice(0, valid)
    return valid < 2 or pc.all(pc.greater_equal(head.slice(1), head.slice(0, valid - 1))).as_py()


def _month_runs(batch, column):
    """``(month, rows)`` for each run of consecutive rows of one month in ``batch`` (month as
    year * 12 + month, None for a null date)."""
    import pyarrow.compute as pc

    runs = pc.run_end_encode(_months(batch.column(column)))
    start = 0
    for end, month in zip(runs.run_ends.to_pylist(), runs.values.to_pylist()):
        yield month, batch.slice(start, end - start)
        start = end


def month_name(month):
    """``YYYY-MM`` of a month numbered as year * 12 + month."""
    return "%04d-%02d" % ((month - 1) // 12, (month - 1) % 12 + 1)


class _MonthFiles:
    """Data files of one table from rows that arrive in month order: each month's rows are cut
    into files of at most ROWS_PER_DATA_FILE rows, written by pyiceberg's file writer with
    their partition on a pool (at most FILES_IN_FLIGHT files and ROWS_IN_FLIGHT rows at once)
    while later rows are read. Counts the rows and the months written."""

    def __init__(self, io, metadata, field, file_schema, write_uuid, pool):
        self.io, self.metadata, self.field, self.file_schema = io, metadata, field, file_schema
        self.write_uuid, self.pool = write_uuid, pool
        self.source = metadata.schema().find_field(field.source_id)
        self.to_month = field.transform.pyarrow_transform(self.source.field_type)
        self.writing = collections.deque()  # (future, rows)
        self.files, self.rows, self.months = [], 0, []
        self.month, self.pieces, self.piece_rows = None, [], 0

    def add(self, batch):
        for month, piece in _month_runs(batch, self.source.name):
            if self.pieces and month != self.month:
                self._flush()
            if self.months and _order(month) < _order(self.months[-1]):
                raise jobio.JobError("the rows are not in month order (%s after %s): commit() needs "
                                     "them sorted by month of %s, nulls last"
                                     % (_month_text(month), _month_text(self.months[-1]), self.source.name))
            if not self.months or self.months[-1] != month:
                self.months.append(month)
            self.month = month
            while piece.num_rows:
                taken = piece.slice(0, ROWS_PER_DATA_FILE - self.piece_rows)
                self.pieces.append(taken)
                self.piece_rows += taken.num_rows
                piece = piece.slice(taken.num_rows)
                if self.piece_rows == ROWS_PER_DATA_FILE:
                    self._flush()

    def _flush(self):
        from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
        from pyiceberg.table import WriteTask

        if not self.pieces:
            return
        value = self.to_month(self.pieces[0].column(self.source.name).slice(0, 1))[0].as_py()
        key = PartitionKey(field_values=[PartitionFieldValue(field=self.field, value=value)],
                           partition_spec=self.metadata.spec(), schema=self.metadata.schema())
        task = WriteTask(write_uuid=self.write_uuid, task_id=self.rows, schema=self.file_schema,
                         record_batches=self.pieces, partition_key=key)
        while self.writing and (len(self.writing) >= FILES_IN_FLIGHT
                                or sum(rows for _f, rows in self.writing) + self.piece_rows > ROWS_IN_FLIGHT):
            # Rows already being written come first: at most ROWS_IN_FLIGHT written at once.
            self._take_oldest()
        self.writing.append((self.pool.submit(self._write, task), self.piece_rows))
        self.rows += self.piece_rows
        self.pieces, self.piece_rows = [], 0

    def _write(self, task):
        from pyiceberg.io.pyarrow import write_file

        return list(write_file(self.io, self.metadata, iter([task])))

    def _take_oldest(self):
        future, _rows = self.writing.popleft()
        self.files.extend(future.result())

    def finish(self):
        """The DataFiles, once every row is written."""
        self._flush()
        while self.writing:
            self._take_oldest()
        return self.files


def _month_text(month):
    return "no date" if month is None else month_name(month)


def _order(month):
    return (month is None, month or 0)


def _partitioned_by_month(metadata):
    """The table's partition field when its spec is lake_table's (month of shipping_date), else None."""
    [(column, transform, _name)] = lake_table.PARTITION_SPEC
    fields = metadata.spec().fields
    if len(fields) != 1 or str(fields[0].transform) != transform:
        return None
    return fields[0] if metadata.schema().find_column_name(fields[0].source_id) == column else None


def _write_data_files(table, rows, write_uuid):
    """Writes the rows of ``rows`` (see commit) as the table's data files (one per partition and
    ROWS_PER_DATA_FILE rows); returns ``(pyiceberg DataFiles, rows written, months written)``.

    With lake_table's partitioning, each month's rows go straight to pyiceberg's file writer with
    their partition, as they come: pyiceberg's own partitioning filters a copy of the whole table
    per partition and re-reads its configuration per file (a 1M-row file over 25 months: 0.73 s
    here, against 0.38 s this way), and needs the whole table in memory. A table partitioned
    otherwise (changed since) is written through pyiceberg's generic path."""
    from pyiceberg.io.pyarrow import _check_pyarrow_schema_compatible, _dataframe_to_data_files, pyarrow_to_schema

    metadata = table.metadata
    reader = rows.batches()
    _check_pyarrow_schema_compatible(metadata.schema(), provided_schema=reader.schema,
                                     format_version=metadata.format_version)
    field = _partitioned_by_month(metadata)
    if field is None:
        whole = reader.read_all()
        months = sorted({m for m in _months(whole.column(lake_table.PARTITION_SPEC[0][0])).to_pylist()},
                        key=_order)
        if not whole.num_rows:
            return [], 0, []
        return (list(_dataframe_to_data_files(table_metadata=metadata, df=whole, io=table.io, write_uuid=write_uuid)),
                whole.num_rows, months)
    file_schema = pyarrow_to_schema(reader.schema, name_mapping=metadata.schema().name_mapping,
                                    format_version=metadata.format_version)
    # pyarrow's Parquet writer releases the GIL: files are written while DuckDB reads on.
    with ThreadPoolExecutor(max_workers=FILES_IN_FLIGHT) as pool:
        files = _MonthFiles(table.io, metadata, field, file_schema, write_uuid, pool)
        try:
            for batch in reader:
                files.add(batch)
            return files.finish(), files.rows, files.months
        except BaseException:
            for future, _rows in files.writing:
                future.cancel()
            raise


@functools.lru_cache(maxsize=None)
def _transaction_class():
    from pyiceberg.table import Transaction

    class MetadataOnceTransaction(Transaction):
        """pyiceberg's Transaction, whose ``table_metadata`` is computed once per change of the
        table or of the staged updates. pyiceberg 0.10.0 recomputes it on every access as a deep
        copy of the whole table metadata (every snapshot), and a commit reads it twice per data
        file it adds (the snapshot summary): a 24-file commit on a table of 100 snapshots spent
        1.4 s there, growing with every commit. The metadata is immutable (frozen models), so one
        copy serves every reader until the next update."""

        _cached = None

        @property
        def table_metadata(self):
            key = (self._table.metadata, self._updates)
            cached = self._cached
            if cached is None or cached[0][0] is not key[0] or cached[0][1] is not key[1]:
                cached = self._cached = (key, Transaction.table_metadata.fget(self))
            return cached[1]

    return MetadataOnceTransaction


def commit(catalog, database, table_name, rows, source_key, source_version_id=None, s3=None,
           snapshot_properties=None, max_attempts=DEFAULT_MAX_ATTEMPTS, sleep=time.sleep, rng=None):
    """Replaces the table's rows of ``source_key`` with ``rows``, unless the table holds a newer
    version of the key (see the module docstring). ``rows``: a pyarrow Table in the table's
    schema, or an object whose ``batches()`` returns a pyarrow RecordBatchReader of such rows in
    month order of ``shipping_date`` (nulls last), read once per writing of the data files.

    ``s3``: a boto3 S3 client for the key's version order (needed only with a version id).
    Returns ``{"superseded", "held_version_id", "attempts", "snapshot_id", "replaced",
    "data_files", "rows", "months", "write_seconds", "seconds"}`` (``rows`` and ``months``
    (``YYYY-MM``): what the data files hold, 0 and [] when superseded; ``write_seconds``: writing
    the data files, done once; ``seconds``: the whole commit, every attempt and backoff
    included). Raises CommitConflict after ``max_attempts`` lost races, JobError when the table
    is missing or the rows are not in month order.
    """
    from pyiceberg.exceptions import CommitFailedException
    from pyiceberg.expressions import EqualTo

    rng = rng or random.Random()
    if not hasattr(rows, "batches"):
        rows = TableRows(rows)
    # Every snapshot names the key and version it commits: held_versions_since relies on it.
    properties = dict(snapshot_properties or {})
    properties.update({SOURCE_KEY_PROPERTY: source_key, SOURCE_VERSION_PROPERTY: source_version_id or ""})
    started, write_seconds = time.monotonic(), 0.0
    write_uuid = uuid.uuid4()
    written, written_for, written_rows, written_months = None, None, 0, []
    state = {"held": None, "seen": None, "order": None}

    def newer_held(table):
        """The version newer than ours the table holds, or None (``state`` follows the table)."""
        if state["held"] is None:
            state["held"] = held_versions(table, source_key)
        else:
            state["held"] = held_versions_since(table, source_key, state["seen"], state["held"])
        current = table.current_snapshot()
        state["seen"] = current.snapshot_id if current is not None else None
        if source_version_id is None or not state["held"] - {source_version_id, None}:
            return None
        if state["order"] is None:
            state["order"] = version_order(s3, source_key)
        return newer_version(state["held"], source_version_id, state["order"])

    for attempt in range(1, max_attempts + 1):
        attempt_started = time.monotonic()
        table = load_table(catalog, database, table_name)
        newer = newer_held(table)
        layout = (table.metadata.current_schema_id, table.metadata.default_spec_id)
        if newer is None and written_for != layout:
            write_started = time.monotonic()
            written, written_rows, written_months = _write_data_files(table, rows, write_uuid)
            written_for = layout
            write_seconds += time.monotonic() - write_started
            # Writing took a while: commit on the table as it is now, not as it was before.
            attempt_started = time.monotonic()
            table = load_table(catalog, database, table_name)
            newer = newer_held(table)
            if (table.metadata.current_schema_id, table.metadata.default_spec_id) != layout:
                continue  # the schema or partitioning changed meanwhile: write again
        if newer is not None:
            LOG.info("table %s.%s holds version %s of %s, newer than %s: nothing to commit",
                     database, table_name, newer, source_key, source_version_id)
            return {"superseded": True, "held_version_id": newer, "attempts": attempt,
                    "snapshot_id": None, "replaced": False, "data_files": 0, "rows": 0, "months": [],
                    "write_seconds": 0.0,
                    "seconds": round(time.monotonic() - started, 3)}
        held = state["held"]
        transaction = _transaction_class()(table)
        if held:
            transaction.delete(EqualTo(lake_table.SOURCE_KEY_FIELD, source_key),
                               snapshot_properties=dict(properties))
        # A merge append when the table enables manifest merging (chalicelib.lake_table): the
        # number of manifests every commit and query plans over stays bounded.
        with transaction._append_snapshot_producer(dict(properties)) as append:
            for data_file in written:
                append.append_data_file(data_file)
        try:
            committed = transaction.commit_transaction()
        except CommitFailedException as exc:
            if attempt == max_attempts:
                raise CommitConflict(
                    "gave up committing %s to %s.%s after %d attempts, each losing the race against "
                    "another writer (last: %s); the run can be retried as it is"
                    % (source_key, database, table_name, attempt, exc))
            held_seconds = time.monotonic() - attempt_started
            delay = _backoff(attempt, rng, held_seconds)
            # How long an attempt holds its base decides how often it loses: worth seeing in the log.
            LOG.info("commit attempt %d lost the race after %.2f s (%s): retrying in %.2f s",
                     attempt, held_seconds, exc, delay)
            sleep(delay)
            continue
        snapshot = committed.current_snapshot()
        return {"superseded": False, "held_version_id": None, "attempts": attempt,
                "snapshot_id": snapshot.snapshot_id if snapshot else None, "replaced": bool(held),
                "data_files": len(written), "rows": written_rows,
                "months": [month_name(m) for m in written_months if m is not None],
                "write_seconds": round(write_seconds, 3),
                "seconds": round(time.monotonic() - started, 3)}
    raise CommitConflict("gave up committing %s to %s.%s after %d attempts: the table's schema or partitioning "
                         "kept changing while its data files were written; the run can be retried as it is"
                         % (source_key, database, table_name, max_attempts))
