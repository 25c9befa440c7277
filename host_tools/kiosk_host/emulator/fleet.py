"""A fleet of emulated kiosks: the control-port listener each kiosk's
process reports to, the broker watcher behind the online flags, and the
verbs (door, sensor, fault, power, network) for tests and the HTTP routes."""


import json
import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from .. import build, mpy, paths
from ..replpty import Console, Hub
from . import BOOT, EmulatorError, UnknownKiosk, broker_config, ensure_key
from .supervisor import Kiosk

DOORS = ("pickup", "service")
DOOR_ACTIONS = ("open", "close", "force")
ROUTES = ("ok", "refused", "blackhole")
# Names the issue and the field team use, as the simulated world knows them.
FAULT_ALIASES = {
    "broken_home_switch": "home_broken", "home_switch": "home_broken",
    "jammed_lock": "lock_jam", "jam": "lock_jam",
    "unplugged": "sensor_unplugged", "unplugged_sensor": "sensor_unplugged",
    "noisy": "sensor_noisy", "noisy_sensor": "sensor_noisy",
}
HEAP_EXTRA = 24 * 1024   # the REPL (emuboot) and its globals, beside the firmware


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
        self.port = "unix"
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
        k = self._by_id.get(hello.get("hello")) if isinstance(hello, dict) else None
        if k is None or not k.attach(sock, reader, hello.get("token")):
            sock.close()
            return

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
        self.port = mpy.port_of_board(self.board)     # the personality the board's mcu asks for
        self.heap = mpy.heap_size(self.port, self.board) + HEAP_EXTRA
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

    def scan(self, kiosk_id: str, text: str) -> dict[str, Any]:
        """Someone holds a code or a package label under the kiosk's scanner:
        the text reaches the firmware's UART as the scanner sends it."""
        k = self.kiosk(kiosk_id)
        if not isinstance(text, str) or not 0 < len(text) <= 256:
            raise EmulatorError("scan: text must be 1 to 256 characters")
        try:
            text.encode()
        except UnicodeEncodeError:
            raise EmulatorError("scan: text must have a UTF-8 form (no lone surrogates)") from None
        return k.command({"op": "scan", "text": text})

    def button(self, kiosk_id: str, name: str) -> dict[str, Any]:
        """Press a button at the kiosk (call_pharmacist)."""
        k = self.kiosk(kiosk_id)
        if not isinstance(name, str) or not name:
            raise EmulatorError("button: name a button")
        return k.command({"op": "button", "name": name})

    def power(self, kiosk_id: str, on: bool) -> dict[str, Any]:
        """Cut the power (SIGKILL, no cleanup) or restore it (boot)."""
        k = self.kiosk(kiosk_id)
        if on:
            k.start()
        else:
            k.power_off()
        return k.info()

    def network(self, kiosk_id: str, up: bool | None = None, route: str | None = None,
                rtt_ms: int | None = None) -> dict[str, Any]:
        """Drop (every open socket breaks, new ones fail) or restore the
        kiosk's network; route "refused" (the broker's host resets every
        connection), "blackhole" (nothing answers) or "ok"; rtt_ms adds a
        round trip to every connection. What is not given stays."""
        k = self.kiosk(kiosk_id)
        if route is not None and route not in ROUTES:
            raise EmulatorError(f"route must be one of {', '.join(ROUTES)}")
        if rtt_ms is not None and (isinstance(rtt_ms, bool) or not isinstance(rtt_ms, int)
                                   or not 0 <= rtt_ms <= 10000):
            raise EmulatorError("rtt_ms must be an integer from 0 to 10000")
        cmd: dict[str, Any] = {"op": "network"}
        if up is not None or (route is None and rtt_ms is None):
            cmd["up"] = True if up is None else bool(up)
        if route is not None:
            cmd["route"] = route
        if rtt_ms is not None:
            cmd["rtt_ms"] = rtt_ms
        r = k.command(cmd)
        k.sticky["network"] = r["up"]
        k.sticky["route"] = r["route"]
        k.sticky["rtt_ms"] = r["rtt_ms"]
        return r

    def flash(self, kiosk_id: str, size: int | None) -> dict[str, Any]:
        """Give the kiosk's flash a size in bytes (None: no limit, the
        default): a write past it fails as on a full flash (ENOSPC). Kept
        across resets, as the chip is. Returns {size, used, free}."""
        k = self.kiosk(kiosk_id)
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise EmulatorError("flash size must be a number of bytes, or None")
        r = k.command({"op": "flash", "size": size})
        k.sticky["flash"] = size
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


def _collect(errors: list, fn) -> None:
    try:
        fn()
    except Exception as e:  # reported by the caller
        errors.append(e)
