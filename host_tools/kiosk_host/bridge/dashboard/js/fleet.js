// The fleet page (/): one row per kiosk, the most urgent first (the API's
// order: alarm, offline, attention, ok). Each row says what needs a person;
// an offline kiosk's row shows its last known state and how old it is.

import { api } from "./api.js";
import { h, setAttr, setText } from "./dom.js";
import { SEVERITY_TEXT, doorText, fmtTime, lastKnownText, pickupText, readingClass, readingText, stateText } from "./format.js";
import { POLL_MS, poller, problem } from "./live.js";
import { rolloutsPanel } from "./rollouts.js";

const FLEET_COLUMNS = [
  ["id", "Kiosk"], ["severity", "Severity"], ["state", "State"], ["problems", "Needs attention"],
  ["doors", "Doors and bolts"], ["temps", "Temperature (latest)"], ["pickup", "Last pickup"], ["fw", "Firmware"],
];

export function fleetView() {
  document.title = "Kiosk fleet";
  const main = document.getElementById("main");
  const tbody = h("tbody");
  const note = h("p", { id: "fleet-note", class: "muted", text: "Loading the fleet…" });
  const updated = h("p", { id: "fleet-updated", class: "muted small", "aria-live": "off" });
  const rollouts = rolloutsPanel();
  main.replaceChildren(
    h("h1", { text: "Fleet" }),
    note,
    h("div", { class: "scroll" },
      h("table", { id: "fleet-table", class: "grid", "data-testid": "fleet-table" },
        h("caption", { class: "sr-only", text: "Every kiosk and its state, the most urgent first" }),
        h("thead", {}, h("tr", {}, FLEET_COLUMNS.map(([, label]) => h("th", { scope: "col", text: label })))),
        tbody)),
    updated,
    rollouts.el,
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
    cells.severity.append(h("span", { class: "sev" }));
    cells.state.append(h("span", { class: "badge" }), h("span", { class: "muted small last-known" }));
    cells.doors.append(h("ul", { class: "plain-list" }));
    cells.temps.append(h("ul", { class: "plain-list" }));
    cells.problems.append(h("ul", { class: "plain-list" }));
    return { tr, cells };
  }

  // A list cell: one <li> per item, each with its class; rebuilt only when it changes.
  function list(ul, items) {
    const key = JSON.stringify(items);
    if (ul.dataset.key === key) return;
    ul.dataset.key = key;
    ul.replaceChildren(...items.map(([text, cls]) => h("li", { class: cls, text })));
  }

  function update(r, k) {
    setAttr(r.tr, "data-online", k.online ? "true" : "false");
    setAttr(r.tr, "data-severity", k.severity);
    const sev = r.cells.severity.firstChild;
    setText(sev, SEVERITY_TEXT[k.severity] || k.severity);
    setAttr(sev, "class", `sev ${k.severity}`);
    const [badge, last] = r.cells.state.children;
    setText(badge, stateText(k));
    setAttr(badge, "class", `badge ${k.online ? "ok" : "bad"}`);
    setText(last, k.online ? "" : `\n${lastKnownText(k)}`);
    const probs = (k.problems || []).filter((p) => p.code !== "offline");
    list(r.cells.problems.firstChild, probs.length ? probs.map((p) => [p.text, `problem ${p.level}`]) : [["nothing", "muted"]]);
    const doors = Object.keys(k.doors || {}).sort();
    list(r.cells.doors.firstChild, doors.length ? doors.map((n) => [`${n}: ${doorText(k.doors[n])}`,
      k.doors[n].secure ? "" : "alarm"]) : [["—", "muted"]]);
    const sensors = Object.keys(k.readings || {}).sort();
    list(r.cells.temps.firstChild, sensors.length ? sensors.map((n) => [`${n}: ${readingText(k.readings[n])}`,
      readingClass(k.readings[n])]) : [["no reading", "muted"]]);
    setText(r.cells.pickup, pickupText(k.last_pickup));
    setText(r.cells.fw, k.fw ?? "—");
  }

  return poller(async () => {
    let list_;
    try {
      list_ = await api("GET", "/api/kiosks");
      problem("fleet", null);
    } catch (e) {
      problem("fleet", e);
      return;
    }
    const seen = new Set();
    let prev = null;
    for (const k of list_) {
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
    const count = (sev) => list_.filter((k) => k.severity === sev).length;
    const parts = ["alarm", "offline", "attention"].filter((s) => count(s)).map((s) => `${count(s)} ${s === "alarm" ? "in alarm" : s === "offline" ? "offline" : "needing attention"}`);
    setText(note, list_.length ? `${list_.length} kiosk${list_.length === 1 ? "" : "s"}: ${parts.length ? parts.join(", ") : "all OK"}.`
      : "No kiosks yet: the bridge knows a kiosk once its key is in the keys folder.");
    setText(updated, `Updated ${fmtTime(Date.now() / 1000)}`);
    try {
      await rollouts.refresh();
      problem("rollouts", null);
    } catch (e) {
      problem("rollouts", e);
    }
  }, POLL_MS);
}
