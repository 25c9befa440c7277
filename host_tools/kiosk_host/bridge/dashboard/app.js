// The bridge's dashboard: the fleet at /, one kiosk at /kiosk/{id}.
// Plain JavaScript, no build step, no third-party code. Everything it shows
// comes from the bridge's JSON API (see /docs); in `kiosk-bridge demo` the
// emulator's /api/sim routes add a "Simulate" panel.
"use strict";

const POLL_MS = 1500;            // fleet and kiosk status, new events
const COMMAND_POLL_MS = 500;     // a command being watched until it ends
const TEMP_POLL_MS = 10000;      // temperature history
// Events per page of the log; ?events_page=N on a kiosk page changes it.
const EVENTS_PAGE = Math.min(1000, Math.max(1, Number(new URLSearchParams(location.search).get("events_page")) || 50));
const MAX_SEQ = Number.MAX_SAFE_INTEGER;
const TERMINAL = new Set(["succeeded", "failed", "timed_out", "rejected", "cancelled"]);

// -- helpers -------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

/** Call the API; resolve to the JSON body, or throw ApiError with the
 * server's {"detail"} (or what went wrong on the way). */
async function api(method, path, body) {
  const opts = { method, headers: { accept: "application/json" } };
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
  if (!r.ok) {
    let detail = `${r.status} ${r.statusText}`.trim();
    if (data && typeof data.detail === "string") detail = data.detail;
    else if (data && data.detail !== undefined) detail = JSON.stringify(data.detail);
    throw new ApiError(r.status, detail);
  }
  return data;
}

/** Build an element: h("td", {class: "x", text: "y"}, child...). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined) continue;
    if (k === "text") el.textContent = v;
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) if (c) el.append(c);
  return el;
}

/** Change only what changed: no flicker, no lost selection. */
function setText(el, text) {
  text = String(text);
  if (el.textContent !== text) el.textContent = text;
}
function setAttr(el, name, value) {
  value = String(value);
  if (el.getAttribute(name) !== value) el.setAttribute(name, value);
}

function fmtTime(t) {
  if (typeof t !== "number") return "—";
  return new Date(t * 1000).toLocaleString([], { hour12: false });
}
function fmtClock(t, withDay) {
  const opts = { hour12: false, hour: "2-digit", minute: "2-digit" };
  if (withDay) opts.weekday = "short";
  return new Date(t * 1000).toLocaleTimeString([], opts);
}
function fmtC(c) {
  return typeof c === "number" ? `${c.toFixed(1)}\u00a0°C` : "—";
}
function words(x) {
  return String(x ?? "unknown").replace(/_/g, " ");
}
function kioskPath(id) {
  return `/api/kiosks/${encodeURIComponent(id)}`;
}

// One message line per failing request, shown until the request works again.
const problems = new Map();
function problem(key, err) {
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
function poller(fn, ms) {
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

/** Watch one command until it ends; onState(command) after each look. */
function watchCommand(commandId, onState, onError) {
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

function doorLines(doors) {
  const names = Object.keys(doors || {}).sort();
  if (!names.length) return "—";
  return names.map((n) => {
    const d = doors[n];
    const alarms = (d.alarms || []).length ? ` (${d.alarms.map(words).join(", ")})` : "";
    return `${n}: ${words(d.door)}, bolt ${words(d.bolt)}${alarms}`;
  }).join("\n");
}
function tempLines(temps) {
  const names = Object.keys(temps || {}).sort();
  if (!names.length) return "—";
  return names.map((n) => `${n}: ${fmtC(temps[n])}`).join("\n");
}
function pickupText(p) {
  if (!p) return "none yet";
  return `${p.order} from bin ${p.bin} at ${fmtTime(p.t)}${p.recovered ? " (recovered after a reset)" : ""}`;
}
function stateText(k) {
  let t = k.online ? "online" : `offline: ${k.why_offline || "no reason given"}`;
  if (k.service) t += " · service session";
  return t;
}

// -- routing -----------------------------------------------------------------

let view = null;

function route() {
  if (view) view.stop();
  problems.clear();
  problem("route", null);
  const m = location.pathname.match(/^\/kiosk\/([^/]+)\/?$/);
  view = m ? kioskView(decodeURIComponent(m[1])) : fleetView();
}

function navigate(path) {
  if (path !== location.pathname) history.pushState(null, "", path);
  route();
  window.scrollTo(0, 0);
}

document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-route]");
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  navigate(a.getAttribute("href"));
});
window.addEventListener("popstate", route);

