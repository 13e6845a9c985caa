"""Error text without record content: what may go to a log line, a failure cause, a notification,
``/status`` or the dashboard.

Parsers quote the input they choke on (DuckDB: ``Expected OBJECT, but got VARCHAR: "Alice Smith,
1 Main St"``), and the records hold names and addresses: such text must stay in the raw and
quarantine zones. ``error_summary`` reduces an error to its class, its kind and where it
happened (line, position); ``scrub`` blanks every quoted passage of a message (what the
engines quote is input). Shipped to the Glue jobs: stdlib only, Python 3.9.
"""
import re

REDACTED = "<redacted>"
_QUOTED = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'')
_WHERE = re.compile(r"(?i)\b(line|row|position|pos|byte|offset|column|col|character|char)\s*[:=]?\s*(\d+)")
_KIND = re.compile(r"^\s*([A-Za-z][A-Za-z ]{0,40}?(?:Error|Exception))\s*:")


def scrub(text):
    """``text`` with every quoted passage blanked. Returns None for None."""
    if text is None:
        return None
    text = _QUOTED.sub(lambda m: m.group(0)[0] + REDACTED + m.group(0)[0], str(text))
    return text


def error_summary(error):
    """``<class>: <kind> (line N, position P)`` for an exception (or its text): never a word of
    the message beyond the error's kind and the numbers that say where."""
    text = str(error)
    name = type(error).__name__ if isinstance(error, BaseException) else "Error"
    kind = _KIND.match(text)
    where = []
    for label, number in _WHERE.findall(text):
        item = "%s %s" % (label.lower(), number)
        if item not in where:
            where.append(item)
    summary = name
    if kind and kind.group(1) != name:
        summary += ": " + kind.group(1)
    if where:
        summary += " (%s)" % ", ".join(where[:4])
    return summary
