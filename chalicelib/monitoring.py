"""The stage's CloudWatch monitoring, defined once: the metrics the pipeline publishes, the
alarms and the dashboard the deploy creates (deploy/monitoring.py), which the local stack also
evaluates (local/alarms.py) and the HTML dashboard shows.

Metrics (namespace ``ShippingETL``) are published by the state machine itself, one
PutMetricData per execution (chalicelib/asl.py): on success the data-quality and timing figures,
on failure one ``ExecutionsFailed``. Each figure goes out twice, with dimensions ``Stage`` and
``Stage, Producer`` (the first folder of the landing key under incoming/, ``naming.producer``):
CloudWatch alarms read one exact dimension set, so the stage-wide series is what they watch and
the per-producer series is what an operator slices by. The reconciler publishes
``EventsReconciled`` (executions it started) and ``DeadLettersResolved`` (``publish_reconciled``). AWS's own metrics (Lambda, SQS, Step Functions) complete the alarms.
docs/OPERATIONS.md lists them with their cost.
"""
NAMESPACE = "ShippingETL"

# Success path: metric name -> (unit, the execution state's JSONPath of the value).
RUN_METRICS = (
    ("ExecutionsSucceeded", "Count", None),  # value 1
    ("RowsRead", "Count", "$.result.rows.read"),
    ("RowsValid", "Count", "$.result.rows.valid"),
    ("RowsQuarantined", "Count", "$.result.rows.quarantined"),
    ("RowsDuplicate", "Count", "$.result.rows.duplicates"),
    ("SourceBytes", "Bytes", "$.size"),
    ("QueryScannedBytes", "Bytes", "$.result.query.scanned_bytes"),
)
# Seconds per step (dimensions Stage, Step): the Glue jobs' run time (their JobRun's
# ExecutionTime) and the query's (Athena's TotalExecutionTimeInMillis, in milliseconds).
STEP_SECONDS = "StepSeconds"
STEP_MILLISECONDS = "StepMilliseconds"
EXECUTIONS_FAILED = "ExecutionsFailed"
EXECUTIONS_SUCCEEDED = "ExecutionsSucceeded"
EVENTS_RECONCILED = "EventsReconciled"
DEAD_LETTERS_RESOLVED = "DeadLettersResolved"
GLUE_JOB_STEPS = ("json-to-parquet", "normalize")

# AWS's own metrics the alarms read.
LAMBDA_NAMESPACE = "AWS/Lambda"
SQS_NAMESPACE = "AWS/SQS"
STATES_NAMESPACE = "AWS/States"

ALARM_KINDS = ("failed-executions", "quarantine-share", "no-files-processed", "lost-events",
               "dead-letters", "lambda-errors", "lambda-throttles", "glue-job-failures")


def stage_dimensions(stage):
    return [{"Name": "Stage", "Value": stage}]


def alarm_name(resources, kind):
    """``shipping-etl-<stage>-<kind>``; ``kind`` one of ALARM_KINDS."""
    if kind not in ALARM_KINDS:
        raise ValueError("unknown alarm %r (one of %s)" % (kind, ", ".join(ALARM_KINDS)))
    return "%s-%s" % (resources.prefix, kind)


def _metric(id_, namespace, name, dimensions, stat, period, return_data=False):
    return {"Id": id_, "ReturnData": return_data,
            "MetricStat": {"Metric": {"Namespace": namespace, "MetricName": name, "Dimensions": dimensions},
                           "Period": period, "Stat": stat}}


def _expression(expression, label):
    return {"Id": "e1", "Expression": expression, "Label": label, "ReturnData": True}


def _summed(namespace, name, dimension_sets, period, label):
    """Metric math: the sum of ``name`` over each dimension set, a missing series counting 0."""
    metrics = [_metric("m%d" % i, namespace, name, dims, "Sum", period)
               for i, dims in enumerate(dimension_sets, 1)]
    expression = " + ".join("FILL(%s, 0)" % m["Id"] for m in metrics)
    return metrics + [_expression(expression, label)]


