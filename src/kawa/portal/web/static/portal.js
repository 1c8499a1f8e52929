// Kawa portal: live views over server-sent events. No build step, no dependencies.
// Everything from the server is inserted with textContent / attributes, never as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const LABEL_ORDER = ["Normal", "Unsure", "Pneumonia"];

function el(tag, attrs = {}, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}
function setText(id, value) { const n = document.getElementById(id); if (n) n.textContent = value; }
function fmt(v, digits = 0) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits); }
function clock(t) { return t ? new Date(t * 1000).toLocaleTimeString() : "–"; }

function live(view, render) {
  const status = document.getElementById("live-status");
  const source = new EventSource(`/api/stream/${view}`);
  source.addEventListener("update", (ev) => {
    render(JSON.parse(ev.data));
    if (status) status.textContent = `live · updated ${new Date().toLocaleTimeString()}`;
  });
  source.onerror = () => { if (status) status.textContent = "live: reconnecting…"; };
  window.addEventListener("beforeunload", () => source.close());
}

// --- charts -----------------------------------------------------------------------------------------

function clear(svg) { while (svg.firstChild) svg.removeChild(svg.firstChild); }

function stackedBars(svg, rows, keys, colorOf) {
  clear(svg);
  const W = 600, H = 180, n = Math.max(rows.length, 1);
  const totals = rows.map((r) => keys.reduce((s, k) => s + (r.values[k] || 0), 0));
  const max = Math.max(1, ...totals);
  const bw = W / n;
  rows.forEach((r, i) => {
    let y = H;
    keys.forEach((k, j) => {
      const v = r.values[k] || 0;
      if (!v) return;
      const h = (v / max) * (H - 10);
      y -= h;
      svg.appendChild(el("svg:rect", { x: (i * bw + 1).toFixed(1), y: y.toFixed(1), width: Math.max(bw - 2, 1).toFixed(1),
        height: h.toFixed(1), fill: colorOf(k, j) }));
    });
  });
  svg.appendChild(el("svg:text", { x: 4, y: 12, class: "axis" }, `max ${max}/bucket`));
  if (rows.length) svg.appendChild(el("svg:text", { x: 4, y: 196, class: "axis" }, clock(rows[0].t)));
}

function lines(svg, series, colors) {
  clear(svg);
  const W = 600, H = 180;
  const all = series.flatMap((s) => s.points.map((p) => p[1])).filter((v) => v !== null && v !== undefined);
  const ts = series.flatMap((s) => s.points.map((p) => p[0]));
  if (!all.length || !ts.length) { svg.appendChild(el("svg:text", { x: 8, y: 20, class: "axis" }, "no data yet")); return; }
  const max = Math.max(1, ...all) * 1.15, t0 = Math.min(...ts), t1 = Math.max(t0 + 1, ...ts);
  series.forEach((s, i) => {
    const pts = s.points.filter((p) => p[1] !== null && p[1] !== undefined)
      .map((p) => `${(((p[0] - t0) / (t1 - t0)) * W).toFixed(1)},${(H - (p[1] / max) * (H - 10)).toFixed(1)}`);
    if (pts.length) svg.appendChild(el("svg:polyline", { points: pts.join(" "), fill: "none", stroke: colors[i], "stroke-width": 2 }));
  });
  svg.appendChild(el("svg:text", { x: 4, y: 12, class: "axis" }, `max ${fmt(max / 1.15, max < 10 ? 1 : 0)}`));
  svg.appendChild(el("svg:text", { x: 4, y: 196, class: "axis" }, clock(t0)));
}

const PALETTE = ["#2f9e62", "#d69e2e", "#c53030", "#2457c5", "#805ad5", "#718096"];
function labelColor(k) { const i = LABEL_ORDER.indexOf(k); return i >= 0 ? PALETTE[i] : PALETTE[5]; }

function legend(id, keys, colorOf) {
  const box = document.getElementById(id);
  if (!box) return;
  box.replaceChildren(...keys.map((k, j) => { const s = el("span"); const i = el("i"); i.setAttribute("class", `c${PALETTE.indexOf(colorOf(k, j))}`); s.append(i, k); return s; }));
}

// --- X-ray board -----------------------------------------------------------------------------------

const shown = {};
function thumbs(panel, items) {
  const box = document.getElementById(`newest-${panel}`);
  if (!box) return;
  const signature = items.map((i) => `${i.key}@${i.time}`).join("|");
  if (shown[panel] === signature) return;  // unchanged
  shown[panel] = signature;
  // Keep the figures (and their loaded images) of keys still shown; create only the new ones.
  const existing = new Map([...box.querySelectorAll("figure")].map((f) => [f.dataset.key, f]));
  box.replaceChildren(...items.map((item) => {
    const kept = existing.get(item.key);
    if (kept) return kept;
    const fig = el("figure", { "data-key": item.key });
    fig.append(el("img", { src: item.thumbnail, alt: item.key }), el("figcaption", {}, item.key.slice(-28)));
    return fig;
  }));
}

