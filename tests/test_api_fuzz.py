"""The bridge's HTTP API fuzzed from its own OpenAPI schema with schemathesis,
against `kiosk-bridge demo` (the real bridge, broker and an emulated kiosk,
so the demo's /api/sim routes are fuzzed as well), each request with the
API token of a role its route allows (tests/fuzz_auth.py).

Schemathesis sends schema-valid and schema-breaking requests to every route
(the kiosk id fixed to the real kiosk so requests get past the 404) and checks
each answer: no 5xx, every status and body as documented, malformed input
refused, a 405 names the methods the path takes. Then the test checks what
got through to the kiosk: every command on kiosk/<id>/cmd is signed with
the kiosk's key and recorded in the bridge's store, the kiosk refused none
of them as unreadable, and the kiosk is still online with its doors locked
once the run is over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from bridge_support import USERS, http, journal_records, provision, wait_until
from kiosk_host.bridge.run import DEMO_USERS
from kiosk_host import protocol
from link_support import free_port

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
KIOSK = "demo-001"
SEED = 1
EXAMPLES = 25
# What the kiosk says of a command it could not even read: the bridge must
# never send one.
UNREADABLE = ("bad_json", "bad_version", "bad_signature", "bad_schema", "oversized", "internal")


def _wait_line(log: Path, text: str, proc: subprocess.Popen, timeout: float = 90) -> str:
    end = time.monotonic() + timeout
    while True:
        out = log.read_text() if log.exists() else ""
        for line in out.splitlines():
            if text in line:
                return line
        assert proc.poll() is None, f"demo exited early:\n{out}"
        assert time.monotonic() < end, f"{text!r} not printed:\n{out}"
        time.sleep(0.2)


def test_the_api_fuzzed_from_its_schema_answers_as_documented_and_sends_only_good_commands(tmp_path):
    port = free_port()
    log = tmp_path / "demo.log"
    state = tmp_path / "state"
    with open(log, "w") as out:
        demo = subprocess.Popen([str(VENV_BIN / "kiosk-bridge"), "demo", "--count", "1", "--http",
                                 f"127.0.0.1:{port}", "--state-dir", str(state), "--broker", "mosquitto"],
                                stdout=out, stderr=subprocess.STDOUT, text=True)
    seen: list[tuple[str, dict]] = []
    watch = None
    try:
        broker = _wait_line(log, "demo: broker", demo).rsplit(":", 1)[1].strip()
        _wait_line(log, "dashboard http://", demo)
        base = f"http://127.0.0.1:{port}"
        # The demo's store holds its users; add one per role with a token to fuzz as.
        tokens = provision(f"sqlite:///{state / 'bridge.sqlite3'}")
        global TOKEN
        TOKEN = tokens["technician"]
        wait_until(lambda: _get(f"{base}/api/kiosks/{KIOSK}")["online"], 60, "the kiosk online")

        lock = threading.Lock()
        watch = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fuzz-cmd-watch")

        def on_message(cl, u, m):
            with lock:
                seen.append((m.topic, json.loads(m.payload)))
        watch.on_message = on_message
        watch.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe("kiosk/+/cmd", 1)
        watch.connect("127.0.0.1", int(broker))
        watch.loop_start()
        wait_until(watch.is_connected, 10, "the watcher connected")
        time.sleep(0.3)

        env = dict(os.environ, FUZZ_KIOSK_ID=KIOSK, NO_COLOR="1", FUZZ_TOKENS=json.dumps(tokens),
                   SCHEMATHESIS_HOOKS="fuzz_auth",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")])))
        run = subprocess.run([str(VENV_BIN / "schemathesis"), "--config-file", str(ROOT / "tests" / "schemathesis.toml"),
                              "run", f"{base}/openapi.json", "--seed", str(SEED), "-n", str(EXAMPLES),
                              "--max-failures", "20"],
                             capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path)
        report = run.stdout + run.stderr
        assert run.returncode == 0, f"schemathesis found failures:\n{report[-12000:]}"
        generated = [line for line in report.splitlines() if " generated, " in line]
        assert generated and "passed" in generated[-1], report[-3000:]
        assert int(generated[-1].split()[0]) > 200, generated   # it really ran
        paths = _get(f"{base}/openapi.json")["paths"]
        ops = sum(len(v) for v in paths.values())
        assert "/api/kiosks/{kiosk_id}/pickups" in paths and "/api/sim/{kiosk_id}/door" in paths
        assert f"Tested: {ops}" in report, (ops, report[-3000:])   # every route was exercised

        # Give the kiosk time to answer the last commands, then look at what it got.
        time.sleep(3)
        key = bytes.fromhex((state / "keys" / f"{KIOSK}.key").read_text().strip())
        with lock:
            cmds = list(seen)
        assert cmds, "no command reached the kiosk: the fuzzer never got past validation"
        for topic, cmd in cmds:
            assert topic == f"kiosk/{KIOSK}/cmd", topic
            assert protocol.verify(key, cmd), cmd
            if cmd["op"] != "resend":          # the bridge's own gap requests are not recorded
                status, c = http("GET", f"{base}/api/commands/{cmd['id']}", token=TOKEN)
                assert status == 200, ("a command went out without a record", cmd)
                # ... and names the user who asked (the demo's own users prepare its
                # order; an answer to a scan acts for the pharmacist who released
                # the order, or for nobody), on the wire and in the store.
                who = set(USERS.values()) | {name for name, _ in DEMO_USERS}
                if "scan" in cmd["args"]:
                    who.add(None)
                assert cmd.get("by") in who and c["actor"] == cmd.get("by"), (cmd, c)
        flash = state / "kiosks" / KIOSK / "flash"
        refused = [r for r in journal_records(flash).values() if r.get("k") == "refused"]
        assert not [r for r in refused if r.get("why") in UNREADABLE], refused
        assert demo.poll() is None, "the demo died under the fuzzer"
        # Power back on and the network up, in case the fuzzer left them off;
        # whatever it unlocked in a service session relocks by itself.
        http("POST", f"{base}/api/sim/{KIOSK}/power", {"on": True}, token=TOKEN)
        http("POST", f"{base}/api/sim/{KIOSK}/network", {"up": True, "route": "ok", "rtt_ms": 0}, token=TOKEN)
        wait_until(lambda: _get(f"{base}/api/kiosks/{KIOSK}")["online"], 60, "the kiosk back online")
        wait_until(lambda: not any(lk["energized"] for lk in _get(f"{base}/api/sim/{KIOSK}")["world"]["locks"].values()),
                   60, "every lock de-energised")
        assert "Traceback" not in log.read_text(), log.read_text()[-4000:]
    finally:
        if watch is not None:
            watch.loop_stop()
            watch.disconnect()
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(30)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()


TOKEN = None   # a technician's, for the test's own look at the kiosk


def _get(url: str):
    status, body = http("GET", url, token=TOKEN)
    assert status == 200, (url, status, body)
    return body
