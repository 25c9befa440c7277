"""The USB console of an emulated kiosk: a pseudo-terminal the user opens
(with mpremote, kioskctl, screen, ...) in front of the MicroPython process.

The pty outlives the process: a soft reset, a watchdog reset or a power
cycle starts a new process behind the same pty, as a board's USB port stays
where it is. Between the two, the console does what a board's USB stack
and MicroPython's stdout do:

- output "\\n" becomes "\\r\\n" (a board's cooked stdout);
- a Ctrl-C typed while code runs (the firmware, or code sent to the REPL)
  becomes SIGINT, which the VM raises as KeyboardInterrupt in the main
  thread; the byte itself is consumed, as a board's interrupt character is.
  While the REPL waits for input, Ctrl-C is an ordinary byte. The process
  tells which is which with marker lines on stderr (see sim/emuboot.py);
- output nobody reads is dropped after a while, as a board's USB CDC drops
  what no host takes; nothing blocks the firmware's prints.

Every console shares one selector thread (Hub), so a fleet of kiosks costs
one thread, not three per kiosk.
"""

from __future__ import annotations

import os
import queue
import selectors
import signal
import subprocess
import termios
import threading
import time
import tty
from pathlib import Path
from typing import Callable

BUSY = b"@@kiosk:busy"
IDLE = b"@@kiosk:idle"
CTRL_C = 3
_STALE_S = 1.0           # undrained output older than this: nobody is reading
_MAX_PENDING = 1 << 20   # output kept for a slow reader, at most
_INTR_GAP_S = 1.0        # one SIGINT per gap, so a second Ctrl-C cannot cut the safe stop short
# tgkill(2) by machine: a signal for one thread of another process.
_TGKILL = {"x86_64": 234, "aarch64": 131, "armv7l": 268, "i686": 270, "riscv64": 131}


def _interrupt_main_thread(pid: int) -> None:
    """SIGINT to the VM's main thread, as a board's USB stack raises the
    interrupt there. A process-wide signal may land in any thread, and this
    VM raises KeyboardInterrupt in whichever took it (the simulated world's
    control thread, even a collector with the heap locked). The main
    thread's id is the process id."""
    import ctypes
    import platform

    nr = _TGKILL.get(platform.machine())
    if nr is not None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syscall(nr, pid, pid, signal.SIGINT) == 0:
            return
        if ctypes.get_errno() == 3:   # ESRCH
            raise ProcessLookupError(pid)
    os.kill(pid, signal.SIGINT)
_LOG_MAX = 1 << 20       # console.log rotates to console.log.1 past this


class Hub:
    """One thread multiplexing every console's file descriptors."""

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self.sel.register(self._r, selectors.EVENT_READ, None)
        self._stop = False
        self.thread = threading.Thread(target=self._loop, name="console-hub", daemon=True)
        self.thread.start()

    def call(self, fn: Callable[[], None]) -> None:
        """Run fn in the hub thread (selector state is touched only there)."""
        self.calls.put(fn)
        try:
            os.write(self._w, b"x")
        except BlockingIOError:
            pass

    def _loop(self) -> None:
        while not self._stop:
            for key, mask in self.sel.select(timeout=0.25):
                if key.data is None:
                    try:
                        os.read(self._r, 4096)
                    except BlockingIOError:
                        pass
                    continue
                try:
                    key.data(mask)
                except Exception as e:  # one console's trouble must not stop the others
                    print(f"console hub: {e!r}", flush=True)
            while True:
                try:
                    fn = self.calls.get_nowait()
                except queue.Empty:
                    break
                fn()
            for c in list(_consoles):
                c._tick()

    def close(self) -> None:
        self._stop = True
        self.call(lambda: None)
        self.thread.join(5)


_consoles: list["Console"] = []


