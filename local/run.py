"""``python -m local run``: the whole pipeline once, on the embedded stack, from one command.

Starts the stack, deploys the ``local`` stage, lands a generated batch (or the given files,
unchanged) in the landing bucket and lets the S3 event drive everything. Waits for one execution
per landed object, then prints every notification, the app's ``/status`` answer and the totals
over the whole processed table. Progress goes to stderr, one line per step; results to stdout.

Fault injection (docs/ORCHESTRATION.md): ``--redeliver N`` hands every S3 event to the trigger N
times at once; ``--fail STEP`` makes every attempt of a pipeline step fail, ``--fail-once STEP``
only the first; ``--crawl-seconds S`` makes each local crawl take S seconds. The ``--json``
report counts the crawls the stack ran during the run (``"crawls"``) and what the trigger
answered to the deliveries (``"events"``). At the end the stack evaluates the stage's CloudWatch alarms
on the metrics the executions published (moto only stores alarms: local/alarms.py) and prints their states
(``"alarms": {name: state}`` in the report; docs/OPERATIONS.md).
"""
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import sys
import threading
import uuid

from botocore.exceptions import ClientError

from chalicelib import generator
from chalicelib import status as status_summaries
from local import faults as fault_injection
from local.cli import DEFAULT_ROWS

log = logging.getLogger("local")

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def execution_result(name, described, summary):
    """One entry of the report's ``executions``: from the ``/status`` summary when it lists the
    execution described, else from describe_execution, summarized the same way (``described``
    may be None: never started)."""
    if described is not None and (summary is None or summary.get("source") is None):
        # /status describes at most MAX_DESCRIBES_PER_REQUEST executions per request and
        # summarizes the rest from their list entries, which carry no input or output (so no
        # source): a run of more files than that would report no rows or scanned bytes for them.
        summary = status_summaries.summarize(described)
    summary = summary or {}
    status = summary.get("status") or (described or {}).get("status") or "NOT_STARTED"
    return {
        "name": name,
        "status": status,
        "source": summary.get("source"),
        "rows": summary.get("rows"),
        "totals": summary.get("totals"),
        "scanned_bytes": summary.get("scanned_bytes"),
        "superseded": summary.get("superseded"),
        "error": summary.get("error") or (described or {}).get("error"),
        "cause": summary.get("cause") or (described or {}).get("cause"),
        "failed_step": summary.get("failed_step"),
        "duration_seconds": summary.get("duration_seconds"),
        "notification_id": summary.get("notification_id"),
    }


def short_cause(cause):
    """The readable part of a failure cause: a failed Glue job run's cause is the whole JobRun
    as JSON, of which only ErrorMessage says what went wrong."""
    try:
        parsed = json.loads(cause)
    except (TypeError, ValueError):
        return cause
    if isinstance(parsed, dict) and parsed.get("ErrorMessage"):
        return parsed["ErrorMessage"]
    return cause


def _land_all(stack, args):
    if args.files:
        return [stack.land(path, key=getattr(args, "key", None)) for path in args.files]
    rows = args.rows or DEFAULT_ROWS
    now = dt.datetime.now(dt.timezone.utc)
    body = generator.generate_ndjson(rows, seed=args.seed, today=now.date()).encode("utf-8")
    log.info("generated %d records (%d bytes)", rows, len(body))
    return [stack.land(body, key=generator.landing_key(now, uuid.uuid4().hex[:12]))]


def _land_one_by_one(stack, args, timeout_error):
    """``--sequential``: lands each file once the previous file's execution has ended.
    Returns ``(names, {name: described}, ExecutionTimeout or None)``; ``--timeout`` applies to
    each execution."""
    names, described = [], {}
    for path in args.files or ():
        name = stack.land(path, key=getattr(args, "key", None)).execution_name
        names.append(name)
        try:
            described.update(stack.wait_for_executions([name], timeout=args.timeout))
        except timeout_error as error:
            log.error("%s", error)
            described.update(_describe_now(stack, names))
            return names, described, error
    if not args.files:
        landed = _land_all(stack, args)
        names = [item.execution_name for item in landed]
        described.update(stack.wait_for_executions(names, timeout=args.timeout))
    return names, described, None


