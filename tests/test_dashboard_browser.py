"""The dashboard in a real browser: headless Chromium (Debian's, driven by
Playwright) against the bridge with emulated kiosks on a real mosquitto and
the emulator's /api/sim routes on the same port, as `kiosk-bridge demo`
serves them.

A technician restocks a bin through the API; then a pharmacist logs in on
the page, the kiosk shows online, a pickup is requested through the form,
the patient opens and closes the door through the Simulate panel, and the
command's state, who asked, the event log and the fleet view's last pickup
follow live. An excursion is cleared with its button and a reason, a
refused request shows the API's reason, and a kiosk that loses power shows
offline with why.

Then the people: a technician and a pharmacist each do what their role may
and are refused what it may not, and see only their own controls; a page
on another origin cannot change anything through a logged-in browser; and
a page reached through a foreign host name (DNS rebinding) gets nothing."""

from __future__ import annotations

import json
import shutil
import threading
import time
import http.server
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Page, expect, sync_playwright

from bridge_support import new_order, scan_label, wait_until
from kiosk_host.bridge.alerts import Alerter, Rules
from kiosk_host.bridge.api import create_app
from kiosk_host.bridge.api.auth import guarded
from kiosk_host.bridge.config import Keys
from kiosk_host.bridge.people import People
from kiosk_host.bridge.service import Bridge
from kiosk_host.bridge.store import Store
from kiosk_host.emulator.fleet import Fleet
from kiosk_host.emulator.routes import sim_router
from link_support import Mosquitto, free_port

POLICIES = {"door_open_timeout_s": 10, "telemetry_period_s": 2, "sample_period_s": 1}
TERMINAL = ("succeeded", "failed", "timed_out", "rejected", "cancelled")
DEBOUNCE_S = 1.6                  # a door must stay open this long before closing counts
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# The shipped rules (bridge/alert_rules.toml) with no waiting, so alerts show at once.
RULES = """
[[rules]]
name = "temperature"
when = ["excursion", "temperature_out_of_limits"]
escalate_after_s = 900
[[rules]]
name = "door"
when = ["door_forced", "door_held_open", "door_open", "bolt_not_engaged"]
for_s = 2
[[rules]]
name = "offline"
when = ["offline"]
for_s = 5
"""


