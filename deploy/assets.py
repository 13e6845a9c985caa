"""The files Glue runs: the two job scripts and the ``--extra-py-files`` zip (and the C module's
wheel, built by deploy.native_wheel), uploaded to the lake.

Each upload carries the SHA-256 of its content as object metadata; a file whose hash is already
there is not uploaded again, so ``up`` reports it unchanged, and a changed script is re-uploaded.
The zip is built byte-for-byte reproducibly (fixed timestamps and order) for the same reason.
"""
import hashlib
import io
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from chalicelib import glue_jobs
from chalicelib.resources import GLUE_ASSETS_PREFIX
from deploy.buckets import delete_objects
from deploy.context import ABSENT, CREATED, DELETED, UNCHANGED, UPDATED
from deploy.errors import DeployError, has_code

KIND = "glue asset"
HASH_METADATA = "sha256"
_ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can hold: no build time leaks in
# Uploads at once. The wheels Glue installs are about 100 MB in all (pyarrow alone 40 MB); one
# after another, they were a third of a local deploy (1.5 s of 4.3 s).
UPLOADS_AT_ONCE = 4


def _read(project_dir, repo_path):
    path = Path(project_dir) / repo_path
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DeployError(
            "%s not found under %s: run from the repository root or pass --project-dir."
            % (repo_path, project_dir)
        ) from None


def build_library_zip(project_dir):
    """The ``--extra-py-files`` zip (chalicelib's schema, jobio top-level) as bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, repo_path in sorted(glue_jobs.LIBRARY_ZIP_MEMBERS):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIMESTAMP)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, _read(project_dir, repo_path))
    return buffer.getvalue()


def asset_payloads(project_dir):
    """``{key in the lake bucket: bytes}`` of everything Glue needs; raises DeployError if a file is missing."""
    payloads = {key: _read(project_dir, path) for key, path in sorted(glue_jobs.asset_sources().items())}
    payloads[glue_jobs.library_zip_key()] = build_library_zip(project_dir)
    return payloads


def _uploaded_hash(s3, bucket, key):
    """The hash stored with the object; None when absent. Raises other errors."""
    try:
        return s3.head_object(Bucket=bucket, Key=key).get("Metadata", {}).get(HASH_METADATA)
    except Exception as exc:
        if has_code(exc, "404", "NoSuchKey", "NoSuchBucket", "NotFound"):
            return None
        raise


def _put_if_changed(s3, bucket, key, body, dry_run):
    """Uploads ``body`` unless the same content is there; returns CREATED, UPDATED or UNCHANGED."""
    digest = hashlib.sha256(body).hexdigest()
    current = _uploaded_hash(s3, bucket, key)
    if current == digest:
        return UNCHANGED
    if not dry_run:
        content_type = "application/zip" if key.endswith((".zip", ".whl")) else "text/x-python"
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type,
                      Metadata={HASH_METADATA: digest})
    return CREATED if current is None else UPDATED


def ensure_assets(ctx, bucket, payloads):
    """Uploads every ``{key: body}`` of ``payloads`` to ``s3://bucket/key`` unless the same content
    is there, UPLOADS_AT_ONCE at a time (boto3's clients are thread-safe). The changes are recorded
    in key order; returns them. The first failed upload is raised, and the ones not begun yet are
    not begun."""
    s3 = ctx.client("s3")
    keys = sorted(payloads)
    with ThreadPoolExecutor(max_workers=UPLOADS_AT_ONCE) as pool:
        actions = [pool.submit(_put_if_changed, s3, bucket, key, payloads[key], ctx.dry_run) for key in keys]
        try:
            return [ctx.record(action.result(), KIND, "s3://%s/%s" % (bucket, key))
                    for key, action in zip(keys, actions)]
        except BaseException:
            for action in actions:
                action.cancel()
            raise


def delete_assets(ctx, bucket):
    """Remove everything under ``glue-assets/`` of the lake bucket; returns the Change."""
    uri = "s3://%s/%s" % (bucket, GLUE_ASSETS_PREFIX)
    count = delete_objects(ctx, bucket, GLUE_ASSETS_PREFIX)
    if count == 0:
        return ctx.record(ABSENT, KIND, uri)
    return ctx.record(DELETED, KIND, uri, "%d object versions" % count)