def alarm_definitions(resources, settings):
    """``[PutMetricAlarm keyword arguments]`` of the stage, every one notifying the alarm topic
    (and telling it when the alarm is OK again)."""
    stage = resources.stage
    dims = stage_dimensions(stage)
    minutes = 60 * settings.alarm_period_minutes
    topic = [resources.alarm_topic_arn]

    def alarm(kind, description, threshold, comparison="GreaterThanOrEqualToThreshold",
              evaluation_periods=1, missing="notBreaching", **metric):
        definition = {
            "AlarmName": alarm_name(resources, kind),
            "AlarmDescription": description,
            "ActionsEnabled": True,
            "AlarmActions": topic,
            "OKActions": topic,
            "EvaluationPeriods": evaluation_periods,
            "DatapointsToAlarm": evaluation_periods,
            "Threshold": float(threshold),
            "ComparisonOperator": comparison,
            "TreatMissingData": missing,
        }
        definition.update(metric)
        return definition

    functions = [[{"Name": "FunctionName", "Value": name}] for name in resources.lambda_functions]
    machine = [{"Name": "StateMachineArn", "Value": resources.state_machine_arn}]
    quarantine_period = 60 * settings.quarantine_alarm_minutes
    alarms = [
        alarm("failed-executions",
              "An execution of the pipeline failed (any step; its failure notification names it), "
              "timed out or was aborted.", 1,
              Metrics=[_metric("m1", NAMESPACE, EXECUTIONS_FAILED, dims, "Sum", minutes),
                       _metric("m2", STATES_NAMESPACE, "ExecutionsTimedOut", machine, "Sum", minutes),
                       _metric("m3", STATES_NAMESPACE, "ExecutionsAborted", machine, "Sum", minutes),
                       _expression("FILL(m1, 0) + FILL(m2, 0) + FILL(m3, 0)", "failed executions")]),
        alarm("quarantine-share",
              "More than %d%% of the rows read in %d minutes went to quarantine."
              % (settings.quarantine_alarm_percent, settings.quarantine_alarm_minutes),
              settings.quarantine_alarm_percent, comparison="GreaterThanThreshold",
              Metrics=[_metric("m1", NAMESPACE, "RowsQuarantined", dims, "Sum", quarantine_period),
                       _metric("m2", NAMESPACE, "RowsRead", dims, "Sum", quarantine_period),
                       _expression("100 * m1 / m2", "quarantined % of rows read")]),
        alarm("lost-events",
              "The reconciler started executions for landing objects whose S3 event was lost, or "
              "resolved dead-lettered events.", 1,
              Metrics=[_metric("m1", NAMESPACE, EVENTS_RECONCILED, dims, "Sum", minutes),
                       _metric("m2", NAMESPACE, DEAD_LETTERS_RESOLVED, dims, "Sum", minutes),
                       _expression("FILL(m1, 0) + FILL(m2, 0)", "events reconciled")]),
        alarm("dead-letters",
              "S3 events the trigger gave up on wait in the on-failure queue for the reconciler.", 1,
              MetricName="ApproximateNumberOfMessagesVisible", Namespace=SQS_NAMESPACE,
              Dimensions=[{"Name": "QueueName", "Value": resources.landing_failures_queue}],
              Statistic="Maximum", Period=minutes),
        alarm("lambda-errors", "A Lambda function of the stage failed.", 1,
              Metrics=_summed(LAMBDA_NAMESPACE, "Errors", functions, minutes, "Lambda errors")),
        alarm("lambda-throttles", "A Lambda function of the stage was throttled.", 1,
              Metrics=_summed(LAMBDA_NAMESPACE, "Throttles", functions, minutes, "Lambda throttles")),
        alarm("glue-job-failures",
              "An execution failed at a Glue job step (json-to-parquet or normalize).", 1,
              Metrics=_summed(NAMESPACE, EXECUTIONS_FAILED,
                              [dims + [{"Name": "Step", "Value": step}] for step in GLUE_JOB_STEPS],
                              minutes, "executions failed at a Glue job")),
    ]
    if settings.stale_alarm_hours:
        alarms.append(alarm(
            "no-files-processed",
            "No landing file was processed in %d hour(s) (the generator runs every %d minutes)."
            % (settings.stale_alarm_hours, settings.schedule_minutes),
            1, comparison="LessThanThreshold", evaluation_periods=settings.stale_alarm_hours,
            missing="breaching",
            MetricName=EXECUTIONS_SUCCEEDED, Namespace=NAMESPACE, Dimensions=dims, Statistic="Sum",
            Period=3600))
    return alarms


def alarm_names(resources, settings):
    return [definition["AlarmName"] for definition in alarm_definitions(resources, settings)]


def dashboard_name(resources):
    return resources.prefix


