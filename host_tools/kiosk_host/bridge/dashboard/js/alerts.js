// The alerts page (/alerts): what has been raised (bridge/alerts.py), who
// was told and whether the message went out, acknowledging an alert (so it
// is not escalated; people at the kiosks may: pharmacists, technicians,
// admins), the ones resolved lately, and the rules in force.

import { api } from "./api.js";
import { h, setAttr, setText, syncRows } from "./dom.js";
import { SEVERITY_TEXT, fmtAge, fmtTime, words } from "./format.js";
import { POLL_MS, poller, problem } from "./live.js";
import { may } from "./session.js";

const RESOLVED_SHOWN = 30;

function messagesText(a) {
  if (!(a.messages || []).length) return "no channel: shown here only";
  return a.messages.map((m) => `${words(m.event)} → ${m.channel}: ${m.state === "sent" ? `sent ${fmtTime(m.sent)}`
    : m.state === "failed" ? `gave up after ${m.attempts} tries (${m.error})`
      : m.attempts ? `retrying (${m.attempts} failed: ${m.error})` : "sending"}`).join("\n");
}

export function alertsView() {
  document.title = "Alerts";
  const main = document.getElementById("main");
  const open = h("tbody");
  const resolved = h("tbody");
  const note = h("p", { id: "alerts-note", class: "muted", text: "Loading the alerts…" });
  const status = h("p", { id: "ack-status", class: "status", role: "status", "aria-live": "polite", "data-testid": "ack-status" });
  const rules = h("ul", { id: "alert-rules", class: "plain-list small" });
  main.replaceChildren(
    h("p", { class: "crumbs" }, h("a", { href: "/", "data-route": true, text: "← Fleet" })),
    h("h1", { text: "Alerts" }),
    note,
    h("div", { class: "scroll" },
      h("table", { id: "alerts-table", class: "grid", "data-testid": "alerts-table" },
        h("caption", { text: "Open alerts, newest first" }),
        h("thead", {}, h("tr", {}, ["Level", "Kiosk", "What", "Raised", "Told", "Taken on"].map((t) => h("th", { scope: "col", text: t })))),
        open)),
    status,
    h("div", { class: "scroll" },
      h("table", { id: "resolved-table", class: "grid", "data-testid": "resolved-table" },
        h("caption", { text: "Resolved lately" }),
        h("thead", {}, h("tr", {}, ["Kiosk", "What", "Raised", "Resolved", "Taken on by"].map((t) => h("th", { scope: "col", text: t })))),
        resolved)),
    h("section", { class: "card", "aria-labelledby": "rules-h" },
      h("h2", { id: "rules-h", text: "Rules in force" }), rules),
  );

  function ackForm(a) {
    if (!may("acknowledge_alert")) return h("span", { class: "muted", text: "nobody yet" });
    const what = h("input", { name: "note", maxlength: 500, placeholder: "what you will do (optional)", "aria-label": "What you will do",
      class: "wide-input", "data-testid": `ack-note-${a.id}` });
    const button = h("button", { type: "submit", text: "Acknowledge", "data-testid": `ack-${a.id}` });
    const form = h("form", { class: "inline-form" }, what, button);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      button.disabled = true;
      try {
        await api("POST", `/api/alerts/${encodeURIComponent(a.id)}/ack`, { note: what.value.trim() || null });
        setAttr(status, "class", "status state succeeded");
        setText(status, `Alert on ${a.kiosk} acknowledged: it will not be escalated.`);
        poll.poke();
      } catch (err) {
        setAttr(status, "class", "status error");
        setText(status, `Acknowledge refused: ${err.message}`);
        button.disabled = false;
      }
    });
    return form;
  }

  const kioskCell = (a) => (a.kiosk === "-" ? h("td", { text: "the bridge" })
    : h("td", {}, h("a", { href: `/kiosk/${encodeURIComponent(a.kiosk)}`, "data-route": true, text: a.kiosk })));

  const poll = poller(async () => {
    let list, all;
    try {
      [list, all] = await Promise.all([api("GET", "/api/alerts?state=open"), api("GET", `/api/alerts?state=all&limit=${RESOLVED_SHOWN * 2}`)]);
      problem("alerts", null);
    } catch (e) {
      problem("alerts", e);
      return;
    }
    const now = Date.now() / 1000;
    syncRows(open, list.map((a) => a.id), (id) => {
      const a = list.find((x) => x.id === id);
      return h("tr", { "data-alert": id, "data-testid": "alert-row", "data-kiosk": a.kiosk, "data-code": a.code },
        h("td", {}, h("span", { class: `sev ${a.level}`, text: SEVERITY_TEXT[a.level] || a.level })), kioskCell(a),
        h("td", { text: a.text }), h("td", { class: "nowrap" }), h("td", { class: "small" }), h("td", {}));
    }, (tr, id) => {
      const a = list.find((x) => x.id === id);
      setAttr(tr, "data-state", a.state);
      setText(tr.children[3], `${fmtTime(a.opened)} (${fmtAge(now - a.opened)})${a.escalated ? `\nescalated ${fmtTime(a.escalated)}` : ""}`);
      setText(tr.children[4], messagesText(a));
      const cell = tr.children[5];
      if (a.acked && cell.dataset.acked !== "1") {
        cell.dataset.acked = "1";
        cell.replaceChildren(`${a.acked_by} at ${fmtTime(a.acked)}${a.ack_note ? `: ${a.ack_note}` : ""}`);
      } else if (!a.acked && !cell.firstChild) {
        cell.replaceChildren(ackForm(a));
      }
    });
    const done = all.filter((a) => a.state === "resolved").slice(0, RESOLVED_SHOWN);
    syncRows(resolved, done.map((a) => a.id), (id) => {
      const a = done.find((x) => x.id === id);
      return h("tr", { "data-alert": id, "data-testid": "resolved-row" }, kioskCell(a), h("td", { text: a.text }),
        h("td", { class: "nowrap", text: fmtTime(a.opened) }), h("td", { class: "nowrap", text: fmtTime(a.resolved) }),
        h("td", { text: a.acked_by || "nobody" }));
    }, () => {});
    const unacked = list.filter((a) => !a.acked).length;
    setText(note, list.length ? `${list.length} open alert${list.length === 1 ? "" : "s"}, ${unacked} not yet taken on.` : "No open alerts.");
  }, POLL_MS);

  api("GET", "/api/alerts/rules").then((r) => {
    const chans = r.channels || {};
    const told = (names) => (names.length ? names.map((n) => (chans[n] ? `${n} (${chans[n].to})` : n)).join(", ") : "nobody (shown here only)");
    rules.replaceChildren(...(r.rules || []).map((x) => h("li", {
      text: `${x.name}: ${x.when.map(words).join(", ")}${x.for_s ? ` lasting ${x.for_s} s` : ""} → ${told(x.notify)}`
        + (x.escalate_after_s !== null ? `; not taken on after ${x.escalate_after_s} s → ${told(x.escalate_to.length ? x.escalate_to : x.notify)}` : ""),
    })), h("li", { class: "muted", text: r.source ? `From ${r.source}.` : "This bridge runs no alert rules." }));
  }).catch((e) => problem("alert-rules", e));

  return { stop() { poll.stop(); problem("alerts", null); problem("alert-rules", null); } };
}
