"""What every deploy step shares: clients, the resource names, dry-run, the report of changes."""
import sys
import time
from dataclasses import dataclass

from deploy.errors import error_code

CREATED, UPDATED, UNCHANGED = "created", "updated", "unchanged"
DELETED, ABSENT, KEPT = "deleted", "absent", "kept"
_DRY_RUN_LABELS = {CREATED: "would create", UPDATED: "would update", DELETED: "would delete"}


def label(action, dry_run):
    """How an action reads in the report: a dry run says what it *would* do."""
    return _DRY_RUN_LABELS.get(action, action) if dry_run else action


@dataclass(frozen=True)
class Change:
    """What one deploy step did (or, in a dry run, would do) to one resource."""

    action: str  # created | updated | unchanged | deleted | absent | kept
    kind: str  # e.g. "s3 bucket", "glue job"
    name: str
    detail: str = ""

    def line(self, dry_run=False):
        text = "%-13s %-18s %s" % (label(self.action, dry_run), self.kind, self.name)
        return "%s  (%s)" % (text, self.detail) if self.detail else text


class DeployContext:
    """Lazily made boto3 clients of one session and region, plus the running report.

    ``sleep`` is injectable so tests never wait on the retries that cover IAM propagation.
    """

    def __init__(self, session, resources, dry_run=False, out=None, sleep=time.sleep):
        self.session = session
        self.resources = resources
        self.dry_run = dry_run
        self.out = sys.stdout if out is None else out
        self.sleep = sleep
        self.changes = []
        self._clients = {}

    def client(self, service):
        if service not in self._clients:
            self._clients[service] = self.session.client(service, region_name=self.resources.region)
        return self._clients[service]

    def record(self, action, kind, name, detail=""):
        """Add one line to the report and print it; returns the Change."""
        change = Change(action, kind, name, detail)
        self.changes.append(change)
        self.say(change.line(self.dry_run))
        return change

    def record_changes(self, kind, name, changed):
        """Record UPDATED with the ``changed`` labels, or UNCHANGED when there are none; returns
        the Change."""
        if changed:
            return self.record(UPDATED, kind, name, ", ".join(changed))
        return self.record(UNCHANGED, kind, name)

    def say(self, text):
        print(text, file=self.out, flush=True)

    def retry(self, call, codes, attempts=8, first_delay=2.0, max_delay=15.0):
        """``call()``, retried with backoff while it fails with one of ``codes``.

        For errors that only mean "not yet": a role created seconds ago is not assumable by
        Glue or Step Functions until IAM has propagated it; a deleted state machine's name is
        taken until deletion finishes. Returns what ``call`` returns.
        """
        delay = first_delay
        for attempt in range(1, attempts + 1):
            try:
                return call()
            except Exception as exc:  # noqa: BLE001 -- re-raised unless it is one of codes
                if attempt == attempts or not _matches(exc, codes):
                    raise
            self.sleep(delay)
            delay = min(delay * 2, max_delay)


def _matches(exc, codes):
    code = error_code(exc)
    if code is None:
        return False
    for wanted in codes:
        # (code, text): only when the message also says it, e.g. Glue's InvalidInputException
        # is retryable only when it is about assuming the role.
        if isinstance(wanted, tuple):
            if code == wanted[0] and wanted[1] in str(exc):
                return True
        elif code == wanted:
            return True
    return False
