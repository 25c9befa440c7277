// What the pages write: times, temperatures, states, doors and events as text.

export function fmtTime(t) {
  if (typeof t !== "number") return "—";
  return new Date(t * 1000).toLocaleString([], { hour12: false });
}
export function fmtClock(t, withDay) {
  const opts = { hour12: false, hour: "2-digit", minute: "2-digit" };
  if (withDay) opts.weekday = "short";
  return new Date(t * 1000).toLocaleTimeString([], opts);
}
export function fmtC(c) {
  return typeof c === "number" ? `${c.toFixed(1)}\u00a0°C` : "—";
}
export function words(x) {
  return String(x ?? "unknown").replace(/_/g, " ");
}

export function doorLines(doors) {
  const names = Object.keys(doors || {}).sort();
  if (!names.length) return "—";
  return names.map((n) => {
    const d = doors[n];
    const alarms = (d.alarms || []).length ? ` (${d.alarms.map(words).join(", ")})` : "";
    return `${n}: ${words(d.door)}, bolt ${words(d.bolt)}${alarms}`;
  }).join("\n");
}
export function tempLines(temps) {
  const names = Object.keys(temps || {}).sort();
  if (!names.length) return "—";
  return names.map((n) => `${n}: ${fmtC(temps[n])}`).join("\n");
}
export function pickupText(p) {
  if (!p) return "none yet";
  return `${p.order} from bin ${p.bin} at ${fmtTime(p.t)}${p.recovered ? " (recovered after a reset)" : ""}`;
}
export function stateText(k) {
  let t = k.online ? "online" : `offline: ${k.why_offline || "no reason given"}`;
  if (k.service) t += " · service session";
  return t;
}

/** One event's body in a line. */
export function describe(b) {
  const skip = new Set(["k", "kiosk", "s", "sig", "v", "b", "t", "ev"]);
  const val = (k, v) => {
    if (k.endsWith("_centi") && typeof v === "number") return `${k.slice(0, -6)}=${(v / 100).toFixed(2)}`;
    if ((k === "start" || k === "end") && typeof v === "number" && v > 1e9) return `${k}=${fmtTime(v)}`;
    if (v !== null && typeof v === "object") return `${k}=${JSON.stringify(v)}`;
    return `${k}=${v}`;
  };
  switch (b.k) {
    case "door":
      return `${b.door} door: ${words(b.ev)}`;
    case "pickup":
      return `order ${b.order} picked up from bin ${b.bin}${b.recovered ? " (recovered after a reset)" : ""}` +
        (b.by ? ` · by ${b.by}` : "") + (b.id ? ` · command ${b.id}` : "");
    case "restock":
      return `order ${b.order} loaded into bin ${b.bin}` + (b.by ? ` · by ${b.by}` : "") +
        (b.id ? ` · command ${b.id}` : "");
    default: {
      const rest = Object.entries(b).filter(([k]) => !skip.has(k)).map(([k, v]) => val(k, v)).join(" ");
      return [b.ev ? words(b.ev) : null, rest].filter(Boolean).join(": ") || "—";
    }
  }
}
