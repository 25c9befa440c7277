// The bridge's dashboard: the fleet at /, one kiosk at /kiosk/{id}, the
// alerts at /alerts.
// Plain JavaScript, no build step, no third-party code. Everything it shows
// comes from the bridge's JSON API (see /docs); in `kiosk-bridge demo` the
// emulator's /api/sim routes add a "Simulate" panel.
//
// Loaded as an ES module; the page's other modules are in this folder.

import { alertsView } from "./alerts.js";
import { fleetView } from "./fleet.js";
import { kioskView } from "./kiosk.js";
import { zoneText } from "./format.js";
import { problem, problems, watchBridge } from "./live.js";

// The pages besides the fleet: a path pattern and the view it shows, given
// the pattern's groups. Any other path shows the fleet. (The bridge serves
// index.html for each path: api/dashboard.py.)
const PAGES = [
  [/^\/kiosk\/([^/]+)\/?$/, (id) => kioskView(decodeURIComponent(id))],
  [/^\/alerts\/?$/, () => alertsView()],
];

let view = null;

function route() {
  if (view) view.stop();
  problems.clear();
  problem("route", null);
  for (const [pattern, show] of PAGES) {
    const m = location.pathname.match(pattern);
    if (m) {
      view = show(...m.slice(1));
      return;
    }
  }
  view = fleetView();
}

function navigate(path) {
  if (path !== location.pathname) history.pushState(null, "", path);
  route();
  window.scrollTo(0, 0);
}

document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-route]");
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  navigate(a.getAttribute("href"));
});
window.addEventListener("popstate", route);

document.getElementById("zone").textContent = `Times are local, ${zoneText()}.`;
watchBridge();
route();
