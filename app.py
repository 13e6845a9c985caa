"""The Shipping ETL Chalice app: S3 landing events start the pipeline, a schedule generates
batches, another reconciles (starts what lost events did not), ``/status`` and ``/status/{name}`` (JSON) and ``/`` (the HTML dashboard) show recent
executions and their steps.

Handlers only translate events and responses; the work is in chalicelib.
"""
import logging

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
)
from chalice import BadRequestError, Chalice, ChaliceViewError, IAMAuthorizer, NotFoundError, Rate, Response

from chalicelib import api_auth, dashboard, generator, jsonlog, maintenance, monitoring, status
from chalicelib.resources import INCOMING_PREFIX, Resources
from chalicelib.settings import APP_NAME, Settings
from chalicelib.reconciler import Reconciler
from chalicelib.trigger import PipelineTrigger

# Read at import: chalice applies the stage's environment variables while it imports this module
# at deploy time, so the decorators below see the stage's bucket and schedule.
_deploy_settings = Settings.from_env()
_deploy_resources = Resources.from_settings(_deploy_settings)

app = Chalice(app_name=APP_NAME)
# Chalice's own default is ERROR, which would hide what the trigger and generator report.
app.log.setLevel(logging.INFO)
# JSON lines naming the stage, and the source id and execution where a line is about one object.
jsonlog.use_json(app.log, stage=_deploy_settings.stage)

_clients = {}
# Bounds every AWS call a request makes: API Gateway gives up on a Lambda after 29 s, so a slow
# or throttled Step Functions must fail the request well before that, with a clear answer.
_CLIENT_CONFIG = Config(connect_timeout=3, read_timeout=8,
                        retries={"max_attempts": 3, "mode": "standard"})


def _settings():
    # Read per call: the function's environment is the stage's (and chalice.test.Client applies
    # it only while a handler runs).
    return Settings.from_env()


def _client(service, region):
    """A boto3 client, made on first use and reused by warm invocations."""
    key = (service, region)
    if key not in _clients:
        # A session of its own: boto3's default session keeps the environment it was made in,
        # and chalice.test (the local stack) runs handlers in a copy of os.environ.
        _clients[key] = boto3.session.Session().client(service, region_name=region, config=_CLIENT_CONFIG)
    return _clients[key]


@app.on_s3_event(
    bucket=_deploy_resources.landing_bucket,
    events=["s3:ObjectCreated:*"],
    prefix=INCOMING_PREFIX,
)
def on_landing(event):
    settings = _settings()
    trigger = PipelineTrigger.from_settings(
        settings, sfn_client=_client("stepfunctions", settings.region), log=app.log
    )
    # The raw event: chalice's S3Event exposes only the first record.
    return trigger.handle_event(event.to_dict())


@app.schedule(Rate(_deploy_settings.schedule_minutes, unit=Rate.MINUTES))
def generate_batch(event):
    settings = _settings()
    bucket = Resources.from_settings(settings).landing_bucket
    batch = generator.put_batch(_client("s3", settings.region), bucket, rows=settings.generator_rows)
    app.log.info("Generated %d rows into s3://%s/%s", batch["rows"], batch["bucket"], batch["key"])
    return batch


@app.schedule(Rate(_deploy_settings.reconcile_minutes, unit=Rate.MINUTES))
def reconcile(event):
    """Starts the executions lost S3 events never started (chalicelib.reconciler)."""
    settings = _settings()
    resources = Resources.from_settings(settings)
    trigger = PipelineTrigger.from_settings(
        settings, sfn_client=_client("stepfunctions", settings.region), log=app.log)
    reconciler = Reconciler(trigger, _client("s3", settings.region), _client("sqs", settings.region),
                            resources.landing_bucket, resources.landing_failures_queue,
                            settings.reconcile_lookback_minutes, log=app.log)
    summary = reconciler.run()
    try:
        monitoring.publish_reconciled(_client("cloudwatch", settings.region), settings.stage, summary)
    except (BotoCoreError, ClientError) as error:
        # The pass did its work; only its figures are lost (the lost-events alarm misses it).
        app.log.error("Reconciler: publishing its metrics failed: %s", error)
    return summary


@app.schedule(Rate(_deploy_settings.maintenance_hours, unit=Rate.HOURS))
def maintain_lake(event):
    """Compacts the processed Iceberg table and expires its old snapshots (docs/LAKE.md)."""
    settings = _settings()
    results = maintenance.run(_client("athena", settings.region), Resources.from_settings(settings))
    for result in results:
        app.log.info("%s: %s, %s bytes scanned, %.1f s", result["statement"], result["state"],
                     result["scanned_bytes"], result["seconds"])
    return results


class ServiceUnavailableError(ChaliceViewError):
    """503: the stage is not (fully) deployed, or Step Functions is throttling."""

    STATUS_CODE = 503


class BadGatewayError(ChaliceViewError):
    """502: Step Functions answered with an error this app cannot fix."""

    STATUS_CODE = 502


