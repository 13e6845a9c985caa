"""Runtime settings, read from the environment.

On AWS the values come from the stage's ``environment_variables`` in ``.chalice/config.json``,
which ``python -m deploy up`` writes; chalice also applies them while it imports app.py at deploy
time, which is how the decorators see the right bucket for the stage. Locally the embedded stack
sets the same variables. Every default works for the local stack.
"""
import os
import re
from dataclasses import dataclass

APP_NAME = "shipping-etl"
LOCAL_ACCOUNT_ID = "123456789012"  # moto's default account
DEFAULT_REGION = "us-east-1"


# Values AWS accepts, checked here so a typo fails before the deploy changes anything.
STATE_MACHINE_LOG_LEVELS = ("ALL", "ERROR", "FATAL", "OFF")
GLUE_JOB_CAPACITIES = (0.0625, 1.0)  # the only two sizes of a Glue Python shell job, in DPU
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827,
                      2192, 2557, 2922, 3288, 3653)  # CloudWatch Logs' allowed retention periods
MIN_BYTES_SCANNED_CUTOFF = 10 * 1024 * 1024  # Athena's smallest per-query limit (10 MB)
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# Settings only the deploy reads (``python -m deploy up``): environment variable, field, meaning.
# The Lambdas never see them; the deploy keeps them per stage in .chalice/config.json.
DEPLOY_SETTINGS = (
    ("RAW_RETENTION_DAYS", "raw_retention_days",
     "days before raw/ and quarantine/ objects (both hold PII) expire"),
    ("LANDING_RETENTION_DAYS", "landing_retention_days",
     "days before landing objects (PII) expire; 0 keeps them"),
    ("ATHENA_RESULTS_RETENTION_DAYS", "athena_results_retention_days",
     "days before Athena query results expire"),
    ("LOG_RETENTION_DAYS", "log_retention_days",
     "retention of the state machine's, the Glue jobs' and the Lambdas' log groups (a CloudWatch Logs period)"),
    ("GLUE_JOB_DPU", "glue_job_dpu", "capacity of each Glue Python shell job: 0.0625 or 1"),
    ("NOTIFICATION_EMAIL", "notification_email",
     "e-mail address subscribed to the notification topic; empty for none"),
    ("STATE_MACHINE_LOG_LEVEL", "state_machine_log_level",
     "state machine logging to CloudWatch Logs: ALL, ERROR, FATAL or OFF"),
    ("STATE_MACHINE_TRACING", "state_machine_tracing", "X-Ray tracing of executions: true or false"),
    ("ATHENA_BYTES_SCANNED_CUTOFF", "athena_bytes_scanned_cutoff",
     "bytes one Athena query may scan before it is cancelled (at least 10485760)"),
    ("SNAPSHOT_RETENTION_SECONDS", "snapshot_retention_seconds",
     "age past which the processed Iceberg table's maintenance (VACUUM) expires snapshots (at least 60)"),
    ("GLUE_MAX_CONCURRENT_RUNS", "glue_max_concurrent_runs",
     "runs of each Glue job at once (its MaxConcurrentRuns); a start past it fails with "
     "ConcurrentRunsExceededException, which the state machine retries"),
    ("ATHENA_MAX_CONCURRENT_QUERIES", "athena_max_concurrent_queries",
     "queries the local Athena engine runs at once before it answers TooManyRequestsException "
     "(on AWS the account's Athena quota decides)"),
    ("ALARM_EMAIL", "alarm_email",
     "e-mail address subscribed to the alarm topic (CloudWatch alarms); empty for none"),
    ("ALARM_PERIOD_MINUTES", "alarm_period_minutes",
     "window of the count alarms (failed executions, Glue job failures, lost events, dead letters, "
     "Lambda errors and throttles), in minutes"),
    ("QUARANTINE_ALARM_PERCENT", "quarantine_alarm_percent",
     "the quarantine alarm fires when more than this % of the rows read in its window were quarantined"),
    ("QUARANTINE_ALARM_MINUTES", "quarantine_alarm_minutes", "window of the quarantine alarm, in minutes"),
    ("STALE_ALARM_HOURS", "stale_alarm_hours",
     "hours without a processed file before the no-files-processed alarm fires (at most 24; 0: no such alarm)"),
)


