"""The console's HTML: plain server-rendered pages, every value escaped."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape

from app.console.queries import Overview, TaskSummary, TimelineEntry
from app.tasks.failures import FailureGroup
from app.webhooks.reports import DeliveryReport

STYLE = """
body{font:15px/1.4 system-ui,sans-serif;margin:0;color:#1b1b1b;background:#fafafa}
header{background:#223;color:#fff;padding:.5rem 1rem;display:flex;gap:1rem;align-items:center}
header a{color:#fff}main{padding:1rem;max-width:72rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem;
text-align:left;vertical-align:top}
a:focus,button:focus,input:focus,select:focus{outline:3px solid #f90;outline-offset:2px}
.figure{font-size:1.6rem;font-weight:600}.cards{display:flex;gap:1rem;flex-wrap:wrap}
.card{background:#fff;border:1px solid #ccc;padding:.5rem 1rem;min-width:10rem}
form.inline{display:inline}label{margin-right:.5rem}.error{color:#a00}
"""


def page(title: str, body: str, *, script: bool = False) -> str:
    js = '<script src="/console/console.js" defer></script>' if script else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)} · ILPS console</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style>{STYLE}</style>{js}
</head><body><header><strong>ILPS console</strong><nav>
<a href="/console">Overview</a> · <a href="/console/failures">Failures</a> ·
<a href="/console/tasks">Find a task</a></nav></header>
<main><h1>{escape(title)}</h1>{body}</main></body></html>"""


def _time(value: datetime | None) -> str:
    return "" if value is None else escape(value.isoformat(timespec="seconds"))


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f} s"


def chart(completed: Sequence[int], failed: Sequence[int]) -> str:
    """Completions (green) and failures (red) per minute as stacked bars, oldest left."""
    width, height, bar = 600, 120, 10
    peak = max([c + f for c, f in zip(completed, failed, strict=True)] + [1])
    bars: list[str] = []
    for index, (done, lost) in enumerate(zip(completed, failed, strict=True)):
        x = index * bar
        done_h = round(done / peak * (height - 10))
        lost_h = round(lost / peak * (height - 10))
        if done_h:
            bars.append(
                f'<rect x="{x}" y="{height - done_h}" width="{bar - 1}" height="{done_h}" '
                f'fill="#2a7"><title>{done} completed</title></rect>'
            )
        if lost_h:
            bars.append(
                f'<rect x="{x}" y="{height - done_h - lost_h}" width="{bar - 1}" '
                f'height="{lost_h}" fill="#c33"><title>{lost} failed</title></rect>'
            )
    return (
        f'<svg role="img" aria-label="Completions and failures per minute, last hour" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'style="background:#fff;border:1px solid #ccc">{"".join(bars)}</svg>'
        f"<p>Last hour: {sum(completed)} completed, {sum(failed)} failed (peak {peak}/min).</p>"
    )


def _card(label: str, element_id: str, value: str) -> str:
    return f'<div class="card">{label}<div class="figure" id="{element_id}">{value}</div></div>'


def overview_body(data: Overview) -> str:
    rows = "".join(
        f"<tr><td>{escape(status)}</td><td>{escape(data.stages.get(status, '—'))}</td>"
        f'<td data-unfinished="{escape(status)}">{count}</td></tr>'
        for status, count in data.unfinished.items()
    )
    durations = "".join(
        f"<tr><td>{escape(d.stage)}</td><td>{d.runs}</td><td>{_seconds(d.p50_seconds)}</td>"
        f"<td>{_seconds(d.p95_seconds)}</td></tr>"
        for d in data.durations
    )
    failed_now = sum(data.failed_per_minute)
    return f"""
<div class="cards" aria-live="polite">
{_card("Unfinished", "unfinished", str(sum(data.unfinished.values())))}
{_card("Waiting", "waiting", str(data.waiting))}
{_card("Oldest waiting", "oldest", _seconds(data.oldest_waiting_seconds))}
{_card("Failed, last hour", "failed-hour", str(failed_now))}
{_card("Webhook backlog", "webhooks", str(data.webhook_backlog))}
</div>
<h2>Completions and failures per minute</h2>
<div id="chart">{chart(data.completed_per_minute, data.failed_per_minute)}</div>
<h2>Unfinished tasks</h2>
<table id="unfinished-table"><tr><th>Status</th><th>Stage</th><th>Tasks</th></tr>{rows}</table>
<h2>Stage durations (last 24 h)</h2>
<table><tr><th>Stage</th><th>Runs</th><th>p50</th><th>p95</th></tr>{durations}</table>"""


def failures_body(
    groups: Iterable[FailureGroup],
    *,
    window_hours: float,
    stage: str | None,
    user_id: str | None,
    csrf: str,
) -> str:
    options = "".join(
        f'<option value="{s}"{" selected" if s == stage else ""}>{s}</option>'
        for s in ("preprocessing", "transcribing", "feedback", "claim")
    )
    rows = []
    for group in groups:
        hidden = (
            f'<input type="hidden" name="csrf" value="{csrf}">'
            f'<input type="hidden" name="window_hours" value="{window_hours}">'
            f'<input type="hidden" name="stage" value="{escape(group.stage)}">'
            f'<input type="hidden" name="reason_filter" value="{escape(group.reason)}">'
            f'<input type="hidden" name="user_id" value="{escape(user_id or "")}">'
        )
        rows.append(
            f"<tr><td>{escape(group.stage)}</td><td>{escape(group.reason)}</td>"
            f"<td>{escape(group.kind)}</td>"
            f"<td>{group.failures}</td><td>{group.tasks}</td><td>{_time(group.first_seen)}</td>"
            f"<td>{_time(group.last_seen)}</td><td>"
            f'<form class="inline" method="post" action="/console/failures/retry">{hidden}'
            f'<input type="hidden" name="dry_run" value="1">'
            f'<button type="submit">Count retryable</button></form> '
            f'<form class="inline" method="post" action="/console/failures/retry">{hidden}'
            f'<label>Reason <input name="reason" required></label>'
            f'<button type="submit">Retry these</button></form></td></tr>'
        )
    return f"""
<form method="get" action="/console/failures">
<label>Window (hours) <input name="window_hours" type="number" min="0.1" step="any"
 value="{window_hours}"></label>
<label>Stage <select name="stage"><option value="">any</option>{options}</select></label>
<label>User id <input name="user_id" value="{escape(user_id or "")}"></label>
<button type="submit">Filter</button></form>
<table><tr><th>Stage</th><th>Reason</th><th>Kind</th><th>Failures</th><th>Tasks</th>
<th>First seen</th><th>Last seen</th><th>Actions</th></tr>{"".join(rows)}</table>"""


def search_body(query: str, tasks: Sequence[TaskSummary], message: str = "") -> str:
    rows = "".join(
        f'<tr><td><a href="/console/tasks/{t.id}">{t.id}</a></td><td>{escape(t.status)}</td>'
        f"<td>{_time(t.created_at)}</td><td>{escape(t.comment or '')}</td></tr>"
        for t in tasks
    )
    table = (
        f"<table><tr><th>Task</th><th>Status</th><th>Created</th><th>Comment</th></tr>{rows}</table>"
        if tasks
        else ""
    )
    note = f'<p class="error">{escape(message)}</p>' if message else ""
    return f"""
<form method="get" action="/console/tasks">
<label>Task id or user id <input name="q" value="{escape(query)}" size="40" autofocus></label>
<button type="submit">Find</button></form>{note}{table}"""


def task_body(
    task: TaskSummary,
    events: Sequence[TimelineEntry],
    deliveries: Sequence[DeliveryReport],
    *,
    csrf: str,
    message: str = "",
) -> str:
    note = f'<p class="error" role="alert">{escape(message)}</p>' if message else ""
    timeline = "".join(
        f"<tr><td>{e.seq}</td><td>{_time(e.at)}</td><td>{escape(e.kind)}</td>"
        f"<td>{escape(e.status)}</td><td>{escape(e.stage or '')}</td><td>{e.attempt or ''}</td>"
        f"<td>{escape(e.detail or '')}</td><td>{_seconds(e.seconds_until_next)}</td></tr>"
        for e in events
    )
    delivery_rows = "".join(
        f"<tr><td>{d.id}</td><td>{escape(d.event_type)}</td><td>{escape(d.state)}</td>"
        f"<td>{len(d.attempts)}</td><td>{escape(d.attempts[-1].outcome if d.attempts else '')}"
        f"</td><td>{_action(f'/console/deliveries/{d.id}/redeliver', 'Redeliver', csrf)}</td></tr>"
        for d in deliveries
    )
    actions = []
    if task.status == "failed":
        actions.append(_action(f"/console/tasks/{task.id}/retry", "Retry", csrf))
    elif task.status != "completed":
        actions.append(_action(f"/console/tasks/{task.id}/cancel", "Cancel", csrf))
    return f"""{note}
<dl><dt>User</dt><dd><a href="/console/tasks?q={task.user_id}">{task.user_id}</a></dd>
<dt>Status</dt><dd id="task-status">{escape(task.status)}</dd>
<dt>Comment</dt><dd>{escape(task.comment or "")}</dd>
<dt>Audio stored</dt><dd>{escape(", ".join(task.audio) or "none")}</dd>
<dt>Created</dt><dd>{_time(task.created_at)}</dd></dl>
<h2>Actions</h2>{"".join(actions) or "<p>None: the task completed.</p>"}
<h2>Timeline</h2>
<table><tr><th>#</th><th>At</th><th>Kind</th><th>Status</th><th>Stage</th><th>Attempt</th>
<th>Detail</th><th>Until next</th></tr>{timeline}</table>
<h2>Webhook deliveries</h2>
<table><tr><th>Delivery</th><th>Event</th><th>State</th><th>Attempts</th><th>Last outcome</th>
<th>Action</th></tr>{delivery_rows}</table>"""


def _action(url: str, label: str, csrf: str) -> str:
    return (
        f'<form class="inline" method="post" action="{url}">'
        f'<input type="hidden" name="csrf" value="{csrf}">'
        f'<label>Reason <input name="reason" required></label>'
        f'<button type="submit">{label}</button></form>'
    )


def bulk_result_body(*, dry_run: bool, matched: int, retried: int, refused: int) -> str:
    verb = "would be retried" if dry_run else "retried"
    return (
        f'<p id="bulk-result">{matched} failed tasks match; {retried} {verb}; '
        f"{refused} cannot be retried (audio gone or no longer failed).</p>"
        '<p><a href="/console/failures">Back to failures</a></p>'
    )


def login_body(message: str = "") -> str:
    note = f'<p class="error" role="alert">{escape(message)}</p>' if message else ""
    return f"""{note}<form method="post" action="/console/login">
<p><label>Your name <input name="name" required></label></p>
<p><label>Operator token <input name="token" type="password" required></label></p>
<button type="submit">Sign in</button></form>"""
