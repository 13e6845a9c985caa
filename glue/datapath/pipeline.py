"""The one data path of json_to_parquet: reader -> prover -> judge -> writer.

1. ``blocks.BlockReader`` reads the file once, in blocks of whole lines, with pread into
   buffers the job owns (an overlong line comes as an OverlongLine, never read into memory);
2. a prover (``provers.CProver`` or ``provers.DuckDBProver``) turns each block into the typed
   rows it proves valid and the lines it cannot vouch for; blocks are proven ``in_flight`` at a
   time on a thread pool, and taken back in file order;
3. ``judge.Judge`` applies the exact rules to those lines, gathered across blocks and judged
   together on the same pool: the valid ones are rescued as rows, the others get their reason;
4. ``writer.ParquetWriter`` streams the proven and rescued rows into the raw Parquet file in one
   COPY, as the blocks come; ``writer.QuarantineWriter`` writes the bad lines.

Counts reconcile or the job fails: the non-blank lines the provers saw (``read``) must equal the
rows DuckDB wrote plus the lines quarantined, and the rows the provers and the judge gave must
equal the rows DuckDB wrote.
"""
import collections
import gzip
import logging
import os
import shutil
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor


import duckdb

import jobio
from datapath import blocks, provers, writer
from datapath.judge import Judge
from datapath.writer import CountsDoNotReconcile

LOG = logging.getLogger("shipping_etl.json_to_parquet")

# The whole job's (see jobio.duckdb_memory_limit), within the 1 GB of a 1/16-DPU Glue shell job:
# enough for DuckDB to write a line of schema.MAX_LINE_BYTES (its Parquet writer holds about four
# copies of a value; an ordinary file takes a fraction of it).
DEFAULT_MEMORY_LIMIT = "900MB"
PROGRESS_EVERY_BLOCKS = 16
# Doubtful lines are judged together once this many bytes of them are gathered (or at a line
# judged otherwise, and at the end); at most JUDGE_BATCHES_PENDING such batches wait at once.
# 256 KB (about 2,000 short lines) is judged while later blocks are proven; with 4 MB, a file of
# 1% bad lines had its 10,000 judged in one batch after the last block (0.83 s against 0.86 s).
JUDGE_BATCH_BYTES = 256 * 1024
JUDGE_BATCHES_PENDING = 4
GZIP_MAGIC = b"\x1f\x8b"




class Outcome:
    """One item of the file, proven: ``lines`` (physical lines), ``read`` (non-blank lines),
    ``proven`` rows in ``batch``, ``doubtful`` (``[(line in the item, bytes)]``: for the judge)
    and ``bad`` (``[(line in the item, reason, bytes, extra entry keys)]``: judged already)."""

    __slots__ = ("lines", "read", "proven", "batch", "doubtful", "bad")

    def __init__(self, lines, read, proven=0, batch=None, doubtful=(), bad=()):
        self.lines, self.read, self.proven, self.batch = lines, read, proven, batch
        self.doubtful, self.bad = list(doubtful), list(bad)


def _settle(prover, item):
    """Proves one item of the reader (runs on a worker thread)."""
    if isinstance(item, blocks.OverlongLine):
        reason = "line too long: %d bytes, the most a line may hold is %d" % (item.length, item.limit)
        return Outcome(1, 1, bad=[(0, reason, item.prefix, {"length": item.length})])
    proof = prover.prove(item)
    return Outcome(proof.lines, proof.non_blank, proof.rows, proof.batch, proof.doubtful)


def _judged(judge, lines):
    """``(rescued batch or None, [(line, reason, bytes, {})]``) of the doubtful ``lines``."""
    rescued, bad = judge.judge(lines)
    rescued_rows = rescued.num_rows if rescued is not None else 0
    if rescued_rows + len(bad) != len(lines):
        raise CountsDoNotReconcile("the exact rules judged %d of %d lines" % (rescued_rows + len(bad), len(lines)))
    return rescued, [(number, reason, raw, {}) for number, reason, raw in bad]


