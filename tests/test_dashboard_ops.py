"""Operations from the dashboard alone, in headless Chromium against the
bridge with emulated kiosks (the same Site as test_dashboard_browser.py).

- Service work: a technician, logged in, starts a service session,
  restocks a bin following the live door prompt (the label check first),
  ends the session and runs a self-test; a pharmacist, on another screen,
  requests a pickup of that bin and sees it complete. Each sees only the
  controls of their role, and each refusal as a sentence with what to do
  next, the code kept.
- One truth for temperature: a sensor pushed out of range and back; the
  fleet page, the kiosk page and the chart show the same latest reading;
  the excursion is shaded on the chart; clearing needs an ended excursion
  and a reason.
- The alert list, acknowledged from the page.

The screenshots in docs/dashboard.md are taken here: into docs/img/ when
KIOSK_SCREENSHOTS=docs (`make screenshots`), otherwise into the test's own
folder, so an ordinary run leaves the tree as it found it."""

from __future__ import annotations

import time
from pathlib import Path

from playwright.sync_api import Page, expect

import os

from bridge_support import wait_until
from test_dashboard_browser import DEBOUNCE_S, Site, login, page, site  # noqa: F401 (fixtures)

ROOT = Path(__file__).parent.parent
DOCS_IMG = ROOT / "docs" / "img"
BUILD_IMG = ROOT / "build" / "img"            # ignored by git
KID = "kiosk-001"


def shot(page: Page, name: str, locator=None) -> None:
    """A screenshot for docs/dashboard.md; taken on every run (so a page
    that cannot be drawn fails here), kept in docs/img only when asked."""
    folder = DOCS_IMG if os.environ.get("KIOSK_SCREENSHOTS") == "docs" else BUILD_IMG
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    (locator or page).screenshot(path=str(path), **({} if locator else {"full_page": False}))
    assert path.stat().st_size > 1000, f"{name}: an empty screenshot"


def door_by_sim(page: Page, door: str) -> None:
    """The person at the kiosk opens the door, waits, and shuts it (Simulate panel)."""
    page.select_option("#sim-door", door)
    page.click('[data-testid="sim-open"]')
    expect(page.locator("#sim-result")).to_have_text(f"The {door} door is open.")
    time.sleep(DEBOUNCE_S)
    page.click('[data-testid="sim-close"]')
    expect(page.locator("#sim-result")).to_have_text(f"The {door} door is closed.")


def settled(site: Site) -> None:
    wait_until(lambda: (lambda k: k["online"] and len(k["doors"]) == 2 and all(d["secure"] for d in k["doors"].values()))(
        site.get(f"/api/kiosks/{KID}")), 40, "the kiosk up with its doors shut")


