"""A Glue crawler stand-in for Parquet: reads the schemas and hive partitions under a crawler's
S3 targets and creates or updates the catalog table and its partitions, as a Glue crawler does.

Only Parquet footers are read (ranged GETs), and a footer is remembered per ETag under
``work_dir``, so re-crawling a growing zone reads only the new files.
"""
import fnmatch
import hashlib
import io
import logging
import os
import re
import uuid
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import ClientError

LOG = logging.getLogger(__name__)

PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
PARQUET_INPUT_FORMAT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT_FORMAT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
_PARTITION_BATCH = 100  # BatchCreatePartition's limit
_TABLE_NAME_UNSAFE = re.compile(r"[^a-z0-9_]+")


class CrawlError(Exception):
    """The crawl cannot catalog what it found; the message says what and where."""


def _is_data_key(relative_key):
    """Hive, Spark and Athena skip folder markers and files whose names start with _ or ."""
    if not relative_key or relative_key.endswith("/") or relative_key.endswith("_$folder$"):
        return False
    return not any(part.startswith(("_", ".")) for part in relative_key.split("/"))


def table_name_for(path, table_prefix=""):
    """The table a crawler makes for an S3 target: its folder name (lower-case, [a-z0-9_])
    after the crawler's TablePrefix."""
    parsed = urlparse(path)
    folders = [p for p in (parsed.netloc + "/" + parsed.path).split("/") if p]
    if not folders:
        raise CrawlError("S3 target %r names no bucket" % path)
    return _TABLE_NAME_UNSAFE.sub("_", ((table_prefix or "") + folders[-1]).lower())


def glue_type(arrow_type):
    """The Glue/Hive column type for an Arrow type. Raises CrawlError for types Hive lacks."""
    t = pa.types
    if t.is_dictionary(arrow_type):
        return glue_type(arrow_type.value_type)
    if t.is_boolean(arrow_type):
        return "boolean"
    if t.is_int8(arrow_type):
        return "tinyint"
    if t.is_int16(arrow_type) or t.is_uint8(arrow_type):
        return "smallint"
    if t.is_int32(arrow_type) or t.is_uint16(arrow_type):
        return "int"
    if t.is_int64(arrow_type) or t.is_uint32(arrow_type) or t.is_uint64(arrow_type):
        return "bigint"
    if t.is_float16(arrow_type) or t.is_float32(arrow_type):
        return "float"
    if t.is_float64(arrow_type):
        return "double"
    if t.is_decimal(arrow_type):
        return "decimal(%d,%d)" % (arrow_type.precision, arrow_type.scale)
    if t.is_string(arrow_type) or t.is_large_string(arrow_type) or getattr(t, "is_string_view", lambda _: False)(arrow_type):
        return "string"
    if t.is_binary(arrow_type) or t.is_large_binary(arrow_type) or t.is_fixed_size_binary(arrow_type):
        return "binary"
    if t.is_date(arrow_type):
        return "date"
    if t.is_timestamp(arrow_type):
        return "timestamp"
    if t.is_null(arrow_type):
        return "string"  # an all-null column: what Glue crawlers record for it
    if t.is_list(arrow_type) or t.is_large_list(arrow_type) or t.is_fixed_size_list(arrow_type):
        return "array<%s>" % glue_type(arrow_type.value_type)
    if t.is_map(arrow_type):
        return "map<%s,%s>" % (glue_type(arrow_type.key_type), glue_type(arrow_type.item_type))
    if t.is_struct(arrow_type):
        fields = (arrow_type.field(i) for i in range(arrow_type.num_fields))
        return "struct<%s>" % ",".join("%s:%s" % (f.name, glue_type(f.type)) for f in fields)
    raise CrawlError("no Glue type for Parquet column type %s" % arrow_type)


class _S3RangeFile(io.RawIOBase):
    """A read-only file over one S3 object version: pyarrow seeks to the footer and reads only
    it, one ranged GET per read."""

    def __init__(self, s3_client, bucket, key, size, etag):
        super().__init__()
        self._s3, self._bucket, self._key, self._size, self._etag = s3_client, bucket, key, size, etag
        self._position = 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._position

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer):
        end = min(self._size, self._position + len(buffer))
        if end <= self._position:
            return 0
        body = self._s3.get_object(
            Bucket=self._bucket, Key=self._key, Range="bytes=%d-%d" % (self._position, end - 1),
            IfMatch='"%s"' % self._etag,
        )["Body"].read()
        buffer[: len(body)] = body
        self._position += len(body)
        return len(body)