def _ready(value):
    done = Future()
    done.set_result(value)
    return done


class _Tally:
    def __init__(self):
        self.read = self.proven = self.rescued = self.items = 0
        self.failure = None


def _outcomes(reader, prover, pool):
    """The reader's items proven, ``prover.in_flight`` at a time, in file order."""
    pending = collections.deque()
    items = iter(reader)
    try:
        while True:
            while len(pending) < prover.in_flight:
                item = next(items, None)
                if item is None:
                    break
                pending.append(pool.submit(_settle, prover, item))
            if not pending:
                return
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


class _Judging:
    """The doubtful lines of consecutive blocks, gathered (numbered in the file) and judged
    together on the pool: the judge's query costs about as much to plan as to run on a few
    hundred lines, and a file with a bad line in every block paid it per block (1% bad lines:
    0.45 s of a 1.0 s conversion). Results come back in file order."""

    def __init__(self, judge, pool, limit):
        self.judge, self.pool, self.limit = judge, pool, limit
        self.gathered, self.gathered_bytes = [], 0
        self.results = collections.deque()  # futures of _judged's results, in file order

    def add(self, first_line, outcome):
        """Takes an outcome's doubtful and bad lines (``first_line``: the file's number of its
        first line)."""
        owned = all(isinstance(raw, bytes) for _number, raw in outcome.doubtful)
        if not owned:
            # Lines that point into the reader's buffer (a line longer than a block), which the
            # reader reuses once this outcome is taken: judged now, after the earlier lines.
            self.flush()
            self.results.append(_ready(_judged(self.judge, [(first_line + n, raw) for n, raw in outcome.doubtful])))
        else:
            self.gathered.extend((first_line + number, raw) for number, raw in outcome.doubtful)
            self.gathered_bytes += sum(len(raw) for _number, raw in outcome.doubtful)
        if outcome.bad:
            self.flush()  # the earlier lines' results come first
            self.results.append(_ready((None, [(first_line + number, reason, raw, more)
                                               for number, reason, raw, more in outcome.bad])))
        if self.gathered_bytes >= self.limit:
            self.flush()

    def flush(self):
        if self.gathered:
            self.results.append(self.pool.submit(_judged, self.judge, self.gathered))
            self.gathered, self.gathered_bytes = [], 0

    def done(self, wait=False, keep=0):
        """The results ready (all of them with ``wait``; with ``keep``, waits until at most that
        many are pending), oldest first."""
        while self.results and (wait or self.results[0].done() or len(self.results) > keep > 0):
            yield self.results.popleft().result()


def _batches(outcomes, tally, quarantine, source, judging):
    """What the writer writes; counts what passes and writes the bad lines in file order. An
    exception is kept in ``tally.failure`` (DuckDB only passes its text on)."""
    first_line = 1

    def judged(results):
        for rescued, bad in results:
            quarantine.write([writer.quarantine_entry(source, number, reason, raw, **more)
                              for number, reason, raw, more in bad])
            if rescued is not None:
                tally.rescued += rescued.num_rows
                yield rescued

    try:
        for outcome in outcomes:
            tally.read += outcome.read
            tally.proven += outcome.proven
            judging.add(first_line, outcome)
            first_line += outcome.lines
            tally.items += 1
            if tally.items % PROGRESS_EVERY_BLOCKS == 0:
                LOG.info("%d lines read so far (%d quarantined)", first_line - 1, quarantine.rows)
            if outcome.batch is not None:
                yield outcome.batch
            # Judging that falls behind holds its lines: at most JUDGE_BATCHES_PENDING at once.
            yield from judged(judging.done(keep=JUDGE_BATCHES_PENDING))
        judging.flush()
        yield from judged(judging.done(wait=True))
    except BaseException as exc:
        tally.failure = exc
        raise


def is_gzip(path):
    """Whether the file starts with the gzip magic bytes."""
    with open(path, "rb") as probe:
        return probe.read(2) == GZIP_MAGIC


