"""``python -m local``: the embedded local stack's command line."""
import argparse
import sys

from local import run


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
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    run.configure_logging()
    return run.main(args)


if __name__ == "__main__":
    sys.exit(main())
