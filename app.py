"""The Shipping ETL Chalice app: S3 landing events start the pipeline, a schedule generates
batches, and ``/status`` (JSON) and ``/`` (HTML) show recent executions.

Handlers only translate events and responses; the work is in chalicelib.
"""
import logging

import boto3
from botocore.exceptions import ClientError
from chalice import BadRequestError, Chalice, ChaliceViewError, Rate, Response

from chalicelib import generator, status
from chalicelib.resources import INCOMING_PREFIX, Resources
from chalicelib.settings import APP_NAME, Settings
from chalicelib.trigger import PipelineTrigger

# Read at import: chalice applies the stage's environment variables while it imports this module
# at deploy time, so the decorators below see the stage's bucket and schedule.
_deploy_settings = Settings.from_env()
_deploy_resources = Resources.from_settings(_deploy_settings)

app = Chalice(app_name=APP_NAME)
# Chalice's own default is ERROR, which would hide what the trigger and generator report.
app.log.setLevel(logging.INFO)

_clients = {}


def _settings():
    # Read per call: the function's environment is the stage's (and chalice.test.Client applies
    # it only while a handler runs).
    return Settings.from_env()


def _client(service, region):
    """A boto3 client, made on first use and reused by warm invocations."""
    key = (service, region)
    if key not in _clients:
        _clients[key] = boto3.client(service, region_name=region)
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


class ServiceUnavailableError(ChaliceViewError):
    """503: the stage is not (fully) deployed."""

    STATUS_CODE = 503


def _recent_executions():
    """Returns summaries for the request's ``?limit=`` (default 20, at most 100).

    Raises BadRequestError for a bad limit, ServiceUnavailableError when the state machine does
    not exist.
    """
    params = app.current_request.query_params or {}
    try:
        limit = status.check_limit(params.get("limit", status.DEFAULT_LIMIT))
    except ValueError as error:
        raise BadRequestError(str(error))
    settings = _settings()
    state_machine_arn = Resources.from_settings(settings).state_machine_arn
    try:
        return status.recent_executions(
            _client("stepfunctions", settings.region), state_machine_arn, limit=limit
        )
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "StateMachineDoesNotExist":
            raise
        raise ServiceUnavailableError(
            "State machine %s does not exist: deploy the stage first "
            "(python -m deploy up --stage %s)" % (state_machine_arn, settings.stage)
        )


@app.route("/status")
def get_status():
    return {"executions": _recent_executions()}


@app.route("/")
def index():
    body = status.render_page(_recent_executions(), title="Shipping ETL (%s)" % _settings().stage)
    return Response(body=body, status_code=200, headers={"Content-Type": "text/html; charset=utf-8"})
