"""The processed zone's Iceberg table (chalicelib.lake_table), created with pyiceberg's Glue catalog.

A stage deployed before the processed zone became an Iceberg table has a Hive-style ``processed``
table (crawled, one partition per shipping date) and its files under ``processed/``. ``up``
replaces it: the old table and its files go (derived data: the raw zone is the source of truth),
the Iceberg table is created in their place, and the processed rows are rebuilt from the raw zone,
one normalize job run per raw file, in the order the runs first happened (their manifests), so the
newest run of a landing key wins as it did before. docs/DEPLOY.md describes it.
"""
import json
import time

from chalicelib import lake_table
from chalicelib.naming import output_keys
from chalicelib.resources import MANIFEST_PREFIX, PROCESSED_PREFIX, RAW_PREFIX
from deploy.context import CREATED, UNCHANGED, UPDATED
from deploy.errors import DeployError, has_code

KIND = "iceberg table"
_REBUILD_POLL_SECONDS = 2
_REBUILD_TIMEOUT_SECONDS = 3600
_RUN_DONE = ("SUCCEEDED", "FAILED", "STOPPED", "TIMEOUT", "ERROR")
# Set while a rebuild from raw/ has not finished: the next `up` runs it again (each run replaces
# its key's rows, so starting over is safe).
REBUILD_PENDING = "shipping-etl.rebuild-pending"


def iceberg_schema():
    """The table's pyiceberg Schema (field ids from 1, in chalicelib.lake_table.COLUMNS order)."""
    from pyiceberg.schema import Schema
    from pyiceberg.types import DateType, DoubleType, LongType, NestedField, StringType

    types = {"long": LongType, "date": DateType, "string": StringType, "double": DoubleType}
    return Schema(*[NestedField(field_id=index, name=column.name, field_type=types[column.iceberg_type](),
                                required=False, doc=column.doc)
                    for index, column in enumerate(lake_table.COLUMNS, 1)])


def partition_spec(schema):
    """The table's pyiceberg PartitionSpec: chalicelib.lake_table.PARTITION_SPEC."""
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import MonthTransform

    transforms = {"month": MonthTransform}
    return PartitionSpec(*[
        PartitionField(source_id=schema.find_field(source).field_id, field_id=1000 + index,
                       transform=transforms[transform](), name=name)
        for index, (source, transform, name) in enumerate(lake_table.PARTITION_SPEC)])


def catalog_for(session, region):
    """pyiceberg's Glue catalog on ``session``'s Glue client, reading and writing the table's
    metadata through the same session's S3 client (deploy/iceberg_io.py)."""
    from pyiceberg.catalog.glue import GlueCatalog

    glue = session.client("glue", region_name=region)
    s3 = session.client("s3", region_name=region)
    properties = {"py-io-impl": "deploy.iceberg_io.Boto3FileIO", "s3.region": region}
    if "amazonaws.com" not in s3.meta.endpoint_url:  # an emulator
        properties["s3.endpoint"] = s3.meta.endpoint_url
    credentials = session.get_credentials()
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        properties.update({"s3.access-key-id": frozen.access_key, "s3.secret-access-key": frozen.secret_key})
        if frozen.token:
            properties["s3.session-token"] = frozen.token
    return GlueCatalog("glue", client=glue, **properties)


def table_location(resources):
    return resources.lake_uri(PROCESSED_PREFIX).rstrip("/")


def _glue_table(glue, database, name):
    try:
        return glue.get_table(DatabaseName=database, Name=name)["Table"]
    except Exception as exc:
        if has_code(exc, "EntityNotFoundException"):
            return None
        raise


def is_iceberg(glue_table):
    return ((glue_table or {}).get("Parameters") or {}).get("table_type", "").upper() == "ICEBERG"


