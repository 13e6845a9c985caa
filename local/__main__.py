"""``python -m local``: the embedded local stack's command line."""
import argparse
import sys

from local import run, serve


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m local",
        description="Shipping ETL on an embedded AWS stack (moto plus adapters that run the Glue "
        "jobs, crawlers and Athena queries), with no AWS account.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    run.add_arguments(commands.add_parser(
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
    serve.add_arguments(commands.add_parser(
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


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "up":
        serve.configure_logging()
        return serve.main(args)
    run.configure_logging()
    return run.main(args)


if __name__ == "__main__":
    sys.exit(main())