// -- the fleet -----------------------------------------------------------------

const FLEET_COLUMNS = [
  ["id", "Kiosk"], ["state", "State"], ["doors", "Doors and bolts"], ["alarms", "Alarms"],
  ["excursions", "Open excursions"], ["pickup", "Last pickup"], ["temps", "Temperature"],
];

function fleetView() {
  document.title = "Kiosk fleet";
  const main = document.getElementById("main");
  const tbody = h("tbody");
  const note = h("p", { id: "fleet-note", class: "muted", text: "Loading the fleet…" });
  const updated = h("p", { id: "fleet-updated", class: "muted small", "aria-live": "off" });
  main.replaceChildren(
    h("h1", { text: "Fleet" }),
    note,
    h("div", { class: "scroll" },
      h("table", { id: "fleet-table", class: "grid", "data-testid": "fleet-table" },
        h("caption", { class: "sr-only", text: "Every kiosk and its state" }),
        h("thead", {}, h("tr", {}, FLEET_COLUMNS.map(([, label]) => h("th", { scope: "col", text: label })))),
        tbody)),
    updated,
  );
  const rows = new Map();

  function makeRow(id) {
    const tr = h("tr", { "data-kiosk": id, "data-testid": "kiosk-row" });
    const cells = {};
    for (const [field] of FLEET_COLUMNS) {
      cells[field] = h(field === "id" ? "th" : "td", { "data-field": field, scope: field === "id" ? "row" : null });
      tr.append(cells[field]);
    }
    cells.id.append(h("a", { href: `/kiosk/${encodeURIComponent(id)}`, "data-route": true, text: id }));
    cells.state.append(h("span", { class: "badge" }));
    return { tr, cells };
  }

  function update(r, k) {
    const badge = r.cells.state.firstChild;
    setText(badge, stateText(k));
    setAttr(badge, "class", `badge ${k.online ? "ok" : "bad"}`);
    setAttr(r.tr, "data-online", k.online ? "true" : "false");
    setText(r.cells.doors, doorLines(k.doors));
    setText(r.cells.alarms, (k.alarms || []).length ? k.alarms.join("\n") : "none");
    setAttr(r.cells.alarms, "class", (k.alarms || []).length ? "alarm" : "muted");
    setText(r.cells.excursions, String(k.excursions_open || 0));
    setAttr(r.cells.excursions, "class", k.excursions_open ? "alarm num" : "num");
    setText(r.cells.pickup, pickupText(k.last_pickup));
    setText(r.cells.temps, tempLines(k.temperature_c));
  }

  return poller(async () => {
    let list;
    try {
      list = await api("GET", "/api/kiosks");
      problem("fleet", null);
    } catch (e) {
      problem("fleet", e);
      return;
    }
    const seen = new Set();
    let prev = null;
    for (const k of list) {
      seen.add(k.id);
      let r = rows.get(k.id);
      if (!r) {
        r = makeRow(k.id);
        rows.set(k.id, r);
      }
      // Keep the API's order without moving rows that are already in place.
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (want !== r.tr) tbody.insertBefore(r.tr, want);
      update(r, k);
      prev = r.tr;
    }
    for (const [id, r] of rows) {
      if (!seen.has(id)) { r.tr.remove(); rows.delete(id); }
    }
    const online = list.filter((k) => k.online).length;
    setText(note, list.length ? `${list.length} kiosk${list.length === 1 ? "" : "s"}, ${online} online.`
      : "No kiosks yet: the bridge knows a kiosk once its key is in the keys folder.");
    setText(updated, `Updated ${new Date().toLocaleTimeString([], { hour12: false })}`);
  }, POLL_MS);
}

// -- one kiosk -----------------------------------------------------------------

