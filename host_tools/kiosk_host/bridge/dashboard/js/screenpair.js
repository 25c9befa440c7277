// The kiosk's screen, for the technician on a kiosk's page: a one-time
// link that pairs a tablet as this kiosk's screen (open it on the tablet
// within 10 minutes), and unpairing every screen of the kiosk.

import { api, kioskPath } from "./api.js";
import { h, setAttr, setText } from "./dom.js";
import { fmtTime } from "./format.js";

export function screenPairing(id) {
  const out = h("p", { id: "screen-pair-status", class: "status", role: "status", "aria-live": "polite",
    "data-testid": "screen-pair-status" });
  const link = h("a", { id: "screen-pair-link", "data-testid": "screen-pair-link", hidden: true });
  const say = (text, ok) => {
    setAttr(out, "class", ok ? "status" : "status error");
    setText(out, text);
  };
  const pair = h("button", { type: "button", "data-testid": "screen-pair", text: "Pair a screen" });
  pair.addEventListener("click", async () => {
    try {
      const r = await api("POST", `${kioskPath(id)}/screen-pairing`);
      const url = new URL(r.pair_url, location.origin).href;
      link.href = url;
      link.textContent = url;
      link.hidden = false;
      say(`Open this link on the kiosk's tablet before ${fmtTime(r.expires)}; it works once and ends the screens paired before.`, true);
    } catch (e) {
      say(`Pairing refused: ${e.message}`, false);
    }
  });
  const unpair = h("button", { type: "button", class: "plain", "data-testid": "screen-unpair", text: "Unpair all screens" });
  unpair.addEventListener("click", async () => {
    try {
      const r = await api("DELETE", `${kioskPath(id)}/screens`);
      link.hidden = true;
      say(`${r.revoked} screen credential${r.revoked === 1 ? "" : "s"} ended.`, true);
    } catch (e) {
      say(`Unpairing refused: ${e.message}`, false);
    }
  });
  return h("section", { id: "screen-pairing", class: "card", "aria-labelledby": "screen-h" },
    h("h2", { id: "screen-h", text: "Kiosk screen" }),
    h("p", { class: "muted small", text: "The tablet at the kiosk shows the patient what to do. It holds its own credential for this kiosk only." }),
    h("div", { class: "inline-form" }, pair, unpair),
    link, out);
}
