"""Chromium runs the people side from the dashboard alone: an admin adds a
site, puts a kiosk in it, adds a technician scoped to it (the first
password shown once), issues and revokes an API token and revokes a user;
the new technician logs in, changes the password (the current one first)
and sees only the site's kiosk; a pharmacist reads who did all that in the
access log. The bridge, emulated kiosks and mosquitto are real (the Site of
test_dashboard_browser)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from playwright.sync_api import Page, expect

from test_dashboard_browser import Site, login, page, site  # noqa: F401 (fixtures)


def _status(site: Site, path: str, token: str) -> int:
    req = urllib.request.Request(site.base + path, headers={"authorization": f"Bearer {token}"})
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as r:
            json.loads(r.read())
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _logout(page: Page, site: Site) -> None:
    page.click('[data-testid="logout"]')
    expect(page).to_have_url(site.base + "/login")


def _login_as(page: Page, site: Site, name: str, password: str) -> None:
    if not page.url.startswith(site.base + "/login"):
        page.goto(site.base + "/login")
    page.fill("#login-name", name)
    page.fill("#login-password", password)
    page.click("#login-submit")


def test_an_admin_manages_people_and_sites_and_a_new_technician_changes_their_password(site: Site, page: Page):
    expect.set_options(timeout=20_000)
    login(page, site, "admin", "/")
    expect(page.locator("#queue-link")).to_be_visible()
    page.click('[data-testid="people-link"]')
    expect(page).to_have_url(site.base + "/people")
    status = page.locator("#people-status")
    for role, (name, _) in site.passwords.items():
        expect(page.locator(f'#users-table tr[data-user="{name}"]')).to_contain_text(role.replace("_", " "))

    # A site, with one kiosk in it.
    page.fill("#site-name", "clinic-north")
    page.click('[data-testid="site-add-submit"]')
    expect(status).to_have_text("Site clinic-north added.")
    page.select_option("#assign-kiosk", "kiosk-002")
    page.select_option("#assign-site", "clinic-north")
    page.click('[data-testid="assign-submit"]')
    expect(status).to_have_text("Kiosk kiosk-002 is in site clinic-north now.")
    expect(page.locator('#sites-table tr[data-site="clinic-north"]')).to_contain_text("kiosk-002")

    # A technician for that site: the first password is shown once.
    page.fill("#user-name", "sam.tech")
    page.select_option("#user-role", "technician")
    page.fill("#user-sites", "clinic-north")
    page.click('[data-testid="user-add-submit"]')
    expect(status).to_have_attribute("data-state", "added")
    first = page.locator('[data-testid="people-status-secret"]').inner_text()
    assert len(first) >= 12, first
    row = page.locator('#users-table tr[data-user="sam.tech"]')
    expect(row).to_contain_text("clinic-north")
    # The same name twice: refused, said why.
    page.fill("#user-name", "sam.tech")
    page.click('[data-testid="user-add-submit"]')
    expect(status).to_have_attribute("data-state", "error")
    expect(status).to_contain_text("User not added")

    # An API token for the pharmacy system: shown once, works, then revoked.
    ps = page.locator(f'#users-table tr[data-user="{site.passwords["pharmacy_system"][0]}"]')
    ps.locator('[data-testid="token-issue"]').click()
    expect(status).to_have_attribute("data-state", "token")
    token = page.locator('[data-testid="people-status-secret"]').inner_text()
    token_id = status.inner_text().split("API token ")[1].split(" ")[0]
    assert _status(site, "/api/orders", token) == 200
    ps.locator(f'li[data-token="{token_id}"] [data-testid="token-revoke"]').click()
    expect(status).to_have_text(f"Token {token_id} of {site.passwords['pharmacy_system'][0]} revoked.")
    assert _status(site, "/api/orders", token) == 401
    expect(ps.locator(f'li[data-token="{token_id}"]')).to_have_count(0)
    _logout(page, site)

    # The new technician logs in, sees only the site's kiosk, changes the password.
    _login_as(page, site, "sam.tech", first)
    expect(page.locator("#who")).to_have_text("sam.tech (technician)")
    expect(page.locator('[data-testid="people-link"]')).to_have_count(0)
    expect(page.locator('[data-testid="access-link"]')).to_have_count(0)
    expect(page.locator('#fleet-table tbody tr[data-kiosk="kiosk-002"]')).to_have_count(1)
    expect(page.locator('#fleet-table tbody tr[data-kiosk="kiosk-001"]')).to_have_count(0)
    page.click("#who")
    expect(page).to_have_url(site.base + "/account")
    expect(page.locator("#account-who")).to_have_text("sam.tech, technician at clinic-north.")
    pw = page.locator("#password-status")
    new = "correct horse battery staple"
    page.fill("#password-current", first)
    page.fill("#password-new", new)
    page.fill("#password-again", new + "!")
    page.click('[data-testid="password-submit"]')
    expect(pw).to_have_text("The new passwords differ: type the same one twice.")
    page.fill("#password-current", "not my password at all")
    page.fill("#password-again", new)
    page.click('[data-testid="password-submit"]')
    expect(pw).to_have_text("Password not changed: the current password is wrong")
    page.fill("#password-current", first)
    page.fill("#password-new", new)
    page.fill("#password-again", new)
    page.click('[data-testid="password-submit"]')
    # Every session of the user ends, this one too: the login page says why.
    expect(page).to_have_url(site.base + "/login?changed=1")
    expect(page.locator("#login-status")).to_contain_text("Your password was changed")
    _login_as(page, site, "sam.tech", first)
    expect(page.locator("#login-status")).to_have_attribute("data-state", "error")
    _login_as(page, site, "sam.tech", new)
    expect(page.locator("#who")).to_have_text("sam.tech (technician)")
    _logout(page, site)

    # The admin revokes the technician: no login works any more.
    login(page, site, "admin", "/people")
    page.once("dialog", lambda d: d.accept())
    page.locator('#users-table tr[data-user="sam.tech"] [data-testid="user-revoke"]').click()
    expect(page.locator('#users-table tr[data-user="sam.tech"]')).to_have_attribute("data-revoked", "true")
    # No admin can lock themselves out from here.
    admin = site.passwords["admin"][0]
    expect(page.locator(f'#users-table tr[data-user="{admin}"] [data-testid="user-revoke"]')).to_have_count(0)
    _logout(page, site)
    _login_as(page, site, "sam.tech", new)
    expect(page.locator("#login-status")).to_have_attribute("data-state", "error")

    # A pharmacist reads who did all that; a viewer has no access log.
    login(page, site, "pharmacist", "/")
    page.click('[data-testid="access-link"]')
    rows = page.locator('#access-table tr[data-testid="access-row"]')
    expect(rows.filter(has_text="POST /api/users/sam.tech/revoke")).to_contain_text(f"{admin} (admin)")
    expect(rows.filter(has_text="POST /api/sites").first).to_contain_text(admin)
    expect(rows.filter(has_text="POST /api/session/password").first).to_contain_text("sam.tech (technician)")
    page.fill("#log-user", "sam.tech")
    page.click('[data-testid="log-filter-submit"]')
    expect(rows.first).to_contain_text("sam.tech")
    assert all("sam.tech" in t for t in rows.all_inner_texts())
    _logout(page, site)
    login(page, site, "viewer", "/")
    expect(page.locator('[data-testid="access-link"]')).to_have_count(0)
    expect(page.locator('[data-testid="people-link"]')).to_have_count(0)
    page.goto(site.base + "/people")
    expect(page.locator("#main")).to_contain_text("This page is for admins")
    assert page.errors == [], page.errors
