"""Chromium walks the patient's pickup: the kiosk's screen (a tablet paired
to the kiosk, as a technician sets it up) through every step of a pickup
that needs counselling, and the pharmacist's queue (logged in to the
dashboard) through the release. The bridge, emulated kiosks and mosquitto
are real (the Site of test_dashboard_browser)."""

from __future__ import annotations

import time
from pathlib import Path

from playwright.sync_api import Page, expect

from bridge_support import new_order, scan_label, wait_until
from test_dashboard_browser import DEBOUNCE_S, Site, login, page, site  # noqa: F401 (fixtures)

KID = "kiosk-001"


def _contrast(page: Page, selector: str) -> float:
    """WCAG contrast ratio of an element's text against the page's background."""
    return page.evaluate("""(sel) => {
      const rgb = (s) => s.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number);
      const lum = ([r, g, b]) => {
        const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
        return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
      };
      const fg = lum(rgb(getComputedStyle(document.querySelector(sel)).color));
      const bg = lum(rgb(getComputedStyle(document.body).backgroundColor));
      return (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    }""", selector)


def test_the_patients_screen_through_a_pickup_and_the_pharmacists_queue_through_a_release(site: Site, page: Page):
    expect.set_options(timeout=30_000)
    wait_until(lambda: site.get(f"/api/kiosks/{KID}")["online"]
               and all(d.get("door") == "closed" for d in site.get(f"/api/kiosks/{KID}")["doors"].values()), 40,
               "the kiosk up, its doors settled")
    # The pharmacy system's order, needing counselling; the technician stocks it.
    assert site.call("POST", "/api/orders", new_order("rx-900", KID, counselling=True), who="pharmacy_system")[0] == 201
    site.command("POST", f"/api/kiosks/{KID}/service", {"session": "tech-1"})
    status, r = site.call("POST", f"/api/kiosks/{KID}/restocks", {"order_id": "rx-900"})
    assert status == 202, r
    assert scan_label(lambda cid: site.get(f"/api/commands/{cid}"),
                      lambda text: site.call("POST", f"/api/sim/{KID}/scan", {"text": text}), r["command_id"], "rx-900")
    site.wait_unlocked(KID, "service")
    site.hold_door(KID, "service")
    wait_until(lambda: site.get(f"/api/commands/{r['command_id']}")["state"] == "succeeded", 30, "stocked")
    site.command("DELETE", f"/api/kiosks/{KID}/service")
    status, got = site.call("POST", "/api/orders/rx-900/pickup-code", {}, who="pharmacy_system")
    assert status == 201
    code = got["code"]

    # The technician pairs the tablet at the kiosk from the dashboard: it opens the one-time link.
    login(page, site, "technician", f"/kiosk/{KID}")
    page.click('[data-testid="screen-pair"]')
    link = page.locator('[data-testid="screen-pair-link"]')
    expect(link).to_be_visible()
    pair_url = link.get_attribute("href")
    assert pair_url.startswith(f"{site.base}/screen/{KID}#pair="), pair_url
    page.click('[data-testid="logout"]')
    screen = page.context.browser.new_context(viewport={"width": 1024, "height": 768}).new_page()
    errors = []
    screen.on("pageerror", lambda e: errors.append(str(e)))
    screen.goto(pair_url)
    body = screen.locator("body")
    expect(body).to_have_attribute("data-state", "ready")
    assert "#pair=" not in screen.url, "the link is dropped from the address bar"
    title = screen.locator("#title")
    expect(title).to_have_text("Scan your pickup code")
    live = screen.locator("#message")
    assert live.get_attribute("role") == "status" and live.get_attribute("aria-live") == "polite"
    assert _contrast(screen, "#title") >= 7 and _contrast(screen, "#detail") >= 7, "AAA contrast for the words"
    assert float(screen.evaluate("parseFloat(getComputedStyle(document.getElementById('title')).fontSize)")) >= 40
    # The link was good once: a second tablet with it stays unpaired.
    other = page.context.browser.new_context().new_page()
    other.goto(pair_url)
    expect(other.locator("body")).to_have_attribute("data-state", "unpaired")
    other.context.close()

    # The patient scans: the order needs counselling, so a pharmacist will call.
    site.call("POST", f"/api/sim/{KID}/scan", {"text": code})
    expect(body).to_have_attribute("data-state", "pharmacist_will_call")
    expect(title).to_have_text("A pharmacist will call you")
    text = screen.locator("main").inner_text()
    for secret in ("rx-900", "pt-rx-900", "Amoxicillin", code):
        assert secret not in text, f"the screen shows {secret!r}"

    # The pharmacist's queue: the patient waiting, the release with the counselling's outcome.
    login(page, site, "pharmacist", "/pharmacy")
    waiting = page.locator(f'#waiting-table tr[data-order="rx-900"]')
    expect(waiting).to_have_attribute("data-reason", "counselling")
    expect(waiting).to_contain_text(KID)
    expect(waiting).to_contain_text("Amoxicillin")
    row = page.locator('#release-table tr[data-order="rx-900"]')
    expect(row).to_contain_text("required")
    assert row.locator('option[value="not_required"]').is_disabled(), "counselling is required: never 'not required'"
    row.locator('[data-testid="release-counselling"]').select_option("accepted")
    row.locator('[data-testid="release-note"]').fill("first course; dosing explained by phone")
    row.locator('[data-testid="release"]').click()
    expect(page.locator("#queue-status")).to_have_attribute("data-state", "released")
    expect(row).to_have_count(0)
    expect(waiting).to_have_count(0)

    # Back at the kiosk: scan again, the door opens, take it, close it.
    expect(body).to_have_attribute("data-state", "rescan")
    site.call("POST", f"/api/sim/{KID}/scan", {"text": code})
    expect(body).to_have_attribute("data-state", "open_door")
    expect(title).to_have_text("Open the pickup door")
    site.call("POST", f"/api/sim/{KID}/door", {"door": "pickup", "action": "open"})
    expect(body).to_have_attribute("data-state", "close_door")
    expect(title).to_have_text("Take your medication and close the door")
    time.sleep(DEBOUNCE_S)
    site.call("POST", f"/api/sim/{KID}/door", {"door": "pickup", "action": "close"})
    expect(body).to_have_attribute("data-state", "done")
    o = site.get("/api/orders/rx-900")
    assert o["state"] == "dispensed" and o["dispensed"]["counselling"] == "accepted"
    assert o["dispensed"]["released_by"] == site.passwords["pharmacist"][0]

    # The same code again: nothing opens, the screen says so.
    site.call("POST", f"/api/sim/{KID}/scan", {"text": code})
    expect(body).to_have_attribute("data-state", "used")
    expect(title).to_have_text("This code has already been used")

    # The on-screen call button, by keyboard.
    call = screen.locator("#call")
    expect(call).to_be_visible()
    for _ in range(5):
        screen.keyboard.press("Tab")
        if screen.evaluate("document.activeElement.id") == "call":
            break
    assert screen.evaluate("document.activeElement.id") == "call", "the call button is reachable by keyboard"
    screen.keyboard.press("Enter")
    expect(body).to_have_attribute("data-state", "calling")
    expect(page.locator('#waiting-table tr[data-reason="call"]')).to_contain_text(KID)
    assert errors == [], errors
    screen.context.close()      # its long poll ends before the bridge does

    # The pharmacist's record of the order's movements, on the page and as CSV.
    page.click('[data-testid="reports-link"]')
    moved = page.locator('#report-table tr[data-order="rx-900"]')
    expect(moved.and_(page.locator('[data-event="stocked"]'))).to_contain_text("label passed")
    expect(moved.and_(page.locator('[data-event="released"]'))).to_contain_text("counselling accepted")
    expect(moved.and_(page.locator('[data-event="dispensed"]'))).to_contain_text(
        f"released by {site.passwords['pharmacist'][0]}")
    with page.expect_download() as got:
        page.click('[data-testid="report-csv"]')
    text = Path(got.value.path()).read_text()
    assert got.value.suggested_filename.startswith("movements-") and ",rx-900,dispensed," in text, text[:400]
    assert page.errors == [], page.errors