def plain_copy(source_path, work_dir):
    """The path of an uncompressed copy of a gzip file in ``work_dir`` (the path itself for an
    uncompressed file)."""
    if not is_gzip(source_path):
        return source_path
    plain = os.path.join(work_dir, "source.ndjson")
    with gzip.open(source_path, "rb") as packed, open(plain, "wb") as out:
        shutil.copyfileobj(packed, out, 1024 * 1024)
    return plain


def _connection(memory_limit, threads, temp_dir):
    connection = jobio.duckdb_connection(duckdb, jobio.duckdb_memory_limit(memory_limit), preserve_insertion_order=False)
    if threads:
        connection.execute("SET threads = %d" % int(threads))
    if temp_dir:
        connection.execute("SET temp_directory = %s" % jobio.sql_literal(temp_dir))
    return connection


def convert(source_path, target_path, quarantine_path, source, source_id, memory_limit=DEFAULT_MEMORY_LIMIT,
            threads=None, temp_dir=None, block_bytes=None, prover="auto", max_line=None):
    """NDJSON file (gzip or not) -> raw Parquet at ``target_path`` + quarantine JSON lines at
    ``quarantine_path``, all local files. ``source`` is the URI named in the quarantine entries,
    the counts and the errors; ``source_id`` fills the ``source_id`` column. ``prover``: ``"c"``,
    ``"duckdb"`` or ``"auto"`` (the C prover when installed). ``block_bytes``: the blocks' size
    (each prover has its default); ``max_line``: the longest line read (schema.MAX_LINE_BYTES).

    Writes the Parquet file only if a line is valid and the quarantine file only if one is not.
    Returns the counts ``{"source", "read", "valid", "quarantined"}``. Raises JobError (e.g.
    SourceChanged, CountsDoNotReconcile).
    """
    scratch = None
    if temp_dir is None:
        scratch = temp_dir = tempfile.mkdtemp(prefix="json-to-parquet-")
    # One database, so one memory limit bounds the writer, the DuckDB prover and the judge
    # (each on a cursor of its own).
    writing = proving = _connection(memory_limit, threads, temp_dir)
    quarantine = writer.QuarantineWriter(quarantine_path)
    parquet = writer.ParquetWriter(writing, target_path, source, source_id)
    try:
        chosen = provers.make(prover, proving, block_bytes, temp_dir)
        LOG.info("checking lines with the %s prover%s", "C" if chosen.name == "c" else "DuckDB",
                 " (the C prover, glue/native, is not installed)" if provers.shipping_ndjson is None else "")
        plain = plain_copy(source_path, temp_dir)
        reader = blocks.BlockReader(plain, source, block_bytes or chosen.block_bytes, chosen.in_flight + 1,
                                    max_line=max_line)
        tally = _Tally()
        with ThreadPoolExecutor(max_workers=chosen.in_flight) as pool:
            judging = _Judging(Judge(proving, source_id), pool, JUDGE_BATCH_BYTES)
            rows = _batches(_outcomes(reader, chosen, pool), tally, quarantine, source, judging)
            try:
                written = parquet.write(chosen.stream(rows))
            except duckdb.Error:
                if tally.failure is not None:
                    raise tally.failure
                raise
        quarantine.close()
        valid = tally.proven + tally.rescued
        if written != valid:
            raise CountsDoNotReconcile("%s: %d rows proven valid but %d written to the Parquet file"
                                       % (source, valid, written))
        if tally.read != written + quarantine.rows:
            raise CountsDoNotReconcile("%s: %d lines read but %d written and %d quarantined"
                                       % (source, tally.read, written, quarantine.rows))
        counts = {"source": source, "read": tally.read, "valid": written, "quarantined": quarantine.rows}
        if written:
            parquet.finish(counts)
        else:
            parquet.discard()
        if valid and tally.rescued:
            LOG.info("%d lines proven valid, %d more by the exact rules", tally.proven, tally.rescued)
        return counts
    except BaseException:
        quarantine.close()
        parquet.discard()
        raise
    finally:
        writing.close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
