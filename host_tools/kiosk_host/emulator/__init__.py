"""Emulated kiosks: the real firmware, each in its own MicroPython process,
against the simulated world, connected to a real broker.

    kiosk-bridge emulate --broker URL --count N --state-dir DIR --keys DIR [--control HOST:PORT]

Each kiosk has a folder <state-dir>/<id>/ holding
- flash/: the board's filesystem. The compiled firmware tree (build/firmware)
  is copied in on first start and whenever the build changed a file the
  kiosk still has as built; config.json is written by the emulator; all the
  firmware writes (journal, stock, climate, op record) stays there across
  restarts, as a board's flash does. `kioskctl deploy` can change it like a
  board's;
- tty: a symlink to the kiosk's console pty (mpremote, kioskctl);
- console.log: everything the console printed;
- reset-cause: the simulated reset cause for the next boot.
Keys are <keys>/<id>.key (64 hex digits and a newline, mode 0600), written
when absent; `kiosk-bridge serve` reads the same files.

A Fleet supervises the processes (see docs/emulator.md): each kiosk's
control channel (sim/simctl.py) carries World commands (doors, sensors,
faults, network); its console (replpty.Console) is the USB REPL. A reset of
any kind (watchdog, machine.reset(), soft reset from the REPL) ends the
process and the Fleet starts it again on the same flash and pty. Power off
is SIGKILL (no cleanup, like pulling the plug). What outlasts a reset in the
physical world (an open door, a set temperature, a fault, the network) is
replayed into the new process before the firmware starts.

The package: supervisor.Kiosk runs one kiosk (folders, process, console,
control channel, power and reset); fleet.Fleet runs many (the control-port
listener, the broker watcher, the verbs tests and routes call); routes holds
sim_router, the /api/sim routes; cli is `kiosk-bridge emulate`. What they
share is here.
"""


import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

BOOT = "emuboot"   # what each kiosk process runs: sim/emuboot.py, built to build/sim


class EmulatorError(Exception):
    """A request the emulator cannot carry out; the message says why."""


class UnknownKiosk(EmulatorError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown kiosk"


class PoweredOff(EmulatorError):
    pass


def broker_config(url: str, keepalive_s: int = 30) -> dict[str, Any]:
    """config.json's broker section from mqtt://[user:pass@]host[:port] or
    mqtts://...[?ca=PATH]."""
    u = urlparse(url)
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise EmulatorError(f"broker URL must look like mqtt://host:port, got {url!r}")
    tls = u.scheme == "mqtts"
    cfg: dict[str, Any] = {"host": u.hostname, "port": u.port or (8883 if tls else 1883),
                           "keepalive_s": keepalive_s}
    if tls:
        cfg["tls"] = True
        ca = parse_qs(u.query).get("ca")
        if ca:
            cfg["ca"] = ca[0]
    if u.username:
        cfg["user"] = u.username
        cfg["password"] = u.password or ""
    return cfg


def ensure_key(keys_dir: Path, kiosk_id: str) -> str:
    """The kiosk's HMAC key (hex), created with mode 0600 when absent."""
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = keys_dir / f"{kiosk_id}.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    key = path.read_text().strip()
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key.lower()):
        raise EmulatorError(f"{path}: expected 64 hex digits")
    return key

