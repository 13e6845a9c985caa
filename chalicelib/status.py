"""Summaries of pipeline executions, read from Step Functions itself (no other store).

A summary holds only what the execution's input and output carry by design: the source URI,
row counts, query totals, the notification id and, on failure, the failed step and its error.
Inputs and outputs are PII-free; nothing else is copied in. A step timeline is built from the
execution history's event types, state names, times and error names only: the states' inputs
and outputs in that history are never read.
"""
import datetime as dt
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor, wait

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import asl, redact
from chalicelib.queries import parse_totals

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
# Concurrent DescribeExecution calls: enough to describe a page of 100 quickly, few enough to stay
# inside Step Functions' per-account request rate.
MAX_WORKERS = 8
ROW_COUNT_KEYS = ("read", "valid", "quarantined", "duplicates")
# A Fail state's cause may be up to 32 KB; a summary keeps the start of it.
MAX_CAUSE_CHARS = 2000
# How long one request waits for Step Functions after listing: well inside API Gateway's 29 s.
CALL_BUDGET_SECONDS = 15.0
# GetExecutionHistory pages read for one timeline: 5 x 1000 events covers hours of crawler
# polling; a longer history is summarized from its first 5000 events and says so.
HISTORY_PAGE_SIZE = 1000
MAX_HISTORY_PAGES = 5
# The timeline's name for the shared failure branch (failure notice, then the Fail state).
FAILURE_BRANCH = "on-failure"
TERMINAL_STATUSES = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
# What this pipeline names its executions (chalicelib.naming): also keeps a name from reaching
# beyond the stage's state machine when it is turned into an ARN.
_EXECUTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")
_END_EVENTS = {"ExecutionSucceeded": "SUCCEEDED", "ExecutionFailed": "FAILED",
               "ExecutionAborted": "ABORTED", "ExecutionTimedOut": "TIMED_OUT"}
# History event types of a Task state's work (service integrations, Lambda, activities).
_WORK_PREFIXES = ("Task", "LambdaFunction", "Activity")

# Step Functions quota: a request makes at most 1 ListExecutions, MAX_DESCRIBES_PER_REQUEST
# DescribeExecution and (the dashboard or /status/{name}) 1 DescribeExecution plus up to
# MAX_HISTORY_PAGES GetExecutionHistory calls. An ended execution never changes, so its
# description and its complete history are kept (ENDED_CACHE_SIZE of each, per warm Lambda):
# in steady state a request costs 1 ListExecutions plus one DescribeExecution per execution
# still running or not yet seen. docs/ORCHESTRATION.md has the numbers.
MAX_DESCRIBES_PER_REQUEST = 20  # = DEFAULT_LIMIT: the default page is complete at once
ENDED_CACHE_SIZE = 1000

_LOG = logging.getLogger(__name__)


class _EndedCache:
    """A bounded, thread-safe map of ended executions' ARN to what Step Functions said of them."""

    def __init__(self, size=ENDED_CACHE_SIZE):
        self.size = size
        self._items = OrderedDict()
        self._lock = threading.Lock()

    def get(self, arn):
        with self._lock:
            value = self._items.get(arn)
            if value is not None:
                self._items.move_to_end(arn)
            return value

    def put(self, arn, value):
        with self._lock:
            self._items[arn] = value
            self._items.move_to_end(arn)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self):
        with self._lock:
            self._items.clear()


ENDED_DESCRIPTIONS = _EndedCache()
ENDED_HISTORIES = _EndedCache()


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


# The json-to-parquet job fails a file without a valid record with a message that carries its
# counts (glue/json_to_parquet.py); the run has no output then, but the counts are worth showing.
_NO_VALID_RECORD = re.compile(r"no valid record in .*?: (\d+) lines? read, (\d+) quarantined")


def _counts_in_cause(cause):
    match = _NO_VALID_RECORD.search(cause or "")
    if match is None:
        return None
    read, quarantined = int(match.group(1)), int(match.group(2))
    # No valid record means no duplicate either (a duplicate repeats a valid record).
    return {"read": read, "valid": 0, "quarantined": quarantined, "duplicates": read - quarantined}


def _totals(output):
    query = output.get("query")
    if not isinstance(query, dict) or not isinstance(query.get("values"), list):
        return None
    try:
        return parse_totals(query["values"])
    except (TypeError, ValueError):
        # A malformed result is shown as missing totals, not as a broken status page.
        return None


