"""The stage's CloudWatch alarms, their SNS topic and the dashboard (chalicelib/monitoring.py
defines them): created or brought back by ``up``, removed by ``down``."""
import json

from chalicelib import monitoring
from deploy import policies, topic
from deploy.context import ABSENT, CREATED, DELETED, UNCHANGED, UPDATED
from deploy.errors import has_code

TOPIC_KIND = "sns topic"
ALARM_KIND = "cloudwatch alarm"
DASHBOARD_KIND = "cloudwatch dashboard"
# What DescribeAlarms gives back that PutMetricAlarm set (the rest is state and bookkeeping).
_COMPARED = ("AlarmDescription", "ActionsEnabled", "AlarmActions", "OKActions", "EvaluationPeriods",
             "DatapointsToAlarm", "Threshold", "ComparisonOperator", "TreatMissingData", "MetricName",
             "Namespace", "Dimensions", "Statistic", "Period", "Metrics")


def alarm_topic_attributes(resources):
    return {
        "DisplayName": ("Shipping ETL %s alarms" % resources.stage)[:100],
        "KmsMasterKeyId": resources.kms_key_alias,
        "Policy": json.dumps(policies.alarm_topic_policy(resources)),
    }


def ensure_alarm_topic(ctx, email):
    """Create the alarm topic or bring its attributes back, and its e-mail subscriber (``email``,
    none when empty). Returns the Changes."""
    sns = ctx.client("sns")
    resources = ctx.resources
    wanted = alarm_topic_attributes(resources)
    current = topic._attributes(sns, resources.alarm_topic_arn)
    if current is None:
        if not ctx.dry_run:
            sns.create_topic(Name=resources.alarm_topic_name, Attributes=wanted)
        change = ctx.record(CREATED, TOPIC_KIND, resources.alarm_topic_name)
    else:
        changed = [name for name, value in wanted.items() if not topic._same(name, value, current.get(name))]
        if changed and not ctx.dry_run:
            for name in changed:
                sns.set_topic_attributes(TopicArn=resources.alarm_topic_arn, AttributeName=name,
                                         AttributeValue=wanted[name])
        change = ctx.record_changes(TOPIC_KIND, resources.alarm_topic_name, changed)
    return [change] + topic.ensure_email_subscription(ctx, email, topic_arn=resources.alarm_topic_arn)


def delete_alarm_topic(ctx):
    sns = ctx.client("sns")
    resources = ctx.resources
    if topic._attributes(sns, resources.alarm_topic_arn) is None:
        return ctx.record(ABSENT, TOPIC_KIND, resources.alarm_topic_name)
    if not ctx.dry_run:
        sns.delete_topic(TopicArn=resources.alarm_topic_arn)
    return ctx.record(DELETED, TOPIC_KIND, resources.alarm_topic_name)


def stage_alarms(cloudwatch, resources):
    """``{alarm name: DescribeAlarms entry}`` of the stage's metric alarms."""
    found = {}
    prefix = resources.prefix + "-"
    for page in cloudwatch.get_paginator("describe_alarms").paginate(
            AlarmNamePrefix=prefix, AlarmTypes=["MetricAlarm"]):
        for alarm in page.get("MetricAlarms", []):
            if alarm["AlarmName"][len(prefix):] in monitoring.ALARM_KINDS:
                found[alarm["AlarmName"]] = alarm
    return found


def _normal(value):
    """Comparable form of a definition or a described alarm's value (numbers as floats, lists and
    dicts recursively, absent ReturnData/Label as AWS leaves them)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list):
        return [_normal(item) for item in value]
    if isinstance(value, dict):
        return {key: _normal(item) for key, item in value.items()}
    return value


def _differences(wanted, current):
    return [name for name in _COMPARED
            if _normal(wanted.get(name)) != _normal(current.get(name)) and (name in wanted or current.get(name))]


def ensure_alarms(ctx, settings):
    """Put every alarm of the stage (monitoring.alarm_definitions) and delete the stage's alarms
    no longer defined (e.g. STALE_ALARM_HOURS=0). Returns the Changes."""
    cloudwatch = ctx.client("cloudwatch")
    current = stage_alarms(cloudwatch, ctx.resources)
    changes = []
    definitions = monitoring.alarm_definitions(ctx.resources, settings)
    for definition in definitions:
        name = definition["AlarmName"]
        existing = current.get(name)
        if existing is None:
            action, detail = CREATED, ""
        else:
            changed = _differences(definition, existing)
            action, detail = (UPDATED, ", ".join(changed)) if changed else (UNCHANGED, "")
        if action != UNCHANGED and not ctx.dry_run:
            cloudwatch.put_metric_alarm(**definition)
        changes.append(ctx.record(action, ALARM_KIND, name, detail))
    stale = sorted(set(current) - {d["AlarmName"] for d in definitions})
    if stale:
        if not ctx.dry_run:
            cloudwatch.delete_alarms(AlarmNames=stale)
        changes.extend(ctx.record(DELETED, ALARM_KIND, name, "no longer defined") for name in stale)
    return changes


def delete_alarms(ctx):
    cloudwatch = ctx.client("cloudwatch")
    names = sorted(stage_alarms(cloudwatch, ctx.resources))
    if not names:
        return [ctx.record(ABSENT, ALARM_KIND, "%s-*" % ctx.resources.prefix)]
    if not ctx.dry_run:
        cloudwatch.delete_alarms(AlarmNames=names)
    return [ctx.record(DELETED, ALARM_KIND, name) for name in names]


def _dashboard_body(cloudwatch, name):
    try:
        return json.loads(cloudwatch.get_dashboard(DashboardName=name)["DashboardBody"])
    except Exception as exc:
        if has_code(exc, "ResourceNotFound", "ResourceNotFoundException", "DashboardNotFoundError"):
            return None
        raise


def ensure_dashboard(ctx, settings):
    cloudwatch = ctx.client("cloudwatch")
    name = monitoring.dashboard_name(ctx.resources)
    wanted = monitoring.dashboard_body(ctx.resources, settings)
    current = _dashboard_body(cloudwatch, name)
    if current == wanted:
        return ctx.record(UNCHANGED, DASHBOARD_KIND, name)
    if not ctx.dry_run:
        cloudwatch.put_dashboard(DashboardName=name, DashboardBody=json.dumps(wanted))
    return ctx.record(CREATED if current is None else UPDATED, DASHBOARD_KIND, name)


def delete_dashboard(ctx):
    cloudwatch = ctx.client("cloudwatch")
    name = monitoring.dashboard_name(ctx.resources)
    if _dashboard_body(cloudwatch, name) is None:
        return ctx.record(ABSENT, DASHBOARD_KIND, name)
    if not ctx.dry_run:
        cloudwatch.delete_dashboards(DashboardNames=[name])
    return ctx.record(DELETED, DASHBOARD_KIND, name)


def ensure(ctx, settings):
    """The alarm topic, the alarms and the dashboard. Returns the Changes."""
    changes = ensure_alarm_topic(ctx, settings.alarm_email)
    changes += ensure_alarms(ctx, settings)
    changes.append(ensure_dashboard(ctx, settings))
    return changes


def delete(ctx):
    """Alarms first (they notify the topic), then the dashboard and the topic. Returns the Changes."""
    changes = delete_alarms(ctx)
    changes.append(delete_dashboard(ctx))
    changes.append(delete_alarm_topic(ctx))
    return changes
