"""``python -m bench``: our jobs against the peers, side by side, each a whole process.

Generates the inputs (cached under bench/.cache/), then runs every method once per round, in
turn, for several rounds, so that a busy machine slows all of them alike. Prints one table per
stage: seconds (median, min, max), MB/s of input, CPU seconds, peak RSS, and the throughput ratio
to DuckDB's COPY measured in the same run; then the peak RSS at 4x the input, the correctness
checks (the outputs' row counts and sums against the input's, computed independently) and,
unless skipped, the end-to-end latency on the local stack.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile

from bench import data, peers
from bench import lake as bench_lake
from bench.measure import run_process

OURS_CONVERT = "ours: glue/json_to_parquet.py"
# The job as it runs where the C prover (glue/native) is not installed.
OURS_CONVERT_DUCKDB = "ours, --prover duckdb"
OURS_NORMALIZE = "ours: glue/normalize.py"
HISTORY_DAYS = 730


def log(message):
    print("bench: %s" % message, file=sys.stderr, flush=True)


class Table:
    """Samples of several methods on one stage; ratios are to ``baseline``'s median."""

    def __init__(self, title, baseline):
        self.title, self.baseline, self.rows = title, baseline, {}

    def add(self, name, sample, size_bytes):
        if sample.returncode != 0:
            raise SystemExit("bench: %s failed (exit %d):\n%s" % (name, sample.returncode, sample.stderr_tail))
        self.rows.setdefault(name, {"samples": [], "size": size_bytes})["samples"].append(sample)

    def summary(self):
        out = {}
        base = statistics.median(s.seconds for s in self.rows[self.baseline]["samples"])
        for name, row in self.rows.items():
            secs = [s.seconds for s in row["samples"]]
            med = statistics.median(secs)
            out[name] = {"median_s": med, "min_s": min(secs), "max_s": max(secs),
                         "mb_per_s": row["size"] / 1e6 / med,
                         "cpu_s": statistics.median(s.cpu_seconds for s in row["samples"]),
                         "peak_rss_mb": max(s.peak_rss_mb for s in row["samples"]),
                         "ratio_to_duckdb": base / med, "input_mb": row["size"] / 1e6}
        return out

    def render(self):
        lines = ["", "### %s" % self.title, "",
                 "| method | median s | min s | max s | MB/s | CPU s | peak RSS MB | x DuckDB |",
                 "|---|---|---|---|---|---|---|---|"]
        for name, r in sorted(self.summary().items(), key=lambda kv: kv[1]["median_s"]):
            lines.append("| %s | %.2f | %.2f | %.2f | %.0f | %.2f | %.0f | %.2f |" % (
                name, r["median_s"], r["min_s"], r["max_s"], r["mb_per_s"], r["cpu_s"], r["peak_rss_mb"],
                r["ratio_to_duckdb"]))
        return "\n".join(lines)


def machine():
    """What the numbers were measured on."""
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
        with open("/proc/meminfo") as meminfo:
            kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
            info["memory_gb"] = round(kb / 1024 / 1024, 1)
        with open("/proc/loadavg") as loadavg:
            info["load_average_at_start"] = loadavg.read().split()[0]
    except (OSError, StopIteration):
        pass
    return info


def bench_generator(rows, rounds):
    argv = [sys.executable, "-m", "chalicelib.generator", "--rows", str(rows), "--seed", "3"]
    samples = [run_process(argv, cwd=peers.ROOT) for _ in range(rounds)]
    for s in samples:
        if s.returncode:
            raise SystemExit("bench: generator failed:\n" + s.stderr_tail)
    med = statistics.median(s.seconds for s in samples)
    return {"rows": rows, "median_s": med, "rows_per_s": rows / med,
            "peak_rss_mb": max(s.peak_rss_mb for s in samples)}