def test_service_work_and_a_pickup_from_the_dashboard_alone(site: Site, page: Page):
    expect.set_options(timeout=30_000)
    settled(site)
    # The technician on one screen, the pharmacist on another; each sees the controls of their role.
    login(page, site, "technician", f"/kiosk/{KID}")
    pharm = page.context.browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    pharm.errors = []
    pharm.on("pageerror", lambda e: pharm.errors.append(str(e)))
    login(pharm, site, "pharmacist", f"/kiosk/{KID}")
    expect(page.locator("#service")).to_be_visible()
    expect(page.locator("#pickup-form")).to_have_count(0)
    expect(pharm.locator("#pickup-form")).to_be_visible()
    expect(pharm.locator("#service")).to_have_count(0)
    svc = page.locator("#svc-status")
    expect(page.locator("#svc-session")).to_have_attribute("data-open", "false")

    # Restocking without a session: refused, as a sentence with the next step.
    page.fill("#svc-order", "rx-900")
    page.fill("#svc-bin", "3")
    page.click('[data-testid="svc-restock-submit"]')
    expect(svc).to_have_attribute("data-state", "rejected")
    expect(svc).to_contain_text("This needs a service session, and none is open. Start a service session first")
    expect(svc).to_contain_text("(code: no_service_session)")

    # The session, then the restock with its live door prompt.
    page.click('[data-testid="svc-start"]')
    expect(svc).to_have_attribute("data-state", "succeeded")
    expect(page.locator("#svc-session")).to_have_attribute("data-open", "true")
    page.click('[data-testid="svc-restock-submit"]')
    # The label check first: the wrong package is refused, the door stays locked.
    expect(svc).to_have_attribute("data-step", "scanning_label")
    expect(svc).to_contain_text("Scan the label of the package for rx-900 at the kiosk's scanner")
    page.fill("#sim-scan-text", "rx-123")
    page.click('[data-testid="sim-scan"]')
    expect(svc).to_have_attribute("data-state", "rejected")
    expect(svc).to_contain_text("The package's label is not order rx-900: the service door stayed locked. Check that "
                                "you hold the package for rx-900")
    expect(svc).to_contain_text("(code: label_mismatch)")
    page.click('[data-testid="svc-restock-submit"]')
    expect(svc).to_have_attribute("data-step", "scanning_label")
    page.fill("#sim-scan-text", "rx-900")
    page.click('[data-testid="sim-scan"]')
    expect(svc).to_have_attribute("data-step", "waiting_open")
    expect(svc).to_have_text("Restock of rx-900 into bin 3: Service door unlocked: open it, place the package for "
                             "rx-900 in bin 3, close it.")
    page.locator("#service").scroll_into_view_if_needed()
    shot(page, "dashboard-restock.png")
    door_by_sim(page, "service")
    expect(svc).to_have_attribute("data-state", "succeeded")
    expect(page.locator("#kiosk-stock")).to_contain_text("bin 3: rx-900")

    # A second restock into the same bin: refused by the kiosk, explained.
    page.fill("#svc-order", "rx-901")
    page.click('[data-testid="svc-restock-submit"]')
    expect(svc).to_have_attribute("data-state", "rejected")
    expect(svc).to_contain_text("Bin 3 already holds an order, so nothing was loaded. Choose an empty bin")
    expect(svc).to_contain_text("(code: bin_full)")

    # The pharmacist's pickup while the session is open: refused, explained.
    pharm.fill("#pickup-order", "rx-900")
    pharm.fill("#pickup-bin", "3")
    expect(pharm.locator("#pickup-why")).to_contain_text("A service session is open")
    pharm.click("#pickup-submit")
    pick = pharm.locator("#pickup-status")
    expect(pick).to_have_attribute("data-state", "rejected")
    expect(pick).to_contain_text("A technician's service session is open; pickups wait until it ends. Ask the "
                                 "technician to end the session, then request the pickup again. (code: service_in_progress)")

    # End the session; the self-test, step by step.
    page.click('[data-testid="svc-end"]')
    expect(page.locator("#svc-session")).to_have_attribute("data-open", "false")
    page.click('[data-testid="svc-selftest"]')
    expect(svc).to_have_attribute("data-state", "rejected")           # a self-test is service work too
    expect(svc).to_contain_text("(code: no_service_session)")
    page.click('[data-testid="svc-start"]')
    expect(page.locator("#svc-session")).to_have_attribute("data-open", "true")
    page.click('[data-testid="svc-selftest"]')
    expect(svc).to_contain_text("Self-test: ", timeout=10_000)
    expect(svc).to_have_attribute("data-state", "succeeded", timeout=60_000)
    expect(page.locator('#event-log tr[data-kind="selftest"]').first).to_contain_text("Self-test passed")
    page.click('[data-testid="svc-end"]')
    expect(page.locator("#svc-session")).to_have_attribute("data-open", "false")

    # The pickup: the wrong order first (explained), then the right one, with the patient at the door.
    pharm.fill("#pickup-order", "rx-999")
    pharm.click("#pickup-submit")
    expect(pick).to_have_attribute("data-state", "rejected")
    expect(pick).to_contain_text("Bin 3 holds another order, not rx-999: nothing was released.")
    expect(pick).to_contain_text("(code: bin_mismatch)")
    pharm.fill("#pickup-order", "rx-900")
    pharm.click("#pickup-submit")
    expect(pick).to_have_attribute("data-step", "waiting_open")
    expect(pick).to_contain_text("Pickup door unlocked: the patient opens it, takes the bag from bin 3 and closes it.")
    door_by_sim(pharm, "pickup")
    expect(pick).to_have_attribute("data-state", "succeeded")
    expect(pick).to_have_text("Pickup of rx-900 from bin 3: succeeded")
    expect(page.locator("#kiosk-last-pickup")).to_contain_text("rx-900 from bin 3")
    expect(page.locator("#kiosk-stock")).to_have_text("empty")
    who = page.locator('#commands-table tr[data-testid="command-row"]')
    expect(who.filter(has_text="restock").first.locator('[data-field="actor"]')).to_have_text(site.passwords["technician"][0])
    expect(who.filter(has_text="pickup").first.locator('[data-field="actor"]')).to_have_text(site.passwords["pharmacist"][0])

    # The fleet page, most urgent first.
    site.call("POST", "/api/sim/kiosk-002/door", {"door": "service", "action": "force"})
    page.click("text=← Fleet")
    rows = page.locator("#fleet-table tbody tr")
    expect(rows.first).to_have_attribute("data-kiosk", "kiosk-002")
    expect(rows.first).to_have_attribute("data-severity", "alarm")
    expect(rows.first.locator('[data-field="problems"]')).to_contain_text("service door")
    expect(page.locator(f'#fleet-table tr[data-kiosk="{KID}"] [data-field="pickup"]')).to_contain_text("rx-900 from bin 3")
    shot(page, "dashboard-fleet.png")
    assert page.errors == [] and pharm.errors == [], (page.errors, pharm.errors)