def test_a_technician_stocks_and_takes_back_an_order_from_the_dashboard_alone(site: Site, page: Page):
    """The kiosk page's Service panel lists the orders the pharmacy system
    sent to this kiosk and those past their deadline still in a bin; one
    click stocks one (the bridge picks the bin) or takes one back."""
    from test_dashboard_ops import door_by_sim, settled

    expect.set_options(timeout=30_000)
    settled(site)
    assert site.call("POST", "/api/orders", new_order("rx-950", KID), who="pharmacy_system")[0] == 201
    login(page, site, "technician", f"/kiosk/{KID}")
    svc = page.locator("#svc-status")
    stock_row = page.locator('#svc-to-stock tr[data-order="rx-950"]')
    expect(stock_row).to_contain_text("Amoxicillin 500 mg capsule ×21")
    page.click('[data-testid="svc-start"]')
    expect(page.locator("#svc-session")).to_have_attribute("data-open", "true")

    stock_row.locator('[data-testid="svc-stock-order"]').click()
    expect(svc).to_have_attribute("data-step", "scanning_label")
    page.fill("#sim-scan-text", "rx-950")
    page.click('[data-testid="sim-scan"]')
    expect(svc).to_have_attribute("data-step", "waiting_open")
    b = site.get(f"/api/commands/{svc.get_attribute('data-command')}")["args"]["bin"]
    expect(svc).to_have_text(f"Restock of rx-950 into bin {b}: Service door unlocked: open it, place the package for "
                             f"rx-950 in bin {b}, close it.")
    door_by_sim(page, "service")
    expect(svc).to_have_attribute("data-state", "succeeded")
    expect(stock_row).to_have_count(0)
    wait_until(lambda: site.get("/api/orders/rx-950")["state"] == "stocked", 15, "stocked")

    # Its deadline passes: it is listed to take back, with its bin.
    yesterday = time.strftime("%Y-%m-%d", time.localtime(time.time() - 86400))
    assert site.call("PATCH", "/api/orders/rx-950", {"pickup_by": yesterday}, who="pharmacy_system")[0] == 200
    take_row = page.locator('#svc-to-take tr[data-order="rx-950"]')
    expect(take_row).to_contain_text(f"bin {b}, expired")
    take_row.locator('[data-testid="svc-take-order"]').click()
    expect(svc).to_have_attribute("data-step", "waiting_open")
    expect(svc).to_have_text(f"Retrieval of rx-950 from bin {b}: Service door unlocked: open it, take the package for "
                             f"rx-950 out of bin {b}, close it.")
    door_by_sim(page, "service")
    expect(svc).to_have_attribute("data-state", "succeeded")
    expect(take_row).to_have_count(0)
    o = wait_until(lambda: (lambda o: o if o["state"] == "returned" else None)(site.get("/api/orders/rx-950")), 15,
                   "returned")
    assert o["returned"]["by"] == site.passwords["technician"][0] and o["bin"] is None
    page.click('[data-testid="svc-end"]')
    expect(page.locator("#svc-session")).to_have_attribute("data-open", "false")
    assert page.errors == [], page.errors
