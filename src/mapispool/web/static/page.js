// mapispool's page: the live parts (status rows, Send/Receive progress, queue counts)
// follow /api/events; the queue and the recent flushes are htmx fragments.
"use strict";
(() => {
  const token = document.querySelector('meta[name="mapispool-token"]').content;
  const $ = (sel) => document.querySelector(sel);
  let currentTab = "pending";

  // Every request htmx makes carries the page token (POSTs need it; GETs ignore it).
  document.body.addEventListener("htmx:configRequest", (e) => {
    e.detail.headers["X-Mapispool-Token"] = token;
  });
  document.body.addEventListener("htmx:afterRequest", (e) => {
    const elt = e.detail.elt;
    if (elt.classList && elt.classList.contains("action")) {
      if (!e.detail.successful) {
        let text = "the action failed";
        try { text = JSON.parse(e.detail.xhr.responseText).message || text; } catch (_) {}
        alert(text);
      }
      reloadQueue();
    }
  });
  document.body.addEventListener("click", (e) => {
    const tab = e.target.closest(".tab");
    if (!tab) return;
    currentTab = tab.dataset.state;
    document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("current", t === tab));
  });

  function reloadQueue() {
    const shown = $("#queue .queue");
    const url = shown ? shown.dataset.reload : `/ui/queue?state=${currentTab}`;
    htmx.ajax("GET", url, { target: "#queue" });
  }
  let queueTimer = null;
  function queueSoon() {
    if (queueTimer) return;
    queueTimer = setTimeout(() => { queueTimer = null; reloadQueue(); }, 400);
  }

  function el(tag, attrs = {}, text = "") {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text) node.textContent = text;
    return node;
  }

  // -- the status table ------------------------------------------------------------------
  function showRow(row) {
    let tr = document.getElementById(`row-${row.entry_id}`);
    if (!tr) {
      tr = el("tr", { id: `row-${row.entry_id}`, "data-name": row.name });
      tr.append(el("th", { scope: "row" }, row.name), el("td", { class: "text" }), el("td", { class: "bits" }));
      $("#status-rows").append(tr);
    }
    tr.querySelector(".text").textContent = row.status_string;
    const bits = tr.querySelector(".bits");
    bits.replaceChildren(...row.status_bits.map((b) => el("span", { class: "bit" }, b)));
  }

  // -- Send/Receive ----------------------------------------------------------------------
  function bar(transport) {
    let box = document.querySelector(`.bar[data-transport="${CSS.escape(transport)}"]`);
    if (!box) {
      box = el("div", { class: "bar", "data-transport": transport });
      box.append(el("span", { class: "name" }, transport), el("progress", { max: "1", value: "0" }),
                 el("span", { class: "what" }, "waiting"));
      $("#progress").append(box);
    }
    return box;
  }
  function showProgress(p) {
    const box = bar(p.transport);
    const meter = box.querySelector("progress");
    const what = box.querySelector(".what");
    box.dataset.phase = p.phase;
    if (p.phase === "done") {
      meter.max = 1; meter.value = 1;
      const c = p.counts || {};
      what.textContent = `done: ${c.sent || 0} sent, ${c.received || 0} received` +
        (c.failed ? `, ${c.failed} failed` : "") + (c.skipped ? ` (${c.skipped})` : "");
    } else if (p.phase === "running") {
      meter.removeAttribute("value");
      const c = p.counts || {};
      what.textContent = `${c.sent || 0} sent, ${c.received || 0} received`;
    } else if (p.total) {
      meter.max = p.total; meter.value = p.done;
      what.textContent = `${p.phase === "outbound" ? "sending" : "receiving"} ${p.done} of ${p.total}`;
    } else {
      meter.removeAttribute("value");
      what.textContent = p.phase === "inbound" ? `receiving: ${p.done}` : p.phase;
    }
    box.dataset.done = String(p.done);
  }
  function showSummary(record) {
    const result = record.result;
    const total = (key) => result.transports.reduce((n, t) => n + (t[key] || 0), 0);
    const summary = $("#flush-summary");
    summary.textContent = `Send/Receive #${record.id} ${result.interrupted ? "interrupted" : "finished"}: ` +
      `${total("sent")} sent, ${total("received")} received, ${total("failed")} failed, ` +
      `${total("retried")} to retry, ${total("uncertain")} uncertain.`;
    summary.dataset.sent = String(total("sent"));
    summary.classList.toggle("bad", !result.ok);
    $("#send-receive").disabled = false;
    $("#flush-message").textContent = "";
  }

  $("#flush-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const form = e.target;
    const mode = form.mode.value;
    const body = {
      upload: mode === "upload", download: mode === "download",
      transport: form.transport.value || null, force: form.force.checked,
    };
    const message = $("#flush-message");
    message.classList.remove("bad");
    $("#send-receive").disabled = true;
    const answer = await fetch("/api/flush", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Mapispool-Token": token },
      body: JSON.stringify(body),
    });
    const data = await answer.json().catch(() => ({}));
    if (answer.status === 202) {
      message.textContent = `Send/Receive #${data.id} started.`;
      $("#progress").replaceChildren();
      $("#flush-summary").textContent = "";
    } else {
      $("#send-receive").disabled = false;
      message.classList.add("bad");
      message.textContent = answer.status === 409
        ? "A Send/Receive is already running; try again when it ends."
        : (data.message || `refused (${answer.status})`);
    }
  });

  // -- events ----------------------------------------------------------------------------
  function showCounts(counts) {
    const pending = Object.entries(counts || {})
      .filter(([s]) => s !== "sent" && s !== "cancelled").reduce((n, [, v]) => n + v, 0);
    const all = Object.values(counts || {}).reduce((n, v) => n + v, 0);
    document.querySelectorAll("[data-count]").forEach((span) => {
      const s = span.dataset.count;
      const n = s === "pending" ? pending : s === "all" ? all : (counts || {})[s] || 0;
      span.textContent = `(${n})`;
    });
  }

  function connect() {
    const live = $("#live");
    const source = new EventSource("/api/events");
    const on = (name, fn) => source.addEventListener(name, (e) => fn(JSON.parse(e.data)));
    source.onopen = () => { live.textContent = "live"; live.classList.add("on"); };
    source.onerror = () => { live.textContent = "reconnecting…"; live.classList.remove("on"); };
    on("hello", (d) => showCounts(d.queue));
    on("status", showRow);
    on("flush-begun", (record) => {
      $("#send-receive").disabled = true;
      $("#flush-message").textContent = `Send/Receive #${record.id} running…`;
      htmx.trigger(document.body, "flushes-changed");
    });
    on("flush-progress", showProgress);
    on("flush-ended", (record) => {
      showSummary(record);
      htmx.trigger(document.body, "flushes-changed");
      queueSoon();
    });
    on("queue", (d) => { if (d.counts) showCounts(d.counts); queueSoon(); });
    on("newmail", () => {
      const box = $("#newmail");
      box.hidden = false;
      box.dataset.n = String(Number(box.dataset.n || 0) + 1);
      box.textContent = `${box.dataset.n} new message(s)`;
    });
  }
  connect();
})();