def _views_agree(site: Site, fleet: Page, kiosk: Page, sensor: str) -> float | None:
    """The latest reading of `sensor` as the fleet page, the kiosk's status
    and its chart show it, when all three and the API agree; else None."""
    api = site.get(f"/api/kiosks/{KID}")["readings"][sensor]["c"]
    in_fleet = fleet.locator(f'#fleet-table tr[data-kiosk="{KID}"] [data-field="temps"] li').filter(
        has_text=f"{sensor}:").inner_text()
    in_status = kiosk.locator(f'#kiosk-readings li[data-sensor="{sensor}"]').get_attribute("data-c")
    in_chart = kiosk.locator(f'svg[data-testid="chart-{sensor}"]').get_attribute("data-latest")
    if in_fleet.startswith(f"{sensor}: {api:.1f}\u00a0°C") and float(in_status) == api and float(in_chart) == api:
        return api
    return None


def test_one_truth_for_temperature_and_an_excursion_shaded_and_cleared_with_a_reason(site: Site, page: Page):
    expect.set_options(timeout=30_000)
    settled(site)
    login(page, site, "pharmacist", f"/kiosk/{KID}")
    fleet = page.context.new_page()
    fleet.goto(site.base + "/")
    page.select_option("#temp-hours", "0.25")

    # Out of range: an excursion; every view shows the same reading, highlighted.
    page.select_option("#sim-sensor", "shelf_top")
    page.fill("#sim-celsius", "33.5")
    page.click('[data-testid="sim-set-temp"]')
    span = page.locator('svg[data-testid="chart-shelf_top"] [data-testid="excursion-span"]')
    expect(span).to_have_count(1)
    expect(span).to_have_attribute("data-state", "ongoing")
    hot = wait_until(lambda: (lambda c: c if c and c > 30 else None)(_views_agree(site, fleet, page, "shelf_top")), 30,
                     "the three views on the hot reading")
    expect(page.locator('#kiosk-readings li[data-sensor="shelf_top"]')).to_have_attribute("data-range", "out_of_limits")
    expect(page.locator('#kiosk-readings li[data-sensor="shelf_top"]')).to_have_class("reading out-of-limits")
    assert fleet.locator(f'#fleet-table tr[data-kiosk="{KID}"] [data-field="temps"] li.out-of-limits').count() == 1
    expect(fleet.locator(f'#fleet-table tr[data-kiosk="{KID}"]')).to_have_attribute("data-severity", "alarm")
    row = page.locator('#excursions-table tr[data-testid="excursion-row"]')
    expect(row).to_have_attribute("data-state", "ongoing")
    expect(row.locator("form")).to_have_count(0)          # nothing to clear while it goes on
    expect(row).to_contain_text("can be cleared once it ends")
    assert hot > 30
    # Hot for a while, so that the shaded span shows in a quarter of an hour.
    start = site.get(f"/api/kiosks/{KID}/temperature?hours=1")["excursions"][-1]["start"]
    wait_until(lambda: time.time() - start > 25, 40, "25 s of excursion")

    # Back in range: the excursion ends; again one reading everywhere.
    page.fill("#sim-celsius", "22.0")
    page.click('[data-testid="sim-set-temp"]')
    expect(row).to_have_attribute("data-state", "ended")
    expect(span).to_have_attribute("data-state", "ended")
    wait_until(lambda: (lambda c: c if c and c < 25 else None)(_views_agree(site, fleet, page, "shelf_top")), 30,
               "the three views on the reading back in range")
    chart = page.locator('svg[data-testid="chart-shelf_top"]')
    assert int(chart.get_attribute("data-until")) - int(chart.get_attribute("data-since")) >= 900 - 5, \
        "the axis spans the quarter of an hour asked for"
    expect(chart.locator('[data-testid="out-of-band"]').first).to_be_attached()
    page.locator("#temperature").scroll_into_view_if_needed()
    shot(page, "dashboard-chart-excursion.png", page.locator("#temperature"))

    # Clearing needs a reason (and a pharmacist, who is named): the form will not go without it.
    xid = row.get_attribute("data-excursion")
    row.locator("button").click()
    expect(page.locator("#excursion-status")).to_have_text("")
    assert not [c for c in site.get(f"/api/kiosks/{KID}")["commands"] if c["op"] == "clear_excursion"]
    row.locator('input[name="reason"]').fill("kept: 33 °C for seconds, sealed packs, MKT within limits")
    row.locator("button").click()
    expect(page.locator("#excursion-status")).to_have_attribute("data-state", "succeeded")
    expect(row).to_have_attribute("data-state", "cleared")
    expect(row).to_contain_text(f"cleared by {site.passwords['pharmacist'][0]}")
    expect(row).to_contain_text("sealed packs, MKT within limits")
    assert site.get(f"/api/kiosks/{KID}/temperature?hours=1")["excursions"][-1]["id"] == xid
    assert page.errors == [], page.errors