# Options of every route that shows execution summaries: IAM (SigV4) authorization on AWS
# stages; chalice.test.Client and the local stack's server do not apply it (open on loopback).
STATUS_ROUTE_OPTIONS = {"authorizer": api_auth.status_authorizer(IAMAuthorizer)}
STATUS_QUERY = ("limit",)
DASHBOARD_QUERY = ("limit", "run")


def _query(allowed):
    """The request's query parameters as {name: value}; raises BadRequestError saying which
    parameters are allowed."""
    params = app.current_request.query_params
    given = {name: params.getlist(name) for name in params} if params else {}
    try:
        values = status.check_query(given, allowed)
        if "limit" in values:
            values["limit"] = status.check_limit(values["limit"])
        if "run" in values:
            status.check_execution_name(values["run"])
    except ValueError as error:
        raise BadRequestError(str(error))
    return values


def _call_step_functions(call, execution=None, **kwargs):
    """Runs ``call(sfn_client, state_machine_arn, **kwargs)`` and returns its result.

    Turns Step Functions' failures into answers that say what to do: 404 for an unknown
    execution, 503 when the stage is not deployed or calls are throttled, 502 otherwise.
    """
    settings = _settings()
    state_machine_arn = Resources.from_settings(settings).state_machine_arn
    try:
        return call(_client("stepfunctions", settings.region), state_machine_arn, **kwargs)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code == "ExecutionDoesNotExist":
            raise NotFoundError("no execution named %r: GET /status lists the recent ones" % execution)
        if code == "StateMachineDoesNotExist":
            raise ServiceUnavailableError(
                "State machine %s does not exist: deploy the stage first "
                "(python -m deploy up --stage %s)" % (state_machine_arn, settings.stage))
        if code in ("ThrottlingException", "TooManyRequestsException"):
            raise ServiceUnavailableError("Step Functions is throttling requests: retry in a few seconds")
        app.log.error("Step Functions failed: %s", error)
        raise BadGatewayError("Step Functions answered %s: see the function's log" % (code or "an error"))
    except BotoCoreError as error:
        app.log.error("Step Functions unreachable: %s", error)
        raise ServiceUnavailableError(_unreachable_message(error))


def _unreachable_message(error):
    """On AWS a connection failure passes; under ``chalice local`` it almost always means the
    local stack is not running or not pointed at (AWS_ENDPOINT_URL): say both."""
    if isinstance(error, NoCredentialsError):
        return ("no AWS credentials to call Step Functions with. With chalice local: start the local stack "
                "(python -m local up) and set AWS_ENDPOINT_URL to the endpoint it prints (any credentials do)")
    if isinstance(error, (EndpointConnectionError, ConnectTimeoutError)):
        endpoint = getattr(error, "kwargs", {}).get("endpoint_url") or "its endpoint"
        return ("cannot connect to Step Functions at %s: retry in a few seconds. With chalice local: start the "
                "local stack first (python -m local up) and set AWS_ENDPOINT_URL to the endpoint it prints" % endpoint)
    return "Step Functions did not answer in time: retry in a few seconds"


def _one_execution(sfn_client, state_machine_arn, name):
    return status.execution_detail(sfn_client, status.execution_arn(state_machine_arn, name))


@app.route("/status", methods=["GET"], **STATUS_ROUTE_OPTIONS)
def get_status():
    """The newest executions (``?limit=``, 1-100, default 20), newest first."""
    limit = _query(STATUS_QUERY).get("limit", status.DEFAULT_LIMIT)
    return {"executions": _call_step_functions(status.recent_executions, limit=limit)}


@app.route("/status/{name}", methods=["GET"], **STATUS_ROUTE_OPTIONS)
def get_execution(name):
    """One execution's summary with its per-step timeline."""
    _query(())
    try:
        status.check_execution_name(name)
    except ValueError as error:
        raise BadRequestError(str(error))
    return _call_step_functions(_one_execution, execution=name, name=name)


def _alarm_states():
    """(the stage's alarm states, None) or (None, why not): the page shows the runs regardless."""
    settings = _settings()
    try:
        return monitoring.alarm_states(_client("cloudwatch", settings.region), Resources.from_settings(settings)), None
    except (BotoCoreError, ClientError) as error:
        app.log.warning("Dashboard: reading the alarm states failed: %s", error)
        return None, "CloudWatch did not answer (%s)" % type(error).__name__


@app.route("/", methods=["GET"], **STATUS_ROUTE_OPTIONS)
def index():
    """The dashboard: recent runs, rows and totals over time, the steps of one run (``?run=``,
    default the newest)."""
    query = _query(DASHBOARD_QUERY)
    limit = query.get("limit", status.DEFAULT_LIMIT)
    data = _call_step_functions(status.overview, execution=query.get("run"), limit=limit,
                                selected=query.get("run"))
    alarms, alarm_error = _alarm_states()
    body = dashboard.render(data["executions"], data["selected"], stage=_settings().stage, limit=limit,
                            alarms=alarms, alarm_error=alarm_error)
    return Response(body=body, status_code=200, headers=dashboard.HEADERS)