class S3Crawler:
    """Crawls S3 targets of Parquet files into the Glue catalog.

    ``glue_client`` and ``s3_client`` are boto3 clients (the local stack's); ``work_dir`` holds the
    footer cache (``footers/``).
    """

    def __init__(self, glue_client, s3_client, work_dir):
        self.glue = glue_client
        self.s3 = s3_client
        self.footer_dir = os.path.join(os.path.abspath(work_dir), "footers")

    def crawl(self, crawler):
        """Crawl every S3 target of a crawler definition (GetCrawler's ``Crawler``).

        Returns ``(True, None)``, or ``(False, message)`` when a target holds a file that is not
        Parquet, files whose schemas or partition layouts disagree, or the catalog refuses a change.
        """
        database = crawler["DatabaseName"]
        prefix = crawler.get("TablePrefix") or ""
        update_tables = (crawler.get("SchemaChangePolicy") or {}).get("UpdateBehavior", "UPDATE_IN_DATABASE") != "LOG"
        try:
            for target in (crawler.get("Targets") or {}).get("S3Targets") or []:
                self.crawl_target(database, target["Path"], prefix, target.get("Exclusions") or (),
                                  crawler.get("Name", ""), update_tables)
        except CrawlError as exc:
            return False, str(exc)
        except ClientError as exc:
            return False, "%s: %s" % (exc.response["Error"]["Code"], exc.response["Error"]["Message"])
        return True, None

    def crawl_target(self, database, path, table_prefix="", exclusions=(), crawler_name="", update_table=True):
        """Catalog one S3 path as one table. Returns the table name, or None when the path
        holds no data files (nothing is created, as with Glue). Raises CrawlError, ClientError."""
        parsed = urlparse(path)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise CrawlError("crawler target %r is not an s3:// path" % path)
        bucket = parsed.netloc
        root = parsed.path.lstrip("/")
        if root and not root.endswith("/"):
            root += "/"
        table = table_name_for(path, table_prefix)

        files = [obj for obj in self._list(bucket, root)
                 if _is_data_key(obj["Key"][len(root):])
                 and not any(fnmatch.fnmatch(obj["Key"][len(root):], pattern) for pattern in exclusions)]
        if not files:
            LOG.info("crawl %s: no data files under %s", path, path)
            return None

        layouts = {}
        for obj in files:
            layouts.setdefault(self._partition_keys(obj["Key"][len(root):]), []).append(obj["Key"])
        if len(layouts) > 1:
            examples = "; ".join("%s (e.g. s3://%s/%s)" % (list(keys) or "unpartitioned", bucket, found[0])
                                 for keys, found in layouts.items())
            raise CrawlError("files under %s have different partition layouts: %s" % (path, examples))
        partition_keys = next(iter(layouts))

        columns = self._merged_columns(bucket, files, path)
        columns = [c for c in columns if c["Name"] not in partition_keys]
        location = "s3://%s/%s" % (bucket, root)
        self._put_table(database, table, columns, partition_keys, location, crawler_name, update_table)
        if partition_keys:
            self._add_partitions(database, table, bucket, root, files, columns, partition_keys)
        return table

    # -- reading --------------------------------------------------------------------------------

    def _list(self, bucket, prefix):
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            yield from page.get("Contents", [])

    @staticmethod
    def _partition_values(relative_key):
        """(key, value) pairs of the folders between the target and the file."""
        pairs = []
        for index, folder in enumerate(relative_key.split("/")[:-1]):
            if "=" in folder:
                key, value = folder.split("=", 1)
                pairs.append((key.lower(), unquote(value)))
            else:
                pairs.append(("partition_%d" % index, folder))
        return pairs

    def _partition_keys(self, relative_key):
        return tuple(key for key, _value in self._partition_values(relative_key))

    def _schema(self, bucket, obj):
        """The Arrow schema of one Parquet object (footer cache keyed by bucket, key, ETag)."""
        etag = obj["ETag"].strip('"')
        digest = hashlib.sha256(("%s\n%s\n%s" % (bucket, obj["Key"], etag)).encode()).hexdigest()
        cached = os.path.join(self.footer_dir, digest[:2], digest + ".arrow-schema")
        if os.path.exists(cached):
            with open(cached, "rb") as handle:
                return pa.ipc.read_schema(pa.py_buffer(handle.read()))
        uri = "s3://%s/%s" % (bucket, obj["Key"])
        try:
            schema = pq.ParquetFile(_S3RangeFile(self.s3, bucket, obj["Key"], obj["Size"], etag)).schema_arrow
        except (pa.ArrowException, OSError) as exc:
            raise CrawlError("%s is not a readable Parquet file (%s)" % (uri, exc)) from None
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        partial = "%s.%s.partial" % (cached, uuid.uuid4().hex)
        with open(partial, "wb") as handle:
            handle.write(schema.serialize().to_pybytes())
        os.replace(partial, cached)
        return schema

    def _merged_columns(self, bucket, files, path):
        """Glue columns of all files, in first-seen order. Raises CrawlError when two files
        give one column different types."""
        columns, seen = [], {}
        for obj in files:
            for arrow_field in self._schema(bucket, obj):
                name = arrow_field.name.lower()  # Hive column names are case-insensitive
                kind = glue_type(arrow_field.type)
                if name not in seen:
                    seen[name] = (kind, obj["Key"])
                    columns.append({"Name": name, "Type": kind})
                elif seen[name][0] != kind:
                    raise CrawlError(
                        "files under %s disagree on column %s: %s in s3://%s/%s, %s in s3://%s/%s"
                        % (path, name, seen[name][0], bucket, seen[name][1], kind, bucket, obj["Key"])
                    )
        return columns

    # -- catalog --------------------------------------------------------------------------------

    @staticmethod
    def _storage_descriptor(columns, location, parameters):
        return {
            "Columns": columns,
            "Location": location,
            "InputFormat": PARQUET_INPUT_FORMAT,
            "OutputFormat": PARQUET_OUTPUT_FORMAT,
            "Compressed": False,
            "NumberOfBuckets": -1,
            "SerdeInfo": {"SerializationLibrary": PARQUET_SERDE, "Parameters": {"serialization.format": "1"}},
            "BucketColumns": [],
            "SortColumns": [],
            "Parameters": dict(parameters),
            "StoredAsSubDirectories": False,
        }

    def _put_table(self, database, table, columns, partition_keys, location, crawler_name, update_table):
        parameters = {
            "classification": "parquet",
            "compressionType": "none",
            "typeOfData": "file",
            "CrawlerSchemaDeserializerVersion": "1.0",
            "CrawlerSchemaSerializerVersion": "1.0",
        }
        if crawler_name:
            parameters["UPDATED_BY_CRAWLER"] = crawler_name
        table_input = {
            "Name": table,
            "TableType": "EXTERNAL_TABLE",
            "Parameters": parameters,
            "PartitionKeys": [{"Name": key, "Type": "string"} for key in partition_keys],
            "StorageDescriptor": self._storage_descriptor(columns, location, parameters),
        }
        try:
            existing = self.glue.get_table(DatabaseName=database, Name=table)["Table"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "EntityNotFoundException":
                raise
            self.glue.create_table(DatabaseName=database, TableInput=table_input)
            LOG.info("crawl: created table %s.%s", database, table)
            return
        descriptor = existing.get("StorageDescriptor") or {}
        unchanged = (
            descriptor.get("Columns") == columns
            and descriptor.get("Location") == location
            and (existing.get("PartitionKeys") or []) == table_input["PartitionKeys"]
        )
        if unchanged:
            return
        if not update_table:
            LOG.info("crawl: schema of %s.%s changed; SchemaChangePolicy LOG leaves it", database, table)
            return
        self.glue.update_table(DatabaseName=database, TableInput=table_input)
        LOG.info("crawl: updated table %s.%s", database, table)

    def _existing_partitions(self, database, table):
        values = set()
        for page in self.glue.get_paginator("get_partitions").paginate(DatabaseName=database, TableName=table):
            values.update(tuple(p["Values"]) for p in page["Partitions"])
        return values

    def _add_partitions(self, database, table, bucket, root, files, columns, partition_keys):
        wanted = {}
        for obj in files:
            relative = obj["Key"][len(root):]
            pairs = self._partition_values(relative)
            values = tuple(value for _key, value in pairs)
            folders = "/".join(relative.split("/")[: len(pairs)])
            wanted.setdefault(values, "s3://%s/%s%s/" % (bucket, root, folders))
        missing = sorted(set(wanted) - self._existing_partitions(database, table))
        parameters = {"classification": "parquet", "compressionType": "none", "typeOfData": "file"}
        for start in range(0, len(missing), _PARTITION_BATCH):
            batch = missing[start:start + _PARTITION_BATCH]
            response = self.glue.batch_create_partition(
                DatabaseName=database,
                TableName=table,
                PartitionInputList=[
                    {"Values": list(values), "Parameters": dict(parameters),
                     "StorageDescriptor": self._storage_descriptor(columns, wanted[values], parameters)}
                    for values in batch
                ],
            )
            errors = [e for e in response.get("Errors", [])
                      if e.get("ErrorDetail", {}).get("ErrorCode") != "AlreadyExistsException"]
            if errors:
                first = errors[0]
                raise CrawlError("cannot register partition %s of %s.%s: %s" % (
                    first.get("PartitionValues"), database, table, first.get("ErrorDetail", {}).get("ErrorMessage")))
        if missing:
            LOG.info("crawl: registered %d partition(s) of %s.%s", len(missing), database, table)
