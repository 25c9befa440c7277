"""Host side of the link tests and of benchmarks/bench_link.py: a throwaway
mosquitto broker, the MicroPython link harness (tests/mp/link_harness.py) as
a kiosk process, and a host MQTT client (paho-mqtt) that signs commands and
acks and checks every signature the kiosk sends, as the bridge will."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as mqtt

from kiosk_host import mpy, paths, protocol

KEY_HEX = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
KEY = bytes.fromhex(KEY_HEX)
HARNESS = paths.TESTS_MP_DIR / "link_harness.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    """Something listens on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_port(port: int, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if port_open(port):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def mosquitto_exe() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
    if not found:
        raise RuntimeError(
            "the MQTT link tests need the mosquitto broker and it is not installed: "
            "apt-get install mosquitto (Debian/Ubuntu) and run the tests again"
        )
    return found


class Mosquitto:
    """mosquitto on 127.0.0.1:port with a throwaway config (anonymous, no
    persistence). stop() and start() again keep the port, as a broker restart."""

    def __init__(self, workdir: Path, port: int | None = None, tls: dict[str, str] | None = None,
                 extra: list[str] | None = None, users: dict[str, str] | None = None):
        self.exe = mosquitto_exe()
        self.port = port or free_port()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf = self.workdir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", f"allow_anonymous {'false' if users else 'true'}",
                 "persistence false"]
        if users:
            pw = self.workdir / "passwords"
            for i, (user, password) in enumerate(users.items()):
                subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-b"]
                               + ([] if i else ["-c"]) + [str(pw), user, password], check=True,
                               capture_output=True)
            lines.append(f"password_file {pw}")
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to `mosquitto`, who cannot read our temp files
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
        lines += extra or []
        self.conf.write_text("\n".join(lines) + "\n")
        self.tls = tls
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Mosquitto":
        log = open(self.workdir / "mosquitto.log", "ab")
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=log, stderr=log)
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None


