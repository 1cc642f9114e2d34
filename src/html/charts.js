// kiln's report charts: drawn from the JSON embedded in the page, as inline SVG, no external
// scripts or fonts. Every chart has a title, a legend under it, axis labels and a tooltip
// (<title>) on every point.
"use strict";
const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 900;
function el(name, attrs, parent, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}
// Legend items left to right from x = left, wrapping at the chart's width; returns where each
// item goes and the height the legend takes.
function legendLayout(items, left) {
  const placed = [];
  let x = left, y = 0;
  for (const item of items) {
    const w = 26 + 7 * item.name.length;
    if (x + w > WIDTH - 10 && x > left) { x = left; y += 18; }
    placed.push({item, x, y});
    x += w + 12;
  }
  return {placed, height: items.length ? y + 18 : 0};
}
function frame(host, spec, height, legend, top) {
  const svg = el("svg", {width: WIDTH, height, viewBox: `0 0 ${WIDTH} ${height}`, role: "img",
    "aria-label": spec.title, "class": "chart", "data-chart": spec.id});
  el("title", {}, svg, spec.title);
  el("text", {x: WIDTH / 2, y: 18, "text-anchor": "middle", "class": "chart-title"}, svg, spec.title);
  const g = el("g", {"class": "legend"}, svg);
  for (const {item, x, y} of legend.placed) {
    const entry = el("g", {"class": "legend-item", transform: `translate(${x},${top + y})`}, g);
    el("rect", {width: 12, height: 12, fill: item.color}, entry);
    el("text", {x: 18, y: 11}, entry, item.name);
  }
  host.appendChild(svg);
  return svg;
}
function fmt(v, unit) {
  if (unit === "%") return `${Math.round(v * 100)}%`;
  if (unit === "B") {
    const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
    while (Math.abs(v) >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return `${v.toFixed(v < 10 && i > 0 ? 1 : 0)} ${u[i]}`;
  }
  return String(Math.round(v * 100) / 100);
}
// The x axis: a tick label every few columns (about 12 in all, and the last), rotated, and the
// axis label under them.
function xAxis(svg, spec, x, left, right, base) {
  const n = spec.xLabels.length;
  el("line", {x1: left, y1: base, x2: right, y2: base, "class": "axis"}, svg);
  const every = Math.max(1, Math.ceil(n / 12));
  spec.xLabels.forEach((label, i) => {
    if (i % every !== 0 && i !== n - 1) return;
    el("text", {x: x(i), y: base + 14, "text-anchor": "end", "class": "tick",
      transform: `rotate(-35 ${x(i)} ${base + 14})`}, svg, label);
  });
  el("text", {x: (left + right) / 2, y: base + 78, "text-anchor": "middle", "class": "axis-label"},
    svg, spec.xLabel);
}
// spec: {id, title, xLabel, yLabel, unit, xLabels: [..], series: [{name, color, values: [n|null]}]}
function lineChart(host, spec) {
  const L = 80, R = 20, PLOT = 220, B = 90;
  const legend = legendLayout(spec.series, L);
  const T = 30 + legend.height + 12;
  const H = T + PLOT + B;
  const svg = frame(host, spec, H, legend, 30);
  const n = spec.xLabels.length;
  let max = spec.unit === "%" ? 1 : 0;
  for (const s of spec.series) for (const v of s.values) if (v !== null && v > max) max = v;
  if (max === 0) max = 1;
  const x = i => L + (n <= 1 ? (WIDTH - L - R) / 2 : i * (WIDTH - L - R) / (n - 1));
  const y = v => T + PLOT * (1 - v / max);
  el("line", {x1: L, y1: T, x2: L, y2: T + PLOT, "class": "axis"}, svg);
  for (let k = 0; k <= 4; k++) {
    const v = max * k / 4;
    el("line", {x1: L - 4, y1: y(v), x2: WIDTH - R, y2: y(v), "class": "grid"}, svg);
    el("text", {x: L - 8, y: y(v) + 4, "text-anchor": "end", "class": "tick"}, svg, fmt(v, spec.unit));
  }
  xAxis(svg, spec, x, L, WIDTH - R, T + PLOT);
  el("text", {x: 16, y: T + PLOT / 2, "text-anchor": "middle", "class": "axis-label",
    transform: `rotate(-90 16 ${T + PLOT / 2})`}, svg, spec.yLabel);
  for (const s of spec.series) {
    const pts = [];
    s.values.forEach((v, i) => { if (v !== null) pts.push([x(i), y(v), i, v]); });
    el("polyline", {points: pts.map(p => `${p[0].toFixed(1)},${p[1].toFixed(1)}`).join(" "),
      fill: "none", stroke: s.color, "stroke-width": 2, "class": "series", "data-series": s.name}, svg);
    const r = n > 200 ? 1.5 : 3;
    for (const p of pts) {
      const c = el("circle", {cx: p[0].toFixed(1), cy: p[1].toFixed(1), r, fill: s.color,
        "class": "point", "data-series": s.name}, svg);
      el("title", {}, c, `${s.name}, ${spec.xLabels[p[2]]}: ${fmt(p[3], spec.unit)}`);
    }
  }
}
// spec: {id, title, xLabel, rows: [names], xLabels: [..], kinds: [{kind, name, color}],
//        cells: [[row, col, kind, tip]]}
function dotChart(host, spec) {
  const rowH = 26, L = 300, R = 20, B = 90;
  const legend = legendLayout(spec.kinds, L);
  const T = 30 + legend.height + 8;
  const H = T + rowH * Math.max(1, spec.rows.length) + B;
  const svg = frame(host, spec, H, legend, 30);
  const n = spec.xLabels.length;
  const x = i => L + (n <= 1 ? (WIDTH - L - R) / 2 : i * (WIDTH - L - R) / (n - 1));
  const y = r => T + rowH * r + rowH / 2;
  spec.rows.forEach((name, r) => {
    el("line", {x1: L, y1: y(r), x2: WIDTH - R, y2: y(r), "class": "grid"}, svg);
    const label = el("text", {x: L - 8, y: y(r) + 4, "text-anchor": "end", "class": "tick"}, svg,
      name.length > 46 ? name.slice(0, 45) + "…" : name);
    el("title", {}, label, name);
  });
  xAxis(svg, spec, x, L, WIDTH - R, T + rowH * Math.max(1, spec.rows.length));
  const colors = Object.fromEntries(spec.kinds.map(k => [k.kind, k.color]));
  const r = Math.max(1.5, Math.min(6, (WIDTH - L - R) / Math.max(1, n) / 2.5));
  for (const [row, col, kind, tip] of spec.cells) {
    const c = el("circle", {cx: x(col).toFixed(1), cy: y(row), r, fill: colors[kind] || "#888",
      "class": "point outcome", "data-kind": kind}, svg);
    el("title", {}, c, tip);
  }
}
for (const node of document.querySelectorAll("[data-chart-spec]")) {
  const spec = JSON.parse(document.getElementById(node.getAttribute("data-chart-spec")).textContent);
  (spec.type === "dots" ? dotChart : lineChart)(node, spec);
}
