"""Firmware over the air, end to end: releases built with `python -m
kiosk_host.build`, uploaded to a real `kiosk-bridge serve`, rolled out to
emulated kiosks (the real firmware in MicroPython processes, on their own
flash, through a real mosquitto), canaries first. The kiosks switch only
when idle, boot the new firmware on trial and confirm it, or roll back by
themselves. See docs/ota.md."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from bridge_support import BridgeProc, http, journal_records, scan_label, wait_until
from emu_support import kioskctl
from kiosk_host import paths
from kiosk_host.bridge.people import People
from kiosk_host.bridge.store import Store
from kiosk_host.emulator.fleet import Fleet
from link_support import Mosquitto

POLICIES = {"door_open_timeout_s": 30, "telemetry_period_s": 600}
TERMINAL = ("succeeded", "failed", "timed_out", "rejected", "cancelled")


def build_release(root: Path, version: str, src: Path = paths.FIRMWARE_DIR) -> bytes:
    """`python -m kiosk_host.build --out DIR --firmware-src SRC --version V`, as a .tar.gz."""
    out = root / f"build-{version}"
    r = subprocess.run([sys.executable, "-m", "kiosk_host.build", "--out", str(out), "--firmware-src", str(src),
                        "--version", version], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return tar_of(out)


def tar_of(tree: Path, extra=None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        t.add(str(tree), arcname=".")
        if extra:
            extra(t)
    return buf.getvalue()


class Rig:
    def __init__(self, root: Path):
        self.root = root
        self.broker = Mosquitto(root / "mq").start()
        self.url = f"mqtt://127.0.0.1:{self.broker.port}"
        self.fleet = Fleet(self.url, 3, root / "kiosks", root / "keys", policies=POLICIES, keepalive_s=2).start()
        self.bridge = BridgeProc(root / "bridge", self.url, root / "keys").start()
        for kid in self.fleet.ids:
            wait_until(lambda: self.bridge.kiosk(kid)["online"], 40, f"{kid} online at the bridge")

    def close(self) -> None:
        self.bridge.stop()
        self.fleet.stop()
        self.broker.stop()

    def upload(self, data: bytes, who: str = "admin") -> tuple[int, dict]:
        return http("POST", self.bridge.url + "/api/releases", raw=data, token=self.bridge.tokens[who],
                    headers={"content-type": "application/gzip"})

    def rollout(self, release_id: str, kiosks, canary: int) -> str:
        status, r = self.bridge.request("POST", "/api/rollouts", {"release_id": release_id, "kiosks": kiosks,
                                                                  "canary": canary}, who="admin")
        assert status == 202, (status, r)
        return r["rollout_id"]

    def state(self, rollout_id: str) -> dict:
        return self.bridge.get(f"/api/rollouts/{rollout_id}")

    def wait_rollout(self, rollout_id: str, states, timeout: float = 120, seen: list | None = None) -> dict:
        states = (states,) if isinstance(states, str) else states

        def check():
            ro = self.state(rollout_id)
            if seen is not None:
                seen.append(ro)
            return ro if ro["state"] in states else None
        return wait_until(check, timeout, f"rollout {rollout_id} {states}", every=0.2)

    def ota_records(self, kid: str) -> list[dict]:
        return [r for _, r in sorted(journal_records(self.fleet.kiosk(kid).flash).items()) if r["k"] == "ota"]

    def run(self, kid: str, path: str, body=None, who: str | None = None) -> str:
        status, r = self.bridge.request("POST", f"/api/kiosks/{kid}{path}", body, who=who)
        assert status == 202, (status, r)
        return r["command_id"]

    def hold_door(self, kid: str, door: str) -> None:
        wait_until(lambda: self.fleet.world(kid)["world"]["locks"][door]["energized"], 30, f"{kid} {door} unlocked")
        self.fleet.door(kid, door, "open")
        time.sleep(1.6)                       # past the door switch's debounce
        self.fleet.door(kid, door, "close")

    def restock(self, kid: str, order: str, bin_no: int) -> None:
        self.bridge.wait_command(self.run(kid, "/service", {"session": "tech-ota"}), "succeeded")
        cid = self.run(kid, "/restocks", {"order_id": order, "bin": bin_no})
        assert scan_label(self.bridge.command, lambda text: self.fleet.scan(kid, text), cid, order)
        self.hold_door(kid, "service")
        assert self.bridge.wait_command(cid, TERMINAL, 40)["state"] == "succeeded"
        status, r = self.bridge.request("DELETE", f"/api/kiosks/{kid}/service")
        assert status == 202, r
        self.bridge.wait_command(r["command_id"], "succeeded")
        wait_until(lambda: self.bridge.kiosk(kid)["status"]["stock"].get(str(bin_no)) == order, 20,
                   f"{order} in bin {bin_no} at the bridge")


@contextlib.contextmanager
def dashboard(rig: Rig, role: str):
    """The dashboard's fleet page in headless Chromium, logged in as a
    person of that role."""
    name, password = f"ota.{role}", f"a password for {role}s"
    people = People(Store(rig.bridge.db))
    try:
        if people.user(name) is None:
            people.add_user(name, role, password=password)
    finally:
        people.store.close()
    exe = shutil.which("chromium")
    assert exe, "Debian's chromium is needed (apt-get install chromium; .ci/run installs it)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
        page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
        page.errors = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        try:
            page.goto(rig.bridge.url + "/login")
            page.fill("#login-name", name)
            page.fill("#login-password", password)
            page.click("#login-submit")
            # A login's Argon2 check can take seconds on a loaded machine.
            expect(page.locator("#who")).to_have_text(f"{name} ({role})", timeout=30_000)
            yield page
        finally:
            browser.close()


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = Rig(tmp_path_factory.mktemp("ota"))
    yield r
    r.close()


def test_a_release_rolls_out_to_the_canary_then_to_the_rest(rig):
    status, rel = rig.upload(build_release(rig.root, "0.2.0"))
    assert status == 201 and rel["version"] == "0.2.0" and rel["release_id"].startswith("rel-"), rel
    assert rig.upload(build_release(rig.root, "0.2.0"))[1]["release_id"] == rel["release_id"], \
        "the same build uploaded again is the same release"
    assert rel["release_id"] in [r["release_id"] for r in rig.bridge.get("/api/releases")]
    ids = rig.fleet.ids
    assert all(rig.bridge.kiosk(k)["fw"] == "0.1.0" for k in ids)
    rid = rig.rollout(rel["release_id"], "all", canary=1)
    seen: list[dict] = []
    ro = rig.wait_rollout(rid, ("completed", "halted"), 180, seen)
    assert ro["state"] == "completed", ro
    assert ro["kiosks"] == {k: "confirmed" for k in ids}, ro
    # The canary first: no other kiosk moved before kiosk-001 was confirmed.
    canary_done = next(i for i, s in enumerate(seen) if s["kiosks"][ids[0]] == "confirmed")
    assert canary_done > 0 and any(s["kiosks"][ids[0]] == "transferring" for s in seen[:canary_done]), seen[:3]
    for s in seen[:canary_done]:
        assert s["kiosks"][ids[1]] == s["kiosks"][ids[2]] == "pending", s["kiosks"]
    for kid in ids:
        assert rig.bridge.kiosk(kid)["fw"] == "0.2.0"
        wait_until(lambda: (rig.fleet.births.get(kid) or {}).get("fw") == "0.2.0", 20, f"{kid} born 0.2.0")
        steps = [r["ev"] for r in rig.ota_records(kid)]
        assert steps == ["staging", "staged", "switching", "trial", "confirmed"], (kid, steps)
        flash = rig.fleet.kiosk(kid).flash
        st = json.loads((flash / "fw" / "boot.json").read_text())
        assert st["active"] == "b" and not st["trial"], st
        assert (flash / "fw" / "b" / "manifest.txt").read_text().startswith("kiosk-slot 1\nversion 0.2.0\n")
        assert (flash / "config.json").exists() and (flash / "journal").is_dir()
        boots = [r for r in journal_records(flash).values() if r["k"] == "boot"]
        assert boots[-1]["fw"] == "0.2.0" and boots[-2]["fw"] == "0.1.0"
    # The same release again: every kiosk already runs it.
    rid = rig.rollout(rel["release_id"], [ids[0]], canary=0)
    assert rig.wait_rollout(rid, ("completed", "halted"), 60)["state"] == "completed"
    assert rig.ota_records(ids[0])[-1]["ev"] == "current"


def test_a_release_that_raises_at_boot_rolls_back_by_itself_and_halts_the_rollout(rig):
    src = rig.root / "broken-src"
    shutil.copytree(paths.FIRMWARE_DIR, src)
    with open(src / "kiosk" / "app.py", "a") as f:
        f.write("\nraise RuntimeError('this release raises at boot')\n")
    status, rel = rig.upload(build_release(rig.root, "0.3.0", src))
    assert status == 201, rel
    ids = rig.fleet.ids
    order = [ids[1], ids[0], ids[2]]
    rid = rig.rollout(rel["release_id"], order, canary=1)
    ro = rig.wait_rollout(rid, ("completed", "halted"), 120)
    assert ro["state"] == "halted", ro
    assert ro["kiosks"] == {ids[1]: "rolled_back", ids[0]: "pending", ids[2]: "pending"}, ro
    why = ro["detail"][ids[1]]["reason"]
    assert "raised at boot: RuntimeError: this release raises at boot" in why, why
    assert ids[1] in ro["reason"] and "rolled back" in ro["reason"], ro["reason"]
    kid = ids[1]
    steps = [r["ev"] for r in rig.ota_records(kid) if r.get("release") == rel["release_id"]]
    assert steps == ["staging", "staged", "switching", "rolled_back"], steps
    rb = rig.ota_records(kid)[-1]
    assert rb["version"] == "0.3.0" and rb["running"] == "0.2.0", rb
    # The others were never offered it.
    for other in (ids[0], ids[2]):
        assert not [r for r in rig.ota_records(other) if r.get("release") == rel["release_id"]]
    # The kiosk runs the previous firmware, online, and serves a pickup.
    wait_until(lambda: rig.bridge.kiosk(kid)["online"] and rig.bridge.kiosk(kid)["fw"] == "0.2.0", 30,
               f"{kid} back online on 0.2.0")
    st = json.loads((rig.fleet.kiosk(kid).flash / "fw" / "boot.json").read_text())
    assert st["active"] == "b" and not st["trial"] and st["rolled_back"]["reported"], st
    rig.restock(kid, "rx-ota-1", 2)
    cid = rig.run(kid, "/pickups", {"order_id": "rx-ota-1", "bin": 2})
    rig.hold_door(kid, "pickup")
    assert rig.bridge.wait_command(cid, TERMINAL, 40)["state"] == "succeeded"
    # A halted rollout stays halted.
    status, r = rig.bridge.request("POST", f"/api/rollouts/{rid}/halt", who="admin")
    assert status == 409, r


def test_a_rollout_requested_during_a_pickup_waits_for_it_to_end(rig):
    kid = rig.fleet.ids[2]
    status, rel = rig.upload(build_release(rig.root, "0.2.1"))
    assert status == 201, rel
    rig.restock(kid, "rx-ota-2", 5)
    cid = rig.run(kid, "/pickups", {"order_id": "rx-ota-2", "bin": 5})
    wait_until(lambda: rig.fleet.world(kid)["world"]["locks"]["pickup"]["energized"], 30, "pickup door unlocked")
    rid = rig.rollout(rel["release_id"], [kid], canary=0)
    # The patient takes a while: the kiosk took the offer, but nothing moves
    # on while the pickup runs.
    time.sleep(6)
    ro = rig.state(rid)
    assert ro["kiosks"][kid] in ("pending", "transferring") and ro["detail"][kid]["bytes"] == 0, ro
    assert rig.bridge.command(cid)["state"] == "in_progress"
    assert rig.bridge.kiosk(kid)["fw"] == "0.2.0"
    rig.hold_door(kid, "pickup")
    assert rig.bridge.wait_command(cid, TERMINAL, 40)["state"] == "succeeded"
    assert rig.wait_rollout(rid, ("completed", "halted"), 120)["state"] == "completed"
    recs = sorted(journal_records(rig.fleet.kiosk(kid).flash).values(), key=lambda r: r["s"])
    ended = next(r["s"] for r in recs if r["k"] == "op" and r.get("id") == cid)
    staged = next(r["s"] for r in recs if r["k"] == "ota" and r["ev"] == "staged" and r["release"] == rel["release_id"])
    switched = next(r["s"] for r in recs if r["k"] == "ota" and r["ev"] == "switching"
                    and r["release"] == rel["release_id"])
    assert ended < staged < switched, (ended, staged, switched)
    assert rig.bridge.kiosk(kid)["fw"] == "0.2.1"


def test_a_corrupted_release_is_refused_before_any_switch(rig):
    tree = rig.root / "build-0.2.1"
    # Uploads that do not hold what their manifest says are refused whole.
    bad = rig.root / "bad-tree"
    shutil.copytree(tree, bad)
    with open(bad / "kiosk" / "clock.mpy", "ab") as f:
        f.write(b"\0")
    status, r = rig.upload(tar_of(bad))
    assert status == 422 and "kiosk/clock.mpy" in r["detail"] and "does not match" in r["detail"], r

    def link(t):
        info = tarfile.TarInfo("kiosk/evil.mpy")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(info)
    status, r = rig.upload(tar_of(tree, link))
    assert status == 422 and "kiosk/evil.mpy" in r["detail"] and "links" in r["detail"], r
    status, r = rig.upload(b"not a tarball")
    assert status == 422 and "tar.gz" in r["detail"], r
    status, r = rig.upload(build_release(rig.root, "0.2.9"), who="technician")
    assert status == 403, r
    # A release that was good when uploaded, damaged later where the bridge
    # keeps it: the kiosk checks every file against the signed manifest and
    # refuses the release; it never switches.
    status, rel = rig.upload(build_release(rig.root, "0.2.9"))
    assert status == 201, rel
    db = sqlite3.connect(rig.bridge.db[len("sqlite:///"):])
    with db:
        (data,) = db.execute("SELECT data FROM release_files WHERE release = ? AND path = ?",
                             (rel["release_id"], "kiosk/core/journal.mpy")).fetchone()
        raw = bytearray(base64.b64decode(data))
        raw[len(raw) // 2] ^= 0x01          # one bit, the size unchanged
        db.execute("UPDATE release_files SET data = ? WHERE release = ? AND path = ?",
                   (base64.b64encode(bytes(raw)).decode(), rel["release_id"], "kiosk/core/journal.mpy"))
    db.close()
    kid = rig.fleet.ids[0]
    before = rig.bridge.kiosk(kid)["fw"]
    rid = rig.rollout(rel["release_id"], [kid], canary=0)
    ro = rig.wait_rollout(rid, ("completed", "halted"), 90)
    assert ro["state"] == "halted" and ro["kiosks"][kid] == "failed", ro
    assert ro["detail"][kid]["reason"].startswith("bad_file: kiosk/core/journal.mpy"), ro["detail"][kid]
    steps = [r["ev"] for r in rig.ota_records(kid) if r.get("release") == rel["release_id"]]
    assert steps == ["staging", "refused"], steps
    flash = rig.fleet.kiosk(kid).flash
    st = json.loads((flash / "fw" / "boot.json").read_text())
    assert not st["trial"] and not (flash / "fw" / ("a" if st["active"] == "b" else "b") / "manifest.txt").exists()
    assert rig.bridge.kiosk(kid)["online"] and rig.bridge.kiosk(kid)["fw"] == before


def test_kioskctl_shows_the_staged_release_and_a_halt_reaches_a_kiosk_that_was_away(rig):
    kid = rig.fleet.ids[2]
    pty = rig.fleet.pty(kid)
    broken = next(r for r in rig.bridge.get("/api/releases") if r["version"] == "0.3.0")["release_id"]
    # A technician's service session: the kiosk is not idle, so it stages the release and waits.
    rig.bridge.wait_command(rig.run(kid, "/service", {"session": "tech-ota-2"}), "succeeded")
    rid = rig.rollout(broken, [kid], canary=0)
    wait_until(lambda: rig.state(rid)["kiosks"][kid] == "staged", 60, f"{kid} staged")
    # The dashboard: each kiosk's firmware, the running rollout with the
    # kiosk staged, and the one that halted earlier with its reason.
    with dashboard(rig, "viewer") as page:
        expect.set_options(timeout=20_000)
        for k, v in zip(rig.fleet.ids, ("0.2.0", "0.2.0", "0.2.1")):
            expect(page.locator(f'#fleet-table tr[data-kiosk="{k}"] [data-field="fw"]')).to_have_text(v)
        card = page.locator(f'#rollouts article[data-rollout="{rid}"]')
        expect(card).to_have_attribute("data-state", "running")
        expect(card).to_contain_text("Firmware 0.3.0")
        expect(card.locator(f'li[data-kiosk="{kid}"]')).to_have_attribute("data-state", "staged")
        halted = page.locator('#rollouts article[data-state="halted"]').filter(has_text="rolled back")
        expect(halted.first.locator('[data-field="reason"]')).to_contain_text("raised at boot")
        expect(halted.first.locator(f'li[data-kiosk="{rig.fleet.ids[1]}"]')).to_have_attribute("data-state",
                                                                                             "rolled_back")
        assert not page.errors, page.errors
    r = kioskctl(pty, "--stay", "status", "--json")
    assert r.returncode == 0, r.stderr
    fw = json.loads(r.stdout)["firmware"]
    assert fw["layout"] == "slots" and fw["running_version"] == "0.2.1" and fw["running"] == fw["active"], fw
    assert fw["staged"]["version"] == "0.3.0" and fw["staged"]["state"] == "staged", fw
    assert fw["slots"][fw["staged"]["slot"]] == "0.3.0" and fw["slots"][fw["running"]] == "0.2.1", fw
    r = kioskctl(pty, "--stay", "status")
    assert r.returncode == 0 and "0.3.0 (staged, release " + broken in r.stdout, r.stdout
    assert "running" in r.stdout and "0.2.1 (slot " in r.stdout, r.stdout
    # The kiosk sits at the REPL, offline, when the rollout is halted.
    wait_until(lambda: not rig.bridge.kiosk(kid)["online"], 20, f"{kid} offline")
    status, ro = rig.bridge.request("POST", f"/api/rollouts/{rid}/halt", who="admin")
    assert status == 200 and ro["state"] == "halted" and ro["kiosks"][kid] == "pending", ro
    assert ro["detail"][kid]["reason"] == "halted: dropping the release", ro
    # It comes back (its service door held open: not idle); the halt reaches
    # it before it could switch, and it drops the release.
    rig.fleet.door(kid, "service", "force")
    assert kioskctl(pty, "reboot").returncode == 0
    wait_until(lambda: any(r["ev"] == "aborted" and r.get("release") == broken for r in rig.ota_records(kid)), 60,
               f"{kid} dropped the release")
    wait_until(lambda: rig.state(rid)["detail"][kid]["reason"] == "halted", 20, "the halt settled")
    rig.fleet.door(kid, "service", "close")
    time.sleep(7)     # longer than the quiet time before a switch
    assert not [r for r in rig.ota_records(kid) if r["ev"] == "switching" and r.get("release") == broken]
    assert rig.bridge.kiosk(kid)["fw"] == "0.2.1" and rig.state(rid)["kiosks"][kid] == "pending"
