"""The SNS topic that receives run summaries and failure notifications."""
from deploy.context import ABSENT, CREATED, DELETED, UNCHANGED, UPDATED
from deploy.errors import has_code

KIND = "sns topic"


def display_name(resources):
    # Shown as the sender of e-mail notifications; at most 100 characters.
    return ("Shipping ETL %s" % resources.stage)[:100]


def _attributes(sns, arn):
    try:
        return sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    except Exception as exc:
        if has_code(exc, "NotFound", "NotFoundException"):
            return None
        raise


def ensure_topic(ctx):
    """Create the topic or fix its display name; returns the Change."""
    sns = ctx.client("sns")
    resources = ctx.resources
    wanted = display_name(resources)
    attributes = _attributes(sns, resources.topic_arn)
    if attributes is None:
        if not ctx.dry_run:
            sns.create_topic(Name=resources.topic_name, Attributes={"DisplayName": wanted})
        return ctx.record(CREATED, KIND, resources.topic_name)
    if attributes.get("DisplayName") == wanted:
        return ctx.record(UNCHANGED, KIND, resources.topic_name)
    if not ctx.dry_run:
        sns.set_topic_attributes(TopicArn=resources.topic_arn, AttributeName="DisplayName",
                                 AttributeValue=wanted)
    return ctx.record(UPDATED, KIND, resources.topic_name, "display name")


def delete_topic(ctx):
    """Delete the topic and its subscriptions; returns the Change."""
    sns = ctx.client("sns")
    resources = ctx.resources
    if _attributes(sns, resources.topic_arn) is None:
        return ctx.record(ABSENT, KIND, resources.topic_name)
    if not ctx.dry_run:
        sns.delete_topic(TopicArn=resources.topic_arn)
    return ctx.record(DELETED, KIND, resources.topic_name)
