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

function live(url, render) {
  const status = document.getElementById("live-status");
  const source = new EventSource(url);
  source.addEventListener("update", (ev) => {
    render(JSON.parse(ev.data));
    if (status) status.textContent = `live · updated ${new Date().toLocaleTimeString()}`;
  });
  source.onerror = () => { if (status) status.textContent = "live: reconnecting…"; };
  window.addEventListener("beforeunload", () => source.close());
}

// --- charts -----------------------------------------------------------------------------------------

function clear(svg) { while (svg.firstChild) svg.removeChild(svg.firstChild); }

const PALETTE = ["#2f9e62", "#d69e2e", "#c53030", "#2457c5", "#805ad5", "#718096"];
function colorOf(k, j) { const i = LABEL_ORDER.indexOf(k); return i >= 0 ? PALETTE[i] : PALETTE[(j + 3) % PALETTE.length]; }

// A time axis under the plot (x from t0 to t1 over W px): a tick and a clock label every "step" seconds.
function timeAxis(svg, t0, t1, W, H) {
  svg.appendChild(el("svg:line", { x1: 0, y1: H, x2: W, y2: H, class: "axis-line", stroke: "#8a94a6" }));
  const span = Math.max(t1 - t0, 1);
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
  const step = steps.find((s) => span / s <= 5) || 3600;
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
    const x = ((t - t0) / span) * W;
    svg.appendChild(el("svg:line", { x1: x.toFixed(1), y1: H, x2: x.toFixed(1), y2: H + 4, stroke: "#8a94a6" }));
    const anchor = x < 30 ? "start" : x > W - 30 ? "end" : "middle";
    svg.appendChild(el("svg:text", { x: x.toFixed(1), y: H + 15, class: "axis tick", "text-anchor": anchor }, clock(t)));
  }
  svg.appendChild(el("svg:text", { x: W - 2, y: 12, class: "axis", "text-anchor": "end" }, "time →"));
}

function stackedBars(svg, rows, keys, size) {
  clear(svg);
  const W = 600, H = 195, n = Math.max(rows.length, 1);
  const totals = rows.map((r) => keys.reduce((s, k) => s + (r.values[k] || 0), 0));
  const max = Math.max(1, ...totals);
  const bw = W / n;
  rows.forEach((r, i) => {
    let y = H;
    keys.forEach((k, j) => {
      const v = r.values[k] || 0;
      if (!v) return;
      const h = (v / max) * (H - 14);
      y -= h;
      svg.appendChild(el("svg:rect", { x: (i * bw + 1).toFixed(1), y: y.toFixed(1), width: Math.max(bw - 2, 1).toFixed(1),
        height: h.toFixed(1), fill: colorOf(k, j) }));
    });
  });
  svg.appendChild(el("svg:text", { x: 4, y: 12, class: "axis" }, `max ${max} per ${size} s`));
  if (rows.length) timeAxis(svg, rows[0].t, rows[rows.length - 1].t + size, W, H);
}

function legend(box, keys) {
  if (!box) return;
  box.replaceChildren(...keys.map((k, j) => { const s = el("span"); const i = el("i"); i.setAttribute("class", `c${PALETTE.indexOf(colorOf(k, j))}`); s.append(i, k); return s; }));
}

// --- app boards: panels drawn by kind --------------------------------------------------------------

function cell(v, format) {
  if (v === null || v === undefined) return "–";
  if (format === "time") return clock(v);
  if (format === "percent") return `${(Number(v) * 100).toFixed(1)}%`;
  if (format === "ms") return `${fmt(v)} ms`;
  if (typeof v === "number" && !Number.isInteger(v)) return v.toFixed(3);
  return String(v);
}

const drawn = {};
const PANELS = {
  counters(body, p) {
    for (const c of p.counts) { const n = body.querySelector(`[data-count="${CSS.escape(c.label)}"]`); if (n) n.textContent = c.value; }
  },
  images(body, p, name) {
    const box = body.querySelector(".thumbs");
    const signature = p.items.map((i) => `${i.key}@${i.time}@${i.marked}@${i.caption}`).join("|");
    if (!box || drawn[name] === signature) return;  // unchanged
    drawn[name] = signature;
    // Keep the images already loaded of keys still shown; rebuild caption and marker (they depend on the others).
    const imgs = new Map([...box.querySelectorAll("figure")].map((f) => [f.dataset.key, f.querySelector("img")]));
    box.replaceChildren(...p.items.map((item) => {
      const fig = el("figure", { "data-key": item.key });
      if (item.marked) fig.setAttribute("class", "marked");
      const img = imgs.get(item.key) || el("img", { src: item.thumbnail });
      img.setAttribute("alt", item.caption);
      const a = el("a", { href: item.url }); a.append(img); fig.append(a);
      if (item.marked) fig.append(el("span", { class: "marker", "data-testid": "marker" }, item.marker));
      fig.append(el("figcaption", { title: item.key }, item.caption));
      return fig;
    }));
  },
  table(body, p) {
    const tbody = body.querySelector("tbody");
    if (!tbody) return;
    tbody.replaceChildren(...p.rows.map((r) => {
      const tr = el("tr", { "data-id": r.id });
      for (const c of p.columns) tr.append(el("td", {}, cell(r.cells[c.field], c.format)));
      const td = el("td");
      if (r.link) {
        const a = el("a", { class: "object-link", href: r.link.url });
        a.append(el("img", { class: "row-thumb", src: r.link.thumbnail, alt: r.link.key })); td.append(a);
      } else td.append("–");
      tr.append(td);
      return tr;
    }));
  },
  timeseries(body, p) {
    const keys = [...LABEL_ORDER.filter((k) => p.series.includes(k)), ...p.series.filter((k) => !LABEL_ORDER.includes(k))];
    stackedBars(body.querySelector("svg"), p.points.map((r) => ({ t: r.t, values: r.split })), keys, p.bucket_s);
    legend(body.querySelector(".legend"), keys);
    const tbody = body.querySelector("table.totals tbody");
    if (tbody) tbody.replaceChildren(...Object.entries(p.totals).sort().map(([v, c]) => {
      const tr = el("tr"); tr.append(el("td", {}, v), el("td", {}, String(c))); return tr;
    }));
  },
  flow(body, p) { renderGraph(p, body.querySelector(".graph")); },
  dead_letters(body, p) {
    const ul = body.querySelector("ul");
    if (ul) ul.replaceChildren(...p.items.map((d) => {
      const li = el("li");
      if (d.error_type) li.append(el("strong", {}, `${d.error_type} `));
      li.append(`${d.error_message || ""} · ${d.function || ""} · ${clock(d.time)}`);
      return li;
    }));
  },
};

function renderBoard(b) {
  // Only the panels this role may see are sent (b.panels); the page holds only those, too.
  for (const name of b.panels || []) {
    const section = document.querySelector(`[data-panel="${CSS.escape(name)}"]`);
    if (!section) { window.location.reload(); return; }  // a panel appeared (the app's board changed)
    const p = b[name], draw = PANELS[p.kind];
    if (draw) draw(section.querySelector(".panel-body"), p, name);
  }
}

// --- overview graph --------------------------------------------------------------------------------

function renderGraph(g, box = document.getElementById("graph")) {
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
  if (view === "app") {
    const app = document.getElementById("board").dataset.app;
    if (data) renderBoard(data);
    live(`/api/apps/${encodeURIComponent(app)}/stream`, renderBoard);
  } else if (view === "overview") {
    if (data) renderGraph(data);
    live("/api/stream/overview", (g) => renderGraph(g));
  }
});
