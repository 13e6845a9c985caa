"""The json-to-parquet Glue job: its transform on local files against the independent reference,
its quarantine, its arguments, S3 through moto, and the script run as Glue runs it."""
import base64
import json
import os
import shutil
import subprocess
import sys

import boto3
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError

import datafiles
import reference

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLUE_DIR = os.path.join(PROJECT_DIR, "glue")
if GLUE_DIR not in sys.path:
    sys.path.insert(0, GLUE_DIR)

import jobio  # noqa: E402
import json_to_parquet  # noqa: E402
from chalicelib import schema  # noqa: E402
from datapath import blocks, judge, pipeline, provers, writer  # noqa: E402

SCRIPT = os.path.join(GLUE_DIR, "json_to_parquet.py")


# Both ways of proving lines valid: the C prover (glue/native) and DuckDB's.
@pytest.fixture(params=["c", "duckdb"])
def prover(request):
    return request.param


def run_convert(tmp_path, data, name="landing.json", **options):
    """Writes ``data`` as a landing file and converts it. Returns (counts, raw rows or None,
    quarantine entries)."""
    source = datafiles.write(tmp_path / name, data)
    target, quarantine = tmp_path / "raw.parquet", tmp_path / "quarantine.jsonl"
    counts = json_to_parquet.convert(source, str(target), str(quarantine), "s3://landing/" + name, "sid1", **options)
    rows = pq.read_table(target).to_pylist() if target.exists() else None
    entries = [json.loads(line) for line in quarantine.read_text("utf-8").splitlines()] if quarantine.exists() else []
    return counts, rows, entries


def valid_records(data):
    """Every valid record of a file by the reference rules, duplicates included (the raw zone
    keeps them), as comparable tuples."""
    analysis = reference.analyze(data)
    kept = {line: record for line, record in zip(analysis.kept_lines, analysis.kept)}
    records = []
    lines = reference.read_bytes(data).split(b"\n")
    for number in sorted(set(analysis.kept_lines) | set(analysis.duplicate_lines)):
        raw = lines[number - 1]
        record = kept.get(number) or reference.check_record(reference.parse_line(raw.rstrip(b"\r")))
        records.append(as_tuple(record))
    return sorted(records, key=repr)


def as_tuple(row):
    return tuple(row[name] for name in reference.FIELD_NAMES)


def test_clean_file_becomes_typed_parquet_with_counts(tmp_path, prover):
    data = datafiles.clean_bytes(500)
    counts, rows, entries = run_convert(tmp_path, data, prover=prover)

    expected = reference.evaluate(data)
    assert counts == {"source": "s3://landing/landing.json", "read": 500, "valid": 500, "quarantined": 0}
    assert expected["read"] == 500 and entries == []
    assert not (tmp_path / "quarantine.jsonl").exists()
    table = pq.read_table(tmp_path / "raw.parquet")
    assert [(f.name, str(f.type)) for f in table.schema] == [
        ("shipping_id", "int64"), ("shipping_date", "date32[day]"), ("customer_name", "string"),
        ("street_address", "string"), ("destination_city", "string"), ("shipping_cost", "double"),
        ("shipping_distance", "double"), ("quantity", "double"), ("product_id", "int64"),
        ("source_id", "string")]
    assert {row["source_id"] for row in rows} == {"sid1"}
    assert sorted(as_tuple(row) for row in rows) == sorted(as_tuple(r) for r in reference.analyze(data).kept)
    for name, total in expected["totals"].items():
        assert sum(row[name] for row in rows) == pytest.approx(total, rel=1e-12)
    stored = json.loads(pq.read_metadata(tmp_path / "raw.parquet").metadata[b"shipping_etl.counts"])
    assert stored == counts


def test_messy_file_matches_the_reference_line_by_line(tmp_path, prover):
    data = datafiles.messy_bytes()
    counts, rows, entries = run_convert(tmp_path, data, prover=prover)

    analysis = reference.analyze(data)
    expected = analysis.counts()
    assert counts["read"] == expected["read"]
    assert counts["quarantined"] == expected["quarantined"] == len(datafiles.BAD_LINES)
    assert counts["valid"] == expected["valid"] + expected["duplicates"]
    assert [entry["line"] for entry in entries] == [line for line, _why, _raw in analysis.bad]
    assert sorted(as_tuple(row) for row in rows) == valid_records(data)


