"""Command line: ``python -m deploy up|down --stage S``."""
import argparse
import sys

from deploy.commands import REPO_ROOT, down, up
from deploy.errors import DeployError

DESCRIPTION = """\
Create, update or remove every AWS resource of one Shipping ETL stage.

up    creates or updates the landing and lake buckets (private, SSE-S3, TLS only), the IAM roles
      of the Glue jobs, crawlers and state machine, the Glue scripts under
      s3://<lake>/glue-assets/, the Glue database, jobs and crawlers, the Athena workgroup, the
      SNS topic and the state machine; then writes the stage's environment variables into
      .chalice/config.json and the Lambdas' policy into .chalice/policy-<stage>.json.
      Running it again changes only what differs. Then: chalice deploy --stage <stage>.
down  removes all of that except the buckets and their data (unless --delete-data).
      Remove the app first with: chalice delete --stage <stage>.
"""
EPILOG = """\
Credentials, region and endpoint come from the usual AWS settings (AWS_PROFILE,
AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION); the account from STS. Set
AWS_ENDPOINT_URL to deploy into an emulator such as the local stack. Lambda settings are read
from SCHEDULE_MINUTES, GENERATOR_ROWS and POLL_SECONDS when set, else kept from the stage's
config.json, else defaulted.
"""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m deploy", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{up,down}")

    def common(sub):
        sub.add_argument("--stage", required=True, help="stage name, e.g. dev (part of every resource name)")
        sub.add_argument("--region", help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, "
                                          "the profile's region, else us-east-1)")
        sub.add_argument("--dry-run", action="store_true",
                         help="only show what would be created, updated or deleted")

    up_parser = commands.add_parser("up", help="create or update the stage's resources",
                                    description="Create or update every resource of a stage.")
    common(up_parser)
    up_parser.add_argument("--project-dir", default=str(REPO_ROOT),
                           help="Chalice project (repository root): .chalice/ is written there, "
                                "glue/ and chalicelib/ read from there (default: %(default)s)")

    down_parser = commands.add_parser("down", help="remove the stage's resources",
                                      description="Remove what `up` created for a stage.")
    common(down_parser)
    down_parser.add_argument("--delete-data", action="store_true",
                             help="also empty (every object version) and delete both buckets")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.command == "up":
            up(args.stage, region=args.region, project_dir=args.project_dir, dry_run=args.dry_run)
        else:
            down(args.stage, region=args.region, delete_data=args.delete_data, dry_run=args.dry_run)
    except DeployError as exc:
        print("deploy: error: %s" % exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("deploy: interrupted; run the same command again to finish.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
