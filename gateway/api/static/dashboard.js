// tidegate dashboard: plain JS, no dependencies, no build step. Everything it shows
// comes from the API it is served by (/api/v1/live, /api/v1/sensors, /api/v1/gateways,
// /api/v1/stats, /api/v1/readings/aggregate), with the bearer token from localStorage
// when one is set. Two modes, told by /api/v1/live: a gateway's own dashboard, and the
// hub (`tidegate serve` over the central store: no broker, no queue; the fleet grouped
// by gateway, with when each last forwarded and how far behind it is).
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const TOKEN_KEY = "tidegate.token";
  const LIVE_MS = 2000;
  const SENSORS_MS = 5000;
  const STATS_MS = 15000;
  const CHART_PAGE = 12;
  // The fleet is read a page of series at a time (the API pages through any number):
  // the first page, plus one more for each "Show more sensors"; the filter box asks the
  // gateway, so it finds sensors beyond the pages shown.
  const FLEET_PAGE = 500;
  // The hub: a fleet of more sensors than this starts with one line per gateway, and
  // loads a gateway's sensors (a page at a time) when its group is opened.
  const COLLAPSE_OVER = 200;
  const RANGES = {
    "15m": { ms: 15 * 60e3, bucket: "15s", refresh: 10e3 },
    "1h": { ms: 3600e3, bucket: "1m", refresh: 15e3 },
    "6h": { ms: 6 * 3600e3, bucket: "5m", refresh: 30e3 },
    "24h": { ms: 24 * 3600e3, bucket: "15m", refresh: 60e3 },
    "7d": { ms: 7 * 86400e3, bucket: "2h", refresh: 300e3 },
    "30d": { ms: 30 * 86400e3, bucket: "6h", refresh: 600e3 },
  };

  const $ = (id) => document.getElementById(id);
  const state = {
    range: "1h",
    filter: "",
    sensors: [],
    fleetPages: 1,
    fleetMore: false,
    fleetSeq: 0,
    sensorTotal: null,
    mode: null, // "gateway" or "hub", from /api/v1/live
    gateways: [], // from /api/v1/gateways
    staleAfterS: 300,
    expanded: null, // hub: Set of gateway ids whose sensors show (null: decided at first load)
    groupPages: new Map(), // hub: gateway id -> pages of its sensors to load
    groupMore: new Map(), // hub: gateway id -> whether it has more sensors than loaded
    sensorsBy: new Map(), // hub: gateway id -> its loaded sensors
    forwarded: [], // hub: [{t, total}] samples of the fleet's forwarded count (fleet rate)
    charts: new Map(), // key -> {card, svg, last}
    chartLimit: CHART_PAGE,
    rateHistory: [],
    authNeeded: false,
    chartTimer: null,
    stored: null, // {database, runtimeAtStats}: the database total and the live count then
  };

  // --- API access ------------------------------------------------------------------

  class AuthError extends Error {}

  async function api(path) {
    const headers = { Accept: "application/json" };
    const token = localStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = "Bearer " + token;
    const response = await fetch(path, { headers, cache: "no-store" });
    if (response.status === 401) throw new AuthError("unauthorized");
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  function needAuth() {
    if (state.authNeeded) return;
    state.authNeeded = true;
    $("auth").hidden = false;
    $("token").focus();
    $("updated").textContent = "waiting for a token";
  }

  function guarded(fn) {
    return async (...args) => {
      try {
        await fn(...args);
      } catch (err) {
        if (err instanceof AuthError) needAuth();
        else $("updated").textContent = "error: " + err.message;
      }
    };
  }

  // --- formatting ------------------------------------------------------------------

  // Values as people read them: grouped digits for large ones (12,345,678,901), enough
  // decimals for small ones (0.000123), an exponent only far outside both.
  function fmtNumber(value) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    const abs = Math.abs(value);
    if (abs !== 0 && (abs >= 1e15 || abs < 1e-6)) return value.toExponential(3);
    if (abs !== 0 && abs < 1) return String(Number(value.toPrecision(4)));
    const digits = abs >= 1000 ? 0 : abs >= 100 ? 1 : abs >= 10 ? 2 : 3;
    return value.toLocaleString(undefined, { maximumFractionDigits: digits });
  }

  function fmtCount(value) {
    if (value === null || value === undefined) return "–";
    if (value >= 1e9) return (value / 1e9).toFixed(2) + " G";
    if (value >= 1e6) return (value / 1e6).toFixed(2) + " M";
    if (value >= 1e4) return (value / 1e3).toFixed(1) + " k";
    return value.toLocaleString();
  }

  function fmtBytes(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  }

  function fmtAge(seconds) {
    if (seconds === null || seconds === undefined) return "never";
    // A batch committed while the answer was being made is a few ms "ahead" of the
    // answer's clock: that is now, not the future (a reading stamped ahead still is).
    if (seconds < -5) return "in the future";
    if (seconds < 2) return "just now";
    if (seconds < 60) return Math.round(seconds) + " s ago";
    if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
    if (seconds < 86400) return (seconds / 3600).toFixed(1) + " h ago";
    return (seconds / 86400).toFixed(1) + " d ago";
  }

  function fmtDuration(seconds) {
    if (seconds < 60) return Math.round(seconds) + " s";
    if (seconds < 3600) return Math.round(seconds / 60) + " min";
    if (seconds < 86400) return (seconds / 3600).toFixed(1) + " h";
    return (seconds / 86400).toFixed(1) + " d";
  }

  function fmtLatency(seconds) {
    if (seconds === null || seconds === undefined || seconds === 0) return "–";
    if (!Number.isFinite(seconds)) return "> 10 s";
    return seconds < 1 ? "≤ " + Math.round(seconds * 1000) + " ms" : "≤ " + seconds + " s";
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svgEl(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  // --- live figures ----------------------------------------------------------------

  function setPill(id, ok, title) {
    const pill = $(id);
    pill.classList.toggle("ok", ok);
    pill.classList.toggle("bad", !ok);
    pill.title = title;
  }

  function drawSpark(values) {
    const svg = $("spark");
    svg.replaceChildren();
    if (values.length < 2) return;
    const max = Math.max(...values, 1);
    const step = 120 / (values.length - 1);
    const pts = values.map((v, i) => [i * step, 31 - (v / max) * 26]);
    const line = pts.map((p, i) => (i ? "L" : "M") + p[0].toFixed(1) + " " + p[1].toFixed(1)).join(" ");
    svg.append(svgEl("path", { class: "area", d: line + " L120 32 L0 32 Z" }));
    svg.append(svgEl("path", { class: "line", d: line }));
  }

  function setMode(mode) {
    if (state.mode === mode) return;
    state.mode = mode;
    document.body.classList.toggle("hub", mode === "hub");
    document.title = mode === "hub" ? "tidegate fleet" : "tidegate";
  }

  function pushRate(rate) {
    state.rateHistory.push(rate);
    if (state.rateHistory.length > 60) state.rateHistory.shift();
    drawSpark(state.rateHistory);
  }

  const refreshLive = guarded(async () => {
    const live = await api("/api/v1/live");
    setMode(live.mode || "gateway");
    $("k-uptime").textContent = fmtDuration(live.uptime_s);
    if (state.mode === "hub") {
      setPill("pill-db", live.storage_ok, live.storage_ok ? "central store answers" : "central store: " + live.storage_error);
      $("pill-db").lastChild.textContent = "central store";
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
      return;
    }
    const rate = live.ingest_rate.readings_per_s;
    $("k-rate").textContent = fmtNumber(rate);
    $("k-msgrate").textContent = fmtNumber(live.ingest_rate.messages_per_s);
    pushRate(rate);

    const cap = live.queue_capacity || 0;
    const depth = live.queue_depth || 0;
    const share = cap ? depth / cap : 0;
    $("k-queue").textContent = fmtCount(depth);
    $("k-queue-cap").textContent = "of " + fmtCount(cap);
    const bar = $("queue-bar");
    bar.style.width = Math.max(share * 100, depth ? 1 : 0).toFixed(1) + "%";
    bar.classList.toggle("high", share >= 0.5 && share < 0.9);
    bar.classList.toggle("full", share >= 0.9);
    $("k-p99").textContent = fmtLatency(live.commit_latency_p99_s);
    showStored(live.readings_stored);
    $("k-reconnects").textContent = fmtCount(live.reconnects);

    setPill("pill-broker", live.broker_connected, live.broker_connected ? "broker connected" : "broker not connected");
    setPill("pill-db", live.storage_ok, live.storage_ok ? "database writes OK" : "database: " + live.storage_error);
    showUpstream(live.upstream);
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  });

  // Forwarding to the central store (docs/upstream.md): a pill beside the database's
  // and one line under the queue — pending readings, the oldest's age, buffer left.
  function showUpstream(up) {
    const pill = $("pill-upstream");
    const line = $("k-upstream");
    pill.hidden = line.hidden = !up;
    if (!up) return;
    const pending = fmtCount(up.pending) + " pending";
    const oldest = up.pending ? " · oldest " + fmtDuration(up.oldest_pending_age_s) : "";
    const left = up.buffer_hours_left;
    const hours = left == null ? "" : " · " + (left >= 48 ? fmtNumber(left / 24) + " days" : fmtNumber(left) + " h") + " of buffer";
    const dropped = up.dropped ? " · " + fmtCount(up.dropped) + " dropped" : "";
    line.textContent = "centre: " + pending + oldest + hours + dropped;
    const failing = up.unreachable_since != null;
    const reason = failing ? "forwarding failing: " + (up.last_error || "?")
      : up.connected ? "central store connected" : "connecting to the central store";
    setPill("pill-upstream", !failing && !up.dropped, reason + " — " + pending + oldest + " · " + fmtNumber(up.forward_rate) + " readings/s forwarded");
    pill.lastChild.textContent = "centre " + (up.pending ? fmtCount(up.pending) : "✓");
  }

  // The "Stored" card counts the database (like the dead letters beside it), moved on
  // between the cached /stats answers by what this gateway stored since.
  function showStored(liveStored) {
    const known = state.stored;
    if (!known) {
      $("k-stored").textContent = "–";
      return;
    }
    if (state.mode === "hub") {
      $("k-stored").textContent = fmtCount(known.database);
      return;
    }
    const since = Math.max(0, (liveStored ?? known.runtimeAtStats) - known.runtimeAtStats);
    $("k-stored").textContent = fmtCount(known.database + since);
    $("k-stored-since").textContent = fmtCount(liveStored ?? 0);
  }

  const refreshStats = guarded(async () => {
    const stats = await api("/api/v1/stats");
    const db = stats.database;
    state.stored = { database: db.readings, runtimeAtStats: stats.runtime.readings_stored };
    showStored(stats.runtime.readings_stored);
    $("k-db").textContent = fmtBytes(db.database_bytes + db.wal_bytes);
    $("k-dead").textContent = fmtCount(db.dead_letters);
    state.sensorTotal = db.sensors;
    showFleetCount();
  });

  // --- fleet -----------------------------------------------------------------------

  function matches(sensor) {
    const f = state.filter;
    if (!f) return true;
    if (sensor.sensor_id.toLowerCase().includes(f)) return true;
    if (state.mode === "hub" && (sensor.gateway || "").toLowerCase().includes(f)) return true;
    return sensor.metrics.some((m) => m.metric.toLowerCase().includes(f));
  }

  // The hub groups the fleet by gateway; a gateway's own dashboard has one gateway.
  function grouped() {
    return state.mode === "hub";
  }

  function sensorRow(sensor) {
    const tr = el("tr");
    tr.dataset.sensor = sensor.sensor_id;
    tr.dataset.gateway = sensor.gateway;
    if (sensor.stale) tr.classList.add("stale");
    const name = el("td", "sensor", sensor.sensor_id);
    name.title = sensor.sensor_id;
    if (sensor.stale) name.append(el("span", "badge", "stale"));
    name.append(el("div", "sub", fmtAge(sensor.age_s)));
    const chips = el("div", "chips");
    for (const m of sensor.metrics) {
      const chip = el("span", "chip");
      chip.append(el("span", "", m.metric));
      chip.append(el("b", "", fmtNumber(m.last_value) + (m.unit ? " " + m.unit : "")));
      chip.title = m.metric + (m.unit ? " (" + m.unit + ")" : "") + " at " + (m.last_ts || "never");
      chips.append(chip);
    }
    const values = el("td");
    values.append(chips);
    const seen = el("td", "seen", fmtAge(sensor.age_s));
    seen.title = sensor.last_seen || "";
    tr.append(name, values, seen);
    return tr;
  }

  // What a gateway's header says about forwarding: when it last forwarded and how far
  // behind it was then; a gateway that forwards nothing here says when it last stored.
  function forwardingText(gw, sensors) {
    const f = gw && gw.forwarding;
    if (!f) {
      let age = null;
      if (gw && gw.last_seen_ms) age = (Date.now() - gw.last_seen_ms) / 1000;
      else {
        const seen = sensors.map((s) => s.age_s).filter((a) => a !== null && a !== undefined);
        if (seen.length) age = Math.min(...seen);
      }
      return { text: age !== null ? "last reading " + fmtAge(age) : "no readings yet", stale: false, title: "" };
    }
    const behind = f.backlog_readings
      ? fmtCount(f.backlog_readings) + " behind" + (f.behind_s !== null ? " (oldest " + fmtDuration(f.behind_s) + ")" : "")
      : "up to date";
    return {
      text: "forwarded " + fmtAge(f.age_s) + " · " + behind,
      stale: f.stale,
      title: "last batch " + f.last_forward + "; " + fmtCount(f.forwarded) + " readings forwarded in total",
    };
  }

  function groupHead(id, sensors, expanded) {
    const gw = state.gateways.find((g) => g.gateway === id);
    const info = forwardingText(gw, sensors);
    const tr = el("tr", "gw-row");
    tr.dataset.gateway = id;
    if (info.stale) tr.classList.add("stale");
    const th = el("th");
    th.colSpan = 3;
    th.scope = "rowgroup";
    const toggle = el("button", "gw-toggle");
    toggle.type = "button";
    toggle.setAttribute("aria-expanded", String(expanded));
    toggle.append(el("span", "gw-caret", expanded ? "▾" : "▸"), el("span", "gw-name", id));
    toggle.title = (expanded ? "hide" : "show") + " the sensors of " + id;
    // The gateway's own counts, known without loading its sensors.
    const total = gw && !state.filter ? gw.sensors : sensors.length;
    const staleCount = gw && !state.filter && gw.sensors_stale !== undefined
      ? gw.sensors_stale : sensors.filter((s) => s.stale).length;
    const counts = el("span", "gw-counts", fmtCount(total) + (total === 1 ? " sensor" : " sensors")
      + (staleCount ? " · " + fmtCount(staleCount) + " stale" : ""));
    const fwd = el("span", "gw-forward", info.text);
    fwd.title = info.title;
    th.append(toggle);
    if (info.stale) th.append(el("span", "badge", "stopped forwarding"));
    th.append(counts, fwd);
    tr.append(th);
    toggle.addEventListener("click", () => {
      if (state.expanded.has(id)) state.expanded.delete(id);
      else state.expanded.add(id);
      renderFleet();
      if (state.expanded.has(id)) refreshSensors();
    });
    return tr;
  }

  function noteRow(text, button) {
    const tr = el("tr", "more-row");
    const td = el("td", "", button ? undefined : text);
    td.colSpan = 3;
    if (button) td.append(button);
    tr.append(td);
    return tr;
  }

  function groupMoreRow(id) {
    const button = el("button", "", "Show more sensors of " + id);
    button.type = "button";
    button.addEventListener("click", () => {
      state.groupPages.set(id, (state.groupPages.get(id) || 1) + 1);
      refreshSensors();
    });
    return noteRow("", button);
  }

  function renderFleet() {
    const table = $("fleet");
    const bodies = [];
    if (!grouped()) {
      const body = el("tbody");
      for (const sensor of state.sensors) if (matches(sensor)) body.append(sensorRow(sensor));
      bodies.push(body);
    } else {
      const groups = new Map(state.gateways.map((g) => [g.gateway, []]));
      for (const sensor of state.sensors) {
        if (!matches(sensor)) continue;
        if (!groups.has(sensor.gateway)) groups.set(sensor.gateway, []);
        groups.get(sensor.gateway).push(sensor);
      }
      if (state.expanded === null && state.gateways.length) {
        // A small fleet shows everything; a big one starts with one line per gateway.
        state.expanded = new Set(fleetSize() > COLLAPSE_OVER ? [] : groups.keys());
      }
      for (const [id, sensors] of groups) {
        const named = state.filter && id.toLowerCase().includes(state.filter);
        if (state.filter && !sensors.length && !named) continue;
        const expanded = Boolean(state.filter) || Boolean(state.expanded && state.expanded.has(id));
        const body = el("tbody");
        body.dataset.gateway = id;
        body.append(groupHead(id, sensors, expanded));
        if (expanded) {
          for (const sensor of sensors) body.append(sensorRow(sensor));
          if (!state.filter && state.groupMore.get(id)) body.append(groupMoreRow(id));
          if (!sensors.length && !state.sensorsBy.has(id)) body.append(noteRow("loading sensors…"));
        }
        bodies.push(body);
      }
    }
    for (const old of table.querySelectorAll("tbody")) old.remove();
    table.append(...bodies);
    $("fleet-empty").hidden = state.sensors.length > 0 || (grouped() && state.gateways.length > 0);
  }

  function fleetSize() {
    if (state.mode === "hub") return state.gateways.reduce((sum, g) => sum + g.sensors, 0);
    return state.sensors.length;
  }

  function showFleetCount() {
    if (state.mode === "hub") {
      // Every gateway's counts come with /api/v1/gateways; stale ones once the hub has
      // looked at every latest value (a few seconds after it starts).
      $("k-sensors").textContent = fmtCount(fleetSize());
      const known = state.gateways.every((g) => g.sensors_stale !== undefined);
      const stale = state.gateways.reduce((sum, g) => sum + (g.sensors_stale || 0), 0);
      $("k-stale").textContent = !known ? "" : stale ? fmtCount(stale) + " stale" : "all fresh";
      $("fleet-shown").textContent = state.filter && state.fleetMore ? "showing " + fmtCount(state.sensors.length) + " matching sensors" : "";
      $("more-sensors").hidden = !(state.filter && state.fleetMore);
      return;
    }
    const shown = state.sensors.length;
    const total = state.sensorTotal;
    $("k-sensors").textContent = fmtCount(total !== null && !state.filter ? total : shown);
    const partial = state.fleetMore || (total !== null && !state.filter && total > shown);
    $("fleet-shown").textContent = partial ? "showing " + fmtCount(shown) + " sensors" : "";
    $("more-sensors").hidden = !state.fleetMore;
    const stale = state.sensors.filter((s) => s.stale).length;
    $("k-stale").textContent = stale ? stale + " stale" : "all fresh";
  }

  // Up to ``pages`` pages of /api/v1/sensors with ``params``, merged per sensor of a
  // gateway (a sensor with more metrics than one page holds continues on the next).
  async function loadPages(params, pages, seq) {
    const merged = new Map();
    let cursor = null;
    let more = false;
    for (let page = 0; page < pages; page++) {
      const q = new URLSearchParams({ ...params, limit: String(FLEET_PAGE) });
      if (cursor) q.set("cursor", cursor);
      const data = await api("/api/v1/sensors?" + q.toString());
      if (seq !== state.fleetSeq) return null;
      for (const s of data.sensors) {
        const key = s.gateway + "\u0000" + s.sensor_id;
        const known = merged.get(key);
        if (!known) merged.set(key, s);
        else {
          known.metrics.push(...s.metrics);
          if ((s.last_seen_ms ?? -Infinity) > (known.last_seen_ms ?? -Infinity)) {
            Object.assign(known, { last_seen: s.last_seen, last_seen_ms: s.last_seen_ms, age_s: s.age_s, stale: s.stale });
          }
        }
      }
      cursor = data.next_cursor;
      more = Boolean(cursor);
      if (!more) break;
    }
    return { sensors: [...merged.values()], more };
  }

  // The hub loads sensors per gateway, only for the groups that show them (and the
  // first gateway, whose series the charts start with); with a filter, the matches
  // across the fleet and the gateways whose name matches.
  async function loadHubSensors(seq) {
    const ids = state.gateways.map((g) => g.gateway);
    const by = new Map();
    if (state.filter) {
      const found = await loadPages({ match: state.filter }, state.fleetPages, seq);
      if (!found) return null;
      state.fleetMore = found.more;
      for (const s of found.sensors) {
        if (!by.has(s.gateway)) by.set(s.gateway, []);
        by.get(s.gateway).push(s);
      }
      const named = ids.filter((id) => id.toLowerCase().includes(state.filter) && !by.has(id));
      for (const id of named) {
        const page = await loadPages({ gateway: id }, 1, seq);
        if (!page) return null;
        by.set(id, page.sensors);
      }
    } else {
      const want = ids.filter((id) => state.expanded && state.expanded.has(id));
      if (!want.length && ids.length) want.push(ids[0]);
      const pages = await Promise.all(want.map((id) => loadPages({ gateway: id }, state.groupPages.get(id) || 1, seq)));
      if (pages.some((p) => p === null)) return null;
      want.forEach((id, i) => {
        by.set(id, pages[i].sensors);
        state.groupMore.set(id, pages[i].more);
      });
      state.fleetMore = false;
    }
    state.sensorsBy = by;
    const out = [];
    for (const id of ids) out.push(...(by.get(id) || []));
    return out;
  }

  // The newest refresh wins.
  const refreshSensors = guarded(async () => {
    const seq = ++state.fleetSeq;
    let sensors;
    if (state.mode === "hub") {
      sensors = await loadHubSensors(seq);
    } else {
      const found = await loadPages(state.filter ? { match: state.filter } : {}, state.fleetPages, seq);
      if (found) state.fleetMore = found.more;
      sensors = found && found.sensors;
    }
    if (!sensors) return;
    state.sensors = sensors;
    showFleetCount();
    renderFleet();
    syncCharts();
  });

  // The gateways the store holds: one (this gateway) on a gateway's own dashboard;
  // every forwarding edge in the hub, whose forwarded counts give the fleet rate.
  const refreshGateways = guarded(async () => {
    const data = await api("/api/v1/gateways");
    state.gateways = data.gateways;
    state.staleAfterS = data.stale_after_s;
    if (state.mode === "hub") {
      showFleetFigures(data.gateways);
      showFleetCount();
      renderFleet();
    }
  });

  function showFleetFigures(gateways) {
    const forwarding = gateways.filter((g) => g.forwarding);
    const stopped = forwarding.filter((g) => g.forwarding.stale);
    $("k-gateways").textContent = fmtCount(gateways.length);
    $("k-gw-stale").textContent = stopped.length ? fmtCount(stopped.length) + " stopped" : forwarding.length ? "all forwarding" : "";
    const backlog = forwarding.reduce((sum, g) => sum + g.forwarding.backlog_readings, 0);
    const behind = forwarding.map((g) => g.forwarding.behind_s).filter((b) => b !== null);
    $("k-backlog").textContent = backlog
      ? fmtCount(backlog) + (backlog === 1 ? " reading" : " readings") + " not forwarded yet"
      : forwarding.length ? "nothing waiting to be forwarded" : "";
    $("k-behind").textContent = behind.length ? "furthest behind " + fmtDuration(Math.max(...behind)) : "";
    const ok = stopped.length === 0;
    setPill("pill-gateways", ok, ok ? "every gateway forwarded within " + state.staleAfterS + " s" : stopped.map((g) => g.gateway).join(", ") + " stopped forwarding");
    $("pill-gateways").lastChild.textContent = stopped.length ? fmtCount(stopped.length) + " of " + fmtCount(gateways.length) + " gateways stopped" : fmtCount(gateways.length) + " gateways";
    // Fleet rate: readings forwarded per second between two looks.
    const now = Date.now();
    const total = forwarding.reduce((sum, g) => sum + g.forwarding.forwarded, 0);
    const last = state.forwarded[state.forwarded.length - 1];
    state.forwarded.push({ t: now, total });
    if (state.forwarded.length > 2) state.forwarded.shift();
    if (last && now > last.t) {
      const rate = Math.max(0, (total - last.total) / ((now - last.t) / 1000));
      $("k-rate").textContent = fmtNumber(rate);
      pushRate(rate);
    }
  }

  // --- charts ----------------------------------------------------------------------

  function seriesList() {
    const list = [];
    for (const sensor of state.sensors) {
      if (!matches(sensor)) continue;
      for (const m of sensor.metrics) list.push({ gateway: sensor.gateway, sensor: sensor.sensor_id, metric: m.metric, unit: m.unit, last: m.last_value });
    }
    return list;
  }

  function chartKey(s) {
    return s.gateway + "\u0000" + s.sensor + "\u0000" + s.metric;
  }

  function syncCharts() {
    const wanted = seriesList();
    const visible = wanted.slice(0, state.chartLimit);
    const keys = new Set(visible.map(chartKey));
    for (const [key, chart] of state.charts) {
      if (!keys.has(key)) {
        chart.card.remove();
        state.charts.delete(key);
      }
    }
    const container = $("charts");
    const fresh = [];
    visible.forEach((s) => {
      const key = chartKey(s);
      let chart = state.charts.get(key);
      if (!chart) {
        chart = makeChart(s);
        state.charts.set(key, chart);
        fresh.push(chart);
      }
      chart.lastEl.replaceChildren(document.createTextNode(fmtNumber(s.last)));
      if (s.unit) chart.lastEl.append(el("small", "", s.unit));
      container.append(chart.card); // keeps the fleet's order
    });
    $("more").hidden = wanted.length <= state.chartLimit;
    fresh.forEach((chart) => loadChart(chart));
  }

  function makeChart(s) {
    const card = el("article", "chart");
    card.dataset.sensor = s.sensor;
    card.dataset.metric = s.metric;
    card.dataset.gateway = s.gateway;
    const head = el("div", "chart-head");
    // The whole sensor and metric names, each on its own line (wrapping if they must),
    // and both in the tooltip of the title.
    const title = el("div", "chart-title");
    const where = grouped() ? s.gateway + " · " : "";
    title.append(el("div", "chart-sensor", s.sensor), el("div", "chart-metric", where + s.metric));
    title.title = where + s.sensor + " · " + s.metric;
    const lastEl = el("div", "chart-last");
    head.append(title, lastEl);
    const svg = svgEl("svg", { viewBox: "0 0 320 150", role: "img", "aria-label": s.sensor + " " + s.metric });
    card.append(head, svg);
    return { card, svg, lastEl, series: s, buckets: [], seq: 0 };
  }

  async function loadChart(chart) {
    // The newest request wins: a range change while a load is in flight must not be
    // overwritten by the older answer.
    chart.seq += 1;
    const seq = chart.seq;
    const range = RANGES[state.range];
    const s = chart.series;
    const q = new URLSearchParams({
      gateway: s.gateway,
      sensor: s.sensor,
      metric: s.metric,
      from: new Date(Date.now() - range.ms).toISOString(),
      to: "now",
      bucket: range.bucket,
      agg: "min,max,avg,count",
    });
    try {
      const data = await api("/api/v1/readings/aggregate?" + q.toString());
      if (seq !== chart.seq) return;
      const buckets = data.series.length ? data.series[0].buckets : [];
      chart.buckets = buckets;
      chart.from = Date.parse(data.from);
      chart.to = Date.parse(data.to);
      drawChart(chart);
    } catch (err) {
      if (err instanceof AuthError) needAuth();
    }
  }

  async function loadAllCharts() {
    const charts = [...state.charts.values()];
    const workers = [0, 1, 2, 3].map(async () => {
      while (charts.length) await loadChart(charts.shift());
    });
    await Promise.all(workers);
  }

  function niceTicks(min, max, count) {
    if (min === max) {
      const pad = Math.abs(min) * 0.05 || 1;
      min -= pad;
      max += pad;
    }
    const raw = (max - min) / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw) || raw;
    const lo = Math.floor(min / step) * step;
    const hi = Math.ceil(max / step) * step;
    const ticks = [];
    for (let i = 0; lo + i * step <= hi + step / 2 && i < 50; i += 1) ticks.push(lo + i * step);
    return { lo, hi, step, ticks };
  }

  const SI = { "-3": "n", "-2": "µ", "-1": "m", 0: "", 1: "k", 2: "M", 3: "G", 4: "T", 5: "P" };
  // Units an SI prefix can go in front of ("GWh", "µmol/L"); with any other unit ("%",
  // "kWh", "°C") the prefix stays on the labels.
  const PREFIXABLE = new Set(["W", "Wh", "VA", "VAh", "var", "VAr", "varh", "Pa", "V", "A", "Ah", "Hz",
    "J", "g", "m", "s", "L", "l", "lx", "B", "bit", "mol", "mol/L", "Ω", "F", "N", "Bq", "Sv", "Gy"]);

  // Tick labels for any magnitude: grouped digits up to a million (101,300), SI prefixes
  // beyond and below a hundredth (12.345678G, 128µ), and always as many decimals as it
  // takes for neighbouring ticks to differ. The prefix goes on the unit when there is one
  // ("GWh", "µmol/L"), else on each label.
  function axisFormat(ticks, step, unit) {
    const top = Math.max(...ticks.map((v) => Math.abs(v)));
    let power = 0;
    if (top >= 1e6 || (top > 0 && top < 1e-2)) {
      power = Math.max(-3, Math.min(5, Math.floor(Math.log10(top) / 3)));
    }
    const scale = Math.pow(1000, power);
    const scaledStep = step / scale;
    let decimals = 0;
    while (decimals < 12) {
      const texts = ticks.map((v) => (v / scale).toFixed(decimals));
      const exact = ticks.every((v) => Math.abs(Number((v / scale).toFixed(decimals)) - v / scale) < scaledStep / 1000);
      if (exact && new Set(texts).size === texts.length) break;
      decimals += 1;
    }
    const prefix = SI[power];
    const prefixOnUnit = Boolean(prefix && unit && PREFIXABLE.has(unit));
    const suffix = prefix && !prefixOnUnit ? prefix : "";
    const label = (v) => {
      const n = v / scale;
      const text = n.toLocaleString(undefined, { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
      return (Object.is(n, -0) || Math.abs(n) < scaledStep / 1e6 ? text.replace(/^-/, "") : text) + suffix;
    };
    return { label, unit: unit ? (prefixOnUnit ? prefix + unit : unit) : "" };
  }

  function timeLabel(ms, spanMs) {
    const d = new Date(ms);
    if (spanMs > 2 * 86400e3) return d.toLocaleDateString(undefined, { month: "short", day: "numeric" });
    return d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  }

  function drawChart(chart) {
    const svg = chart.svg;
    svg.replaceChildren();
    const W = Math.max(Math.round(svg.getBoundingClientRect().width) || 320, 200);
    const H = 150, R = 8, B = 20;
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    const points = chart.buckets.filter((b) => b.avg !== null && b.avg !== undefined);
    if (!points.length) {
      svg.append(svgEl("text", { class: "nodata", x: W / 2, y: H / 2, "text-anchor": "middle" }));
      svg.lastChild.textContent = "no readings in this range";
      return;
    }
    const lows = points.map((b) => (b.min ?? b.avg));
    const highs = points.map((b) => (b.max ?? b.avg));
    const y = niceTicks(Math.min(...lows), Math.max(...highs), 4);
    const fmt = axisFormat(y.ticks, y.step, chart.series.unit);
    // Labels first, measured, so the plot starts where the widest one ends: no clipping
    // whatever the magnitude.
    const labels = y.ticks.map((v) => {
      const label = svgEl("text", { class: "axis y", x: 0, y: 0, "text-anchor": "end" });
      label.textContent = fmt.label(v);
      svg.append(label);
      return label;
    });
    const widest = Math.max(...labels.map((t) => t.getComputedTextLength()), 10);
    const L = Math.ceil(widest) + 9;
    const T = fmt.unit ? 18 : 8;
    if (fmt.unit) {
      const unit = svgEl("text", { class: "axis-unit", x: 2, y: 10, "text-anchor": "start" });
      unit.textContent = fmt.unit;
      svg.append(unit);
    }
    const x0 = chart.from, x1 = chart.to;
    const bucketMs = points.length > 1 ? points[1].start_ms - points[0].start_ms : 0;
    const px = (ms) => L + ((ms - x0) / (x1 - x0)) * (W - L - R);
    const py = (v) => T + (1 - (v - y.lo) / (y.hi - y.lo || 1)) * (H - T - B);
    const mid = (b) => b.start_ms + Math.max(bucketMs, 0) / 2;

    y.ticks.forEach((v, i) => {
      svg.insertBefore(svgEl("line", { class: "grid", x1: L, x2: W - R, y1: py(v), y2: py(v) }), svg.firstChild);
      labels[i].setAttribute("x", L - 5);
      labels[i].setAttribute("y", py(v) + 3);
    });
    const intervals = W - L < 300 ? 2 : 3; // time labels that do not crowd on a phone
    for (let i = 0; i <= intervals; i += 1) {
      const ms = x0 + ((x1 - x0) * i) / intervals;
      const label = svgEl("text", {
        class: "axis",
        x: px(ms),
        y: H - 5,
        "text-anchor": i === 0 ? "start" : i === intervals ? "end" : "middle",
      });
      label.textContent = timeLabel(ms, x1 - x0);
      svg.append(label);
    }
    const coords = points.map((b) => [px(mid(b)), py(b.avg)]);
    let band = "";
    points.forEach((b, i) => (band += (i ? "L" : "M") + coords[i][0].toFixed(1) + " " + py(b.max ?? b.avg).toFixed(1)));
    for (let i = points.length - 1; i >= 0; i -= 1) band += "L" + coords[i][0].toFixed(1) + " " + py(points[i].min ?? points[i].avg).toFixed(1);
    svg.append(svgEl("path", { class: "band", d: band + "Z" }));
    const line = coords.map((c, i) => (i ? "L" : "M") + c[0].toFixed(1) + " " + c[1].toFixed(1)).join("");
    svg.append(svgEl("path", { class: "line", d: line }));
    if (points.length === 1) svg.append(svgEl("circle", { class: "dot", cx: coords[0][0], cy: coords[0][1], r: 3 }));

    const cursor = svgEl("line", { class: "cursor", y1: T, y2: H - B, x1: 0, x2: 0, visibility: "hidden" });
    const dot = svgEl("circle", { class: "dot", r: 3, cx: 0, cy: 0, visibility: "hidden" });
    svg.append(cursor, dot);
    const tip = $("tooltip");
    svg.onmousemove = (event) => {
      const box = svg.getBoundingClientRect();
      const x = ((event.clientX - box.left) / box.width) * W;
      let best = 0;
      coords.forEach((c, i) => {
        if (Math.abs(c[0] - x) < Math.abs(coords[best][0] - x)) best = i;
      });
      const b = points[best];
      cursor.setAttribute("x1", coords[best][0]);
      cursor.setAttribute("x2", coords[best][0]);
      dot.setAttribute("cx", coords[best][0]);
      dot.setAttribute("cy", coords[best][1]);
      cursor.setAttribute("visibility", "visible");
      dot.setAttribute("visibility", "visible");
      const unit = chart.series.unit ? " " + chart.series.unit : "";
      tip.replaceChildren(
        el("div", "tip-name", (grouped() ? chart.series.gateway + " · " : "") + chart.series.sensor + " · " + chart.series.metric),
        el("div", "", new Date(b.start_ms).toLocaleString()),
        el("div", "", "avg " + fmtNumber(b.avg) + unit),
        el("div", "", "min " + fmtNumber(b.min) + unit + " · max " + fmtNumber(b.max) + unit),
        el("div", "", (b.count ?? "?") + (b.count === 1 ? " reading" : " readings")),
      );
      tip.hidden = false;
      // Beside the pointer, but always whole inside the window (phones included).
      const room = document.documentElement.clientWidth;
      const width = tip.offsetWidth, height = tip.offsetHeight;
      let left = event.clientX + 14;
      if (left + width > room - 4) left = Math.max(4, event.clientX - 14 - width);
      let top = event.clientY + 14;
      if (top + height > window.innerHeight - 4) top = Math.max(4, event.clientY - 14 - height);
      tip.style.left = left + "px";
      tip.style.top = top + "px";
    };
    svg.onmouseleave = () => {
      tip.hidden = true;
      cursor.setAttribute("visibility", "hidden");
      dot.setAttribute("visibility", "hidden");
    };
  }

  function scheduleCharts() {
    clearInterval(state.chartTimer);
    state.chartTimer = setInterval(loadAllCharts, RANGES[state.range].refresh);
  }

  // --- wiring ----------------------------------------------------------------------

  function start() {
    $("range").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-range]");
      if (!button) return;
      state.range = button.dataset.range;
      for (const b of $("range").querySelectorAll("button")) b.classList.toggle("active", b === button);
      loadAllCharts();
      scheduleCharts();
    });
    let filterTimer = null;
    $("filter").addEventListener("input", (event) => {
      state.filter = event.target.value.trim().toLowerCase();
      state.chartLimit = CHART_PAGE;
      renderFleet();
      syncCharts();
      // Then ask the server: the filter also finds sensors beyond the pages shown (in
      // the hub: across every gateway).
      clearTimeout(filterTimer);
      filterTimer = setTimeout(() => {
        state.fleetPages = 1;
        refreshSensors();
      }, 300);
    });
    $("more-sensors").addEventListener("click", () => {
      state.fleetPages += 1;
      refreshSensors();
    });
    $("more").addEventListener("click", () => {
      state.chartLimit += CHART_PAGE;
      syncCharts();
    });
    $("auth").addEventListener("submit", (event) => {
      event.preventDefault();
      localStorage.setItem(TOKEN_KEY, $("token").value.trim());
      state.authNeeded = false;
      $("auth").hidden = true;
      refreshAll();
    });
    fetch("/openapi.json")
      .then((r) => r.json())
      .then((doc) => ($("version").textContent = "tidegate " + doc.info.version))
      .catch(() => {});
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => state.charts.forEach((c) => c.buckets.length && drawChart(c)), 200);
    });
    refreshAll();
    setInterval(() => !state.authNeeded && refreshLive(), LIVE_MS);
    setInterval(async () => {
      if (state.authNeeded) return;
      await refreshGateways();
      refreshSensors();
    }, SENSORS_MS);
    setInterval(() => !state.authNeeded && refreshStats(), STATS_MS);
    scheduleCharts();
  }

  // The mode first (it decides what to load), then the gateways before the sensors (the
  // hub loads the sensors of the gateways it shows).
  async function refreshAll() {
    await refreshLive();
    refreshStats();
    await refreshGateways();
    refreshSensors();
  }

  start();
})();
