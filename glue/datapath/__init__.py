"""The data path of the json-to-parquet job: NDJSON lines -> typed raw Parquet + quarantine.

- ``blocks``: the file read once, in blocks of whole lines, with pread into job-owned buffers;
- ``provers``: the C prover and the DuckDB prover, behind one interface;
- ``judge``: the exact rules for the lines a prover cannot vouch for, with the reason;
- ``writer``: the one writer of the raw Parquet file and of the quarantine file;
- ``rules_sql``: the rules of chalicelib.schema as DuckDB SQL, derived from its data;
- ``pipeline``: ``convert``, which joins them.

Shipped to Glue as the package ``datapath`` in the ``--extra-py-files`` zip, beside ``jobio``.
"""
