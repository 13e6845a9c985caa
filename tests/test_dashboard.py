"""The dashboard page and its SVG charts, rendered from summaries (no AWS needed)."""
import datetime as dt
import re
import xml.etree.ElementTree as ET

import pytest

from chalicelib import dashboard
from chalicelib.dashboard import nice_ticks, render, rows_chart, timeline_chart, totals_chart

SVG = "{http://www.w3.org/2000/svg}"
START = dt.datetime(2026, 11, 27, 6, 0, tzinfo=dt.timezone.utc)


def iso(seconds):
    return (START + dt.timedelta(seconds=seconds)).isoformat()


def run(name, minute, status="SUCCEEDED", valid=100, quarantined=0, duplicates=0, cost=1000.0, **extra):
    summary = {
        "name": name, "status": status, "source": "s3://landing/incoming/%s.json" % name,
        "started": iso(minute * 60), "stopped": iso(minute * 60 + 5), "duration_seconds": 5.0,
        "rows": {"read": valid + quarantined + duplicates, "valid": valid, "quarantined": quarantined,
                 "duplicates": duplicates},
        "totals": {"shipping_cost": cost, "shipping_distance": cost / 100, "quantity": cost * 2,
                   "shipments": valid, "destinations": 6, "cost_per_mile": 100.0},
        "notification_id": "m", "error": None, "cause": None, "failed_step": None,
    }
    if status != "SUCCEEDED":
        summary.update(rows=None, totals=None, stopped=None if status == "RUNNING" else summary["stopped"],
                       duration_seconds=None if status == "RUNNING" else 5.0)
    summary.update(extra)
    return summary


def detail(summary, steps):
    return dict(summary, steps=steps, history_complete=True)


def step(name, start, seconds, outcome="SUCCEEDED", attempts=1, error=None):
    return {"step": name, "started": iso(start), "stopped": iso(start + seconds) if seconds is not None else None,
            "duration_seconds": seconds, "attempts": attempts, "outcome": outcome, "error": error}


RUNS = [  # newest first, as /status lists them
    run("newest", 3, valid=300, cost=3000.0),
    run("broken", 2, status="FAILED", failed_step="json-to-parquet", error="States.TaskFailed",
        cause="no valid record in s3://landing/incoming/broken.json"),
    run("messy", 1, valid=150, quarantined=2, duplicates=20, cost=1500.0),
    run("first", 0, valid=50, cost=500.0),
]
STEPS = [step("json-to-parquet", 0.2, 1.6, attempts=2), step("crawl-raw", 1.8, 0.2),
         step("normalize", 2.0, 1.0), step("crawl-processed", 3.0, 0.3), step("query", 3.3, 0.5),
         step("notify", 3.8, 0.05)]


def parse_svg(svg):
    return ET.fromstring(svg)


def bars(svg):
    """(height, fill) of every bar-like rect in a chart, legend swatches left out."""
    return [(float(r.get("height")), r.get("fill")) for r in parse_svg(svg).iter(SVG + "rect")
            if r.get("height") != "10"]


def test_nice_ticks_cover_the_range_with_round_steps():
    assert nice_ticks(1000) == [0, 250, 500, 750, 1000]
    assert nice_ticks(172) == [0, 50, 100, 150, 200]
    assert nice_ticks(3.9, count=6) == [0, 1, 2, 3, 4]
    assert nice_ticks(0) == [0, 1]


def test_rows_chart_stacks_each_runs_rows_oldest_first():
    svg = rows_chart(RUNS)

    heights = bars(svg)
    colours = dict((label, fill) for _key, label, fill in dashboard.ROW_SERIES)
    valid = [h for h, fill in heights if fill == colours["valid"]]
    assert len(valid) == 3  # the failed run has no counts
    assert valid[0] < valid[1] < valid[2]  # 50, 150, 300: oldest on the left
    assert valid[2] / valid[0] == pytest.approx(6, rel=0.01)
    assert [fill for _h, fill in heights].count(colours["quarantined"]) == 1
    assert [fill for _h, fill in heights].count(colours["duplicates"]) == 1
    assert (4.0, dashboard.colour("FAILED")) in heights  # the failed run: a red mark on the axis
    titles = [t.text for t in parse_svg(svg).iter(SVG + "title")]
    assert "2026-11-27 06:01:00 SUCCEEDED: valid 150, quarantined 2, duplicates 20" in titles


