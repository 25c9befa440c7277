"""`kiosk-bridge demo`, the README's main command, as a user runs it: it
prints the dashboard URL, serves the API and the emulator's control routes
on one port, and Ctrl-C stops every process it started."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bridge_support import wait_until
from link_support import free_port

VENV_BIN = Path(sys.executable).parent
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class User:
    """A demo user: an API token, or a dashboard login (session cookie and
    its CSRF token)."""

    def __init__(self, token: str | None = None):
        self.headers = {"authorization": f"Bearer {token}"} if token else {}

    def login(self, base: str, name: str, password: str) -> "User":
        req = urllib.request.Request(base + "/api/session", json.dumps({"name": name, "password": password}).encode(),
                                     {"content-type": "application/json"}, method="POST")
        with _HTTP.open(req, timeout=10) as r:
            session = json.loads(r.read())
            cookie = r.headers["set-cookie"].split(";", 1)[0]
        assert session["name"] == name and "simulate" in session["may"], session
        self.headers = {"cookie": cookie, "x-csrf-token": session["csrf_token"]}
        return self

    def get(self, url: str):
        with _HTTP.open(urllib.request.Request(url, headers=self.headers), timeout=10) as r:
            return json.loads(r.read())

    def post(self, url: str, body: dict):
        req = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json", **self.headers},
                                     method="POST")
        with _HTTP.open(req, timeout=10) as r:
            return r.status, json.loads(r.read())


def credentials(lines: list[str]) -> dict[str, tuple[str, str]]:
    """{user: (role, password or token)} from the demo's own words."""
    out = {}
    for line in lines:
        w = line.split()
        if line.startswith("demo: user ") and len(w) >= 5:
            out[w[2]] = (w[3], w[-1])
    return out


def _children(pid: int) -> set[int]:
    """Every live descendant of pid."""
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


@pytest.mark.parametrize("broker", ["mosquitto", "amqtt"])
def test_demo_runs_a_fleet_on_one_port_and_ctrl_c_stops_everything(tmp_path, broker):
    port = free_port()
    proc = subprocess.Popen([str(VENV_BIN / "kiosk-bridge"), "demo", "--count", "2", "--http", f"127.0.0.1:{port}",
                             "--state-dir", str(tmp_path), "--broker", broker],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    try:
        end = time.monotonic() + 90
        while not any("dashboard http://" in line for line in out):
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(out)
            out.append(line)
            assert time.monotonic() < end, "".join(out)
        assert f"demo: broker {broker}" in "".join(out)
        # The banner: each kiosk's stable console link, and what to do next.
        for kid in ("demo-001", "demo-002"):
            assert f"demo: kiosk {kid}  console {tmp_path / 'kiosks' / kid / 'tty'}  (now /dev/pts/" in "".join(out), out
        while not any("Ctrl-C stops everything" in line for line in out):
            out.append(proc.stdout.readline())
            assert time.monotonic() < end, "".join(out)
        banner = "".join(out)
        assert "next steps" in banner and "Service panel" in banner and "pickup" in banner
        assert f"kioskctl --port {tmp_path / 'kiosks' / 'demo-001' / 'tty'} status" in banner
        base = f"http://127.0.0.1:{port}"
        # A site with the kiosks, and one user per role with a password
        # (the pharmacy system: a token) made for this run.
        assert "demo: site demo-clinic: demo-001, demo-002" in "".join(out)
        creds = credentials(out)
        assert {role for role, _ in creds.values()} == {"admin", "pharmacist", "technician", "viewer",
                                                        "pharmacy_system"}, out
        assert all(len(secret) >= 16 for _, secret in creds.values())
        system = User(creds["demo-system"][1])
        # Nothing without credentials.
        try:
            _HTTP.open(base + "/api/kiosks", timeout=10)
            raise AssertionError("the API answered without credentials")
        except urllib.error.HTTPError as e:
            assert e.code == 401
        kiosks = wait_until(lambda: (lambda ks: ks if len(ks) == 2 and all(k["online"] for k in ks) else None)(
            system.get(base + "/api/kiosks")), 60, "both kiosks online")
        assert sorted(k["id"] for k in kiosks) == ["demo-001", "demo-002"]   # the most urgent first
        tech = User().login(base, "demo-technician", creds["demo-technician"][1])
        sim = tech.get(base + "/api/sim")
        assert {k["id"] for k in sim} == {"demo-001", "demo-002"} and all(k["pty"].startswith("/dev/pts/") for k in sim)
        # Door inputs are known one debounce period after boot; then force one.
        wait_until(lambda: tech.get(base + "/api/kiosks/demo-001")["doors"].get("service", {}).get("door") == "closed",
                   30, "the service door's state settled")
        status, r = tech.post(base + "/api/sim/demo-001/door", {"door": "service", "action": "force"})
        assert status == 200
        wait_until(lambda: any("forced" in a for a in system.get(base + "/api/kiosks/demo-001")["alarms"]), 30,
                   "the forced door on the dashboard's data")
        with _HTTP.open(base + "/", timeout=10) as r:
            assert r.status == 200 and b"<html" in r.read().lower()
        assert "/api/kiosks/{kiosk_id}/pickups" in system.get(base + "/openapi.json")["paths"]
        started = _children(proc.pid)
        assert len(started) >= 3          # the broker and a MicroPython process per kiosk
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, "".join(out) + rest
    for pid in started:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2], \
            f"process {pid} outlived the demo"
    # The kiosks were stopped safely (Ctrl-C at their consoles), not killed.
    for kid in ("demo-001", "demo-002"):
        log = (tmp_path / "kiosks" / kid / "console.log").read_text(errors="replace")
        assert "locks de-energised" in log
    assert not os.path.exists(f"/proc/{proc.pid}/status") or proc.returncode == 0


