"""Summaries of pipeline executions, read from Step Functions itself (no other store).

A summary holds only what the execution's input and output carry by design: the source URI,
row counts, query totals, the notification id and, on failure, the failed step and its error.
Inputs and outputs are PII-free; nothing else is copied in.
"""
import datetime as dt
import html
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor

from botocore.exceptions import ClientError

from chalicelib.queries import parse_totals

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
# Concurrent DescribeExecution calls: enough to describe a page of 100 quickly, few enough to stay
# inside Step Functions' per-account request rate.
MAX_WORKERS = 8
ROW_COUNT_KEYS = ("read", "valid", "quarantined", "duplicates")
# A Fail state's cause may be up to 32 KB; a summary keeps the start of it.
MAX_CAUSE_CHARS = 2000

_LOG = logging.getLogger(__name__)


def _iso(value):
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            # botocore gives local-time datetimes; summaries speak UTC.
            value = value.astimezone(dt.timezone.utc)
        return value.isoformat()
    return str(value)


def _as_datetime(value):
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _json_object(text):
    """Returns the JSON object in ``text``, or None when it is absent or not a JSON object."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _row_counts(output):
    rows = output.get("rows")
    if not isinstance(rows, dict):
        return None
    return {key: rows.get(key) for key in ROW_COUNT_KEYS}


def _totals(output):
    query = output.get("query")
    if not isinstance(query, dict) or not isinstance(query.get("values"), list):
        return None
    try:
        return parse_totals(query["values"])
    except (TypeError, ValueError):
        # A malformed result is shown as missing totals, not as a broken status page.
        return None


def _failure(response):
    """Returns (error, cause, failed_step) from a failed execution's error and cause.

    The pipeline's Fail state sets the cause to JSON ``{"step", "error", "cause"}``; any other
    cause (a timeout, an abort, a cause written by hand) is kept as text.
    """
    error = response.get("error") or None
    raw_cause = response.get("cause") or None
    detail = _json_object(raw_cause)
    if detail is None:
        cause, step = raw_cause, None
    else:
        cause, step = detail.get("cause"), detail.get("step")
        # The Fail state cannot re-raise a reserved ``States.*`` name, so the original error
        # (e.g. States.TaskFailed) is only in the cause: prefer it.
        error = detail.get("error") or error
        if cause is not None and not isinstance(cause, str):
            cause = json.dumps(cause)
    if cause is not None and len(cause) > MAX_CAUSE_CHARS:
        cause = cause[:MAX_CAUSE_CHARS] + "..."
    return error, cause, step


def summarize(execution):
    """Returns the summary of one execution from a DescribeExecution response (or a
    ListExecutions item, which has no input, output, error or cause):

    ``{"name", "status", "source", "started", "stopped", "duration_seconds", "rows", "totals",
    "notification_id", "error", "cause", "failed_step"}``; datetimes as ISO 8601 strings, absent
    parts as None.
    """
    output = _json_object(execution.get("output")) or {}
    execution_input = _json_object(execution.get("input")) or {}
    started = _as_datetime(execution.get("startDate"))
    stopped = _as_datetime(execution.get("stopDate"))
    duration = None
    if started is not None and stopped is not None:
        duration = round((stopped - started).total_seconds(), 3)
    error, cause, failed_step = _failure(execution)
    source = output.get("source") or execution_input.get("source_uri")
    notification_id = output.get("notification_id")
    return {
        "name": execution.get("name"),
        "status": execution.get("status"),
        "source": source if isinstance(source, str) else None,
        "started": _iso(execution.get("startDate")),
        "stopped": _iso(execution.get("stopDate")),
        "duration_seconds": duration,
        "rows": _row_counts(output),
        "totals": _totals(output),
        "notification_id": notification_id if isinstance(notification_id, str) else None,
        "error": error,
        "cause": cause,
        "failed_step": failed_step,
    }


def check_limit(limit):
    """Returns ``limit`` (an int, or a string of digits) as an int from 1 to 100; raises
    ValueError saying what is allowed otherwise."""
    value = None
    if isinstance(limit, int) and not isinstance(limit, bool):
        value = limit
    elif isinstance(limit, str) and re.fullmatch(r"\s*[0-9]{1,4}\s*", limit):
        value = int(limit)
    if value is None or not 1 <= value <= MAX_LIMIT:
        raise ValueError("limit must be a whole number from 1 to %d, got %r" % (MAX_LIMIT, limit))
    return value


def recent_executions(sfn_client, state_machine_arn, limit=DEFAULT_LIMIT):
    """Returns summaries of the newest ``limit`` (1-100) executions of the state machine, newest
    first.

    Executions are described concurrently (at most 8 calls at a time). An execution that cannot be
    described (it vanished, or the call failed) is summarized from its list entry.
    Raises ValueError for a bad limit and botocore's ClientError when listing fails (e.g.
    StateMachineDoesNotExist: deploy the stage first).
    """
    limit = check_limit(limit)
    listed = sfn_client.list_executions(stateMachineArn=state_machine_arn, maxResults=limit)
    items = listed.get("executions", [])[:limit]
    if not items:
        return []

    def describe(item):
        try:
            return sfn_client.describe_execution(executionArn=item["executionArn"])
        except ClientError as error:
            _LOG.warning("Could not describe %s: %s", item.get("name"), error)
            return item

    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(items))) as pool:
        described = list(pool.map(describe, items))
    # ListExecutions is newest first already; sorting keeps that true for any backend.
    described.sort(key=_start_key, reverse=True)
    return [summarize(execution) for execution in described]


def _start_key(execution):
    started = _as_datetime(execution.get("startDate"))
    if started is None:
        return 0.0
    if started.tzinfo is None:
        started = started.replace(tzinfo=dt.timezone.utc)
    return started.timestamp()


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="30">
<title>%(title)s</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.SUCCEEDED { color: #176317; } .FAILED, .TIMED_OUT, .ABORTED { color: #a11; } .RUNNING { color: #035; }
</style>
</head>
<body>
<h1>%(title)s</h1>
<p>The %(count)d most recent executions, newest first (times in UTC).
As JSON: <a href="status">status</a>.</p>
%(table)s
</body>
</html>
"""