function renderBoard(b) {
  if (!b.configured) return;
  // Only the panels this role may see are sent (b.panels); the page holds only those, too.
  const shown = new Set(b.panels || []);
  if (shown.has("counts")) {
    if (!document.getElementById("count-uploaded")) { window.location.reload(); return; }  // the app just started
    for (const k of ["uploaded", "processed", "anonymized", "dead_lettered"]) setText(`count-${k}`, b.counts[k]);
  }
  if (shown.has("function") && b.function) setText("replicas", b.function.replicas);
  if (shown.has("newest")) for (const panel of ["uploaded", "processed", "anonymized"]) thumbs(panel, b.newest[panel] || []);

  if (shown.has("trends")) {
    setText("latency", `${fmt(b.latency.p50_ms)} / ${fmt(b.latency.p99_ms)} ms`);
    const labels = [...new Set([...LABEL_ORDER, ...b.timeline.flatMap((r) => Object.keys(r.labels))])]
      .filter((k) => b.timeline.some((r) => r.labels[k]));
    stackedBars(document.getElementById("chart-risk"), b.timeline.map((r) => ({ t: r.t, values: r.labels })), labels, labelColor);
    legend("legend-risk", labels, labelColor);

    const versions = [...new Set(b.timeline.flatMap((r) => Object.keys(r.versions)))].sort();
    const vColor = (k, j) => PALETTE[(j + 3) % PALETTE.length];
    stackedBars(document.getElementById("chart-versions"), b.timeline.map((r) => ({ t: r.t, values: r.versions })), versions, vColor);
    legend("legend-versions", versions, vColor);
    const tbody = document.getElementById("by-version");
    if (tbody) tbody.replaceChildren(...Object.entries(b.by_version).sort().map(([v, c]) => {
      const tr = el("tr"); tr.append(el("td", {}, v), el("td", {}, String(c))); return tr;
    }));
    const lat = b.timeline.filter((r) => r.count);
    const e2e = lat.some((r) => r.e2e_p99_ms !== null);
    const p50 = e2e ? "e2e_p50_ms" : "latency_p50_ms", p99 = e2e ? "e2e_p99_ms" : "latency_p99_ms";
    lines(document.getElementById("chart-latency"), [
      { points: lat.map((r) => [r.t, r[p50]]) }, { points: lat.map((r) => [r.t, r[p99]]) },
    ], ["#2f9e62", "#c53030"]);
    setText("latency-kind", e2e ? "upload → result" : "inside the function (results carry no end-to-end time)");
  }
  if (shown.has("function")) {
    lines(document.getElementById("chart-replicas"), [{ points: b.replicas.map((p) => [p.t, p.replicas]) }], ["#2457c5"]);
  }

  const results = document.getElementById("results");
  if (shown.has("results") && results) results.replaceChildren(...b.results.map((r) => {
    const tr = el("tr");
    tr.append(el("td", {}, clock(r.time)), el("td", {}, r.label || "–"), el("td", {}, fmt(r.risk, 3)),
      el("td", {}, `${r.model || ""} v${r.version || "?"}`), el("td", {}, `${fmt(r.latency_ms)} ms`));
    return tr;
  }));
  const dl = document.getElementById("dead-letters");
  if (shown.has("dead_letters") && dl) dl.replaceChildren(...b.dead_letters.map((d) => {
    const li = el("li");
    if (d.error_type) li.append(el("strong", {}, `${d.error_type} `));
    li.append(`${d.error_message || ""} · ${d.function || ""} · ${clock(d.time)}`);
    return li;
  }));
}

// --- overview graph --------------------------------------------------------------------------------

function renderGraph(g) {
  const box = document.getElementById("graph");
  if (!box || !g.nodes) return;
  if (!g.nodes.length) { box.replaceChildren(el("p", { class: "muted" }, "Nothing yet: no buckets, topics or functions.")); return; }
  const width = Math.max(...g.nodes.map((n) => n.x)) + 220, height = Math.max(...g.nodes.map((n) => n.y)) + 70;
  const svg = el("svg:svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "platform graph" });
  const pos = Object.fromEntries(g.nodes.map((n) => [n.id, n]));
  for (const e of g.edges) {
    const a = pos[e.from], b = pos[e.to];
    if (!a || !b) continue;
    svg.appendChild(el("svg:line", { x1: a.x + 180, y1: a.y + 22, x2: b.x, y2: b.y + 22, stroke: "#8a94a6", "stroke-width": 1.5 }));
  }
  for (const n of g.nodes) {
    const grp = el("svg:g", { class: `node ${n.kind}`, "data-node": n.id });
    grp.append(el("svg:rect", { x: n.x, y: n.y, width: 180, height: 44, rx: 8 }),
      el("svg:text", { x: n.x + 8, y: n.y + 17, class: "kind" }, n.kind + (n.replicas !== undefined ? ` · ${n.replicas} replicas` : "")),
      el("svg:text", { x: n.x + 8, y: n.y + 35, class: "label" }, n.label.slice(0, 24)));
    if (n.rate !== null && n.rate !== undefined) grp.append(el("svg:text", { x: n.x + 172, y: n.y + 17, "text-anchor": "end", class: "rate" }, `${fmt(n.rate, 1)}/s`));
    svg.appendChild(grp);
  }
  box.replaceChildren(svg);
}

document.addEventListener("DOMContentLoaded", () => {
  const view = document.body.dataset.view;
  const initial = document.getElementById("initial");
  const data = initial ? JSON.parse(initial.textContent) : null;
  if (view === "board") {
    if (data && data.configured) renderBoard(data);
    live("board", renderBoard);
  } else if (view === "overview") {
    if (data) renderGraph(data);
    live("overview", renderGraph);
  }
});