def _choice(environ, name, default, choices, parse=str):
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = parse(raw.strip())
    except ValueError:
        value = None
    if value not in choices:
        raise ValueError("%s must be one of %s, got %r"
                         % (name, ", ".join(str(c) for c in choices), raw))
    return value


def _bool(environ, name, default):
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise ValueError("%s must be true or false, got %r" % (name, raw))


def _email(environ, name):
    raw = (environ.get(name) or "").strip()
    if raw and not _EMAIL.match(raw):
        raise ValueError("%s must be an e-mail address (or empty), got %r" % (name, raw))
    return raw


def _int(environ, name, default, minimum=0, maximum=None):
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("%s must be a whole number, got %r" % (name, raw)) from None
    if value < minimum:
        raise ValueError("%s must be >= %d, got %d" % (name, minimum, value))
    if maximum is not None and value > maximum:
        raise ValueError("%s must be <= %d, got %d" % (name, maximum, value))
    return value


@dataclass(frozen=True)
class Settings:
    stage: str = "local"
    account_id: str = LOCAL_ACCOUNT_ID
    region: str = DEFAULT_REGION
    schedule_minutes: int = 10
    generator_rows: int = 100
    # Hours between maintenance runs of the processed Iceberg table (compaction + snapshot expiry).
    maintenance_hours: int = 24
    # Seconds between crawler polls in the state machine. AWS crawls take minutes, so polling
    # every 15 s costs nothing; the local stand-in crawls in milliseconds and polls with 0.
    poll_seconds: int = 15
    # The reconciler runs every reconcile_minutes and looks back reconcile_lookback_minutes for
    # landing objects without an execution (a lost or dead-lettered S3 event).
    reconcile_minutes: int = 15
    reconcile_lookback_minutes: int = 24 * 60
    # Deploy-only settings (see DEPLOY_SETTINGS).
    raw_retention_days: int = 30
    landing_retention_days: int = 90
    athena_results_retention_days: int = 7
    log_retention_days: int = 30
    glue_job_dpu: float = 0.0625
    notification_email: str = ""
    state_machine_log_level: str = "ERROR"
    state_machine_tracing: bool = False
    # 10 GiB: $0.05 of Athena scanning; the pipeline's query reads a few columns of the
    # processed table, so reaching it means the table has grown past what the query was sized for.
    athena_bytes_scanned_cutoff: int = 10 * 1024 ** 3
    # One day of history to time-travel to; older snapshots and their unreferenced files go at
    # the next maintenance run (Athena's own default is 5 days).
    snapshot_retention_seconds: int = 86400
    # Each landing object starts one run of each job; runs of different objects overlap.
    glue_max_concurrent_runs: int = 20
    # Athena's default quota of active DML queries is in this range for a new account.
    athena_max_concurrent_queries: int = 20
    # CloudWatch alarms (chalicelib/monitoring.py, docs/OPERATIONS.md).
    alarm_email: str = ""
    alarm_period_minutes: int = 5
    quarantine_alarm_percent: int = 5
    quarantine_alarm_minutes: int = 60
    # The generator lands a file every SCHEDULE_MINUTES (10): two hours without one is an outage.
    stale_alarm_hours: int = 2

    @classmethod
    def from_env(cls, environ=None):
        """Settings from ``environ`` (default ``os.environ``); unset or empty names take the
        defaults above. Raises ValueError naming the variable when a value is not usable."""
        env = os.environ if environ is None else environ
        d = cls()
        return cls(
            stage=env.get("APP_STAGE") or d.stage,
            account_id=env.get("ACCOUNT_ID") or d.account_id,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or d.region,
            schedule_minutes=_int(env, "SCHEDULE_MINUTES", d.schedule_minutes, minimum=1),
            generator_rows=_int(env, "GENERATOR_ROWS", d.generator_rows, minimum=1),
            maintenance_hours=_int(env, "MAINTENANCE_HOURS", d.maintenance_hours, minimum=1),
            poll_seconds=_int(env, "POLL_SECONDS", d.poll_seconds, minimum=0),
            reconcile_minutes=_int(env, "RECONCILE_MINUTES", d.reconcile_minutes, minimum=1),
            reconcile_lookback_minutes=_int(env, "RECONCILE_LOOKBACK_MINUTES",
                                            d.reconcile_lookback_minutes, minimum=1),
            raw_retention_days=_int(env, "RAW_RETENTION_DAYS", d.raw_retention_days, minimum=1),
            landing_retention_days=_int(env, "LANDING_RETENTION_DAYS", d.landing_retention_days,
                                        minimum=0),
            athena_results_retention_days=_int(env, "ATHENA_RESULTS_RETENTION_DAYS",
                                               d.athena_results_retention_days, minimum=1),
            log_retention_days=_choice(env, "LOG_RETENTION_DAYS", d.log_retention_days,
                                       LOG_RETENTION_DAYS, int),
            glue_job_dpu=_choice(env, "GLUE_JOB_DPU", d.glue_job_dpu, GLUE_JOB_CAPACITIES, float),
            notification_email=_email(env, "NOTIFICATION_EMAIL"),
            state_machine_log_level=_choice(env, "STATE_MACHINE_LOG_LEVEL", d.state_machine_log_level,
                                            STATE_MACHINE_LOG_LEVELS, lambda v: v.upper()),
            state_machine_tracing=_bool(env, "STATE_MACHINE_TRACING", d.state_machine_tracing),
            athena_bytes_scanned_cutoff=_int(env, "ATHENA_BYTES_SCANNED_CUTOFF",
                                             d.athena_bytes_scanned_cutoff,
                                             minimum=MIN_BYTES_SCANNED_CUTOFF),
            snapshot_retention_seconds=_int(env, "SNAPSHOT_RETENTION_SECONDS", d.snapshot_retention_seconds,
                                            minimum=60),
            glue_max_concurrent_runs=_int(env, "GLUE_MAX_CONCURRENT_RUNS", d.glue_max_concurrent_runs,
                                          minimum=1),
            athena_max_concurrent_queries=_int(env, "ATHENA_MAX_CONCURRENT_QUERIES",
                                               d.athena_max_concurrent_queries, minimum=1),
            alarm_email=_email(env, "ALARM_EMAIL"),
            alarm_period_minutes=_int(env, "ALARM_PERIOD_MINUTES", d.alarm_period_minutes, minimum=1,
                                      maximum=1440),
            quarantine_alarm_percent=_int(env, "QUARANTINE_ALARM_PERCENT", d.quarantine_alarm_percent,
                                          minimum=0, maximum=100),
            quarantine_alarm_minutes=_int(env, "QUARANTINE_ALARM_MINUTES", d.quarantine_alarm_minutes,
                                          minimum=1, maximum=1440),
            stale_alarm_hours=_int(env, "STALE_ALARM_HOURS", d.stale_alarm_hours, minimum=0, maximum=24),
        )

    def lambda_environment(self):
        """The environment variables the deploy writes for this stage (all strings)."""
        return {
            "APP_STAGE": self.stage,
            "ACCOUNT_ID": self.account_id,
            "SCHEDULE_MINUTES": str(self.schedule_minutes),
            "GENERATOR_ROWS": str(self.generator_rows),
            "MAINTENANCE_HOURS": str(self.maintenance_hours),
            "POLL_SECONDS": str(self.poll_seconds),
            "RECONCILE_MINUTES": str(self.reconcile_minutes),
            "RECONCILE_LOOKBACK_MINUTES": str(self.reconcile_lookback_minutes),
        }

    def deploy_environment(self):
        """The deploy-only settings as environment variables (all strings), as the deploy keeps them."""
        values = {}
        for name, field, _meaning in DEPLOY_SETTINGS:
            value = getattr(self, field)
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, float):
                value = repr(value)
            values[name] = str(value)
        return values
