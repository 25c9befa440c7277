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
"""


import argparse
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from . import build, mpy, paths
from .replpty import Console, Hub

BOOT = "emuboot"
DOORS = ("pickup", "service")
DOOR_ACTIONS = ("open", "close", "force")
# Names the issue and the field team use, as the simulated world knows them.
FAULT_ALIASES = {
    "broken_home_switch": "home_broken", "home_switch": "home_broken",
    "jammed_lock": "lock_jam", "jam": "lock_jam",
    "unplugged": "sensor_unplugged", "unplugged_sensor": "sensor_unplugged",
    "noisy": "sensor_noisy", "noisy_sensor": "sensor_noisy",
}
SOFT = 20        # emuboot's exit codes: soft reset, run main.py again
SOFT_RAW = 21    # soft reset from the raw REPL: come back in the raw REPL
HEAP_EXTRA = 24 * 1024   # the REPL (emuboot) and its globals, beside the firmware
BOOT_TIMEOUT_S = 20.0


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
    keys_dir.mkdir(parents=True, exist_ok=True)
    path = keys_dir / f"{kiosk_id}.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    key = path.read_text().strip()
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key.lower()):
        raise EmulatorError(f"{path}: expected 64 hex digits")
    return key


class Kiosk:
    """One emulated kiosk: folders, console, process and control channel."""

    def __init__(self, fleet: "Fleet", kiosk_id: str):
        self.fleet = fleet
        self.id = kiosk_id
        self.dir = fleet.state_dir / kiosk_id
        self.flash = self.dir / "flash"
        self.console: Console | None = None
        self.proc: subprocess.Popen | None = None
        self.want_power = False
        self.boots = 0                       # processes started (every reset counts)
        self.last_exit: int | None = None
        self.channel: socket.socket | None = None
        self.reader = None
        self.lock = threading.RLock()        # one control command at a time
        self.state_lock = threading.Lock()   # process start and stop
        self.connected = threading.Event()
        self.sticky: dict[str, Any] = {"doors": {}, "sensors": {}, "faults": {}, "network": True}
        self._restarts: list[float] = []

    # -- flash -----------------------------------------------------------
    def provision(self, key: str) -> None:
        """Put the current build on the flash where the flash still holds
        what an older build put there (files changed on the board by deploy
        or by hand are kept), and write config.json."""
        src = paths.FIRMWARE_BUILD_DIR
        self.flash.mkdir(parents=True, exist_ok=True)
        want = json.loads((src / build.MANIFEST).read_text())["files"]
        old_manifest = self.flash / build.MANIFEST
        old = json.loads(old_manifest.read_text())["files"] if old_manifest.exists() else {}
        for rel, meta in want.items():
            dest = self.flash / rel
            if dest.exists():
                have = hashlib.sha256(dest.read_bytes()).hexdigest()
                if have == meta["sha256"] or have != old.get(rel, {}).get("sha256"):
                    continue  # up to date, or changed on the board: leave it
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, dest)
        shutil.copyfile(src / build.MANIFEST, old_manifest)
        cfg = {"kiosk_id": self.id, "board": self.fleet.board, "key": key,
               "broker": broker_config(self.fleet.broker_url, self.fleet.keepalive_s),
               "policies": self.fleet.policies}
        (self.flash / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")

    # -- process ----------------------------------------------------------
    def _env(self, raw: bool) -> dict[str, str]:
        env = mpy.mp_env(paths.FIRMWARE_BUILD_DIR)
        env["MICROPYPATH"] = os.pathsep.join(
            [str(paths.SIM_BUILD_DIR), str(self.flash), str(self.flash / "lib"), ".frozen"])
        env["KIOSK_SIM_CONTROL"] = f"127.0.0.1:{self.fleet.control_port}"
        env["KIOSK_SIM_ID"] = self.id
        env["KIOSK_SIM_UID"] = self.id
        env["KIOSK_SIM_STATE"] = str(self.dir / "reset-cause")
        env["KIOSK_EMU_RAW"] = "1" if raw else "0"
        return env

    def start(self, raw: bool = False, reboot: bool = False) -> None:
        """Power on (or, with reboot, come back after a reset unless the power
        was cut meanwhile): a new process on the same flash and pty. Returns
        once the world is set up and the firmware starts."""
        with self.state_lock:
            if self.running() or (reboot and not self.want_power):
                return
            self.want_power = True
            self.connected.clear()
            self._drop_channel()
            cmd = mpy.mp_command(["-m", BOOT], self.fleet.heap)
            self.proc = subprocess.Popen(cmd, cwd=self.flash, env=self._env(raw), stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         start_new_session=True)
            self.boots += 1
            proc = self.proc
            self.console.attach(proc, lambda: self._exited(proc))
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while not self.connected.wait(0.1):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = _tail(self.dir / "console.log")
                raise EmulatorError(f"{self.id}: the emulated board did not come up"
                                    f"{' (it exited)' if proc.poll() is not None else ''}; "
                                    f"see {self.dir / 'console.log'}{': ' + tail if tail else ''}")
        self._replay()
        try:
            self._send({"op": "go"})
        except EmulatorError:
            pass

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _exited(self, proc: subprocess.Popen) -> None:
        """The process ended (the console saw its stdout close)."""
        try:
            rc = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        self.last_exit = rc
        with self.state_lock:
            if self.proc is not proc:
                return
            self.proc = None
            self._drop_channel()
            again = self.want_power and not self.fleet.stopping
        if not again:
            return
        # A reset: the board boots again. Back off if it keeps dying at once.
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < 10] + [now]
        if rc not in (SOFT, SOFT_RAW) and len(self._restarts) > 5:
            time.sleep(min(5.0, 0.5 * len(self._restarts)))
        try:
            self.start(raw=rc == SOFT_RAW, reboot=True)
        except EmulatorError as e:
            print(f"emulate: {e}", file=sys.stderr, flush=True)

    def power_off(self) -> None:
        """Pull the plug: SIGKILL, no cleanup."""
        with self.state_lock:
            self.want_power = False
            proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        if proc is not None:
            proc.wait(10)
        deadline = time.monotonic() + 5
        while self.proc is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        self._drop_channel()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop as a technician would: Ctrl-C (locks de-energised, motors off,
        journal flushed), then power off."""
        with self.state_lock:
            self.want_power = False
            proc = self.proc
        if proc is None:
            return
        if self.console and self.console.mode in ("busy", "boot"):
            self.console.interrupt()
            self.console.wait_idle(timeout)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    # -- control channel ----------------------------------------------------
    def _drop_channel(self) -> None:
        with self.lock:
            if self.channel:
                try:
                    self.channel.close()
                except OSError:
                    pass
            self.channel = None
            self.reader = None

    def attach(self, sock: socket.socket, reader) -> None:
        with self.lock:
            self.channel, self.reader = sock, reader
        self.connected.set()

    def _send(self, cmd: dict[str, Any]) -> Any:
        with self.lock:
            if self.channel is None:
                raise EmulatorError(f"{self.id}: no control channel")
            try:
                self.channel.sendall(json.dumps(cmd).encode() + b"\n")
                line = self.reader.readline()
            except OSError as e:
                raise EmulatorError(f"{self.id}: control channel lost ({e})") from None
            if not line:
                raise EmulatorError(f"{self.id}: control channel closed (the board reset)")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise EmulatorError(f"{self.id}: {reply.get('error') or 'refused'}")
        return reply["result"]

    def command(self, cmd: dict[str, Any], timeout: float = 10.0) -> Any:
        """Apply one World command inside the kiosk's VM and return its
        result. While the board reboots, waits for it (up to timeout)."""
        if not self.want_power:
            raise PoweredOff(f"{self.id} is powered off")
        if not self.connected.wait(timeout):
            raise EmulatorError(f"{self.id}: the board is not up (rebooting?)")
        return self._send(cmd)

    def _replay(self) -> None:
        """What outlasts a reset in the physical world, into the new world."""
        s = self.sticky
        cmds: list[dict[str, Any]] = []
        if not s["network"]:
            cmds.append({"op": "network", "up": False})
        for (kind, target), on in s["faults"].items():
            if on:
                cmds.append({"op": "fault", "kind": kind, "on": True, "target": target})
        for name, v in s["sensors"].items():
            cmds.append({"op": "sensor", "sensor": name, **v})
        for door, action in s["doors"].items():
            if action in ("open", "force"):
                cmds.append({"op": "door", "door": door, "action": "force"})
        for c in cmds:
            try:
                self._send(c)
            except EmulatorError as e:
                print(f"emulate: {self.id}: replay {c}: {e}", file=sys.stderr, flush=True)

    def info(self) -> dict[str, Any]:
        c = self.console
        return {"id": self.id, "pty": c.path if c else None, "tty": str(self.dir / "tty"),
                "pid": self.proc.pid if self.running() else None, "powered": self.want_power,
                "online": self.fleet.online.get(self.id), "network": self.sticky["network"],
                "console": c.mode if c else "off", "boots": self.boots,
                "flash": str(self.flash), "log": str(self.dir / "console.log")}


