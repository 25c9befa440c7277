// The fleet page (/): one row per kiosk, kept in the API's order.

import { api } from "./api.js";
import { h, setAttr, setText } from "./dom.js";
import { doorLines, pickupText, stateText, tempLines } from "./format.js";
import { POLL_MS, poller, problem } from "./live.js";

const FLEET_COLUMNS = [
  ["id", "Kiosk"], ["state", "State"], ["doors", "Doors and bolts"], ["alarms", "Alarms"],
  ["excursions", "Open excursions"], ["pickup", "Last pickup"], ["temps", "Temperature"],
];

export function fleetView() {
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
