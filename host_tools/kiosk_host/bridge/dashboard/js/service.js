// The technician's Service panel on a kiosk's page: open and end a service
// session, restock a bin, verify a bin, run the self-test, home, jog and
// unlock a door, each followed live with the door prompt of its step
// (track.js) and, when refused, what happened and what to do next.

import { kioskPath } from "./api.js";
import { h, setAttr, setText } from "./dom.js";
import { track } from "./track.js";

export function servicePanel(id, box, { getKiosk, onChange }) {
  const out = h("p", { id: "svc-status", class: "status", role: "status", "aria-live": "polite", "data-testid": "svc-status" });
  const session = h("p", { id: "svc-session", "data-testid": "svc-session" });
  let running = null;
  const buttons = [];

  function run(label, method, path, body, op, args) {
    if (running) running.stop();
    buttons.forEach((b) => { b.disabled = true; });
    running = track(out, label, method, `${kioskPath(id)}${path}`, body, op, args, () => {
      buttons.forEach((b) => { b.disabled = false; });
      update();
      onChange();
    });
    onChange();
  }
  const button = (text, testid, onclick, cls) => {
    const b = h("button", { type: "button", "data-testid": testid, text, class: cls });
    b.addEventListener("click", onclick);
    buttons.push(b);
    return b;
  };
  const submit = (text, testid) => {
    const b = h("button", { type: "submit", "data-testid": testid, text });
    buttons.push(b);
    return b;
  };
  const number = (name, attrs) => h("input", { id: `svc-${name}`, name, type: "number", step: 1, inputmode: "numeric",
    "data-testid": `svc-${name}`, ...attrs });

  // Session.
  const start = button("Start service session", "svc-start", () => run("Service session", "POST", "/service", {}, "service_start", {}));
  const end = button("End service session", "svc-end", () => run("End of the service session", "DELETE", "/service", undefined, "service_end", {}), "plain");

  // Restock.
  const rOrder = h("input", { id: "svc-order", name: "order_id", required: true, maxlength: 64, autocomplete: "off", "data-testid": "svc-order" });
  const rBin = number("bin", { required: true, min: 1 });
  const restock = h("form", { id: "svc-restock", class: "stack-form", "data-testid": "svc-restock" },
    h("label", { for: "svc-order", text: "Order id" }), rOrder,
    h("label", { for: "svc-bin", text: "Bin" }), rBin,
    submit("Restock", "svc-restock-submit"));
  restock.addEventListener("submit", (e) => {
    e.preventDefault();
    const args = { order: rOrder.value.trim(), bin: Number(rBin.value) };
    run(`Restock of ${args.order} into bin ${args.bin}`, "POST", "/restocks", { order_id: args.order, bin: args.bin }, "restock", args);
  });

  // Verify a bin.
  const vBin = number("verify-bin", { required: true, min: 1 });
  const vPresent = h("select", { id: "svc-verify-present", "data-testid": "svc-verify-present" },
    h("option", { value: "true", text: "its package is there" }), h("option", { value: "false", text: "it is empty" }));
  const verify = h("form", { id: "svc-verify", class: "inline-form", "data-testid": "svc-verify" },
    h("label", { for: "svc-verify-bin", text: "Verify bin" }), vBin,
    h("label", { for: "svc-verify-present", text: "and found" }), vPresent,
    submit("Verify", "svc-verify-submit"));
  verify.addEventListener("submit", (e) => {
    e.preventDefault();
    const args = { bin: Number(vBin.value), present: vPresent.value === "true" };
    run(`Verification of bin ${args.bin}`, "POST", "/commands", { op: "verify_bin", args }, "verify_bin", args);
  });

  // Motion and tests.
  const jogBins = number("jog", { value: 1, min: -100, max: 100 });
  const door = h("select", { id: "svc-door", "data-testid": "svc-door" },
    h("option", { value: "service", text: "service door" }), h("option", { value: "pickup", text: "pickup door" }));
  const tools = h("div", { class: "inline-form" },
    button("Self-test", "svc-selftest", () => run("Self-test", "POST", "/commands", { op: "selftest", args: {} }, "selftest", {}), "plain"),
    button("Home", "svc-home", () => run("Homing", "POST", "/commands", { op: "home", args: {} }, "home", {}), "plain"),
    h("label", { for: "svc-jog", text: "Jog" }), jogBins,
    button("Jog", "svc-jog-submit", () => {
      const args = { bins: Number(jogBins.value) };
      run(`Jog of ${args.bins} bins`, "POST", "/commands", { op: "jog", args }, "jog", args);
    }, "plain"),
    h("label", { for: "svc-door", text: "Unlock" }), door,
    button("Unlock", "svc-unlock", () => {
      const args = { door: door.value };
      run(`Unlock of the ${args.door} door`, "POST", "/commands", { op: "unlock", args }, "unlock", args);
    }, "plain"));

  box.replaceChildren(
    h("h2", { id: "svc-h", text: "Service" }),
    h("p", { class: "muted small", text: "For the technician at the kiosk: restocking, verifying bins, tests and motion need an open service session; pickups wait while one is open." }),
    session, h("div", { class: "inline-form" }, start, end),
    h("h3", { text: "Restock a bin" }), restock,
    h("h3", { text: "Verify a bin" }), verify,
    h("h3", { text: "Tests and motion" }), tools,
    out);

  function update() {
    const k = getKiosk();
    if (!k) return;
    const open = !!k.service;
    setText(session, open ? "A service session is open." : "No service session is open.");
    setAttr(session, "data-open", open ? "true" : "false");
    setAttr(session, "class", open ? "state in_progress" : "muted");
    start.hidden = open;
    end.hidden = !open;
  }
  return { update, stop() { if (running) running.stop(); } };
}
