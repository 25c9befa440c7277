// What the pages write: times, ages, temperatures, states, doors and events
// as text. Every date is ISO 8601 (2026-12-05 14:03:07, local time; the
// zone is in the page's footer), never a locale's 12/5/2026.

const pad = (n) => String(n).padStart(2, "0");

/** A Unix time as an ISO 8601 date and time, local: 2026-12-05 14:03:07. */
export function fmtTime(t) {
  if (typeof t !== "number") return "—";
  const d = new Date(t * 1000);
  return `${fmtDay(t)} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
/** The date alone, ISO 8601: 2026-12-05. */
export function fmtDay(t) {
  const d = new Date(t * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}
/** A chart's tick: 14:05, or 12-05 14:05 when the axis spans days. */
export function fmtClock(t, withDay) {
  const d = new Date(t * 1000);
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return withDay ? `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hm}` : hm;
}
/** The browser's offset from UTC, as ISO 8601 writes it: +01:00. */
export function zoneText() {
  const m = -new Date().getTimezoneOffset();
  return `UTC${m < 0 ? "−" : "+"}${pad(Math.floor(Math.abs(m) / 60))}:${pad(Math.abs(m) % 60)}`;
}
/** How long ago, in words: "just now", "40 s ago", "12 min ago", "3 h ago", "2 d ago". */
export function fmtAge(s) {
  if (typeof s !== "number") return "time unknown";
  if (s < 5) return "just now";
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min ago`;
  if (s < 36 * 3600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}
export function fmtC(c) {
  return typeof c === "number" ? `${c.toFixed(1)}\u00a0°C` : "—";
}
export function words(x) {
  return String(x ?? "unknown").replace(/_/g, " ");
}

/** A reading with its age: "22.1 °C, 40 s ago". */
export function readingText(r) {
  if (!r || typeof r.c !== "number") return "no reading";
  return `${fmtC(r.c)}, ${fmtAge(r.age_s)}`;
}
/** The class a reading is shown with: out of the 20–25 °C band, or past the 15–30 °C limits. */
export function readingClass(r) {
  return r && r.range === "out_of_limits" ? "reading out-of-limits" : r && r.range === "out_of_band" ? "reading out-of-band" : "reading";
}

export function doorText(d) {
  const alarms = (d.alarms || []).length ? ` (${d.alarms.map(words).join(", ")})` : "";
  return `${words(d.door)}, bolt ${words(d.bolt)}${alarms}`;
}
export function pickupText(p) {
  if (!p) return "none yet";
  return `${p.order} from bin ${p.bin} at ${fmtTime(p.t)}${p.recovered ? " (recovered after a reset)" : ""}`;
}
export const SEVERITY_TEXT = { ok: "OK", attention: "Attention", offline: "Offline", alarm: "Alarm" };
export function stateText(k) {
  let t = k.online ? "online" : `offline: ${k.why_offline || "no reason given"}`;
  if (k.service) t += " · service session";
  return t;
}
/** What an offline kiosk's shown state is: its last word, and how old. */
export function lastKnownText(k) {
  if (k.online) return "";
  return k.seen ? `last known state, from ${fmtTime(k.seen)} (${fmtAge(k.seen_age_s)})` : "never heard from";
}
/** A command that did not succeed: what happened, what to do next, the code for support. */
export function explainText(x) {
  return x ? `${x.what} ${x.next} (code: ${x.code})` : "";
}

const DOOR_EVENTS = {
  door_opened: "opened", door_closed: "closed", door_forced: "forced open (alarm)",
  door_held_open: "held open too long (alarm)", bolt_engaged: "bolt engaged", bolt_released: "bolt released",
  bolt_not_engaged: "shut but the bolt is not engaged (alarm)", lock_cap_reached: "lock released by its time limit",
  unlock_expired: "unlock window ended",
};
const centi = (v) => (typeof v === "number" ? fmtC(v / 100) : "—");
const cmd = (b) => (b.id ? ` · command ${b.id}` : "");
const by = (b) => (b.by ? ` by ${b.by}` : "");

