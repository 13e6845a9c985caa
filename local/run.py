"""``python -m local run``: the whole pipeline once, on the embedded stack, from one command.

Starts the stack, deploys the ``local`` stage, lands a generated batch (or the given files,
unchanged) in the landing bucket and lets the S3 event drive everything. Waits for one execution
per landed object, then prints every notification, the app's ``/status`` answer and the totals
over the whole processed table. Progress goes to stderr, one line per step; results to stdout.

Fault injection (docs/ORCHESTRATION.md): ``--redeliver N`` hands every S3 event to the trigger N
times at once; ``--fail STEP`` makes every attempt of a pipeline step fail, ``--fail-once STEP``
only the first; ``--crawl-seconds S`` makes each local crawl take S seconds. The ``--json``
report counts the crawls the stack ran during the run (``"crawls"``) and what the trigger
answered to the deliveries (``"events"``).
"""
import argparse
import contextlib
import datetime as dt
import json
import logging
import operator
import os
import signal
import sys
import threading
import uuid

from botocore.exceptions import ClientError

from chalicelib import generator
from chalicelib import status as status_summaries
from chalicelib.asl import STEPS

log = logging.getLogger("local")

DEFAULT_ROWS = 100
DEFAULT_TIMEOUT = 300.0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a whole number, got %r" % text) from None
    if value < 1:
        raise argparse.ArgumentTypeError("expected a number >= 1, got %d" % value)
    return value


def _seconds(relation):
    """An argparse type: a number of seconds that is ``relation`` (``">"`` or ``">="``) 0."""
    holds = {">": operator.gt, ">=": operator.ge}[relation]

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError("expected a number of seconds, got %r" % text) from None
        if not holds(value, 0):  # NaN holds neither
            raise argparse.ArgumentTypeError("expected a number of seconds %s 0, got %r" % (relation, text))
        return value

    return parse


_positive_float = _seconds(">")
_non_negative_float = _seconds(">=")


