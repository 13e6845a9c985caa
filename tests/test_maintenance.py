"""The scheduled lake maintenance: Athena's OPTIMIZE then VACUUM of the processed Iceberg table,
each awaited, a failure reported with Athena's reason; and the Lambda that runs it."""
import pytest

from chalicelib import maintenance
from chalicelib.resources import Resources

RESOURCES = Resources(stage="dev", account_id="123456789012", region="us-east-1")


class FakeAthena:
    def __init__(self, outcomes):
        self.outcomes = list(outcomes)  # per statement: list of states seen by successive polls
        self.started = []
        self.polls = {}

    def start_query_execution(self, **kwargs):
        self.started.append(kwargs)
        query_id = "q%d" % len(self.started)
        self.polls[query_id] = list(self.outcomes.pop(0))
        return {"QueryExecutionId": query_id}

    def get_query_execution(self, QueryExecutionId):
        states = self.polls[QueryExecutionId]
        state = states.pop(0) if len(states) > 1 else states[0]
        return {"QueryExecution": {"Status": {"State": state, "StateChangeReason": "ICEBERG_COMMIT_ERROR: x"},
                                   "Statistics": {"DataScannedInBytes": 2048}}}


def test_compaction_then_expiry_each_awaited_in_the_stages_workgroup():
    athena = FakeAthena([["RUNNING", "RUNNING", "SUCCEEDED"], ["SUCCEEDED"]])
    waited = []

    results = maintenance.run(athena, RESOURCES, sleep=waited.append)

    assert [s["QueryString"] for s in athena.started] == [
        "OPTIMIZE shipping_etl_dev.processed REWRITE DATA USING BIN_PACK", "VACUUM shipping_etl_dev.processed"]
    assert {s["WorkGroup"] for s in athena.started} == {"shipping-etl-dev"}
    assert [r["state"] for r in results] == ["SUCCEEDED", "SUCCEEDED"]
    assert results[0]["scanned_bytes"] == 2048
    assert waited == [0.5, 1.0]


def test_a_failed_statement_stops_the_run_with_athenas_reason():
    athena = FakeAthena([["FAILED"], ["SUCCEEDED"]])

    with pytest.raises(maintenance.MaintenanceFailed) as failure:
        maintenance.run(athena, RESOURCES, sleep=lambda s: None)

    assert "OPTIMIZE" in str(failure.value) and "ICEBERG_COMMIT_ERROR" in str(failure.value)
    assert len(athena.started) == 1  # no VACUUM after a failed compaction


def test_the_schedule_is_configurable_and_the_lambda_has_its_own_policy():
    from chalicelib.settings import Settings
    from deploy import policies

    assert Settings.from_env({"MAINTENANCE_HOURS": "6"}).maintenance_hours == 6
    with pytest.raises(ValueError):
        Settings.from_env({"MAINTENANCE_HOURS": "0"})
    policy = policies.lambda_policies(RESOURCES)["maintain_lake"]
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert {"athena:StartQueryExecution", "glue:UpdateTable", "s3:PutObject", "s3:DeleteObject"} <= actions
    assert "states:StartExecution" not in actions
