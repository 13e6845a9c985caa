"""``python -m local``: the embedded local stack's command line."""
import sys

from local import run, serve
from local.cli import build_parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "up":
        serve.configure_logging()
        return serve.main(args)
    run.configure_logging()
    return run.main(args)


if __name__ == "__main__":
    sys.exit(main())