def ensure_table(ctx, settings, catalog=None, rebuild=True):
    """Create the Iceberg table, replacing a Hive-style one (then rebuilt from the raw zone when
    ``rebuild``), or bring its properties up to date. Returns the Change."""
    resources = ctx.resources
    glue = ctx.client("glue")
    database, name = resources.glue_database, resources.processed_table
    current = _glue_table(glue, database, name)
    wanted = lake_table.table_properties(settings.snapshot_retention_seconds)
    if current is not None and is_iceberg(current):
        if ctx.dry_run:
            return ctx.record(UNCHANGED, KIND, "%s.%s" % (database, name))
        catalog = catalog or catalog_for(ctx.session, resources.region)
        table = catalog.load_table((database, name))
        if table.properties.get(REBUILD_PENDING) == "true":
            runs = rebuild_from_raw(ctx, settings)
            with table.transaction() as transaction:
                transaction.remove_properties(REBUILD_PENDING)
            return ctx.record(UPDATED, KIND, "%s.%s" % (database, name),
                              "finished the rebuild from raw/ (%d normalize run(s))" % runs)
        changed = sorted(k for k, v in wanted.items() if table.properties.get(k) != v
                         and k != "format-version")
        if not changed:
            return ctx.record(UNCHANGED, KIND, "%s.%s" % (database, name))
        with table.transaction() as transaction:
            transaction.set_properties({k: wanted[k] for k in changed})
        return ctx.record(UPDATED, KIND, "%s.%s" % (database, name), ", ".join(changed))
    replacing = current is not None
    if ctx.dry_run:
        return ctx.record(CREATED, KIND, "%s.%s" % (database, name),
                          "replacing the Hive-style table, rebuilt from raw/" if replacing else "")
    if replacing:
        glue.delete_table(DatabaseName=database, Name=name)
        _delete_prefix(ctx.client("s3"), resources.lake_bucket, PROCESSED_PREFIX)
    catalog = catalog or catalog_for(ctx.session, resources.region)
    schema = iceberg_schema()
    properties = dict(wanted, **({REBUILD_PENDING: "true"} if replacing else {}))
    table = catalog.create_table((database, name), schema=schema, location=table_location(resources),
                                 partition_spec=partition_spec(schema), properties=properties)
    detail = ""
    if replacing:
        detail = "replaced the Hive-style table"
        if rebuild:
            runs = rebuild_from_raw(ctx, settings)
            with catalog.load_table((database, name)).transaction() as transaction:
                transaction.remove_properties(REBUILD_PENDING)
            detail += "; rebuilt from raw/ by %d normalize run(s)" % runs
    return ctx.record(CREATED, KIND, "%s.%s" % (database, name), detail)


def remove_processed_crawler(ctx):
    """Deletes the processed zone's crawler of stages deployed before the Iceberg table (which
    needs none); reports nothing on a stage that never had one. Returns the Change or None."""
    from deploy import glue as glue_resources

    try:
        ctx.client("glue").get_crawler(Name=ctx.resources.processed_crawler)
    except Exception as exc:
        if has_code(exc, "EntityNotFoundException"):
            return None
        raise
    return glue_resources.delete_crawler(ctx, ctx.resources.processed_crawler)


def _delete_prefix(s3, bucket, prefix):
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def rebuild_sources(s3, bucket):
    """``[(source_id, source_key, version_id)]`` of every raw file with a manifest, oldest run
    first (the manifest's LastModified): the order in which normalize committed them."""
    raw_ids = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=RAW_PREFIX):
        for obj in page.get("Contents", []):
            stem = obj["Key"][len(RAW_PREFIX):]
            if stem.endswith(".parquet") and "/" not in stem:
                raw_ids.add(stem[: -len(".parquet")])
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=MANIFEST_PREFIX):
        for obj in page.get("Contents", []):
            stem = obj["Key"][len(MANIFEST_PREFIX):]
            if stem.endswith(".json") and stem[: -len(".json")] in raw_ids:
                found.append((obj["LastModified"], stem[: -len(".json")], obj["Key"]))
    sources = []
    for _modified, source_id, key in sorted(found):
        summary = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        sources.append((source_id, summary.get("source_key") or summary.get("source"),
                        summary.get("source_version_id")))
    return sources


def rebuild_from_raw(ctx, settings, sleep=time.sleep):
    """Runs the normalize job once per raw file (rebuild_sources' order, one at a time: each
    run's commit must see the previous one's). Returns the number of runs; raises DeployError
    naming a run that failed."""
    resources = ctx.resources
    glue, s3 = ctx.client("glue"), ctx.client("s3")
    sources = rebuild_sources(s3, resources.lake_bucket)
    if sources:
        ctx.say("rebuilding %s.%s from %d raw file(s)" % (resources.glue_database, resources.processed_table,
                                                          len(sources)))
    for source_id, source_key, version_id in sources:
        keys = output_keys(source_id)
        arguments = {
            "--source_uri": resources.lake_uri(keys["raw"]),
            "--database": resources.glue_database,
            "--table": resources.processed_table,
            "--source_id": source_id,
            "--summary_uri": resources.lake_uri(keys["manifest"]),
            "--region": resources.region,
        }
        if source_key:
            arguments["--source_key"] = source_key
        if version_id:
            arguments["--source_version_id"] = version_id
        run_id = glue.start_job_run(JobName=resources.normalize_job, Arguments=arguments)["JobRunId"]
        waited = 0.0
        while True:
            run = glue.get_job_run(JobName=resources.normalize_job, RunId=run_id)["JobRun"]
            if run["JobRunState"] in _RUN_DONE:
                break
            if waited > _REBUILD_TIMEOUT_SECONDS:
                raise DeployError("normalize run %s rebuilding %s is still %s after %d s: run `deploy up` "
                                  "again once it ends" % (run_id, source_id, run["JobRunState"], waited))
            sleep(_REBUILD_POLL_SECONDS)
            waited += _REBUILD_POLL_SECONDS
        if run["JobRunState"] != "SUCCEEDED":
            raise DeployError("normalize run %s rebuilding %s from raw/ ended %s: %s. Fix it and run "
                              "`deploy up` again (the rebuild starts over)."
                              % (run_id, source_id, run["JobRunState"], run.get("ErrorMessage")))
    return len(sources)