function kioskView(id) {
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
      h("section", { id: "pickup", class: "card", "aria-labelledby": "pickup-h" },
        h("h2", { id: "pickup-h", text: "Request pickup" }),
        el.pickupForm, el.pickupStatus),
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
        el.excursionStatus),
      h("section", { id: "commands", class: "card wide", "aria-labelledby": "cmd-h" },
        h("h2", { id: "cmd-h", text: "Recent commands" }),
        h("div", { class: "scroll" },
          h("table", { id: "commands-table", class: "grid", "data-testid": "commands-table" },
            h("thead", {}, h("tr", {}, ["Sent", "Operation", "Arguments", "State", "Reason", "Command id"].map((t) => h("th", { scope: "col", text: t })))),
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
        h("td", {}), h("td", {}), h("td", {}), h("td", { "data-field": "state" }), h("td", {}),
        h("td", { class: "mono small", text: cid })),
    (tr, cid) => {
      const c = k.commands.find((x) => x.command_id === cid);
      setText(tr.children[0], fmtTime(c.created));
      setAttr(tr.children[0], "class", "nowrap");
      setText(tr.children[1], words(c.op));
      setText(tr.children[2], Object.entries(c.args || {}).map(([a, v]) => `${a}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ") || "—");
      setText(tr.children[3], words(c.state));
      setAttr(tr.children[3], "class", `state ${c.state}`);
      setAttr(tr, "data-state", c.state);
      setText(tr.children[4], c.reason || "");
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
      const clear = h("button", { type: "button", "data-testid": `clear-${x.id}`, "data-excursion": x.id, text: "Clear",
        "aria-label": `Clear excursion ${x.id}` });
      clear.addEventListener("click", () => clearExcursion(x.id, clear));
      return h("tr", { "data-excursion": x.id, "data-testid": "excursion-row" },
        h("td", { text: x.id }), h("td", { text: x.sensor ?? "—" }), h("td", { text: fmtTime(x.start) }),
        h("td", { text: x.end ? fmtTime(x.end) : "ongoing" }), h("td", { text: fmtC(x.min) }), h("td", { text: fmtC(x.max) }),
        h("td", { text: (x.bins || []).join(", ") || "—" }), h("td", {}, clear));
    }));
  }

  async function clearExcursion(xid, button) {
    if (excursionWatch) excursionWatch.stop();
    button.disabled = true;
    setAttr(el.excursionStatus, "class", "status");
    setText(el.excursionStatus, `Clearing excursion ${xid}…`);
    try {
      const r = await api("POST", `${kioskPath(id)}/excursions/${encodeURIComponent(xid)}/clear`);
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

/** Keep a tbody's rows in `keys` order, creating and updating rows by key. */
function syncRows(tbody, keys, create, update) {
  const have = new Map([...tbody.children].map((tr) => [tr.dataset.key, tr]));
  let prev = null;
  for (const key of keys) {
    let tr = have.get(key);
    if (!tr) { tr = create(key); tr.dataset.key = key; }
    have.delete(key);
    const want = prev ? prev.nextSibling : tbody.firstChild;
    if (want !== tr) tbody.insertBefore(tr, want);
    update(tr, key);
    prev = tr;
  }
  for (const tr of have.values()) tr.remove();
}

/** One event's body in a line. */
function describe(b) {
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
        (b.id ? ` · command ${b.id}` : "");
    case "restock":
      return `order ${b.order} loaded into bin ${b.bin}` + (b.id ? ` · command ${b.id}` : "");
    default: {
      const rest = Object.entries(b).filter(([k]) => !skip.has(k)).map(([k, v]) => val(k, v)).join(" ");
      return [b.ev ? words(b.ev) : null, rest].filter(Boolean).join(": ") || "—";
    }
  }
}

// -- the temperature chart -----------------------------------------------------

function chart(sensor, points, t, now) {
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

// -- the emulator's controls (demo only) -------------------------------------------

async function setupSim(id, box, getKiosk) {
  let world;
  try {
    world = await api("GET", `/api/sim/${encodeURIComponent(id)}`);
  } catch {
    return null;   // not a demo, or not an emulated kiosk: no panel
  }
  const sensors = Object.keys((world.world && world.world.sensors) || (getKiosk() && getKiosk().temperature_c) || {}).sort();
  const out = h("p", { id: "sim-result", class: "status", role: "status", "aria-live": "polite", "data-testid": "sim-result" });
  const doorSel = h("select", { id: "sim-door", "data-testid": "sim-door" },
    h("option", { value: "pickup", text: "pickup door" }), h("option", { value: "service", text: "service door" }));
  const sensorSel = h("select", { id: "sim-sensor", "data-testid": "sim-sensor" }, sensors.map((n) => h("option", { value: n, text: n })));
  const celsius = h("input", { id: "sim-celsius", type: "number", step: "0.1", value: "22.0", required: true, "data-testid": "sim-celsius" });
  const show = (text, ok) => {
    setAttr(out, "class", ok ? "status" : "status error");
    setText(out, text);
  };
  const door = (action) => async () => {
    const name = doorSel.value;
    try {
      const r = await api("POST", `/api/sim/${encodeURIComponent(id)}/door`, { door: name, action });
      if (r && r.ok === false) show(`The ${name} door stays ${words(r.door)}: ${words(r.reason)}.`, false);
      else show(`The ${name} door is ${words(r && r.door ? r.door : action === "close" ? "closed" : "open")}.`, true);
      setAttr(out, "data-door", `${name}:${r && r.door ? r.door : ""}`);
    } catch (e) {
      show(`Door ${action} refused: ${e.message}`, false);
    }
  };
  const toggle = (what, body, label) => async () => {
    try {
      await api("POST", `/api/sim/${encodeURIComponent(id)}/${what}`, body);
      show(label, true);
    } catch (e) {
      show(`${what} refused: ${e.message}`, false);
    }
  };
  const form = h("form", { id: "sim-sensor-form", class: "inline-form" },
    h("label", { for: "sim-sensor", text: "Sensor" }), sensorSel,
    h("label", { for: "sim-celsius", text: "°C" }), celsius,
    h("button", { type: "submit", "data-testid": "sim-set-temp", text: "Set temperature" }));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const r = await api("POST", `/api/sim/${encodeURIComponent(id)}/sensor`, { sensor: sensorSel.value, celsius: Number(celsius.value) });
      show(`${sensorSel.value} surroundings now ${fmtC(r && typeof r.celsius === "number" ? r.celsius : Number(celsius.value))}; the kiosk reads it at its next sample.`, true);
    } catch (err) {
      show(`Sensor refused: ${err.message}`, false);
    }
  });
  box.replaceChildren(
    h("h2", { id: "sim-h", text: "Simulate" }),
    h("p", { class: "muted small", text: "The emulated kiosk's surroundings: a patient at a door, the room's temperature. A door must stay open about 2 s before it counts." }),
    h("div", { class: "inline-form" },
      h("label", { for: "sim-door", text: "Door" }), doorSel,
      h("button", { type: "button", "data-testid": "sim-open", onclick: door("open"), text: "Open" }),
      h("button", { type: "button", "data-testid": "sim-close", onclick: door("close"), text: "Close" }),
      h("button", { type: "button", "data-testid": "sim-force", class: "danger", onclick: door("force"), text: "Force open" })),
    form,
    h("div", { class: "inline-form" },
      h("button", { type: "button", class: "plain", "data-testid": "sim-power-off", text: "Power off",
        onclick: toggle("power", { on: false }, "Power cut: the kiosk goes offline.") }),
      h("button", { type: "button", class: "plain", "data-testid": "sim-power-on", text: "Power on",
        onclick: toggle("power", { on: true }, "Power back: the kiosk boots.") }),
      h("button", { type: "button", class: "plain", "data-testid": "sim-network-down", text: "Network down",
        onclick: toggle("network", { up: false }, "Network down: the kiosk keeps its journal until it is back.") }),
      h("button", { type: "button", class: "plain", "data-testid": "sim-network-up", text: "Network up",
        onclick: toggle("network", { up: true }, "Network back.") })),
    out);
  box.hidden = false;
  return null;
}

route();
