"""The HTML of the page and of the fragments htmx swaps into it (the queue, recent
flushes). Everything from the store or a transport is escaped; nothing secret is in any
of it (the profile's settings never reach this module)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any
from urllib.parse import urlencode

from ..store import QueueState
from .hub import FlushRecord
from .queue_pages import ALL, PENDING, QueuePage

QUEUE_TABS = (PENDING, *(s.value for s in QueueState), ALL)
_S = QueueState
#: Each action with its button label and the states it applies to (the session's rules).
ACTIONS = {
    "hold": ("Hold", {_S.QUEUED, _S.DEFERRED, _S.RETRY, _S.PARKED}),
    "release": ("Release", {_S.HELD}),
    "retry": ("Retry", {_S.RETRY, _S.UNCERTAIN, _S.FAILED, _S.DEFERRED}),
    "cancel": ("Cancel", {_S.QUEUED, _S.DEFERRED, _S.RETRY, _S.PARKED, _S.HELD, _S.UNCERTAIN}),
}


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def status_rows(rows: Sequence[dict[str, Any]]) -> str:
    """The status table's body: one row per status row, keyed by its entry id."""
    out = []
    for row in rows:
        bits = "".join(f'<span class="bit">{escape(b)}</span>' for b in row["status_bits"])
        out.append(
            f'<tr id="row-{escape(row["entry_id"])}" data-name="{escape(row["name"])}">'
            f'<th scope="row">{escape(row["name"])}</th>'
            f'<td class="text">{escape(row["status_string"])}</td>'
            f'<td class="bits">{bits}</td></tr>'
        )
    return "\n".join(out)


