"""The SNS topic that receives run summaries and failure notifications, and its e-mail subscriber.

The topic is encrypted with the stage's KMS key and its access policy admits only this
account's IAM principals, over TLS.
"""
import json

from deploy import policies
from deploy.context import ABSENT, CREATED, DELETED, UNCHANGED, UPDATED
from deploy.errors import has_code

KIND = "sns topic"
SUBSCRIPTION_KIND = "sns subscription"
EMAIL = "email"
PENDING = "PendingConfirmation"


def display_name(resources):
    # Shown as the sender of e-mail notifications; at most 100 characters.
    return ("Shipping ETL %s" % resources.stage)[:100]


def desired_attributes(resources):
    """``{attribute: value}`` the topic is created with and kept at."""
    return {
        "DisplayName": display_name(resources),
        "KmsMasterKeyId": resources.kms_key_alias,
        "Policy": json.dumps(policies.topic_policy(resources)),
    }


def _attributes(sns, arn):
    try:
        return sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    except Exception as exc:
        if has_code(exc, "NotFound", "NotFoundException"):
            return None
        raise


def _same(name, wanted, current):
    if current is None:
        return False
    if name == "Policy":
        return json.loads(wanted) == json.loads(current)
    return wanted == current


def ensure_topic(ctx):
    """Create the topic or bring its display name, key and policy back; returns the Change."""
    sns = ctx.client("sns")
    resources = ctx.resources
    wanted = desired_attributes(resources)
    attributes = _attributes(sns, resources.topic_arn)
    if attributes is None:
        if not ctx.dry_run:
            sns.create_topic(Name=resources.topic_name, Attributes=wanted)
        return ctx.record(CREATED, KIND, resources.topic_name)
    changed = [name for name, value in wanted.items() if not _same(name, value, attributes.get(name))]
    if not changed:
        return ctx.record(UNCHANGED, KIND, resources.topic_name)
    if not ctx.dry_run:
        for name in changed:
            sns.set_topic_attributes(TopicArn=resources.topic_arn, AttributeName=name,
                                     AttributeValue=wanted[name])
    return ctx.record(UPDATED, KIND, resources.topic_name, ", ".join(changed))


def _email_subscriptions(sns, topic_arn):
    """``[(endpoint, subscription ARN or "PendingConfirmation")]``; [] when the topic is absent."""
    found = []
    try:
        for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn):
            for subscription in page.get("Subscriptions", []):
                if subscription.get("Protocol") == EMAIL:
                    found.append((subscription["Endpoint"], subscription["SubscriptionArn"]))
    except Exception as exc:
        if has_code(exc, "NotFound", "NotFoundException"):
            return []
        raise
    return found


def ensure_email_subscription(ctx, email, topic_arn=None):
    """Subscribe ``email`` (none when empty) and remove other e-mail subscribers of the
    notification topic (or of ``topic_arn``).

    Returns the Changes (none when there is nothing to report). A new subscriber must confirm
    from the e-mail SNS sends; an unconfirmed one cannot be removed (SNS drops it after 3 days).
    """
    sns = ctx.client("sns")
    topic_arn = topic_arn or ctx.resources.topic_arn
    current = _email_subscriptions(sns, topic_arn)
    changes = []
    for endpoint, arn in current:
        if endpoint == email:
            detail = "awaiting confirmation from the e-mail SNS sent" if arn == PENDING else ""
            changes.append(ctx.record(UNCHANGED, SUBSCRIPTION_KIND, endpoint, detail))
        elif arn == PENDING:
            changes.append(ctx.record(UNCHANGED, SUBSCRIPTION_KIND, endpoint,
                                      "unconfirmed, so it cannot be removed; SNS drops it after 3 days"))
        else:
            if not ctx.dry_run:
                sns.unsubscribe(SubscriptionArn=arn)
            changes.append(ctx.record(DELETED, SUBSCRIPTION_KIND, endpoint))
    if email and email not in [endpoint for endpoint, _arn in current]:
        if not ctx.dry_run:
            sns.subscribe(TopicArn=topic_arn, Protocol=EMAIL, Endpoint=email)
        changes.append(ctx.record(CREATED, SUBSCRIPTION_KIND, email,
                                  "confirm from the e-mail SNS sends"))
    return changes


def delete_topic(ctx):
    """Delete the topic and its subscriptions; returns the Change."""
    sns = ctx.client("sns")
    resources = ctx.resources
    if _attributes(sns, resources.topic_arn) is None:
        return ctx.record(ABSENT, KIND, resources.topic_name)
    if not ctx.dry_run:
        sns.delete_topic(TopicArn=resources.topic_arn)
    return ctx.record(DELETED, KIND, resources.topic_name)