def test_quarantine_keeps_source_line_number_reason_and_the_line_verbatim(tmp_path, prover):
    data = datafiles.messy_bytes()
    _counts, _rows, entries = run_convert(tmp_path, data, prover=prover)

    physical = data.split(b"\n")
    for entry in entries:
        assert set(entry) <= {"source", "line", "reason", "record", "record_base64"}
        assert entry["source"] == "s3://landing/landing.json"
        raw = physical[entry["line"] - 1]
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        if "record_base64" in entry:
            assert base64.b64decode(entry["record_base64"]) == raw
            assert entry["reason"].startswith("not valid UTF-8")
        else:
            assert entry["record"].encode("utf-8") == raw
        assert entry["reason"]
    reasons = {entry["record"]: entry["reason"] for entry in entries}
    assert reasons["this is not json"].startswith("not valid JSON")
    assert reasons["[1, 2, 3]"] == "not a JSON object"
    by_kind = dict(datafiles.BAD_LINES)
    assert reasons[by_kind["date 2024/02/30"].decode()].startswith("shipping_date must be a string `YYYY/MM/DD` that is a real calendar date")
    assert reasons[by_kind["cost string"].decode()] == 'shipping_cost must be a finite JSON number >= 0, got "12"'
    assert reasons[by_kind["missing quantity"].decode()] == "quantity is missing or null"
    assert reasons[by_kind["NaN in an unknown field"].decode()].startswith("not valid JSON")
    assert reasons[by_kind["trailing comma"].decode()].startswith("not valid JSON")


def test_blank_and_whitespace_lines_are_skipped_but_keep_their_line_numbers(tmp_path, prover):
    good = datafiles.ndjson(datafiles.clean_records(2)).split(b"\n")
    data = b"\n  \n\t\r\n" + good[0] + b"\r\n\r\n" + b"oops\n" + good[1] + b"\n \n"
    counts, rows, entries = run_convert(tmp_path, data, prover=prover)

    assert counts["read"] == 3 and counts["valid"] == 2
    assert [(e["line"], e["record"]) for e in entries] == [(6, "oops")]


def test_lenient_json_is_quarantined_but_lookalikes_inside_strings_are_not(tmp_path, prover):
    base = datafiles.clean_records(4)
    lookalike = dict(base[0], street_address="1, Infinity Loop: NaN, inf]", customer_name="a,}")
    lines = [
        json.dumps(lookalike),
        json.dumps(base[1])[:-1] + ', "extra": [1, 2,]}',
        json.dumps(base[2])[:-1] + ', "extra": -Infinity}',
        json.dumps(base[3]).replace('"quantity": %s' % base[3]["quantity"], '"quantity": nan'),
    ]
    counts, rows, entries = run_convert(tmp_path, ("\n".join(lines) + "\n").encode(), prover=prover)

    assert [row["street_address"] for row in rows] == [lookalike["street_address"]]
    assert [entry["line"] for entry in entries] == [2, 3, 4]
    assert all(entry["reason"].startswith("not valid JSON") for entry in entries)
    assert counts == dict(counts, read=4, valid=1, quarantined=3)


def test_a_member_given_twice_counts_with_its_first_value(tmp_path, prover):
    record = datafiles.clean_records(1)[0]
    first_good = json.dumps(record)[:-1] + ', "shipping_id": "later"}'
    first_bad = '{"shipping_id": "x", ' + json.dumps(dict(record, shipping_id=2))[1:]
    counts, rows, entries = run_convert(tmp_path, (first_good + "\n" + first_bad + "\n").encode(), prover=prover)

    assert [row["shipping_id"] for row in rows] == [record["shipping_id"]]
    assert [entry["line"] for entry in entries] == [2]
    assert reference.evaluate((first_good + "\n" + first_bad).encode())["quarantined"] == 1


def test_gzip_is_recognised_by_its_magic_bytes_whatever_the_name(tmp_path, prover):
    data = datafiles.messy_bytes()
    plain, zipped = tmp_path / "plain", tmp_path / "zipped"
    plain.mkdir()
    zipped.mkdir()
    plain_counts, plain_rows, plain_entries = run_convert(plain, data, prover=prover)
    counts, rows, entries = run_convert(zipped, datafiles.gzipped(data), name="landing.json", prover=prover)

    assert counts == plain_counts
    assert sorted(map(as_tuple, rows)) == sorted(map(as_tuple, plain_rows))
    assert entries == plain_entries
    assert reference.evaluate(datafiles.gzipped(data)) == reference.evaluate(data)


def test_block_boundaries_do_not_change_the_result(tmp_path, prover):
    data = datafiles.messy_bytes() + datafiles.clean_bytes(300, seed=5, crlf=True)
    small, large = tmp_path / "small", tmp_path / "large"
    small.mkdir()
    large.mkdir()
    # 509-byte blocks: lines straddle blocks, some are longer than a block.
    counts_small, rows_small, entries_small = run_convert(small, data, block_bytes=509, prover=prover)
    counts_large, rows_large, entries_large = run_convert(large, data, prover=prover)

    assert counts_small == counts_large
    assert sorted(map(as_tuple, rows_small)) == sorted(map(as_tuple, rows_large))
    assert entries_small == entries_large
    assert counts_large["read"] == reference.evaluate(data)["read"]


