"""Fault injection of the local stack, in one place: what ``--fail``, ``--fail-once``,
``--redeliver`` and ``--crawl-seconds`` make misbehave, and the wrappers that do it.

The engines (Glue job runner, crawler, Athena engine, SNS publish, the S3 trigger's delivery)
never know about faults: each is wrapped here by a ``Faulty*`` delegate that consults one
``Faults`` table before handing the work on. ``arm()`` turns a parsed command line into that
table; ``clear()`` empties it.

Steps that can fail: the state machine's steps (chalicelib.asl.STEPS) and ``trigger``, the S3
event's delivery to the ``on_landing`` Lambda (every attempt, Lambda's two asynchronous retries
included, fails; the event then goes to the function's on-failure destination).
"""
import logging
import threading

from chalicelib.asl import OUTCOME_ATTRIBUTE, OUTCOME_FAILED, STEPS

log = logging.getLogger("local")

TRIGGER = "trigger"
FAULT_STEPS = tuple(STEPS) + (TRIGGER,)


class InjectedFault(Exception):
    """A failure the local stack made on purpose (``Faults``); never the engines' own fault."""

    injected = True
    user_error = False


class Faults(dict):
    """The fault table, read by the wrappers on every job run, crawl, query, publish and S3 event
    delivery (change it at any time; ``clear()`` removes every fault).

    Keys:
      ``crawl_seconds`` (float): every crawl takes at least this long (the crawler stays RUNNING),
      as AWS crawls take minutes; lets a pipeline's polling loop be exercised.

    ``fail(target, step, once)`` makes the adapter behind ``target`` fail:
      ``("job", job name)`` its runs end FAILED (a ``--catalog_only`` run is the crawl step's
      catalog check, not a run of the job's step: it is left alone);
      ``("crawler", crawler name)`` its crawls end FAILED;
      ``("query", None)`` every Athena query ends FAILED;
      ``("publish", topic ARN)`` its publishes are throttled, except failure notifications
      (message attribute ``outcome`` = ``failed``), so the failure path can still report;
      ``("trigger", None)`` every delivery of an S3 event to the trigger Lambda fails.
    With ``once`` only the first attempt per key fails: per source id for job runs and
    publishes, per query text (which names the source) for queries, per crawler for crawls
    (a crawler is shared by every execution), per landing key for the trigger.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._rules = {}  # target -> (step, once)
        self._failed_keys = set()  # (target, key) already failed once

    def fail(self, target, step, once=False):
        """Arms a fault for ``target`` (see the class docstring), reported as ``step``. Returns None."""
        with self._lock:
            self._rules[target] = (step, bool(once))

    def clear(self):
        with self._lock:
            super().clear()
            self._rules.clear()
            self._failed_keys.clear()

    @property
    def armed(self):
        """``{target: (step, once)}`` of the faults armed now."""
        with self._lock:
            return dict(self._rules)

    def check(self, target, key):
        """The failure message when this attempt at ``target`` must fail, else None."""
        with self._lock:
            rule = self._rules.get(target)
            if rule is None:
                return None
            step, once = rule
            if once:
                if (target, key) in self._failed_keys:
                    return None
                self._failed_keys.add((target, key))
                return ("Injected fault (--fail-once %s): the first attempt of step %s fails"
                        % (step, step))
            return "Injected fault (--fail %s): every attempt of step %s fails" % (step, step)


def target(resources, step):
    """What a fault at ``step`` (FAULT_STEPS) makes fail, as a ``Faults`` target.
    Raises ValueError for an unknown step."""
    r = resources
    targets = {
        "json-to-parquet": ("job", r.json_to_parquet_job),
        "crawl-raw": ("crawler", r.raw_crawler),
        "normalize": ("job", r.normalize_job),
        "query": ("query", None),
        "notify": ("publish", r.topic_arn),
        TRIGGER: ("trigger", None),
    }
    if step not in targets:
        raise ValueError("unknown step %r: one of %s" % (step, ", ".join(FAULT_STEPS)))
    return targets[step]


def arm(stack, fail=(), fail_once=(), crawl_seconds=0.0, redeliver=1):
    """Clears the stack's faults, then arms the ones given (a ``LocalStack``). Returns the armed
    faults as command-line options, for the log."""
    stack.clear_faults()
    for step in fail or ():
        stack.inject_fault(step)
    for step in fail_once or ():
        stack.inject_fault(step, once=True)
    crawl_seconds = crawl_seconds or 0
    stack.set_crawl_seconds(crawl_seconds)
    # The local stage polls crawlers without pause (its crawls take milliseconds); crawls made to
    # take seconds are polled every second, as AWS's are every POLL_SECONDS.
    stack.poll_seconds = 1 if crawl_seconds >= 1 else None
    stack.events.redeliver = redeliver or 1
    armed = ["--fail %s" % s for s in fail or ()]
    armed += ["--fail-once %s" % s for s in fail_once or ()]
    if crawl_seconds:
        armed.append("--crawl-seconds %g" % crawl_seconds)
    if stack.events.redeliver > 1:
        armed.append("--redeliver %d" % stack.events.redeliver)
    return armed


def _is_true(value):
    return str(value or "").strip().lower() in ("1", "true", "yes")


class FaultyJobRunner:
    """Delegates to the real job runner unless a job fault says this run fails."""

    def __init__(self, runner, faults):
        self._runner = runner
        self._faults = faults

    def run(self, job, arguments):
        if not _is_true(arguments.get("--catalog_only")):
            key = arguments.get("--source_id") or arguments.get("--source_uri")
            message = self._faults.check(("job", job.get("Name")), key)
            if message:
                return False, message
        return self._runner.run(job, arguments)

    def close(self):
        self._runner.close()


class FaultyCrawler:
    """Delegates to the real crawler, applying the crawl faults first; counts the crawls."""

    def __init__(self, crawler, faults):
        self._crawler = crawler
        self._faults = faults
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.counts = {}  # crawler name -> crawls started

    def stop_waiting(self):
        """Ends every crawl's ``crawl_seconds`` wait at once: stopping the stack must not wait
        for a slow crawl (Ctrl-C during ``local run --crawl-seconds``)."""
        self._stopping.set()

    def crawl(self, definition):
        name = definition.get("Name")
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + 1
        delay = float(self._faults.get("crawl_seconds") or 0)
        if delay > 0 and self._stopping.wait(delay):
            return False, "the local stack stopped during the crawl"
        message = self._faults.check(("crawler", name), name)
        if message:
            return False, message
        return self._crawler.crawl(definition)


class FaultyQueryEngine:
    """Delegates to the real query engine unless a query fault says this query fails."""

    def __init__(self, engine, faults):
        self._engine = engine
        self._faults = faults

    def execute(self, sql, database, output_location, **options):
        message = self._faults.check(("query", None), sql)
        if message:
            raise InjectedFault(message)
        return self._engine.execute(sql, database, output_location, **options)


def publish_fault(faults):
    """``refusal(topic_arn, subject, attributes)`` for moto_hooks: the SNS publish faults."""
    def refusal(topic_arn, subject, attributes):
        if attributes.get(OUTCOME_ATTRIBUTE) == OUTCOME_FAILED:
            return None  # the failure path must still be able to report
        return faults.check(("publish", topic_arn), attributes.get("source_id") or subject)
    return refusal


class FaultyTrigger:
    """Wraps ``invoke(function_name, event)`` (the S3 event's delivery to a Lambda handler):
    a trigger fault makes the invocation fail before the handler runs, as a Lambda that errors
    or is throttled would. Keyed by the event's first object key, so ``--fail-once trigger``
    fails the first delivery of each object and its retry succeeds."""

    def __init__(self, invoke, faults, function_name):
        self._invoke = invoke
        self._faults = faults
        self.function_name = function_name

    def __call__(self, function_name, event):
        if function_name == self.function_name:
            records = event.get("Records") or [{}]
            key = ((records[0].get("s3") or {}).get("object") or {}).get("key")
            message = self._faults.check(("trigger", None), key)
            if message:
                raise InjectedFault(message)
        return self._invoke(function_name, event)
