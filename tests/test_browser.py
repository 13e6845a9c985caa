"""The dashboard in a real browser: Debian's chromium, headless, driven by Playwright.

The app is served over HTTP by the same server ``python -m local up`` uses (local.serve.AppServer),
against moto with a few finished executions. ``make browser`` installs chromium; without it this
test skips, except in CI as root, where the install cannot have been impossible.
"""
import json
import os
import threading
import time

import boto3
import pytest
from chalice.test import Client
from moto import mock_aws

import app as app_module
from chalicelib.resources import Resources
from chalicelib.settings import Settings
from local.serve import AppServer

from conftest import PROJECT_DIR

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LAPTOP = {"width": 1366, "height": 768}
RESOURCES = Resources.from_settings(Settings(stage="local"))
MACHINE = {
    "StartAt": "ConvertToParquet",
    "States": {
        "ConvertToParquet": {"Type": "Choice", "Choices": [
            {"Variable": "$.fail", "BooleanEquals": True, "Next": "JsonToParquetFailed"}],
            "Default": "Normalize"},
        "JsonToParquetFailed": {"Type": "Pass", "Next": "Failed"},
        "Failed": {"Type": "Fail", "Error": "TaskFailed", "Cause": json.dumps(
            {"step": "json-to-parquet", "error": "States.TaskFailed", "cause": "no valid record"})},
        "Normalize": {"Type": "Pass", "Next": "SummarizeRun"},
        "SummarizeRun": {"Type": "Pass", "Parameters": {
            "source.$": "$.source_uri", "rows.$": "$.rows", "query.$": "$.query", "notification_id": "m"},
            "End": True},
    },
}
# (name, valid rows, total cost, fails): oldest first
RUNS = [("monday", 100, 1000.0, False), ("tuesday", 250, 2600.0, False), ("broken", 0, 0.0, True),
        ("wednesday", 180, 1900.0, False)]


def chromium():
    """The chromium binary, or skip (fail in CI as root: `make browser` must have installed it)."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    if os.environ.get("CI") and os.geteuid() == 0:
        pytest.fail("%s is missing although CI runs as root: `make browser` installs it" % CHROMIUM)
    pytest.skip("no chromium at %s: `make browser` installs it (needs root and apt-get)" % CHROMIUM)


def start_runs(sfn):
    arn = sfn.create_state_machine(name=RESOURCES.state_machine_name, definition=json.dumps(MACHINE),
                                   roleArn=RESOURCES.role_arn(RESOURCES.state_machine_role))["stateMachineArn"]
    names = []
    for name, valid, cost, fails in RUNS:
        execution_input = {
            "fail": fails, "source_uri": "s3://%s/incoming/%s.json" % (RESOURCES.landing_bucket, name),
            "rows": {"read": valid + 3, "valid": valid, "quarantined": 2, "duplicates": 1},
            "query": {"columns": [], "values": [str(cost), str(cost / 10), str(cost * 2)]},
        }
        started = sfn.start_execution(stateMachineArn=arn, name=name, input=json.dumps(execution_input))
        deadline = time.monotonic() + 20
        while sfn.describe_execution(executionArn=started["executionArn"])["status"] == "RUNNING":
            assert time.monotonic() < deadline, "execution %s did not end" % name
            time.sleep(0.05)
        names.append(name)
    return names


@pytest.fixture
def dashboard_url(aws_credentials, monkeypatch):
    """The app served on a loopback port, against moto holding the runs in RUNS."""
    monkeypatch.setattr(app_module, "_clients", {})
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        start_runs(boto3.client("stepfunctions"))
        client = Client(app_module.app, stage_name="local", project_dir=PROJECT_DIR)
        # chalice.test swaps os.environ while a handler runs: one request at a time.
        lock = threading.Lock()

        def handle(method, path, headers, body):
            with lock:
                return client.http.request(method, path, headers=headers, body=body)

        server = AppServer(handle, port=0).start()
        try:
            yield server.url + "/"
        finally:
            server.stop()


def test_dashboard_in_a_browser_shows_the_runs_table_and_the_charts(dashboard_url, tmp_path):
    executable = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=LAPTOP)
            response = page.goto(dashboard_url)
            assert response.status == 200
            assert page.title() == "Shipping ETL pipeline (local)"

            runs = page.locator("table tr:has(.badge)")
            assert runs.count() == len(RUNS)
            assert runs.first.locator("a").first.get_attribute("href") == "?run=wednesday"  # newest first
            badges = page.locator("table .badge").all_inner_texts()
            assert sorted(badges) == ["FAILED", "SUCCEEDED", "SUCCEEDED", "SUCCEEDED"]
            failed_colour = page.locator("table .badge", has_text="FAILED").evaluate(
                "el => getComputedStyle(el).backgroundColor")
            assert failed_colour == "rgb(207, 34, 46)"
            assert "failed at json-to-parquet: States.TaskFailed — no valid record" in page.inner_text("table")

            rows_chart = page.locator("svg[aria-label='Rows per run']")
            box = rows_chart.bounding_box()
            assert box["width"] > 400 and box["height"] > 150  # drawn at a readable size
            bars = rows_chart.locator("rect").evaluate_all(
                "els => els.filter(e => e.getBBox().height > 10).length")
            assert bars == 3  # one tall bar per succeeded run (the legend swatches are 10 high)
            assert page.locator("svg[aria-label='Totals per run'] polyline").count() == 3
            assert page.locator("svg[aria-label='Steps of wednesday'] rect").count() == 3  # steps
            # readable on a laptop: nothing sticks out sideways
            assert page.evaluate("document.documentElement.scrollWidth") <= LAPTOP["width"]
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

            page.click("a[href='?run=broken']")
            page.wait_for_url("**/?run=broken")
            heading = page.locator("h2", has_text="Steps of broken")
            assert "FAILED" in heading.inner_text()
            page.screenshot(path=str(tmp_path / "dashboard-broken.png"), full_page=True)
        finally:
            browser.close()

    assert (tmp_path / "dashboard.png").stat().st_size > 20000
