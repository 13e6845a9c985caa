"""The processed zone's Apache Iceberg table, as data: columns, partitioning, table properties,
and the maintenance statements Athena runs on it.

Stdlib only (packaged into the Lambda and shipped to Glue in the jobs' zip). The deploy turns
this into a table with pyiceberg's Glue catalog (deploy/lake_table.py), the normalize job commits
to it, the local Athena engine reads it through the same catalog.

Hidden partitioning: the table is partitioned by ``month(shipping_date)``, a transform Iceberg
computes from the column itself. Nobody registers partitions and no crawler reads the processed
zone; a query filtering on ``shipping_date`` is pruned to its months from the table's metadata.
"""
from collections import namedtuple

from chalicelib import schema

# (name, Iceberg type, doc). Field ids are the positions, from 1: stable, since columns are only
# ever added at the end (Iceberg's schema evolution keeps old files readable). Every column is
# optional: the jobs check the rules, and a required column would bind every future writer.
Column = namedtuple("Column", "name iceberg_type doc")

_ICEBERG_TYPES = {"int64": "long", "date32": "date", "string": "string", "float64": "double"}

SOURCE_KEY_FIELD = "source_key"
SOURCE_VERSION_FIELD = "source_version_id"

COLUMNS = tuple(
    Column(f.name, _ICEBERG_TYPES[f.arrow_type], "record field %s" % f.name)
    for f in schema.processed_fields()
) + (
    Column(schema.SOURCE_ID_FIELD, "string",
           "the landing object version's id (chalicelib.naming.source_id)"),
    Column(SOURCE_KEY_FIELD, "string",
           "the landing object, s3://bucket/key: a new version of it replaces these rows"),
    Column(SOURCE_VERSION_FIELD, "string",
           "the landing object's S3 versionId (null for an unversioned object)"),
)
COLUMN_NAMES = tuple(c.name for c in COLUMNS)

# (source column, transform, partition field name)
PARTITION_SPEC = ((schema.PARTITION_FIELD, "month", "%s_month" % schema.PARTITION_FIELD),)

# Per-file commits and per-file queries look rows up by source: exact (untruncated) column
# statistics on those columns let a delete drop whole files from metadata alone, and let a
# query skip every other source's files. Iceberg's default truncates strings to 16 characters,
# and every landing key shares a longer prefix.
FULL_METRICS_COLUMNS = (schema.SOURCE_ID_FIELD, SOURCE_KEY_FIELD, SOURCE_VERSION_FIELD)

FORMAT_VERSION = 2
# Athena's OPTIMIZE rewrites a partition's files when it holds at least this many small ones
# (Athena's table property of that name, default 5).
OPTIMIZE_MIN_FILES = 5
MANIFEST_MERGE_COUNT = 8
# Data files of about this size (Athena's and Iceberg's default is 512 MB).
TARGET_FILE_SIZE_BYTES = 128 * 1024 * 1024


def table_properties(snapshot_retention_seconds):
    """The Iceberg table properties (all strings). ``snapshot_retention_seconds``: VACUUM expires
    snapshots older than this (Athena's ``vacuum_max_snapshot_age_seconds``), keeping at least one."""
    properties = {
        "format-version": str(FORMAT_VERSION),
        "write.format.default": "parquet",
        "write.parquet.compression-codec": "zstd",
        "write.target-file-size-bytes": str(TARGET_FILE_SIZE_BYTES),
        "write.metadata.delete-after-commit.enabled": "true",
        # Each commit adds a manifest; past this many, a commit merges them into one (per 8 MB),
        # so planning a commit or a query reads a bounded number of manifests, not one per file.
        "commit.manifest-merge.enabled": "true",
        "commit.manifest.min-count-to-merge": str(MANIFEST_MERGE_COUNT),
        "write.metadata.previous-versions-max": "100",
        "history.expire.max-snapshot-age-ms": str(int(snapshot_retention_seconds) * 1000),
        "history.expire.min-snapshots-to-keep": "1",
        # Athena reads its own maintenance settings from the table's properties.
        "vacuum_max_snapshot_age_seconds": str(int(snapshot_retention_seconds)),
        "vacuum_min_snapshots_to_keep": "1",
        "optimize_rewrite_data_file_threshold": str(OPTIMIZE_MIN_FILES),
    }
    for name in FULL_METRICS_COLUMNS:
        properties["write.metadata.metrics.column.%s" % name] = "full"
    return properties


def maintenance_statements(database, table):
    """The SQL a maintenance run sends to Athena, in order: compact small files (bin packing),
    then expire old snapshots and remove the files nothing references any more."""
    # Unquoted, as Athena's documentation writes them: stage names make plain identifiers.
    qualified = "%s.%s" % (database, table)
    return (
        "OPTIMIZE %s REWRITE DATA USING BIN_PACK" % qualified,
        "VACUUM %s" % qualified,
    )
