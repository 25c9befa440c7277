// The emulator's controls (demo only): the Simulate panel on a kiosk's page,
// shown when the bridge also serves the emulator's /api/sim routes.

import { api } from "./api.js";
import { h, setAttr, setText } from "./dom.js";
import { fmtC, words } from "./format.js";

export async function setupSim(id, box, getKiosk) {
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
  // The scanner: a package's label during a restock, or a patient's code.
  const code = h("input", { id: "sim-scan-text", maxlength: 256, autocomplete: "off", placeholder: "label or code",
    "data-testid": "sim-scan-text" });
  const scanForm = h("form", { id: "sim-scan-form", class: "inline-form" },
    h("label", { for: "sim-scan-text", text: "Scanner" }), code,
    h("button", { type: "submit", "data-testid": "sim-scan", text: "Scan" }),
    h("button", { type: "button", class: "plain", "data-testid": "sim-call", text: "Call a pharmacist",
      onclick: toggle("button", { name: "call_pharmacist" }, "The patient pressed “call a pharmacist”.") }));
  scanForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api("POST", `/api/sim/${encodeURIComponent(id)}/scan`, { text: code.value });
      show(`Scanned "${code.value}" at the kiosk.`, true);
    } catch (err) {
      show(`Scan refused: ${err.message}`, false);
    }
  });
  box.replaceChildren(
    h("h2", { id: "sim-h", text: "Simulate" }),
    h("p", { class: "muted small", text: "The emulated kiosk's surroundings: a patient at a door, the room's temperature, the scanner. A door must stay open about 2 s before it counts." }),
    h("div", { class: "inline-form" },
      h("label", { for: "sim-door", text: "Door" }), doorSel,
      h("button", { type: "button", "data-testid": "sim-open", onclick: door("open"), text: "Open" }),
      h("button", { type: "button", "data-testid": "sim-close", onclick: door("close"), text: "Close" }),
      h("button", { type: "button", "data-testid": "sim-force", class: "danger", onclick: door("force"), text: "Force open" })),
    form,
    scanForm,
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
