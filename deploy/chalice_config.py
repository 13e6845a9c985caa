"""The stage's values in ``.chalice/config.json`` and the Lambdas' ``.chalice/policy-<stage>.json``.

Files are rewritten only when their content changes, in the existing file's indentation and
key order, so a deploy with the same values leaves the working tree untouched.
"""
import json
import re
from pathlib import Path

from chalicelib.settings import APP_NAME
from deploy.context import CREATED, UNCHANGED, UPDATED
from deploy.errors import DeployError

KIND = "chalice file"
# Where a stage's deploy-only settings are kept (chalice ignores keys it does not know).
DEPLOY_SETTINGS_KEY = "deploy_settings"


# Functions that need more than chalice's default 60 s: the lake maintenance awaits two Athena
# statements (docs/LAKE.md).
FUNCTION_TIMEOUT_SECONDS = {"maintain_lake": 900}

# The function whose policy is the stage's own file; the others get per-function files.
STAGE_POLICY_FUNCTION = "api_handler"


def policy_file_name(stage, function=STAGE_POLICY_FUNCTION):
    """``policy-<stage>.json`` for the API handler, ``policy-<stage>-<function>.json`` otherwise."""
    if function == STAGE_POLICY_FUNCTION:
        return "policy-%s.json" % stage
    return "policy-%s-%s.json" % (stage, function)


def _load(path):
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None
    try:
        return json.loads(text), text
    except ValueError as exc:
        raise DeployError("%s is not valid JSON (%s): fix or remove it." % (path, exc)) from None


def _indent(text):
    match = re.search(r"^( +)\S", text or "", re.MULTILINE)
    return len(match.group(1)) if match else 2


def _write_json(ctx, path, data, existing_data, existing_text, label):
    if existing_data == data:
        return ctx.record(UNCHANGED, KIND, label)
    if not ctx.dry_run:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=_indent(existing_text), ensure_ascii=False) + "\n",
                        encoding="utf-8")
    return ctx.record(CREATED if existing_data is None else UPDATED, KIND, label)


def _stage_config(project_dir, stage):
    data, _ = _load(Path(project_dir) / ".chalice" / "config.json")
    return (data or {}).get("stages", {}).get(stage, {}) or {}


def stage_environment(project_dir, stage):
    """``stages.<stage>.environment_variables`` of the project's config, or {} (never raises on absence)."""
    return dict(_stage_config(project_dir, stage).get("environment_variables", {}))


def stage_deploy_settings(project_dir, stage):
    """``stages.<stage>.deploy_settings`` (environment variable names -> values), or {}."""
    return dict(_stage_config(project_dir, stage).get(DEPLOY_SETTINGS_KEY, {}))


def write_config(ctx, project_dir, stage, environment, deploy_settings=None, functions=()):
    """Set ``stages.<stage>.environment_variables`` (and, when given, ``deploy_settings``);
    every other key stays as it is.

    A stage without a policy setting is pointed at the policy files this deploy writes
    (``autogen_policy: false``, ``iam_policy_file``); then each of ``functions`` (chalice
    function keys) without a policy file of its own gets its ``policy-<stage>-<function>.json``.
    Returns the Change.
    """
    path = Path(project_dir) / ".chalice" / "config.json"
    existing, text = _load(path)
    data = json.loads(json.dumps(existing)) if existing is not None else {
        "version": "2.0", "app_name": APP_NAME, "stages": {}}
    stage_config = data.setdefault("stages", {}).setdefault(stage, {})
    stage_config["environment_variables"] = dict(environment)
    if deploy_settings is not None:
        stage_config[DEPLOY_SETTINGS_KEY] = dict(deploy_settings)
    if "iam_policy_file" not in stage_config and "autogen_policy" not in stage_config:
        stage_config["autogen_policy"] = False
        stage_config["iam_policy_file"] = policy_file_name(stage)
    if stage_config.get("iam_policy_file") == policy_file_name(stage):
        for function in functions:
            if function == STAGE_POLICY_FUNCTION:
                continue
            function_config = stage_config.setdefault("lambda_functions", {}).setdefault(function, {})
            function_config.setdefault("iam_policy_file", policy_file_name(stage, function))
            if function in FUNCTION_TIMEOUT_SECONDS:
                function_config.setdefault("lambda_timeout", FUNCTION_TIMEOUT_SECONDS[function])
    return _write_json(ctx, path, data, existing, text, ".chalice/config.json")


def write_policy(ctx, project_dir, stage, policy, function=STAGE_POLICY_FUNCTION):
    """Write one Lambda's IAM policy file for ``stage``; returns the Change."""
    name = policy_file_name(stage, function)
    path = Path(project_dir) / ".chalice" / name
    existing, text = _load(path)
    return _write_json(ctx, path, policy, existing, text, ".chalice/%s" % name)
