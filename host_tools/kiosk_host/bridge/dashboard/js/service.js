// The technician's Service panel on a kiosk's page: open and end a service
// session, the kiosk's orders to stock and to take back (each one click),
// restock by hand, verify a bin, run the self-test, home, jog and unlock a
// door, each followed live with the door prompt of its step (track.js)
// and, when refused, what happened and what to do next.

import { api, kioskPath } from "./api.js";
import { gridTable, h, setAttr, setText, syncRows } from "./dom.js";
import { words } from "./format.js";
import { POLL_MS, poller, problem } from "./live.js";
import { track } from "./track.js";

export function servicePanel(id, box, { getKiosk, onChange }) {
  const out = h("p", { id: "svc-status", class: "status", role: "status", "aria-live": "polite", "data-testid": "svc-status" });
  const session = h("p", { id: "svc-session", "data-testid": "svc-session" });
  let running = null;
  const buttons = [];

  function run(label, method, path, body, op, args) {
    if (running) running.stop();
    buttons.forEach((b) => { b.disabled = true; });
    const mine = track(out, label, method, `${kioskPath(id)}${path}`, body, op, args, () => {
      if (running !== mine) return;      // a later request took over the panel
      running = null;
      buttons.forEach((b) => { b.disabled = false; });
      update();
      ordersPoll.poke();
      onChange();
    });
    running = mine;
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

  // The kiosk's orders: sent by the pharmacy system and not in a bin yet
  // (the bridge picks the bin), and expired or cancelled ones still in a
  // bin (the pharmacy's queue lists them as "back to stock").
  const stockRow = (o) => {
    const args = { order: o.order_id };
    run(`Restock of ${o.order_id}`, "POST", "/restocks", { order_id: o.order_id }, "restock", args);
  };
  const takeRow = (o) => {
    const args = { order: o.order_id, bin: o.bin };
    run(`Retrieval of ${o.order_id} from bin ${o.bin}`, "POST", "/retrievals", { order_id: o.order_id }, "retrieve", args);
  };
  const toStock = h("tbody");
  const toTake = h("tbody");
  const notes = { stock: h("p", { class: "muted small" }), take: h("p", { class: "muted small" }) };
  let orders = new Map();
  const showOrders = (tbody, list, cls, create, update) => {
    syncRows(tbody, list.map((o) => o.order_id), (key) => {
      const b = h("button", { type: "button", "data-testid": cls, class: "plain",
        onclick: () => create(orders.get(key)) });
      buttons.push(b);
      b.disabled = !!running;
      return h("tr", { "data-order": key, "data-testid": `${cls}-row` }, h("th", { scope: "row", text: key }),
        h("td"), h("td", {}, b));
    }, (tr, key) => update(tr, orders.get(key)));
  };
  const ordersPoll = poller(async () => {
    let received, expired, cancelled;
    try {
      const q = (state) => api("GET", `/api/orders?kiosk=${encodeURIComponent(id)}&state=${state}`);
      [received, expired, cancelled] = await Promise.all([q("received"), q("expired"), q("cancelled")]);
      problem("svc-orders", null);
    } catch (e) {
      problem("svc-orders", e);
      return;
    }
    const back = [...expired, ...cancelled].filter((o) => o.return_to_stock && o.bin);
    orders = new Map([...received, ...back].map((o) => [o.order_id, o]));
    showOrders(toStock, received, "svc-stock-order", stockRow, (tr, o) => {
      setText(tr.children[1], (o.items || []).map((i) => `${i.name} ×${i.qty}`).join(", ") || "—");
      setText(tr.children[2].firstChild, "Stock it");
    });
    showOrders(toTake, back, "svc-take-order", takeRow, (tr, o) => {
      setText(tr.children[1], `bin ${o.bin}, ${words(o.state)}`);
      setText(tr.children[2].firstChild, "Take it back");
    });
    toStock.closest(".scroll").hidden = !received.length;
    toTake.closest(".scroll").hidden = !back.length;
    setText(notes.stock, received.length ? "The bridge picks a free bin; scan the package's label when asked."
      : "No order is waiting to be stocked here.");
    setText(notes.take, back.length ? "Take these out of their bins and back to the pharmacy's stock."
      : "Nothing to take back.");
  }, POLL_MS * 2);

  // Restock by hand: any order (one the pharmacy system never sent needs a bin).
  const rOrder = h("input", { id: "svc-order", name: "order_id", required: true, maxlength: 64, autocomplete: "off", "data-testid": "svc-order" });
  const rBin = number("bin", { min: 1, placeholder: "any free one" });
  const restock = h("form", { id: "svc-restock", class: "stack-form", "data-testid": "svc-restock" },
    h("label", { for: "svc-order", text: "Order id" }), rOrder,
    h("label", { for: "svc-bin", text: "Bin" }), rBin,
    submit("Restock", "svc-restock-submit"));
  restock.addEventListener("submit", (e) => {
    e.preventDefault();
    const args = { order: rOrder.value.trim() };
    const body = { order_id: args.order };
    if (rBin.value !== "") body.bin = args.bin = Number(rBin.value);
    run(`Restock of ${args.order}${args.bin ? ` into bin ${args.bin}` : ""}`, "POST", "/restocks", body, "restock", args);
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
    h("h3", { text: "Orders to stock" }), notes.stock,
    gridTable("svc-to-stock", "Orders waiting to be stocked in this kiosk", ["Order", "Items", ""], toStock),
    h("h3", { text: "Orders to take back" }), notes.take,
    gridTable("svc-to-take", "Expired or cancelled orders still in their bins", ["Order", "Where", ""], toTake),
    h("h3", { text: "Restock by hand" }),
    h("p", { class: "muted small", text: "Leave the bin empty and the bridge picks a free one; an order the pharmacy system never sent needs one." }),
    restock,
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
  return { update, stop() { if (running) running.stop(); ordersPoll.stop(); } };
}