_COLUMNS = ("Started", "Status", "Source", "Read", "Valid", "Quarantined", "Duplicates",
            "Total cost ($)", "Total distance (mi)", "Total quantity (gal)", "Seconds", "Failure")


def _cell(value, numeric=False, css_class=None):
    if value is None:
        text = ""
    elif isinstance(value, float):
        text = "{:,.2f}".format(value)
    elif isinstance(value, int):
        text = "{:,}".format(value)
    else:
        text = str(value)
    classes = " ".join(c for c in ("num" if numeric else None, css_class) if c)
    attribute = ' class="%s"' % html.escape(classes) if classes else ""
    return "<td%s>%s</td>" % (attribute, html.escape(text))


def render_page(summaries, title="Shipping ETL"):
    """Returns a small HTML page (a str) listing execution summaries, every value escaped."""
    if not summaries:
        table = "<p>No executions yet: put an NDJSON file under incoming/ in the landing bucket.</p>"
    else:
        rows = []
        for summary in summaries:
            counts = summary.get("rows") or {}
            totals = summary.get("totals") or {}
            failure = None
            if summary.get("error") or summary.get("failed_step"):
                parts = (summary.get("failed_step"), summary.get("error"))
                failure = ": ".join(str(part) for part in parts if part)
            rows.append("<tr>%s</tr>" % "".join([
                _cell(summary.get("started")),
                _cell(summary.get("status"), css_class=summary.get("status")),
                _cell(summary.get("source")),
                _cell(counts.get("read"), numeric=True),
                _cell(counts.get("valid"), numeric=True),
                _cell(counts.get("quarantined"), numeric=True),
                _cell(counts.get("duplicates"), numeric=True),
                _cell(totals.get("shipping_cost"), numeric=True),
                _cell(totals.get("shipping_distance"), numeric=True),
                _cell(totals.get("quantity"), numeric=True),
                _cell(summary.get("duration_seconds"), numeric=True),
                _cell(failure),
            ]))
        header = "".join("<th>%s</th>" % html.escape(name) for name in _COLUMNS)
        table = "<table>\n<tr>%s</tr>\n%s\n</table>" % (header, "\n".join(rows))
    return _PAGE % {"title": html.escape(title), "count": len(summaries), "table": table}
