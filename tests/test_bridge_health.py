"""Nothing that looks fine when it is not: the bridge's view of a kiosk and
of itself, checked against real processes (emulated kiosks on a real
mosquitto, `kiosk-bridge serve` as a process).

- A door forced open, then a reboot: the kiosk comes back with the door
  standing open and no "forced" alarm (nobody saw it open), and the bridge
  flags it at once; while the kiosk is off it shows offline with its last
  known state and how old that is; the fleet sorts it first.
- `serve` with no broker: it says so in its log (without -v) and in the
  dashboard's header, answers 503 to a command, says why on /api/bridge
  and /healthz, and picks the broker up when it appears."""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from bridge_support import USERS, BridgeProc, wait_until
from kiosk_host.bridge.people import People
from kiosk_host.bridge.store import Store
from kiosk_host.emulator.fleet import Fleet
from link_support import Mosquitto, free_port

POLICIES = {"door_open_timeout_s": 5, "telemetry_period_s": 2, "sample_period_s": 1}


@contextlib.contextmanager
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=["--no-sandbox"])
        try:
            yield b.new_context().new_page()
        finally:
            b.close()


def test_a_door_left_open_across_a_reboot_is_flagged_at_once_and_offline_shows_the_last_known_state(tmp_path: Path):
    broker = Mosquitto(tmp_path / "mq").start()
    url = f"mqtt://127.0.0.1:{broker.port}"
    fleet = Fleet(url, 2, tmp_path / "kiosks", tmp_path / "keys", policies=POLICIES, keepalive_s=2).start()
    bridge = BridgeProc(tmp_path / "bridge", url, tmp_path / "keys").start()
    kid, other = "kiosk-001", "kiosk-002"
    try:
        for k in (kid, other):
            wait_until(lambda: (lambda s: s["online"] and len(s["doors"]) == 2 and all(
                d["secure"] for d in s["doors"].values()))(bridge.kiosk(k)), 40, f"{k} up with its doors shut")
        assert [k["severity"] for k in bridge.get("/api/kiosks")] == ["ok", "ok"]

        fleet.door(kid, "pickup", "force")
        # The bolt leaves its keeper before the door's opening is debounced:
        # already an alarm (a bolt out that nobody released), then "forced".
        k = wait_until(lambda: (lambda s: s if "door_forced" in [p["code"] for p in s["problems"]] else None)(
            bridge.kiosk(kid)), 20, "forced")
        assert k["severity"] == "alarm" and k["problems"][0]["level"] == "alarm"

        # Power off: offline, with the last known state (the forced door) and its age.
        fleet.power(kid, False)
        k = wait_until(lambda: (lambda s: s if not s["online"] else None)(bridge.kiosk(kid)), 30, "offline")
        assert k["doors"]["pickup"]["door"] == "open" and k["severity"] == "alarm"
        assert "offline" in [p["code"] for p in k["problems"]] and k["seen_iso"].endswith("Z")
        time.sleep(1.1)
        assert bridge.kiosk(kid)["seen_age_s"] >= 1
        boot = k["boot"]

        # Power on with the door still standing open: no "forced" alarm this boot.
        fleet.power(kid, True)
        seen = []

        def flagged():
            s = bridge.kiosk(kid)
            if s["online"] and s["boot"] != boot:
                seen.append((s["severity"], [p["code"] for p in s["problems"]], s["doors"].get("pickup")))
                return s if any(p["code"] == "door_open" for p in s["problems"]) else None
            return None
        k = wait_until(flagged, 60, "the open door flagged after the reboot", every=0.05)
        assert "forced" not in k["doors"]["pickup"]["alarms"], "the kiosk did not see it forced this boot"
        assert k["severity"] == "alarm" and "pickup door is open" in " ".join(k["alarms"]), k
        # From its first word after the reboot, the kiosk never looked fine.
        assert all(sev != "ok" for sev, _, _ in seen), seen
        assert len(seen) <= 40, f"flagged only after {len(seen)} looks: {seen}"
        fleet_rows = bridge.get("/api/kiosks")
        assert [r["id"] for r in fleet_rows] == [kid, other], "the alarm sorts first"
        assert [r["severity"] for r in fleet_rows] == ["alarm", "ok"]

        # Shut it: the kiosk sees the door closed and the bolt in; all fine again.
        fleet.door(kid, "pickup", "close")
        wait_until(lambda: bridge.kiosk(kid)["severity"] == "ok", 20, "the door shut and locked")
    finally:
        bridge.stop()
        fleet.stop()
        broker.stop()


def test_serve_without_a_broker_logs_it_answers_503_and_connects_when_the_broker_appears(tmp_path: Path):
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "kiosk-001.key").write_text("ab" * 32)
    port = free_port()                      # nothing listens here yet
    bridge = BridgeProc(tmp_path / "bridge", f"mqtt://127.0.0.1:{port}", keys)
    bridge.start(verbose=False, connected=False)
    broker = None
    try:
        wait_until(lambda: "cannot reach the broker" in bridge.log(), 10, "the failed connection in the log")
        assert "Connection refused" in bridge.log() and f"127.0.0.1:{port}" in bridge.log()
        state = bridge.get("/api/bridge")["broker"]
        assert state["connected"] is False and state["failed_attempts"] >= 1 and "refused" in state["error"].lower()
        assert state["since_iso"].endswith("Z")
        assert bridge.get("/healthz", ok_only=False)[0] == 503
        status, r = bridge.post("/api/kiosks/kiosk-001/pickups", {"order_id": "rx-1", "bin": 1})
        assert status == 503 and "no broker session" in r["detail"], (status, r)
        # Retries go on, and are logged (at growing intervals, not once per try).
        wait_until(lambda: bridge.get("/api/bridge")["broker"]["failed_attempts"] >= 3, 20, "retries")

        # The dashboard's header says so, and the pickup button is off.
        people = People(Store(bridge.db))
        people.set_password(USERS["pharmacist"], "a pharmacist's password")
        people.store.close()
        with browser() as page:
            page.goto(bridge.url + "/login")
            page.fill("#login-name", USERS["pharmacist"])
            page.fill("#login-password", "a pharmacist's password")
            page.click("#login-submit")
            expect(page.locator("#who")).to_contain_text(USERS["pharmacist"])
            conn = page.locator("#conn")
            expect(conn).to_have_attribute("data-state", "down")
            expect(conn).to_contain_text("No broker session since")
            expect(conn).to_contain_text("Connection refused")
            page.goto(bridge.url + "/kiosk/kiosk-001")
            expect(page.locator("#pickup-why")).to_contain_text("offline")
            expect(page.locator("#pickup-submit")).to_be_disabled()

            broker = Mosquitto(tmp_path / "mq", port=port).start()
            wait_until(lambda: bridge.get("/api/bridge")["broker"]["connected"], 30, "connected once the broker is up")
            expect(conn).to_have_attribute("data-state", "up")
            expect(conn).to_contain_text("Live: broker connected")
        assert bridge.get("/healthz", ok_only=False)[0] == 200
        wait_until(lambda: "connected to the broker" in bridge.log(), 5, "the reconnection in the log")
        # Now the kiosk itself is what is missing: 409, as documented.
        assert bridge.post("/api/kiosks/kiosk-001/pickups", {"order_id": "rx-1", "bin": 1})[0] == 409
    finally:
        bridge.stop()
        if broker:
            broker.stop()