def dashboard_body(resources, settings):
    """The CloudWatch dashboard's body (a dict): the pipeline's data quality, timing and cost
    figures, AWS's Lambda figures, and every alarm's state."""
    stage, region = resources.stage, resources.region
    period = 300

    def graph(title, metrics, x, y, stat="Sum", width=12, **properties):
        body = {"title": title, "region": region, "view": "timeSeries", "stat": stat,
                "period": period, "metrics": metrics}
        body.update(properties)
        return {"type": "metric", "x": x, "y": y, "width": width, "height": 6, "properties": body}

    def ours(name, **options):
        line = [NAMESPACE, name, "Stage", stage]
        return line + [options] if options else line

    alarm_arns = ["arn:aws:cloudwatch:%s:%s:alarm:%s" % (region, resources.account_id, name)
                  for name in alarm_names(resources, settings)]
    return {"widgets": [
        {"type": "alarm", "x": 0, "y": 0, "width": 24, "height": 3,
         "properties": {"title": "Alarms", "alarms": alarm_arns}},
        graph("Rows per 5 minutes", [ours("RowsRead"), ours("RowsValid"), ours("RowsQuarantined"),
                                     ours("RowsDuplicate")], 0, 3),
        graph("Quarantined % of rows read",
              [[{"expression": "100 * q / r", "label": "quarantined %", "id": "share"}],
               ours("RowsQuarantined", id="q", visible=False), ours("RowsRead", id="r", visible=False)],
              12, 3, yAxis={"left": {"min": 0}},
              annotations={"horizontal": [{"label": "alarm", "value": settings.quarantine_alarm_percent}]}),
        graph("Executions", [ours(EXECUTIONS_SUCCEEDED), ours(EXECUTIONS_FAILED)], 0, 9),
        graph("Seconds per step (average)",
              [[NAMESPACE, STEP_SECONDS, "Stage", stage, "Step", step] for step in GLUE_JOB_STEPS]
              + [[NAMESPACE, STEP_MILLISECONDS, "Stage", stage, "Step", "query", {"yAxis": "right"}]],
              12, 9, stat="Average"),
        graph("Bytes landed and scanned by the query", [ours("SourceBytes"), ours("QueryScannedBytes")], 0, 15),
        graph("Lambda errors and throttles",
              [[LAMBDA_NAMESPACE, metric, "FunctionName", name]
               for name in resources.lambda_functions for metric in ("Errors", "Throttles")], 12, 15),
        graph("Events reconciled, dead letters waiting",
              [ours(EVENTS_RECONCILED), ours(DEAD_LETTERS_RESOLVED),
               [SQS_NAMESPACE, "ApproximateNumberOfMessagesVisible", "QueueName",
                resources.landing_failures_queue, {"stat": "Maximum"}]], 0, 21),
    ]}


def alarm_states(cloudwatch, resources):
    """The stage's alarms as the dashboard shows them: ``[{"name", "state", "reason", "updated",
    "threshold"}]`` in ALARM_KINDS order (updated: ISO 8601). Raises botocore's errors."""
    prefix = resources.prefix + "-"
    found = {}
    for page in cloudwatch.get_paginator("describe_alarms").paginate(AlarmNamePrefix=prefix,
                                                                     AlarmTypes=["MetricAlarm"]):
        for alarm in page.get("MetricAlarms", []):
            kind = alarm["AlarmName"][len(prefix):]
            if kind in ALARM_KINDS:
                updated = alarm.get("StateUpdatedTimestamp")
                found[kind] = {"name": alarm["AlarmName"], "state": alarm.get("StateValue"),
                               "reason": alarm.get("StateReason"), "threshold": alarm.get("Threshold"),
                               "updated": updated.isoformat() if hasattr(updated, "isoformat") else updated}
    return [found[kind] for kind in ALARM_KINDS if kind in found]


def publish_reconciled(cloudwatch, stage, summary):
    """One PutMetricData of a reconciler pass (``chalicelib.reconciler.Reconciler.run``'s
    summary), zeros included, so its series shows the reconciler runs. Returns None."""
    dims = stage_dimensions(stage)
    cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=[
        {"MetricName": EVENTS_RECONCILED, "Dimensions": dims, "Unit": "Count",
         "Value": float(summary.get("reconciled", 0))},
        {"MetricName": DEAD_LETTERS_RESOLVED, "Dimensions": dims, "Unit": "Count",
         "Value": float(summary.get("dead_letters_resolved", 0))},
    ])
