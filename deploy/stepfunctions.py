"""The pipeline's state machine, from ``chalicelib.asl.build_definition(resources)``, with its
logging to CloudWatch Logs and optional X-Ray tracing."""
import json

from deploy.context import ABSENT, CREATED, DELETED, UNCHANGED, UPDATED
from deploy.diff import matches
from deploy.errors import DeployError, has_code

KIND = "state machine"
# Step Functions checks at create/update time that it can assume the role: a role made seconds
# ago fails that until IAM has propagated it. A name whose machine is being deleted is also
# unavailable for a short while. A role's new log-delivery permissions take as long to propagate.
_NOT_READY = (("AccessDeniedException", "assume"), "StateMachineDeleting",
              ("AccessDeniedException", "Log Destination"))


def build_definition(resources):
    """The ASL for this stage as a dict; raises DeployError when the builder is missing."""
    try:
        from chalicelib import asl
    except ImportError as exc:
        raise DeployError("chalicelib/asl.py is missing or broken (%s): the state machine "
                          "definition comes from chalicelib.asl.build_definition." % exc) from exc
    return asl.build_definition(resources)


def logging_configuration(resources, settings):
    """The ``loggingConfiguration`` for the stage's log level.

    Execution data (inputs, outputs, error causes) stays out of the logs: the Glue jobs' error
    messages can quote a landing line, which may hold PII.
    """
    level = settings.state_machine_log_level
    configuration = {"level": level, "includeExecutionData": False}
    if level != "OFF":
        configuration["destinations"] = [{"cloudWatchLogsLogGroup": {
            "logGroupArn": resources.state_machine_log_group_arn + ":*"}}]
    return configuration


def tracing_configuration(settings):
    return {"enabled": bool(settings.state_machine_tracing)}


def _describe(sfn, arn):
    try:
        return sfn.describe_state_machine(stateMachineArn=arn)
    except Exception as exc:
        if has_code(exc, "StateMachineDoesNotExist"):
            return None
        raise


def ensure_state_machine(ctx, definition, settings):
    """Create the state machine or apply a changed definition, role, logging or tracing;
    returns the Change."""
    sfn = ctx.client("stepfunctions")
    resources = ctx.resources
    role_arn = resources.role_arn(resources.state_machine_role)
    text = json.dumps(definition, indent=2)
    logging = logging_configuration(resources, settings)
    tracing = tracing_configuration(settings)
    current = _describe(sfn, resources.state_machine_arn)
    if current is None or current.get("status") == "DELETING":
        if not ctx.dry_run:
            ctx.retry(lambda: sfn.create_state_machine(
                name=resources.state_machine_name, definition=text, roleArn=role_arn,
                type="STANDARD", loggingConfiguration=logging, tracingConfiguration=tracing),
                _NOT_READY)
        return ctx.record(CREATED, KIND, resources.state_machine_name)
    changed = []
    if json.loads(current["definition"]) != definition:
        changed.append("definition")
    if current.get("roleArn") != role_arn:
        changed.append("role")
    if not matches(logging, current.get("loggingConfiguration") or {"level": "OFF"}):
        changed.append("logging")
    if not matches(tracing, current.get("tracingConfiguration") or {"enabled": False}):
        changed.append("tracing")
    if not changed:
        return ctx.record(UNCHANGED, KIND, resources.state_machine_name)
    if not ctx.dry_run:
        ctx.retry(lambda: sfn.update_state_machine(
            stateMachineArn=resources.state_machine_arn, definition=text, roleArn=role_arn,
            loggingConfiguration=logging, tracingConfiguration=tracing),
            _NOT_READY)
    return ctx.record(UPDATED, KIND, resources.state_machine_name, ", ".join(changed))


def delete_state_machine(ctx):
    """Delete the state machine (running executions are stopped by AWS); returns the Change."""
    sfn = ctx.client("stepfunctions")
    resources = ctx.resources
    current = _describe(sfn, resources.state_machine_arn)
    if current is None or current.get("status") == "DELETING":
        return ctx.record(ABSENT, KIND, resources.state_machine_name)
    if not ctx.dry_run:
        sfn.delete_state_machine(stateMachineArn=resources.state_machine_arn)
    return ctx.record(DELETED, KIND, resources.state_machine_name)
