"""glue/lake_io.BotoFileIO (the normalize job's FileIO) with a table outside S3."""
import os
import sys

GLUE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "glue")
if GLUE_DIR not in sys.path:
    sys.path.insert(0, GLUE_DIR)

import lake_io  # noqa: E402


def test_a_table_on_local_disk_is_written_and_read_without_s3(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    io = lake_io.BotoFileIO({"s3.region": "us-east-1"})
    io._s3 = None  # any S3 call would fail: a file:// location never reaches it
    for name in ("metadata/00001-x.metadata.json", "data/month=2024-01/part-0.parquet"):
        location = "file://%s/%s" % (tmp_path, name)
        with io.new_output(location).create() as out:
            out.write(b"written " + name.encode())
        assert io.new_input(location).open().read() == b"written " + name.encode()
        assert (tmp_path / name).read_bytes() == b"written " + name.encode()
