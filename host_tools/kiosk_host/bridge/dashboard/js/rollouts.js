// The fleet page's firmware rollouts (docs/ota.md): the running ones, and
// those that ended in the last day, with each kiosk's state as it goes
// (pending, transferring with how much it has, staged, rebooting,
// confirmed, rolled back or failed, and why).

import { api } from "./api.js";
import { h } from "./dom.js";
import { fmtTime, words } from "./format.js";

const RECENT_S = 24 * 3600;
const CLASS = { confirmed: "ok", rolled_back: "alarm", failed: "alarm" };

export function rolloutsPanel() {
  const list = h("div", { id: "rollouts", "data-testid": "rollouts" });
  const el = h("section", { id: "rollouts-section", hidden: true },
    h("h2", { text: "Firmware rollouts" }), list);

  async function refresh() {
    const all = await api("GET", "/api/rollouts?limit=10");
    const now = Date.now() / 1000;
    const shown = all.filter((r) => r.state === "running" || now - r.updated < RECENT_S);
    el.hidden = shown.length === 0;
    const key = JSON.stringify(shown.map((r) => [r.rollout_id, r.state, r.detail]));
    if (list.dataset.key === key) return;
    list.dataset.key = key;
    list.replaceChildren(...shown.map(card));
  }
  return { el, refresh };
}

function kioskLine(id, d) {
  let text = `${id}: ${words(d.state)}`;
  if (d.state === "transferring" && d.size) text += ` (${Math.floor((100 * d.bytes) / d.size)} %)`;
  if (d.reason) text += ` — ${d.reason}`;
  return h("li", { "data-kiosk": id, "data-state": d.state, class: CLASS[d.state] || "", text });
}

function card(r) {
  const ids = Object.keys(r.kiosks);
  const canary = r.canary && r.canary < ids.length ? `, ${r.canary} canary first` : "";
  return h("article", { class: "rollout card", "data-rollout": r.rollout_id, "data-state": r.state },
    h("p", {},
      h("strong", { text: `Firmware ${r.version}` }),
      h("span", { class: `badge ${r.state === "halted" ? "bad" : "ok"}`, "data-field": "state", text: words(r.state) }),
      h("span", { class: "muted small", text: ` ${ids.length} kiosk${ids.length === 1 ? "" : "s"}${canary}; `
        + `started ${fmtTime(r.created)} by ${r.created_by ?? "?"}` })),
    r.reason ? h("p", { class: "alarm", "data-field": "reason", text: `Halted: ${r.reason}` }) : "",
    h("ul", { class: "plain-list" }, ids.map((id) => kioskLine(id, r.detail[id]))));
}
