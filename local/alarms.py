"""Evaluates the stage's CloudWatch alarms on the local stack, which moto only stores.

For each metric alarm (a single metric, or metric math over several), over its last
``EvaluationPeriods`` periods ending now: every metric's statistic per period through
GetMetricStatistics, the expression per period, the comparison with the threshold, missing
data as its ``TreatMissingData`` says, ``DatapointsToAlarm`` of them to alarm; the new state is
set with SetAlarmState (with the reason, as CloudWatch words it). Periods end at the moment of
evaluation rather than on CloudWatch's period boundaries: a local run lasts minutes.

Metric math is limited to what the stage's alarms use (chalicelib/monitoring.py): metric ids,
numbers, + - * / and FILL(id, number).
"""
import ast
import datetime as dt
import json
import logging
import operator

log = logging.getLogger("local")

OK, ALARM, INSUFFICIENT_DATA = "OK", "ALARM", "INSUFFICIENT_DATA"
_COMPARISONS = {
    "GreaterThanOrEqualToThreshold": operator.ge,
    "GreaterThanThreshold": operator.gt,
    "LessThanThreshold": operator.lt,
    "LessThanOrEqualToThreshold": operator.le,
}
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


class UnsupportedExpression(ValueError):
    """An alarm's metric math uses more than this evaluator knows."""


def _statistic(cloudwatch, namespace, name, dimensions, stat, start, end, period):
    """The statistic of one metric over [start, end), or None without data."""
    points = cloudwatch.get_metric_statistics(
        Namespace=namespace, MetricName=name, Dimensions=dimensions or [], StartTime=start,
        EndTime=end, Period=period, Statistics=[stat])["Datapoints"]
    if not points:
        return None
    values = [point[stat] for point in points]
    if stat == "Sum" or stat == "SampleCount":
        return sum(values)
    if stat == "Maximum":
        return max(values)
    if stat == "Minimum":
        return min(values)
    return sum(values) / len(values)  # Average over (at most) one bucket per period


def evaluate_expression(expression, values):
    """``expression`` (metric math) with ``values`` ``{id: number or None}``; None when a value it
    needs is missing (or a division by zero: no datapoint, as CloudWatch drops it).
    Raises UnsupportedExpression."""
    try:
        tree = ast.parse(expression, mode="eval").body
    except SyntaxError as error:
        raise UnsupportedExpression("cannot parse %r: %s" % (expression, error)) from None

    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in values:
                raise UnsupportedExpression("%r names no metric of the alarm" % node.id)
            return values[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            left, right = value(node.left), value(node.right)
            if left is None or right is None:
                return None
            if isinstance(node.op, ast.Div) and right == 0:
                return None
            return _OPERATORS[type(node.op)](left, right)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "FILL"
                and len(node.args) == 2):
            filled = value(node.args[0])
            return value(node.args[1]) if filled is None else filled
        raise UnsupportedExpression("%r: only metric ids, numbers, + - * / and FILL(id, n) are evaluated "
                                    "locally" % expression)

    return value(tree)


def _datapoint(cloudwatch, alarm, start, end):
    """The alarm's value over one period [start, end), or None."""
    if alarm.get("Metrics"):
        values, returned = {}, None
        for query in alarm["Metrics"]:
            if "MetricStat" in query:
                stat = query["MetricStat"]
                metric = stat["Metric"]
                values[query["Id"]] = _statistic(cloudwatch, metric["Namespace"], metric["MetricName"],
                                                 metric.get("Dimensions"), stat["Stat"], start, end,
                                                 stat["Period"])
        for query in alarm["Metrics"]:
            if query.get("ReturnData", True):
                returned = query
        if returned is None:
            raise UnsupportedExpression("alarm %s returns no data" % alarm["AlarmName"])
        if "Expression" in returned:
            return evaluate_expression(returned["Expression"], values)
        return values[returned["Id"]]
    return _statistic(cloudwatch, alarm["Namespace"], alarm["MetricName"], alarm.get("Dimensions"),
                      alarm.get("Statistic") or "Average", start, end, alarm["Period"])


