// One kiosk's page (/kiosk/{id}): status and doors, the pickup form,
// temperature and excursions, commands, the event log and, in the demo,
// the Simulate panel.

import { TERMINAL, api, kioskPath, watchCommand } from "./api.js";
import { chart } from "./chart.js";
import { h, setAttr, setText, syncRows } from "./dom.js";
import { describe, fmtC, fmtTime, pickupText, stateText, words } from "./format.js";
import { POLL_MS, poller, problem, problems } from "./live.js";
import { may } from "./session.js";
import { setupSim } from "./sim.js";

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
  el.facts = h("dl", { id: "kiosk-facts", class: "facts" });
  el.doors = h("tbody");
  el.alarms = h("ul", { id: "kiosk-alarms", class: "alarms", "data-testid": "kiosk-alarms" });
  el.stock = h("p", { id: "kiosk-stock", "data-testid": "kiosk-stock" });
  el.lastPickup = h("p", { id: "kiosk-last-pickup", "data-testid": "kiosk-last-pickup" });

  // Pickup form.
  el.order = h("input", { id: "pickup-order", name: "order_id", required: true, maxlength: 64, autocomplete: "off",
    "data-testid": "pickup-order" });
  el.bin = h("input", { id: "pickup-bin", name: "bin", type: "number", required: true, min: 1, step: 1,
    inputmode: "numeric", "data-testid": "pickup-bin" });
  el.pickupButton = h("button", { id: "pickup-submit", type: "submit", "data-testid": "pickup-submit", text: "Request pickup" });
  el.pickupStatus = h("p", { id: "pickup-status", class: "status", role: "status", "aria-live": "polite",
    "data-testid": "pickup-status" });
  el.pickupForm = h("form", { id: "pickup-form", class: "stack-form", "data-testid": "pickup-form" },
    h("label", { for: "pickup-order", text: "Order id" }), el.order,
    h("label", { for: "pickup-bin", text: "Bin" }), el.bin,
    el.pickupButton);

  // Temperature.
  el.hours = h("select", { id: "temp-hours", "data-testid": "temp-hours" },
    [1, 6, 24, 72].map((n) => h("option", { value: n, text: `last ${n} h`, selected: n === 6 })));
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
    h("h1", { id: "kiosk-title" }, `Kiosk ${id} `, el.state),
    el.body = h("div", { id: "kiosk-body", class: "layout", hidden: true },
      h("section", { id: "status", class: "card", "aria-labelledby": "status-h" },
        h("h2", { id: "status-h", text: "Status" }),
        el.facts,
        h("table", { id: "doors-table", class: "grid", "data-testid": "doors-table" },
          h("caption", { text: "Doors" }),
          h("thead", {}, h("tr", {}, ["Door", "Door state", "Bolt", "Alarms"].map((t) => h("th", { scope: "col", text: t })))),
          el.doors),
        h("h3", { text: "Alarms" }), el.alarms,
        h("h3", { text: "Stock" }), el.stock,
        h("h3", { text: "Last pickup" }), el.lastPickup),
      // Only for those who may release an order (pharmacists): the API refuses anyone else.
      may("pickup") ? h("section", { id: "pickup", class: "card", "aria-labelledby": "pickup-h" },
        h("h2", { id: "pickup-h", text: "Request pickup" }),
        el.pickupForm, el.pickupStatus) : null,
      el.sim,
      h("section", { id: "temperature", class: "card wide", "aria-labelledby": "temp-h" },
        h("h2", { id: "temp-h" }, "Temperature ", h("label", { class: "sr-only", for: "temp-hours", text: "Period" }), el.hours),
        h("p", { class: "muted small" },
          h("span", { class: "key band" }), " 20–25 °C controlled room temperature   ",
          h("span", { class: "key limit" }), " 15–30 °C allowed excursion limits"),
        el.charts, el.days),
      h("section", { id: "excursions", class: "card wide", "aria-labelledby": "exc-h" },
        h("h2", { id: "exc-h", text: "Excursions" }),
        el.excursionNote,
        h("table", { id: "excursions-table", class: "grid", "data-testid": "excursions-table", hidden: true },
          h("thead", {}, h("tr", {}, ["Id", "Sensor", "Start", "End", "Min", "Max", "Bins", ""].map((t) => h("th", { scope: "col", text: t })))),
          el.excursions),
        may("clear_excursion") ? h("p", { class: "inline-form" },
          h("label", { for: "excursion-reason", text: "Decision and reason" }), el.excursionReason) : null,
        el.excursionStatus),
      h("section", { id: "commands", class: "card wide", "aria-labelledby": "cmd-h" },
        h("h2", { id: "cmd-h", text: "Recent commands" }),
        h("div", { class: "scroll" },
          h("table", { id: "commands-table", class: "grid", "data-testid": "commands-table" },
            h("thead", {}, h("tr", {}, ["Sent", "Operation", "Arguments", "By", "State", "Reason", "Command id"].map((t) => h("th", { scope: "col", text: t })))),
            el.commands)),
        el.commandsNote),
      h("section", { id: "events", class: "card wide", "aria-labelledby": "ev-h" },
        h("h2", { id: "ev-h", text: "Event log" }),
        h("p", { class: "muted small", text: "Newest first; new events appear as the kiosk sends them." }),
        h("div", { class: "scroll" },
          h("table", { id: "event-log", class: "grid", "data-testid": "event-log" },
            h("thead", {}, h("tr", {}, ["Seq", "Kiosk time", "Kind", "What"].map((t) => h("th", { scope: "col", text: t })))),
            el.events)),
        el.eventsNote, el.older),
    ),
  );

  let current = null;   // the last kiosk JSON
  let pickupWatch = null;
  let excursionWatch = null;

  // ---- status, doors, commands
  function updateStatus(k) {
    current = k;
    setText(el.state, stateText(k));
    setAttr(el.state, "class", `badge ${k.online ? "ok" : "bad"}`);
    setAttr(el.state, "data-online", k.online ? "true" : "false");
    const facts = [
      ["Boot", k.boot ?? "—"], ["Firmware", k.fw ?? "—"], ["Board", k.board ?? "—"],
      ["Last heard", fmtTime(k.seen)], ["Events stored", `${k.events_stored_upto ?? 0} of ${k.journal_last ?? 0}`],
    ];
    if (el.facts.children.length !== facts.length * 2) {
      el.facts.replaceChildren(...facts.flatMap(([dt]) => [h("dt", { text: dt }), h("dd")]));
    }
    facts.forEach(([, dd], i) => setText(el.facts.children[i * 2 + 1], dd));

    const doors = Object.keys(k.doors || {}).sort();
    syncRows(el.doors, doors, (name) => {
      const tr = h("tr", { "data-door": name, "data-testid": `door-${name}` },
        h("th", { scope: "row", text: name }), h("td", { "data-field": "door" }), h("td", { "data-field": "bolt" }),
        h("td", { "data-field": "alarms" }));
      return tr;
    }, (tr, name) => {
      const d = k.doors[name];
      setText(tr.children[1], words(d.door));
      setText(tr.children[2], words(d.bolt));
      setText(tr.children[3], (d.alarms || []).length ? d.alarms.map(words).join(", ") : "none");
      setAttr(tr.children[3], "class", (d.alarms || []).length ? "alarm" : "muted");
    });

    const alarms = k.alarms || [];
    const want = alarms.length ? alarms : ["none"];
    if ([...el.alarms.children].map((li) => li.textContent).join("\n") !== want.join("\n")) {
      el.alarms.replaceChildren(...want.map((a) => h("li", { class: alarms.length ? "alarm" : "muted", text: a })));
    }

    const stock = (k.status && k.status.stock) || {};
    const bins = Object.keys(stock).sort((a, b) => Number(a) - Number(b));
    const unverified = (k.status && k.status.unverified) || [];
    let stockText = bins.length ? bins.map((b) => `bin ${b}: ${stock[b]}`).join(", ") : "empty";
    if (unverified.length) stockText += ` · to verify: bins ${unverified.join(", ")}`;
    setText(el.stock, stockText);
    setText(el.lastPickup, pickupText(k.last_pickup));

    syncRows(el.commands, (k.commands || []).map((c) => c.command_id), (cid) =>
      h("tr", { "data-command": cid, "data-testid": "command-row" },
        h("td", {}), h("td", {}), h("td", {}), h("td", { "data-field": "actor" }), h("td", { "data-field": "state" }),
        h("td", {}), h("td", { class: "mono small", text: cid })),
    (tr, cid) => {
      const c = k.commands.find((x) => x.command_id === cid);
      setText(tr.children[0], fmtTime(c.created));
      setAttr(tr.children[0], "class", "nowrap");
      setText(tr.children[1], words(c.op));
      setText(tr.children[2], Object.entries(c.args || {}).map(([a, v]) => `${a}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ") || "—");
      setText(tr.children[3], c.actor || "—");
      setText(tr.children[4], words(c.state));
      setAttr(tr.children[4], "class", `state ${c.state}`);
      setAttr(tr, "data-state", c.state);
      setText(tr.children[5], [c.reason, c.note].filter(Boolean).join(" · "));
    });
    setText(el.commandsNote, (k.commands || []).length ? "" : "No commands sent to this kiosk yet.");
  }

  // ---- events
  const shown = new Set();
  let newest = null;   // highest seq shown (null before the first page)
  let oldest = null;

  function eventRow(e, fresh) {
    const b = e.body || {};
    const tr = h("tr", { "data-seq": e.seq, "data-kind": e.kind, "data-testid": "event", class: fresh ? "fresh" : null },
      h("td", { class: "num", text: e.seq }),
      h("td", { class: "nowrap", text: fmtTime(e.t) }),
      h("td", { text: e.kind }),
      h("td", { text: describe(b) }));
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
  el.pickupForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (pickupWatch) pickupWatch.stop();
    const order = el.order.value.trim();
    const bin = Number(el.bin.value);
    el.pickupButton.disabled = true;
    setAttr(el.pickupStatus, "data-state", "sending");
    setAttr(el.pickupStatus, "class", "status");
    setText(el.pickupStatus, `Sending pickup of ${order} from bin ${el.bin.value}…`);
    try {
      const r = await api("POST", `${kioskPath(id)}/pickups`, { order_id: order, bin });
      setAttr(el.pickupStatus, "data-command", r.command_id);
      const show = (c) => {
        setAttr(el.pickupStatus, "data-state", c.state);
        setAttr(el.pickupStatus, "class", `status state ${c.state}`);
        const hint = c.state === "in_progress" ? " (bringing the bin to the door, then waiting for the patient)" : "";
        setText(el.pickupStatus, `Pickup of ${order} from bin ${bin}: ${words(c.state)}${c.reason ? ` (${c.reason})` : ""}${hint}`);
        if (TERMINAL.has(c.state)) el.pickupButton.disabled = false;
      };
      show({ state: r.state || "queued" });
      pickupWatch = watchCommand(r.command_id, show, (e) => {
        setText(el.pickupStatus, `Pickup of ${order}: cannot follow command ${r.command_id}: ${e.message}`);
        el.pickupButton.disabled = false;
      });
      poll.poke();
    } catch (e) {
      setAttr(el.pickupStatus, "data-state", "error");
      setAttr(el.pickupStatus, "class", "status error");
      setText(el.pickupStatus, `Pickup refused: ${e.message}`);
      el.pickupButton.disabled = false;
    }
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
    const key = JSON.stringify(t, (k, v) => (k === "since" ? undefined : v));
    const now = Date.now() / 1000;
    if (key !== lastTemp) {
      lastTemp = key;
      renderExcursions(t);
      renderDays(t);
    }
    renderCharts(t, now);
  }

  function renderCharts(t, now) {
    const sensors = new Set([...Object.keys(t.series || {}), ...Object.keys((current && current.temperature_c) || {})]);
    const names = [...sensors].sort();
    if (!names.length) {
      el.charts.replaceChildren(h("p", { class: "muted", text: "No temperature readings stored in this period." }));
      return;
    }
    el.charts.replaceChildren(...names.map((n) => chart(n, t.series[n] || [], t, now)));
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

  function renderExcursions(t) {
    const open = t.excursions_open || [];
    setText(el.excursionNote, open.length ? `${open.length} excursion${open.length === 1 ? "" : "s"} to review and clear.`
      : "No open excursions.");
    el.excursions.closest("table").hidden = !open.length;
    el.excursions.replaceChildren(...open.map((x) => {
      // Clearing is a pharmacist's decision about the stock, with a reason.
      const clear = may("clear_excursion") ? h("button", { type: "button", "data-testid": `clear-${x.id}`,
        "data-excursion": x.id, text: "Clear", "aria-label": `Clear excursion ${x.id}` }) : null;
      if (clear) clear.addEventListener("click", () => clearExcursion(x.id, clear));
      return h("tr", { "data-excursion": x.id, "data-testid": "excursion-row" },
        h("td", { text: x.id }), h("td", { text: x.sensor ?? "—" }), h("td", { text: fmtTime(x.start) }),
        h("td", { text: x.end ? fmtTime(x.end) : "ongoing" }), h("td", { text: fmtC(x.min) }), h("td", { text: fmtC(x.max) }),
        h("td", { text: (x.bins || []).join(", ") || "—" }), h("td", {}, clear));
    }));
  }

  async function clearExcursion(xid, button) {
    if (excursionWatch) excursionWatch.stop();
    const reason = (el.excursionReason.value || "").trim();
    if (!reason) {
      setAttr(el.excursionStatus, "data-state", "error");
      setAttr(el.excursionStatus, "class", "status error");
      setText(el.excursionStatus, "Write what was decided about the stock, and why, before clearing.");
      el.excursionReason.focus();
      return;
    }
    button.disabled = true;
    setAttr(el.excursionStatus, "class", "status");
    setText(el.excursionStatus, `Clearing excursion ${xid}…`);
    try {
      const r = await api("POST", `${kioskPath(id)}/excursions/${encodeURIComponent(xid)}/clear`, { reason });
      excursionWatch = watchCommand(r.command_id, (c) => {
        setAttr(el.excursionStatus, "data-state", c.state);
        setAttr(el.excursionStatus, "class", `status state ${c.state}`);
        setText(el.excursionStatus, `Clear excursion ${xid}: ${words(c.state)}${c.reason ? ` (${c.reason})` : ""}`);
        if (TERMINAL.has(c.state)) { button.disabled = false; tempPoll.poke(); }
      }, (e) => setText(el.excursionStatus, `Clear excursion ${xid}: ${e.message}`));
    } catch (e) {
      setAttr(el.excursionStatus, "class", "status error");
      setText(el.excursionStatus, `Clear refused: ${e.message}`);
      button.disabled = false;
    }
  }

  el.hours.addEventListener("change", () => { lastTemp = ""; tempPoll.poke(); });

  // ---- the poll
  let lastExcursions = null;
  const poll = poller(async () => {
    try {
      const k = await api("GET", kioskPath(id));
      problem("kiosk", null);
      updateStatus(k);
      el.body.hidden = false;
      // An excursion started, ended or was cleared: show it now, not at the next temperature poll.
      const exc = JSON.stringify((k.status && k.status.excursions) || {});
      if (lastExcursions !== null && lastExcursions !== exc) tempPoll.poke();
      lastExcursions = exc;
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
      if (pickupWatch) pickupWatch.stop();
      if (excursionWatch) excursionWatch.stop();
      for (const k of ["kiosk", "events", "older", "temperature", "sim"]) problems.delete(k);
    },
  };
}
