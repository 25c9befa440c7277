"""One emulated kiosk: its folders, its MicroPython process, its console
and its control channel; power, resets and the physical state that outlasts
them."""


import hashlib
import hmac
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
from typing import TYPE_CHECKING, Any

from .. import build, layout, mpy, paths
from ..replpty import Console
from . import BOOT, EmulatorError, PoweredOff, broker_config

if TYPE_CHECKING:
    from .fleet import Fleet

SOFT = 20        # emuboot's exit codes: soft reset, run main.py again
SOFT_RAW = 21    # soft reset from the raw REPL: come back in the raw REPL
BOOT_TIMEOUT_S = 20.0


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
        self.token = ""                      # this boot's control-channel token (start() draws it)
        self.sticky: dict[str, Any] = {"doors": {}, "sensors": {}, "faults": {}, "network": True,
                                       "route": "ok", "rtt_ms": 0}
        self._restarts: list[float] = []

    # -- flash -----------------------------------------------------------
    def provision(self, key: str) -> None:
        """Put the current build on the flash, in the slot layout
        (kiosk_host.layout), and write config.json. Files the flash holds as
        an older build put them are updated; files changed on the board (by
        deploy or by hand) are kept; a slot an update or deploy filled is
        left alone. A flash in the old flat layout moves into slot a."""
        src = paths.FIRMWARE_BUILD_DIR
        manifest = json.loads((src / build.MANIFEST).read_text())
        slot_files, root_files = layout.split(manifest["files"])
        record = self.dir / "provisioned.json"      # what this emulator last put on the flash
        legacy = self.flash / build.MANIFEST
        old_manifest = json.loads((record if record.exists() else legacy).read_text()) \
            if record.exists() or legacy.exists() else {"version": None, "files": {}}
        old = old_manifest["files"]
        self.flash.mkdir(parents=True, exist_ok=True)
        _update(src, self.flash, root_files, old)
        st_path = self.flash / layout.STATE
        if not st_path.exists():
            target = self.flash / layout.slot_dir("a")
            if target.exists():
                shutil.rmtree(target)
            _update(src, target, slot_files, {})
            (target / layout.SLOT_MANIFEST).write_bytes(layout.slot_manifest(manifest))
            st_path.write_text(json.dumps({"active": "a"}))
            for name in layout.LEGACY:
                p = self.flash / name
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        else:
            active = json.loads(st_path.read_text()).get("active") or "a"
            target = self.flash / layout.slot_dir(active)
            mine = old_manifest.get("version") is not None and \
                (target / layout.SLOT_MANIFEST).is_file() and \
                (target / layout.SLOT_MANIFEST).read_bytes() == layout.slot_manifest(old_manifest)
            if mine:
                _update(src, target, slot_files, old)
                (target / layout.SLOT_MANIFEST).write_bytes(layout.slot_manifest(manifest))
        record.write_text(json.dumps(manifest))
        cfg = {"kiosk_id": self.id, "board": self.fleet.board, "key": key,
               "broker": broker_config(self.fleet.broker_url, self.fleet.keepalive_s),
               "policies": self.fleet.policies}
        # The key is a secret: the file is its owner's only, as on a board's
        # flash nobody else can read.
        path = self.flash / "config.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(cfg, indent=1) + "\n")
        os.chmod(path, 0o600)

    # -- process ----------------------------------------------------------
    def _env(self, raw: bool) -> dict[str, str]:
        env = mpy.mp_env(paths.FIRMWARE_BUILD_DIR, port=self.fleet.port)
        env["MICROPYPATH"] = os.pathsep.join(
            [str(paths.SIM_BUILD_DIR), str(self.flash), str(self.flash / "lib"), ".frozen"])
        env["KIOSK_SIM_CONTROL"] = f"127.0.0.1:{self.fleet.control_port}"
        env["KIOSK_SIM_ID"] = self.id
        env["KIOSK_SIM_TOKEN"] = self.token    # only this process may say it is this kiosk
        env["KIOSK_SIM_FIRMWARE"] = str(paths.FIRMWARE_BUILD_DIR)   # the world's own board parser
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
            self.token = secrets.token_hex(16)   # this boot's: a process of an earlier one cannot use it
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

    def attach(self, sock: socket.socket, reader, token: Any) -> bool:
        """The kiosk's process reports to the control port with its boot's
        token (passed in its environment, which only its owner can read):
        anything else that connects and claims the kiosk is refused, so no
        other local process can stand in for the board's world."""
        if not self.token or not isinstance(token, str) \
                or not hmac.compare_digest(token.encode(), self.token.encode()) or not self.running():
            return False
        with self.lock:
            if self.connected.is_set():
                return False       # one channel per boot
            self.channel, self.reader = sock, reader
        self.connected.set()
        return True

    def _send(self, cmd: dict[str, Any]) -> Any:
        with self.lock:
            if self.channel is None:
                raise EmulatorError(f"{self.id}: no control channel")
            try:
                # As UTF-8: MicroPython's json would read a "\ud83d\udc8a" escape as two lone surrogates.
                self.channel.sendall(json.dumps(cmd, ensure_ascii=False).encode() + b"\n")
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
        if s.get("flash") is not None:
            cmds.append({"op": "flash", "size": s["flash"]})
        if not s["network"]:
            cmds.append({"op": "network", "up": False})
        if s["route"] != "ok" or s["rtt_ms"]:
            cmds.append({"op": "network", "route": s["route"], "rtt_ms": s["rtt_ms"]})
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
                "route": self.sticky["route"], "rtt_ms": self.sticky["rtt_ms"],
                "console": c.mode if c else "off", "boots": self.boots,
                "flash": str(self.flash), "log": str(self.dir / "console.log")}


def _update(src: Path, dest_root: Path, want: dict[str, Any], old: dict[str, Any]) -> None:
    """Copy each file of want from src to dest_root where it is missing or
    still as the older build (old) put it; keep files changed since."""
    for rel, meta in want.items():
        dest = dest_root / rel
        if dest.exists():
            have = hashlib.sha256(dest.read_bytes()).hexdigest()
            if have == meta["sha256"] or have != old.get(rel, {}).get("sha256"):
                continue  # up to date, or changed on the board: leave it
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dest)


def _tail(path: Path, n: int = 300) -> str:
    try:
        return path.read_bytes()[-n:].decode(errors="replace").strip()
    except OSError:
        return ""
