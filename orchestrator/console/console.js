// The operator console: polls GET /api/v1/cluster and GET /metrics every second and redraws in place.
// Plain JavaScript, no library: the charts are SVG drawn here.
"use strict";

(function () {
  const POLL_MS = 1000;
  /// Points kept per chart: two minutes at one poll a second.
  const POINTS = 120;
  const ROUTES = { read: "/api/v1/db/read", write: "/api/v1/db/write" };

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("data-") || k === "title" || k === "aria-label") node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const child of children) {
      if (child !== null && child !== undefined) {
        node.append(child instanceof Node ? child : document.createTextNode(String(child)));
      }
    }
    return node;
  }

  function clock(ms) {
    return new Date(ms).toLocaleTimeString([], { hour12: false });
  }

  function ago(ms, now) {
    const s = Math.max(0, Math.round((now - ms) / 1000));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    return Math.floor(s / 3600) + " h ago";
  }

  // ---- the cluster ----

  const LEASES = {
    master: ["master", "the master znode names it: it runs the writes"],
    serving: ["serving", "in the in-sync set and standing: serves reads under a lease from this master"],
    in_sync_not_standing: ["in sync, not standing", "in the set, but has not stood yet: may not know it is in sync"],
    not_in_sync: ["not serving", "catching up or left out of the in-sync set: serves no reads"],
  };

  let eventFilter = "all";
  let lastCluster = null;

  let shownWorkers = null;

  function renderWorkers(workers) {
    // Redrawn only when something changed, so a row an operator is selecting stays put.
    const key = JSON.stringify(workers);
    if (key === shownWorkers) return;
    shownWorkers = key;
    const body = $("workers").tBodies[0];
    const rows = workers.map((w) => {
      const [lease, leaseTitle] = LEASES[w.lease] || [w.lease, ""];
      return el(
        "tr",
        {
          "data-role": w.role,
          "data-id": w.id,
          "data-pid": String(w.pid),
          "data-in-sync": String(w.in_sync),
          "data-lease": w.lease,
        },
        el("td", {}, el("span", { class: "role role-" + w.role }, w.role)),
        el("td", { class: "mono" }, w.id),
        el("td", { class: "mono pid" }, w.pid),
        el("td", {}, w.host === null ? "–" : w.host),
        el("td", {}, el("span", { class: "sync sync-" + w.in_sync }, w.in_sync ? "yes" : "no")),
        el("td", { class: "num mono" }, w.applied_seq),
        el("td", { class: "num mono" + (w.lag > 0 ? " lagging" : "") }, w.lag === null ? "–" : w.lag),
        el("td", {}, el("span", { class: "lease lease-" + w.lease, title: leaseTitle }, lease)),
      );
    });
    body.replaceChildren(...rows);
    if (rows.length === 0) {
      body.append(el("tr", {}, el("td", { colSpan: 8, class: "muted" }, "No worker registered.")));
    }
    const masters = workers.filter((w) => w.role === "master").length;
    $("worker-count").textContent = `${masters} master, ${workers.length - masters} slave(s)`;
  }

  function renderEpochs(epochs, now) {
    const rows = epochs.map((e, i) =>
      el(
        "tr",
        { "data-epoch": String(e.epoch), class: i === 0 ? "current" : "" },
        el("td", { class: "num mono" }, e.epoch),
        el("td", { class: "mono" }, `${e.master.id} (pid ${e.master.pid})`),
        el("td", {}, clock(e.since_ms), el("span", { class: "ago" }, ago(e.since_ms, now))),
      ),
    );
    $("epochs").tBodies[0].replaceChildren(...rows);
  }

  const KIND_LABEL = {
    failover: "failover",
    replacement: "replacement",
    crash: "crash API",
    scaling: "scaling",
    restore: "restore",
  };

  function renderEvents(events, now) {
    const shown = events.filter((e) => eventFilter === "all" || e.kind === eventFilter).slice(0, 60);
    const items = shown.map((e) => {
      const kindClass = "kind kind-" + e.kind + (e.kind === "scaling" ? " dir-" + e.direction : "");
      const label = e.kind === "scaling" ? `scaling ${e.direction}` : KIND_LABEL[e.kind] || e.kind;
      return el(
        "li",
        { "data-kind": e.kind, "data-seq": String(e.seq) },
        el("span", { class: kindClass }, label),
        el("time", { title: new Date(e.at_ms).toISOString() }, `${clock(e.at_ms)} · ${ago(e.at_ms, now)}`),
        el("p", { class: "reason" }, e.reason),
      );
    });
    $("events").replaceChildren(...items);
    $("events-empty").hidden = items.length > 0;
    $("events-empty").textContent =
      events.length === 0
        ? "No event yet: failovers, replacements, crash API calls, scaling decisions and restores appear here."
        : "No event of this kind among the recent ones.";
  }

  function renderCluster(c) {
    lastCluster = c;
    const health = $("health");
    const state = c.healthy ? "healthy" : c.master ? "degraded" : "no-master";
    health.dataset.health = state;
    health.className = "pill pill-" + state;
    health.textContent = { healthy: "healthy", degraded: "no slave in sync", "no-master": "no master" }[state];
    $("epoch").textContent = c.epoch === null ? "none" : c.epoch;
    $("master").textContent = c.master ? `${c.master.id} · pid ${c.master.pid}` : "none";
    $("updated").textContent = "updated " + clock(c.at_ms);
    renderWorkers(c.workers);
    renderEpochs(c.epochs, c.at_ms);
    renderEvents(c.events, c.at_ms);
    const s = c.scaling;
    $("scaling-desired").textContent = s.desired;
    $("scaling-actual").textContent = s.actual;
    $("scaling-in-sync").textContent = s.in_sync;
    $("scaling-reads").textContent = s.reads_this_interval;
    $("scaling-rule").textContent =
      `Every ${s.interval_secs} s the orchestrator keeps max(1, ⌈reads / ${s.reads_per_slave}⌉) slaves for the ` +
      "interval's reads (the clock starts at the first read).";
  }

  async function pollCluster() {
    try {
      const response = await fetch("/api/v1/cluster", { cache: "no-store" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      renderCluster(await response.json());
    } catch (e) {
      const health = $("health");
      health.dataset.health = "unreachable";
      health.className = "pill pill-unreachable";
      health.textContent = "orchestrator unreachable";
      $("updated").textContent = "last try " + clock(Date.now()) + ": " + e.message;
    }
  }

  // ---- metrics: Prometheus text, rates and p99 from the deltas between two polls ----

  /// Parses the text exposition format into [{name, labels, value}].
  function parseMetrics(text) {
    const samples = [];
    const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
    const label = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
    for (const raw of text.split("\n")) {
      if (raw === "" || raw.startsWith("#")) continue;
      const m = line.exec(raw);
      if (!m) continue;
      const labels = {};
      for (const l of (m[2] || "").matchAll(label)) {
        labels[l[1]] = l[2].replace(/\\"/g, '"').replace(/\\n/g, "\n").replace(/\\\\/g, "\\");
      }
      samples.push({ name: m[1], labels, value: parseFloat(m[3]) });
    }
    return samples;
  }

  /// Per route: the request count, and the histogram's cumulative counts by upper bound.
  function summarize(samples) {
    const out = {};
    for (const key of Object.keys(ROUTES)) out[key] = { count: 0, buckets: new Map() };
    const keyOf = (labels) => Object.keys(ROUTES).find((k) => ROUTES[k] === labels.route);
    for (const s of samples) {
      const key = keyOf(s.labels);
      if (!key) continue;
      if (s.name === "http_requests_total") {
        out[key].count += s.value;
      } else if (s.name === "http_request_duration_seconds_bucket") {
        const le = s.labels.le === "+Inf" ? Infinity : parseFloat(s.labels.le);
        out[key].buckets.set(le, (out[key].buckets.get(le) || 0) + s.value);
      }
    }
    return out;
  }

  /// The 99th percentile of the requests between two cumulative histograms, in seconds, interpolated in its
  /// bucket as Prometheus's histogram_quantile does; null without requests in between.
  function p99(before, after) {
    const bounds = [...after.keys()].sort((a, b) => a - b);
    const deltas = bounds.map((b) => (after.get(b) || 0) - (before.get(b) || 0));
    const total = deltas[deltas.length - 1];
    if (!(total > 0) || deltas.some((d) => d < 0)) return null;
    const target = 0.99 * total;
    let lower = 0;
    let below = 0;
    for (let i = 0; i < bounds.length; i++) {
      if (deltas[i] >= target) {
        if (bounds[i] === Infinity) return lower;
        const inBucket = deltas[i] - below;
        return lower + (bounds[i] - lower) * (inBucket > 0 ? (target - below) / inBucket : 1);
      }
      lower = bounds[i];
      below = deltas[i];
    }
    return null;
  }

  const series = { rate: { read: [], write: [] }, p99: { read: [], write: [] } };
  let previous = null;

  function push(list, value) {
    list.push(value);
    if (list.length > POINTS) list.shift();
  }

  async function pollMetrics() {
    const status = $("metrics-status");
    let text;
    try {
      const response = await fetch("/metrics", { cache: "no-store" });
      if (response.status === 404) {
        status.textContent = "no metrics: this orchestrator does not serve /metrics";
        status.dataset.state = "absent";
        previous = null;
        drawCharts(true);
        return;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      text = await response.text();
    } catch (e) {
      status.textContent = "no metrics: " + e.message;
      status.dataset.state = "error";
      return;
    }
    const now = performance.now();
    const current = summarize(parseMetrics(text));
    if (previous) {
      const dt = (now - previous.at) / 1000;
      for (const key of Object.keys(ROUTES)) {
        const delta = current[key].count - previous.routes[key].count;
        push(series.rate[key], delta >= 0 && dt > 0 ? delta / dt : null);
        const q = p99(previous.routes[key].buckets, current[key].buckets);
        push(series.p99[key], q === null ? null : q * 1000);
      }
    }
    previous = { at: now, routes: current };
    status.textContent = "live, from /metrics";
    status.dataset.state = "live";
    drawCharts(false);
  }

  // ---- charts: inline SVG ----

  const SVG = "http://www.w3.org/2000/svg";
  const W = 320;
  const H = 150;
  const PAD = { left: 40, right: 8, top: 10, bottom: 18 };

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function format(v) {
    if (v === null || v === undefined) return "–";
    if (v >= 100) return v.toFixed(0);
    if (v >= 10) return v.toFixed(1);
    return v.toFixed(2);
  }

  function drawChart(target, data, absent) {
    const node = $(target);
    const all = [...data.read, ...data.write].filter((v) => v !== null);
    const max = niceMax(Math.max(0, ...all));
    const x = (i) => PAD.left + ((W - PAD.left - PAD.right) * i) / (POINTS - 1);
    const y = (v) => PAD.top + (H - PAD.top - PAD.bottom) * (1 - v / max);
    const parts = [];
    for (const f of [0, 0.5, 1]) {
      const v = max * f;
      parts.push(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "grid" }));
      parts.push(svg("text", { x: PAD.left - 4, y: y(v) + 3, class: "axis", "text-anchor": "end" }, format(v)));
    }
    parts.push(svg("text", { x: PAD.left, y: H - 4, class: "axis" }, `−${POINTS} s`));
    parts.push(svg("text", { x: W - PAD.right, y: H - 4, class: "axis", "text-anchor": "end" }, "now"));
    for (const key of Object.keys(ROUTES)) {
      const values = data[key];
      const offset = POINTS - values.length;
      let path = "";
      let pen = false;
      values.forEach((v, i) => {
        if (v === null) {
          pen = false;
          return;
        }
        path += `${pen ? "L" : "M"}${x(i + offset).toFixed(1)},${y(v).toFixed(1)}`;
        pen = true;
      });
      if (path) parts.push(svg("path", { d: path, class: "line " + key }));
    }
    if (absent || all.length === 0) {
      const message = absent ? "no metrics" : "no requests yet";
      parts.push(svg("text", { x: W / 2, y: H / 2, class: "empty", "text-anchor": "middle" }, message));
    }
    node.replaceChildren(...parts);
  }

  function drawCharts(absent) {
    drawChart("chart-rate", series.rate, absent);
    drawChart("chart-p99", series.p99, absent);
    for (const key of Object.keys(ROUTES)) {
      const last = (list) => (list.length ? list[list.length - 1] : null);
      $("now-" + key).textContent = absent
        ? "no metrics"
        : `${format(last(series.rate[key]))} req/s · p99 ${format(last(series.p99[key]))} ms`;
    }
  }

  // ---- actions ----

  async function crash(role, button) {
    const out = $("crash-result");
    for (const b of document.querySelectorAll("[data-crash]")) b.disabled = true;
    out.dataset.state = "pending";
    out.textContent = `POST /api/v1/crash/${role} …`;
    try {
      const response = await fetch("/api/v1/crash/" + role, { method: "POST" });
      const body = await response.text();
      let shown = body;
      try {
        const json = JSON.parse(body);
        shown = Array.isArray(json) ? `killed pid ${json.join(", ")}` : json.error || body;
      } catch (_) {
        // not JSON: shown as it came
      }
      out.dataset.state = response.ok ? "ok" : "error";
      out.dataset.status = String(response.status);
      out.textContent = `${clock(Date.now())} crash ${role}: ${response.status} — ${shown}`;
    } catch (e) {
      out.dataset.state = "error";
      out.textContent = `${clock(Date.now())} crash ${role}: request failed: ${e.message}`;
    } finally {
      for (const b of document.querySelectorAll("[data-crash]")) b.disabled = false;
      button.focus();
      pollCluster();
    }
  }

  for (const button of document.querySelectorAll("[data-crash]")) {
    button.addEventListener("click", () => crash(button.dataset.crash, button));
  }

  for (const chip of document.querySelectorAll("[data-filter]")) {
    chip.addEventListener("click", () => {
      eventFilter = chip.dataset.filter;
      for (const c of document.querySelectorAll("[data-filter]")) {
        c.setAttribute("aria-pressed", String(c === chip));
      }
      if (lastCluster) renderEvents(lastCluster.events, lastCluster.at_ms);
    });
  }

  // ---- the loop: one poll at a time, so a slow answer never piles requests up ----

  async function loop() {
    await Promise.all([pollCluster(), pollMetrics()]);
    setTimeout(loop, POLL_MS);
  }
  // The chart arithmetic, for the browser test to check on known figures.
  window.rideshareConsole = { parseMetrics, summarize, p99 };

  drawCharts(false);
  loop();
})();