// One sentence per record kind (kiosk/contract.py's KINDS); the fields are
// those the firmware journals.
const KINDS = {
  boot: (b) => `Booted (${words(b.cause)}), firmware ${b.fw ?? "?"} on board ${b.board ?? "?"}`,
  op: (b) => {
    const what = b.order ? `${words(b.op)} of ${b.order} (bin ${b.bin})` : words(b.op);
    let t = `${what[0].toUpperCase()}${what.slice(1)} ${words(b.state)}`;
    if (b.reason) t += `: ${words(b.reason)}`;
    if (b.outcome) t += ` (after step ${words(b.step)}; medicine ${words(b.outcome)})`;
    return t + by(b) + cmd(b);
  },
  refused: (b) => `Refused ${b.op ? words(b.op) : "a message"}: ${words(b.why)}${b.detail ? ` (${b.detail})` : ""}${cmd(b)}`,
  pickup: (b) => `Order ${b.order} picked up from bin ${b.bin}${b.recovered ? " (recovered after a reset)" : ""}${by(b)}${cmd(b)}`,
  restock: (b) => `Order ${b.order} loaded into bin ${b.bin}${by(b)}${cmd(b)}`,
  retrieve: (b) => `Order ${b.order} taken back out of bin ${b.bin}${by(b)}${cmd(b)}`,
  scan: (b) => {
    switch (b.ev) {
      case "code": return `A code was scanned (hash ${b.h})`;
      case "label": return `Package label scanned for ${b.order}: ${b.match ? "matches" : "does NOT match"}${cmd(b)}`;
      case "refused": return `Scanned code refused: ${words(b.why)}${b.fails ? ` (${b.fails} wrong in a row)` : ""}`;
      case "no_answer": return `Scanned code not answered in time${b.fails ? ` (${b.fails} wrong in a row)` : ""}`;
      case "lockout": return `Scanner locked out for ${b.for_s} s after ${b.fails} wrong codes`;
      case "lockout_end": return `Scanner lockout ended (${b.ignored ?? 0} scans ignored meanwhile)`;
      default: return `Scanner: ${words(b.ev)}`;
    }
  },
  button: (b) => `Button ${words(b.name)} pressed`,
  stock: (b) => (b.ev === "unverified" ? `Bin ${b.bin} uncertain after a reset: to verify`
    : `Bin ${b.bin} verified ${b.present ? `holding ${b.order ?? "an order"}` : "empty"}${by(b)}`),
  door: (b) => `${words(b.door)} door ${DOOR_EVENTS[b.ev] || words(b.ev)}`,
  motor: (b) => `Carousel ${{ start: "moving", done: "arrived", stopped: "stopped" }[b.ev] || words(b.ev)}: ${b.what ?? "?"}${b.why ? ` (${words(b.why)})` : ""}`,
  fault: (b) => `Fault: ${words(b.code)}${b.detail ? ` (${b.detail})` : ""}`,
  sensor: (b) => (b.ev === "sensor_ok" ? `Sensor ${b.sensor} reads again` : `Sensor ${b.sensor} faulted: ${words(b.code)}`),
  temp: (b) => {
    switch (b.ev) {
      case "warning_start": return `${b.sensor} out of the 20–25 °C band: ${centi(b.value_centi)}`;
      case "warning_end": return `${b.sensor} back in band (was ${centi(b.min_centi)} to ${centi(b.max_centi)})`;
      case "excursion_start": return `Excursion ${b.id} started on ${b.sensor}: ${centi(b.max_centi)}`;
      case "excursion_end": return `Excursion ${b.id} ended on ${b.sensor}: ${centi(b.min_centi)} to ${centi(b.max_centi)}, bins ${(b.bins || []).join(", ") || "none"}`;
      case "excursion_cleared": return `Excursion ${b.id} cleared${by(b)}`;
      case "excursion_dropped": return `Excursion ${b.id} dropped from the kiosk's memory (too many kept)`;
      case "day": return `Day ${typeof b.day === "number" ? fmtDay(b.day * 86400) : "?"} on ${b.sensor}: min ${centi(b.min_centi)}, max ${centi(b.max_centi)}, mean ${centi(b.mean_centi)}, MKT ${centi(b.mkt_centi)}`;
      case "mkt_high_start": return `Mean kinetic temperature on ${b.sensor} above the limit: ${centi(b.mkt_centi)}`;
      case "mkt_high_end": return `Mean kinetic temperature on ${b.sensor} back under the limit: ${centi(b.mkt_centi)}`;
      default: return `Temperature: ${words(b.ev)}${b.sensor ? ` on ${b.sensor}` : ""}`;
    }
  },
  service: (b) => `Service session ${b.session ?? ""} ${words(b.state)}${by(b)}`,
  selftest: (b) => {
    const bad = [];
    for (const group of ["sensors", "locks", "carousels"]) {
      for (const [n, v] of Object.entries(b[group] || {})) if (v !== "ok") bad.push(`${n}: ${words(v)}`);
    }
    return b.passed ? "Self-test passed" : `Self-test failed: ${bad.join("; ") || "see the record"}`;
  },
  clock: (b) => `Clock set to the host's time (moved ${b.step_s ?? "?"} s)`,
  ota: (b) => {
    const v = `Firmware ${b.version ?? b.release ?? "?"}`;
    switch (b.ev) {
      case "staging": return `${v} offered: receiving it (running ${b.from ?? "?"})`;
      case "resumed": return `${v}: receiving it again after a restart`;
      case "refused": return `${v} refused: ${words(b.why)}${b.file ? ` (${b.file})` : ""}${b.detail ? `: ${b.detail}` : ""}`;
      case "current": return `${v} offered: already running it`;
      case "staged": return `${v} received and checked (${b.files ?? "?"} files): switching when the kiosk is idle`;
      case "switching": return `Restarting into ${v.toLowerCase()} on trial (from ${b.from ?? "?"})`;
      case "trial": return `${v} on trial: ${b.deadline_s ?? "?"} s to prove itself`;
      case "confirmed": return `${v} confirmed (was ${b.from ?? "?"})`;
      case "trial_failed": return `${v} not healthy in time: ${b.why}`;
      case "rolled_back": return `${v} rolled back (${b.why}); running ${b.running ?? "?"}`;
      case "aborted": return `${v} dropped (${words(b.why)})`;
      default: return `${v}: ${words(b.ev)}`;
    }
  },
  journal_overflow: (b) => `Records ${b.lost_from}–${b.lost_to} lost before the host acknowledged them (journal full)`,
};

/** One event's body as a sentence, the same way for every kind. */
export function describe(b) {
  const f = KINDS[b.k];
  if (f) return f(b);
  const skip = new Set(["k", "kiosk", "s", "sig", "v", "b", "t"]);
  const rest = Object.entries(b).filter(([k]) => !skip.has(k)).map(([k, v]) => `${words(k)} ${typeof v === "object" ? JSON.stringify(v) : v}`);
  return `${words(b.k)}: ${rest.join(", ") || "—"}`;
}

