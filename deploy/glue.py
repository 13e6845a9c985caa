"""The Glue database, jobs and crawlers, created or updated from ``chalicelib.glue_jobs``."""
import json

from deploy.context import ABSENT, CREATED, DELETED, UNCHANGED, UPDATED
from deploy.diff import changed_fields, role_name
from deploy.errors import DeployError, has_code, replace_if_unsupported

# A freshly created role is not assumable by Glue until IAM has propagated it.
_ROLE_NOT_READY = (("InvalidInputException", "assume"), ("AccessDeniedException", "assume"))
_CRAWL_WAIT_SECONDS = 5
_CRAWL_WAIT_ATTEMPTS = 60


def _missing(exc):
    return has_code(exc, "EntityNotFoundException")


# -- database ----------------------------------------------------------------------------------
def ensure_database(ctx, definition):
    """Create the database or update its description; returns the Change."""
    glue = ctx.client("glue")
    wanted = definition["DatabaseInput"]
    try:
        current = glue.get_database(Name=wanted["Name"])["Database"]
    except Exception as exc:
        if not _missing(exc):
            raise
        if not ctx.dry_run:
            glue.create_database(**definition)
        return ctx.record(CREATED, "glue database", wanted["Name"])
    changed = changed_fields(wanted, current)
    if not changed:
        return ctx.record(UNCHANGED, "glue database", wanted["Name"])
    if not ctx.dry_run:
        glue.update_database(Name=wanted["Name"], DatabaseInput=wanted)
    return ctx.record(UPDATED, "glue database", wanted["Name"], ", ".join(changed))


def _delete(ctx, kind, name, get, delete):
    """``delete()`` unless ``get()`` finds nothing (EntityNotFoundException); returns the Change."""
    try:
        get()
    except Exception as exc:
        if _missing(exc):
            return ctx.record(ABSENT, kind, name)
        raise
    if not ctx.dry_run:
        delete()
    return ctx.record(DELETED, kind, name)


def delete_database(ctx, name):
    """Delete the database and the tables the crawlers made in it; returns the Change."""
    glue = ctx.client("glue")
    return _delete(ctx, "glue database", name, lambda: glue.get_database(Name=name),
                   lambda: glue.delete_database(Name=name))


# -- security configuration ----------------------------------------------------------------------
def ensure_security_configuration(ctx, definition):
    """Create the security configuration, or replace it when its encryption differs (Glue has
    no update; jobs and crawlers name it, so they keep it); returns the Change."""
    glue = ctx.client("glue")
    name = definition["Name"]
    try:
        current = glue.get_security_configuration(Name=name)["SecurityConfiguration"]
    except Exception as exc:
        if not _missing(exc):
            raise
        if not ctx.dry_run:
            glue.create_security_configuration(**definition)
        return ctx.record(CREATED, "glue security config", name)
    if changed_fields(definition["EncryptionConfiguration"], current.get("EncryptionConfiguration", {})):
        if not ctx.dry_run:
            glue.delete_security_configuration(Name=name)
            glue.create_security_configuration(**definition)
        return ctx.record(UPDATED, "glue security config", name, "encryption")
    return ctx.record(UNCHANGED, "glue security config", name)


def delete_security_configuration(ctx, name):
    """Delete the security configuration; returns the Change."""
    glue = ctx.client("glue")
    return _delete(ctx, "glue security config", name,
                   lambda: glue.get_security_configuration(Name=name),
                   lambda: glue.delete_security_configuration(Name=name))


# -- jobs and crawlers ---------------------------------------------------------------------------
def _comparable(definition, current):
    """Copies of both with roles reduced to their names (Glue may answer with either form)."""
    definition, current = dict(definition), dict(current)
    for item in (definition, current):
        if "Role" in item:
            item["Role"] = role_name(item["Role"])
        if isinstance(item.get("Configuration"), str):
            item["Configuration"] = json.loads(item["Configuration"])
    return definition, current


