"""A pyiceberg FileIO over boto3, for the deploy's metadata-only work on the Iceberg table.

pyiceberg's default S3 FileIO is pyarrow's S3 filesystem, which talks to S3 itself (its own HTTP
client, endpoint and credential chain). The deploy creates the table and changes its properties
with whatever boto3 session it was given (a profile, an assumed role, an emulator's endpoint,
moto's in-process mock in tests): this FileIO makes pyiceberg read and write the table's
metadata files through that same boto3 stack. Metadata files are small, so whole-object reads
are fine. Named to pyiceberg by ``py-io-impl``.
"""
import io
import os
import threading
from urllib.parse import urlparse

import boto3
from pyiceberg.io import FileIO, InputFile, InputStream, OutputFile, OutputStream


def _split(location):
    parsed = urlparse(location)
    if parsed.scheme not in ("s3", "s3a", "s3n"):
        raise ValueError("not an S3 location: %r" % location)
    return parsed.netloc, parsed.path.lstrip("/")


class _Input(InputFile):
    def __init__(self, location, s3):
        super().__init__(location)
        self._s3 = s3

    def __len__(self):
        bucket, key = _split(self.location)
        return self._s3.head_object(Bucket=bucket, Key=key)["ContentLength"]

    def exists(self):
        try:
            len(self)
            return True
        except self._s3.exceptions.ClientError:
            return False

    def open(self, seekable=True):
        bucket, key = _split(self.location)
        try:
            body = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except self._s3.exceptions.NoSuchKey:
            raise FileNotFoundError(self.location)
        return _Stream(body)


class _Stream(io.BytesIO, InputStream):
    pass


class _Writer(io.BytesIO, OutputStream):
    def __init__(self, s3, bucket, key):
        super().__init__()
        self._target = (s3, bucket, key)

    def close(self):
        if not self.closed:
            s3, bucket, key = self._target
            s3.put_object(Bucket=bucket, Key=key, Body=self.getvalue())
        super().close()


class _Output(OutputFile):
    def __init__(self, location, s3):
        super().__init__(location)
        self._s3 = s3

    def __len__(self):
        return len(self.to_input_file())

    def exists(self):
        return self.to_input_file().exists()

    def to_input_file(self):
        return _Input(self.location, self._s3)

    def create(self, overwrite=False):
        if not overwrite and self.exists():
            raise FileExistsError(self.location)
        bucket, key = _split(self.location)
        return _Writer(self._s3, bucket, key)


_clients = {}
_clients_lock = threading.Lock()


def _client(endpoint_url, region, access_key, secret_key, session_token):
    """One S3 client per endpoint, region, credentials and CA bundle for the process: pyiceberg
    makes a FileIO for every table load and commit, and each new client parsed botocore's S3
    model again (about 2 s of a local deploy's 4.8 s). A session of its own, not boto3's default
    one: that is made once per process and keeps the environment it was born in (chalice.test
    swaps os.environ for a copy while it runs an app, so a default session made there never sees
    a later AWS_CA_BUNDLE or endpoint)."""
    key = (endpoint_url, region, access_key or os.environ.get("AWS_ACCESS_KEY_ID"), secret_key, session_token,
           os.environ.get("AWS_CA_BUNDLE"))
    with _clients_lock:
        if key not in _clients:
            _clients[key] = boto3.session.Session().client(
                "s3", endpoint_url=endpoint_url, region_name=region, aws_access_key_id=access_key,
                aws_secret_access_key=secret_key, aws_session_token=session_token)
        return _clients[key]


class Boto3FileIO(FileIO):
    """pyiceberg FileIO on a boto3 S3 client made from ``s3.endpoint``/``s3.region``/credentials
    properties (or the default chain)."""

    def __init__(self, properties=None):
        super().__init__(properties or {})
        p = self.properties
        self._s3 = _client(p.get("s3.endpoint") or None, p.get("s3.region") or None,
                           p.get("s3.access-key-id") or None, p.get("s3.secret-access-key") or None,
                           p.get("s3.session-token") or None)

    def new_input(self, location):
        return _Input(location, self._s3)

    def new_output(self, location):
        return _Output(location, self._s3)

    def delete(self, location):
        bucket, key = _split(location if isinstance(location, str) else location.location)
        self._s3.delete_object(Bucket=bucket, Key=key)