class Kiosk:
    """The link harness under MicroPython, with config.json and harness.json
    written into its flash directory. Reads its JSON lines in a thread."""

    def __init__(self, flash: Path, port: int, kiosk_id: str = "k1", keepalive: int = 2,
                 link: dict[str, Any] | None = None, journal: dict[str, Any] | None = None,
                 broker: dict[str, Any] | None = None, policies: dict[str, Any] | None = None):
        self.flash = Path(flash)
        self.flash.mkdir(parents=True, exist_ok=True)
        self.id = kiosk_id
        cfg = {"kiosk_id": kiosk_id, "board": "emulator", "key": KEY_HEX,
               "broker": {"host": "127.0.0.1", "port": port, "keepalive_s": keepalive, **(broker or {})},
               "policies": {"telemetry_period_s": 3600, **(policies or {})}}
        (self.flash / "config.json").write_text(json.dumps(cfg))
        opts = {"link": {"backoff_ms": [200, 2000], "ack_timeout_ms": 2000, **(link or {})},
                "journal": journal or {}}
        (self.flash / "harness.json").write_text(json.dumps(opts))
        self.proc: subprocess.Popen | None = None
        self.lines: "queue.Queue[dict]" = queue.Queue()
        self.log: list[str] = []
        self.t_start = 0.0

    def start(self) -> "Kiosk":
        env = mpy.mp_env()
        heap = mpy.heap_size()
        env[mpy.HEAP_ENV] = str(heap)
        self.lines = queue.Queue()
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen(
            mpy.mp_command([HARNESS], heap), cwd=self.flash, env=env, text=True, bufsize=1,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._reader, args=(self.proc,), daemon=True).start()
        self.wait_line(lambda d: d.get("started"), 20)
        return self

    def _reader(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.log.append(line.rstrip())
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                self.lines.put(obj)

    def output(self) -> str:
        return "\n".join(self.log[-40:])

    def send(self, obj: dict) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def wait_line(self, pred: Callable[[dict], Any], timeout: float = 10.0) -> dict:
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"kiosk harness: no expected line in {timeout}s; output:\n{self.output()}")
            try:
                d = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.proc is not None and self.proc.poll() is not None:
                    raise AssertionError(f"kiosk harness exited ({self.proc.returncode}):\n{self.output()}")
                continue
            if pred(d):
                return d

    def stats(self) -> dict:
        self.send({"do": "stats"})
        return self.wait_line(lambda d: "stats" in d)

    def events(self, n: int, every_ms: int = 0) -> None:
        self.send({"do": "events", "n": n, "every_ms": every_ms})

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """A power cut: no goodbye, nothing flushed."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def quit(self) -> None:
        if self.alive():
            try:
                self.send({"do": "quit"})
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()


class Host:
    """The host's side of docs/protocol.md: subscribes to kiosk/<id>/#,
    verifies every signed payload, keeps events by seq, and (auto_ack) acks
    the contiguous prefix it holds, at most every ack_ms."""

    def __init__(self, port: int, kiosk_id: str = "k1", auto_ack: bool = True, ack_ms: int = 20,
                 key: bytes = KEY, tls_ca: str | None = None):
        self.id = kiosk_id
        self.key = key
        self.base = f"kiosk/{kiosk_id}/"
        self.lock = threading.Condition()
        self.events: dict[int, dict] = {}
        self.evt_log: list[dict] = []
        self.replies: list[dict] = []
        self.states: list[tuple[dict, bool]] = []
        self.tele: list[dict] = []
        self.bad_sig: list[tuple[str, bytes]] = []
        self.contig: int | None = None
        self.acked_sent = 0
        self.jid: str | None = None   # the kiosk's journal id, from its birth (acks name it)
        self.auto_ack = auto_ack
        self.ack_ms = ack_ms
        self.t_offset = 0
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"host-{kiosk_id}-{os.getpid()}",
                             protocol=mqtt.MQTTv311)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.reconnect_delay_set(min_delay=1, max_delay=1)
        self.c.connect("127.0.0.1", port, keepalive=10)
        self.c.loop_start()
        self._stop = threading.Event()
        self._acker = threading.Thread(target=self._ack_loop, daemon=True)
        self._acker.start()
        self.wait(lambda: self.connected, 5, "host client connected")

    connected = False

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connected = True
        client.subscribe(self.base + "#", qos=1)

    def _on_message(self, client, userdata, msg):
        topic = msg.topic[len(self.base):]
        if topic in ("cmd", "ack"):  # our own
            return
        try:
            d = json.loads(msg.payload)
        except (ValueError, RecursionError):
            d = None
        if not isinstance(d, dict) or not protocol.verify(self.key, d):
            with self.lock:
                self.bad_sig.append((topic, msg.payload))
                self.lock.notify_all()
            return
        with self.lock:
            if topic == "evt":
                self.evt_log.append(d)
                self.events.setdefault(d["s"], d)
                if self.contig is not None:
                    while self.contig + 1 in self.events:
                        self.contig += 1
            elif topic == "reply":
                self.replies.append(d)
            elif topic == "state":
                self.states.append((d, bool(msg.retain)))
                if d.get("online"):
                    self.jid = (d.get("journal") or {}).get("id")
                if d.get("online") and self.contig is None:
                    self.contig = d["journal"]["acked"]
                    while self.contig + 1 in self.events:
                        self.contig += 1
            elif topic == "tele":
                self.tele.append(d)
            self.lock.notify_all()

    def _ack_loop(self) -> None:
        while not self._stop.wait(self.ack_ms / 1000):
            if not self.auto_ack:
                continue
            with self.lock:
                upto = self.contig
            if upto is not None and upto > self.acked_sent:
                self.ack(upto)

    def ack(self, upto: int, t: int | None = None, key: bytes | None = None, j: str | None = None) -> None:
        msg = protocol.sign(key or self.key, {"v": 1, "upto": upto, "j": j or self.jid,
                                               "t": int(time.time()) + self.t_offset if t is None else t})
        self.acked_sent = max(self.acked_sent, upto)
        self.c.publish(self.base + "ack", json.dumps(msg), qos=0)

    def command(self, op: str, args: dict | None = None, cid: str | None = None, iat: int | None = None,
                exp: int | None = None, key: bytes | None = None, **extra: Any) -> str:
        now = int(time.time())
        cid = cid or f"c-{time.monotonic_ns()}"
        d = {"v": 1, "id": cid, "op": op, "iat": now if iat is None else iat,
             "exp": now + 60 if exp is None else exp, "args": args or {}, **extra}
        protocol.sign(key or self.key, d)
        self.raw(json.dumps(d).encode())
        return cid

    def raw(self, payload: bytes, qos: int = 1) -> None:
        self.c.publish(self.base + "cmd", payload, qos=qos)

    def wait(self, pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
        end = time.monotonic() + timeout
        with self.lock:
            while True:
                r = pred()
                if r:
                    return r
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"host: timed out after {timeout}s waiting for {what}")
                self.lock.wait(min(left, 0.2))

    def replies_for(self, cid: str) -> list[dict]:
        with self.lock:
            return [r for r in self.replies if r.get("id") == cid]

    def reply_state(self, cid: str, state: str, timeout: float = 5.0) -> dict:
        return self.wait(lambda: next((r for r in self.replies if r.get("id") == cid and r["state"] == state), None),
                         timeout, f"reply {state} for {cid}")

    def close(self) -> None:
        self._stop.set()
        self.c.loop_stop()
        self.c.disconnect()


class Amqtt:
    """The embedded Python broker amqtt, in its own process, on 127.0.0.1:port."""

    def __init__(self, workdir: Path, port: int | None = None):
        self.port = port or free_port()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf = self.workdir / "amqtt.yaml"
        self.conf.write_text(
            "listeners:\n  default:\n    type: tcp\n"
            f"    bind: 127.0.0.1:{self.port}\n"
            "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Amqtt":
        exe = Path(sys.executable).parent / "amqtt"
        log = open(self.workdir / "amqtt.log", "ab")
        self.proc = subprocess.Popen([str(exe), "-c", str(self.conf)], stdout=log, stderr=log)
        wait_port(self.port, 20)
        return self

    def log(self) -> str:
        return (self.workdir / "amqtt.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None
