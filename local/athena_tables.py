"""What the local Athena engine reads for a catalog table: its columns and its data files.

A table is resolved by the first *table resolver* that recognises its Glue definition
(``resolve(definition, statement, node) -> ResolvedTable or None``; the query and its reference to
the table let a format that can prune, Iceberg's, return only the files the query may need). ``HiveParquetTables`` reads Hive-style tables
(what the crawlers and CTAS make): for a partitioned table the files under its *registered*
partitions' locations, with the partition values as columns; for an unpartitioned table
everything under its location; files whose names start with ``_`` or ``.`` are skipped, as
Athena skips them. Other table formats (an Iceberg table, for one) plug in a resolver of their
own (``local.iceberg_tables.IcebergTables``, asked first): it returns the table's current data files and
Athena reads exactly those.

Files are copied into a local cache that mirrors ``bucket/key`` and is reused while the ETag is
unchanged; DuckDB reads only inside that cache (see ``AthenaEngine``'s lock-down).
"""
import os
import re
import uuid
from dataclasses import dataclass, field
from typing import List, Optional, Tuple
from urllib.parse import urlparse

from botocore.exceptions import ClientError

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


class TableLocationError(ValueError):
    """A table's location is not an S3 location."""


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


def split_s3_uri(uri):
    """``(bucket, key or prefix)`` of an ``s3://`` URI. Raises TableLocationError otherwise."""
    parsed = urlparse(uri or "")
    if parsed.scheme not in ("s3", "s3a", "s3n") or not parsed.netloc:
        raise TableLocationError("%r is not an S3 location" % (uri,))
    return parsed.netloc, parsed.path.lstrip("/")


def _prefix_of(location):
    bucket, prefix = split_s3_uri(location)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return bucket, prefix


def is_data_key(relative_key):
    """Hive, Spark and Athena skip folder markers and files whose names start with _ or ."""
    if not relative_key or relative_key.endswith("/") or relative_key.endswith("_$folder$"):
        return False
    return not any(part.startswith(("_", ".")) for part in relative_key.split("/"))


@dataclass(frozen=True)
class DataFile:
    """One data file of a table: where it is, its size (what Athena counts as scanned) and its
    ETag (None when unknown: the cache then asks S3), plus the partition values it belongs to
    (strings, in the order of ``ResolvedTable.partition_keys``)."""

    uri: str
    size: int
    etag: Optional[str] = None
    partition_values: Tuple[str, ...] = ()


@dataclass
class ResolvedTable:
    """A catalog table as the engine reads it. ``columns``/``partition_keys`` are
    ``(name, Glue type)`` pairs, names lower-case; ``file_format`` is ``parquet``."""

    columns: List[Tuple[str, str]]
    partition_keys: List[Tuple[str, str]] = field(default_factory=list)
    files: List[DataFile] = field(default_factory=list)
    file_format: str = "parquet"

    @property
    def size_bytes(self):
        return sum(f.size for f in self.files)


def list_data_files(s3_client, location):
    """``DataFile``s under an S3 location (recursively), Athena's rules for what is data."""
    bucket, prefix = _prefix_of(location)
    found = []
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if is_data_key(obj["Key"][len(prefix):]):
                found.append(DataFile("s3://%s/%s" % (bucket, obj["Key"]), obj["Size"], obj["ETag"].strip('"')))
    return found


class HiveParquetTables:
    """Resolves Hive-style tables (a location, optionally registered partitions) of Parquet
    files: the crawlers' tables and those CTAS creates."""

    def __init__(self, glue_client, s3_client):
        self.glue = glue_client
        self.s3 = s3_client

    def resolve(self, definition, statement=None, node=None):
        descriptor = definition.get("StorageDescriptor") or {}
        columns = [(c["Name"].lower(), c.get("Type", "string")) for c in descriptor.get("Columns") or []]
        partition_keys = [(c["Name"].lower(), c.get("Type", "string")) for c in definition.get("PartitionKeys") or []]
        if partition_keys:
            files = []
            for partition in self._partitions(definition["DatabaseName"], definition["Name"]):
                location = (partition.get("StorageDescriptor") or {}).get("Location")
                values = tuple(partition["Values"])
                files.extend(DataFile(f.uri, f.size, f.etag, values) for f in list_data_files(self.s3, location))
        else:
            files = list_data_files(self.s3, descriptor.get("Location"))
        return ResolvedTable(columns, partition_keys, files)

    def _partitions(self, db, table):
        partitions = []
        for page in self.glue.get_paginator("get_partitions").paginate(DatabaseName=db, TableName=table):
            partitions.extend(page["Partitions"])
        return partitions


class S3ObjectCache:
    """Local copies of S3 objects at ``<root>/objects/<bucket>/<key>``, reused while the ETag is
    unchanged (recorded beside them under ``<root>/etags/``). Downloads land under a temporary
    name and are renamed into place, so concurrent queries never read a partial file."""

    def __init__(self, s3_client, root):
        self.s3 = s3_client
        self.root = os.path.abspath(root)

    @property
    def objects_root(self):
        """The folder every cached object lives under (the only one DuckDB may read)."""
        return os.path.join(self.root, "objects")

    def _paths(self, bucket, key):
        parts = [p for p in key.split("/") if p not in ("", ".", "..")]
        return (os.path.join(self.objects_root, bucket, *parts),
                os.path.join(self.root, "etags", bucket, *parts))

    def local_path(self, uri, etag=None):
        """Path of a current local copy of ``uri`` (s3://bucket/key); downloads it when missing
        or stale. Without an ETag, S3 is asked for the current one."""
        bucket, key = split_s3_uri(uri)
        data_path, etag_path = self._paths(bucket, key)
        if etag is None:
            try:
                etag = self.s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
            except ClientError:
                etag = None  # the download below reports what is wrong
        try:
            with open(etag_path) as handle:
                if etag is not None and handle.read() == etag and os.path.exists(data_path):
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
            # The tag the caller keys the copy by: an Iceberg data file's is its path (the file
            # is never rewritten), which S3's ETag never equals; with the response's ETag here
            # every query downloaded every Iceberg file again.
            handle.write(etag if etag is not None else response["ETag"].strip('"'))
        os.replace(etag_path + suffix, etag_path)
        return data_path

    def uri_of(self, local_path):
        """The s3:// URI a cached path mirrors (inverse of ``local_path``)."""
        relative = os.path.relpath(local_path, self.objects_root).replace(os.sep, "/")
        return "s3://" + relative
