// A sensor's temperature chart (SVG) against the band and the limits.

import { h, s } from "./dom.js";
import { fmtC, fmtClock, fmtTime } from "./format.js";

export function chart(sensor, points, t, now) {
  const W = 480, H = 200, L = 40, R = 10, T = 10, B = 24;
  const band = t.band_c || [20, 25], limits = t.limits_c || [15, 30];
  const pts = points.filter((p) => p[0] >= t.since);
  // The period asked for, narrowed to where readings start (at least 10 minutes shown).
  const until = Math.max(now, ...pts.map((p) => p[0]));
  const since = pts.length ? Math.max(t.since, Math.min(pts[0][0] - 30, until - 600)) : t.since;
  const long = until - since > 20 * 3600;
  const vals = pts.map((p) => p[1]).filter((v) => typeof v === "number");
  const lo = Math.floor(Math.min(limits[0] - 2, ...vals.map((v) => v - 1))), hi = Math.ceil(Math.max(limits[1] + 2, ...vals.map((v) => v + 1)));
  const x = (ts) => L + ((ts - since) / (until - since)) * (W - L - R);
  const y = (c) => T + ((hi - c) / (hi - lo)) * (H - T - B);
  const latest = [...pts].reverse().find((p) => typeof p[1] === "number");
  const summary = vals.length
    ? `latest ${fmtC(latest[1])} at ${fmtTime(latest[0])}; min ${fmtC(Math.min(...vals))}, max ${fmtC(Math.max(...vals))}; ${vals.length} readings`
    : "no readings in this period";
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

  const ticks = [];
  const n = 4;
  for (let i = 0; i <= n; i++) {
    const ts = since + ((until - since) * i) / n;
    ticks.push(s("text", { x: x(ts), y: H - 8, "text-anchor": i === 0 ? "start" : i === n ? "end" : "middle", class: "tick", text: fmtClock(ts, long) }));
  }
  const levels = [...new Set([limits[0], band[0], band[1], limits[1]])];
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": titleId, class: "chart",
    "data-testid": `chart-${sensor}`, "data-sensor": sensor, "data-readings": vals.length },
  s("title", { id: titleId, text: `${sensor} temperature: ${summary}` }),
  s("rect", { x: L, y: T, width: W - L - R, height: H - T - B, class: "plot" }),
  s("rect", { x: L, y: y(band[1]), width: W - L - R, height: y(band[0]) - y(band[1]), class: "band", "data-testid": "band" }),
  limits.map((c) => s("line", { x1: L, x2: W - R, y1: y(c), y2: y(c), class: "limit", "data-testid": "limit", "data-c": c })),
  levels.map((c) => s("text", { x: L - 6, y: y(c) + 4, "text-anchor": "end", class: "tick", text: `${c}°` })),
  ticks,
  d ? s("path", { d, class: "line", "data-testid": "series" }) : null,
  dots.map((p) => s("circle", { cx: x(p[0]), cy: y(p[1]), r: 3, class: "dot" })),
  vals.length ? null : s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty", text: "no readings yet" }));
  return h("figure", { class: "chart-fig", "data-sensor": sensor },
    h("figcaption", {}, h("strong", { text: sensor }), ` — ${summary}`), svg);
}
