"""The HTML dashboard served at ``/``: recent runs, rows and totals over time, the steps of one run.

Rendered on the server as one page of HTML with inline SVG charts: no script, no CDN, nothing
fetched by the browser, so it works offline and under a strict Content-Security-Policy. It
refreshes itself with a meta refresh (sooner while a run is in progress). Every value from an
execution is escaped. Input is what ``chalicelib.status`` returns (summaries and one detail).
"""
import datetime as dt
import html
import math

# A page with no script and no outside resource: the policy lets nothing else in.
HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
    "X-Content-Type-Options": "nosniff",
}
REFRESH_SECONDS = 30
REFRESH_SECONDS_WHILE_RUNNING = 10

# Status and outcome colours, readable on white and told apart by their labels too.
COLOURS = {
    "SUCCEEDED": "#1a7f37",
    "FAILED": "#cf222e",
    "TIMED_OUT": "#bc4c00",
    "ABORTED": "#bc4c00",
    "CAUGHT": "#bc4c00",
    "RUNNING": "#0969da",
    "PENDING_REDRIVE": "#8250df",
}
OTHER_COLOUR = "#6e7781"
ROW_SERIES = (("valid", "valid", "#2f6feb"), ("quarantined", "quarantined", "#d4a72c"),
              ("duplicates", "duplicates", "#8c959f"))
TOTAL_SERIES = (("shipping_cost", "Total cost ($)", "#1a7f37"),
                ("shipping_distance", "Total distance (mi)", "#0969da"),
                ("quantity", "Total quantity (gal)", "#8250df"))

_FONT = 'font-family="system-ui, -apple-system, Segoe UI, sans-serif"'

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="%(refresh)d">
<title>%(title)s</title>
<style>
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; margin: 0;
       background: #f6f8fa; }
