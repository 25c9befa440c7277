"""kioskctl against emulated kiosks' ptys: the same serial path a technician
uses with a board on USB (mpremote's transport, the board's raw REPL, the
firmware's kiosk.service.debug)."""

from __future__ import annotations

import json
import os
import pty as ptymod
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from kiosk_host import build, layout, paths

from emu_support import Rig, kioskctl, wait_for


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = Rig(tmp_path_factory.mktemp("ctl"))
    yield r
    r.close()


def _running(rig, kid):
    return rig.fleet.kiosk(kid).console.mode == "busy"


def test_status_json_and_table_then_the_kiosk_runs_again(rig):
    kid = "kiosk-001"
    rig.wait_birth(kid)
    boot = rig.last_boot(kid)
    r = kioskctl(rig.fleet.pty(kid), "status", "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["kiosk_id"] == kid and st["board"] == "emulator" and st["controller"] == "stopped"
    assert set(st["doors"]) == {"pickup", "service"} and st["doors"]["pickup"]["energized"] is False
    assert set(st["sensors"]) == {"shelf_top", "shelf_bottom", "cabinet"}
    assert st["heap"]["free"] > 0 and st["link"]["connects"] >= 1 and st["alarms"] == []
    # kioskctl stopped a running kiosk, so it started it again.
    b = rig.wait_birth(kid, after_boot=boot)["boot"]
    rig.settled(kid, "pickup", b)
    rig.fleet.door(kid, "pickup", "force")
    rig.wait_event(kid, lambda e: e.get("ev") == "door_forced")
    r = kioskctl(rig.fleet.pty(kid), "status")
    assert r.returncode == 0, r.stderr
    for want in ("kiosk        kiosk-001", "ALARMS", "! pickup door: forced", "cabinet", "heap free"):
        assert want in r.stdout, r.stdout
    rig.fleet.door(kid, "pickup", "close")


def test_logs_read_the_journal(rig):
    kid = "kiosk-001"
    wait_for(lambda: _running(rig, kid), 10, "kiosk running")
    rig.wait_event(kid, lambda e: e.get("ev") == "door_forced")
    r = kioskctl(rig.fleet.pty(kid), "logs", "-n", "200", "--kind", "door", "--json")
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert recs and all(x["k"] == "door" for x in recs)
    assert any(x.get("ev") == "door_forced" and x["door"] == "pickup" for x in recs)
    seqs = [x["s"] for x in recs]
    assert seqs == sorted(seqs)
    r = kioskctl(rig.fleet.pty(kid), "logs", "-n", "3")
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and len(lines) == 3, r
    since = recs[-1]["s"]
    r = kioskctl(rig.fleet.pty(kid), "logs", "--since", str(since), "--json")
    assert [json.loads(x)["s"] for x in r.stdout.splitlines()][0] == since


def test_logs_follow_prints_records_as_they_are_journaled(rig):
    kid = "kiosk-002"
    rig.wait_birth(kid)
    proc = subprocess.Popen([sys.executable, "-m", "kiosk_host.kioskctl", "--port", rig.fleet.pty(kid),
                             "logs", "-f", "-n", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    t = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    t.start()
    try:
        wait_for(lambda: any('"boot"' in x for x in lines), 15, "the kiosk's boot record")
        wait_for(lambda: any('"door_closed"' in x for x in lines), 15, "doors settled")
        rig.fleet.door(kid, "service", "force")
        wait_for(lambda: any('"door_forced"' in x for x in lines), 15, "the forced door, live")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert proc.returncode == 0, proc.stderr.read()
    rig.fleet.door(kid, "service", "close")
    wait_for(lambda: _running(rig, kid), 10, "kiosk running after follow")


def test_config_get_masks_secrets_and_set_is_validated(rig, tmp_path):
    kid = "kiosk-002"
    secret = rig.key(kid).hex()
    pty = rig.fleet.pty(kid)
    r = kioskctl(pty, "config", "get")
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    assert cfg["key"] == "***" and cfg["kiosk_id"] == kid and secret not in r.stdout
    assert kioskctl(pty, "config", "get", "broker.host").stdout.strip() == "127.0.0.1"
    r = kioskctl(pty, "config", "set", "policies.door_held_open_s", "-5")
    assert r.returncode == 1 and "door_held_open_s" in r.stderr and "positive" in r.stderr, r
    r = kioskctl(pty, "config", "set", "policies.door_held_open_s", "90")
    assert r.returncode == 0, r.stderr
    assert kioskctl(pty, "config", "get", "policies.door_held_open_s").stdout.strip() == "90"
    new_key = "cd" * 32
    r = kioskctl(pty, "config", "set", "key", new_key)     # a secret on the command line: refused
    assert r.returncode == 1 and "@FILE" in r.stderr and new_key not in r.stdout + r.stderr
    (tmp_path / "new.key").write_text(new_key + "\n")
    (tmp_path / "old.key").write_text(secret + "\n")
    r = kioskctl(pty, "config", "set", "key", f"@{tmp_path / 'new.key'}")
    assert r.returncode == 0 and new_key not in r.stdout + r.stderr and "***" in r.stdout
    assert json.loads((rig.fleet.kiosk(kid).flash / "config.json").read_text())["key"] == new_key
    r = kioskctl(pty, "config", "set", "key", f"@{tmp_path / 'old.key'}")   # back, or the host stops trusting it
    assert r.returncode == 0
    r = kioskctl(pty, "config", "get", "nothing.here")
    assert r.returncode == 1 and "no setting nothing.here" in r.stderr


def _slot_state(flash):
    return json.loads((flash / "fw" / "boot.json").read_text())


def test_deploy_fills_the_idle_slot_verifies_it_then_switches(rig, tmp_path):
    kid = "kiosk-001"
    pty = rig.fleet.pty(kid)
    flash = rig.fleet.kiosk(kid).flash
    r = kioskctl(pty, "deploy", "--no-build")
    assert r.returncode == 0 and "up to date" in r.stdout, r
    tree = tmp_path / "fw"
    shutil.copytree(paths.FIRMWARE_BUILD_DIR, tree)
    with open(tree / "main.py", "a") as f:
        f.write("# field build\n")
    manifest = build.write_manifest(tree, "9.9.9")
    n = len(manifest["files"])
    slot_files, _ = layout.split(manifest["files"])
    assert _slot_state(flash)["active"] == "a"
    r = kioskctl(pty, "deploy", "--from", str(tree))
    assert r.returncode == 0, r.stderr
    # Only main.py crosses the cable: slot b gets the unchanged firmware
    # files copied on the board from the running slot a.
    assert f"1 of {n} files differ" in r.stdout, r.stdout
    assert f"{len(slot_files)} copied on the board from slot a; firmware into slot b" in r.stdout, r.stdout
    assert "] main.py" in r.stdout and f"{n} verified" in r.stdout, r.stdout
    assert _slot_state(flash)["active"] == "b" and not _slot_state(flash)["trial"]
    assert (flash / "main.py").read_bytes() == (tree / "main.py").read_bytes()
    assert (flash / "fw" / "b" / "manifest.txt").read_bytes() == layout.slot_manifest(manifest)
    for rel in slot_files:
        assert (flash / "fw" / "b" / rel).read_bytes() == (tree / rel).read_bytes(), rel
    r = kioskctl(pty, "deploy", "--from", str(tree))
    assert "up to date" in r.stdout
    # A file damaged in the running slot: the build goes into the other
    # slot, which becomes the running one; the damaged one is not used.
    (flash / "fw" / "b" / "kiosk" / "service" / "debug.mpy").write_bytes(b"junk")
    r = kioskctl(pty, "deploy", "--from", str(tree))
    assert r.returncode == 0 and "firmware into slot a" in r.stdout, r
    assert _slot_state(flash)["active"] == "a"
    assert (flash / "fw" / "a" / "manifest.txt").read_bytes() == layout.slot_manifest(manifest)
    # The firmware that was running comes back on the new build.
    boot = rig.last_boot(kid)
    rig.wait_birth(kid, after_boot=boot - 1)
    wait_for(lambda: _running(rig, kid), 10, "kiosk running after deploy")


def test_deploy_moves_a_board_in_the_flat_layout_into_slot_a(rig):
    """A board deployed before firmware slots (kiosk/ and lib/ at the root,
    main.py importing kiosk.app) boots as it was, and deploy moves it."""
    kid = "kiosk-002"
    k = rig.fleet.kiosk(kid)
    flash = k.flash
    rig.fleet.power(kid, False)
    try:
        slot = flash / "fw" / _slot_state(flash)["active"]
        for name in ("kiosk", "lib"):
            shutil.move(str(slot / name), str(flash / name))
        shutil.rmtree(flash / "fw")
        for name in ("bootsel.mpy", "boot.py"):
            (flash / name).unlink()
        (flash / "main.py").write_text("import kiosk.app\n\nkiosk.app.main()\n")
        shutil.copyfile(paths.FIRMWARE_BUILD_DIR / "manifest.json", flash / "manifest.json")
    finally:
        rig.fleet.power(kid, True)
    boot = rig.wait_birth(kid)["boot"]
    wait_for(lambda: _running(rig, kid), 10, "the flat firmware running")
    r = kioskctl(rig.fleet.pty(kid), "deploy", "--no-build")
    assert r.returncode == 0, r.stderr
    assert "the board runs the flat layout" in r.stdout and "firmware into slot a" in r.stdout, r.stdout
    assert _slot_state(flash)["active"] == "a"
    for name in ("kiosk", "lib", "manifest.json"):
        assert not (flash / name).exists(), name
    assert (flash / "main.py").read_bytes() == (paths.FIRMWARE_BUILD_DIR / "main.py").read_bytes()
    assert rig.wait_birth(kid, after_boot=boot)["boot"] == boot + 1
    wait_for(lambda: _running(rig, kid), 10, "the firmware running from slot a")


def test_home_at_the_repl_and_service_actions_need_a_session(rig):
    kid = "kiosk-002"
    pty = rig.fleet.pty(kid)
    rig.wait_birth(kid)
    # --stay: the world the operation moved is the one we look at (a soft
    # reset starts a new process, and the simulated carousel with it).
    r = kioskctl(pty, "--stay", "home", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["state"] == "succeeded"
    w = rig.fleet.world(kid)["world"]
    assert w["carousels"]["A"]["moves"] >= 1 and not w["carousels"]["A"]["enabled"]
    for args in (["unlock", "--door", "service"], ["jog", "--bins", "2"], ["selftest"]):
        r = kioskctl(pty, *args)
        assert r.returncode == 1 and "no_service_session" in r.stderr, (args, r)
    assert not any(lk["energized"] for lk in rig.fleet.world(kid)["world"]["locks"].values())
    recs = [json.loads(x) for x in kioskctl(pty, "logs", "-n", "30", "--json").stdout.splitlines()]
    assert any(x["k"] == "op" and x.get("op") == "home" and x.get("state") == "succeeded" for x in recs)
    assert any(x["k"] == "refused" and x.get("op") == "unlock" and x.get("why") == "no_service_session" for x in recs)
    boot = rig.last_boot(kid)
    assert kioskctl(pty, "reboot").returncode == 0
    rig.wait_birth(kid, after_boot=boot)


def test_unlock_inside_a_service_session_runs_one_door_cycle(rig):
    kid = "kiosk-001"
    rig.wait_birth(kid)
    wait_for(lambda: _running(rig, kid), 10, "kiosk running")
    h = rig.hosts[kid]
    rig.settled(kid, "service")
    cid = h.command("service_start", {"session": "tech-7"})
    h.reply_state(cid, "succeeded", 10)
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(
        r=kioskctl(rig.fleet.pty(kid), "--stay", "unlock", "--door", "service")))
    t.start()
    wait_for(lambda: rig.fleet.world(kid)["world"]["locks"]["service"]["energized"], 20, "service lock energised")
    assert rig.fleet.door(kid, "service", "open")["door"] == "open"
    # The controller takes the door as open once debounced, and then lets the lock go.
    wait_for(lambda: not rig.fleet.world(kid)["world"]["locks"]["service"]["energized"], 10, "lock released")
    time.sleep(0.5)
    rig.fleet.door(kid, "service", "close")
    t.join(60)
    r = result["r"]
    assert r.returncode == 0 and "unlock service: done" in r.stdout, r
    w = rig.fleet.world(kid)["world"]
    assert not w["locks"]["service"]["energized"] and w["locks"]["service"]["bolt_engaged"]
    # --stay: left at the REPL; a reboot starts it again.
    assert rig.fleet.kiosk(kid).console.mode == "idle"
    boot = rig.last_boot(kid)
    r = kioskctl(rig.fleet.pty(kid), "reboot")
    assert r.returncode == 0, r.stderr
    assert rig.wait_birth(kid, after_boot=boot)["boot"] == boot + 1


def test_no_board_answering_is_a_clear_error(tmp_path):
    r = kioskctl(str(tmp_path / "ttyACM9"), "status")
    assert r.returncode == 3 and "cannot open" in r.stderr and "Traceback" not in r.stderr, r
    master, slave = ptymod.openpty()   # a port that exists but where nothing answers
    try:
        r = kioskctl(os.ttyname(slave), "--timeout", "1", "status")
    finally:
        os.close(master)
        os.close(slave)
    assert r.returncode == 3 and "no MicroPython REPL answers" in r.stderr and "Traceback" not in r.stderr, r
    r = subprocess.run([sys.executable, "-m", "kiosk_host.kioskctl", "status"], capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if k != "KIOSK_PORT"}, timeout=30)
    assert r.returncode == 2 and "--port" in r.stderr


def test_a_port_another_program_holds_is_reported_busy_with_who_holds_it(rig):
    kid = "kiosk-001"
    rig.wait_birth(kid)
    # Another program holds the kiosk's port, as mpremote does (an exclusive lock).
    holder = subprocess.Popen([sys.executable, "-c", "import serial, sys; s = serial.Serial(sys.argv[1], exclusive=True); "
                               "print('held', flush=True); sys.stdin.read()", rig.fleet.pty(kid)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = kioskctl(rig.fleet.pty(kid), "status")
        assert r.returncode == 3 and "Traceback" not in r.stderr, r
        assert f"port busy: {rig.fleet.pty(kid)} is in use by" in r.stderr and f"(pid {holder.pid})" in r.stderr, r.stderr
        assert "plugged in" not in r.stderr
    finally:
        holder.stdin.close()
        holder.wait(10)
    # Released: the same command works.
    assert kioskctl(rig.fleet.pty(kid), "status").returncode == 0


def test_provision_writes_identity_key_and_broker_then_the_kiosk_boots_with_them(rig, tmp_path):
    kid = "kiosk-002"
    pty = rig.fleet.pty(kid)
    flash = rig.fleet.kiosk(kid).flash
    r = kioskctl(pty, "--stay", "config", "get", "kiosk_id")
    assert r.stdout.strip() == kid
    (flash / "config.json").unlink()          # a board that never had a config
    r = kioskctl(pty, "--stay", "config", "get")
    assert r.returncode == 0 and json.loads(r.stdout) == {}
    keyfile = rig.fleet.keys_dir / f"{kid}.key"
    before = keyfile.read_text()
    r = kioskctl(pty, "--stay", "provision", "--id", kid, "--keys", str(rig.fleet.keys_dir), "--board", "emulator",
                 "--broker", f"mqtt://127.0.0.1:{rig.broker.port}")
    assert r.returncode == 0, r.stderr
    assert before.strip() not in r.stdout and '"key": "***"' in r.stdout
    assert keyfile.read_text() == before       # an existing key is kept: the bridge still trusts it
    cfg = json.loads((flash / "config.json").read_text())
    assert cfg["kiosk_id"] == kid and cfg["key"] == before.strip() and cfg["broker"]["port"] == rig.broker.port
    r = kioskctl(pty, "--stay", "provision", "--id", "Bad_Id", "--keys", str(tmp_path))
    assert r.returncode == 1 and "kiosk id 'Bad_Id'" in r.stderr
    assert not (tmp_path / "Bad_Id.key").exists()
    r = kioskctl(pty, "--stay", "provision", "--id", kid, "--keys", str(tmp_path), "--broker", "http://x")
    assert r.returncode == 1 and "mqtt://" in r.stderr
    assert json.loads((flash / "config.json").read_text())["kiosk_id"] == kid   # nothing written
    # Credentials come from files, never from the command line (the process
    # list shows every argument to every local user).
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret-from-a-file\n")
    for bad in (["--broker", f"mqtt://{kid}:pw-on-argv@127.0.0.1:{rig.broker.port}"],
                ["--broker", f"mqtt://127.0.0.1:{rig.broker.port}", "--wifi-ssid", "x", "--wifi-password", "pw"]):
        r = kioskctl(pty, "--stay", "provision", "--id", kid, "--keys", str(rig.fleet.keys_dir), *bad)
        assert r.returncode == 1 and "@FILE" in r.stderr, r.stderr
    assert "password" not in json.loads((flash / "config.json").read_text()).get("broker", {})
    r = kioskctl(pty, "--stay", "config", "set", "broker.password", "pw-on-argv")
    assert r.returncode == 1 and "@FILE" in r.stderr
    r = kioskctl(pty, "--stay", "provision", "--id", kid, "--keys", str(rig.fleet.keys_dir), "--board", "emulator",
                 "--broker", f"mqtt://{kid}@127.0.0.1:{rig.broker.port}", "--broker-password", f"@{secret}")
    assert r.returncode == 0 and "s3cret" not in r.stdout + r.stderr, r.stderr
    broker = json.loads((flash / "config.json").read_text())["broker"]
    assert broker["user"] == kid and broker["password"] == "s3cret-from-a-file"
    boot = rig.last_boot(kid)
    assert kioskctl(pty, "reboot").returncode == 0
    assert rig.wait_birth(kid, after_boot=boot)["boot"] == boot + 1   # signed with the provisioned key