def _scanned_bytes(output):
    """Athena's DataScannedInBytes of the execution's query, or None."""
    query = output.get("query")
    value = query.get("scanned_bytes") if isinstance(query, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


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
    # A cause can quote input (an engine's error text): never shown with record content.
    cause = redact.scrub(_readable_cause(cause))
    if cause is not None and len(cause) > MAX_CAUSE_CHARS:
        cause = cause[:MAX_CAUSE_CHARS] + "..."
    return error, cause, step


def _readable_cause(cause):
    """The part of a cause that says what went wrong: a failed task's cause is often the whole
    API result as JSON (a Glue JobRun, a Lambda error), of which only the message is readable."""
    detail = _json_object(cause)
    if detail is not None:
        for key in ("ErrorMessage", "errorMessage"):
            if isinstance(detail.get(key), str) and detail[key]:
                return detail[key]
    return cause


def summarize(execution):
    """Returns the summary of one execution from a DescribeExecution response (or a
    ListExecutions item, which has no input, output, error or cause):

    ``{"name", "status", "source", "started", "stopped", "duration_seconds", "rows", "totals",
    "scanned_bytes", "superseded", "notification_id", "error", "cause", "failed_step"}``;
    datetimes as ISO 8601 strings, absent parts as None. ``scanned_bytes`` is the bytes Athena
    scanned for the execution's totals query; ``superseded`` is true when the processed table
    already held a newer version of the landing key (nothing was committed).
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
        "rows": _row_counts(output) or _counts_in_cause(cause),
        "totals": _totals(output),
        "scanned_bytes": _scanned_bytes(output),
        "superseded": output.get("superseded") if isinstance(output.get("superseded"), bool) else None,
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


def check_execution_name(name):
    """Returns ``name`` when it can name one of the pipeline's executions; raises ValueError
    saying what is allowed otherwise."""
    if not isinstance(name, str) or not _EXECUTION_NAME.fullmatch(name):
        raise ValueError("an execution name is 1 to 80 characters of A-Z, a-z, 0-9, '-' and '_', "
                         "got %r" % (name,))
    return name


def check_query(params, allowed):
    """Returns ``{name: value}`` from query parameters given as ``{name: [values]}``.

    Raises ValueError naming the allowed parameters when one is unknown, and saying so when one
    is given more than once.
    """
    values = {}
    for name, given in sorted((params or {}).items()):
        if name not in allowed:
            raise ValueError("unknown query parameter %r: allowed are %s"
                             % (name, ", ".join(allowed) or "none"))
        if len(given) != 1:
            raise ValueError("give the query parameter %r once, got it %d times" % (name, len(given)))
        values[name] = given[0]
    return values


def execution_arn(state_machine_arn, name):
    """The ARN of the execution ``name`` of a state machine (names checked by
    check_execution_name); raises ValueError for an ARN that is not a state machine's."""
    prefix, marker, machine = state_machine_arn.partition(":stateMachine:")
    if not marker or not machine:
        raise ValueError("not a state machine ARN: %r" % (state_machine_arn,))
    return "%s:execution:%s:%s" % (prefix, machine, check_execution_name(name))


def _list(sfn_client, state_machine_arn, limit):
    listed = sfn_client.list_executions(stateMachineArn=state_machine_arn, maxResults=limit)
    return listed.get("executions", [])[:limit]


def _describe_or_item(sfn_client, item):
    try:
        described = sfn_client.describe_execution(executionArn=item["executionArn"])
    except (ClientError, BotoCoreError) as error:
        _LOG.warning("Could not describe %s: %s", item.get("name"), error)
        return item
    if described.get("status") in TERMINAL_STATUSES:
        ENDED_DESCRIPTIONS.put(item["executionArn"], described)
    return described


def _describe_selected(sfn_client, arn):
    """DescribeExecution of the selected execution (its errors are the answer), cached once ended."""
    cached = ENDED_DESCRIPTIONS.get(arn)
    if cached is not None:
        return cached
    described = sfn_client.describe_execution(executionArn=arn)
    if described.get("status") in TERMINAL_STATUSES:
        ENDED_DESCRIPTIONS.put(arn, described)
    return described


def _history_cached(sfn_client, execution_arn_value, ended, deadline):
    cached = ENDED_HISTORIES.get(execution_arn_value)
    if cached is not None:
        return cached
    events, complete = execution_history(sfn_client, execution_arn_value, deadline=deadline)
    if ended and complete:
        ENDED_HISTORIES.put(execution_arn_value, (events, complete))
    return events, complete


def recent_executions(sfn_client, state_machine_arn, limit=DEFAULT_LIMIT,
                      budget_seconds=CALL_BUDGET_SECONDS):
    """Returns summaries of the newest ``limit`` (1-100) executions of the state machine, newest
    first.

    Executions are described concurrently (at most 8 calls at a time). An execution that cannot be
    described (it vanished, the call failed, or ``budget_seconds`` ran out) is summarized from its
    list entry. Raises ValueError for a bad limit and botocore's ClientError when listing fails
    (e.g. StateMachineDoesNotExist: deploy the stage first).
    """
    return overview(sfn_client, state_machine_arn, limit=limit, with_steps=False,
                    budget_seconds=budget_seconds)["executions"]


def overview(sfn_client, state_machine_arn, limit=DEFAULT_LIMIT, selected=None, with_steps=True,
             budget_seconds=CALL_BUDGET_SECONDS):
    """Returns ``{"executions": [summaries, newest first], "selected": detail or None}``.

    ``selected`` names the execution whose step timeline is included (see execution_detail);
    by default the newest one, when ``with_steps``. All Step Functions calls after the listing
    run concurrently, at most 8 at a time, and are waited for ``budget_seconds`` at most: an
    execution not described by then is summarized from its list entry, and a timeline not read
    by then (or, for the default choice, not readable) is left out (``selected`` None). Raises ValueError for a bad limit or name, and
    botocore's ClientError when listing fails or the selected execution does not exist
    (ExecutionDoesNotExist).
    """
    limit = check_limit(limit)
    selected_arn = None if selected is None else execution_arn(state_machine_arn, selected)
    items = _list(sfn_client, state_machine_arn, limit)
    if selected_arn is None and with_steps and items:
        selected_arn = items[0]["executionArn"]
    known = {item["executionArn"]: ENDED_DESCRIPTIONS.get(item["executionArn"]) for item in items}
    unknown = [item for item in items if known[item["executionArn"]] is None]
    # The rest are summarized from their list entry now and described by a later request.
    to_describe = {item["executionArn"] for item in unknown[:MAX_DESCRIBES_PER_REQUEST]}
    selected_ended = selected_arn is not None and (
        ENDED_DESCRIPTIONS.get(selected_arn) is not None
        or any(i["executionArn"] == selected_arn and i.get("status") in TERMINAL_STATUSES for i in items))
    jobs = len(to_describe) + (2 if selected_arn is not None else 0)
    if not jobs:
        described = [known[item["executionArn"]] for item in items]
        described.sort(key=_start_key, reverse=True)
        return {"executions": [summarize(execution) for execution in described], "selected": None}
    deadline = time.monotonic() + budget_seconds
    pool = ThreadPoolExecutor(max_workers=min(MAX_WORKERS, jobs))
    try:
        history = extra = None
        if selected_arn is not None:
            # First in the queue: the timeline's pages are read one after another.
            history = pool.submit(_history_cached, sfn_client, selected_arn, selected_ended, deadline)
            if selected_arn not in {item["executionArn"] for item in items}:
                extra = pool.submit(_describe_selected, sfn_client, selected_arn)
        futures = {arn: pool.submit(_describe_or_item, sfn_client, item)
                   for arn, item in ((i["executionArn"], i) for i in items) if arn in to_describe}
        wait([f for f in [history, extra] + list(futures.values()) if f is not None],
             timeout=max(0.0, deadline - time.monotonic()))
        described = []
        for item in items:
            arn = item["executionArn"]
            future = futures.get(arn)
            if known[arn] is not None:
                described.append(known[arn])
            elif future is not None and future.done():
                described.append(future.result())
            else:
                described.append(item)
        detail = None
        if selected_arn is not None:
            # The selected execution's own error (e.g. ExecutionDoesNotExist) is the answer.
            if extra is not None:
                chosen = extra.result() if extra.done() else None
            else:
                chosen = next(d for d in described if d.get("executionArn") == selected_arn)
            if history.done() and chosen is not None:
                try:
                    events, complete = history.result()
                except (ClientError, BotoCoreError) as error:
                    if selected is not None:
                        raise
                    # The newest run's timeline is extra: the list still answers without it.
                    _LOG.warning("Could not read the history of %s: %s", selected_arn, error)
                else:
                    detail = _detail(chosen, events, complete)
    finally:
        # Calls still running end on their own, bounded by the client's timeouts.
        pool.shutdown(wait=False, cancel_futures=True)
    # ListExecutions is newest first already; sorting keeps that true for any backend.
    described.sort(key=_start_key, reverse=True)
    return {"executions": [summarize(execution) for execution in described], "selected": detail}


def execution_detail(sfn_client, execution_arn_value, budget_seconds=CALL_BUDGET_SECONDS):
    """Returns one execution's summary (see summarize) plus ``"steps"`` (see step_timeline) and
    ``"history_complete"`` (False when the history was longer than the pages read in
    ``budget_seconds``).

    DescribeExecution and GetExecutionHistory run concurrently. Raises botocore's ClientError,
    e.g. ExecutionDoesNotExist for an unknown execution.
    """
    deadline = time.monotonic() + budget_seconds
    with ThreadPoolExecutor(max_workers=2) as pool:
        described = pool.submit(sfn_client.describe_execution, executionArn=execution_arn_value)
        history = pool.submit(execution_history, sfn_client, execution_arn_value, deadline=deadline)
        described = described.result()
        events, complete = history.result()
    return _detail(described, events, complete)


def _detail(described, events, complete):
    summary = summarize(described)
    summary["steps"] = step_timeline(events, status=summary["status"],
                                     failed_step=summary["failed_step"])
    summary["history_complete"] = complete
    return summary


def execution_history(sfn_client, execution_arn_value, max_pages=MAX_HISTORY_PAGES,
                      page_size=HISTORY_PAGE_SIZE, deadline=None):
    """Returns ``(events, complete)``: the execution's history events in order, at most
    ``max_pages`` pages of ``page_size`` (and no page started after ``deadline``, a
    time.monotonic() value), and whether that is all of it. The events carry no state input or
    output. Raises botocore's ClientError (ExecutionDoesNotExist for an unknown execution)."""
    events, token = [], None
    for page_number in range(max_pages):
        if page_number and deadline is not None and time.monotonic() >= deadline:
            break
        kwargs = {"executionArn": execution_arn_value, "maxResults": page_size,
                  "includeExecutionData": False}
        if token:
            kwargs["nextToken"] = token
        page = sfn_client.get_execution_history(**kwargs)
        events.extend(page.get("events", []))
        token = page.get("nextToken")
        if not token:
            return events, True
    return events, False


def step_of_state(state_name):
    """The timeline step of a state: its pipeline step (chalicelib.asl.STATE_STEPS),
    FAILURE_BRANCH for the shared failure branch, or the state's own name when the definition
    has a state the builder does not know (an older or newer definition)."""
    try:
        step = asl.step_of(state_name)
    except KeyError:
        return state_name
    return FAILURE_BRANCH if step is None else step


def _event_kind(event_type):
    """(kind, detail) of a history event type: ("entered" | "exited" | "end" | "scheduled" |
    "succeeded" | "failed" | None, name)."""
    if event_type.endswith("StateEntered"):
        return "entered", event_type[:-len("StateEntered")]
    if event_type.endswith("StateExited"):
        return "exited", event_type[:-len("StateExited")]
    if event_type in _END_EVENTS:
        return "end", _END_EVENTS[event_type]
    if event_type.startswith(_WORK_PREFIXES):
        if event_type.endswith("Scheduled"):
            return "scheduled", None
        if event_type.endswith("Succeeded"):
            return "succeeded", None
        if event_type.endswith("Failed") or event_type.endswith("TimedOut"):
            return "failed", None
    return None, None


def _event_details(event):
    for key, value in event.items():
        if key.endswith("EventDetails") and isinstance(value, dict):
            return value
    return {}


def step_timeline(events, status=None, failed_step=None):
    """Returns the steps an execution went through, in the order it entered them:

    ``[{"step", "started", "stopped", "duration_seconds", "attempts", "outcome", "error"}]``.

    Times are ISO 8601 strings in UTC (``stopped`` None while the step runs). ``attempts`` is the
    most calls any one visit of the step's Task states made (1, or more after retries; 0 for a
    step without a Task). ``outcome``: RUNNING; SUCCEEDED; CAUGHT when the step was left through
    a Catch (a Catch that leads to another state of the same step, e.g. a wait for a crawl that
    is already running, is part of the step); FAILED (or the execution's TIMED_OUT/ABORTED) for
    ``failed_step`` and for a step the execution ended in. ``error`` is the name of the task error that was not
    recovered by a retry, if any. ``events`` are GetExecutionHistory events in order; ``status``
    and ``failed_step`` come from the execution's summary (taken from the history when absent).
    """
    steps = {}
    state_of_event = {}
    visits = {}  # entered event id -> the visit's record
    open_visit = {}  # state name -> entered event id of its current visit
    last_entered = None
    end_time = None
    for event in sorted(events, key=lambda e: e.get("id", 0)):
        kind, detail = _event_kind(event.get("type", ""))
        when = event.get("timestamp")
        if kind == "end":
            end_time = when
            status = status or detail
            continue
        details = _event_details(event)
        if kind in ("entered", "exited"):
            state = details.get("name")
        else:
            # Task events point at the state's earlier events; moto leaves some pointers at 0.
            state = state_of_event.get(event.get("previousEventId")) or last_entered
        state_of_event[event.get("id")] = state
        if state is None:
            continue
        step_name = step_of_state(state)
        step = steps.setdefault(step_name, {
            "step": step_name, "first": when, "last": when, "open": set(), "attempts": 0,
            "caught": None, "error": None})
        if kind == "entered":
            last_entered = state
            if detail == "Fail":
                # A Fail state ends the execution on purpose: its visit is over on entry.
                step["last"] = when
                continue
            visits[event.get("id")] = {"calls": 0, "error": None}
            open_visit[state] = event.get("id")
            step["open"].add(event.get("id"))
        elif kind == "exited":
            visit_id = open_visit.pop(state, None)
            step["open"].discard(visit_id)
            step["last"] = when
            visit = visits.get(visit_id)
            # Left through a Catch: the step ends caught unless a later state of the same step
            # (a wait-and-retry loop) carries on from there and exits cleanly.
            step["caught"] = visit["error"] if visit else None
        elif kind is not None:
            visit = visits.get(open_visit.get(state))
            if visit is None:
                continue
            if kind == "scheduled":
                visit["calls"] += 1
                step["attempts"] = max(step["attempts"], visit["calls"])
            elif kind == "succeeded":
                visit["error"] = None
            elif kind == "failed":
                visit["error"] = details.get("error") or event["type"]
                step["error"] = visit["error"]
    ended = status in TERMINAL_STATUSES or end_time is not None
    timeline = []
    for step in steps.values():
        outcome, stopped = "SUCCEEDED", step["last"]
        if step["open"]:
            stopped = end_time if ended else None
            outcome = "RUNNING" if not ended else (status if status in ("TIMED_OUT", "ABORTED") else "FAILED")
        elif step["step"] == failed_step:
            outcome = status if status in ("TIMED_OUT", "ABORTED") else "FAILED"
        elif step["caught"]:
            outcome = "CAUGHT"
        if outcome in ("SUCCEEDED", "RUNNING"):
            # A failure a retry recovered from is not the step's error.
            error = None if not step["open"] else _pending_error(step, visits)
        else:
            error = step["error"]
        started = step["first"]
        timeline.append({
            "step": step["step"],
            "started": _iso(started),
            "stopped": _iso(stopped),
            "duration_seconds": _seconds_between(started, stopped),
            "attempts": step["attempts"],
            "outcome": outcome,
            "error": error,
        })
    if status in ("FAILED", "TIMED_OUT", "ABORTED") and not any(
            s["outcome"] in ("FAILED", "TIMED_OUT", "ABORTED") for s in timeline):
        # No failed_step and nothing left open: the last pipeline step before the failure
        # branch is where it went wrong.
        for entry in reversed(timeline):
            if entry["step"] != FAILURE_BRANCH:
                entry["outcome"] = status
                entry["error"] = steps[entry["step"]]["error"]
                break
    return timeline


def _pending_error(step, visits):
    for visit_id in step["open"]:
        visit = visits.get(visit_id)
        if visit and visit["error"]:
            return visit["error"]
    return None


def _seconds_between(started, stopped):
    started, stopped = _as_datetime(started), _as_datetime(stopped)
    if started is None or stopped is None:
        return None
    return round((stopped - started).total_seconds(), 3)


def _start_key(execution):
    started = _as_datetime(execution.get("startDate"))
    if started is None:
        return 0.0
    if started.tzinfo is None:
        started = started.replace(tzinfo=dt.timezone.utc)
    return started.timestamp()
