// Reports (/reports, admins and pharmacists): every movement of the orders
// in and out of the kiosks over a period (stocked, released, dispensed,
// returned, cancelled, deadlines), who and when, on the page and as CSV to
// keep with the pharmacy's records. The same as GET /api/reports/movements.

import { api } from "./api.js";
import { gridTable, h, setAttr, setText } from "./dom.js";
import { fmtTime, words } from "./format.js";
import { problem } from "./live.js";
import { may } from "./session.js";

const DAY_MS = 86400000;

function isoDay(d) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/** What a history entry's detail says, in a few words. */
function detailText(e) {
  const d = e.detail || {};
  const parts = [];
  if (d.bin !== undefined && d.bin !== null) parts.push(`bin ${d.bin}`);
  if (d.label_check) parts.push(`label ${words(d.label_check)}`);
  if (d.released_by) parts.push(`released by ${d.released_by}`);
  if (d.counselling) parts.push(`counselling ${words(d.counselling)}`);
  if (d.when_handed_over) parts.push(`handed over ${fmtTime(d.when_handed_over)}`);
  if (d.recovered) parts.push("recovered after a reset");
  if (d.from && d.to) parts.push(`deadline ${d.from} → ${d.to}`);
  if (d.reason) parts.push(words(d.reason));
  if (d.note) parts.push(`“${d.note}”`);
  if (d.kiosk_seq !== undefined && d.kiosk_seq !== null) parts.push(`journal #${d.kiosk_seq}`);
  return parts.join(", ");
}

export function reportsView() {
  document.title = "Reports · Kiosk fleet";
  const main = document.getElementById("main");
  if (!may("audit")) {
    main.replaceChildren(h("h1", { text: "Reports" }),
      h("p", { class: "status error", "data-testid": "not-yours", text: "This page is for admins and pharmacists; ask one of them." }));
    return { stop() {} };
  }
  const today = new Date();
  const kiosk = h("select", { id: "report-kiosk", "data-testid": "report-kiosk" }, h("option", { value: "", text: "every kiosk" }));
  const since = h("input", { id: "report-since", type: "date", required: true, value: isoDay(new Date(today - 30 * DAY_MS)),
    "data-testid": "report-since" });
  const until = h("input", { id: "report-until", type: "date", required: true, value: isoDay(today), "data-testid": "report-until" });
  const csv = h("a", { id: "report-csv", class: "button-link", "data-testid": "report-csv", text: "Download CSV", download: "" });
  const form = h("form", { id: "report-form", class: "inline-form" },
    h("label", { for: "report-kiosk", text: "Kiosk" }), kiosk,
    h("label", { for: "report-since", text: "from" }), since,
    h("label", { for: "report-until", text: "to" }), until,
    h("button", { type: "submit", "data-testid": "report-submit", text: "Show" }), csv);
  const status = h("p", { id: "report-status", class: "status", role: "status", "aria-live": "polite", "data-testid": "report-status" });
  const rows = h("tbody");
  main.replaceChildren(
    h("p", { class: "crumbs" }, h("a", { href: "/", "data-route": true, text: "← Fleet" })),
    h("h1", { text: "Movements of orders" }),
    h("p", { class: "muted small", text: "Every order that went into or out of a kiosk, each release, cancellation and deadline, "
      + "who and when: the pharmacy's record of all movements. Days are local." }),
    form, status,
    h("section", { class: "card wide" },
      gridTable("report-table", "Movements of orders, oldest first",
        ["When", "Kiosk", "Order", "What", "By", "Patient", "Details"], rows)));

  const query = () => {
    const q = new URLSearchParams({ since: since.value, until: until.value });
    if (kiosk.value) q.set("kiosk", kiosk.value);
    return q;
  };
  const syncCsv = () => {
    const q = query();
    q.set("format", "csv");
    setAttr(csv, "href", `/api/reports/movements?${q}`);
  };
  async function load() {
    syncCsv();
    setText(status, "Loading…");
    let r;
    try {
      r = await api("GET", `/api/reports/movements?${query()}`);
      problem("report", null);
    } catch (e) {
      setAttr(status, "class", "status error");
      setAttr(status, "data-state", "error");
      setText(status, `No report: ${e.message}`);
      return;
    }
    rows.replaceChildren(...r.movements.map((m) => h("tr", { "data-order": m.order_id, "data-event": m.event,
      "data-testid": "movement-row" },
      h("td", { text: fmtTime(m.at) }), h("td", { text: m.kiosk }), h("th", { scope: "row", text: m.order_id }),
      h("td", { text: words(m.event) }), h("td", { text: m.actor }), h("td", { text: m.patient_ref }),
      h("td", { text: detailText(m) }))));
    setAttr(status, "class", "status");
    setAttr(status, "data-state", "shown");
    setText(status, r.movements.length ? `${r.movements.length} movements from ${r.since} to ${r.until}.`
      : `No movement from ${r.since} to ${r.until}.`);
  }
  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
  for (const el of [kiosk, since, until]) el.addEventListener("change", syncCsv);
  (async () => {
    try {
      const ks = await api("GET", "/api/kiosks");
      kiosk.append(...ks.map((k) => k.id).sort().map((id) => h("option", { value: id, text: id })));
    } catch (e) {
      problem("report", e);
    }
    load();
  })();
  return { stop() {} };
}