def bench_convert(source, rounds, work, include_slow, title, ours_on=None):
    """Our job (on ``ours_on``, default ``source``) and the peers (on ``source``), alternately,
    ``rounds`` rounds. Returns the Table; our last output is ``work``/ours.parquet."""
    table = Table(title, peers.DUCKDB_COPY)
    ours_on = ours_on or source
    for round_number in range(1, rounds + 1):
        for name, argv in peers.convert_peers(include_slow).items():
            target = os.path.join(work, "peer.parquet")
            log("round %d: %s" % (round_number, name))
            table.add(name, run_process(argv(source, target)), os.path.getsize(source))
            if os.path.exists(target):
                os.remove(target)
        log("round %d: %s" % (round_number, OURS_CONVERT))
        table.add(OURS_CONVERT, run_process(
            peers.ours_convert(ours_on, os.path.join(work, "ours.parquet"), os.path.join(work, "q.jsonl")),
            cwd=peers.ROOT), os.path.getsize(ours_on))
        log("round %d: %s" % (round_number, OURS_CONVERT_DUCKDB))
        table.add(OURS_CONVERT_DUCKDB, run_process(
            peers.ours_convert(ours_on, os.path.join(work, "ours-duckdb.parquet"), os.path.join(work, "q-duckdb.jsonl"),
                               prover="duckdb"), cwd=peers.ROOT), os.path.getsize(ours_on))
    return table


def bench_normalize(raw_parquet, rounds, work, lake, what="input"):
    """Ours commits to a fresh Iceberg table each round (``lake``); returns (Table, last table name)."""
    size = os.path.getsize(raw_parquet)
    table = Table("normalize: drop PII + de-duplicate + commit to the Iceberg table (%s: %s MB Parquet)"
                  % (what, round(size / 1e6)), peers.DUCKDB_COPY_EXCLUDE)
    iceberg_table = None
    for round_number in range(1, rounds + 1):
        for name, argv in peers.normalize_peers().items():
            log("round %d: %s" % (round_number, name))
            table.add(name, run_process(argv(raw_parquet, os.path.join(work, "peer-norm.parquet"))), size)
        iceberg_table = lake.new_table()
        log("round %d: %s" % (round_number, OURS_NORMALIZE))
        table.add(OURS_NORMALIZE, run_process(
            peers.ours_normalize(raw_parquet, bench_lake.DATABASE, iceberg_table, os.path.join(work, "summary.json")),
            cwd=peers.ROOT, env=lake.env), size)
    return table, iceberg_table


def parquet_stats(path_glob):
    import duckdb

    row = duckdb.connect().execute(
        "SELECT count(*), sum(shipping_cost), sum(shipping_distance), sum(quantity) FROM read_parquet(?)",
        [path_glob]).fetchone()
    return {"rows": row[0], "shipping_cost": row[1], "shipping_distance": row[2], "quantity": row[3]}


def check(label, got, expected, checks):
    """Records whether ``got`` has ``expected``'s row count and (to float rounding) sums."""
    ok = got["rows"] == expected["rows"] and all(
        abs(got[k] - expected[k]) <= 1e-9 * max(1.0, abs(expected[k]))
        for k in ("shipping_cost", "shipping_distance", "quantity"))
    got = {k: got[k] for k in ("rows", "shipping_cost", "shipping_distance", "quantity")}
    expected = {k: expected[k] for k in ("rows", "shipping_cost", "shipping_distance", "quantity")}
    checks.append({"check": label, "ok": ok, "got": got, "expected": expected})
    log("%s %s" % ("OK  " if ok else "FAIL", label))
    return ok


