"""Identifiers derived from a landing object (bucket, key, etag, version id).

Everything downstream is keyed by these, so a redelivered S3 event maps to the same execution
name (Step Functions refuses a second start: a no-op) and a re-run replaces its own outputs.
"""
import hashlib
import re

from chalicelib.resources import MANIFEST_PREFIX, PROCESSED_PREFIX, QUARANTINE_PREFIX, RAW_PREFIX

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
EXECUTION_NAME_MAX = 80  # Step Functions' limit


def source_id(bucket, key, etag, version_id=None):
    """A stable 20-hex-digit id for one version of one landing object.

    With a ``version_id`` (a versioned landing bucket) every version is its own source, even
    when a re-upload has the same bytes (and ETag): the newest version of a key wins, so a
    re-upload must run again. Without one, (bucket, key, etag) as before.
    """
    etag = (etag or "").strip('"')
    text = "%s\n%s\n%s" % (bucket, key, etag)
    if version_id:
        text += "\n" + version_id
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def execution_name(bucket, key, etag, version_id=None):
    """``<readable part of the key>-<source id>``, at most 80 characters of [A-Za-z0-9_-]."""
    sid = source_id(bucket, key, etag, version_id)
    stem = key.rsplit("/", 1)[-1]
    for suffix in (".gz", ".json", ".jsonl", ".ndjson"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    stem = _NAME_UNSAFE.sub("-", stem).strip("-") or "object"
    room = EXECUTION_NAME_MAX - len(sid) - 1
    return "%s-%s" % (stem[:room].rstrip("-") or "object", sid)


_PRODUCER = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
NO_PRODUCER = "none"


def producer(key):
    """The producer of a landing object: the first folder of its key under ``incoming/``
    (``incoming/<producer>/...``), the metrics' ``Producer`` dimension.

    A file directly under incoming/, or under a folder that does not start with a letter (the
    generator's date folders ``incoming/YYYY/...``) or is longer than 64 characters, has none:
    ``"none"``. Each producer is a CloudWatch series of its own, so the value stays short.
    """
    parts = key.split("/")
    if len(parts) >= 3 and _PRODUCER.match(parts[1]):
        return parts[1]
    return NO_PRODUCER


def output_keys(sid):
    """Keys in the lake bucket that the pipeline writes for one source object.

    ``raw_catalog`` and ``processed_catalog`` hold each job's catalog decision (does the stage's
    table describe the job's output, or is a crawl needed: glue/catalog.py).
    """
    return {
        "raw": "%s%s.parquet" % (RAW_PREFIX, sid),
        "quarantine": "%s%s.jsonl" % (QUARANTINE_PREFIX, sid),
        "manifest": "%s%s.json" % (MANIFEST_PREFIX, sid),
        "raw_catalog": "%s%s.raw-catalog.json" % (MANIFEST_PREFIX, sid),
        "processed_catalog": "%s%s.processed-catalog.json" % (MANIFEST_PREFIX, sid),
        "processed_root": PROCESSED_PREFIX,
    }
