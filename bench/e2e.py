"""End-to-end latency on the local stack: from the put of a landing object to its notification.

``run(clean_path, log)`` starts the embedded stack (``local.stack.LocalStack``: moto, the deploy,
S3 events to the Chalice handler, the Glue/crawler/Athena adapters), lands a 10-row file several
times and the given (large) file once, and times each from just before the put until the SNS
notification naming its source id has arrived in the stack's inbox queue. Each execution's
history splits that time into the state machine's steps, so the table says what dominates.
"""
import json
import os
import statistics
import tempfile
import time

from chalicelib.asl import step_of

SMALL_ROWS = 10
SMALL_RUNS = 5
# Generous: a 1M-row file on a busy 2-core machine takes tens of seconds end to end.
TIMEOUT_SECONDS = 600.0


def _head(path, lines):
    """The first ``lines`` lines of a file, as bytes."""
    out = []
    with open(path, "rb") as source:
        for _ in range(lines):
            line = source.readline()
            if not line:
                break
            out.append(line)
    return b"".join(out)


def _wait_for_notification(stack, source_id, deadline):
    """Returns the first notification body naming ``source_id`` (waiting on the inbox queue).
    Raises TimeoutError after ``deadline`` (time.monotonic())."""
    seen = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no notification for source id %s" % source_id)
        # Long polling answers as soon as a message arrives.
        messages = stack.notifications(wait_seconds=min(1, max(0, int(remaining))))
        for body in messages[seen:]:
            if source_id in body:
                return body
        seen = len(messages)


def _step_seconds(stack, execution_name):
    """``{step: seconds}`` of one execution, from its history (StateEntered -> StateExited of
    every state, summed per pipeline step; retries and poll waits count to their step)."""
    sfn = stack.client("stepfunctions")
    arn = stack.resources.execution_arn(execution_name)
    events = []
    for page in sfn.get_paginator("get_execution_history").paginate(executionArn=arn):
        events.extend(page["events"])
    entered, steps = {}, {}
    for event in events:
        kind = event["type"]
        if kind.endswith("StateEntered"):
            entered[event["stateEnteredEventDetails"]["name"]] = event["timestamp"]
        elif kind.endswith("StateExited"):
            name = event["stateExitedEventDetails"]["name"]
            if name in entered:
                seconds = (event["timestamp"] - entered.pop(name)).total_seconds()
                step = _step(name)
                steps[step] = steps.get(step, 0.0) + seconds
    return steps


def _step(state_name):
    try:
        return step_of(state_name) or "failure branch"
    except KeyError:
        return "other"


def _one(stack, body, key, log):
    """Lands ``body`` under ``key``; returns ``{"seconds", "steps", "execution_seconds", "rows"}``."""
    started = time.perf_counter()
    landed = stack.land(body, key=key)
    message = _wait_for_notification(stack, landed.source_id, time.monotonic() + TIMEOUT_SECONDS)
    seconds = time.perf_counter() - started
    described = stack.wait_for_executions([landed.execution_name], timeout=TIMEOUT_SECONDS)[landed.execution_name]
    if described["status"] != "SUCCEEDED":
        raise RuntimeError("execution %s ended %s: %s" % (landed.execution_name, described["status"],
                                                          described.get("cause") or described.get("error")))
    output = json.loads(described["output"])
    execution_seconds = (described["stopDate"] - described["startDate"]).total_seconds()
    log("e2e: %s (%d bytes): notified after %.2f s (execution %.2f s)"
        % (key, len(body), seconds, execution_seconds))
    return {"seconds": seconds, "execution_seconds": execution_seconds,
            "steps": _step_seconds(stack, landed.execution_name), "rows": output["rows"],
            "failure": "Shipping ETL processed" not in message}


def run(clean_path, log, small_runs=SMALL_RUNS):
    """Times the pipeline on the local stack. Returns ``{"small": {...}, "large": {...}}``: for
    the 10-row file every run and the median (the first run also pays for cold caches: Glue
    scripts downloaded, the catalog tables created), for ``clean_path`` its one run."""
    from local.stack import LocalStack

    small = _head(clean_path, SMALL_ROWS)
    with tempfile.TemporaryDirectory(prefix="shipping-etl-e2e-") as work:
        log("e2e: starting the local stack")
        started = time.perf_counter()
        with LocalStack(work_dir=work) as stack:
            startup = time.perf_counter() - started
            runs = [_one(stack, small, "incoming/bench/small-%d.json" % n, log) for n in range(small_runs)]
            large = _one(stack, open(clean_path, "rb").read(), "incoming/bench/large.json", log)
    seconds = [r["seconds"] for r in runs]
    steps = sorted({step for r in runs for step in r["steps"]})
    return {
        "stack_start_s": startup,
        "small": {"rows": SMALL_ROWS, "runs": runs, "median_s": statistics.median(seconds),
                  "min_s": min(seconds), "max_s": max(seconds),
                  "median_steps": {s: statistics.median(r["steps"].get(s, 0.0) for r in runs) for s in steps}},
        "large": dict(large, bytes=os.path.getsize(clean_path)),
    }


def render(result):
    """Markdown: the latency table and the time per step."""
    small, large = result["small"], result["large"]
    lines = ["", "### End to end on the local stack (landing put -> notification received)", "",
             "| file | runs | median s | min s | max s | execution s (median) |", "|---|---|---|---|---|---|",
             "| %d rows | %d | %.2f | %.2f | %.2f | %.2f |" % (
                 small["rows"], len(small["runs"]), small["median_s"], small["min_s"], small["max_s"],
                 statistics.median(r["execution_seconds"] for r in small["runs"])),
             "| %s rows (%d MB) | 1 | %.2f | | | %.2f |" % (
                 format(large["rows"]["read"], ","), round(large["bytes"] / 1e6), large["seconds"],
                 large["execution_seconds"]),
             "", "Seconds per step (state entered -> exited, retries and poll waits included):", "",
             "| step | 10 rows (median) | %s rows |" % format(large["rows"]["read"], ","), "|---|---|---|"]
    for step in sorted(set(small["median_steps"]) | set(large["steps"]),
                       key=lambda s: -large["steps"].get(s, 0.0)):
        lines.append("| %s | %.2f | %.2f |" % (step, small["median_steps"].get(step, 0.0), large["steps"].get(step, 0.0)))
    lines.append("")
    lines.append("Local stack start (moto server, deploy, app): %.1f s, not part of any latency above."
                 % result["stack_start_s"])
    return "\n".join(lines)