def page(token: str, rows: Sequence[dict[str, Any]], transports: Iterable[str]) -> str:
    """The whole page: status table, Send/Receive, queue and recent flushes."""
    options = "".join(f'<option value="{escape(t)}">{escape(t)}</option>' for t in transports)
    tabs = "".join(
        f'<button type="button" class="tab" data-state="{s}" hx-get="/ui/queue?state={s}"'
        f' hx-target="#queue">{s.replace("_", " ")} <span class="count" data-count="{s}"></span>'
        "</button>"
        for s in QUEUE_TABS
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="mapispool-token" content="{escape(token)}">
<title>mapispool</title>
<link rel="stylesheet" href="/static/page.css">
<script src="/static/htmx.min.js" defer></script>
<script src="/static/page.js" defer></script>
</head><body>
<header><h1>mapispool</h1><span id="live" class="live">connecting…</span>
<span id="newmail" class="newmail" hidden></span></header>
<main>
<section aria-labelledby="h-status"><h2 id="h-status">Status</h2>
<table class="status"><thead><tr><th>Name</th><th>Status</th><th>Bits</th></tr></thead>
<tbody id="status-rows">{status_rows(rows)}</tbody></table></section>
<section aria-labelledby="h-flush"><h2 id="h-flush">Send/Receive</h2>
<form id="flush-form" class="flush">
<button type="submit" id="send-receive">Send/Receive</button>
<label>What <select name="mode"><option value="both">send and receive</option>
<option value="upload">upload only</option><option value="download">download only</option>
</select></label>
<label>Transport <select name="transport"><option value="">all</option>{options}</select></label>
<label><input type="checkbox" name="force"> force (ignore backoff)</label>
</form>
<p id="flush-message" role="status"></p>
<div id="progress" class="progress"></div>
<p id="flush-summary" class="summary"></p></section>
<section aria-labelledby="h-queue"><h2 id="h-queue">Queue</h2>
<nav class="tabs">{tabs}</nav>
<div id="queue" hx-get="/ui/queue?state={PENDING}" hx-trigger="load"></div></section>
<section aria-labelledby="h-flushes"><h2 id="h-flushes">Recent Send/Receive</h2>
<div id="flushes" hx-get="/ui/flushes" hx-trigger="load, flushes-changed from:body"></div>
</section></main></body></html>"""


def queue_fragment(state: str, page_: QueuePage, cursor: str | None) -> str:
    """One page of the queue as a table, with the actions and the paging links."""
    reload = f"/ui/queue?{urlencode({'state': state, **({'cursor': cursor} if cursor else {})})}"
    head = (
        f'<div class="queue" data-state="{escape(state)}" data-reload="{escape(reload)}">'
        '<table class="queue"><thead><tr><th>Subject</th><th>Recipients</th><th>State</th>'
        "<th>Attempts</th><th>Last error</th><th>Next try</th><th>Actions</th></tr></thead><tbody>"
    )
    rows = []
    for entry in page_.entries:
        eid = entry.entry_id.hex()
        buttons = "".join(
            f'<button type="button" class="action" data-action="{a}" hx-post="/api/queue/{eid}/{a}"'
            f' hx-swap="none">{label}</button>'
            for a, (label, states) in ACTIONS.items()
            if entry.state in states
        )
        recipients = ", ".join(r.partition(":")[2] or r for r in entry.recipients)
        rows.append(
            f'<tr data-entry="{eid}">'
            f'<td data-label="Subject">{escape(entry.subject or "(no subject)")}</td>'
            f'<td data-label="To">{escape(recipients)}</td>'
            f'<td data-label="State">{escape(entry.state.value)}</td>'
            f'<td data-label="Attempts">{entry.attempts}</td>'
            f'<td data-label="Last error">{escape(entry.last_error or "")}</td>'
            f'<td data-label="Next try">{_when(entry.not_before)}</td>'
            f'<td class="actions">{buttons}</td></tr>'
        )
    if not rows:
        rows.append('<tr><td colspan="7" class="empty">Nothing here.</td></tr>')
    links = []
    if cursor:
        first = escape(f"/ui/queue?{urlencode({'state': state})}")
        links.append(f'<a href="#" hx-get="{first}" hx-target="#queue">First page</a>')
    if page_.next_cursor:
        more = urlencode({"state": state, "cursor": page_.next_cursor})
        links.append(f'<a href="#" hx-get="/ui/queue?{more}" hx-target="#queue">Next page</a>')
    return (
        head + "".join(rows) + '</tbody></table><p class="pages">' + " ".join(links) + "</p></div>"
    )


def flushes_fragment(records: Iterable[FlushRecord]) -> str:
    """The recent Send/Receive runs, newest first, with per-transport counts."""
    out = [
        '<table class="flushes"><thead><tr><th>#</th><th>Started</th><th>By</th><th>Result</th>'
        "<th>Per transport</th></tr></thead><tbody>"
    ]
    for record in records:
        result = record.result
        if result is None:
            outcome, detail = "running", ""
        else:
            outcome = (
                "ok" if result["ok"] else ("interrupted" if result["interrupted"] else "problems")
            )
            detail = "; ".join(_transport_counts(t) for t in result["transports"])
        out.append(
            f"<tr><td>{escape(record.id)}</td><td>{_when(record.started)}</td>"
            f"<td>{escape(record.origin)}</td><td>{escape(outcome)}</td><td>{escape(detail)}</td></tr>"
        )
    if len(out) == 1:
        out.append('<tr><td colspan="5" class="empty">No Send/Receive yet.</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _transport_counts(counts: dict[str, Any]) -> str:
    shown = [
        f"{k} {counts[k]}"
        for k in ("sent", "received", "retried", "deferred", "failed", "uncertain")
        if counts.get(k)
    ]
    extra = counts.get("skipped") or counts.get("error")
    if extra:
        shown.append(str(extra))
    return f"{counts['transport']}: {', '.join(shown) or 'nothing to do'}"


SIGN_IN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mapispool: sign in</title><link rel="stylesheet" href="/static/page.css"></head>
<body><main><section><h1>mapispool</h1>
<form method="post" action="/login" class="signin">
<label>Token <input type="password" name="token" autocomplete="current-password" required></label>
<button type="submit">Sign in</button></form>
<p>The token is the value of the environment variable named by <code>[web] token_env</code>.</p>
</section></main></body></html>"""