@pytest.mark.parametrize("batch_bytes", [700, 1 << 20])
def test_doubtful_lines_judged_across_blocks_keep_their_numbers_and_order(tmp_path, prover, monkeypatch, batch_bytes):
    """Doubtful lines are gathered over blocks and judged together (pipeline._Judging): with
    small blocks, small or large judge batches and few pending ones, bad lines of many blocks, lines
    longer than a block and lines over the maximum still come out in file order, each with its
    own number, and every valid line is kept."""
    monkeypatch.setattr(pipeline, "JUDGE_BATCH_BYTES", batch_bytes)
    monkeypatch.setattr(pipeline, "JUDGE_BATCHES_PENDING", 2)
    long_valid = json.dumps(dict(datafiles.clean_records(1, seed=8)[0], street_address="z" * 3000)).encode()
    too_long = b'{"shipping_id": 2, "note": "' + b"y" * 9000 + b'"}'
    data = (datafiles.messy_bytes(seed=3) + long_valid + b"\n" + datafiles.messy_bytes(seed=4) + too_long + b"\n"
            + datafiles.clean_bytes(40, seed=6, crlf=True) + datafiles.messy_bytes(seed=5))

    counts, rows, entries = run_convert(tmp_path, data, prover=prover, block_bytes=1024, max_line=8192)

    analysis = reference.analyze(data.replace(too_long, b"[]"))  # the reference has no length limit
    lines = [entry["line"] for entry in entries]
    assert lines == sorted(number for number, _reason, _raw in analysis.bad)
    assert counts["read"] == counts["valid"] + counts["quarantined"] == len(rows) + len(entries)
    assert sorted(map(as_tuple, rows), key=repr) == valid_records(data.replace(too_long + b"\n", b""))


def test_file_without_a_final_newline_and_empty_file(tmp_path, prover):
    data = datafiles.clean_bytes(3).rstrip(b"\n")
    counts, rows, _entries = run_convert(tmp_path, data, prover=prover)
    assert counts["valid"] == 3 and len(rows) == 3

    empty = tmp_path / "empty"
    empty.mkdir()
    counts, rows, entries = run_convert(empty, b"", prover=prover)
    assert counts == dict(counts, read=0, valid=0, quarantined=0)
    assert rows is None and entries == []


# -- arguments ------------------------------------------------------------------------------


def test_arguments_as_glue_passes_them_unknown_ones_ignored():
    argv = ["--JOB_ID", "j_1", "--source_uri", "s3://b/k", "--enable-metrics", "--target_uri=s3://b/raw/x.parquet",
            "--job-bookmark-option", "job-bookmark-disable", "--quarantine_uri", "s3://b/q/x.jsonl",
            "--scriptLocation", "s3://b/glue-assets/json_to_parquet.py", "--JOB_NAME", "shipping-etl-json-to-parquet"]
    args = jobio.parse_args(argv, json_to_parquet.ARGUMENTS, json_to_parquet.OPTIONS)

    assert args == {"source_uri": "s3://b/k", "target_uri": "s3://b/raw/x.parquet", "quarantine_uri": "s3://b/q/x.jsonl",
                    "source_id": None, "source_version_id": None,
                    "memory_limit": json_to_parquet.DEFAULT_MEMORY_LIMIT, "threads": None, "prover": "auto"}


def test_missing_arguments_are_named():
    with pytest.raises(jobio.JobError) as failure:
        jobio.parse_args(["--source_uri", "a.json", "--JOB_NAME", "x"], json_to_parquet.ARGUMENTS)
    assert "--target_uri" in str(failure.value) and "--quarantine_uri" in str(failure.value)


@pytest.mark.parametrize("option, value, message", [
    ("--threads", "0", "--threads must be a whole number > 0"),
    ("--memory_limit", "lots", "--memory_limit 'lots' is not usable"),
])
def test_bad_option_values_are_reported(tmp_path, option, value, message):
    source = datafiles.write(tmp_path / "in.json", datafiles.clean_bytes(2))
    with pytest.raises(jobio.JobError) as failure:
        json_to_parquet.main(["--source_uri", source, "--target_uri", str(tmp_path / "r.parquet"),
                              "--quarantine_uri", str(tmp_path / "q.jsonl"), option, value])
    assert message in str(failure.value)


def test_source_id_defaults_to_the_target_file_stem(tmp_path, capsys):
    source = datafiles.write(tmp_path / "in.json", datafiles.clean_bytes(3))
    json_to_parquet.main(["--source_uri", source, "--target_uri", str(tmp_path / "out" / "abc123.parquet"),
                          "--quarantine_uri", str(tmp_path / "out" / "abc123.jsonl")])

    assert {row["source_id"] for row in pq.read_table(tmp_path / "out" / "abc123.parquet").to_pylist()} == {"abc123"}
    assert json.loads(capsys.readouterr().out) == {"source": source, "read": 3, "valid": 3, "quarantined": 0}


