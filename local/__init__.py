"""The embedded local stack: moto in-process plus the adapters that run what moto only records.

- ``embedded``: starts moto's server on a loopback port and installs the adapters.
- ``moto_hooks``: the one module that reaches into moto's internals (moto is pinned exactly).
- ``glue_runner``: runs a Glue job's script, as deployed to S3, in a subprocess.
- ``crawler``: a crawler stand-in that catalogs Parquet schemas and hive partitions.
- ``athena_engine``: runs Athena SQL on DuckDB over the files the Glue catalog points at.

Importing this package imports nothing heavy; each module loads its own dependencies.
"""
from local import tls as _tls

# Before anything loads pyarrow.fs (see local.tls.trust_early).
_tls.trust_early()
