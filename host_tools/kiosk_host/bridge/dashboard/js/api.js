// The bridge's JSON API (see /docs): calls, their errors, and following a
// command until it ends. Calls that change something carry the session's
// CSRF token; a 401 (the session ended) goes back to the login page.

import { csrfToken } from "./session.js";

const COMMAND_POLL_MS = 500;     // a command being watched until it ends
export const TERMINAL = new Set(["succeeded", "failed", "timed_out", "rejected", "cancelled"]);

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

/** Call the API; resolve to the JSON body, or throw ApiError with the
 * server's {"detail"} (or what went wrong on the way). */
export async function api(method, path, body) {
  const opts = { method, headers: { accept: "application/json" } };
  if (!["GET", "HEAD"].includes(method) && csrfToken()) opts.headers["x-csrf-token"] = csrfToken();
  if (body !== undefined) {
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, opts);
  } catch (e) {
    throw new ApiError(0, `the bridge does not answer (${e.message})`);
  }
  const text = await r.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (r.status === 401 && !location.pathname.startsWith("/login")) {
    location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
  }
  if (!r.ok) {
    let detail = `${r.status} ${r.statusText}`.trim();
    if (data && typeof data.detail === "string") detail = data.detail;
    else if (data && data.detail !== undefined) detail = JSON.stringify(data.detail);
    throw new ApiError(r.status, detail);
  }
  return data;
}

export function kioskPath(id) {
  return `/api/kiosks/${encodeURIComponent(id)}`;
}

/** Watch one command until it ends; onState(command) after each look. */
export function watchCommand(commandId, onState, onError) {
  let stopped = false;
  (async function loop() {
    while (!stopped) {
      try {
        const c = await api("GET", `/api/commands/${encodeURIComponent(commandId)}`);
        if (stopped) return;
        onState(c);
        if (TERMINAL.has(c.state)) return;
      } catch (e) {
        if (stopped) return;
        onError(e);
        if (e.status === 404) return;
      }
      await new Promise((r) => setTimeout(r, COMMAND_POLL_MS));
    }
  })();
  return { stop() { stopped = true; } };
}
