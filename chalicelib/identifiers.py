"""The shapes of the identifiers that cross the pipeline's boundaries, defined once.

Each is checked where it enters: the S3 trigger and the reconciler (keys, version ids), the
state machine (a Choice state before any job runs), the Glue jobs' argument parsing, the app's
routes (execution names) and the local stack. A bad one fails there with a message naming it.
Shipped to the Glue jobs in their library zip: stdlib only, Python 3.9.
"""
import re

# chalicelib.naming.source_id makes 20 lower-case hex digits; accepted is any token that is safe
# in an S3 key, a file name and an SQL string literal (a job run by hand may name its own).
SOURCE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Step Functions' execution names: 1-80 characters; the project's own use [A-Za-z0-9_-] only.
EXECUTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
# S3 version ids are opaque, URL-safe tokens (AWS: up to 1024 characters; moto: UUIDs).
VERSION_ID = re.compile(r"^[A-Za-z0-9._+=/-]{1,1024}$")
# A landing key: under incoming/, at most S3's 1024 bytes, no control characters, no ".."
# segment and no backslash (keys become local paths in the local stack and text in SQL-free logs).
_KEY_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")
KEY_MAX_BYTES = 1024


class InvalidIdentifier(ValueError):
    """An identifier that does not have its documented shape."""


def _short(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def source_id(value):
    """``value`` when it is a source id (1-64 of A-Z a-z 0-9 _ -); raises InvalidIdentifier."""
    if not isinstance(value, str) or not SOURCE_ID.match(value):
        raise InvalidIdentifier("source id must be 1-64 characters of A-Z a-z 0-9 _ -, got %s" % _short(value))
    return value


def execution_name(value):
    """``value`` when it is an execution name of this pipeline; raises InvalidIdentifier."""
    if not isinstance(value, str) or not EXECUTION_NAME.match(value):
        raise InvalidIdentifier("execution name must be 1-80 characters of A-Z a-z 0-9 _ -, got %s"
                                % _short(value))
    return value


def version_id(value):
    """``value`` when it is empty/None (an unversioned object) or an S3 version id; raises
    InvalidIdentifier."""
    if value in (None, ""):
        return value
    if not isinstance(value, str) or not VERSION_ID.match(value):
        raise InvalidIdentifier("S3 version id must be 1-1024 URL-safe characters, got %s" % _short(value))
    return value


def object_key(value, prefix=""):
    """``value`` when it is an object key under ``prefix`` naming an object (not a folder), with
    no control character, backslash or ``..`` segment; raises InvalidIdentifier."""
    if not isinstance(value, str) or not value:
        raise InvalidIdentifier("object key must be a non-empty string, got %s" % _short(value))
    problem = None
    if prefix and not value.startswith(prefix):
        problem = "is not under %s" % prefix
    elif value.endswith("/") or value == prefix:
        problem = "names a folder, not an object"
    elif len(value.encode("utf-8")) > KEY_MAX_BYTES:
        problem = "is longer than %d bytes" % KEY_MAX_BYTES
    elif _KEY_FORBIDDEN.search(value):
        problem = "holds a control character or a backslash"
    elif ".." in value.split("/"):
        problem = "holds a '..' segment"
    if problem:
        raise InvalidIdentifier("object key %s %s" % (_short(value), problem))
    return value


def s3_uri(value):
    """``value`` when it is ``s3://bucket/key`` with a valid bucket name and key; raises
    InvalidIdentifier."""
    if not isinstance(value, str) or not value.startswith("s3://"):
        raise InvalidIdentifier("expected an s3://bucket/key URI, got %s" % _short(value))
    bucket, _, key = value[len("s3://"):].partition("/")
    if not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", bucket):
        raise InvalidIdentifier("bucket name %s is not an S3 bucket name" % _short(bucket))
    object_key(key)
    return value
