"""A small CloudWatch Logs Insights interpreter for the local stack's JSON log lines.

moto stores log events but its query engine knows neither ``filter`` nor the fields Logs Insights
discovers in JSON events, so the query docs/OPERATIONS.md gives (follow one landing object by its
``source_id``) runs here on the lines the components wrote: the Lambdas' (``LocalStack.
lambda_log_path``) and the Glue job runs' (``LocalStack.glue_log_paths()``).

Understood, as Logs Insights reads them: ``fields a, b`` (which fields a result row shows),
``filter x = "v"`` / ``!=`` joined by ``and`` / ``or``, ``sort f asc|desc`` and ``limit n``, with
commands separated by ``|``. Fields: the top-level keys of a JSON event, ``@timestamp`` (its
``time``), ``@message`` (the line) and ``@log`` (the file it came from, standing for the log
group). Lines that are not JSON objects have only the ``@`` fields.
"""
import json
import re

_COMPARISON = re.compile(r'^\s*(@?[A-Za-z_][\w.]*)\s*(=|!=)\s*(?:"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([\w.-]+))\s*$')


class QueryError(ValueError):
    """The query uses what this interpreter does not understand."""


def events(paths):
    """``[{field: value}]`` of every line of the files at ``paths``."""
    found = []
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                lines = handle.read().splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            if not line.strip():
                continue
            event = {}
            if line.startswith("{"):
                try:
                    parsed = json.loads(line)
                except ValueError:
                    parsed = None
                if isinstance(parsed, dict):
                    event.update((k, v) for k, v in parsed.items() if not isinstance(v, (dict, list)))
            event["@message"] = line
            event["@log"] = path
            event["@timestamp"] = event.get("time", "")
            found.append(event)
    return found


def _condition(text):
    """A predicate over an event for ``a = "v" and b != "w"`` (``and`` binds tighter than ``or``)."""
    alternatives = []
    for alternative in re.split(r"\s+or\s+", text.strip()):
        terms = []
        for term in re.split(r"\s+and\s+", alternative):
            match = _COMPARISON.match(term)
            if not match:
                raise QueryError("filter %r: only field = \"value\" and field != \"value\" joined by and/or "
                                 "are understood locally" % text)
            field, operator, quoted, single, bare = match.groups()
            value = quoted if quoted is not None else single if single is not None else bare
            if quoted is not None:
                value = json.loads('"%s"' % quoted)
            terms.append((field, operator, value))
        alternatives.append(terms)

    def holds(event):
        def term_holds(field, operator, value):
            present = field in event and str(event[field]) == value
            return present if operator == "=" else not present
        return any(all(term_holds(*term) for term in terms) for terms in alternatives)
    return holds


def run(query, events_):
    """The rows ``query`` selects from ``events_`` (``events()``): each ``{field: value}`` of its
    ``fields`` (every field without a ``fields`` command). Raises QueryError."""
    selected = list(events_)
    shown = None
    for command in (part.strip() for part in query.split("|")):
        if not command:
            continue
        verb, _, rest = command.partition(" ")
        if verb == "fields":
            shown = [name.strip() for name in rest.split(",") if name.strip()]
        elif verb == "filter":
            holds = _condition(rest)
            selected = [event for event in selected if holds(event)]
        elif verb == "sort":
            field, _, order = rest.strip().partition(" ")
            selected.sort(key=lambda event: str(event.get(field, "")), reverse=order.strip() == "desc")
        elif verb == "limit":
            selected = selected[:int(rest)]
        else:
            raise QueryError("%r: only fields, filter, sort and limit are understood locally" % command)
    if shown is None:
        return selected
    return [{name: event.get(name) for name in shown} for event in selected]