class Site:
    """mosquitto, two emulated kiosks, the bridge with its API, dashboard and
    /api/sim served by uvicorn in a thread."""

    def __init__(self, root: Path):
        self.broker = Mosquitto(root / "mq").start()
        url = f"mqtt://127.0.0.1:{self.broker.port}"
        self.fleet = Fleet(url, 2, root / "kiosks", root / "keys", policies=POLICIES, keepalive_s=2).start()
        self.store = Store(f"sqlite:///{root / 'bridge.sqlite3'}")
        self.bridge = Bridge(url, self.store, Keys(root / "keys")).start()
        self.people = People(self.store)
        self.passwords = {}
        self.tokens = {}
        for role in ("pharmacist", "technician", "viewer", "admin", "pharmacy_system"):
            name = f"{role[:5]}.{role}"
            self.passwords[role] = (name, f"a password for {role}s")
            self.people.add_user(name, role, password=self.passwords[role][1])
            self.tokens[role] = self.people.issue_token(name)[1]
        self.bridge.alerter = Alerter(self.bridge, Rules(RULES, "test rules")).start()
        app = create_app(self.bridge, [guarded(sim_router(self.fleet), "simulate")], title="Kiosk bridge (test)",
                         people=self.people)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, name="dashboard-http", daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, 20, "the HTTP server up")

    def call(self, method: str, path: str, body=None, who: str = "technician", headers: dict | None = None):
        """An API call as `who` (a role) with its token."""
        req = urllib.request.Request(self.base + path, None if body is None else json.dumps(body).encode(),
                                     {"content-type": "application/json", "authorization": f"Bearer {self.tokens[who]}",
                                      **(headers or {})}, method=method)
        try:
            with _HTTP.open(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def get(self, path: str):
        status, body = self.call("GET", path)
        assert status == 200, (path, status, body)
        return body

    def command(self, method: str, path: str, body=None, door: str | None = None, kid: str = "kiosk-001",
                label: str | None = None) -> dict:
        status, r = self.call(method, path, body)
        assert status == 202, (path, status, r)
        if label:
            assert scan_label(lambda cid: self.get(f"/api/commands/{cid}"),
                              lambda text: self.call("POST", f"/api/sim/{kid}/scan", {"text": text}),
                              r["command_id"], label)
        if door:
            self.wait_unlocked(kid, door)
            self.hold_door(kid, door)
        c = wait_until(lambda: (lambda c: c if c["state"] in TERMINAL else None)(
            self.get(f"/api/commands/{r['command_id']}")), 40, f"{path} to end")
        assert c["state"] == "succeeded", c
        return c

    def wait_unlocked(self, kid: str, door: str) -> None:
        wait_until(lambda: self.get(f"/api/sim/{kid}")["world"]["locks"][door]["energized"], 20, f"{door} unlocked")

    def hold_door(self, kid: str, door: str) -> None:
        assert self.call("POST", f"/api/sim/{kid}/door", {"door": door, "action": "open"})[1]["door"] == "open"
        time.sleep(DEBOUNCE_S)
        self.call("POST", f"/api/sim/{kid}/door", {"door": door, "action": "close"})

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.bridge.alerter.stop()
        self.bridge.stop()
        self.fleet.stop()
        self.broker.stop()
        self.store.close()


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    yield s
    s.close()


@pytest.fixture
def page():
    exe = shutil.which("chromium")
    assert exe, "Debian's chromium is needed (apt-get install chromium; .ci/run installs it)"
    with sync_playwright() as p:
        # rebind.test resolves to this machine, as a DNS-rebinding attacker's name would.
        browser = p.chromium.launch(executable_path=exe, headless=True,
                                    args=["--no-sandbox", "--host-resolver-rules=MAP rebind.test 127.0.0.1"])
        pg = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
        pg.errors = []
        pg.on("pageerror", lambda e: pg.errors.append(str(e)))
        try:
            yield pg
        finally:
            browser.close()


def login(page: Page, site: Site, role: str, then: str = "/") -> None:
    """Log in through the login page, as a person does."""
    name, password = site.passwords[role]
    page.goto(site.base + then)
    expect(page).to_have_url(site.base + "/login?next=" + urllib.parse.quote(then, safe=""))
    page.fill("#login-name", name)
    page.fill("#login-password", password)
    page.click("#login-submit")
    expect(page).to_have_url(site.base + then)
    expect(page.locator("#who")).to_have_text(f"{name} ({role})")


def test_pickup_from_the_dashboard_with_live_status_events_and_fleet_view(site: Site, page: Page):
    kid = "kiosk-001"
    expect.set_options(timeout=20_000)

    # The fleet view fills in by itself once the kiosks are up.
    login(page, site, "pharmacist")
    row = page.locator(f'#fleet-table tr[data-kiosk="{kid}"]')
    expect(row).to_have_attribute("data-online", "true", timeout=40_000)
    expect(page.locator('#fleet-table tr[data-kiosk="kiosk-002"]')).to_have_attribute("data-online", "true")
    expect(row.locator('[data-field="state"]')).to_have_text("online")
    expect(row.locator('[data-field="pickup"]')).to_have_text("none yet")
    wait_until(lambda: all(d.get("door") == "closed" for d in site.get(f"/api/kiosks/{kid}")["doors"].values())
               and len(site.get(f"/api/kiosks/{kid}")["doors"]) == 2, 30, "the door inputs settled")
    expect(row.locator('[data-field="doors"]')).to_contain_text("pickup: closed, bolt engaged")

    # A hot shelf for a few seconds: an excursion that starts and ends.
    site.call("POST", f"/api/sim/{kid}/sensor", {"sensor": "shelf_top", "celsius": 33.0})
    # The technician loads order rx-700 into bin 5 (API and the service door).
    assert site.call("POST", "/api/orders", new_order("rx-700", kid), who="pharmacy_system")[0] == 201
    site.command("POST", f"/api/kiosks/{kid}/service", {"session": "tech-1"})
    site.command("POST", f"/api/kiosks/{kid}/restocks", {"order_id": "rx-700", "bin": 5}, door="service",
                 label="rx-700")
    site.command("DELETE", f"/api/kiosks/{kid}/service")
    assert site.call("POST", "/api/orders/rx-700/release", {"counselling": "not_required"}, who="pharmacist")[0] == 200
    wait_until(lambda: site.get(f"/api/kiosks/{kid}")["excursions_open"] == 1, 20, "the excursion recorded")
    site.call("POST", f"/api/sim/{kid}/sensor", {"sensor": "shelf_top", "celsius": 22.0})
    expect(row.locator('[data-field="problems"]')).to_contain_text("excursion")

    # To the kiosk's page, by its link (a client-side route).
    row.locator("a").click()
    expect(page).to_have_url(site.base + f"/kiosk/{kid}")
    expect(page.locator("#kiosk-state")).to_have_attribute("data-online", "true")
    expect(page.locator("#kiosk-stock")).to_contain_text("bin 5: rx-700")
    expect(page.locator('#doors-table tr[data-door="pickup"] [data-field="door"]')).to_have_text("closed")
    expect(page.locator("#sim")).to_be_visible()
    events = page.locator("#event-log tbody tr")
    expect(page.locator('#event-log tr[data-kind="restock"]')).to_contain_text("Order rx-700 loaded into bin 5")
    before = events.count()
    first_seq = int(events.first.get_attribute("data-seq"))
    seqs = [int(s) for s in events.evaluate_all("rows => rows.map(r => r.dataset.seq)")]
    assert seqs == sorted(seqs, reverse=True), "the event log is newest first"

    # The temperature chart: a line per sensor, the band shaded, the limits drawn.
    chart = page.locator('svg[data-testid="chart-shelf_top"]')
    expect(chart.locator('[data-testid="series"]')).to_have_count(1)
    assert int(chart.get_attribute("data-readings")) >= 2
    expect(chart.locator('[data-testid="band"]')).to_have_count(1)
    assert sorted(float(x) for x in chart.locator('[data-testid="limit"]').evaluate_all(
        "ls => ls.map(l => l.dataset.c)")) == [15.0, 30.0]
    band_h = float(chart.locator('[data-testid="band"]').get_attribute("height"))
    assert band_h > 0

    # A request the API refuses: its reason, shown as it came.
    page.fill("#pickup-order", "rx-700")
    page.fill("#pickup-bin", "99")
    page.click("#pickup-submit")
    status = page.locator("#pickup-status")
    expect(status).to_have_attribute("data-state", "error")
    expect(status).to_contain_text("Pickup of rx-700 from bin 99 refused")
    expect(status).to_contain_text("bin")

    # The pickup: the form, then the patient at the door through Simulate.
    page.fill("#pickup-bin", "5")
    page.click("#pickup-submit")
    expect(status).to_have_attribute("data-state", "in_progress")
    cid = status.get_attribute("data-command")
    assert cid
    site.wait_unlocked(kid, "pickup")
    page.select_option("#sim-door", "pickup")
    page.click('[data-testid="sim-open"]')
    expect(page.locator("#sim-result")).to_have_text("The pickup door is open.")
    time.sleep(DEBOUNCE_S)
    page.click('[data-testid="sim-close"]')
    expect(page.locator("#sim-result")).to_have_text("The pickup door is closed.")
    expect(status).to_have_attribute("data-state", "succeeded", timeout=30_000)
    expect(status).to_contain_text("Pickup of rx-700 from bin 5: succeeded")
    assert site.get(f"/api/commands/{cid}")["state"] == "succeeded"
    cmd_row = page.locator(f'#commands-table tr[data-command="{cid}"]')
    expect(cmd_row).to_have_attribute("data-state", "succeeded")
    expect(cmd_row).to_contain_text("pickup")
    expect(cmd_row.locator('[data-field="actor"]')).to_have_text(site.passwords["pharmacist"][0])

    # The custody record arrives in the log without a reload, on top.
    pickup_ev = page.locator('#event-log tr[data-kind="pickup"]')
    expect(pickup_ev).to_contain_text("Order rx-700 picked up from bin 5")
    expect(pickup_ev).to_contain_text(f"by {site.passwords['pharmacist'][0]}")
    expect(pickup_ev).to_contain_text(cid)
    assert int(events.first.get_attribute("data-seq")) > first_seq and events.count() > before
    seqs = [int(s) for s in events.evaluate_all("rows => rows.map(r => r.dataset.seq)")]
    assert seqs == sorted(seqs, reverse=True) and len(seqs) == len(set(seqs))
    expect(page.locator("#kiosk-last-pickup")).to_contain_text("rx-700 from bin 5")
    expect(page.locator("#kiosk-stock")).to_have_text("empty")

    # The log in pages of 5: the newest first, then older ones on request, with no gap.
    pickup_seq = int(pickup_ev.get_attribute("data-seq"))
    wait_until(lambda: (lambda k: k["events_stored_upto"] >= k["journal_last"])(site.get(f"/api/kiosks/{kid}")), 20,
               "the journal stored without a gap")
    page.goto(site.base + f"/kiosk/{kid}?events_page=5")
    expect(events).to_have_count(5)
    top = [int(x) for x in events.evaluate_all("rows => rows.map(r => r.dataset.seq)")]
    assert top[0] >= pickup_seq and top == list(range(top[0], top[0] - 5, -1))
    page.click("#events-older")
    expect(events).to_have_count(10)
    assert [int(x) for x in events.evaluate_all("rows => rows.map(r => r.dataset.seq)")] == \
        list(range(top[0], top[0] - 10, -1))

    # The excursion, ended, is cleared with its button.
    xrow = page.locator('#excursions-table tr[data-testid="excursion-row"]')
    expect(xrow).to_have_count(1)
    expect(xrow).to_have_attribute("data-state", "ended", timeout=30_000)
    xrow.locator("button").click()       # a reason first: the form does not go without one
    expect(page.locator("#excursion-status")).to_have_text("")
    xrow.locator('input[name="reason"]').fill("kept: 33 °C for seconds, MKT within limits")
    xrow.locator("button").click()
    expect(page.locator("#excursion-status")).to_have_attribute("data-state", "succeeded")
    expect(xrow).to_have_attribute("data-state", "cleared")
    expect(xrow).to_contain_text(f"cleared by {site.passwords['pharmacist'][0]}")
    expect(page.locator("#excursions-note")).to_have_text("No open excursions.")

    # Back to the fleet: the last pickup is there; a kiosk without power shows offline and why.
    page.click("text=← Fleet")
    expect(page).to_have_url(site.base + "/")
    expect(row.locator('[data-field="pickup"]')).to_contain_text("rx-700 from bin 5")
    expect(row.locator('[data-field="problems"]')).not_to_contain_text("excursion")
    assert site.call("POST", "/api/sim/kiosk-002/power", {"on": False})[0] == 200
    other = page.locator('#fleet-table tr[data-kiosk="kiosk-002"]')
    expect(other).to_have_attribute("data-online", "false")
    expect(other.locator('[data-field="state"]')).to_contain_text("offline: ")
    expect(row).to_have_attribute("data-online", "true")
    assert page.errors == [], page.errors


# A page on another origin of the same machine (same site for cookies: a
# port is not part of a site), trying every way a page can send a request
# without the dashboard's CSRF token. {base} is the bridge.
ATTACK = """<!doctype html><html><body>
<iframe name="sink1"></iframe><iframe name="sink2"></iframe>
<form id="clear" method="POST" target="sink1" action="{base}/api/kiosks/kiosk-001/excursions/x1/clear"></form>
<form id="power" method="POST" target="sink2" enctype="text/plain" action="{base}/api/sim/kiosk-001/power">
  <input name='{{"on": false, "x": "' value='"}}'></form>
<script>
document.getElementById("clear").submit();
document.getElementById("power").submit();
// A cross-origin DELETE needs a CORS preflight, which the bridge never
// grants: it is never sent. A POST without one is, and must be refused.
const opts = (method, mode, body) => ({{method, mode, credentials: "include", body,
                                       headers: {{"content-type": "text/plain"}}}});
Promise.allSettled([
  fetch("{base}/api/kiosks/kiosk-001/pickups", opts("POST", "no-cors", '{{"order_id": "rx-1", "bin": 1}}')),
  fetch("{base}/api/kiosks/kiosk-001/service", opts("DELETE", "cors")),
  fetch("{base}/api/session", opts("DELETE", "cors")),
]).then(() => {{ document.title = "sent"; }});
</script></body></html>"""


class _Attacker(http.server.BaseHTTPRequestHandler):
    page = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args):
        pass