def _arm_faults(stack, args):
    armed = fault_injection.arm(
        stack, fail=getattr(args, "fail", None), fail_once=getattr(args, "fail_once", None),
        crawl_seconds=getattr(args, "crawl_seconds", 0), redeliver=getattr(args, "redeliver", 1))
    if armed:
        log.info("faults: %s", ", ".join(armed))


def run(args, out=None, stack=None):
    """Runs the pipeline as ``args`` say; writes results to ``out``. Returns the exit status.

    ``stack``: a started ``LocalStack`` to use (and leave running) instead of a new one; the
    run's faults are removed from it when the run ends.
    """
    from local.stack import ExecutionTimeout, LocalStack, QueryFailed

    out = out or sys.stdout
    own_stack = stack is None
    if own_stack:
        stack = LocalStack(port=args.port, work_dir=args.work_dir,
                           overrides=dict(getattr(args, "overrides", None) or ()),
                           deny=getattr(args, "deny", None) or ())
    try:
        if own_stack:
            stack.start()
        _arm_faults(stack, args)
        crawls_before = stack.crawls
        outcomes_before = dict(stack.events.outcomes)
        notifications_before = len(stack.notifications(wait_seconds=0))
        dropped_before = stack.events.dropped
        reconciled = 0
        timed_out = None
        if getattr(args, "sequential", False):
            names, described, timed_out = _land_one_by_one(stack, args, ExecutionTimeout)
        else:
            landed = _land_all(stack, args)
            names = [item.execution_name for item in landed]
            if fault_injection.TRIGGER in (getattr(args, "fail", None) or ()):
                reconciled = _recover_lost_events(stack, dropped_before + len(landed), args.timeout)
            try:
                described = stack.wait_for_executions(names, timeout=args.timeout)
            except ExecutionTimeout as error:
                timed_out = error
                log.error("%s", error)
                described = _describe_now(stack, names)
        # The faults were for the pipeline: this run's own totals query must not hit them.
        stack.clear_faults()
        crawls = stack.crawls - crawls_before
        events = {outcome: count - outcomes_before.get(outcome, 0)
                  for outcome, count in stack.events.outcomes.items()
                  if count != outcomes_before.get(outcome, 0)}
        log.info("crawls run: %d; the trigger answered: %s", crawls,
                 ", ".join("%s %d" % item for item in sorted(events.items())) or "nothing")
        notifications = stack.notifications(wait_seconds=0)[notifications_before:]
        status = stack.status(limit=min(status_summaries.MAX_LIMIT,
                                        max(status_summaries.DEFAULT_LIMIT, len(names))))
        summaries = {s.get("name"): s for s in status.get("executions", [])}
        executions = [execution_result(n, described.get(n), summaries.get(n)) for n in names]
        if timed_out is not None:
            for entry in executions:
                if entry["name"] in timed_out.pending:
                    entry["error"] = entry["error"] or "timed out after %g s" % args.timeout
        totals, totals_error = None, None
        if any(e["status"] == "SUCCEEDED" for e in executions):
            try:
                totals = stack.query_totals()
            except QueryFailed as error:
                totals_error = str(error)
                log.error("%s", error)
        else:
            totals_error = "no execution succeeded: the processed table holds nothing from this run"
        maintenance = None
        if getattr(args, "maintenance", False):
            from local.lake_report import run_maintenance

            maintenance = run_maintenance(stack)
            try:
                maintenance["totals_after"] = stack.query_totals()
            except QueryFailed as error:
                maintenance["totals_after"] = None
                log.error("%s", error)
        # After the executions (their metrics are in) and the maintenance: what CloudWatch would say now.
        alarm_states = stack.evaluate_alarms()
        _print_results(out, notifications, status, totals, totals_error)
        _print_alarms(out, alarm_states)
        failed = [e for e in executions if e["status"] != "SUCCEEDED"]
        for entry in failed:
            log.error("execution %s %s%s: %s", entry["name"], entry["status"],
                      " at %s" % entry["failed_step"] if entry["failed_step"] else "",
                      short_cause(entry["cause"]) or entry["error"] or "no cause recorded")
        if args.json:
            report = {"executions": executions, "totals": totals, "crawls": crawls, "events": events,
                      "reconciled": reconciled, "alarms": alarm_states}
            if maintenance is not None:
                report["maintenance"] = maintenance
            if totals_error:
                report["totals_error"] = totals_error
            out.write(json.dumps(report, sort_keys=True) + "\n")
            out.flush()
        return EXIT_FAILED if failed or totals is None else 0
    finally:
        if own_stack:
            with _uninterruptible():
                stack.stop()
            log.info("stack stopped")
        elif stack.embedded is not None:
            stack.clear_faults()
            stack.events.redeliver = 1
            stack.poll_seconds = None