def _port(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a port number, got %r" % text) from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("expected a port number 0-65535 (0: any free port), got %d" % value)
    return value


def _setting(text):
    """``NAME=VALUE`` as ``python -m deploy up --set`` parses it."""
    from deploy.__main__ import _setting as deploy_setting

    return deploy_setting(text)


def add_arguments(parser):
    """The ``run`` command's options."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--rows", type=_positive_int, default=None, metavar="N",
        help="land one generated batch of N valid records (default: %d)" % DEFAULT_ROWS)
    source.add_argument(
        "--file", action="append", default=None, metavar="PATH", dest="files",
        help="land this NDJSON file (optionally gzipped) unchanged; repeat for more files, each "
        "gets its own execution")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the generated batch, for a reproducible one (with --rows)")
    parser.add_argument("--json", action="store_true",
                        help="end stdout with one line holding the results as a JSON object")
    parser.add_argument("--timeout", type=_positive_float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help="give up waiting for the executions after this long (default: %g)"
                        % DEFAULT_TIMEOUT)
    parser.add_argument("--port", type=_port, default=0,
                        help="port of the embedded AWS endpoint (default: 0, any free port)")
    parser.add_argument("--set", dest="overrides", action="append", type=_setting, default=[],
                        metavar="NAME=VALUE",
                        help="a setting of the local stage for this run, as `python -m deploy up --set` "
                        "takes it (repeatable), e.g. --set GLUE_MAX_CONCURRENT_RUNS=2; the checked-in "
                        ".chalice/ files are put back when the run ends (`python -m deploy up --help` "
                        "lists the settings)")
    parser.add_argument("--deny", action="append", default=[], metavar="ACTION",
                        help="remove this IAM action (e.g. s3:PutObject, glue:GetTable) from every policy "
                        "of the stage before the run (repeatable): the run then fails where AWS would, "
                        "with AccessDenied naming the action")
    parser.add_argument("--work-dir", default=None, metavar="DIR",
                        help="where the stack keeps job logs and caches (default: .local-stack in the "
                        "project directory)")
    faults = parser.add_argument_group(
        "fault injection", "make the local stack misbehave as AWS sometimes does (steps: %s)" % ", ".join(STEPS))
    faults.add_argument("--redeliver", type=_positive_int, default=1, metavar="N",
                        help="deliver every S3 event N times at once, as S3's at-least-once delivery may "
                        "(default: 1)")
    faults.add_argument("--fail", action="append", default=[], choices=STEPS, metavar="STEP",
                        help="make every attempt of STEP fail (repeatable): the execution ends FAILED "
                        "with a failure notification naming STEP")
    faults.add_argument("--fail-once", action="append", default=[], choices=STEPS, metavar="STEP",
                        dest="fail_once",
                        help="make only the first attempt of STEP in each execution fail (for a crawl "
                        "step: the crawler's first crawl); the state machine's retry recovers")
    faults.add_argument("--crawl-seconds", type=_non_negative_float, default=0.0, metavar="S",
                        dest="crawl_seconds",
                        help="make each local crawl take S seconds, as AWS crawls take minutes (default: 0)")
    return parser


def execution_result(name, described, summary):
    """One entry of the report's ``executions``: from the ``/status`` summary when it lists the
    execution (more than /status shows at once: summarized here the same way), else from
    describe_execution (``described`` may be None: never started)."""
    if summary is None and described is not None:
        summary = status_summaries.summarize(described)
    summary = summary or {}
    status = summary.get("status") or (described or {}).get("status") or "NOT_STARTED"
    return {
        "name": name,
        "status": status,
        "source": summary.get("source"),
        "rows": summary.get("rows"),
        "totals": summary.get("totals"),
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
        return [stack.land(path) for path in args.files]
    rows = args.rows or DEFAULT_ROWS
    now = dt.datetime.now(dt.timezone.utc)
    body = generator.generate_ndjson(rows, seed=args.seed, today=now.date()).encode("utf-8")
    log.info("generated %d records (%d bytes)", rows, len(body))
    return [stack.land(body, key=generator.landing_key(now, uuid.uuid4().hex[:12]))]


def _arm_faults(stack, args):
    stack.clear_faults()
    for step in getattr(args, "fail", None) or ():
        stack.inject_fault(step)
    for step in getattr(args, "fail_once", None) or ():
        stack.inject_fault(step, once=True)
    crawl_seconds = getattr(args, "crawl_seconds", 0) or 0
    stack.set_crawl_seconds(crawl_seconds)
    # The local stage polls crawlers without pause (its crawls take milliseconds); crawls made to
    # take seconds are polled every second, as AWS's are every POLL_SECONDS.
    stack.poll_seconds = 1 if crawl_seconds >= 1 else None
    stack.events.redeliver = getattr(args, "redeliver", 1) or 1
    armed = ["--fail %s" % s for s in getattr(args, "fail", None) or ()]
    armed += ["--fail-once %s" % s for s in getattr(args, "fail_once", None) or ()]
    if getattr(args, "crawl_seconds", 0):
        armed.append("--crawl-seconds %g" % args.crawl_seconds)
    if stack.events.redeliver > 1:
        armed.append("--redeliver %d" % stack.events.redeliver)
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
        landed = _land_all(stack, args)
        names = [item.execution_name for item in landed]
        timed_out = None
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
        _print_results(out, notifications, status, totals, totals_error)
        failed = [e for e in executions if e["status"] != "SUCCEEDED"]
        for entry in failed:
            log.error("execution %s %s%s: %s", entry["name"], entry["status"],
                      " at %s" % entry["failed_step"] if entry["failed_step"] else "",
                      short_cause(entry["cause"]) or entry["error"] or "no cause recorded")
        if args.json:
            report = {"executions": executions, "totals": totals, "crawls": crawls, "events": events}
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
