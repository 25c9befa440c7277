// Keeping a page live: polling the API, and the banner that says which
// requests fail.

import { setAttr, setText } from "./dom.js";

export const POLL_MS = 1500;            // fleet and kiosk status, new events

// One message line per failing request, shown until the request works again.
export const problems = new Map();
export function problem(key, err) {
  if (err) problems.set(key, err.message || String(err));
  else problems.delete(key);
  const banner = document.getElementById("banner");
  const msgs = [...new Set(problems.values())];
  setText(banner, msgs.join("\n"));
  banner.hidden = msgs.length === 0;
  const conn = document.getElementById("conn");
  const down = [...problems.values()].some((m) => m.startsWith("the bridge does not answer"));
  setText(conn, down ? "bridge unreachable" : "live");
  setAttr(conn, "class", down ? "conn down" : "conn up");
}

/** Run fn now and then every ms after it finishes; poke() runs it again
 * soon (never two at once); stop() ends it. */
export function poller(fn, ms) {
  let stopped = false, timer = null, running = false, again = false;
  async function tick() {
    if (stopped) return;
    if (running) { again = true; return; }
    running = true;
    clearTimeout(timer);
    try { await fn(); } catch (e) { console.error(e); }
    running = false;
    if (stopped) return;
    if (again) { again = false; tick(); } else timer = setTimeout(tick, ms);
  }
  tick();
  return { stop() { stopped = true; clearTimeout(timer); }, poke: tick };
}
