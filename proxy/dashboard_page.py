"""The dashboard page served at ``GET /`` on the control port: one self-contained
HTML document (no CDN, no external asset) that polls ``/api/dashboard``."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>sidecache</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
h1{font-size:1.4em;margin:0 0 .6em}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:10px}
.tile{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px}
.tile .label{font-size:.8em;color:#666}.tile .value{font-size:1.5em;font-weight:600}
.bar{height:8px;background:#eee;border-radius:4px;margin-top:6px}
.bar div{height:8px;background:#2b7;border-radius:4px}
table{border-collapse:collapse;margin-top:1em;background:#fff}
td,th{border:1px solid #ddd;padding:4px 10px;text-align:right}th{background:#f0f0f0}
td:first-child,th:first-child{text-align:left}
#chart{background:#fff;border:1px solid #ddd;border-radius:6px;margin-top:1em}
.legend span{margin-right:1em;font-size:.85em}
form{margin-top:1em;font-size:.9em}#status{color:#a00;font-size:.85em}
</style></head><body>
<h1>sidecache <span id="uptime" style="font-size:.6em;color:#666"></span></h1>
<div class="tiles">
 <div class="tile"><div class="label">hit rate</div><div class="value" id="hit-rate">-</div></div>
 <div class="tile"><div class="label">hits</div><div class="value" id="hits">-</div></div>
 <div class="tile"><div class="label">misses</div><div class="value" id="misses">-</div></div>
 <div class="tile"><div class="label">stale / bypass</div>
  <div class="value"><span id="stale">-</span> / <span id="bypass">-</span></div></div>
 <div class="tile"><div class="label">cache (<span id="policy">-</span>): <span id="entries">-</span> entries</div>
  <div class="value" id="bytes">-</div><div class="bar"><div id="budget-bar" style="width:0"></div></div>
  <div class="label">of <span id="max-bytes">-</span></div></div>
 <div class="tile"><div class="label">upstream in flight / queued</div>
  <div class="value"><span id="in-flight">-</span> / <span id="queued">-</span></div></div>
 <div class="tile"><div class="label">upstream requests / errors</div>
  <div class="value"><span id="upstream-requests">-</span> / <span id="upstream-errors">-</span></div></div>
 <div class="tile"><div class="label">latency p50 / p95 / p99 (5 min)</div>
  <div class="value" id="latency">-</div></div>
 <div class="tile"><div class="label">memory (resident)</div><div class="value" id="rss">-</div>
  <div class="label" id="memory-limit">-</div></div>
</div>
<svg id="chart" width="760" height="220" viewBox="0 0 760 220"></svg>
<div class="legend"><span style="color:#2b7">&#9632; HIT/s</span><span style="color:#e63">&#9632; MISS/s</span>
<span style="color:#c90">&#9632; STALE/s</span><span style="color:#68c">&#9632; BYPASS/s</span></div>
<table id="routes"><thead><tr><th>route</th><th>requests</th><th>hit rate</th><th>hits</th>
<th>misses</th><th>stale</th><th>bypass</th></tr></thead><tbody></tbody></table>
<div id="shadow" hidden><h2 style="font-size:1.1em;margin:1.2em 0 0">shadow routes: what caching
would have done <span class="label" id="shadow-index" style="font-size:.8em;color:#666"></span></h2>
<table><thead><tr><th>route</th><th>would-be hit rate</th><th>hits</th><th>misses</th><th>stale</th>
<th>requests saved</th><th>bytes saved</th><th>stored</th><th>not stored (why)</th></tr></thead>
<tbody></tbody></table></div>
<form id="purge">Purge path <input id="purge-path" placeholder="/api/photo/12" size="24">
<button>purge</button> &nbsp; control token <input id="token" type="password" size="16">
<span id="status"></span></form>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const fmt = (n) => n.toLocaleString("en-US");
const mib = (n) => n < 1048576 ? (n / 1024).toFixed(1) + " KiB" : (n / 1048576).toFixed(1) + " MiB";
$("token").value = localStorage.getItem("sidecache-token") || "";
$("token").addEventListener("change", () => localStorage.setItem("sidecache-token", $("token").value));
function headers() {
  const t = $("token").value;
  return t ? {"Authorization": "Bearer " + t} : {};
}
function set(id, text, value) { const e = $(id); e.textContent = text; e.dataset.value = value; }
function chart(series) {
  const svg = $("chart"), w = 760, h = 220, pad = 30;
  const keys = [["hit", "#2b7"], ["miss", "#e63"], ["stale", "#c90"], ["bypass", "#68c"]];
  const peak = Math.max(1, ...series.map((p) => Math.max(p.hit, p.miss, p.stale, p.bypass)));
  const x = (i) => pad + i * (w - pad - 10) / Math.max(1, series.length - 1);
  const y = (v) => h - pad - v * (h - 2 * pad) / peak;
  let out = `<text x="${pad}" y="16" font-size="12">requests/s by cache status, last ${series.length} s</text>`;
  out += `<text x="4" y="${pad + 4}" font-size="11">${peak.toFixed(0)}</text>`;
  out += `<line x1="${pad}" y1="${h - pad}" x2="${w - 10}" y2="${h - pad}" stroke="#999"/>`;
  for (const [k, colour] of keys) {
    const pts = series.map((p, i) => `${x(i).toFixed(1)},${y(p[k]).toFixed(1)}`).join(" ");
    out += `<polyline fill="none" stroke="${colour}" stroke-width="2" points="${pts}"/>`;
  }
  svg.innerHTML = out;
}
async function refresh() {
  try {
    const r = await fetch("/api/dashboard", {headers: headers(), cache: "no-store"});
    if (!r.ok) { $("status").textContent = "dashboard: " + r.status; return; }
    const d = await r.json(), c = d.stats.cache, u = d.stats.upstream;
    set("hit-rate", (c.hit_rate * 100).toFixed(1) + " %", c.hit_rate);
    set("hits", fmt(c.hits), c.hits); set("misses", fmt(c.misses), c.misses);
    set("stale", fmt(c.stale), c.stale); set("bypass", fmt(c.bypass), c.bypass);
    set("entries", fmt(c.entries), c.entries); set("bytes", mib(c.bytes), c.bytes);
    set("max-bytes", mib(c.max_bytes), c.max_bytes);
    $("policy").textContent = c.policy || "-";
    const m = d.stats.memory;  // rss null where the platform does not tell
    if (m && m.rss_bytes !== null) {
      set("rss", mib(m.rss_bytes), m.rss_bytes);
      $("memory-limit").textContent = m.limit_bytes === null ? "no container limit" :
        `of a ${mib(m.limit_bytes)} limit: ${mib(m.headroom_bytes)} left`;
    }
    $("budget-bar").style.width = (100 * c.bytes / c.max_bytes).toFixed(1) + "%";
    set("in-flight", fmt(u.in_flight), u.in_flight); set("queued", fmt(u.queued), u.queued);
    set("upstream-requests", fmt(u.requests), u.requests);
    set("upstream-errors", fmt(u.errors), u.errors);
    const l = d.latency, ms = (v) => v === null ? "-" : v.toFixed(1);
    $("latency").textContent = `${ms(l.p50)} / ${ms(l.p95)} / ${ms(l.p99)} ms`;
    $("uptime").textContent = "up " + Math.round(d.stats.uptime_s) + " s";
    chart(d.series);
    $("routes").tBodies[0].innerHTML = d.routes.map((r) =>
      `<tr data-route="${r.route}"><td>${r.route}</td><td>${fmt(r.requests)}</td>` +
      `<td>${r.hit_rate === null ? "-" : (r.hit_rate * 100).toFixed(1) + " %"}</td>` +
      `<td>${fmt(r.hits)}</td><td>${fmt(r.misses)}</td><td>${fmt(r.stale)}</td>` +
      `<td>${fmt(r.bypass)}</td></tr>`).join("");
    const sh = d.stats.shadow || {}, shadowRoutes = Object.entries(sh.routes || {});
    $("shadow").hidden = shadowRoutes.length === 0 || !sh.index;
    if (sh.index) $("shadow-index").textContent = `(index: ${fmt(sh.index.entries)} entries, ` +
      `${mib(sh.index.bytes)} of ${mib(sh.index.max_bytes)}; its own memory ` +
      `${mib(sh.index.overhead_bytes)} of ${mib(sh.index.max_overhead_bytes)})`;
    $("shadow").querySelector("tbody").innerHTML = shadowRoutes.map(([name, s]) =>
      `<tr data-shadow-route="${name}"><td>${name}</td>` +
      `<td data-value="${s.hit_rate}">${(s.hit_rate * 100).toFixed(1)} %</td>` +
      `<td>${fmt(s.hits)}</td><td>${fmt(s.misses)}</td><td>${fmt(s.stale)}</td>` +
      `<td>${fmt(s.saved_requests)}</td><td>${mib(s.saved_bytes)}</td><td>${fmt(s.stored)}</td>` +
      `<td>${Object.entries(s.not_stored).map(([k, v]) => `${k} ${fmt(v)}`).join(", ") || "-"}` +
      `</td></tr>`).join("");
    document.body.dataset.updated = String(Date.now());
  } catch (e) { $("status").textContent = "cannot reach sidecache"; }
}
$("purge").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const r = await fetch("/purge", {method: "POST",
    headers: {...headers(), "Content-Type": "application/json"},
    body: JSON.stringify({path: $("purge-path").value})});
  const body = await r.json();
  $("status").textContent = r.ok ? `purged ${body.purged}` : (body.error || r.status);
  refresh();
});
refresh();
setInterval(refresh, 1000);
</script></body></html>
"""
