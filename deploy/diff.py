"""Comparing a desired definition with what an AWS Get/Describe call returns.

AWS answers with more than was sent (timestamps, defaults such as an empty ``Exclusions``
list), so a desired value matches when every field it sets is there with the same value.
"""


def matches(desired, actual):
    """True when ``actual`` holds everything ``desired`` sets (recursively, lists elementwise)."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(matches(v, actual.get(k)) for k, v in desired.items())
    if isinstance(desired, (list, tuple)):
        return (isinstance(actual, (list, tuple)) and len(desired) == len(actual)
                and all(matches(d, a) for d, a in zip(desired, actual)))
    if isinstance(desired, float) and isinstance(actual, (int, float)):
        return abs(desired - actual) < 1e-9
    return desired == actual


def changed_fields(desired, actual, exact=()):
    """Sorted top-level keys of ``desired`` whose value ``actual`` does not hold.

    Keys in ``exact`` must be equal, not merely contained: e.g. a job's DefaultArguments,
    where an argument removed from the definition must be removed on AWS too.
    """
    changed = []
    for key, value in desired.items():
        ok = value == actual.get(key) if key in exact else matches(value, actual.get(key))
        if not ok:
            changed.append(key)
    return sorted(changed)


def role_name(role):
    """``arn:aws:iam::1:role/x`` and ``x`` both -> ``x`` (Glue answers with either form)."""
    return (role or "").rsplit("/", 1)[-1]
