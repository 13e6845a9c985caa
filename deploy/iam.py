"""The service roles: Glue jobs, Glue crawlers, the state machine; each with one inline policy."""
import json
from urllib.parse import unquote

from deploy import policies
from deploy.context import ABSENT, CREATED, DELETED
from deploy.errors import has_code

KIND = "iam role"
INLINE_POLICY_NAME = "access"


def role_definitions(resources, settings=None):
    """``[(role name, description, trust document, inline policy document)]``.

    ``settings`` (the stage's) decide the state machine's logging and tracing permissions.
    """
    return [
        (resources.json_to_parquet_role, "Shipping ETL %s: Glue job json-to-parquet" % resources.stage,
         policies.glue_trust(resources), policies.json_to_parquet_policy(resources)),
        (resources.normalize_role, "Shipping ETL %s: Glue job normalize" % resources.stage,
         policies.glue_trust(resources), policies.normalize_policy(resources)),
        (resources.crawler_role, "Shipping ETL %s: Glue crawlers" % resources.stage,
         policies.glue_trust(resources), policies.crawler_policy(resources)),
        (resources.state_machine_role, "Shipping ETL %s: pipeline state machine" % resources.stage,
         policies.state_machine_trust(resources), policies.state_machine_policy(resources, settings)),
    ]


def _document(value):
    # botocore decodes IAM's URL-encoded policy documents into dicts; older stacks give strings.
    if isinstance(value, str):
        return json.loads(unquote(value))
    return value


def _get_role(iam, name):
    try:
        return iam.get_role(RoleName=name)["Role"]
    except Exception as exc:
        if has_code(exc, "NoSuchEntity"):
            return None
        raise


def _inline_policies(iam, name):
    names = []
    for page in iam.get_paginator("list_role_policies").paginate(RoleName=name):
        names.extend(page["PolicyNames"])
    return names


def ensure_role(ctx, name, description, trust, policy):
    """Create or update one role, its trust and its inline policy; returns the Change.

    Inline policies other than ours are removed, so the role grants exactly ``policy``.
    """
    iam = ctx.client("iam")
    role = _get_role(iam, name)
    if role is None:
        if not ctx.dry_run:
            iam.create_role(RoleName=name, Description=description,
                            AssumeRolePolicyDocument=json.dumps(trust))
            iam.put_role_policy(RoleName=name, PolicyName=INLINE_POLICY_NAME,
                                PolicyDocument=json.dumps(policy))
        return ctx.record(CREATED, KIND, name)

    changed = []
    if _document(role.get("AssumeRolePolicyDocument")) != trust:
        changed.append("trust policy")
        if not ctx.dry_run:
            iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
    if role.get("Description", "") != description:
        changed.append("description")
        if not ctx.dry_run:
            iam.update_role(RoleName=name, Description=description)
    attached = _inline_policies(iam, name)
    current = None
    if INLINE_POLICY_NAME in attached:
        current = _document(iam.get_role_policy(
            RoleName=name, PolicyName=INLINE_POLICY_NAME)["PolicyDocument"])
    if current != policy:
        changed.append("policy")
        if not ctx.dry_run:
            iam.put_role_policy(RoleName=name, PolicyName=INLINE_POLICY_NAME,
                                PolicyDocument=json.dumps(policy))
    for other in attached:
        if other != INLINE_POLICY_NAME:
            changed.append("removed policy %s" % other)
            if not ctx.dry_run:
                iam.delete_role_policy(RoleName=name, PolicyName=other)
    return ctx.record_changes(KIND, name, changed)


def delete_role(ctx, name):
    """Delete one role with its inline and attached policies; returns the Change."""
    iam = ctx.client("iam")
    if _get_role(iam, name) is None:
        return ctx.record(ABSENT, KIND, name)
    if not ctx.dry_run:
        for policy_name in _inline_policies(iam, name):
            iam.delete_role_policy(RoleName=name, PolicyName=policy_name)
        # Someone may have attached a managed policy by hand; the role cannot go while it is.
        for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=name):
            for attached in page["AttachedPolicies"]:
                iam.detach_role_policy(RoleName=name, PolicyArn=attached["PolicyArn"])
        try:
            iam.delete_role(RoleName=name)
        except Exception as exc:
            if not has_code(exc, "NoSuchEntity"):
                raise
    return ctx.record(DELETED, KIND, name)