main { max-width: 1320px; margin: 0 auto; padding: 16px 24px 32px; }
h1 { font-size: 22px; margin: 4px 0; }
h2 { font-size: 16px; margin: 0 0 8px; }
.meta { color: #57606a; margin: 0 0 16px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(440px, 1fr)); gap: 16px; }
section { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: 12px 16px;
          margin-bottom: 16px; }
.grid section { margin-bottom: 0; }
.grid { margin-bottom: 16px; }
svg { width: 100%%; height: auto; display: block; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%%; font-size: 13px; }
th, td { border-bottom: 1px solid #d8dee4; padding: 5px 8px; text-align: left; vertical-align: top;
         white-space: nowrap; }
th { background: #f6f8fa; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.has-failure td { border-bottom: none; }
tr.failure td { white-space: normal; color: #a40e26; font-size: 12px; padding-top: 0; }
td.source { max-width: 18em; overflow: hidden; text-overflow: ellipsis; }
tr.selected td { background: #fff8c5; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; font-size: 12px;
         font-weight: 600; }
.note { color: #57606a; }
a { color: #0969da; }
</style>
</head>
<body>
<main>
<h1>%(title)s</h1>
<p class="meta">%(meta)s</p>
%(body)s
</main>
</body>
</html>
"""


def colour(status):
    """The colour of an execution status or step outcome."""
    return COLOURS.get(status, OTHER_COLOUR)


def _when(iso):
    """A datetime from an ISO 8601 string (None when absent or unreadable)."""
    if not isinstance(iso, str):
        return None
    try:
        value = dt.datetime.fromisoformat(iso)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _clock(iso):
    value = _when(iso)
    if value is None:
        return ""
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _number(value, decimals=0):
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return "{:,.{}f}".format(value, decimals)


def _compact(value):
    """1234567 -> '1.23M': axis labels that fit."""
    magnitude = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= limit:
            return ("%.3g" % (value / limit)) + suffix
    return "%.3g" % value if value != int(value) else "%d" % value


def _escape(value):
    return html.escape("" if value is None else str(value))


def nice_ticks(high, count=4):
    """Returns round axis ticks from 0 to at least ``high`` (about ``count`` steps)."""
    if not high or high <= 0 or not math.isfinite(high):
        return [0, 1]
    raw = high / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    ticks, tick = [], 0.0
    while tick < high - 1e-9 * high:
        ticks.append(tick)
        tick += step
    ticks.append(tick)
    return [int(t) if float(t).is_integer() else round(t, 10) for t in ticks]


def _span_ticks(low, high, count=3):
    """Round ticks covering [low, high] for a line chart (values need not start at 0)."""
    if low == high:
        pad = abs(low) * 0.05 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    start = math.floor(low / step) * step
    ticks = []
    tick = start
    while tick < high + step * 0.999:
        ticks.append(round(tick, 10))
        tick += step
    return ticks


def _svg(width, height, label, parts):
    return ('<svg viewBox="0 0 %d %d" role="img" aria-label="%s" %s font-size="12" '
            'xmlns="http://www.w3.org/2000/svg">%s</svg>'
            % (width, height, _escape(label), _FONT, "".join(parts)))


def _text(x, y, text, anchor="start", fill="#57606a", size=None, weight=None):
    extra = (' font-size="%s"' % size if size else "") + (' font-weight="%s"' % weight if weight else "")
    return '<text x="%.1f" y="%.1f" text-anchor="%s" fill="%s"%s>%s</text>' % (
        x, y, anchor, fill, extra, _escape(text))


def _chronological(summaries):
    """Summaries oldest first (the API lists newest first)."""
    return sorted(summaries, key=lambda s: (_when(s.get("started")) or dt.datetime.min.replace(
        tzinfo=dt.timezone.utc)))


def _run_labeller(runs):
    """Axis labels for runs: the time of day (to the second when minutes repeat), with the date
    when the runs span several days."""
    times = [t.astimezone(dt.timezone.utc) for t in (_when(s.get("started")) for s in runs) if t]
    pattern = "%H:%M"
    if len({t.strftime(pattern) for t in times}) < len(times):
        pattern = "%H:%M:%S"
    if len({t.date() for t in times}) > 1:
        pattern = "%m-%d " + pattern

    def label(summary):
        value = _when(summary.get("started"))
        return value.astimezone(dt.timezone.utc).strftime(pattern) if value else ""
    return label


def rows_chart(summaries, width=560, height=240):
    """Returns an SVG stacked bar chart of each run's rows (valid, quarantined, duplicates),
    oldest run on the left; a run without counts (running, failed early) is a status-coloured
    mark on the axis."""
    runs = _chronological(summaries)
    left, right, top, bottom = 48, 12, 30, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum((s.get("rows") or {}).get(k) or 0 for k, _l, _c in ROW_SERIES) for s in runs]
    ticks = nice_ticks(max(totals or [0]))
    scale = plot_h / ticks[-1]
    parts = []
    for tick in ticks:
        y = top + plot_h - tick * scale
        parts.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#d8dee4"/>' % (left, left + plot_w, y, y))
        parts.append(_text(left - 6, y + 4, _compact(tick), anchor="end"))
    x = left
    for key, label, fill in ROW_SERIES:
        parts.append('<rect x="%d" y="8" width="10" height="10" fill="%s"/>' % (x, fill))
        parts.append(_text(x + 14, 17, label, fill="#1f2328"))
        x += 24 + 7 * len(label)
    slot = plot_w / max(len(runs), 1)
    bar = max(2.0, min(36.0, slot * 0.7))
    label_every = max(1, int(math.ceil(len(runs) / max(plot_w // 72, 1))))
    run_label = _run_labeller(runs)
    for index, summary in enumerate(runs):
        centre = left + slot * (index + 0.5)
        counts = summary.get("rows") or {}
        tip = "%s %s: %s" % (_clock(summary.get("started")), summary.get("status") or "",
                             ", ".join("%s %s" % (label, _number(counts.get(key)))
                                       for key, label, _f in ROW_SERIES) if counts else "no row counts")
        group = ['<g><title>%s</title>' % _escape(tip)]
        if not counts:
            group.append('<rect x="%.1f" y="%.1f" width="%.1f" height="4" fill="%s"/>' % (
                centre - bar / 2, top + plot_h - 4, bar, colour(summary.get("status"))))
        else:
            base = top + plot_h
            for key, _label, fill in ROW_SERIES:
                value = counts.get(key) or 0
                if value <= 0:
                    continue
                h = value * scale
                base -= h
                group.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>' % (
                    centre - bar / 2, base, bar, h, fill))
        group.append("</g>")
        parts.append("".join(group))
        if index % label_every == 0:
            parts.append(_text(centre, top + plot_h + 16, run_label(summary), anchor="middle"))
    parts.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#57606a"/>' % (
        left, left + plot_w, top + plot_h, top + plot_h))
    parts.append(_text(left + plot_w, height - 4, "run start (UTC), oldest left", anchor="end"))
    return _svg(width, height, "Rows per run", parts)


def totals_chart(summaries, width=560, height=290):
    """Returns an SVG of each run's totals over time: one small line chart per total (cost,
    distance, quantity), each on its own scale, oldest run on the left."""
    runs = [s for s in _chronological(summaries) if s.get("totals")]
    left, right, top = 56, 12, 22
    panel_h, gap = 52, 34
    plot_w = width - left - right
    parts = []
    if not runs:
        parts.append(_text(width / 2, height / 2, "no totals yet: they appear when a run succeeds",
                           anchor="middle"))
        return _svg(width, height, "Totals per run", parts)
    slot = plot_w / len(runs)
    for panel, (key, label, stroke) in enumerate(TOTAL_SERIES):
        y0 = top + panel * (panel_h + gap)
        values = [(i, (s["totals"] or {}).get(key)) for i, s in enumerate(runs)]
        values = [(i, v) for i, v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        parts.append(_text(4, y0 - 12, label, fill="#1f2328", weight="600"))
        if not values:
            continue
        ticks = _span_ticks(min(v for _i, v in values), max(v for _i, v in values), count=2)
        low, high = ticks[0], ticks[-1]

        def y_of(value):
            return y0 + panel_h - (value - low) / (high - low) * panel_h

        for tick in ticks:
            y = y_of(tick)
            parts.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#eaeef2"/>' % (
                left, left + plot_w, y, y))
            parts.append(_text(left - 6, y + 4, _compact(tick), anchor="end"))
        points = [(left + slot * (i + 0.5), y_of(v)) for i, v in values]
        if len(points) > 1:
            parts.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (
                stroke, " ".join("%.1f,%.1f" % p for p in points)))
        for (i, value), (px, py) in zip(values, points):
            parts.append('<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s</title></circle>' % (
                px, py, stroke, _escape("%s: %s %s" % (_clock(runs[i].get("started")), label,
                                                       _number(value, 2)))))
    axis_y = top + 3 * panel_h + 2 * gap + 18
    label_every = max(1, int(math.ceil(len(runs) / max(plot_w // 72, 1))))
    run_label = _run_labeller(runs)
    for index, summary in enumerate(runs):
        if index % label_every == 0:
            parts.append(_text(left + slot * (index + 0.5), axis_y, run_label(summary), anchor="middle"))
    return _svg(width, height, "Totals per run", parts)


# Why a run has no crawl after normalize, for readers who knew the earlier pipeline.
STEPS_NOTE = ('<p class="note">No crawl follows normalize: the processed zone is an Apache Iceberg table '
              '(hidden partitioning by month of shipping date), and normalize&#39;s commit is its catalog '
              'update. Only the raw zone is crawled, and only when its schema changes.</p>')


def timeline_chart(detail, width=1100):
    """Returns an SVG of one run's steps as bars along the run's time axis, coloured by
    outcome and labelled with duration and attempts (None when the run has no steps)."""
    steps = (detail or {}).get("steps") or []
    if not steps:
        return None
    origin = _when(detail.get("started")) or _when(steps[0].get("started"))
    spans = []
    for step in steps:
        start, stop = _when(step.get("started")), _when(step.get("stopped"))
        begin = max(0.0, (start - origin).total_seconds()) if start and origin else 0.0
        length = step.get("duration_seconds")
        if length is None and start is not None:
            length = max(0.0, (dt.datetime.now(dt.timezone.utc) - start).total_seconds())
        spans.append((begin, length or 0.0))
    end = max(b + l for b, l in spans) or 1.0
    ticks = nice_ticks(end, count=6)
    left, right, top, row = 150, 190, 26, 26
    plot_w = width - left - right
    height = top + row * len(steps) + 28
    scale = plot_w / ticks[-1]
    parts = []
    for tick in ticks:
        x = left + tick * scale
        parts.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#eaeef2"/>' % (
            x, x, top - 6, top + row * len(steps)))
        parts.append(_text(x, top - 10, "%ss" % _compact(tick), anchor="middle"))
    for index, (step, (begin, length)) in enumerate(zip(steps, spans)):
        y = top + row * index
        outcome = step.get("outcome") or ""
        fill = colour(outcome)
        bar_w = max(2.0, length * scale)
        attempts = step.get("attempts") or 0
        label = "%s s" % _number(length, 2 if length < 10 else 1)
        label += " · %s" % outcome.lower().replace("_", " ")
        if attempts > 1:
            label += " · %d attempts" % attempts
        if step.get("error"):
            label += " · %s" % step["error"]
        tip = "%s: %s, %s s, %d attempt(s)%s" % (step.get("step"), outcome, _number(length, 3), attempts,
                                                  ", error %s" % step["error"] if step.get("error") else "")
        parts.append('<g><title>%s</title>' % _escape(tip))
        parts.append(_text(left - 8, y + 16, step.get("step"), anchor="end", fill="#1f2328"))
        parts.append('<rect x="%.1f" y="%d" width="%.1f" height="%d" rx="3" fill="%s"/>' % (
            left + begin * scale, y + 4, bar_w, row - 8, fill))
        parts.append(_text(left + begin * scale + bar_w + 6, y + 16, label, fill=fill))
        parts.append("</g>")
    parts.append(_text(left + plot_w, height - 6, "seconds since the run started", anchor="end"))
    return _svg(width, height, "Steps of %s" % detail.get("name"), parts)


def _badge(status):
    return '<span class="badge" style="background:%s">%s</span>' % (colour(status), _escape(status or "?"))


def _source_cell(source):
    if not source:
        return "<td></td>"
    name = source.rsplit("/", 1)[-1]
    return '<td class="source" title="%s">%s</td>' % (_escape(source), _escape(name))


def _failure_text(summary):
    parts = [p for p in (summary.get("failed_step"), summary.get("error")) if p]
    text = ": ".join(str(p) for p in parts)
    if summary.get("failed_step"):
        text = "failed at " + text
    cause = summary.get("cause")
    if cause:
        cause = str(cause)
        text += (" — " if text else "") + (cause if len(cause) <= 300 else cause[:300] + "…")
    return text


def runs_table(summaries, selected_name=None):
    """Returns the HTML table of runs, newest first: each start time links to the run's steps,
    each failure gets a line of its own under the run."""
    head = ("<tr><th>Started (UTC)</th><th>Status</th><th>Source</th><th class=num>Read</th>"
            "<th class=num>Valid</th><th class=num>Quarantined</th><th class=num>Duplicates</th>"
            "<th class=num>Cost ($)</th><th class=num>Distance (mi)</th><th class=num>Quantity (gal)</th>"
            "<th class=num>Seconds</th><th></th></tr>")
    columns = 12
    rows = []
    for summary in summaries:
        counts = summary.get("rows") or {}
        totals = summary.get("totals") or {}
        name = summary.get("name") or ""
        cells = [
            '<td><a href="?run=%s" title="steps of %s">%s</a></td>' % (
                _escape(name), _escape(name), _escape(_clock(summary.get("started")))),
            "<td>%s</td>" % _badge(summary.get("status")),
            _source_cell(summary.get("source")),
        ]
        cells += ['<td class="num">%s</td>' % _escape(_number(counts.get(k)))
                  for k in ("read", "valid", "quarantined", "duplicates")]
        cells += ['<td class="num">%s</td>' % _escape(_number(totals.get(k)))
                  for k in ("shipping_cost", "shipping_distance", "quantity")]
        cells.append('<td class="num">%s</td>' % _escape(_number(summary.get("duration_seconds"), 1)))
        cells.append('<td><a href="status/%s">json</a></td>' % _escape(name))
        selected = name and name == selected_name
        failure = _failure_text(summary)
        css = ["selected"] if selected else []
        if failure:
            css.append("has-failure")
        rows.append("<tr%s>%s</tr>" % (' class="%s"' % " ".join(css) if css else "", "".join(cells)))
        if failure:
            rows.append('<tr class="failure%s"><td></td><td colspan="%d">%s</td></tr>' % (
                " selected" if selected else "", columns - 1, _escape(failure)))
    return '<div class="scroll"><table>\n%s\n%s\n</table></div>' % (head, "\n".join(rows))


QUARANTINE_ALARM = "quarantine-share"
ALARM_COLOURS = {"OK": "#1a7f37", "ALARM": "#cf222e", "INSUFFICIENT_DATA": OTHER_COLOUR}


def quarantine_share(rows):
    """Quarantined % of the rows read, or None without rows read."""
    rows = rows or {}
    read = rows.get("read") or 0
    return 100.0 * (rows.get("quarantined") or 0) / read if read else None


def quality_chart(summaries, threshold=None, width=560, height=240):
    """Returns an SVG of the quarantine share: each run's (points) and the share over the runs
    so far (a line: quarantined / read summed up to that run), oldest left, with the quarantine
    alarm's threshold (dashed) when given; None when no run has row counts."""
    runs = [s for s in _chronological(summaries) if quarantine_share(s.get("rows")) is not None]
    if not runs:
        return None
    left, right, top, bottom = 48, 12, 30, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    shares = [quarantine_share(s["rows"]) for s in runs]
    read = quarantined = 0
    running = []
    for summary in runs:
        read += summary["rows"].get("read") or 0
        quarantined += summary["rows"].get("quarantined") or 0
        running.append(100.0 * quarantined / read)
    ticks = nice_ticks(max(shares + [threshold or 0, 1]))
    scale = plot_h / ticks[-1]
    parts = []
    for tick in ticks:
        y = top + plot_h - tick * scale
        parts.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#d8dee4"/>' % (left, left + plot_w, y, y))
        parts.append(_text(left - 6, y + 4, "%s%%" % _compact(tick), anchor="end"))
    if threshold is not None:
        y = top + plot_h - threshold * scale
        parts.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#cf222e" stroke-dasharray="4 3"/>'
                     % (left, left + plot_w, y, y))
        parts.append(_text(left + plot_w, y - 4, "alarm above %s%%" % _number(threshold, 1), anchor="end",
                           fill="#cf222e"))
    parts.append('<circle cx="%d" cy="13" r="4" fill="#d4a72c"/>' % (left + 4))
    parts.append(_text(left + 12, 17, "per run", fill="#1f2328"))
    parts.append('<line x1="%d" x2="%d" y1="13" y2="13" stroke="#0969da" stroke-width="2"/>' % (left + 80, left + 96))
    parts.append(_text(left + 100, 17, "over the runs so far", fill="#1f2328"))
    slot = plot_w / max(len(runs), 1)
    label_every = max(1, int(math.ceil(len(runs) / max(plot_w // 72, 1))))
    run_label = _run_labeller(runs)
    points = []
    for index, summary in enumerate(runs):
        x = left + slot * (index + 0.5)
        points.append("%.1f,%.1f" % (x, top + plot_h - running[index] * scale))
        rows = summary["rows"]
        tip = "%s: %s of %s rows quarantined (%s%%)" % (
            _clock(summary.get("started")), _number(rows.get("quarantined")), _number(rows.get("read")),
            _number(shares[index], 1))
        parts.append('<circle cx="%.1f" cy="%.1f" r="4" fill="#d4a72c"><title>%s</title></circle>' % (
            x, top + plot_h - shares[index] * scale, _escape(tip)))
        if index % label_every == 0:
            parts.append(_text(x, top + plot_h + 16, run_label(summary), anchor="middle"))
    parts.append('<polyline fill="none" stroke="#0969da" stroke-width="2" points="%s"/>' % " ".join(points))
    parts.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#57606a"/>' % (
        left, left + plot_w, top + plot_h, top + plot_h))
    parts.append(_text(left + plot_w, height - 4, "run start (UTC), oldest left", anchor="end"))
    return _svg(width, height, "Quarantined share of rows read", parts)


def alarms_table(alarms):
    """Returns an HTML table of the stage's CloudWatch alarms (chalicelib.monitoring.alarm_states)."""
    if not alarms:
        return '<p class="note">No alarms: deploy the stage (python -m deploy up) to create them.</p>'
    rows = []
    for alarm in alarms:
        state = alarm.get("state") or "INSUFFICIENT_DATA"
        rows.append('<tr><td>%s</td><td><span class="badge" style="background:%s">%s</span></td>'
                    '<td>%s</td><td class="note" style="white-space: normal">%s</td></tr>' % (
                        _escape(alarm.get("name")), ALARM_COLOURS.get(state, OTHER_COLOUR),
                        _escape(state.replace("_", " ").lower()), _escape(_clock(alarm.get("updated"))),
                        _escape(alarm.get("reason") or "")))
    return ('<div class="scroll"><table><tr><th>alarm</th><th>state</th><th>since (UTC)</th>'
            '<th>why</th></tr>%s</table></div>' % "".join(rows))


def quality_section(summaries, alarms, alarm_error=None):
    """The data-quality view: the quarantine share per run and over time, and the alarm states."""
    threshold = next((a.get("threshold") for a in alarms or () if a.get("name", "").endswith(
        "-" + QUARANTINE_ALARM)), None)
    chart = quality_chart(summaries, threshold)
    alarm_part = ('<p class="note">Alarm states unavailable: %s</p>' % _escape(alarm_error)
                  if alarm_error else alarms_table(alarms))
    return ('<div class="grid"><section><h2>Data quality: quarantined share</h2>%s</section>'
            '<section><h2>Alarms</h2>%s</section></div>' % (
                chart or '<p class="note">No run with row counts yet.</p>', alarm_part))


def _meta(summaries, limit, now, refresh):
    counts = {}
    for summary in summaries:
        counts[summary.get("status")] = counts.get(summary.get("status"), 0) + 1
    breakdown = ", ".join("%d %s" % (n, (s or "unknown").lower().replace("_", " "))
                          for s, n in sorted(counts.items(), key=lambda i: (-i[1], str(i[0]))))
    valid = sum((s.get("rows") or {}).get("valid") or 0 for s in summaries)
    return ("The %d most recent runs (of at most %d)%s · %s valid rows · updated %s UTC, refreshes "
            "every %d s · JSON: <a href=\"status\">status</a>" % (
                len(summaries), limit, (": " + _escape(breakdown)) if breakdown else "",
                _escape(_number(valid)), now.strftime("%Y-%m-%d %H:%M:%S"), refresh))


def render(summaries, selected=None, stage="local", limit=20, now=None, alarms=None, alarm_error=None):
    """Returns the dashboard page (a str).

    ``summaries``: execution summaries, newest first (chalicelib.status.summarize);
    ``selected``: the detail (with ``steps``) of the run whose timeline is shown, or None;
    ``alarms``: the stage's alarm states (chalicelib.monitoring.alarm_states), None when not
    asked; ``alarm_error``: why they could not be read.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    running = any(s.get("status") == "RUNNING" for s in summaries) or (
        selected is not None and selected.get("status") == "RUNNING")
    refresh = REFRESH_SECONDS_WHILE_RUNNING if running else REFRESH_SECONDS
    title = "Shipping ETL pipeline (%s)" % stage
    if not summaries and selected is None:
        body = ('<section><h2>No runs yet</h2><p class="note">Put an NDJSON file under '
                '<code>incoming/</code> in the landing bucket, or wait for the scheduled generator: '
                'each file starts one run, and it appears here.</p></section>')
    else:
        body = ['<div class="grid">',
                '<section><h2>Rows per run</h2>%s</section>' % rows_chart(summaries),
                '<section><h2>Totals per run</h2>%s</section>' % totals_chart(summaries),
                '</div>']
        if alarms is not None or alarm_error:
            body.append(quality_section(summaries, alarms, alarm_error))
        if selected is not None:
            chart = timeline_chart(selected)
            duration = selected.get("duration_seconds")
            heading = 'Steps of %s %s%s · <a href="status/%s">json</a>' % (
                _escape(selected.get("name")), _badge(selected.get("status")),
                " · %s s" % _escape(_number(duration, 1)) if duration is not None else "",
                _escape(selected.get("name")))
            failure = _failure_text(selected)
            note = '<p class="note">%s</p>' % _escape(failure) if failure else ""
            body.append('<section><h2>%s</h2>%s%s%s</section>' % (
                heading, note, chart or '<p class="note">No step has started yet.</p>', STEPS_NOTE))
        body.append('<section><h2>Runs, newest first</h2>%s</section>' % runs_table(
            summaries, (selected or {}).get("name")))
        body = "\n".join(body)
    return _PAGE % {"title": _escape(title), "meta": _meta(summaries, limit, now, refresh),
                    "refresh": refresh, "body": body}