def memory_at_4x(args, work, results, checks, report, lake):
    """Peak RSS of both jobs (and DuckDB's COPY) on 4x the main input, against 1x."""
    big = data.generated(args.rows * 4, 2, log)
    big_size = os.path.getsize(big)
    big_raw = os.path.join(work, "big.parquet")
    runs = [
        (peers.DUCKDB_COPY, peers.convert_peers(False)[peers.DUCKDB_COPY](big, os.path.join(work, "big-peer.parquet")),
         results["convert"][peers.DUCKDB_COPY]["peak_rss_mb"], None),
        (OURS_CONVERT, peers.ours_convert(big, big_raw, os.path.join(work, "big-q.jsonl")),
         results["convert"][OURS_CONVERT]["peak_rss_mb"], _convert_default_limit()),
        (OURS_CONVERT_DUCKDB, peers.ours_convert(big, os.path.join(work, "big-duckdb.parquet"),
                                                 os.path.join(work, "big-q-duckdb.jsonl"), prover="duckdb"),
         results["convert"][OURS_CONVERT_DUCKDB]["peak_rss_mb"], _convert_default_limit()),
        (OURS_NORMALIZE, peers.ours_normalize(big_raw, bench_lake.DATABASE, lake.new_table(),
                                              os.path.join(work, "big-summary.json")),
         results["normalize"][OURS_NORMALIZE]["peak_rss_mb"], _normalize_default_limit()),
    ]
    mem = {}
    report += ["", "### Peak RSS at 4x the input (%s MB NDJSON, %s rows; highest of %s, as at 1x)" % (
        round(big_size / 1e6), format(args.rows * 4, ","), "1 run" if args.rounds == 1 else "%d runs" % args.rounds), "",
        "| method | median s at 4x | peak RSS 1x MB | peak RSS 4x MB | growth | job memory limit |",
        "|---|---|---|---|---|---|"]
    # Peak RSS moves from run to run (by 20% for DuckDB's own COPY): each method runs as many
    # times at 4x as at 1x, alternately, and the highest peaks are compared.
    samples = {name: [] for name, _argv, _at_1x, _limit in runs}
    for round_number in range(args.rounds):
        for name, argv, _at_1x, _limit in runs:
            log("4x input, round %d/%d: %s" % (round_number + 1, args.rounds, name))
            sample = run_process(argv, cwd=peers.ROOT, env=lake.env)
            if sample.returncode:
                raise SystemExit("bench: %s failed on 4x input:\n%s" % (name, sample.stderr_tail))
            samples[name].append(sample)
    for name, _argv, at_1x, limit in runs:
        peak = max(sample.peak_rss_mb for sample in samples[name])
        seconds = statistics.median(sample.seconds for sample in samples[name])
        growth = peak / at_1x - 1
        mem[name] = {"seconds": seconds, "peak_rss_mb": peak, "peak_rss_1x_mb": at_1x,
                     "growth": growth, "memory_limit": limit,
                     "peak_rss_runs_mb": [sample.peak_rss_mb for sample in samples[name]]}
        report.append("| %s | %.2f | %.0f | %.0f | %+.0f%% | %s |" % (
            name, seconds, at_1x, peak, growth * 100, limit or ""))
    results["memory_4x"] = mem
    expected = data.expected_stats(big, log)
    check("json_to_parquet output = input (4x)", parquet_stats(big_raw), expected, checks)
    check("json_to_parquet --prover duckdb output = input (4x)",
          parquet_stats(os.path.join(work, "big-duckdb.parquet")), expected, checks)
    check("normalize output = distinct input rows (4x)", lake.stats(runs[-1][1][runs[-1][1].index("--table") + 1]),
          dict(expected, rows=expected["distinct_rows"]), checks)


def _convert_default_limit():
    """json_to_parquet's default --memory_limit (the whole job's)."""
    sys.path[:0] = [os.path.join(peers.ROOT, "glue"), peers.ROOT]
    try:
        from datapath import pipeline

        return pipeline.DEFAULT_MEMORY_LIMIT
    finally:
        del sys.path[:2]