def _ensure(ctx, kind, definition, get, create, update, delete, exact=(), refuse=None):
    """Create the resource or apply a changed definition; returns the Change.

    ``get``, ``create``, ``update`` and ``delete`` call Glue for this one resource; ``get`` raises
    EntityNotFoundException while it does not exist. ``exact``: fields compared by equality (see
    ``changed_fields``). ``refuse(exc, name)`` may turn a failed update into a DeployError.
    """
    glue = ctx.client("glue")
    name = definition["Name"]

    def create_when_assumable():
        ctx.retry(create, _ROLE_NOT_READY)

    try:
        current = get()
    except Exception as exc:
        if not _missing(exc):
            raise
        if not ctx.dry_run:
            create_when_assumable()
        return ctx.record(CREATED, kind, name)
    changed = changed_fields(*_comparable(definition, current), exact=exact)
    if not changed:
        return ctx.record(UNCHANGED, kind, name)
    if not ctx.dry_run:
        try:
            ctx.retry(update, _ROLE_NOT_READY)
        except Exception as exc:  # noqa: BLE001 -- narrowed below: only an unsupported call
            refused = refuse(exc, name) if refuse else None
            if refused:
                raise refused from exc
            replace_if_unsupported(exc, glue, delete, create_when_assumable)
    return ctx.record(UPDATED, kind, name, ", ".join(changed))


def ensure_job(ctx, definition):
    """Create the job or apply a changed definition; returns the Change."""
    glue = ctx.client("glue")
    name = definition["Name"]
    update = {key: value for key, value in definition.items() if key != "Name"}
    return _ensure(ctx, "glue job", definition,
                   get=lambda: glue.get_job(JobName=name)["Job"],
                   create=lambda: glue.create_job(**definition),
                   update=lambda: glue.update_job(JobName=name, JobUpdate=update),
                   delete=lambda: glue.delete_job(JobName=name),
                   exact=("DefaultArguments",))


def delete_job(ctx, name):
    """Delete one job (its run history goes with it); returns the Change."""
    glue = ctx.client("glue")
    return _delete(ctx, "glue job", name, lambda: glue.get_job(JobName=name),
                   lambda: glue.delete_job(JobName=name))


def _crawler_running(exc, name):
    if has_code(exc, "CrawlerRunningException"):
        return DeployError("Crawler %s is running: wait for its crawl to finish (a minute or two), "
                           "then run the command again." % name)
    return None


def ensure_crawler(ctx, definition):
    """Create the crawler or apply a changed definition; returns the Change."""
    glue = ctx.client("glue")
    name = definition["Name"]
    return _ensure(ctx, "glue crawler", definition,
                   get=lambda: glue.get_crawler(Name=name)["Crawler"],
                   create=lambda: glue.create_crawler(**definition),
                   update=lambda: glue.update_crawler(**definition),
                   delete=lambda: glue.delete_crawler(Name=name),
                   refuse=_crawler_running)


def _stop_crawl(ctx, glue, name):
    """Stop a running crawl and wait until the crawler is READY again."""
    try:
        glue.stop_crawler(Name=name)
    except Exception as exc:
        # Not running (any more), or already stopping: both end in READY.
        if not has_code(exc, "CrawlerNotRunningException", "CrawlerStoppingException"):
            raise
    for _ in range(_CRAWL_WAIT_ATTEMPTS):
        if glue.get_crawler(Name=name)["Crawler"].get("State") == "READY":
            return
        ctx.sleep(_CRAWL_WAIT_SECONDS)
    raise DeployError("Crawler %s did not stop within %d s: run the command again later."
                      % (name, _CRAWL_WAIT_SECONDS * _CRAWL_WAIT_ATTEMPTS))


def delete_crawler(ctx, name):
    """Delete one crawler, stopping a running crawl first; returns the Change."""
    glue = ctx.client("glue")
    try:
        state = glue.get_crawler(Name=name)["Crawler"].get("State")
    except Exception as exc:
        if _missing(exc):
            return ctx.record(ABSENT, "glue crawler", name)
        raise
    if not ctx.dry_run:
        if state in ("RUNNING", "STOPPING"):
            _stop_crawl(ctx, glue, name)
        glue.delete_crawler(Name=name)
    return ctx.record(DELETED, "glue crawler", name)