def test_a_rerun_without_bad_lines_removes_the_stale_quarantine_file(tmp_path):
    target, quarantine = str(tmp_path / "raw.parquet"), str(tmp_path / "q.jsonl")
    messy = datafiles.write(tmp_path / "messy.json", datafiles.messy_bytes())
    clean = datafiles.write(tmp_path / "clean.json", datafiles.clean_bytes(5))
    args = ["--target_uri", target, "--quarantine_uri", quarantine, "--source_id", "same"]
    json_to_parquet.main(["--source_uri", messy] + args)
    assert os.path.exists(quarantine)

    json_to_parquet.main(["--source_uri", clean] + args)

    assert not os.path.exists(quarantine)
    assert pq.read_metadata(target).num_rows == 5


# -- the script, as Glue runs it ------------------------------------------------------------------


def run_script(args, cwd=PROJECT_DIR, env=None):
    return subprocess.run([sys.executable, SCRIPT] + args, cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=120)


def test_script_runs_on_local_paths_from_the_repository_root(tmp_path):
    source = datafiles.write(tmp_path / "a.json", datafiles.messy_bytes(), gzip=True)
    out = tmp_path / "out"
    done = run_script(["--JOB_NAME", "local", "--source_uri", source, "--target_uri", str(out / "raw.parquet"),
                       "--quarantine_uri", str(out / "q.jsonl"), "--job-bookmark-option", "job-bookmark-disable"])

    assert done.returncode == 0, done.stderr
    expected = reference.evaluate(datafiles.gzipped(datafiles.messy_bytes()))
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "source": source, "read": expected["read"], "valid": expected["valid"] + expected["duplicates"],
        "quarantined": expected["quarantined"]}
    assert pq.read_metadata(out / "raw.parquet").num_rows == expected["valid"] + expected["duplicates"]
    assert len((out / "q.jsonl").read_text("utf-8").splitlines()) == expected["quarantined"]
    assert "INFO" in done.stderr


@pytest.mark.parametrize("prover", ["c", "duckdb"])
def test_a_run_with_bad_lines_loads_no_more_of_pyarrow_than_it_uses(tmp_path, prover):
    # DuckDB handed a pyarrow Table or RecordBatchReader (not an Arrow C stream) imports
    # pyarrow.dataset and every filesystem of pyarrow: 0.07 s of each run with a bad line.
    if prover == "c" and provers.shipping_ndjson is None:
        pytest.skip("the C prover is not built")
    source = datafiles.write(tmp_path / "messy.json", datafiles.messy_bytes())
    out = tmp_path / "out"
    out.mkdir()
    code = ("import os, runpy, sys; sys.argv = sys.argv[1:]; sys.path.insert(0, os.path.dirname(sys.argv[0])); "
            "exit_status = None\n"
            "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit as done:\n    exit_status = done.code\n"
            "print(sorted(m for m in sys.modules if m.startswith(('pyarrow.dataset', 'pyarrow._s3fs', 'pandas'))))\n"
            "sys.exit(exit_status)")
    done = subprocess.run([sys.executable, "-c", code, SCRIPT, "--source_uri", source, "--target_uri",
                           str(out / "raw.parquet"), "--quarantine_uri", str(out / "q.jsonl"), "--prover", prover],
                          cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-2])["quarantined"] > 0
    assert done.stdout.splitlines()[-1] == "[]"


def test_script_fails_when_no_line_is_valid_and_still_writes_the_quarantine(tmp_path):
    source = datafiles.write(tmp_path / "bad.json", datafiles.all_bad_bytes())
    target, quarantine = tmp_path / "raw.parquet", tmp_path / "q.jsonl"
    target.write_bytes(b"an earlier run's output")
    done = run_script(["--source_uri", source, "--target_uri", str(target), "--quarantine_uri", str(quarantine)])

    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "no valid record in %s: 12 lines read, 12 quarantined (see %s)" % (source, quarantine) in last
    assert len(quarantine.read_text("utf-8").splitlines()) == 12
    assert not target.exists()


def test_script_reports_a_missing_source(tmp_path):
    done = run_script(["--source_uri", str(tmp_path / "nope.json"), "--target_uri", str(tmp_path / "r.parquet"),
                       "--quarantine_uri", str(tmp_path / "q.jsonl")])

    assert done.returncode == 1
    assert "nope.json does not exist" in done.stderr.strip().splitlines()[-1]


def test_script_runs_from_another_folder_with_its_files_shipped_like_glue(tmp_path):
    # Glue runs the script alone, with the --extra-py-files zip the deploy builds on its path.
    from deploy.assets import build_library_zip

    shipped = tmp_path / "shipped.zip"
    shipped.write_bytes(build_library_zip(PROJECT_DIR))
    script = tmp_path / "script" / "json_to_parquet.py"
    script.parent.mkdir()
    shutil.copy(SCRIPT, script)
    source = datafiles.write(tmp_path / "a.json", datafiles.clean_bytes(4))
    env = dict(os.environ, PYTHONPATH=str(shipped))
    done = subprocess.run([sys.executable, str(script), "--source_uri", source, "--target_uri",
                           str(tmp_path / "raw.parquet"), "--quarantine_uri", str(tmp_path / "q.jsonl")],
                          cwd=str(tmp_path), capture_output=True, text=True, env=env, timeout=120)

    assert done.returncode == 0, done.stderr
    assert pq.read_metadata(tmp_path / "raw.parquet").num_rows == 4