def test_totals_chart_draws_one_line_per_total_through_every_succeeded_run():
    svg = parse_svg(totals_chart(RUNS))

    lines = list(svg.iter(SVG + "polyline"))
    assert len(lines) == 3
    assert all(len(line.get("points").split()) == 3 for line in lines)
    # cost grows run to run: y falls (SVG's y points down)
    ys = [float(p.split(",")[1]) for p in lines[0].get("points").split()]
    assert ys[0] > ys[1] > ys[2]
    assert len(list(svg.iter(SVG + "circle"))) == 9


def test_totals_chart_without_totals_says_when_they_come():
    assert "no totals yet" in totals_chart([RUNS[1]])


def test_timeline_chart_has_a_bar_per_step_in_order_with_durations_and_attempts():
    svg = timeline_chart(detail(RUNS[0], STEPS))

    tree = parse_svg(svg)
    rects = list(tree.iter(SVG + "rect"))
    assert len(rects) == len(STEPS)
    xs = [float(r.get("x")) for r in rects]
    assert xs == sorted(xs)
    widths = [float(r.get("width")) for r in rects]
    assert widths[0] / widths[2] == pytest.approx(1.6, rel=0.02)  # json-to-parquet 1.6 s, normalize 1.0 s
    texts = [t.text for t in tree.iter(SVG + "text")]
    assert "json-to-parquet" in texts
    assert "1.60 s · succeeded · 2 attempts" in texts


def test_timeline_chart_of_a_failed_and_a_running_step():
    steps = [step("json-to-parquet", 0, 6.4, outcome="FAILED", attempts=2, error="States.Timeout"),
             step("on-failure", 6.4, 0.2), step("normalize", 7, None, outcome="RUNNING")]

    tree = parse_svg(timeline_chart(detail(RUNS[1], steps)))

    fills = [r.get("fill") for r in tree.iter(SVG + "rect")]
    assert fills == [dashboard.colour("FAILED"), dashboard.colour("SUCCEEDED"), dashboard.colour("RUNNING")]
    assert "6.40 s · failed · 2 attempts · States.Timeout" in [t.text for t in tree.iter(SVG + "text")]


def test_timeline_chart_of_a_run_without_steps_is_none():
    assert timeline_chart(detail(RUNS[0], [])) is None
    assert timeline_chart(None) is None


def test_page_lists_every_run_with_links_to_its_steps_and_json():
    page = render(RUNS, detail(RUNS[0], STEPS), stage="dev", limit=20)

    assert "<title>Shipping ETL pipeline (dev)</title>" in page
    for summary in RUNS:
        assert 'href="?run=%s"' % summary["name"] in page
        assert 'href="status/%s"' % summary["name"] in page
    assert page.count('<span class="badge"') == len(RUNS) + 1  # + the timeline's heading
    assert "failed at json-to-parquet: States.TaskFailed — no valid record in s3://landing/incoming/broken.json" in page
    assert "Steps of newest" in page
    assert "3 succeeded, 1 failed" in page
    assert '<tr class="selected">' in page


def test_page_is_self_contained_and_refreshes_itself():
    page = render(RUNS, detail(RUNS[0], STEPS))

    assert "<script" not in page.lower()
    # Nothing is fetched: the only URL is the SVG namespace.
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) == {"http://www.w3.org/2000/svg"}
    assert re.search(r'<meta http-equiv="refresh" content="%d">' % dashboard.REFRESH_SECONDS, page)
    for svg in re.findall(r"<svg.*?</svg>", page, flags=re.S):
        parse_svg(svg)  # well-formed


def test_page_refreshes_sooner_while_a_run_is_in_progress():
    page = render([run("now", 4, status="RUNNING")] + RUNS, None)

    assert '<meta http-equiv="refresh" content="%d">' % dashboard.REFRESH_SECONDS_WHILE_RUNNING in page


def test_page_escapes_every_value():
    hostile = "<script>alert(1)</script>"
    runs = [run("x", 0, status="FAILED", source="s3://b/incoming/%s.json" % hostile, error=hostile,
                cause=hostile, failed_step=hostile)]

    page = render(runs, detail(runs[0], [step(hostile, 0, 1.0, outcome="FAILED", error=hostile)]))

    assert "<script" not in page
    assert "&lt;script&gt;" in page


def test_page_without_runs_says_how_to_start_one():
    page = render([], None)

    assert "No runs yet" in page and "incoming/" in page and "<svg" not in page


def test_page_survives_missing_and_odd_values():
    odd = {"name": "odd", "status": "PENDING_REDRIVE", "started": "not a date", "rows": {"valid": None},
           "totals": {"shipping_cost": float("nan")}}

    page = render([odd, run("ok", 1)], detail(odd, [step("query", 0, None, outcome="RUNNING")]))

    assert "odd" in page