class Console:
    """A pty pair plus the proxy to whichever process is the board now."""

    def __init__(self, hub: Hub, link: Path | None = None, log: Path | None = None):
        self.hub = hub
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)           # no echo, no line editing by the kernel
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.link = link
        if link is not None:
            try:
                link.unlink()
            except FileNotFoundError:
                pass
            link.symlink_to(self.path)
        self.log_path = log
        self.log = open(log, "ab") if log else None
        self.proc: subprocess.Popen | None = None
        self.mode = "off"                # off, boot, busy, idle
        self.pending_intr = False
        self.intr_at = 0.0
        self.interrupts = 0              # SIGINTs sent, for tests and status
        self._to_proc = bytearray()
        self._stdin_reg = False
        self._to_user = bytearray()
        self._user_since = 0.0
        self._cr = False
        self._err = b""
        self._on_exit: Callable[[], None] | None = None
        self._idle = threading.Condition()
        self.closed = False
        hub.call(self._register_master)

    # -- life cycle (any thread) ---------------------------------------------
    def attach(self, proc: subprocess.Popen, on_exit: Callable[[], None]) -> None:
        """Put a freshly started process (stdin/stdout/stderr pipes) behind the pty."""
        for f in (proc.stdin, proc.stdout, proc.stderr):
            os.set_blocking(f.fileno(), False)
        done = threading.Event()

        def go() -> None:
            self.proc = proc
            self.mode = "boot"
            self.pending_intr = False
            self._to_proc.clear()
            self._stdin_reg = False
            self._err = b""
            self._on_exit = on_exit
            self.hub.sel.register(proc.stdout.fileno(), selectors.EVENT_READ, lambda m: self._from_stdout(proc))
            self.hub.sel.register(proc.stderr.fileno(), selectors.EVENT_READ, lambda m: self._from_stderr(proc))
            done.set()

        self.hub.call(go)
        done.wait(5)

    def wait_idle(self, timeout: float) -> bool:
        """True once the REPL waits for input (the firmware has stopped)."""
        end = time.monotonic() + timeout
        with self._idle:
            while self.mode != "idle":
                left = end - time.monotonic()
                if left <= 0 or self.mode == "off":
                    return False
                self._idle.wait(left)
        return True

    def interrupt(self) -> None:
        """Ctrl-C as the user would type it."""
        self.hub.call(lambda: self._from_user(bytes([CTRL_C])))

    def close(self) -> None:
        def go() -> None:
            try:
                self.hub.sel.unregister(self.master)
            except (KeyError, ValueError):
                pass
            self._detach()
            os.close(self.master)
            os.close(self.slave)
            if self.log:
                self.log.close()
            if self in _consoles:
                _consoles.remove(self)
        self.closed = True
        self.hub.call(go)
        if self.link is not None and self.link.is_symlink():
            self.link.unlink()

    # -- hub thread ----------------------------------------------------------
    def _register_master(self) -> None:
        self.hub.sel.register(self.master, selectors.EVENT_READ, self._on_master)
        _consoles.append(self)

    def _set_mode(self, mode: str) -> None:
        with self._idle:
            self.mode = mode
            self._idle.notify_all()

    def _on_master(self, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            try:
                data = os.read(self.master, 4096)
            except (BlockingIOError, OSError):
                data = b""
            if data:
                self._from_user(data)
        if mask & selectors.EVENT_WRITE:
            self._flush_user()

    def _from_user(self, data: bytes) -> None:
        if self.proc is None or self.mode == "off":
            return  # no board powered: the bytes go nowhere
        if CTRL_C in data and self.mode in ("busy", "boot"):
            data = data.replace(bytes([CTRL_C]), b"")
            if self.mode == "boot":
                self.pending_intr = True
            else:
                self._sigint()
        if data:
            self._to_proc += data
            self._flush_proc()

    def _sigint(self) -> None:
        now = time.monotonic()
        if now - self.intr_at < _INTR_GAP_S or self.proc is None:
            return
        self.intr_at = now
        self.interrupts += 1
        try:
            _interrupt_main_thread(self.proc.pid)
        except ProcessLookupError:
            pass

    def _flush_proc(self) -> None:
        p = self.proc
        if p is None or p.stdin is None:
            return
        fd = p.stdin.fileno()
        while self._to_proc:
            try:
                n = os.write(fd, self._to_proc)
            except BlockingIOError:
                break
            except OSError:  # the process is gone
                self._to_proc.clear()
                return
            del self._to_proc[:n]
        want = bool(self._to_proc)
        if want != self._stdin_reg:
            if want:
                self.hub.sel.register(fd, selectors.EVENT_WRITE, lambda m: self._flush_proc())
            else:
                self.hub.sel.unregister(fd)
            self._stdin_reg = want

    def _from_stdout(self, proc: subprocess.Popen) -> None:
        if proc is not self.proc:
            return
        try:
            data = os.read(proc.stdout.fileno(), 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._detach()
            return
        self._to_board_user(data)

    def _from_stderr(self, proc: subprocess.Popen) -> None:
        if proc is not self.proc:
            return
        try:
            data = os.read(proc.stderr.fileno(), 65536)
        except (BlockingIOError, OSError):
            return
        if not data:
            try:
                self.hub.sel.unregister(proc.stderr.fileno())
            except (KeyError, ValueError):
                pass
            return
        self._err += data
        out = bytearray()
        while b"\n" in self._err:
            line, self._err = self._err.split(b"\n", 1)
            if line == BUSY:
                self._set_mode("busy")
                self.intr_at = 0.0
                if self.pending_intr:
                    self.pending_intr = False
                    self._sigint()
            elif line == IDLE:
                self.pending_intr = False
                self._set_mode("idle")
            else:
                out += line + b"\n"
        if out:
            self._to_board_user(bytes(out))

    def _to_board_user(self, data: bytes) -> None:
        """Cook (lone \\n -> \\r\\n), log, and send to whoever has the pty open."""
        cooked = _cook(data, self._cr)
        self._cr = data.endswith(b"\r")
        if self.log:
            self._write_log(cooked)
        if not self._to_user:
            self._user_since = time.monotonic()
        self._to_user += cooked
        if len(self._to_user) > _MAX_PENDING:
            del self._to_user[: len(self._to_user) - _MAX_PENDING]
        self._flush_user()

    def _write_log(self, data: bytes) -> None:
        try:
            self.log.write(data)
            self.log.flush()
            if self.log.tell() > _LOG_MAX:
                self.log.close()
                os.replace(self.log_path, str(self.log_path) + ".1")
                self.log = open(self.log_path, "ab")
        except OSError:
            pass

    def _flush_user(self) -> None:
        while self._to_user:
            try:
                n = os.write(self.master, self._to_user)
            except BlockingIOError:
                break
            except OSError:
                self._to_user.clear()
                break
            del self._to_user[:n]
            self._user_since = time.monotonic()
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._to_user else 0)
        try:
            self.hub.sel.modify(self.master, events, self._on_master)
        except (KeyError, ValueError):
            pass

    def _tick(self) -> None:
        """Output nobody has taken for a while: drop it, and what the pty holds."""
        if self._to_user and time.monotonic() - self._user_since > _STALE_S:
            try:
                termios.tcflush(self.slave, termios.TCIFLUSH)
            except termios.error:
                pass
            self._user_since = time.monotonic()
            self._flush_user()
            if self._to_user and time.monotonic() - self._user_since > _STALE_S:
                self._to_user.clear()

    def _detach(self) -> None:
        p = self.proc
        if p is None:
            return
        for f in (p.stdout, p.stderr, p.stdin):
            try:
                self.hub.sel.unregister(f.fileno())
            except (KeyError, ValueError, OSError):
                pass
            try:
                f.close()
            except OSError:
                pass
        self.proc = None
        self._set_mode("off")
        cb, self._on_exit = self._on_exit, None
        if cb:
            threading.Thread(target=cb, name="kiosk-exit", daemon=True).start()


def _cook(data: bytes, after_cr: bool) -> bytes:
    """Each "\\n" not already preceded by "\\r" becomes "\\r\\n"."""
    if b"\n" not in data:
        return data
    out = bytearray()
    prev_cr = after_cr
    start = 0
    i = data.find(b"\n")
    while i >= 0:
        seg = data[start:i]
        out += seg
        cr = seg.endswith(b"\r") if seg else prev_cr
        out += b"\n" if cr else b"\r\n"
        prev_cr = False
        start = i + 1
        i = data.find(b"\n", start)
    out += data[start:]
    return bytes(out)
