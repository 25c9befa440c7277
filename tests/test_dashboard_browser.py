"""The dashboard in a real browser: headless Chromium (Debian's, driven by
Playwright) against the bridge with emulated kiosks on a real mosquitto and
the emulator's /api/sim routes on the same port, as `kiosk-bridge demo`
serves them.

A technician restocks a bin through the API; then, on the page, the kiosk
shows online, a pickup is requested through the form, the patient opens and
closes the door through the Simulate panel, and the command's state, the
event log and the fleet view's last pickup follow live. An excursion is
cleared with its button, a refused request shows the API's reason, and a
kiosk that loses power shows offline with why."""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Page, expect, sync_playwright

from bridge_support import scan_label, wait_until
from kiosk_host.bridge.alerts import Alerter, Rules
from kiosk_host.bridge.api import create_app
from kiosk_host.bridge.config import Keys
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
        self.bridge.alerter = Alerter(self.bridge, Rules(RULES, "test rules")).start()
        app = create_app(self.bridge, [sim_router(self.fleet)], title="Kiosk bridge (test)")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, name="dashboard-http", daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, 20, "the HTTP server up")

    def call(self, method: str, path: str, body=None):
        req = urllib.request.Request(self.base + path, None if body is None else json.dumps(body).encode(),
                                     {"content-type": "application/json"}, method=method)
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
        browser = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
        pg = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
        pg.errors = []
        pg.on("pageerror", lambda e: pg.errors.append(str(e)))
        try:
            yield pg
        finally:
            browser.close()


def test_pickup_from_the_dashboard_with_live_status_events_and_fleet_view(site: Site, page: Page):
    kid = "kiosk-001"
    expect.set_options(timeout=20_000)

    # The fleet view fills in by itself once the kiosks are up.
    page.goto(site.base + "/")
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
    site.command("POST", f"/api/kiosks/{kid}/service", {"session": "tech-1"})
    site.command("POST", f"/api/kiosks/{kid}/restocks", {"order_id": "rx-700", "bin": 5}, door="service",
                 label="rx-700")
    site.command("DELETE", f"/api/kiosks/{kid}/service")
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

    # The custody record arrives in the log without a reload, on top.
    pickup_ev = page.locator('#event-log tr[data-kind="pickup"]')
    expect(pickup_ev).to_contain_text("Order rx-700 picked up from bin 5")
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
    xrow.locator('input[name="by"]').fill("pat.pharmacist")
    xrow.locator('input[name="reason"]').fill("bin 5 checked, sealed")
    xrow.locator("button").click()
    expect(page.locator("#excursion-status")).to_have_attribute("data-state", "succeeded")
    expect(xrow).to_have_attribute("data-state", "cleared")
    expect(xrow).to_contain_text("cleared by pat.pharmacist")
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
