"""The Athena workgroup, created or updated from ``chalicelib.glue_jobs.workgroup_definition``."""
from deploy.context import ABSENT, CREATED, DELETED, UNCHANGED, UPDATED
from deploy.diff import changed_fields
from deploy.errors import has_code, replace_if_unsupported

KIND = "athena workgroup"


def _get(athena, name):
    """The workgroup, or None. AWS answers a missing one with InvalidRequestException."""
    try:
        return athena.get_work_group(WorkGroup=name).get("WorkGroup") or None
    except Exception as exc:
        if has_code(exc, "InvalidRequestException", "ResourceNotFoundException"):
            return None
        raise


def _configuration_updates(configuration):
    """UpdateWorkGroup's ConfigurationUpdates for a CreateWorkGroup Configuration."""
    updates = {key: value for key, value in configuration.items() if key != "ResultConfiguration"}
    if "ResultConfiguration" in configuration:
        updates["ResultConfigurationUpdates"] = dict(configuration["ResultConfiguration"])
    return updates


def ensure_workgroup(ctx, definition):
    """Create the workgroup or apply a changed definition; returns the Change."""
    athena = ctx.client("athena")
    name = definition["Name"]
    current = _get(athena, name)
    if current is None:
        if not ctx.dry_run:
            athena.create_work_group(**definition)
        return ctx.record(CREATED, KIND, name)
    wanted = {"Description": definition["Description"], "Configuration": definition["Configuration"],
              "State": "ENABLED"}
    changed = changed_fields(wanted, current)
    if not changed:
        return ctx.record(UNCHANGED, KIND, name)
    if not ctx.dry_run:
        try:
            athena.update_work_group(
                WorkGroup=name, Description=definition["Description"], State="ENABLED",
                ConfigurationUpdates=_configuration_updates(definition["Configuration"]))
        except Exception as exc:  # noqa: BLE001 -- narrowed below: only an unsupported call
            replace_if_unsupported(
                exc, athena, lambda: athena.delete_work_group(WorkGroup=name, RecursiveDeleteOption=True),
                lambda: athena.create_work_group(**definition))
    return ctx.record(UPDATED, KIND, name, ", ".join(changed))


def delete_workgroup(ctx, name):
    """Delete the workgroup and its saved queries (results in S3 stay); returns the Change."""
    athena = ctx.client("athena")
    if _get(athena, name) is None:
        return ctx.record(ABSENT, KIND, name)
    if not ctx.dry_run:
        athena.delete_work_group(WorkGroup=name, RecursiveDeleteOption=True)
    return ctx.record(DELETED, KIND, name)
