// The pharmacist's queue (/pharmacy): patients waiting at kiosks and
// requests to call them, orders awaiting release (released here, with the
// counselling's outcome) and orders past their deadline, all live.

import { api } from "./api.js";
import { gridTable as table, h, setAttr, setText, syncRows } from "./dom.js";
import { fmtTime, words } from "./format.js";
import { POLL_MS, poller, problem } from "./live.js";
import { may } from "./session.js";

const REASONS = {
  counselling: "needs counselling before release: call the patient",
  release: "waiting at the kiosk for the order's release",
  call: "pressed “call a pharmacist”",
  missing: "order missing from its bin: check with the technician",
};

function itemsText(items) {
  return (items || []).map((i) => `${i.name} ×${i.qty}`).join("\n") || "—";
}

function since(t) {
  if (typeof t !== "number") return "—";
  const m = Math.max(0, Math.round((Date.now() / 1000 - t) / 60));
  return m < 1 ? "just now" : m === 1 ? "1 minute" : m < 120 ? `${m} minutes` : fmtTime(t);
}

export function pharmacyView() {
  document.title = "Pharmacy queue";
  const main = document.getElementById("main");
  const status = h("p", { id: "queue-status", class: "status", role: "status", "aria-live": "polite",
    "data-testid": "queue-status" });
  const waiting = h("tbody");
  const release = h("tbody");
  const late = h("tbody");
  const notes = {
    waiting: h("p", { class: "muted", id: "waiting-note" }),
    release: h("p", { class: "muted", id: "release-note" }),
    late: h("p", { class: "muted", id: "late-note" }),
  };
  const mayRelease = may("pickup");
  main.replaceChildren(
    h("p", { class: "crumbs" }, h("a", { href: "/", "data-route": true, text: "← Fleet" })),
    h("h1", { text: "Pharmacy queue" }),
    status,
    h("section", { class: "card wide", "aria-labelledby": "waiting-h" },
      h("h2", { id: "waiting-h", text: "Patients waiting and requests" }),
      notes.waiting,
      table("waiting-table", "Patients waiting at kiosks and requests to call them",
        ["Kiosk", "Why", "Order", "Waiting", ""], waiting)),
    h("section", { class: "card wide", "aria-labelledby": "release-h" },
      h("h2", { id: "release-h", text: "Orders awaiting release" }),
      notes.release,
      table("release-table", "Orders a pharmacist has not released yet",
        ["Order", "Kiosk", "Patient", "Items", "Counselling", "State", "Release"], release)),
    h("section", { class: "card wide", "aria-labelledby": "late-h" },
      h("h2", { id: "late-h", text: "Past their deadline: back to stock" }),
      notes.late,
      table("late-table", "Orders to take back out of their bins", ["Order", "Kiosk", "Bin", "State", "Deadline"], late)),
  );

  const say = (text, ok) => {
    setAttr(status, "class", ok ? "status" : "status error");
    setText(status, text);
  };

  async function doRelease(o, counselling, note) {
    try {
      await api("POST", `/api/orders/${encodeURIComponent(o.order_id)}/release`,
        { counselling, ...(note ? { note } : {}) });
      say(`Order ${o.order_id} released (counselling ${words(counselling)}).`, true);
      setAttr(status, "data-order", o.order_id);
      setAttr(status, "data-state", "released");
      loop.poke();
    } catch (e) {
      say(`Release of ${o.order_id} refused: ${e.message}`, false);
      setAttr(status, "data-state", "error");
    }
  }

  function releaseForm(o) {
    const id = `rel-${o.order_id}`.replace(/[^A-Za-z0-9_-]/g, "_");
    const sel = h("select", { id: `${id}-c`, "data-testid": "release-counselling" },
      h("option", { value: "not_required", text: "not required", disabled: o.counselling_required,
        selected: !o.counselling_required }),
      h("option", { value: "accepted", text: "given (accepted)", selected: o.counselling_required }),
      h("option", { value: "declined", text: "offered, declined" }));
    const note = h("input", { id: `${id}-n`, maxlength: 1000, autocomplete: "off", placeholder: "note",
      "data-testid": "release-note" });
    const form = h("form", { class: "inline-form", "data-testid": "release-form" },
      h("label", { for: `${id}-c`, class: "sr-only", text: `Counselling for ${o.order_id}` }), sel,
      h("label", { for: `${id}-n`, class: "sr-only", text: `Note for ${o.order_id}` }), note,
      h("button", { type: "submit", "data-testid": "release", text: "Release" }));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      doRelease(o, sel.value, note.value.trim());
    });
    return form;
  }

  async function closeConsult(c) {
    try {
      await api("POST", `/api/consults/${encodeURIComponent(c.id)}/close`, { note: "dealt with from the queue" });
      say(`Request at ${c.kiosk} closed.`, true);
      loop.poke();
    } catch (e) {
      say(`Closing refused: ${e.message}`, false);
    }
  }

  const cell = (tr, i) => tr.children[i];
  const loop = poller(async () => {
    let consults, open, stale;
    try {
      const [c, received, stocked, expired, cancelled] = await Promise.all([
        mayRelease ? api("GET", "/api/consults") : Promise.resolve([]),
        api("GET", "/api/orders?state=received"), api("GET", "/api/orders?state=stocked"),
        api("GET", "/api/orders?state=expired"), api("GET", "/api/orders?state=cancelled")]);
      consults = c;
      open = [...received, ...stocked].filter((o) => !o.released);
      stale = [...expired, ...cancelled].filter((o) => o.return_to_stock);
      problem("queue", null);
    } catch (e) {
      problem("queue", e);
      return;
    }
    const byId = new Map(consults.map((c) => [c.id, c]));
    syncRows(waiting, consults.map((c) => c.id), (key) => {
      const c = byId.get(key);
      const done = h("button", { type: "button", class: "plain", "data-testid": "close-consult", text: "Done",
        onclick: () => closeConsult(byId.get(key)) });
      return h("tr", { "data-reason": c.reason, "data-kiosk": c.kiosk, "data-order": c.order_id || "",
        "data-testid": "consult-row" },
        h("th", { scope: "row" }, h("a", { href: `/kiosk/${encodeURIComponent(c.kiosk)}`, "data-route": true, text: c.kiosk })),
        h("td"), h("td"), h("td", { class: "num" }), h("td", {}, mayRelease ? done : null));
    }, (tr, key) => {
      const c = byId.get(key);
      setText(cell(tr, 1), REASONS[c.reason] || words(c.reason));
      setText(cell(tr, 2), c.order ? `${c.order.order_id}\n${itemsText(c.order.items)}` : "—");
      setText(cell(tr, 3), since(c.opened));
    });
    setText(notes.waiting, consults.length ? "" : "Nobody is waiting.");

    const orders = new Map(open.map((o) => [o.order_id, o]));
    syncRows(release, open.map((o) => o.order_id), (key) => {
      const o = orders.get(key);
      return h("tr", { "data-order": key, "data-testid": "release-row" },
        h("th", { scope: "row", text: key }), h("td"), h("td"), h("td"), h("td"), h("td"),
        h("td", {}, mayRelease ? releaseForm(o) : null));
    }, (tr, key) => {
      const o = orders.get(key);
      setText(cell(tr, 1), o.kiosk);
      setText(cell(tr, 2), o.patient_ref);
      setText(cell(tr, 3), itemsText(o.items));
      setText(cell(tr, 4), o.counselling_required ? "required" : "not required");
      setText(cell(tr, 5), o.state === "stocked" ? `in bin ${o.bin}` : "not in the kiosk yet");
    });
    setText(notes.release, open.length ? "" : "Every order is released.");

    const lates = new Map(stale.map((o) => [o.order_id, o]));
    syncRows(late, stale.map((o) => o.order_id), (key) => h("tr", { "data-order": key, "data-testid": "late-row" },
      h("th", { scope: "row", text: key }), h("td"), h("td", { class: "num" }), h("td"), h("td")), (tr, key) => {
      const o = lates.get(key);
      setText(cell(tr, 1), o.kiosk);
      setText(cell(tr, 2), String(o.bin));
      setText(cell(tr, 3), words(o.state));
      setText(cell(tr, 4), o.pickup_by);
    });
    setText(notes.late, stale.length ? "A technician takes these back out in a service session." : "Nothing to take back.");
  }, POLL_MS);
  return loop;
}