class Fleet:
    """N emulated kiosks: the Python API for tests and for the HTTP routes.

    kiosks: a list of dicts {id, pty, tty, pid, powered, online, network,
    console, boots, flash, log}; every verb raises UnknownKiosk (a KeyError
    too) for an unknown id, PoweredOff while the kiosk has no power, and
    EmulatorError with the reason for a bad argument or a refused command.
    """

    def __init__(self, broker_url: str, count: int, state_dir: str | os.PathLike[str],
                 keys_dir: str | os.PathLike[str], board: str = "emulator", id_prefix: str = "kiosk-",
                 policies: dict[str, Any] | None = None, keepalive_s: int = 30, watch: bool = True):
        broker_config(broker_url)
        if not isinstance(count, int) or count < 1:
            raise EmulatorError("count must be at least 1")
        if not (paths.BOARDS_DIR / f"{board}.json").is_file():
            raise EmulatorError(f"unknown board {board!r} (boards/{board}.json)")
        self.broker_url = broker_url
        self.state_dir = Path(state_dir).resolve()
        self.keys_dir = Path(keys_dir).resolve()
        self.board = board
        self.policies = dict(policies or {})
        self.keepalive_s = keepalive_s
        self.watch = watch
        self.online: dict[str, bool] = {}
        self.births: dict[str, dict[str, Any]] = {}
        self._mqtt = None
        self._by_id = {f"{id_prefix}{i:03d}": None for i in range(1, count + 1)}
        for kid in self._by_id:
            self._by_id[kid] = Kiosk(self, kid)
        self.stopping = False
        self.started = False
        self.heap = 0
        self.hub: Hub | None = None
        self._server: socket.socket | None = None
        self.control_port = 0

    # -- life cycle ---------------------------------------------------------
    def _accept(self) -> None:
        server = self._server
        while not self.stopping:
            try:
                sock, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=self._hello, args=(sock,), daemon=True).start()

    def _hello(self, sock: socket.socket) -> None:
        sock.settimeout(15)
        reader = sock.makefile("rb")
        try:
            hello = json.loads(reader.readline() or b"{}")
        except (ValueError, OSError):
            sock.close()
            return
        k = self._by_id.get(hello.get("hello"))
        if k is None:
            sock.close()
            return
        k.attach(sock, reader)

    def _watch(self) -> None:
        """Follow the kiosks' retained state (birth/death) on the broker, for
        the online flag in `kiosks`."""
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            return
        u = urlparse(self.broker_url)
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"emulator-{os.getpid()}-{id(self)}")
        if u.username:
            c.username_pw_set(u.username, u.password or "")
        if u.scheme == "mqtts":
            ca = parse_qs(u.query).get("ca")
            c.tls_set(ca_certs=ca[0] if ca else None)

        def on_connect(client, userdata, flags, rc, props=None):
            client.subscribe("kiosk/+/state", qos=1)

        def on_message(client, userdata, m):
            kid = m.topic.split("/")[1]
            if kid in self._by_id:
                try:
                    d = json.loads(m.payload)
                except ValueError:
                    return
                self.online[kid] = bool(d.get("online"))
                if d.get("online"):
                    self.births[kid] = d

        c.on_connect = on_connect
        c.on_message = on_message
        try:
            c.connect_async(u.hostname, u.port or (8883 if u.scheme == "mqtts" else 1883), 30)
            c.loop_start()
        except (OSError, ValueError):
            return
        self._mqtt = c

    def start(self) -> "Fleet":
        if not (paths.FIRMWARE_BUILD_DIR / build.MANIFEST).exists() or not (paths.SIM_BUILD_DIR / f"{BOOT}.mpy").exists():
            raise EmulatorError("no firmware build: run `make build` first")
        self.heap = mpy.heap_size() + HEAP_EXTRA
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(128)
        self.control_port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, name="emulator-control", daemon=True).start()
        self.hub = Hub()
        if self.watch:
            self._watch()
        for k in self._by_id.values():
            k.dir.mkdir(parents=True, exist_ok=True)
            k.provision(ensure_key(self.keys_dir, k.id))
            k.console = Console(self.hub, k.dir / "tty", k.dir / "console.log")
        self.started = True
        errors = []
        threads = [threading.Thread(target=lambda k=k: _collect(errors, k.start)) for k in self._by_id.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            self.stop()
            raise errors[0]
        return self

    def stop(self) -> None:
        """Ctrl-C every kiosk (hardware safe, journal flushed), then power off."""
        if self.stopping:
            return
        self.stopping = True
        threads = [threading.Thread(target=k.shutdown) for k in self._by_id.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for k in self._by_id.values():
            k._drop_channel()
            if k.console:
                k.console.close()
        if self._server:
            self._server.close()
        if self._mqtt is not None:
            self._mqtt.loop_stop()
            self._mqtt.disconnect()
        if self.hub:
            self.hub.close()

    def __enter__(self) -> "Fleet":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- lookups ------------------------------------------------------------
    def kiosk(self, kiosk_id: str) -> Kiosk:
        k = self._by_id.get(kiosk_id)
        if k is None:
            raise UnknownKiosk(f"no emulated kiosk {kiosk_id!r} (have {', '.join(self._by_id)})")
        return k

    @property
    def ids(self) -> list[str]:
        return list(self._by_id)

    @property
    def kiosks(self) -> list[dict[str, Any]]:
        return [k.info() for k in self._by_id.values()]

    def pty(self, kiosk_id: str) -> str:
        """The console's device path (/dev/pts/N) to give mpremote or kioskctl."""
        return self.kiosk(kiosk_id).console.path

    # -- the control verbs -------------------------------------------------
    def door(self, kiosk_id: str, door: str, action: str) -> dict[str, Any]:
        """A patient or intruder at a door: open (only opens when unlocked),
        close, or force (opens a locked door)."""
        k = self.kiosk(kiosk_id)
        if door not in DOORS or action not in DOOR_ACTIONS:
            raise EmulatorError(f"door must be one of {', '.join(DOORS)} and action one of {', '.join(DOOR_ACTIONS)}")
        r = k.command({"op": "door", "door": door, "action": action})
        if r.get("ok"):
            if r.get("door") == "open":
                k.sticky["doors"][door] = "open"
            else:
                k.sticky["doors"].pop(door, None)
        return r

    def sensor(self, kiosk_id: str, name: str, celsius: float | None = None,
               humidity: float | None = None) -> dict[str, Any]:
        """Set what a sensor's surroundings are (its reading follows)."""
        k = self.kiosk(kiosk_id)
        for label, v in (("celsius", celsius), ("humidity", humidity)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise EmulatorError(f"{label} must be a number")
        if celsius is None and humidity is None:
            raise EmulatorError("give celsius, humidity or both")
        r = k.command({"op": "sensor", "sensor": name, "celsius": celsius, "humidity": humidity})
        v = k.sticky["sensors"].setdefault(name, {})
        if celsius is not None:
            v["celsius"] = celsius
        if humidity is not None:
            v["humidity"] = humidity
        return r

    def fault(self, kiosk_id: str, kind: str, on: bool = True, target: str | None = None) -> dict[str, Any]:
        """Inject (on) or clear a fault: stall, slip, home_broken, home_stuck,
        index_broken, lock_jam, bolt_sensor_broken, door_sensor_broken,
        sensor_unplugged, sensor_crc, sensor_noisy, sensor_no_power (and the
        aliases in FAULT_ALIASES); target names one carousel, lock or sensor."""
        k = self.kiosk(kiosk_id)
        if not isinstance(kind, str) or not kind:
            raise EmulatorError("fault kind must be a name")
        kind = FAULT_ALIASES.get(kind, kind)
        r = k.command({"op": "fault", "kind": kind, "on": bool(on), "target": target})
        k.sticky["faults"][(kind, target)] = bool(on)
        return r

    def power(self, kiosk_id: str, on: bool) -> dict[str, Any]:
        """Cut the power (SIGKILL, no cleanup) or restore it (boot)."""
        k = self.kiosk(kiosk_id)
        if on:
            k.start()
        else:
            k.power_off()
        return k.info()

    def network(self, kiosk_id: str, up: bool) -> dict[str, Any]:
        """Drop (every open socket breaks, new ones fail) or restore the
        kiosk's network."""
        k = self.kiosk(kiosk_id)
        r = k.command({"op": "network", "up": bool(up)})
        k.sticky["network"] = bool(up)
        return r

    def world(self, kiosk_id: str) -> dict[str, Any]:
        """The simulated world: doors and locks, carousel position, sensors,
        plus the kiosk's process state. world is None while powered off."""
        k = self.kiosk(kiosk_id)
        state = k.command({"op": "state"}) if k.want_power else None
        return {**k.info(), "world": state}

    def interrupt(self, kiosk_id: str) -> None:
        """Ctrl-C on the kiosk's console, as a technician would type it."""
        self.kiosk(kiosk_id).console.interrupt()


def _tail(path: Path, n: int = 300) -> str:
    try:
        return path.read_bytes()[-n:].decode(errors="replace").strip()
    except OSError:
        return ""


def _collect(errors: list, fn) -> None:
    try:
        fn()
    except Exception as e:  # reported by the caller
        errors.append(e)


def sim_router(fleet: Fleet):
    """The /api/sim control routes, for `--control` and for the bridge's demo.
    Errors come back as JSON {"detail": ...}: 404 unknown kiosk, 409 powered
    off or not up, 422 a malformed body or one the world refuses (no such
    sensor or door on this board, a fault its parts cannot take)."""
    from typing import Literal, Optional

    from fastapi import APIRouter, HTTPException
    from pydantic import BaseModel, ConfigDict, Field

    from .protocol import TEXT_PATTERN

    name = Field(min_length=1, max_length=64, pattern=TEXT_PATTERN)

    class Body(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)

    class Door(Body):
        door: Literal["pickup", "service"]
        action: Literal["open", "close", "force"]

    class Sensor(Body):
        sensor: str = name
        celsius: Optional[float] = Field(None, ge=-60, le=150, allow_inf_nan=False)
        humidity: Optional[float] = Field(None, ge=0, le=100, allow_inf_nan=False)

    class Fault(Body):
        kind: str = name
        on: bool = True
        target: Optional[str] = Field(None, min_length=1, max_length=64, pattern=TEXT_PATTERN)

    class Power(Body):
        on: bool

    class Network(Body):
        up: bool

    class Error(BaseModel):
        detail: str

    errors = {404: {"model": Error, "description": "unknown kiosk"},
              409: {"model": Error, "description": "the kiosk is powered off, not up yet, or resetting"},
              422: {"model": Error, "description": "malformed, or refused by the simulated world"}}

    router = APIRouter(prefix="/api/sim", tags=["emulator"], responses=errors)

    def call(fn, *args):
        try:
            return fn(*args)
        except UnknownKiosk as e:
            raise HTTPException(404, str(e)) from None
        except PoweredOff as e:
            raise HTTPException(409, str(e)) from None
        except EmulatorError as e:
            msg = str(e)
            raise HTTPException(409 if "not up" in msg or "reset" in msg else 422, msg) from None

    @router.get("")
    def kiosks() -> list[dict[str, Any]]:
        return fleet.kiosks

    @router.get("/{kiosk_id}")
    def world(kiosk_id: str) -> dict[str, Any]:
        return call(fleet.world, kiosk_id)

    @router.post("/{kiosk_id}/door")
    def door(kiosk_id: str, body: Door):
        return call(fleet.door, kiosk_id, body.door, body.action)

    @router.post("/{kiosk_id}/sensor")
    def sensor(kiosk_id: str, body: Sensor):
        return call(fleet.sensor, kiosk_id, body.sensor, body.celsius, body.humidity)

    @router.post("/{kiosk_id}/fault")
    def fault(kiosk_id: str, body: Fault):
        return call(fleet.fault, kiosk_id, body.kind, body.on, body.target)

    @router.post("/{kiosk_id}/power")
    def power(kiosk_id: str, body: Power):
        return call(fleet.power, kiosk_id, body.on)

    @router.post("/{kiosk_id}/network")
    def network(kiosk_id: str, body: Network):
        return call(fleet.network, kiosk_id, body.up)

    return router


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kiosk-bridge emulate",
                                description="Run emulated kiosks (the real firmware in MicroPython) against a broker.")
    p.add_argument("--broker", required=True, help="mqtt://[user:pass@]host:port (mqtts://...?ca=FILE for TLS)")
    p.add_argument("--count", type=int, default=3, help="how many kiosks (default 3)")
    p.add_argument("--state-dir", required=True, help="one folder per kiosk: its flash, console pty link, log")
    p.add_argument("--keys", required=True, help="per-kiosk key files <id>.key (created when absent)")
    p.add_argument("--control", help="HOST:PORT to serve the /api/sim control routes on")
    p.add_argument("--board", default="emulator", help="board definition (boards/NAME.json)")
    p.add_argument("--id-prefix", default="kiosk-", help="kiosk ids are PREFIX001, PREFIX002, ...")
    args = p.parse_args(argv)
    if args.control and ":" not in args.control:
        p.error("--control takes HOST:PORT")
    try:
        fleet = Fleet(args.broker, args.count, args.state_dir, args.keys, board=args.board,
                      id_prefix=args.id_prefix).start()
    except EmulatorError as e:
        print(f"emulate: {e}", file=sys.stderr)
        return 2
    for k in fleet.kiosks:
        print(f"{k['id']}  pty {k['pty']}  (link {k['tty']})  flash {k['flash']}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        if args.control:
            import uvicorn
            from fastapi import FastAPI

            host, port = args.control.rsplit(":", 1)
            app = FastAPI(title="Kiosk emulator")
            app.include_router(sim_router(fleet))
            print(f"control API on http://{host}:{port}/api/sim", flush=True)
            server = uvicorn.Server(uvicorn.Config(app, host=host, port=int(port), log_level="warning"))
            signal.signal(signal.SIGTERM, lambda *a: setattr(server, "should_exit", True))
            server.run()
        else:
            while not stop.wait(3600):
                pass
    except KeyboardInterrupt:
        pass
    finally:
        fleet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