def test_a_second_demo_on_a_taken_port_starts_nothing_and_says_how_to_pick_another(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        t0 = time.monotonic()
        r = subprocess.run([str(VENV_BIN / "kiosk-bridge"), "demo", "--count", "2", "--http", f"127.0.0.1:{port}",
                            "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
        took = time.monotonic() - t0
    finally:
        taken.close()
    assert r.returncode == 2 and "Traceback" not in r.stderr and "Errno" not in r.stderr, r
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr, r.stderr
    assert 'make demo DEMO_ARGS="--http 127.0.0.1:' in r.stderr and "kiosk-bridge demo --http 127.0.0.1:" in r.stderr
    # Nothing was started: no broker, no kiosk, no store.
    assert "demo: broker" not in r.stdout and "demo: kiosk" not in r.stdout, r.stdout
    assert not (tmp_path / "kiosks").exists() and not (tmp_path / "broker").exists()
    assert not (tmp_path / "bridge.sqlite3").exists() and took < 20


def test_make_demo_installs_the_package_without_the_test_tools(tmp_path):
    """`make demo` on a fresh checkout: the package and its runtime
    dependencies, not pytest, Playwright and schemathesis (make -n -B prints
    every command it would run, from scratch, without running them)."""
    root = Path(__file__).parent.parent
    venv = tmp_path / "venv"
    demo = subprocess.run(["make", "-n", "-B", "demo", f"VENV={venv}"], cwd=root, capture_output=True, text=True,
                          timeout=60)
    assert demo.returncode == 0, demo.stderr
    assert f"{venv}/bin/python -m pip install -e ." in demo.stdout and "[test]" not in demo.stdout, demo.stdout
    assert f"{venv}/bin/kiosk-bridge demo" in demo.stdout
    test = subprocess.run(["make", "-n", "-B", "test", f"VENV={venv}"], cwd=root, capture_output=True, text=True,
                          timeout=60)
    assert "pip install -e '.[test]'" in test.stdout, test.stdout
def test_demo_refuses_to_show_passwords_on_a_network_address_without_allowed_hosts(tmp_path):
    r = subprocess.run([str(VENV_BIN / "kiosk-bridge"), "demo", "--http", f"0.0.0.0:{free_port()}",
                        "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--allowed-host" in r.stderr, r
    assert "password" not in r.stdout and not (tmp_path / "bridge.sqlite3").exists()


def test_the_demo_prints_an_order_code_that_the_simulate_panel_scans_into_a_pickup(tmp_path):
    port = free_port()
    proc = subprocess.Popen([str(VENV_BIN / "kiosk-bridge"), "demo", "--count", "1", "--http", f"127.0.0.1:{port}",
                             "--state-dir", str(tmp_path), "--broker", "mosquitto"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    try:
        end = time.monotonic() + 150
        while not any("pickup code is" in line or "could not be prepared" in line for line in out):
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(out)
            out.append(line)
            assert time.monotonic() < end, "".join(out)
        said = next(line for line in out if "pickup code is" in line)   # else it said why not
        code = said.rsplit(" ", 1)[1].strip()
        base = f"http://127.0.0.1:{port}"
        tech = User().login(base, "demo-technician", credentials(out)["demo-technician"][1])
        _get, _post = tech.get, tech.post
        order = _get(base + "/api/orders/demo-rx-1")
        assert order["state"] == "stocked" and order["released"] and order["stocked"]["label_check"] == "passed"
        # What the README says to do: scan it in the Simulate panel, open and shut the door.
        assert _post(base + "/api/sim/demo-001/scan", {"text": code})[0] == 200
        wait_until(lambda: _get(base + "/api/sim/demo-001")["world"]["locks"]["pickup"]["energized"], 30,
                   "the pickup door unlocked")
        _post(base + "/api/sim/demo-001/door", {"door": "pickup", "action": "open"})
        time.sleep(1.6)
        _post(base + "/api/sim/demo-001/door", {"door": "pickup", "action": "close"})
        done = wait_until(lambda: (lambda o: o if o["state"] == "dispensed" else None)(
            _get(base + "/api/orders/demo-rx-1")), 30, "the demo order dispensed")
        assert done["dispensed"]["when_handed_over"] and done["dispensed"]["released_by"] == "demo-pharmacist"
        assert [h["actor"] for h in done["history"]][:4] == ["demo-system", "demo-technician", "demo-technician",
                                                            "demo-pharmacist"], done["history"]
        assert any(f"/screen/demo-001#pair=" in line for line in out), "the screen's pairing link is printed"
        # The second order waits for the visitor to stock it from the Service panel.
        second = _get(base + "/api/orders?kiosk=demo-001&state=received")
        assert [o["order_id"] for o in second] == ["demo-rx-2"] and second[0]["counselling_required"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
