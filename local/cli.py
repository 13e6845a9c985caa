"""The command line of ``python -m local``, in one place: the ``run`` and ``up`` commands, their
options and the argument types they share. ``local.run`` and ``local.serve`` hold what the
commands do; each gets the parsed arguments."""
import argparse
import operator

from local import faults as fault_injection

DEFAULT_ROWS = 100
DEFAULT_TIMEOUT = 300.0
DEFAULT_PORT = 8000  # of `up`


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


def _landing_key(text):
    from chalicelib import identifiers
    from chalicelib.resources import INCOMING_PREFIX

    try:
        return identifiers.object_key(text, INCOMING_PREFIX)
    except identifiers.InvalidIdentifier as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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


def add_run_arguments(parser):
    """The ``run`` command's options."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--rows", type=_positive_int, default=None, metavar="N",
        help="land one generated batch of N valid records (default: %d)" % DEFAULT_ROWS)
    source.add_argument(
        "--file", action="append", default=None, metavar="PATH", dest="files",
        help="land this NDJSON file (optionally gzipped) unchanged; repeat for more files, each "
        "gets its own execution")
    parser.add_argument("--key", default=None, metavar="KEY", type=_landing_key,
                        help="land every --file at this one key (under incoming/), in the order given, "
                        "without waiting between them: each is a new version of the key and gets its "
                        "own execution; the newest version's rows replace the earlier ones'")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the generated batch, for a reproducible one (with --rows)")
    parser.add_argument("--json", action="store_true",
                        help="end stdout with one line holding the results as a JSON object")
    parser.add_argument("--sequential", action="store_true",
                        help="land the files one after another, each once the previous file's execution "
                        "has ended (default: all at once), to see how per-file cost grows with the table")
    parser.add_argument("--maintenance", action="store_true",
                        help="after the executions, run the lake maintenance (OPTIMIZE ... REWRITE DATA USING "
                        "BIN_PACK, then VACUUM, through Athena) and report the processed table's data files "
                        "per partition and snapshots before and after (\"maintenance\" in --json)")
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
    _add_work_dir(parser)
    faults = parser.add_argument_group(
        "fault injection", "make the local stack misbehave as AWS sometimes does (steps: %s)" % ", ".join(fault_injection.FAULT_STEPS))
    faults.add_argument("--redeliver", type=_positive_int, default=1, metavar="N",
                        help="deliver every S3 event N times at once, as S3's at-least-once delivery may "
                        "(default: 1)")
    faults.add_argument("--fail", action="append", default=[], choices=fault_injection.FAULT_STEPS, metavar="STEP",
                        help="make every attempt of STEP fail (repeatable): the execution ends FAILED "
                        "with a failure notification naming STEP")
    faults.add_argument("--fail-once", action="append", default=[], choices=fault_injection.FAULT_STEPS, metavar="STEP",
                        dest="fail_once",
                        help="make only the first attempt of STEP in each execution fail (for a crawl "
                        "step: the crawler's first crawl); the state machine's retry recovers")
    faults.add_argument("--crawl-seconds", type=_non_negative_float, default=0.0, metavar="S",
                        dest="crawl_seconds",
                        help="make each local crawl take S seconds, as AWS crawls take minutes (default: 0)")
    return parser


def _positive_minutes(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number of minutes, got %r" % text) from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError("expected a number of minutes > 0, got %r" % text)
    return value


def add_up_arguments(parser):
    """The ``up`` command's options."""
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT,
                        help="port of the app's API and dashboard on 127.0.0.1 (default: %d; 0: any "
                        "free port)" % DEFAULT_PORT)
    parser.add_argument("--aws-port", type=_port, default=None, metavar="PORT",
                        help="port of the embedded AWS endpoint (default: --port + 1; any free port "
                        "with --port 0)")
    parser.add_argument("--every-minutes", type=_positive_minutes, default=None, metavar="N",
                        help="run the scheduled generator every N minutes (default: the app's "
                        "schedule, SCHEDULE_MINUTES of the stage); it also runs once at start")
    parser.add_argument("--rows", type=_positive_int, default=None, metavar="N",
                        help="records per generated batch (default: the stage's GENERATOR_ROWS)")
    _add_work_dir(parser)
    return parser




def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m local",
        description="Shipping ETL on an embedded AWS stack (moto plus adapters that run the Glue "
        "jobs, crawlers and Athena queries), with no AWS account.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    add_run_arguments(commands.add_parser(
        "run",
        help="run the whole pipeline once: start the stack, deploy the local stage, land data, "
        "wait for the executions, print notifications, /status and totals",
        description="Start the embedded stack, deploy the 'local' stage with the project's deploy, "
        "land a generated batch (default) or the given files unchanged under incoming/ in the "
        "landing bucket, and let the S3 event drive the pipeline. Waits for one execution per "
        "landed object, prints every SNS notification, the app's GET /status answer and the totals "
        "over the whole processed table. Progress goes to stderr. Exit status: 0 when every "
        "execution succeeded, 1 when one failed or timed out, 2 on bad arguments, 130 on Ctrl-C.",
    ))
    add_up_arguments(commands.add_parser(
        "up",
        help="run the stack as a service: the app's API and dashboard on 127.0.0.1, its schedule, "
        "and S3 events for every uploaded file, until Ctrl-C",
        description="Start the embedded stack, deploy the 'local' stage, and keep the whole app "
        "running: its routes (GET /status, GET /status/{name}, the dashboard at /) are served on "
        "127.0.0.1, its scheduled generator runs once at start and then on its schedule, and every "
        "object put under incoming/ in the landing bucket (aws s3 cp, boto3, ... against the printed "
        "AWS endpoint) reaches the S3 handler and starts a run. One log line per event on stderr. "
        "Ctrl-C or SIGTERM stops everything; exit status 0, or 1 when it cannot start.",
    ))
    return parser


def _add_work_dir(parser):
    parser.add_argument("--work-dir", default=None, metavar="DIR",
                        help="where the stack keeps its TLS certificate, job logs and caches, one stack "
                        "at a time (default: .local-stack in the project directory, or .local-stack-2 "
                        "and on while another stack, such as a `local up`, uses it)")
