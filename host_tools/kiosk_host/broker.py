"""A local MQTT broker for the demo and for development: Debian's mosquitto
when it is installed (the reference broker), else the embedded pure-Python
amqtt. Loopback only, anonymous, no persistence: never a production broker
(see deploy/mosquitto/ and docs/security.md for that)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the broker exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


def mosquitto_exe() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


MAX_PACKET = 65536   # bytes, as deploy/mosquitto/mosquitto.conf


class LocalBroker:
    """start() runs the broker in its own process; url is mqtt://127.0.0.1:PORT.
    `kind` is "mosquitto" or "amqtt" (forced with prefer=, else mosquitto
    when installed)."""

    def __init__(self, workdir: str | os.PathLike[str], port: int | None = None, prefer: str | None = None):
        self.workdir = Path(workdir)
        self.port = port or free_port()
        exe = mosquitto_exe()
        if prefer == "mosquitto" and not exe:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.kind = prefer or ("mosquitto" if exe else "amqtt")
        self.exe = exe
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> "LocalBroker":
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / f"{self.kind}.log", "ab")
        if self.kind == "mosquitto":
            conf = self.workdir / "mosquitto.conf"
            # Kiosk payloads are a few kB (docs/protocol.md): a client that
            # sends a far larger packet is cut off before it reaches anyone.
            lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false",
                     "max_queued_messages 10000", f"max_packet_size {MAX_PACKET}"]
            if os.geteuid() == 0:
                lines.append("user root")   # else it drops to `mosquitto`, who may not read this folder
            conf.write_text("\n".join(lines) + "\n")
            cmd = [self.exe, "-c", str(conf)]
        else:
            conf = self.workdir / "amqtt.yaml"
            conf.write_text("listeners:\n  default:\n    type: tcp\n"
                            f"    bind: 127.0.0.1:{self.port}\n"
                            "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n")
            cmd = [str(Path(sys.executable).parent / "amqtt"), "-c", str(conf)]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
        try:
            wait_port(self.port, 20, self.proc)
        except RuntimeError as e:
            self.stop()
            raise RuntimeError(f"{self.kind} did not start: {e}; see {self.workdir / (self.kind + '.log')}") from None
        return self

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def kill(self) -> None:
        """As a crash: no goodbye to the clients."""
        p, self.proc = self.proc, None
        if p and p.poll() is None:
            p.kill()
            p.wait(5)
