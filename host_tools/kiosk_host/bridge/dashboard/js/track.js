// Following one command on a page, from the request to its end: its state,
// what the person at the kiosk should do at each step (the live door
// prompt), and, if it did not succeed, what happened and what to do next
// with the code kept for support (the API's `explanation`, from the
// bridge's one table of refusals).

import { TERMINAL, api, watchCommand } from "./api.js";
import { setAttr, setText } from "./dom.js";
import { explainText, words } from "./format.js";

// What the person at the kiosk does (or waits for) at each step an
// operation reports (kiosk/core/operations.py, selftest.py).
const PROMPTS = {
  pickup: {
    homing: "Homing the carousel first…",
    moving: "Bringing bin {bin} to the pickup door…",
    unlocking: "Unlocking the pickup door…",
    waiting_open: "Pickup door unlocked: the patient opens it, takes the bag from bin {bin} and closes it.",
    waiting_close: "Pickup door open: waiting for it to be closed.",
    verifying: "Pickup door closed: checking that the bolt engages…",
  },
  restock: {
    homing: "Homing the carousel first…",
    moving: "Bringing bin {bin} to the service door…",
    scanning_label: "Scan the label of the package for {order} at the kiosk's scanner: the service door opens only for the right package.",
    unlocking: "Unlocking the service door…",
    waiting_open: "Service door unlocked: open it, place the package for {order} in bin {bin}, close it.",
    waiting_close: "Service door open: place the package in bin {bin}, then close the door.",
    verifying: "Service door closed: checking that the bolt engages…",
  },
  retrieve: {
    homing: "Homing the carousel first…",
    moving: "Bringing bin {bin} to the service door…",
    unlocking: "Unlocking the service door…",
    waiting_open: "Service door unlocked: open it, take the package for {order} out of bin {bin}, close it.",
    waiting_close: "Service door open: take the package out of bin {bin}, then close the door.",
    verifying: "Service door closed: checking that the bolt engages…",
  },
  unlock: {
    unlocking: "Unlocking the {door} door…",
    waiting_open: "{door} door unlocked: open it; close it when done.",
    waiting_close: "{door} door open: close it when done.",
    verifying: "{door} door closed: checking that the bolt engages…",
  },
  home: { homing: "Homing the carousel…" },
  jog: { moving: "Turning the carousel {bins} bins…" },
  selftest: {
    sensors: "Self-test: reading every sensor…",
    locks: "Self-test: pulsing each lock; keep the doors shut…",
    carousels: "Self-test: homing the carousel and stepping one bin out and back…",
  },
};

function fill(text, args) {
  return text.replace(/\{(\w+)\}/g, (_, k) => (args && args[k] !== undefined ? String(args[k]) : "?"));
}

/** The prompt for a command's current step, or "". */
export function prompt(op, step, args) {
  const p = (PROMPTS[op] || {})[step];
  return p ? fill(p, args) : "";
}

/** Send a request that becomes a command and follow it in `out` (a status
 * element). label names it for people ("Restock of rx-1 into bin 3");
 * done(command) runs once it ends. Returns a handle with stop(). */
export function track(out, label, method, path, body, op, args, done) {
  let watch = null, stopped = false;
  const show = (state, text, cls) => {
    setAttr(out, "data-state", state);
    setAttr(out, "class", `status ${cls || `state ${state}`}`);
    setText(out, text);
  };
  show("sending", `${label}: sending…`, "status");
  (async () => {
    let r;
    try {
      r = await api(method, path, body);
    } catch (e) {
      // Refused by the bridge itself: its detail already says why (and what to do).
      show("error", `${label} refused: ${e.message}`, "error");
      if (done) done(null, e);
      return;
    }
    if (stopped) return;
    // A bin the bridge chose (a restock of a known order) is known now.
    if (args && args.bin === undefined && r.bin !== undefined) {
      args.bin = r.bin;
      label = `${label} into bin ${r.bin}`;
    }
    setAttr(out, "data-command", r.command_id);
    show(r.state || "queued", `${label}: queued`);
    watch = watchCommand(r.command_id, (c) => {
      const step = c.info && c.info.step;
      setAttr(out, "data-step", step || "");
      let text = `${label}: ${words(c.state)}`;
      if (c.state === "in_progress") text = `${label}: ${prompt(op, step, args) || "in progress…"}`;
      else if (c.explanation) text += `. ${explainText(c.explanation)}`;
      show(c.state, text);
      if (TERMINAL.has(c.state) && done) done(c, null);
    }, (e) => {
      show("error", `${label}: cannot follow command ${r.command_id}: ${e.message}`, "error");
      if (done) done(null, e);
    });
  })();
  return { stop() { stopped = true; if (watch) watch.stop(); } };
}
