// Keeping a page live: polling the API, the banner of failing requests,
// and the header's word on the link: the bridge's own broker session as it
// really is (/api/bridge), not merely whether this page's requests work.

import { api } from "./api.js";
import { setAttr, setText } from "./dom.js";
import { fmtAge, fmtTime } from "./format.js";
import { session } from "./session.js";

export const POLL_MS = 1500;            // fleet and kiosk status, new events

// One message line per failing request, shown until the request works again.
export const problems = new Map();
let broker = null;                      // the last /api/bridge answer's broker, or null

export function problem(key, err) {
  if (err) problems.set(key, err.message || String(err));
  else problems.delete(key);
  const banner = document.getElementById("banner");
  const msgs = [...new Set(problems.values())];
  setText(banner, msgs.join("\n"));
  banner.hidden = msgs.length === 0;
  showLink();
}

/** The header: bridge unreachable, no broker session (since when, why), or live. */
function showLink() {
  const conn = document.getElementById("conn");
  const unreachable = [...problems.values()].some((m) => m.startsWith("the bridge does not answer"));
  let text, state;
  if (unreachable) {
    text = "Bridge unreachable: nothing shown is current";
    state = "down";
  } else if (broker && !broker.connected) {
    const why = broker.error ? ` (${broker.error}; ${broker.failed_attempts} failed attempts)` : "";
    text = `No broker session since ${fmtTime(broker.since)}${why}: kiosk states are as last known`;
    state = "down";
  } else if (broker) {
    text = `Live: broker connected ${fmtAge(Date.now() / 1000 - broker.since)}`;
    state = "up";
  } else {
    text = "Connecting…";
    state = "unknown";
  }
  setText(conn, text);
  setAttr(conn, "class", `conn ${state}`);
  setAttr(conn, "data-state", state);
}

/** The header's count of open alerts, red while any is not taken on. */
function showAlerts(a) {
  const count = document.getElementById("alerts-count");
  setText(count, a.open ? `${a.open}${a.unacknowledged ? ` (${a.unacknowledged} new)` : ""}` : "");
  setAttr(count, "class", a.unacknowledged ? "count hot" : "count");
  count.hidden = !a.open;
}

/** Whether the bridge holds a broker session (null: not known yet). */
export function brokerUp() {
  return broker ? broker.connected : null;
}

/** Keep the header's link state current, on every page. */
export function watchBridge() {
  return poller(async () => {
    if (!session()) return;          // the login page: nobody to ask for yet
    try {
      const b = await api("GET", "/api/bridge");
      broker = b.broker;
      showAlerts(b.alerts || {});
      problem("bridge", null);
    } catch (e) {
      if (e.status !== 0) broker = null;
      problem("bridge", e);
    }
  }, POLL_MS);
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