# -- S3 -------------------------------------------------------------------------------------------


def test_s3_source_and_outputs(aws, tmp_path, capsys):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="landing")
    s3.create_bucket(Bucket="lake")
    body = datafiles.gzipped(datafiles.messy_bytes())
    etag = s3.put_object(Bucket="landing", Key="incoming/2024/batch.json", Body=body)["ETag"]

    counts = json_to_parquet.main([
        "--source_uri", "s3://landing/incoming/2024/batch.json", "--target_uri", "s3://lake/raw/sid9.parquet",
        "--quarantine_uri", "s3://lake/quarantine/sid9.jsonl", "--source_id", "sid9", "--JOB_NAME", "j"])

    expected = reference.evaluate(body)
    assert counts["quarantined"] == expected["quarantined"]
    local = tmp_path / "raw.parquet"
    s3.download_file("lake", "raw/sid9.parquet", str(local))
    assert pq.read_metadata(local).num_rows == expected["valid"] + expected["duplicates"]
    quarantined = s3.get_object(Bucket="lake", Key="quarantine/sid9.jsonl")["Body"].read().decode().splitlines()
    assert len(quarantined) == expected["quarantined"]
    assert json.loads(quarantined[0])["source"] == "s3://landing/incoming/2024/batch.json"
    # The landing object is only read.
    landing = s3.get_object(Bucket="landing", Key="incoming/2024/batch.json")
    assert landing["ETag"] == etag and landing["Body"].read() == body


def test_s3_missing_source_says_what_to_check(aws):
    boto3.client("s3").create_bucket(Bucket="lake")
    with pytest.raises(jobio.JobError) as failure:
        json_to_parquet.main(["--source_uri", "s3://lake/incoming/none.json", "--target_uri", "s3://lake/raw/x.parquet",
                              "--quarantine_uri", "s3://lake/quarantine/x.jsonl"])
    message = str(failure.value)
    assert "s3://lake/incoming/none.json" in message and "s3:GetObject" in message
    with pytest.raises(ClientError) as missing:
        boto3.client("s3").head_object(Bucket="lake", Key="raw/x.parquet")
    assert missing.value.response["Error"]["Code"] == "404"


def test_script_reaches_s3_through_aws_endpoint_url(aws_credentials, tmp_path):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = "http://%s:%d" % (host, port)
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="landing")
        s3.put_object(Bucket="landing", Key="incoming/a.json", Body=datafiles.messy_bytes())
        env = dict(os.environ, AWS_ENDPOINT_URL=endpoint)
        done = run_script(["--source_uri", "s3://landing/incoming/a.json", "--target_uri", "s3://landing/raw/a.parquet",
                           "--quarantine_uri", "s3://landing/quarantine/a.jsonl", "--JOB_NAME", "x"], env=env)
        assert done.returncode == 0, done.stderr
        keys = sorted(item["Key"] for item in s3.list_objects_v2(Bucket="landing")["Contents"])
        assert keys == ["incoming/a.json", "quarantine/a.jsonl", "raw/a.parquet"]
    finally:
        server.stop()


# -- compatibility --------------------------------------------------------------------------------


