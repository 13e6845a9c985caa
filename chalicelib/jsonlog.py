"""Structured logs: one JSON object per line, carrying the stage, the landing object's
``source_id`` and the execution's name, so one CloudWatch Logs Insights query follows a landing
object through the trigger, both Glue jobs and the reconciler (docs/OPERATIONS.md gives it).

Used by the Lambdas (app.py) and the Glue jobs (glue/jobio.py; Python 3.9, stdlib only). A
message never holds record content (chalicelib.redact scrubs what the jobs report).
"""
import datetime
import json
import logging
import os

# Attributes a log call passes as ``extra=fields(...)``, written as top-level JSON fields.
CONTEXT_FIELDS = ("source_id", "execution", "step")


def fields(source_id=None, execution=None, step=None):
    """``extra=`` of a log call about one landing object: the fields given (None ones left out)."""
    given = {"source_id": source_id, "execution": execution, "step": step}
    return {name: value for name, value in given.items() if value}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: time (UTC, ISO 8601), level, component, stage, the
    context fields (the formatter's ``context``, then the record's own), logger and message.

    ``component``: what logs (a job's name); None: the Lambda function's name from the
    environment Lambda sets (``AWS_LAMBDA_FUNCTION_NAME``), else "app".
    """

    def __init__(self, stage=None, component=None, context=None):
        super().__init__()
        self.stage = stage
        self.component = component
        self.context = dict(context or {})

    def format(self, record):
        entry = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "component": self.component or os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or "app",
            "stage": self.stage,
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None) or self.context.get(name)
            if value:
                entry[name] = value
        entry["logger"] = record.name
        entry["message"] = record.getMessage()
        if record.exc_info:
            # Frames only: an exception's message may quote a record.
            entry["error"] = record.exc_info[0].__name__ if record.exc_info[0] else None
        return json.dumps(entry, sort_keys=False)


def use_json(logger, stage=None, component=None, context=None):
    """Gives every handler of ``logger`` (a StreamHandler to stderr when it has none) the JSON
    format. Returns the formatter."""
    formatter = JsonFormatter(stage=stage, component=component, context=context)
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler())
    for handler in logger.handlers:
        handler.setFormatter(formatter)
    return formatter
