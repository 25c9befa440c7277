"""A kiosk board's USB REPL from the host, on top of mpremote's serial
transport: the same code talks to a real board's serial port and to an
emulated kiosk's pty.

Connecting stops the firmware (Ctrl-C: locks de-energised, motors
disabled) and enters the raw REPL, as mpremote does; whether the firmware
was running is noted, so closing can start it again (a soft reset runs
main.py) and leave a kiosk the way it was found.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"   # the ">" prompt after it is left for exec
STOP_MARK = b"kiosk: stopping"
_HASH_BATCH = 24

_HASH_CODE = """
import hashlib, binascii, json
def __kh(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    h = hashlib.sha256()
    b = bytearray(1024)
    m = memoryview(b)
    with f:
        while True:
            n = f.readinto(b)
            if not n:
                break
            h.update(m[:n])
    return binascii.hexlify(h.digest()).decode()
"""


class NoBoard(Exception):
    """Nothing usable answers on the port; the message says what to check."""


class PortBusy(NoBoard):
    """Another program holds the port (mpremote, a terminal, another kioskctl)."""

    def __init__(self, port: str, who: list[str]):
        super().__init__(f"port busy: {port} is in use by {', '.join(who)}. Close it there (quit mpremote, "
                         "screen or the other kioskctl), then try again.")


def holders(port: str, unlocked: bool = False) -> list[str]:
    """The other programs holding a serial port, as "name (pid N)", read from
    /proc without opening the port (opening a USB serial port can reset an
    ESP32 board). mpremote, kioskctl and pyserial lock the port (flock), as
    /proc/locks shows; with `unlocked`, programs that merely have it open
    (a terminal such as screen) count too, except for a pty, whose other
    end an emulator always holds."""
    try:
        st = os.stat(port)
        real = os.path.realpath(port)
    except OSError:
        return []
    pids = set()
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        for line in Path("/proc/locks").read_text().splitlines():
            f = line.split()
            if len(f) > 5 and f[1] == "FLOCK" and f[5] == want and f[4].isdigit():
                pids.add(int(f[4]))
    except OSError:
        pass
    if unlocked and not real.startswith("/dev/pts/"):
        for fd_dir in Path("/proc").glob("[0-9]*/fd"):
            try:
                if any(os.readlink(fd) == real for fd in fd_dir.iterdir()):
                    pids.add(int(fd_dir.parent.name))
            except OSError:
                continue
    pids.discard(os.getpid())
    out = []
    for pid in sorted(pids):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            name = "a program"
        out.append(f"{name} (pid {pid})")
    return out


class BoardError(Exception):
    """Code run on the board raised; the message is the board's traceback."""


class BoardLink:
    def __init__(self, port: str, baudrate: int = 115200, answer_timeout: float = 8.0):
        self.port = port
        self.answer_timeout = answer_timeout
        self.was_running = False
        self.hashing = False
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.t = SerialTransport(port, baudrate=baudrate, timeout=1)
        except TransportError as e:
            busy = holders(port)
            if busy:
                raise PortBusy(port, busy) from None
            raise NoBoard(f"cannot open {port}: {e}. Is the board plugged in (or the emulator running), "
                          "and the port right? (kioskctl --port PATH)") from None
        except Exception as e:  # pyserial's own errors (not a tty)
            raise NoBoard(f"cannot open {port}: {e}") from None

    # -- session ------------------------------------------------------------
    def enter(self) -> None:
        """Stop whatever runs (Ctrl-C) and enter the raw REPL."""
        s = self.t.serial
        data = b""
        try:
            # Twice at most: a Ctrl-C that lands while the board is still
            # starting (just reset, or restarted by the last command) can
            # be lost, as on a board whose USB came up a moment before.
            for tries in (1, 2):
                s.write(b"\r\x03")
                time.sleep(0.05)
                s.write(b"\r\x01")
                data += self.t.read_until(1, RAW_BANNER, timeout=self.answer_timeout / 2,
                                          timeout_overall=self.answer_timeout)
                if data.endswith(RAW_BANNER):
                    break
        except OSError as e:
            raise NoBoard(f"{self.port}: {e}") from None
        if not data.endswith(RAW_BANNER):
            self.close()
            busy = holders(self.port, unlocked=True)
            if busy:
                raise PortBusy(self.port, busy)
            raise NoBoard(f"no MicroPython REPL answers on {self.port} "
                          f"(waited {self.answer_timeout:.0f} s for the raw REPL"
                          + (f"; got {data[-80:]!r})" if data else "; got nothing)")
                          + ". Check the cable and port, that MicroPython is flashed, and that no other "
                          "program (mpremote, a terminal) holds the port.")
        self.was_running = STOP_MARK in data
        self.t.in_raw_repl = True

    def close(self, restart: bool = False) -> None:
        """Leave the raw REPL; with restart, soft-reset so main.py runs again."""
        try:
            if self.t.in_raw_repl:
                self.t.exit_raw_repl()
            if restart:
                self.t.serial.write(b"\x04")
                self.t.read_until(1, b"soft reboot\r\n", timeout=3, timeout_overall=5)
        except (OSError, TransportError):
            pass
        try:
            self.t.close()
        except OSError:
            pass

    # -- running code ---------------------------------------------------------
    def exec(self, code: str, timeout: float | None = 60,
             consumer: Callable[[bytes], None] | None = None) -> str:
        """Run code; return what it printed. BoardError with the board's
        traceback if it raised; NoBoard if the board stops answering."""
        try:
            out, err = self.t.exec_raw(code, timeout=timeout, data_consumer=consumer)
        except TransportError as e:
            raise NoBoard(f"{self.port}: the board stopped answering ({e})") from None
        except OSError as e:
            raise NoBoard(f"{self.port}: {e}") from None
        if err:
            raise BoardError(err.decode(errors="replace").strip())
        return out.decode(errors="replace")

    def call(self, expr: str, timeout: float | None = 60, setup: str = "") -> Any:
        """Evaluate expr on the board (after `from kiosk.service import debug` and
        setup) and return its value, passed as JSON."""
        out = self.exec(f"import json\nfrom kiosk.service import debug\n{setup}\nprint('\\x1e' + json.dumps({expr}))",
                        timeout=timeout)
        tail = out.rsplit("\x1e", 1)
        if len(tail) != 2:
            raise BoardError(f"no result from the board; it printed: {out.strip()[-300:]}")
        return json.loads(tail[1])

    def interrupt(self) -> None:
        self.t.serial.write(b"\x03")

    # -- files ------------------------------------------------------------------
    def hashes(self, paths: list[str]) -> dict[str, str | None]:
        """sha256 (hex) of each file on the board; None where it is missing."""
        if not self.hashing:
            self.exec(_HASH_CODE)
            self.hashing = True
        found: dict[str, str | None] = {}
        for i in range(0, len(paths), _HASH_BATCH):
            batch = paths[i:i + _HASH_BATCH]
            out = self.exec(f"print(json.dumps({{p: __kh(p) for p in {json.dumps(batch)}}}))")
            found.update(json.loads(out.strip().splitlines()[-1]))
        return found

    def read_file(self, path: str, limit: int = 16384) -> bytes | None:
        """A small file's content (up to limit bytes), or None when it is
        missing. Read in small pieces: the board's heap is small."""
        out = self.exec(f"import binascii\ntry:\n    __kr = open({path!r}, 'rb')\nexcept OSError:\n    __kr = None\n"
                        "if __kr is None:\n    print('-')\nelse:\n    __kn = 0\n    with __kr:\n"
                        f"        while __kn < {limit}:\n            __kc = __kr.read(256)\n"
                        "            if not __kc:\n                break\n            __kn += len(__kc)\n"
                        "            print(binascii.hexlify(__kc).decode())\n    print('.')")
        lines = out.split()
        if not lines or lines[-1] == "-":
            return None
        return bytes.fromhex("".join(lines[:-1]))[:limit]

    def copy_file(self, src: str, dest: str) -> None:
        """Copy a file on the board (no USB transfer), atomically like write_file."""
        tmp = dest + ".tmp"
        self.exec(f"__ks = open({src!r}, 'rb')\n__kd = open({tmp!r}, 'wb')\n__kb = bytearray(1024)\n"
                  "while True:\n    n = __ks.readinto(__kb)\n    if not n:\n        break\n"
                  "    __kd.write(memoryview(__kb)[:n])\n__ks.close()\n__kd.close()\nimport os\n"
                  f"try:\n    os.remove({dest!r})\nexcept OSError:\n    pass\nos.rename({tmp!r}, {dest!r})")

    def remove_tree(self, path: str) -> None:
        """Remove a file or a folder with everything in it; nothing if missing."""
        self.exec("import os\ndef __krm(p):\n    try:\n        names = [e[0] for e in os.ilistdir(p)]\n"
                  "    except OSError:\n        names = None\n    if names is None:\n        try:\n"
                  "            os.remove(p)\n        except OSError:\n            pass\n        return\n"
                  "    for n in names:\n        __krm(p + '/' + n)\n    os.rmdir(p)\n"
                  f"__krm({path!r})")

    def makedirs(self, path: str) -> None:
        self.exec("import os\np = ''\nfor d in %r.split('/'):\n    p = p + '/' + d if p else d\n"
                  "    try:\n        os.mkdir(p)\n    except OSError:\n        pass" % path)

    def write_file(self, path: str, data: bytes, chunk: int = 2048,
                   progress: Callable[[int], None] | None = None) -> None:
        """Write to path + '.tmp', then rename over path: a cut mid-file
        leaves the old file."""
        tmp = path + ".tmp"
        self.exec(f"__kf = open({tmp!r}, 'wb')")
        for i in range(0, len(data), chunk):
            self.exec(f"__kf.write({data[i:i + chunk]!r})")
            if progress:
                progress(min(i + chunk, len(data)))
        self.exec(f"__kf.close()\nimport os\ntry:\n    os.remove({path!r})\nexcept OSError:\n    pass\n"
                  f"os.rename({tmp!r}, {path!r})")


__all__ = ["BoardLink", "BoardError", "NoBoard", "TransportExecError"]
