"""The normalize job's pyiceberg FileIO: pyarrow's, except that files are written with one
PutObject each and Iceberg's metadata files are read with one GetObject each.

pyarrow's S3 filesystem (pyarrow 20, the version Glue installs) writes every object as a
multipart upload (create, one part, complete) and pyiceberg then asks its size with a HEAD: four
requests per data file, manifest, manifest list and metadata file, and reading a metadata file
is a HEAD and a GET. A two-year file commits ~25 data files and each commit attempt writes
three metadata files: when twenty jobs commit to the table at once those requests are most of
what an attempt waits on, and the longer an attempt takes the likelier it loses the race
(glue/lake_commit.py). Here a written file is spooled (in memory up to SPOOL_BYTES, then on
disk) and uploaded by boto3 when it is closed (a single PutObject below boto3's multipart
threshold), and its size is the bytes written. Data files (Parquet) are still read by pyarrow,
which reads only the byte ranges a scan needs.

Named to pyiceberg by the ``py-io-impl`` catalog property (lake_commit.load_catalog).
"""
import io
import os
import tempfile
import threading

from pyiceberg.io import InputFile, InputStream, OutputFile, OutputStream
from pyiceberg.io.pyarrow import PyArrowFileIO

import jobio

# A written file stays in memory up to this size (pyiceberg writes up to four at once).
SPOOL_BYTES = 16 * 1024 * 1024
# boto3 uploads larger files in parts of this size, one part at a time.
PART_BYTES = 64 * 1024 * 1024


class _MetadataFile(InputFile):
    """A metadata file (JSON, Avro), read whole with one GetObject."""

    def __init__(self, location, s3):
        super().__init__(location)
        self._s3 = s3

    def __len__(self):
        bucket, key = jobio.split_s3(self.location)
        return self._s3.head_object(Bucket=bucket, Key=key)["ContentLength"]

    def exists(self):
        from botocore.exceptions import ClientError

        try:
            len(self)
            return True
        except ClientError:
            return False

    def open(self, seekable=True):
        bucket, key = jobio.split_s3(self.location)
        try:
            body = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except self._s3.exceptions.NoSuchKey:
            raise FileNotFoundError(self.location)
        return _BytesStream(body)


class _BytesStream(io.BytesIO, InputStream):
    pass


class _SpooledUpload(OutputStream):
    """Collects the bytes written; ``close()`` uploads them. Leaving a ``with`` block on an
    exception uploads nothing."""

    def __init__(self, output):
        self._output = output
        self._file = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)

    def write(self, data):
        return self._file.write(data)

    def tell(self):
        return self._file.tell()

    def flush(self):
        pass

    @property
    def closed(self):
        return self._file.closed

    def close(self):
        if self._file.closed:
            return
        try:
            size = self._file.tell()
            self._file.seek(0)
            self._output._upload(self._file, size)
        finally:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is not None:
            self._file.close()
        else:
            self.close()


class _UploadedFile(OutputFile):
    def __init__(self, location, s3, input_file):
        super().__init__(location)
        self._s3 = s3
        self._input_file = input_file
        self._size = None

    def _upload(self, fileobj, size):
        from boto3.s3.transfer import TransferConfig

        bucket, key = jobio.split_s3(self.location)
        self._s3.upload_fileobj(fileobj, bucket, key, Config=TransferConfig(
            multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES, use_threads=False))
        self._size = size

    def __len__(self):
        return self._size if self._size is not None else len(self._input_file)

    def exists(self):
        return self._input_file.exists()

    def to_input_file(self):
        return self._input_file

    def create(self, overwrite=False):
        if not overwrite and self.exists():
            raise FileExistsError(self.location)
        return _SpooledUpload(self)


_clients = {}
_clients_lock = threading.Lock()


def client(endpoint_url, region):
    """One S3 client per endpoint and region for the process: pyiceberg makes a FileIO for every
    table load and commit (five and more per commit attempt), and a new boto3 client costs a
    read of botocore's service model and a new connection."""
    from botocore.config import Config

    key = (endpoint_url, region, os.environ.get("AWS_ACCESS_KEY_ID"))
    with _clients_lock:
        if key not in _clients:
            _clients[key] = jobio.aws_client(
                "s3", endpoint_url=endpoint_url, region_name=region, config=Config(max_pool_connections=16))
        return _clients[key]


class BotoFileIO(PyArrowFileIO):
    """pyarrow's FileIO with writes (and metadata reads) through one boto3 S3 client, made from
    the ``s3.endpoint``/``s3.region`` properties and the default credential chain."""

    def __init__(self, properties=None):
        super().__init__(properties or {})
        self._s3 = client(self.properties.get("s3.endpoint") or None, self.properties.get("s3.region") or None)

    def new_input(self, location):
        # Data files are read by pyarrow (ranges); a table outside S3 (file://, as the bench's) too.
        if location.endswith(".parquet") or not jobio.is_s3(location):
            return super().new_input(location)
        return _MetadataFile(location, self._s3)

    def new_output(self, location):
        if not jobio.is_s3(location):
            return super().new_output(location)
        return _UploadedFile(location, self._s3, self.new_input(location))
