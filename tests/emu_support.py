"""Helpers for the emulator and kioskctl tests: a fleet of emulated kiosks on
a throwaway mosquitto, a signing host client per kiosk, and raw access to a
kiosk's console pty."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
import tty
from pathlib import Path

from kiosk_host.emulator.fleet import Fleet

sys.path.insert(0, str(Path(__file__).parent))
from link_support import Host, Mosquitto  # noqa: E402

VENV_BIN = Path(sys.executable).parent
POLICIES = {"door_open_timeout_s": 5, "telemetry_period_s": 600}


class Rig:
    """Broker + fleet + one Host (the bridge's role: verifies, acks, signs) per kiosk."""

    def __init__(self, root: Path, count: int = 2):
        self.broker = Mosquitto(root / "mq").start()
        self.fleet = Fleet(f"mqtt://127.0.0.1:{self.broker.port}", count, root / "state", root / "keys",
                           policies=POLICIES, keepalive_s=2).start()
        self.hosts = {kid: Host(self.broker.port, kid, key=self.key(kid)) for kid in self.fleet.ids}

    def key(self, kid: str) -> bytes:
        return bytes.fromhex((self.fleet.keys_dir / f"{kid}.key").read_text().strip())

    def births(self, kid: str) -> list[dict]:
        h = self.hosts[kid]
        with h.lock:
            return [d for d, _ in h.states if d.get("online")]

    def wait_birth(self, kid: str, after_boot: int = 0, timeout: float = 20) -> dict:
        h = self.hosts[kid]
        return h.wait(lambda: next((d for d, _ in h.states if d.get("online") and d.get("boot", 0) > after_boot), None),
                      timeout, f"{kid} birth after boot {after_boot}")

    def last_boot(self, kid: str) -> int:
        b = self.births(kid)
        return max((d.get("boot", 0) for d in b), default=0)

    def wait_event(self, kid: str, pred, timeout: float = 15) -> dict:
        h = self.hosts[kid]
        return h.wait(lambda: next((e for e in h.evt_log if pred(e)), None), timeout, f"{kid} event")

    def settled(self, kid: str, door: str = "pickup", boot: int | None = None) -> dict:
        """Wait until the running boot has journaled the door shut: inputs
        settle after each boot before a door event means anything."""
        b = self.last_boot(kid) if boot is None else boot
        return self.wait_event(kid, lambda e: e.get("b") == b and e.get("door") == door and e.get("ev") == "door_closed")

    def close(self) -> None:
        self.fleet.stop()
        for h in self.hosts.values():
            h.close()
        self.broker.stop()


def wait_for(pred, timeout: float = 10, what: str = "condition", every: float = 0.05):
    end = time.monotonic() + timeout
    while True:
        r = pred()
        if r:
            return r
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class Pty:
    """The user's end of a kiosk's console, opened as a terminal program would."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)
        self.seen = b""

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def read_until(self, marker: bytes, timeout: float = 10) -> bytes:
        end = time.monotonic() + timeout
        while marker not in self.seen:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{marker!r} not seen in {timeout}s; got {self.seen[-300:]!r}")
            r, _, _ = select.select([self.fd], [], [], min(left, 0.1))
            if r:
                self.seen += os.read(self.fd, 4096)
        i = self.seen.index(marker) + len(marker)
        out, self.seen = self.seen[:i], self.seen[i:]
        return out

    def drain(self, quiet: float = 0.3) -> bytes:
        out = b""
        while True:
            r, _, _ = select.select([self.fd], [], [], quiet)
            if not r:
                return out
            out += os.read(self.fd, 4096)

    def close(self) -> None:
        os.close(self.fd)


def run_tool(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def mpremote(pty: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return run_tool([str(VENV_BIN / "mpremote"), "connect", pty, *args], timeout)


def kioskctl(pty: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return run_tool([sys.executable, "-m", "kiosk_host.kioskctl", "--port", pty, *args], timeout)
