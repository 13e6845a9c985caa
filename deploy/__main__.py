"""Command line: ``python -m deploy up|down --stage S``."""
import argparse
import sys

from chalicelib.settings import DEPLOY_SETTINGS, Settings
from deploy.commands import REPO_ROOT, api, down, up, write_chalice_files
from deploy.errors import DeployError

DESCRIPTION = """\
Create, update or remove every AWS resource of one Shipping ETL stage.

up    creates or updates the landing and lake buckets (private, SSE-S3, TLS only, versioned
      landing, expiring PII), the IAM roles of the Glue jobs, crawlers and state machine, the
      stage's KMS key, the Glue scripts, the jobs' library wheels (resolved for Glue's Python
      3.9 platform, with hashes) and the C module's wheel (when this machine can build it)
      under s3://<lake>/glue-assets/, the Glue database, jobs and crawlers, the Athena
      workgroup, the encrypted SNS topic (and an e-mail subscriber), the state machine and its
      log group; then writes the stage's settings into .chalice/config.json and the Lambdas'
      policy into .chalice/policy-<stage>.json.
      Running it again changes only what differs. Then: chalice deploy --stage <stage>,
      and python -m deploy api --stage <stage>.
api   after chalice deploy: throttles the REST API's stage and turns on its access log.
down  removes all of that except the buckets and their data (unless --delete-data); the KMS
      key is scheduled for deletion in 7 days.
      Remove the app first with: chalice delete --stage <stage>.
"""
EPILOG = """\
Credentials, region and endpoint come from the usual AWS settings (AWS_PROFILE,
AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION); the account from STS. Set
AWS_ENDPOINT_URL to deploy into an emulator such as the local stack.

Settings are read from --set NAME=VALUE, else from the environment variable NAME, else kept
from the stage's .chalice/config.json, else defaulted. Lambda settings: SCHEDULE_MINUTES,
GENERATOR_ROWS, POLL_SECONDS. Deploy settings (default in brackets):
"""


def _deploy_settings_help():
    defaults = Settings().deploy_environment()
    return "\n".join("  %-29s %s [%s]" % (name, meaning, defaults[name] or "none")
                     for name, _field, meaning in DEPLOY_SETTINGS)


def _setting(text):
    """``NAME=VALUE`` -> (NAME, VALUE); the value may be empty (clears it)."""
    name, sep, value = text.partition("=")
    known = [n for n, _f, _m in DEPLOY_SETTINGS] + ["SCHEDULE_MINUTES", "GENERATOR_ROWS", "POLL_SECONDS"]
    if not sep or name not in known:
        raise argparse.ArgumentTypeError(
            "expected NAME=VALUE with NAME one of %s, got %r" % (", ".join(known), text))
    return name, value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m deploy", description=DESCRIPTION, epilog=EPILOG + _deploy_settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{up,api,down}")

    def common(sub):
        sub.add_argument("--stage", required=True, help="stage name, e.g. dev (part of every resource name)")
        sub.add_argument("--region", help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, "
                                          "the profile's region, else us-east-1)")
        sub.add_argument("--dry-run", action="store_true",
                         help="only show what would be created, updated or deleted")

    up_parser = commands.add_parser(
        "up", help="create or update the stage's resources",
        description="Create or update every resource of a stage.",
        epilog=EPILOG + _deploy_settings_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    common(up_parser)
    up_parser.add_argument("--set", dest="overrides", action="append", type=_setting, default=[],
                           metavar="NAME=VALUE",
                           help="a setting for this stage (repeatable; kept for later runs), "
                                "e.g. --set NOTIFICATION_EMAIL=team@example.com")
    up_parser.add_argument("--offline", action="store_true",
                           help="with --account-id: make no AWS call, only write the stage's "
                                ".chalice/config.json values and the Lambdas' policy files, which "
                                "`chalice package` needs (a fresh clone, no AWS account)")
    up_parser.add_argument("--account-id", metavar="ID",
                           help="the account the policies name, with --offline (default: from STS)")
    up_parser.add_argument("--project-dir", default=str(REPO_ROOT),
                           help="Chalice project (repository root): .chalice/ is written there, "
                                "glue/ and chalicelib/ read from there (default: %(default)s)")

    api_parser = commands.add_parser(
        "api", help="after chalice deploy: throttle the REST API's stage and turn on its access log",
        description="After `chalice deploy --stage S`: set throttling (rate and burst) on every method "
                    "of the REST API's stage and send its access log to the stage's encrypted log group.")
    api_parser.add_argument("--stage", required=True, help="stage name, e.g. dev")
    api_parser.add_argument("--region", help="AWS region (as for up)")
    api_parser.add_argument("--project-dir", default=str(REPO_ROOT),
                            help="Chalice project: .chalice/deployed/<stage>.json names the API "
                                 "(default: %(default)s)")

    down_parser = commands.add_parser("down", help="remove the stage's resources",
                                      description="Remove what `up` created for a stage.")
    common(down_parser)
    down_parser.add_argument("--delete-data", action="store_true",
                             help="also empty (every object version) and delete both buckets")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.command == "up" and args.offline:
            write_chalice_files(args.stage, args.account_id, region=args.region,
                                project_dir=args.project_dir, overrides=dict(args.overrides))
        elif args.command == "api":
            api(args.stage, region=args.region, project_dir=args.project_dir)
        elif args.command == "up":
            up(args.stage, region=args.region, project_dir=args.project_dir, dry_run=args.dry_run,
               overrides=dict(args.overrides))
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