def test_each_role_does_what_it_may_a_foreign_page_and_a_foreign_host_do_nothing(site: Site, page: Page):
    kid = "kiosk-001"
    expect.set_options(timeout=20_000)
    tech, pharm = site.passwords["technician"][0], site.passwords["pharmacist"][0]
    wait_until(lambda: site.get(f"/api/kiosks/{kid}")["online"], 40, "the kiosk online")

    # A technician: no pickup form; the Service panel and the simulated world, yes.
    login(page, site, "technician", f"/kiosk/{kid}")
    expect(page.locator("#kiosk-state")).to_have_attribute("data-online", "true", timeout=40_000)
    expect(page.locator("#sim")).to_be_visible()
    expect(page.locator("#pickup-form")).to_have_count(0)
    expect(page.locator("#service")).to_be_visible()          # the Service panel instead
    # What a technician may do, through the dashboard's own API client (the
    # session's cookie and CSRF token): a service session, in their name.
    call = """async ([method, path, body]) => {
        const { api } = await import("/static/js/api.js");
        try { return { ok: await api(method, path, body) }; }
        catch (e) { return { status: e.status, detail: e.message }; }
    }"""
    r = page.evaluate(call, ["POST", f"/api/kiosks/{kid}/service", {"session": "svc-browser"}])
    assert "ok" in r, r
    c = wait_until(lambda: (lambda c: c if c["state"] in TERMINAL else None)(
        site.get(f"/api/commands/{r['ok']['command_id']}")), 30, "the service session open")
    assert c["state"] == "succeeded" and c["actor"] == tech, c
    # What a technician may not: release an order. Refused, and nothing is sent.
    before = len(site.store.commands(kid, 1000))
    r = page.evaluate(call, ["POST", f"/api/kiosks/{kid}/pickups", {"order_id": "rx-9", "bin": 1}])
    assert r["status"] == 403 and "may not" in r["detail"], r
    # The same session without its CSRF token: refused.
    r = page.evaluate("""async (path) => (await fetch(path, {method: "DELETE"})).status""", f"/api/kiosks/{kid}/service")
    assert r == 403
    assert len(site.store.commands(kid, 1000)) == before
    r = page.evaluate(call, ["DELETE", f"/api/kiosks/{kid}/service"])
    assert "ok" in r, r
    page.click("#logout")
    expect(page).to_have_url(site.base + "/login")
    assert page.evaluate("async () => (await fetch('/api/kiosks')).status") == 401

    # A pharmacist: the pickup form; the service work, no.
    login(page, site, "pharmacist", f"/kiosk/{kid}")
    expect(page.locator("#pickup-form")).to_be_visible()
    expect(page.locator("#service")).to_have_count(0)         # (clearing excursions: test_dashboard_ops.py)
    r = page.evaluate(call, ["POST", f"/api/kiosks/{kid}/service", {"session": "svc-pharm"}])
    assert r["status"] == 403 and "technician" in r["detail"], r
    page.fill("#pickup-order", "rx-nothing")
    page.fill("#pickup-bin", "3")
    page.click("#pickup-submit")
    status = page.locator("#pickup-status")
    expect(status).to_have_attribute("data-state", "rejected", timeout=30_000)   # the bin is empty
    cid = status.get_attribute("data-command")
    assert site.get(f"/api/commands/{cid}")["actor"] == pharm

    # A page on another origin, opened in the same logged-in browser.
    before = len(site.store.commands(kid, 1000))
    logged = len(site.people.access_log(limit=1000))
    _Attacker.page = ATTACK.format(base=site.base).encode()
    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        other = page.context.new_page()
        other.goto(f"http://127.0.0.1:{evil.server_address[1]}/")
        expect(other).to_have_title("sent")
        # Each request reached the bridge and was refused and logged...
        wait_until(lambda: len(site.people.access_log(limit=1000)) >= logged + 3, 10, "the attempts logged")
        other.close()
    finally:
        evil.shutdown()
    tried = site.people.access_log(limit=1000)[: len(site.people.access_log(limit=1000)) - logged]
    assert {e["path"] for e in tried} >= {f"/api/kiosks/{kid}/excursions/x1/clear", f"/api/sim/{kid}/power",
                                          f"/api/kiosks/{kid}/pickups"}, tried
    assert all(e["status"] == 403 and e["method"] == "POST" for e in tried), tried
    # ... and nothing changed: no command, the kiosk powered, the session alive.
    assert len(site.store.commands(kid, 1000)) == before
    assert site.get(f"/api/sim/{kid}")["powered"] is True
    page.reload()
    expect(page.locator("#who")).to_have_text(f"{pharm} (pharmacist)")

    # A foreign host name for this address (DNS rebinding): nothing is served.
    port = site.port
    r = page.goto(f"http://rebind.test:{port}/")
    assert r.status == 400
    # The rebinding page's own script, same-origin to rebind.test, even
    # holding a good token, reads and changes nothing.
    got = page.evaluate("""async ([kid, token]) => {
        const h = {authorization: `Bearer ${token}`, "content-type": "application/json"};
        const out = [];
        for (const [method, path] of [["GET", "/api/kiosks"], ["POST", `/api/kiosks/${kid}/pickups`],
                                      ["GET", "/api/session"], ["GET", "/static/js/main.js"]]) {
          const r = await fetch(path, {method, headers: h,
                                       body: method === "POST" ? '{"order_id": "rx-9", "bin": 1}' : undefined});
          out.push(r.status);
        }
        return out;
    }""", [kid, site.tokens["pharmacist"]])
    assert got == [400, 400, 400, 400], got
    assert len(site.store.commands(kid, 1000)) == before
    assert page.errors == [], page.errors
