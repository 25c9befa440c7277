// A sensor's temperature chart (SVG): the chosen window end to end on the
// time axis, the 20–25 °C band, the 15–30 °C limits, each excursion as a
// shaded span, readings out of the band marked, and the latest reading
// (the API's, the same the fleet and the status show) in the caption.

import { h, s } from "./dom.js";
import { fmtAge, fmtC, fmtClock, fmtTime } from "./format.js";

// Tick steps (seconds) to choose from: about five ticks across the window.
const STEPS = [60, 300, 600, 900, 1800, 3600, 2 * 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400];

export function chart(sensor, points, t) {
  const W = 480, H = 210, L = 40, R = 12, T = 10, B = 26;
  const band = t.band_c || [20, 25], limits = t.limits_c || [15, 30];
  // The window asked for, end to end: "last 6 h" is six hours wide.
  const pts = points.filter((p) => p[0] >= t.since);
  const since = t.since, until = Math.max(t.until, t.since + 60, ...pts.map((p) => p[0]));
  const vals = pts.map((p) => p[1]).filter((v) => typeof v === "number");
  const lo = Math.floor(Math.min(limits[0] - 2, ...vals.map((v) => v - 1)));
  const hi = Math.ceil(Math.max(limits[1] + 2, ...vals.map((v) => v + 1)));
  const x = (ts) => L + ((Math.min(Math.max(ts, since), until) - since) / (until - since)) * (W - L - R);
  const y = (c) => T + ((hi - c) / (hi - lo)) * (H - T - B);
  const latest = (t.latest || {})[sensor];
  const spans = (t.excursions || []).filter((e) => e.sensor === sensor && (e.end ?? until) >= since && e.start <= until);
  let summary = latest && typeof latest.c === "number"
    ? `latest ${fmtC(latest.c)} at ${fmtTime(latest.t)} (${fmtAge(latest.age_s)})` : "no reading yet";
  summary += vals.length ? `; in this period min ${fmtC(Math.min(...vals))}, max ${fmtC(Math.max(...vals))}, ${vals.length} readings`
    : "; no readings in this period";
  if (spans.length) summary += `; ${spans.length} excursion${spans.length === 1 ? "" : "s"}`;
  const titleId = `chart-title-${sensor}`;

  // The line, broken where a reading is missing; lone readings as dots.
  let d = "";
  const dots = [];
  let run = [];
  const flush = () => {
    if (run.length === 1) dots.push(run[0]);
    else if (run.length > 1) d += run.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
    run = [];
  };
  for (const p of pts) {
    if (typeof p[1] === "number") run.push(p); else flush();
  }
  flush();
  const outside = pts.filter((p) => typeof p[1] === "number" && (p[1] < band[0] || p[1] > band[1]));

  // Ticks on round times, about five across the window.
  const span = until - since;
  const step = STEPS.find((st) => span / st <= 6) || STEPS[STEPS.length - 1];
  const offset = new Date().getTimezoneOffset() * 60;       // round in local time
  const long = span > 20 * 3600;
  const ticks = [];
  for (let ts = Math.ceil((since - offset) / step) * step + offset; ts <= until; ts += step) {
    ticks.push(s("line", { x1: x(ts), x2: x(ts), y1: T, y2: H - B, class: "grid-line" }),
      s("text", { x: x(ts), y: H - 8, "text-anchor": "middle", class: "tick", text: fmtClock(ts, long) }));
  }
  const levels = [...new Set([limits[0], band[0], band[1], limits[1]])];
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": titleId, class: "chart",
    "data-testid": `chart-${sensor}`, "data-sensor": sensor, "data-readings": vals.length,
    "data-since": since, "data-until": until, "data-latest": latest && typeof latest.c === "number" ? latest.c : "" },
  s("title", { id: titleId, text: `${sensor} temperature: ${summary}` }),
  s("rect", { x: L, y: T, width: W - L - R, height: H - T - B, class: "plot" }),
  s("rect", { x: L, y: y(band[1]), width: W - L - R, height: y(band[0]) - y(band[1]), class: "band", "data-testid": "band" }),
  spans.map((e) => s("rect", { x: x(e.start), y: T, width: Math.max(2, x(e.end ?? until) - x(e.start)), height: H - T - B,
    class: `excursion ${e.state}`, "data-testid": "excursion-span", "data-excursion": e.id, "data-state": e.state },
  s("title", { text: `Excursion ${e.id}: ${fmtTime(e.start)} to ${e.end ? fmtTime(e.end) : "now (going on)"}, ${fmtC(e.min)} to ${fmtC(e.max)}` }))),
  limits.map((c) => s("line", { x1: L, x2: W - R, y1: y(c), y2: y(c), class: "limit", "data-testid": "limit", "data-c": c })),
  levels.map((c) => s("text", { x: L - 6, y: y(c) + 4, "text-anchor": "end", class: "tick", text: `${c}°` })),
  ticks,
  d ? s("path", { d, class: "line", "data-testid": "series" }) : null,
  dots.map((p) => s("circle", { cx: x(p[0]), cy: y(p[1]), r: 3, class: "dot" })),
  outside.map((p) => s("circle", { cx: x(p[0]), cy: y(p[1]), r: 3.5, class: "oob", "data-testid": "out-of-band" })),
  vals.length ? null : s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty", text: "no readings in this period" }));
  return h("figure", { class: "chart-fig", "data-sensor": sensor },
    h("figcaption", { "data-testid": `chart-caption-${sensor}` }, h("strong", { text: sensor }), ` — ${summary}`), svg);
}
