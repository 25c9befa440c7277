// The bridge's dashboard: the fleet at /, one kiosk at /kiosk/{id}, the
// alerts at /alerts, the pharmacist's queue at /pharmacy, people and sites
// at /people, the access log at /access-log, reports at /reports, one's own account at
// /account, the login at /login. Plain JavaScript, no build step, no third-party code.
// Everything it shows comes from the bridge's JSON API (see /docs), as the
// logged-in user; in `kiosk-bridge demo` the emulator's /api/sim routes add
// a "Simulate" panel.
//
// Loaded as an ES module; the page's other modules are in this folder.

import { accountView } from "./account.js";
import { alertsView } from "./alerts.js";
import { api } from "./api.js";
import { h } from "./dom.js";
import { fleetView } from "./fleet.js";
import { zoneText } from "./format.js";
import { kioskView } from "./kiosk.js";
import { problem, problems, watchBridge } from "./live.js";
import { loginView } from "./login.js";
import { accessLogView, peopleView } from "./people.js";
import { pharmacyView } from "./pharmacy.js";
import { reportsView } from "./reports.js";
import { loadSession, may, session, setSession } from "./session.js";

// The pages besides the fleet: a path pattern and the view it shows, given
// the pattern's groups. Any other path shows the fleet. (The bridge serves
// index.html for each path: api/dashboard.py.)
const PAGES = [
  [/^\/kiosk\/([^/]+)\/?$/, (id) => kioskView(decodeURIComponent(id))],
  [/^\/alerts\/?$/, () => alertsView()],
  [/^\/pharmacy\/?$/, () => pharmacyView()],
  [/^\/people\/?$/, () => peopleView()],
  [/^\/access-log\/?$/, () => accessLogView()],
  [/^\/reports\/?$/, () => reportsView()],
  [/^\/account\/?$/, () => accountView()],
];

let view = null;

// Who is logged in, and the way out, in the header.
function showUser() {
  const box = document.getElementById("user");
  const s = session();
  document.getElementById("alerts-link").hidden = !s;
  if (!s) {
    box.replaceChildren();
    return;
  }
  const out = h("button", { type: "button", id: "logout", class: "plain", "data-testid": "logout", text: "Log out" });
  out.addEventListener("click", async () => {
    try { await api("DELETE", "/api/session"); } catch { /* gone already */ }
    setSession(null);
    navigate("/login");
  });
  box.replaceChildren(
    may("order_read") ? h("a", { href: "/pharmacy", "data-route": true, id: "queue-link", "data-testid": "queue-link",
      text: "Pharmacy queue" }) : "",
    may("manage") ? h("a", { href: "/people", "data-route": true, id: "people-link", "data-testid": "people-link",
      text: "People" }) : "",
    may("audit") ? h("a", { href: "/reports", "data-route": true, id: "reports-link", "data-testid": "reports-link",
      text: "Reports" }) : "",
    may("audit") ? h("a", { href: "/access-log", "data-route": true, id: "access-link", "data-testid": "access-link",
      text: "Access log" }) : "",
    h("a", { href: "/account", "data-route": true, id: "who", "data-testid": "who", "data-role": s.role,
      title: "Your account: change your password", text: `${s.name} (${s.role.replace(/_/g, " ")})` }),
    out);
}

async function route() {
  if (view) view.stop();
  view = null;
  problems.clear();
  problem("route", null);
  if (location.pathname === "/login") {
    setSession(null);
    showUser();
    view = loginView(navigate);
    return;
  }
  if (!session()) {
    try {
      if (!(await loadSession())) {
        location.replace(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
        return;
      }
    } catch (e) {
      problem("route", e);
      return;
    }
  }
  showUser();
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