def _normalize_default_limit():
    sys.path.insert(0, os.path.join(peers.ROOT, "glue"))
    try:
        import normalize

        return normalize.DEFAULT_MEMORY_LIMIT
    finally:
        sys.path.pop(0)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the main input (default 1,000,000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per method, run alternately (default 3)")
    parser.add_argument("--skip-4x", action="store_true", help="skip the peak-RSS check at 4x the input")
    parser.add_argument("--skip-slow", action="store_true", help="skip the pandas peer (slowest, ~2.5 GB)")
    parser.add_argument("--skip-e2e", action="store_true", help="skip the end-to-end latency on the local stack")
    parser.add_argument("--json", metavar="PATH", help="also write all results as JSON to PATH")
    args = parser.parse_args(argv)

    results = {"machine": machine(), "args": vars(args), "checks": []}
    checks = results["checks"]
    work = tempfile.mkdtemp(prefix="shipping-etl-bench-")
    m = results["machine"]
    report = ["## Benchmark: %s rows, %d rounds" % (format(args.rows, ","), args.rounds), "",
              "Machine: %s CPUs (%s), %s GB memory, %s, Python %s; load average at start %s." % (
                  m["cpus"], m.get("cpu", "?"), m.get("memory_gb", "?"), m["platform"], m["python"],
                  m.get("load_average_at_start", "?")),
              "",
              "C prover (glue/native): %s." % ("installed: %s runs with it" % OURS_CONVERT.split(": ")[1]
                                               if peers.c_prover_installed() else
                                               "NOT installed: both json_to_parquet rows use DuckDB's proof")]
    try:
        clean = data.generated(args.rows, 1, log)
        expected = data.expected_stats(clean, log)
        bad, bad_count = data.with_bad_lines(clean, 100, log)

        gen = bench_generator(args.rows, args.rounds)
        results["generator"] = gen
        report.append("\nGenerator (`python -m chalicelib.generator --rows %s`): %s rows/s (%.2f s median of %d, "
                      "peak RSS %.0f MB)" % (args.rows, format(int(gen["rows_per_s"]), ","), gen["median_s"],
                                             args.rounds, gen["peak_rss_mb"]))

        ours_raw = os.path.join(work, "ours.parquet")
        convert = bench_convert(clean, args.rounds, work, not args.skip_slow,
                                "json-to-parquet, clean input (%s MB NDJSON)" % round(os.path.getsize(clean) / 1e6))
        results["convert"] = convert.summary()
        report.append(convert.render())
        check("json_to_parquet output = input (clean)", parquet_stats(ours_raw), expected, checks)
        check("json_to_parquet --prover duckdb output = input (clean)",
              parquet_stats(os.path.join(work, "ours-duckdb.parquet")), expected, checks)
        keep_raw = os.path.join(work, "raw-1x.parquet")
        os.replace(ours_raw, keep_raw)

        bad_table = bench_convert(clean, args.rounds, work, False,
                                  "json-to-parquet, 1%% bad lines (%d bad lines in %s MB; the peers read the "
                                  "clean file)" % (bad_count, round(os.path.getsize(bad) / 1e6)), ours_on=bad)
        results["convert_bad"] = bad_table.summary()
        report.append(bad_table.render())
        check("json_to_parquet output = good lines (1% bad)", parquet_stats(ours_raw), expected, checks)
        check("json_to_parquet --prover duckdb output = good lines (1% bad)",
              parquet_stats(os.path.join(work, "ours-duckdb.parquet")), expected, checks)
        for label, name in (("quarantined = bad lines inserted", "q.jsonl"),
                            ("--prover duckdb: quarantined = bad lines inserted", "q-duckdb.jsonl")):
            with open(os.path.join(work, name), "rb") as quarantine:
                quarantined = sum(1 for _ in quarantine)
            ok = quarantined == bad_count
            checks.append({"check": label, "ok": ok, "got": quarantined, "expected": bad_count})
            log("%s %s: %d of %d" % ("OK  " if ok else "FAIL", label, quarantined, bad_count))

        lake = bench_lake.BenchLake(work)
        try:
            normalize, last_table = bench_normalize(keep_raw, args.rounds, work, lake)
            results["normalize"] = normalize.summary()
            report.append(normalize.render())
            check("normalize output = distinct input rows", lake.stats(last_table),
                  dict(expected, rows=expected["distinct_rows"]), checks)

            # A backfill: one file spanning two years of shipping dates (730 days, 25 months).
            history = data.history(args.rows, 3, HISTORY_DAYS, log)
            history_raw = os.path.join(work, "history.parquet")
            log("converting %s" % history)
            converted = run_process(peers.ours_convert(history, history_raw, os.path.join(work, "hq.jsonl")),
                                    cwd=peers.ROOT)
            if converted.returncode:
                raise SystemExit("bench: json_to_parquet failed on %s:\n%s" % (history, converted.stderr_tail))
            spread, last_table = bench_normalize(history_raw, args.rounds, work, lake,
                                                 what="%s rows over %d dates" % (format(args.rows, ","), HISTORY_DAYS))
            results["normalize_history"] = spread.summary()
            report.append(spread.render())
            history_expected = data.expected_stats(history, log)
            stats = lake.stats(last_table)
            report.append("\nData files written for the %d-date file: %d (one per month)." % (
                HISTORY_DAYS, stats["data_files"]))
            check("normalize output = distinct input rows (730 dates)", stats,
                  dict(history_expected, rows=history_expected["distinct_rows"]), checks)

            if not args.skip_4x:
                memory_at_4x(args, work, results, checks, report, lake)
        finally:
            lake.close()

        if not args.skip_e2e:
            from bench import e2e

            results["e2e"] = e2e.run(clean, log)
            report.append(e2e.render(results["e2e"]))
            rows = results["e2e"]["large"]["rows"]
            ok = rows["read"] == expected["rows"] and rows["quarantined"] == 0
            checks.append({"check": "end to end: rows read = input rows", "ok": ok, "got": rows,
                           "expected": expected["rows"]})

        report += ["", "### Correctness checks", ""] + [
            "- %s: %s" % (c["check"], "OK" if c["ok"] else "FAILED (got %s, expected %s)" % (c["got"], c["expected"]))
            for c in checks]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(report))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
    return 0 if all(c["ok"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