def _recover_lost_events(stack, dropped_total, timeout):
    """``--fail trigger``: every delivery failed, so nothing started. Once Lambda's retries are
    exhausted (the events are in the on-failure queue), clear the faults and run the reconciler
    once, as its schedule would. Returns how many executions it started."""
    if not stack.wait_for_dead_letters(dropped_total, timeout=timeout):
        log.error("the S3 events were not given up on within %g s", timeout)
    stack.clear_faults()
    summary = stack.reconcile() or {}
    log.info("reconciler: %d execution(s) started, %d dead-lettered event(s) resolved",
             summary.get("reconciled", 0), summary.get("dead_letters_resolved", 0))
    return summary.get("reconciled", 0)


@contextlib.contextmanager
def _uninterruptible():
    """A second Ctrl-C must not cut the shutdown short and leave the server or a job behind."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives signals
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _exit_on_sigterm(signum, frame):
    # Unwinds like Ctrl-C, so the stack stops on the way out (`kill`, a CI runner's timeout).
    raise SystemExit(128 + signum)


def _describe_now(stack, names):
    sfn = stack.client("stepfunctions")
    described = {}
    for name in names:
        try:
            described[name] = sfn.describe_execution(executionArn=stack.resources.execution_arn(name))
        except ClientError as error:
            if error.response["Error"]["Code"] != "ExecutionDoesNotExist":
                raise
            described[name] = None  # the S3 event never started it: reported as NOT_STARTED
    return described


def _print_results(out, notifications, status, totals, totals_error):
    out.write("== notifications (%d)\n" % len(notifications))
    for i, body in enumerate(notifications, 1):
        out.write("-- %d\n%s\n" % (i, body.rstrip("\n")))
    out.write("== GET /status\n%s\n" % json.dumps(status, indent=2, sort_keys=True))
    out.write("== totals over the processed table (Athena)\n")
    if totals is None:
        out.write("none: %s\n" % totals_error)
    else:
        width = max(len(k) for k in totals)
        for key, value in totals.items():
            out.write("%-*s  %s\n" % (width, key, value))
    out.flush()


def _print_alarms(out, alarm_states):
    out.write("== CloudWatch alarms (evaluated now)\n")
    for name, state in sorted(alarm_states.items()):
        out.write("%-17s %s\n" % (state, name))
    out.flush()


def configure_logging():
    """Progress lines to stderr, one per step; the engines' chatter stays quiet."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("local", "deploy"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    # "local.embedded" announces the endpoint, which the stack reports itself
    for noisy in ("werkzeug", "botocore", "boto3", "urllib3", "moto", "local.embedded"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def main(args):
    """Entry point of ``python -m local run`` with parsed arguments. Returns the exit status."""
    if args.seed is not None and args.files:
        log.error("--seed applies to a generated batch (--rows), not to --file")
        return EXIT_USAGE
    if getattr(args, "key", None) and not args.files:
        log.error("--key lands the --file arguments at one key: give at least one --file")
        return EXIT_USAGE
    for path in args.files or ():
        if not os.path.isfile(path):
            log.error("no such file: %s", path)
            return EXIT_USAGE
    from deploy import DeployError

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        # Also when started as a `&` job of a script, which inherits SIGINT ignored: an interrupt
        # (Ctrl-C, `kill -INT`, a CI runner) still stops the stack and exits 130.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return run(args)
    except KeyboardInterrupt:
        log.error("interrupted: stack stopped")
        return EXIT_INTERRUPTED
    except DeployError as error:
        log.error("deploy failed: %s", error)
        return EXIT_FAILED
    except OSError as error:  # e.g. --port taken, a file unreadable
        log.error("error: %s", error)
        return EXIT_FAILED
