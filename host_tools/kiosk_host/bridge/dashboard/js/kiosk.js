// One kiosk's page (/kiosk/{id}): what needs attention, status and doors,
// the pickup form, the technician's Service panel, temperature and
// excursions, commands, the event log and, in the demo, the Simulate panel.

import { api, kioskPath } from "./api.js";
import { chart } from "./chart.js";
import { h, setAttr, setText, syncRows } from "./dom.js";
import {
  SEVERITY_TEXT, describe, explainText, fmtAge, fmtC, fmtTime, lastKnownText, pickupText, readingClass, readingText,
  stateText, words,
} from "./format.js";
import { POLL_MS, brokerUp, poller, problem, problems } from "./live.js";
import { screenPairing } from "./screenpair.js";
import { servicePanel } from "./service.js";
import { may } from "./session.js";
import { setupSim } from "./sim.js";
import { track } from "./track.js";

const TEMP_POLL_MS = 10000;      // temperature history
// Events per page of the log; ?events_page=N on a kiosk page changes it.
const EVENTS_PAGE = Math.min(1000, Math.max(1, Number(new URLSearchParams(location.search).get("events_page")) || 50));
const MAX_SEQ = Number.MAX_SAFE_INTEGER;

export function kioskView(id) {
  document.title = `Kiosk ${id}`;
  const main = document.getElementById("main");
  const stops = [];
  const el = {};

  // Status and doors.
  el.state = h("span", { id: "kiosk-state", class: "badge", "data-testid": "kiosk-state" });
  el.severity = h("span", { id: "kiosk-severity", class: "sev", "data-testid": "kiosk-severity" });
  el.lastKnown = h("p", { id: "kiosk-last-known", class: "notice", "data-testid": "kiosk-last-known", hidden: true });
  el.facts = h("dl", { id: "kiosk-facts", class: "facts" });
  el.doors = h("tbody");
  el.problems = h("ul", { id: "kiosk-problems", class: "alarms", "data-testid": "kiosk-problems" });
  el.readings = h("ul", { id: "kiosk-readings", class: "plain-list", "data-testid": "kiosk-readings" });
  el.stock = h("p", { id: "kiosk-stock", "data-testid": "kiosk-stock" });
  el.lastPickup = h("p", { id: "kiosk-last-pickup", "data-testid": "kiosk-last-pickup" });

  // Pickup form.
  el.order = h("input", { id: "pickup-order", name: "order_id", required: true, maxlength: 64, autocomplete: "off",
    "data-testid": "pickup-order" });
  el.bin = h("input", { id: "pickup-bin", name: "bin", type: "number", required: true, min: 1, step: 1,
    inputmode: "numeric", "data-testid": "pickup-bin" });
  el.pickupButton = h("button", { id: "pickup-submit", type: "submit", "data-testid": "pickup-submit", text: "Request pickup" });
  el.pickupWhy = h("p", { id: "pickup-why", class: "muted small", "data-testid": "pickup-why" });
  el.pickupStatus = h("p", { id: "pickup-status", class: "status", role: "status", "aria-live": "polite",
    "data-testid": "pickup-status" });
  el.pickupForm = h("form", { id: "pickup-form", class: "stack-form", "data-testid": "pickup-form" },
    h("label", { for: "pickup-order", text: "Order id" }), el.order,
    h("label", { for: "pickup-bin", text: "Bin" }), el.bin,
    el.pickupButton);

  // Service (technician).
  el.service = h("section", { id: "service", class: "card", "aria-labelledby": "svc-h", "data-testid": "service" });

  // Temperature.
  el.hours = h("select", { id: "temp-hours", "data-testid": "temp-hours" },
    [0.25, 1, 6, 24, 72].map((n) => h("option", { value: n, text: n < 1 ? `last ${n * 60} min` : `last ${n} h`, selected: n === 6 })));
  el.charts = h("div", { id: "temp-charts", class: "charts", "data-testid": "temp-charts" });
  el.days = h("div", { id: "temp-days" });

  // Excursions.
  el.excursions = h("tbody");
  el.excursionNote = h("p", { id: "excursions-note", class: "muted" });
  el.excursionStatus = h("p", { id: "excursion-status", class: "status", role: "status", "aria-live": "polite",
    "data-testid": "excursion-status" });
  el.excursionReason = h("input", { id: "excursion-reason", maxlength: 500, autocomplete: "off",
    placeholder: "e.g. kept: MKT within limits", "data-testid": "excursion-reason" });

  // Commands.
  el.commands = h("tbody");
  el.commandsNote = h("p", { id: "commands-note", class: "muted" });

  // Events.
  el.events = h("tbody");
  el.older = h("button", { id: "events-older", type: "button", "data-testid": "events-older", text: "Load older events",
    hidden: true });
  el.eventsNote = h("p", { id: "events-note", class: "muted" });

  // Simulate (demo only).
  el.sim = h("section", { id: "sim", class: "card sim", "aria-labelledby": "sim-h", "data-testid": "sim", hidden: true });

  main.replaceChildren(
    h("p", { class: "crumbs" }, h("a", { href: "/", "data-route": true, text: "← Fleet" })),
    h("h1", { id: "kiosk-title" }, `Kiosk ${id} `, el.severity, el.state),
    el.lastKnown,
    el.body = h("div", { id: "kiosk-body", class: "layout", hidden: true },
      h("section", { id: "status", class: "card", "aria-labelledby": "status-h" },
        h("h2", { id: "status-h", text: "Status" }),
        h("h3", { text: "Needs attention" }), el.problems,
        el.facts,
        h("table", { id: "doors-table", class: "grid", "data-testid": "doors-table" },
          h("caption", { text: "Doors" }),
          h("thead", {}, h("tr", {}, ["Door", "Door state", "Bolt", "Alarms"].map((t) => h("th", { scope: "col", text: t })))),
          el.doors),
        h("h3", { text: "Temperature (latest reading)" }), el.readings,
        h("h3", { text: "Stock" }), el.stock,
        h("h3", { text: "Last pickup" }), el.lastPickup),
      // Each person sees the controls of their role (the API refuses anyone else anyway):
      // pickups for pharmacists, service work for technicians.
      may("pickup") ? h("section", { id: "pickup", class: "card", "aria-labelledby": "pickup-h" },
        h("h2", { id: "pickup-h", text: "Request pickup" }),
        el.pickupForm, el.pickupWhy, el.pickupStatus) : null,
      may("service") ? el.service : null,
      may("service") ? screenPairing(id) : null,
      el.sim,
      h("section", { id: "temperature", class: "card wide", "aria-labelledby": "temp-h" },
        h("h2", { id: "temp-h" }, "Temperature ", h("label", { class: "sr-only", for: "temp-hours", text: "Period" }), el.hours),
        h("p", { class: "muted small" },
          h("span", { class: "key band" }), " 20–25 °C controlled room temperature   ",
          h("span", { class: "key limit" }), " 15–30 °C allowed excursion limits   ",
          h("span", { class: "key excursion" }), " excursion   ",
          h("span", { class: "key oob" }), " reading out of the band"),
        el.charts, el.days),
      h("section", { id: "excursions", class: "card wide", "aria-labelledby": "exc-h" },
        h("h2", { id: "exc-h", text: "Excursions" }),
        h("p", { class: "muted small", text: "An excursion can be cleared once it has ended, by a pharmacist who has reviewed the bins it touched, with the decision and the reason." }),
        el.excursionNote,
        h("div", { class: "scroll" },
          h("table", { id: "excursions-table", class: "grid", "data-testid": "excursions-table", hidden: true },
            h("thead", {}, h("tr", {}, ["Id", "Sensor", "Start", "End", "Min", "Max", "Bins", "State", "Clear"].map((t) => h("th", { scope: "col", text: t })))),
            el.excursions)),
        el.excursionStatus),
      h("section", { id: "commands", class: "card wide", "aria-labelledby": "cmd-h" },
        h("h2", { id: "cmd-h", text: "Recent commands" }),
        h("div", { class: "scroll" },
          h("table", { id: "commands-table", class: "grid", "data-testid": "commands-table" },
            h("thead", {}, h("tr", {}, ["Sent", "Operation", "Arguments", "By", "State", "What happened", "Command id"].map((t) => h("th", { scope: "col", text: t })))),
            el.commands)),
        el.commandsNote),
      h("section", { id: "events", class: "card wide", "aria-labelledby": "ev-h" },
        h("h2", { id: "ev-h", text: "Event log" }),
        h("p", { class: "muted small", text: "The kiosk's own records, newest first; new ones appear as the kiosk sends them." }),
        h("div", { class: "scroll" },
          h("table", { id: "event-log", class: "grid", "data-testid": "event-log" },
            h("thead", {}, h("tr", {}, ["Seq", "Kiosk time", "Kind", "What"].map((t) => h("th", { scope: "col", text: t })))),
            el.events)),
        el.eventsNote, el.older),
    ),
  );

  let current = null;   // the last kiosk JSON
  let pickupTrack = null;
  let clearTrack = null;
  const service = servicePanel(id, el.service, { getKiosk: () => current, onChange: () => poll.poke() });
  stops.push(service);

  // ---- status, doors, commands
  function updateStatus(k) {
    current = k;
    setText(el.state, stateText(k));
    setAttr(el.state, "class", `badge ${k.online ? "ok" : "bad"}`);
    setAttr(el.state, "data-online", k.online ? "true" : "false");
    setText(el.severity, SEVERITY_TEXT[k.severity] || k.severity);
    setAttr(el.severity, "class", `sev ${k.severity}`);
    setAttr(el.severity, "data-severity", k.severity);
    el.lastKnown.hidden = k.online;
    setText(el.lastKnown, k.online ? "" : `Offline: everything below is the ${lastKnownText(k)}.`);
    const facts = [
      ["Boot", k.boot ?? "—"], ["Firmware", k.fw ?? "—"], ["Board", k.board ?? "—"],
      ["Last heard", k.seen ? `${fmtTime(k.seen)} (${fmtAge(k.seen_age_s)})` : "never"],
      ["Events stored", `${k.events_stored_upto ?? 0} of ${k.journal_last ?? 0}`],
    ];
    if (el.facts.children.length !== facts.length * 2) {
      el.facts.replaceChildren(...facts.flatMap(([dt]) => [h("dt", { text: dt }), h("dd")]));
    }
    facts.forEach(([, dd], i) => setText(el.facts.children[i * 2 + 1], dd));

    const probs = (k.problems || []).map((p) => [p.text, `problem ${p.level}`, p.code]);
    const want = probs.length ? probs : [["nothing: all doors shut and locked, temperature in band", "muted", "none"]];
    const key = JSON.stringify(want);
    if (el.problems.dataset.key !== key) {
      el.problems.dataset.key = key;
      el.problems.replaceChildren(...want.map(([text, cls, code]) => h("li", { class: cls, text, "data-code": code })));
    }

    const doors = Object.keys(k.doors || {}).sort();
    syncRows(el.doors, doors, (name) => h("tr", { "data-door": name, "data-testid": `door-${name}` },
      h("th", { scope: "row", text: name }), h("td", { "data-field": "door" }), h("td", { "data-field": "bolt" }),
      h("td", { "data-field": "alarms" })),
    (tr, name) => {
      const d = k.doors[name];
      setAttr(tr, "data-secure", d.secure ? "true" : "false");
      setAttr(tr, "class", d.secure ? "" : "not-secure");
      setText(tr.children[1], words(d.door));
      setText(tr.children[2], words(d.bolt));
      setText(tr.children[3], (d.alarms || []).length ? d.alarms.map(words).join(", ") : d.secure ? "none" : "not closed and locked");
      setAttr(tr.children[3], "class", d.secure ? "muted" : "alarm");
    });

    syncRows(el.readings, Object.keys(k.readings || {}).sort(), (n) => h("li", { "data-sensor": n, "data-testid": "reading" }),
      (li, n) => {
        const r = k.readings[n];
        setText(li, `${n}: ${readingText(r)}`);
        setAttr(li, "class", readingClass(r));
        setAttr(li, "data-c", r.c ?? "");
        setAttr(li, "data-range", r.range ?? "");
      });

    const stock = (k.status && k.status.stock) || {};
    const bins = Object.keys(stock).sort((a, b) => Number(a) - Number(b));
    const unverified = (k.status && k.status.unverified) || [];
    let stockText = bins.length ? bins.map((b) => `bin ${b}: ${stock[b]}`).join(", ") : "empty";
    if (unverified.length) stockText += ` · to verify: bins ${unverified.join(", ")}`;
    setText(el.stock, stockText);
    setText(el.lastPickup, pickupText(k.last_pickup));

    // A pickup can only reach a kiosk that is online, through a broker session.
    const why = !k.online ? "The kiosk is offline: a pickup cannot reach it." : brokerUp() === false
      ? "The bridge has no broker session: a pickup cannot reach the kiosk." : k.service
        ? "A service session is open: pickups wait until the technician ends it." : "";
    const sending = el.pickupStatus.dataset.state === "sending" || el.pickupStatus.dataset.state === "queued"
      || el.pickupStatus.dataset.state === "in_progress";
    el.pickupButton.disabled = sending || !k.online || brokerUp() === false;
    setText(el.pickupWhy, why);
    service.update();

    syncRows(el.commands, (k.commands || []).map((c) => c.command_id), (cid) =>
      h("tr", { "data-command": cid, "data-testid": "command-row" },
        h("td", { class: "nowrap" }), h("td", {}), h("td", {}), h("td", { "data-field": "actor" }), h("td", { "data-field": "state" }),
        h("td", { "data-field": "explanation" }), h("td", { class: "mono small", text: cid })),
    (tr, cid) => {
      const c = k.commands.find((x) => x.command_id === cid);
      setText(tr.children[0], fmtTime(c.created));
      setText(tr.children[1], words(c.op));
      setText(tr.children[2], Object.entries(c.args || {}).map(([a, v]) => `${a}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ") || "—");
      setText(tr.children[3], c.actor || "—");
      setText(tr.children[4], words(c.state));
      setAttr(tr.children[4], "class", `state ${c.state}`);
      setAttr(tr, "data-state", c.state);
      setText(tr.children[5], c.explanation ? explainText(c.explanation) : c.note || "");
    });
    setText(el.commandsNote, (k.commands || []).length ? "" : "No commands sent to this kiosk yet.");
  }

  // ---- events
  const shown = new Set();
  let newest = null;   // highest seq shown (null before the first page)
  let oldest = null;

  function eventRow(e, fresh) {
    const b = e.body || {};
    const text = describe(b) + (e.explanation ? `. ${explainText(e.explanation)}` : "");
    const tr = h("tr", { "data-seq": e.seq, "data-kind": e.kind, "data-testid": "event", class: fresh ? "fresh" : null },
      h("td", { class: "num", text: e.seq }),
      h("td", { class: "nowrap", text: fmtTime(e.t) }),
      h("td", { text: words(e.kind) }),
      h("td", { text }));
    shown.add(e.seq);
    return tr;
  }

  async function loadEvents() {
    try {
      if (newest === null) {
        const r = await api("GET", `${kioskPath(id)}/events?before=${MAX_SEQ}&limit=${EVENTS_PAGE}`);
        el.events.replaceChildren(...r.events.map((e) => eventRow(e, false)));
        newest = r.events.length ? r.events[0].seq : 0;
        oldest = r.events.length ? r.events[r.events.length - 1].seq : null;
        el.older.hidden = !r.next;
      } else {
        for (;;) {
          const r = await api("GET", `${kioskPath(id)}/events?after=${newest}&limit=200`);
          for (const e of r.events) {
            if (!shown.has(e.seq)) el.events.insertBefore(eventRow(e, true), el.events.firstChild);
            newest = Math.max(newest, e.seq);
            if (oldest === null) oldest = e.seq;
          }
          if (!r.next) break;
        }
      }
      setText(el.eventsNote, shown.size ? "" : "No events stored yet.");
      problem("events", null);
    } catch (e) {
      problem("events", e);
    }
  }

  el.older.addEventListener("click", async () => {
    if (oldest === null) return;
    el.older.disabled = true;
    try {
      const r = await api("GET", `${kioskPath(id)}/events?before=${oldest}&limit=${EVENTS_PAGE}`);
      for (const e of r.events) if (!shown.has(e.seq)) el.events.append(eventRow(e, false));
      if (r.events.length) oldest = r.events[r.events.length - 1].seq;
      el.older.hidden = !r.next;
      setText(el.eventsNote, r.next ? "" : "That is the oldest event stored.");
      problem("older", null);
    } catch (e) {
      problem("older", e);
    } finally {
      el.older.disabled = false;
    }
  });

  // ---- pickup form
  el.pickupForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (pickupTrack) pickupTrack.stop();
    const args = { order: el.order.value.trim(), bin: Number(el.bin.value) };
    el.pickupButton.disabled = true;
    pickupTrack = track(el.pickupStatus, `Pickup of ${args.order} from bin ${args.bin}`, "POST", `${kioskPath(id)}/pickups`,
      { order_id: args.order, bin: args.bin }, "pickup", args, () => poll.poke());
    poll.poke();
  });

  // ---- temperature and excursions
  let lastTemp = "";
  async function loadTemperature() {
    let t;
    try {
      t = await api("GET", `${kioskPath(id)}/temperature?hours=${el.hours.value}`);
      problem("temperature", null);
    } catch (e) {
      problem("temperature", e);
      return;
    }
    const key = JSON.stringify([t.days, t.mkt_window]);
    if (key !== lastTemp) {
      lastTemp = key;
      renderDays(t);
    }
    renderExcursions(t);
    renderCharts(t);
  }

  function renderCharts(t) {
    const names = [...new Set([...Object.keys(t.series || {}), ...Object.keys(t.latest || {})])].sort();
    if (!names.length) {
      el.charts.replaceChildren(h("p", { class: "muted", text: "No temperature readings stored in this period." }));
      return;
    }
    el.charts.replaceChildren(...names.map((n) => chart(n, (t.series || {})[n] || [], t)));
  }

  function renderDays(t) {
    const days = t.days || [];
    const mk = Object.entries(t.mkt_window || {}).filter(([, v]) => typeof v === "number");
    const parts = [];
    if (mk.length) parts.push(h("p", { text: `Mean kinetic temperature (kiosk's window): ${mk.map(([n, v]) => `${n} ${fmtC(v)}`).join(", ")}` }));
    if (days.length) {
      parts.push(h("table", { class: "grid small", "data-testid": "temp-days" },
        h("caption", { text: "Daily statistics" }),
        h("thead", {}, h("tr", {}, ["Date (UTC)", "Sensor", "Min", "Max", "Mean", "MKT", "Samples", "From"].map((x) => h("th", { scope: "col", text: x })))),
        h("tbody", {}, days.slice(-21).reverse().map((d) => h("tr", {},
          [d.date, d.sensor, fmtC(d.min), fmtC(d.max), fmtC(d.mean), fmtC(d.mkt), d.samples ?? "—", d.source].map((x) => h("td", { text: x })))))));
    }
    el.days.replaceChildren(...parts);
  }

  const EXCURSION_STATE = { ongoing: "going on", ended: "ended: to review and clear", cleared: "cleared" };

  function renderExcursions(t) {
    const all = (t.excursions || []).slice().reverse();
    const open = all.filter((x) => x.state !== "cleared");
    setText(el.excursionNote, open.length ? `${open.length} excursion${open.length === 1 ? "" : "s"} not cleared.`
      : all.length ? "No open excursions." : "No excursions in this period.");
    el.excursions.closest("table").hidden = !all.length;
    // Rows are kept while their excursion does not change, so a clearing
    // form being filled in is never rebuilt under the pharmacist's hands.
    syncRows(el.excursions, all.map((x) => x.id), () => h("tr", { "data-testid": "excursion-row" }), (tr, xid) => {
      const x = all.find((e) => e.id === xid);
      const key = JSON.stringify(x);
      if (tr.dataset.shown === key) return;
      tr.dataset.shown = key;
      setAttr(tr, "data-excursion", x.id);
      setAttr(tr, "data-state", x.state);
      tr.replaceChildren(
        h("td", { text: x.id }), h("td", { text: x.sensor ?? "—" }), h("td", { class: "nowrap", text: fmtTime(x.start) }),
        h("td", { class: "nowrap", text: x.end ? fmtTime(x.end) : "going on" }), h("td", { text: fmtC(x.min) }), h("td", { text: fmtC(x.max) }),
        h("td", { text: (x.bins || []).join(", ") || "—" }),
        h("td", { class: x.state === "ongoing" ? "alarm" : x.state === "ended" ? "state in_progress" : "muted",
          text: x.state === "cleared" ? `cleared by ${x.cleared_by || "?"} at ${fmtTime(x.cleared_at)}: ${x.cleared_reason || ""}` : EXCURSION_STATE[x.state] }),
        h("td", {}, x.state === "ended" ? (may("clear_excursion") ? clearForm(x) : h("span", { class: "muted small", text: "a pharmacist clears it" }))
          : x.state === "ongoing" ? h("span", { class: "muted small", text: "can be cleared once it ends" }) : null));
    });
  }

  // The pharmacist's decision about the stock it touched (keep, quarantine, ask
  // the manufacturer) and why; the bridge records who (the logged-in user).
  function clearForm(x) {
    const reason = h("input", { name: "reason", required: true, minlength: 3, maxlength: 500, placeholder: "e.g. kept: sealed packs, MKT within limits",
      "aria-label": `Decision and reason for excursion ${x.id}`, "data-testid": `clear-reason-${x.id}`, class: "wide-input" });
    const button = h("button", { type: "submit", "data-testid": `clear-${x.id}`, text: "Clear", "aria-label": `Clear excursion ${x.id}` });
    const form = h("form", { class: "inline-form", "data-testid": `clear-form-${x.id}` }, reason, button);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (clearTrack) clearTrack.stop();
      button.disabled = true;
      clearTrack = track(el.excursionStatus, `Clearing excursion ${x.id}`, "POST",
        `${kioskPath(id)}/excursions/${encodeURIComponent(x.id)}/clear`, { reason: reason.value.trim() },
        "clear_excursion", {}, () => { button.disabled = false; tempPoll.poke(); });
    });
    return form;
  }

  el.hours.addEventListener("change", () => { lastTemp = ""; tempPoll.poke(); });

  // ---- the poll
  let lastExcursions = null;
  let lastReadings = null;
  const poll = poller(async () => {
    try {
      const k = await api("GET", kioskPath(id));
      problem("kiosk", null);
      updateStatus(k);
      el.body.hidden = false;
      // An excursion started, ended or was cleared, or a new reading came:
      // show it on the chart now, not at the next temperature poll.
      const exc = JSON.stringify((k.status && k.status.excursions) || {});
      const rd = JSON.stringify(Object.values(k.readings || {}).map((r) => [r.t, r.c]));
      if ((lastExcursions !== null && lastExcursions !== exc) || (lastReadings !== null && lastReadings !== rd)) tempPoll.poke();
      lastExcursions = exc;
      lastReadings = rd;
    } catch (e) {
      if (e.status === 404) {
        setText(el.state, "unknown");
        setAttr(el.state, "class", "badge bad");
        el.body.hidden = true;
      }
      problem("kiosk", e);
      return;
    }
    await loadEvents();
  }, POLL_MS);
  const tempPoll = poller(loadTemperature, TEMP_POLL_MS);
  stops.push(poll, tempPoll);

  setupSim(id, el.sim, () => current).then((p) => { if (p) stops.push(p); });

  return {
    stop() {
      stops.forEach((p) => p.stop());
      if (pickupTrack) pickupTrack.stop();
      if (clearTrack) clearTrack.stop();
      for (const k of ["kiosk", "events", "older", "temperature", "sim"]) problems.delete(k);
    },
  };
}