def test_the_alert_list_with_acknowledge(site: Site, page: Page):
    expect.set_options(timeout=30_000)
    settled(site)
    site.call("POST", f"/api/sim/{KID}/door", {"door": "pickup", "action": "force"})
    login(page, site, "technician", "/")
    expect(page.locator("#alerts-count")).to_contain_text("1")
    page.click("#alerts-link")
    row = page.locator('#alerts-table tr[data-testid="alert-row"]')
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-code", "door_forced")
    expect(row).to_contain_text("pickup door forced open")
    shot(page, "dashboard-alerts.png")
    aid = row.get_attribute("data-alert")
    tech = site.passwords["technician"][0]
    page.fill(f'[data-testid="ack-note-{aid}"]', "on site in 10 minutes")
    page.click(f'[data-testid="ack-{aid}"]')
    expect(row).to_have_attribute("data-state", "acknowledged")
    expect(row).to_contain_text(tech)
    a = site.get(f"/api/alerts/{aid}")
    assert a["acked_by"] == tech and a["ack_note"] == "on site in 10 minutes"
    assert site.call("POST", f"/api/alerts/{aid}/ack", {}, who="viewer")[0] == 403    # a viewer only looks
    # Shut: resolved, into the list of resolved ones.
    site.call("POST", f"/api/sim/{KID}/door", {"door": "pickup", "action": "close"})
    expect(row).to_have_count(0)
    expect(page.locator(f'#resolved-table tr[data-alert="{aid}"]')).to_contain_text(tech)
    expect(page.locator("#alerts-count")).to_be_hidden()
    assert page.errors == [], page.errors
