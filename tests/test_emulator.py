"""Emulated kiosks: the real firmware in its own MicroPython process per
kiosk, on its own flash, against the simulated world, online through a real
mosquitto; their consoles are ptys speaking the board REPL, so mpremote
works against them as against a board."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tty
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from kiosk_host import protocol
from kiosk_host.emulator import EmulatorError, PoweredOff, UnknownKiosk

from emu_support import VENV_BIN, Pty, Rig, mpremote, wait_for
from link_support import Mosquitto, free_port


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = Rig(tmp_path_factory.mktemp("emu"))
    yield r
    r.close()


def test_each_kiosk_boots_its_own_flash_keys_and_pty_and_comes_online_signed(rig):
    ids = rig.fleet.ids
    assert ids == ["kiosk-001", "kiosk-002"]
    for kid in ids:
        b = rig.wait_birth(kid)
        assert protocol.verify(rig.key(kid), b)
        other = ids[1] if kid == ids[0] else ids[0]
        assert not protocol.verify(rig.key(other), b)
        k = rig.fleet.kiosk(kid)
        assert (k.flash / "journal").is_dir() and (k.flash / "fw" / "a" / "kiosk").is_dir()   # slot a (docs/ota.md)
        cfg = json.loads((k.flash / "config.json").read_text())
        assert cfg["kiosk_id"] == kid and cfg["key"] == rig.key(kid).hex()
        keyfile = rig.fleet.keys_dir / f"{kid}.key"
        assert keyfile.stat().st_mode & 0o077 == 0
        assert len(keyfile.read_text()) == 65 and keyfile.read_text().endswith("\n")
    listed = {k["id"]: k for k in rig.fleet.kiosks}
    assert listed["kiosk-001"]["pty"] != listed["kiosk-002"]["pty"]
    for k in listed.values():
        assert os.path.realpath(k["tty"]) == k["pty"] and k["powered"] and k["pid"]
    wait_for(lambda: all(k["online"] for k in rig.fleet.kiosks), 10, "online flags from the broker")


def test_control_verbs_act_on_the_world_and_the_firmware_journals_them(rig):
    kid = "kiosk-001"
    rig.wait_birth(kid)
    # Door inputs settle after boot before a forced opening can be told.
    rig.wait_event(kid, lambda e: e.get("door") == "pickup" and e.get("ev") == "door_closed")
    rig.fleet.sensor(kid, "cabinet", celsius=24.5, humidity=41.0)
    w = rig.fleet.world(kid)["world"]
    assert w["sensors"]["cabinet"]["celsius"] == 24.5 and w["sensors"]["cabinet"]["humidity"] == 41.0
    assert rig.fleet.door(kid, "pickup", "open") == {"ok": False, "door": "closed", "reason": "locked"}
    assert rig.fleet.door(kid, "pickup", "force")["door"] == "open"
    evt = rig.wait_event(kid, lambda e: e.get("ev") == "door_forced")
    assert evt["door"] == "pickup"
    assert rig.fleet.world(kid)["world"]["locks"]["pickup"]["door_closed"] is False
    rig.fleet.door(kid, "pickup", "close")
    assert rig.fleet.world(kid)["world"]["locks"]["pickup"]["door_closed"] is True
    r = rig.fleet.fault(kid, "broken_home_switch", True)
    assert r["targets"] == ["A"]
    assert rig.fleet.world(kid)["world"]["carousels"]["A"]["faults"] == ["home_broken"]
    rig.fleet.fault(kid, "home_broken", False)
    assert rig.fleet.fault(kid, "noisy", True, target="shelf_top")["targets"] == ["shelf_top"]
    rig.fleet.fault(kid, "noisy", False, target="shelf_top")
    with pytest.raises(UnknownKiosk):
        rig.fleet.door("kiosk-999", "pickup", "open")
    with pytest.raises(EmulatorError, match="action"):
        rig.fleet.door(kid, "pickup", "kick")
    with pytest.raises(EmulatorError, match="unknown fault"):
        rig.fleet.fault(kid, "meteor", True)
    with pytest.raises(EmulatorError, match="no sensor"):
        rig.fleet.sensor(kid, "attic", celsius=3)


def test_power_cut_then_restore_boots_the_same_flash_again(rig):
    kid = "kiosk-002"
    rig.wait_birth(kid)
    boot = rig.last_boot(kid)
    pid = rig.fleet.kiosk(kid).proc.pid
    rig.fleet.door(kid, "service", "force")   # the door stays open through the outage
    off = rig.fleet.power(kid, False)
    assert off["powered"] is False and off["pid"] is None
    with pytest.raises(OSError):
        os.kill(pid, 0)
    # No goodbye from a dead board: the broker publishes its will.
    h = rig.hosts[kid]
    h.wait(lambda: any(d.get("online") is False for d, _ in h.states), 15, "death (will)")
    assert rig.fleet.world(kid)["world"] is None
    with pytest.raises(PoweredOff):
        rig.fleet.door(kid, "service", "close")
    on = rig.fleet.power(kid, True)
    assert on["powered"] and on["pid"] != pid
    birth = rig.wait_birth(kid, after_boot=boot)
    assert birth["boot"] == boot + 1
    assert rig.fleet.world(kid)["world"]["locks"]["service"]["door_closed"] is False
    rig.fleet.door(kid, "service", "close")


def test_network_drop_and_restore(rig):
    kid = "kiosk-001"
    rig.wait_birth(kid)
    h = rig.hosts[kid]
    n = len(h.states)
    assert rig.fleet.network(kid, False) == {"up": False, "drops": 1, "route": "ok", "rtt_ms": 0}
    h.wait(lambda: any(d.get("online") is False for d, _ in h.states[n:]), 15, "death after the drop")
    m = len(h.states)
    rig.fleet.network(kid, True)
    h.wait(lambda: any(d.get("online") for d, _ in h.states[m:]), 30, "birth after the network came back")


def test_a_scanned_code_reaches_the_host_once_and_never_the_flash(rig):
    from bridge_support import journal_records
    kid = "kiosk-002"
    rig.wait_birth(kid)
    h = rig.hosts[kid]
    assert rig.fleet.scan(kid, "K7Q2-M9XD-3HTR")["sent"] == 15
    live = rig.wait_event(kid, lambda e: e.get("k") == "scan" and e.get("ev") == "code")
    assert live["text"] == "K7Q2-M9XD-3HTR" and not live.get("replayed")
    assert len(live["h"]) == 8
    flash = rig.fleet.kiosk(kid).flash
    wait_for(lambda: live["s"] in journal_records(flash), 5, "the scan record on flash")
    assert "text" not in journal_records(flash)[live["s"]]
    assert b"K7Q2-M9XD-3HTR" not in b"".join(p.read_bytes() for p in flash.glob("**/*") if p.is_file()), \
        "the code's text is nowhere on the kiosk's flash"
    # The host answers (one code waits at a time); journaled with the reason.
    cid = h.command("scan_refused", {"scan": live["s"], "why": "not_stocked"})
    h.reply_state(cid, "succeeded")
    ans = rig.wait_event(kid, lambda e: e.get("k") == "scan" and e.get("ev") == "refused")
    assert ans["scan"] == live["s"] and ans["why"] == "not_stocked" and "fails" not in ans
    # Scanned while the kiosk is offline: the record arrives later, replayed, without its text.
    rig.fleet.network(kid, False)
    time.sleep(0.5)
    rig.fleet.scan(kid, "OFFLINE-CODE")
    wait_for(lambda: any(r.get("k") == "scan" and r.get("s", 0) > live["s"] for r in journal_records(flash).values()),
             5, "the offline scan journaled")
    rig.fleet.network(kid, True)
    later = rig.wait_event(kid, lambda e: e.get("k") == "scan" and e.get("s", 0) > live["s"] and e.get("ev") == "code",
                           30)
    assert later.get("replayed") is True and "text" not in later
    with h.lock:
        assert all("text" not in e for e in h.evt_log if e["s"] != live["s"])
    # The call button: journaled by name.
    rig.fleet.button(kid, "call_pharmacist")
    assert rig.wait_event(kid, lambda e: e.get("k") == "button")["name"] == "call_pharmacist"
    with pytest.raises(EmulatorError, match="no button"):
        rig.fleet.button(kid, "self_destruct")


def test_mpremote_exec_ls_and_cp_against_the_pty(rig, tmp_path):
    kid = "kiosk-002"
    pty = rig.fleet.pty(kid)
    r = mpremote(pty, "exec", "print(6 * 7)")
    assert r.returncode == 0 and r.stdout.strip() == "42", r
    r = mpremote(pty, "fs", "ls")
    assert r.returncode == 0, r
    names = r.stdout.split()
    for want in ("config.json", "main.py", "bootsel.mpy", "fw/", "boards/", "journal/"):
        assert want in names, r.stdout
    local = tmp_path / "note.txt"
    local.write_text("replaced the cabinet sensor\n")
    r = mpremote(pty, "fs", "cp", str(local), ":note.txt")
    assert r.returncode == 0, r
    assert (rig.fleet.kiosk(kid).flash / "note.txt").read_text() == "replaced the cabinet sensor\n"
    r = mpremote(pty, "fs", "cat", ":note.txt")
    assert r.stdout == "replaced the cabinet sensor\n", r
    # Globals live as long as the VM, as in a board's __main__: resume skips
    # mpremote's soft reset and finds them.
    assert mpremote(pty, "exec", "visit = 'tech-7'").returncode == 0
    r = mpremote(pty, "resume", "exec", "print(visit)")
    assert r.returncode == 0 and r.stdout.strip() == "tech-7", r
    r = mpremote(pty, "exec", "1/0")
    assert r.returncode != 0 and "ZeroDivisionError" in r.stdout + r.stderr
    # mpremote leaves the board at the REPL with the firmware stopped, as a
    # board would be; a soft reset from the friendly REPL starts it again.
    boot = rig.last_boot(kid)
    p = Pty(pty)
    try:
        p.send(b"\r")
        p.read_until(b">>> ")
        p.send(b"\x04")
        p.read_until(b"MPY: soft reboot\r\n")
    finally:
        p.close()
    rig.wait_birth(kid, after_boot=boot)


def test_ctrl_c_on_the_pty_stops_with_locks_off_and_motor_disabled(rig):
    kid = "kiosk-001"
    rig.wait_birth(kid)
    h = rig.hosts[kid]
    rig.wait_event(kid, lambda e: e.get("door") == "service" and e.get("ev") == "door_closed")
    cid = h.command("service_start", {"session": "t-1"})
    h.reply_state(cid, "succeeded")
    cid = h.command("unlock", {"door": "service"})
    h.reply_state(cid, "in_progress")
    wait_for(lambda: rig.fleet.world(kid)["world"]["locks"]["service"]["energized"], 5, "service lock energised")
    p = Pty(rig.fleet.pty(kid))
    try:
        p.send(b"\x03")
        out = p.read_until(b">>> ", 15)
        assert b"locks de-energised, motors disabled" in out
        w = rig.fleet.world(kid)["world"]
        assert not any(lk["energized"] for lk in w["locks"].values())
        assert not any(c["enabled"] for c in w["carousels"].values())
        assert w["violations"] == []
        # The console notes the prompt as it passes it on: a moment after we see it.
        wait_for(lambda: rig.fleet.kiosk(kid).console.mode == "idle", 5, "the console idle at the prompt")
        p.send(b"import kiosk.app\r")
        p.read_until(b">>> ")
        p.send(b"print('stopped', kiosk.app.kiosk.ctl.stopped, len(kiosk.app.kiosk.locks))\r")
        assert b"stopped True 2" in p.read_until(b">>> ")
        p.send(b"\x04")   # soft reset: the firmware runs again
        p.read_until(b"MPY: soft reboot\r\n")
    finally:
        p.close()
    wait_for(lambda: rig.fleet.kiosk(kid).console.mode == "busy", 10, "firmware running again")


def test_mpremote_repl_is_interactive_and_ctrl_d_soft_resets(rig):
    import pty as ptymod
    import select
    kid = "kiosk-002"
    rig.wait_birth(kid)
    master, slave = ptymod.openpty()
    tty.setraw(slave)   # so the terminal's line discipline never eats a Ctrl-C before mpremote sets raw mode
    proc = subprocess.Popen([str(VENV_BIN / "mpremote"), "connect", rig.fleet.pty(kid), "repl"],
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    seen = b""

    def until(marker: bytes, timeout: float = 15) -> bytes:
        nonlocal seen
        end = time.monotonic() + timeout
        while marker not in seen:
            assert time.monotonic() < end, f"{marker!r} not seen; got {seen[-400:]!r}"
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break
        i = seen.index(marker) + len(marker)
        out, seen = seen[:i], seen[i:]
        return out

    try:
        until(b"to exit this shell")
        os.write(master, b"\x03")            # the firmware is running: stop it
        until(b">>> ")
        os.write(master, b"x = 6 * 7\r")
        until(b">>> ")
        os.write(master, b"x\r")
        assert b"42" in until(b">>> ")
        os.write(master, b"for i in range(2):\r")
        until(b"... ")
        os.write(master, b"print('line', i)\r\r")
        out = until(b">>> ")
        assert b"line 0" in out and b"line 1" in out
        os.write(master, b"\x04")
        until(b"soft reboot")
        os.write(master, b"\x1d")             # Ctrl-] leaves mpremote
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    wait_for(lambda: rig.fleet.kiosk(kid).console.mode == "busy", 10, "firmware running again")


def test_a_hard_reset_restarts_on_the_same_flash_and_pty(rig):
    kid = "kiosk-002"
    k = rig.fleet.kiosk(kid)
    rig.wait_birth(kid)
    boot = rig.last_boot(kid)
    pty_before = rig.fleet.pty(kid)
    p = Pty(pty_before)
    try:
        p.send(b"\x03")
        p.read_until(b">>> ", 15)
        p.send(b"import machine; machine.reset()\r")
        p.read_until(b"machine.reset()\r\n")
    finally:
        p.close()
    rig.wait_birth(kid, after_boot=boot)
    assert rig.fleet.pty(kid) == pty_before and k.boots >= 2


def test_emulate_command_prints_ptys_and_serves_the_control_routes(tmp_path):
    broker = Mosquitto(tmp_path / "mq").start()
    port = free_port()
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "kiosk-001.key").write_text("ab" * 32 + "\n")   # an existing key is used, not replaced
    proc = subprocess.Popen(
        [sys.executable, "-m", "kiosk_host.emulator", "--broker", f"mqtt://127.0.0.1:{broker.port}",
         "--count", "1", "--state-dir", str(tmp_path / "state"), "--keys", str(keys),
         "--control", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}/api/sim"

    def call(path, body=None):
        req = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    try:
        end = time.monotonic() + 30
        while True:
            try:
                status, kiosks = call("")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < end, proc.stdout.read()
                time.sleep(0.2)
        assert status == 200 and [k["id"] for k in kiosks] == ["kiosk-001"]
        assert kiosks[0]["pty"].startswith("/dev/pts/")
        cfg = json.loads((tmp_path / "state" / "kiosk-001" / "flash" / "config.json").read_text())
        assert cfg["key"] == "ab" * 32
        assert call("/kiosk-001/door", {"door": "service", "action": "force"})[1]["door"] == "open"
        s, w = call("/kiosk-001")
        assert s == 200 and w["world"]["locks"]["service"]["door_closed"] is False
        assert "position" in w["world"]["carousels"]["A"] and "cabinet" in w["world"]["sensors"]
        assert call("/kiosk-001/sensor", {"sensor": "shelf_top", "celsius": 7.5})[1]["celsius"] == 7.5
        assert call("/kiosk-001/door", {"door": "side", "action": "open"})[0] == 422
        assert call("/kiosk-001/door", {"door": "pickup"})[0] == 422
        assert call("/nope/door", {"door": "pickup", "action": "open"})[0] == 404
        assert call("/nope")[0] == 404
        assert call("/kiosk-001/fault", {"kind": "stall", "on": True})[1]["targets"] == ["A"]
        s, body = call("/kiosk-001/fault", {"kind": "meteor", "on": True})
        assert s == 422 and "unknown fault" in body["detail"]
        assert call("/kiosk-001/network", {"up": False})[1]["up"] is False
        assert call("/kiosk-001/power", {"on": False})[1]["powered"] is False
        assert call("/kiosk-001/door", {"door": "pickup", "action": "open"})[0] == 409
        assert call("/kiosk-001/power", {"on": True})[1]["powered"] is True
        w = call("/kiosk-001")[1]["world"]
        assert w["carousels"]["A"]["faults"] == ["stall"]     # faults outlast a power cycle
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
        broker.stop()
    assert "kiosk-001  pty /dev/pts/" in out, out
    assert proc.returncode == 0, out