def test_glue_scripts_stay_python_3_9_compatible():
    vermin = shutil.which("vermin") or os.path.join(os.path.dirname(sys.executable), "vermin")
    if not os.path.exists(vermin):
        pytest.skip("vermin is not installed")
    done = subprocess.run([vermin, "-q", "--no-tips", "--target=3.9-", "--violations", GLUE_DIR],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


# -- the one pipeline: reader, two provers, judge, writer -----------------------------------------

LINE_KINDS = [(kind, line) for kind, line in datafiles.BAD_LINES] + [
    (kind, line.encode("utf-8")) for kind, line in datafiles.ODD_VALID_LINES]


@pytest.mark.parametrize("kind, line", LINE_KINDS, ids=[kind for kind, _line in LINE_KINDS])
def test_no_prover_vouches_for_a_bad_line_and_results_match_the_reference(tmp_path, prover, kind, line):
    data = (datafiles.clean_bytes(20) + line + b"\n"
            + datafiles.ndjson(datafiles.clean_records(5, seed=3, first_id=500), crlf=True))

    counts, rows, entries = run_convert(tmp_path, data, prover=prover)

    expected = reference.analyze(data)
    assert [entry["line"] for entry in entries] == [number for number, _why, _raw in expected.bad]
    assert sorted(map(as_tuple, rows), key=repr) == valid_records(data)
    assert counts["read"] == expected.read


def test_both_provers_give_the_same_file_and_counts(tmp_path):
    data = datafiles.clean_bytes(400, seed=2, crlf=True) + b"\n \t\n" + datafiles.ndjson(
        datafiles.clean_records(100, seed=8, first_id=5000), ascii_only=True)
    source = datafiles.write(tmp_path / "in.json.gz", data, gzip=True)
    by_c, by_duckdb = tmp_path / "c.parquet", tmp_path / "duckdb.parquet"

    counts = json_to_parquet.convert(source, str(by_c), str(tmp_path / "q1.jsonl"), "s3://l/in.json.gz", "sid1",
                                     prover="c")
    duckdb_counts = json_to_parquet.convert(source, str(by_duckdb), str(tmp_path / "q2.jsonl"), "s3://l/in.json.gz",
                                            "sid1", prover="duckdb")

    assert counts == duckdb_counts == {"source": "s3://l/in.json.gz", "read": 500, "valid": 500, "quarantined": 0}
    assert pq.read_schema(by_c).remove_metadata() == pq.read_schema(by_duckdb).remove_metadata()
    assert sorted(map(as_tuple, pq.read_table(by_c).to_pylist()), key=repr) == sorted(
        map(as_tuple, pq.read_table(by_duckdb).to_pylist()), key=repr) == valid_records(data)
    for path in (by_c, by_duckdb):
        assert json.loads(pq.read_metadata(path).metadata[b"shipping_etl.counts"]) == counts
    assert not (tmp_path / "q1.jsonl").exists()


@pytest.mark.parametrize("text, beyond", [
    ('{"a": NaN}', True), ('{"a": [1, -Infinity]}', True), ('{"a": 1, }', True), ('{"a": [1,\t]}', True),
    ('{"a": 1}\x0c', True), ('{"a": "x: NaN, }"}', False), ('{"a": "[inf]", "b": "\\", NaN"}', False),
    ('{"a": "\\"", "b": 1,}', True), ('{"nan": "infinity", "b": [1, 2]}', False), ('{"a": 1}', False),
])
def test_leniencies_count_outside_strings_only(text, beyond):
    assert judge.beyond_strict_json(text) is beyond


@pytest.mark.parametrize("extra", [
    b'{"note": NaN}', b'{"note": [1, 2, ]}', b"\x0b{}", b"", b" \t", b"not json",
], ids=["nan-in-another-member", "trailing-comma", "vertical-tab", "blank", "blank-spaces", "not-json"])
def test_what_duckdbs_reader_would_accept_beyond_strict_json_is_judged_by_the_rules(tmp_path, extra, prover):
    lines = datafiles.clean_bytes(500, seed=6).splitlines(keepends=True)
    record = json.loads(lines[7])
    if extra.startswith(b"{"):  # a valid record but for its extra member
        extra = extra[:-1] + b", " + json.dumps(record).encode()[1:]
    data = b"".join(lines[:250]) + extra + b"\n" + b"".join(lines[250:])
    counts, rows, entries = run_convert(tmp_path, data, prover=prover)
    expected = reference.analyze(data)
    assert counts["read"] == expected.read
    assert [entry["line"] for entry in entries] == [number for number, _why, _raw in expected.bad]
    assert sorted(map(as_tuple, rows), key=repr) == valid_records(data)


def test_a_metadata_value_is_replaced_in_place(tmp_path):
    path = tmp_path / "file.parquet"
    key = b"shipping_etl.counts"
    placeholder, final = b'{"pending": "x"}     ', b'{"read": 3}          '
    table = provers.record_schema().empty_table()
    with pq.ParquetWriter(path, table.schema) as parquet:
        parquet.write_table(table)
        parquet.add_key_value_metadata({key: placeholder})

    writer.patch_metadata_value(str(path), placeholder, final)

    assert json.loads(pq.read_metadata(path).metadata[key]) == {"read": 3}
    assert pq.read_table(path).schema.names == table.schema.names
    with pytest.raises(ValueError, match="same length"):
        writer.patch_metadata_value(str(path), final, b"{}")
    with pytest.raises(ValueError, match="exactly once"):
        writer.patch_metadata_value(str(path), placeholder, final)


def test_the_c_prover_is_installed_and_proves_a_clean_file_without_duckdb(tmp_path, monkeypatch):
    assert provers.shipping_ndjson is not None, "build it: make venv (glue/native)"
    data = datafiles.clean_bytes(3000, seed=4, crlf=True)

    def unused(*_args, **_kwargs):
        raise AssertionError("the C prover should have taken this file")

    monkeypatch.setattr(provers.DuckDBProver, "prove", unused)
    monkeypatch.setattr(judge.Judge, "judge", unused)
    counts, rows, entries = run_convert(tmp_path, data, block_bytes=64 * 1024)

    assert counts == {"source": "s3://landing/landing.json", "read": 3000, "valid": 3000, "quarantined": 0}
    assert entries == [] and sorted(map(as_tuple, rows), key=repr) == valid_records(data)
    assert json.loads(pq.read_metadata(tmp_path / "raw.parquet").metadata[b"shipping_etl.counts"]) == counts


def test_valid_lines_a_prover_cannot_vouch_for_are_judged_and_kept(tmp_path, prover):
    # Each is valid, and the C prover leaves each to the exact rules: -0, a \u escape, a repeated
    # member, a number beyond the exactly convertible ones.
    base = datafiles.clean_records(4, seed=6)
    lines = [json.dumps(base[0]).replace('"quantity": %s' % base[0]["quantity"], '"quantity": -0.0'),
             json.dumps(dict(base[1], customer_name="Zo\u00eb")),  # json.dumps writes \u00eb
             json.dumps(base[2])[:-1] + ', "shipping_id": 5}',
             json.dumps(dict(base[3], shipping_cost=0.1 + 0.2))]
    data = datafiles.clean_bytes(50, seed=7) + ("\n".join(lines) + "\n").encode() + b"not json\n"

    counts, rows, entries = run_convert(tmp_path, data, prover=prover, block_bytes=1024)

    assert counts == dict(counts, read=55, valid=54, quarantined=1)
    assert [entry["line"] for entry in entries] == [55]
    assert sorted(map(as_tuple, rows), key=repr) == valid_records(data)
    assert json.loads(pq.read_metadata(tmp_path / "raw.parquet").metadata[b"shipping_etl.counts"]) == counts


def test_a_file_without_a_valid_line_leaves_no_parquet_file(tmp_path, prover):
    bad = b"".join(line + b"\n" for _kind, line in datafiles.BAD_LINES)
    counts, rows, entries = run_convert(tmp_path, bad * 3, prover=prover)

    assert counts["valid"] == 0 and counts["quarantined"] == len(entries) == reference.evaluate(bad * 3)["quarantined"]
    assert rows is None


def test_a_failure_while_proving_is_reported_as_itself_and_leaves_no_output(tmp_path, monkeypatch):
    prove = provers.shipping_ndjson.prove
    calls = []

    def failing(*args):
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("out of memory in the prover")
        return prove(*args)

    monkeypatch.setattr(provers.shipping_ndjson, "prove", failing)
    with pytest.raises(MemoryError, match="in the prover"):
        run_convert(tmp_path, datafiles.clean_bytes(2000), prover="c", block_bytes=16 * 1024)
    assert not (tmp_path / "raw.parquet").exists()


def test_the_prover_option(tmp_path, monkeypatch):
    with pytest.raises(jobio.JobError, match="--prover must be one of auto, c, duckdb"):
        run_convert(tmp_path, datafiles.clean_bytes(3), prover="fast")
    monkeypatch.setattr(provers, "shipping_ndjson", None)
    with pytest.raises(jobio.JobError, match="not installed"):
        run_convert(tmp_path, datafiles.clean_bytes(3), prover="c")
    counts, rows, _entries = run_convert(tmp_path, datafiles.clean_bytes(3))  # auto: DuckDB's proof
    assert counts["valid"] == len(rows) == 3


def test_rows_lost_between_the_prover_and_the_writer_fail_the_job(tmp_path, monkeypatch):
    real = pipeline._settle

    def losing(prover, item):
        outcome = real(prover, item)
        outcome.proven += 1  # claims a row the writer never gets
        return outcome

    monkeypatch.setattr(pipeline, "_settle", losing)
    with pytest.raises(pipeline.CountsDoNotReconcile, match="proven valid but"):
        run_convert(tmp_path, datafiles.clean_bytes(50))
    assert not (tmp_path / "raw.parquet").exists()


# -- no input fails a file ------------------------------------------------------------------------


def hostile_lines():
    """``[(line, valid)]``: a 100 MB valid line among ordinary ones, nesting 100,000 deep (valid
    JSON that is no object, and a valid record holding it), NUL bytes, an unclosed deep object."""
    good = datafiles.clean_records(6, seed=1)
    deep = b"[" * 100000 + b"]" * 100000
    return [
        (json.dumps(good[0]).encode(), True),
        (json.dumps(dict(good[1], street_address="x" * (100 * 1000 * 1000))).encode(), True),
        (deep, False),
        (b'{"deep": ' + deep + b", " + json.dumps(good[2]).encode()[1:], True),
        (b'{"shipping_id": 1\x00}', False),
        (json.dumps(good[3]).encode()[:-1] + b', "n": "a\x00b"}', False),
        (json.dumps(good[4]).encode()[:-1] + b', "n": "a\\u0000b"}', True),
        (b'{"a": ' + b'{"b": ' * 100000, False),
        (b"\x00" * 50, False),
        (json.dumps(good[5]).encode(), True),
    ]


def test_hostile_lines_never_fail_the_file(tmp_path, prover):
    lines = hostile_lines()
    data = b"\n".join(line for line, _valid in lines) + b"\n"
    counts, rows, entries = run_convert(tmp_path, data, prover=prover)

    expected_bad = [number for number, (_line, valid) in enumerate(lines, 1) if not valid]
    assert counts == dict(counts, read=len(lines), valid=len(lines) - len(expected_bad), quarantined=len(expected_bad))
    assert [entry["line"] for entry in entries] == expected_bad
    assert all(entry["reason"] for entry in entries)
    assert len(rows) == len(lines) - len(expected_bad)
    assert max(len(row["street_address"] or "") for row in rows) == 100 * 1000 * 1000


def test_a_line_longer_than_the_maximum_is_quarantined_with_its_start_and_length(tmp_path, prover):
    good = datafiles.clean_bytes(30)
    long_line = b'{"shipping_id": 1, "note": "' + b"y" * 5000 + b'"}'
    data = good + long_line + b"\n" + good + long_line  # the second one ends the file, without LF

    counts, rows, entries = run_convert(tmp_path, data, prover=prover, block_bytes=1024, max_line=4096)

    assert counts == dict(counts, read=62, valid=60, quarantined=2) and len(rows) == 60
    assert [entry["line"] for entry in entries] == [31, 62]
    for entry in entries:
        assert entry["length"] == len(long_line)
        assert entry["record"].encode() == long_line[:1024]
        assert entry["reason"] == "line too long: %d bytes, the most a line may hold is %d" % (
            len(long_line), 4096)


def test_the_documented_maximum_line_is_at_least_128_mb():
    assert schema.MAX_LINE_BYTES >= 128 * 1000 * 1000


def test_a_byte_order_mark_starts_no_line(tmp_path, prover):
    data = b"\xef\xbb\xbf" + datafiles.clean_bytes(5) + b"\xef\xbb\xbf" + datafiles.clean_bytes(1, seed=9)

    counts, rows, entries = run_convert(tmp_path, data, prover=prover)

    assert counts == dict(counts, read=6, valid=5, quarantined=1) and len(rows) == 5
    assert [entry["line"] for entry in entries] == [6]  # only at the start of the file
    assert reference.evaluate(data)["valid"] == 5


def test_a_source_that_shrinks_while_it_is_read_fails_naming_it(tmp_path):
    path = tmp_path / "landing.json"
    path.write_bytes(datafiles.clean_bytes(2000))
    reader = blocks.BlockReader(str(path), "s3://landing/incoming/x.json", 16 * 1024, 2)
    items = iter(reader)
    next(items)
    with open(path, "r+b") as source:
        source.truncate(20 * 1024)
    with pytest.raises(blocks.SourceChanged, match="s3://landing/incoming/x.json changed while it was read"):
        list(items)


def test_a_source_that_grows_while_it_is_read_fails_naming_it(tmp_path, prover, monkeypatch):
    path = tmp_path / "landing.json"
    path.write_bytes(datafiles.clean_bytes(2000))
    real = blocks.BlockReader._next

    def growing(self, offset):
        with open(path, "ab") as source:
            source.write(datafiles.clean_bytes(1))
        return real(self, offset)

    monkeypatch.setattr(blocks.BlockReader, "_next", growing)
    with pytest.raises(blocks.SourceChanged, match="s3://landing/x.json changed while it was read"):
        json_to_parquet.convert(str(path), str(tmp_path / "raw.parquet"), str(tmp_path / "q.jsonl"),
                                "s3://landing/x.json", "sid", prover=prover, block_bytes=64 * 1024)
    assert not (tmp_path / "raw.parquet").exists()


def test_a_changing_source_fails_the_script_with_a_message_not_a_signal(tmp_path):
    source = tmp_path / "landing.json"
    source.write_bytes(datafiles.clean_bytes(20))
    code = ("import sys; sys.path[:0] = [%r, %r]\n"
            "from datapath import blocks\n"
            "real = blocks.BlockReader._next\n"
            "def shrink(self, offset):\n"
            "    open(%r, 'r+b').truncate(10)\n"
            "    return real(self, offset)\n"
            "blocks.BlockReader._next = shrink\n"
            "import json_to_parquet, jobentry\n"
            "jobentry.main(json_to_parquet.main)\n") % (GLUE_DIR, PROJECT_DIR, str(source))
    done = subprocess.run([sys.executable, "-c", code, "--source_uri", str(source), "--target_uri",
                           str(tmp_path / "raw.parquet"), "--quarantine_uri", str(tmp_path / "q.jsonl")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "changed while it was read" in done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("argument, value", [("--source_id", "x' OR 1=1 --"), ("--source_version_id", "v 1")])
def test_a_forged_identifier_argument_fails_clearly(argument, value):
    argv = ["--source_uri", "s3://b/k", "--target_uri", "s3://b/raw/x.parquet",
            "--quarantine_uri", "s3://b/q/x.jsonl", argument, value]

    with pytest.raises(jobio.JobError, match=argument):
        jobio.parse_args(argv, json_to_parquet.ARGUMENTS, json_to_parquet.OPTIONS)