def _period(alarm):
    if alarm.get("Metrics"):
        return max(q["MetricStat"]["Period"] for q in alarm["Metrics"] if "MetricStat" in q)
    return alarm["Period"]


def new_state(alarm, datapoints):
    """``(state, reason)`` of ``alarm`` given its ``datapoints`` (newest last; None: missing)."""
    compare = _COMPARISONS[alarm["ComparisonOperator"]]
    threshold = alarm["Threshold"]
    to_alarm = alarm.get("DatapointsToAlarm") or alarm["EvaluationPeriods"]
    missing = alarm.get("TreatMissingData") or "missing"
    judged = []
    for point in datapoints:
        if point is None:
            if missing == "breaching":
                judged.append(True)
            elif missing == "notBreaching":
                judged.append(False)
            # "missing" and "ignore": the period is left out
        else:
            judged.append(compare(point, threshold))
    shown = ", ".join("missing" if p is None else "%g" % p for p in datapoints)
    if not judged:
        if missing == "ignore":
            return alarm.get("StateValue") or INSUFFICIENT_DATA, "no datapoint: state kept"
        return INSUFFICIENT_DATA, "no datapoint in %d period(s)" % len(datapoints)
    breaching = sum(judged)
    word = {True: "breaching", False: "not breaching"}
    reason = "Threshold Crossed: %d out of the last %d datapoints [%s] %s the threshold (%g)" % (
        breaching, len(datapoints), shown, word[breaching >= to_alarm], threshold)
    return (ALARM if breaching >= to_alarm else OK), reason


def _notify(sns, alarm, state, reason, region):
    """What CloudWatch sends an alarm's actions when its state changes (the SNS message's shape)."""
    topics = alarm.get("AlarmActions" if state == ALARM else "OKActions" if state == OK
                       else "InsufficientDataActions") or []
    if not alarm.get("ActionsEnabled", True) or sns is None:
        return
    message = {"AlarmName": alarm["AlarmName"], "AlarmDescription": alarm.get("AlarmDescription"),
               "NewStateValue": state, "NewStateReason": reason, "OldStateValue": alarm["StateValue"],
               "Region": region, "AlarmArn": alarm.get("AlarmArn")}
    for topic in topics:
        sns.publish(TopicArn=topic, Subject=('%s: "%s" in %s' % (state, alarm["AlarmName"], region))[:100],
                    Message=json.dumps(message))


def evaluate(cloudwatch, name_prefix, now=None, sns=None):
    """Evaluates every metric alarm whose name starts with ``name_prefix``; when its state changes,
    sets it and (with ``sns``) notifies the alarm's actions' topics. Returns ``{alarm name: state}``."""
    now = now or dt.datetime.now(dt.timezone.utc)
    # moto stores a datum's time to the second: the current second belongs in the last period.
    end = now.replace(microsecond=0) + dt.timedelta(seconds=1)
    states = {}
    pages = cloudwatch.get_paginator("describe_alarms").paginate(AlarmNamePrefix=name_prefix,
                                                                 AlarmTypes=["MetricAlarm"])
    for page in pages:
        for alarm in page["MetricAlarms"]:
            period = dt.timedelta(seconds=_period(alarm))
            count = alarm["EvaluationPeriods"]
            datapoints = [_datapoint(cloudwatch, alarm, end - (count - i) * period, end - (count - i - 1) * period)
                          for i in range(count)]
            state, reason = new_state(alarm, datapoints)
            if state != alarm["StateValue"]:
                cloudwatch.set_alarm_state(AlarmName=alarm["AlarmName"], StateValue=state, StateReason=reason)
                _notify(sns, alarm, state, reason, cloudwatch.meta.region_name)
                log.info("alarm %s: %s -> %s (%s)", alarm["AlarmName"], alarm["StateValue"], state, reason)
            states[alarm["AlarmName"]] = state
    return states
