# The emulator's `socket`: found on sys.path before the built-in one (which
# stays reachable as `usocket`), so the firmware imports `socket` exactly as
# on a board. Errors carry the port's errno numbering (port.py): newlib's on
# the ESP32.
#
# Under it runs the simulated network of the world (simworld: the "network"
# command), so a link meets every kind of bad network without leaving
# loopback:
#   up false      Wi-Fi down: new connections fail (EHOSTUNREACH) and every
#                 socket open at the time is broken for good (ECONNRESET),
#                 as a Wi-Fi drop breaks a board's TCP connections;
#   route refused the broker's host answers with a reset: a connect fails
#                 (ECONNREFUSED, reported when it completes) and open
#                 connections are reset;
#   route blackhole  packets vanish: a connect is never answered, and an open
#                 connection freezes (what is written waits, nothing
#                 arrives) until the route comes back, as TCP retransmits;
#   rtt_ms N      every byte takes N/2 ms each way and a connect takes N ms.
from usocket import *  # noqa: F401,F403 (constants, getaddrinfo)
import io
import select
import utime as time
import usocket as _u
import port
import simworld

_ECONNRESET = 104      # Linux numbers; _oserror() turns them into the port's
_EHOSTUNREACH = 113
_ECONNREFUSED = 111
_EINPROGRESS = 115
_ETIMEDOUT = 110
_POLL = 3              # stream ioctl requests (py/stream.h)
_CLOSE = 4
_RD = 0x0001           # MP_STREAM_POLL_RD, WR, ERR, HUP
_WR = 0x0004
_ERR = 0x0008
_HUP = 0x0010
_HELD_MAX = 65536      # bytes a frozen connection takes before writes would block


def _oserror(e):
    """e with this port's number for its errno."""
    if port.NAME == "esp32" and e.args and isinstance(e.args[0], int):
        return OSError(port.errno_of(e.args[0]))
    return e


def _fail(linux_errno):
    raise _oserror(OSError(linux_errno))


class socket(io.IOBase):
    def __init__(self, af=AF_INET, kind=SOCK_STREAM, proto=0):  # noqa: F405
        self._s = _u.socket(af, kind, proto)
        w = simworld.world()
        self._drops = w.network_drops
        self._blocking = True
        self._refused = False      # the connect met a reset
        self._pending = False      # a connect that the route never answers
        self._ready_us = 0         # a slow route's handshake completes then
        self._shaking = False
        self._slow = False
        self._out = []             # [(due ticks_us, bytes)] on a slow or frozen route
        self._in = []
        self._inpos = 0
        self._poll = select.poll()
        self._poll.register(self._s, select.POLLIN | select.POLLOUT)

    # -- the world's network ------------------------------------------------
    def _check(self):
        """Raise what the network does to an open connection now."""
        w = simworld.world()
        if not w.network_up or w.network_drops != self._drops:
            _fail(_ECONNRESET)
        if self._refused or (w.route == "refused" and not self._pending):
            self._refused = True
            _fail(_ECONNRESET)

    def _ready(self):
        """What the real socket can do now: (readable, writable, error)."""
        rd = wr = er = False
        for _, ev in self._poll.ipoll(0):
            rd = bool(ev & select.POLLIN)
            wr = bool(ev & select.POLLOUT)
            er = bool(ev & (select.POLLERR | select.POLLHUP))
        return rd, wr, er

    def _pump(self):
        """Move what a slow or frozen route let through by now."""
        w = simworld.world()
        self._slow = w.rtt_ms > 0
        if w.route == "blackhole" or (not self._slow and not self._out and not self._in):
            return
        now = time.ticks_us()
        while self._out and time.ticks_diff(now, self._out[0][0]) >= 0:
            data = self._out[0][1]
            try:
                n = self._s.write(data)
            except OSError:
                n = None
            if not n:
                break
            if n < len(data):
                self._out[0] = (self._out[0][0], data[n:])
                break
            self._out.pop(0)
        if self._slow:
            rd, _, _ = self._ready()
            if rd:
                try:
                    data = self._s.read(4096)
                except OSError:
                    data = None
                if data:
                    self._in.append((time.ticks_add(now, w.rtt_ms * 500), data))

    def _delay_us(self):
        w = simworld.world()
        return w.rtt_ms * 500 if w.route != "blackhole" else 0

    # -- the socket API ---------------------------------------------------------
    def connect(self, addr):
        w = simworld.world()
        if not w.network_up:
            _fail(_EHOSTUNREACH)
        self._drops = w.network_drops
        self._slow = w.rtt_ms > 0
        self._ready_us = time.ticks_add(time.ticks_us(), w.rtt_ms * 1000)
        self._shaking = w.rtt_ms > 0
        if w.route == "refused":
            self._refused = True
            _fail(_EINPROGRESS if not self._blocking else _ECONNREFUSED)
        if w.route == "blackhole":
            self._pending = True
            _fail(_EINPROGRESS if not self._blocking else _ETIMEDOUT)
        try:
            return self._s.connect(addr)
        except OSError as e:
            raise _oserror(e)

    def readinto(self, buf, n=None):
        self._check()
        w = simworld.world()
        if self._pending or w.route == "blackhole":
            return None
        self._pump()
        if self._slow or self._in:
            return self._from_in(buf, n)
        try:
            return self._s.readinto(buf) if n is None else self._s.readinto(buf, n)
        except OSError as e:
            raise _oserror(e)

    def _from_in(self, buf, n):
        """Bytes of the slow route's inbound queue that have arrived."""
        want = len(buf) if n is None else min(n, len(buf))
        got = 0
        now = time.ticks_us()
        while got < want and self._in and time.ticks_diff(now, self._in[0][0]) >= 0:
            data = self._in[0][1]
            k = min(want - got, len(data) - self._inpos)
            buf[got:got + k] = data[self._inpos:self._inpos + k]
            got += k
            self._inpos += k
            if self._inpos >= len(data):
                self._in.pop(0)
                self._inpos = 0
        return got if got else None

    def read(self, n=-1):
        buf = bytearray(n if n >= 0 else 4096)
        got = self.readinto(buf)
        return None if got is None else bytes(buf[:got])

    def recv(self, n):
        got = self.read(n)
        if got is None:
            _fail(11)   # EAGAIN
        return got

    def write(self, buf, n=None):
        self._check()
        data = buf if n is None else memoryview(buf)[:n]
        w = simworld.world()
        if self._pending:
            return None
        if w.route == "blackhole" or w.rtt_ms or self._out:
            held = 0
            for _, d in self._out:
                held += len(d)
            if held >= _HELD_MAX:
                return None
            self._out.append((time.ticks_add(time.ticks_us(), self._delay_us()), bytes(data)))
            self._pump()
            return len(data)
        try:
            return self._s.write(data)
        except OSError as e:
            raise _oserror(e)

    def send(self, buf):
        n = self.write(buf)
        if n is None:
            _fail(11)
        return n

    def setblocking(self, flag):
        self._blocking = bool(flag)
        self._s.setblocking(flag)

    def settimeout(self, t):
        self._blocking = t is None or t > 0
        self._s.settimeout(t)

    def setsockopt(self, *args):
        self._s.setsockopt(*args)

    def bind(self, addr):
        self._s.bind(addr)

    def listen(self, n=5):
        self._s.listen(n)

    def fileno(self):
        return self._s.fileno()

    def close(self):
        try:
            self._poll.unregister(self._s)
        except (OSError, KeyError, ValueError):
            pass
        self._s.close()

    def ioctl(self, req, arg):
        """Stream requests from native code (select.poll, ssl). No file
        number for select: it must ask this object, which knows the route."""
        if req == _CLOSE:
            self.close()
            return 0
        if req == _POLL:
            return self._poll_flags(arg)
        return -1

    def _poll_flags(self, want):
        w = simworld.world()
        if not w.network_up or w.network_drops != self._drops or self._refused \
                or (w.route == "refused" and not self._pending):
            return want & (_RD | _WR) | _ERR | _HUP
        if self._pending or w.route == "blackhole":
            return 0
        if self._shaking:
            if time.ticks_diff(time.ticks_us(), self._ready_us) < 0:
                return 0    # the slow route's handshake is still on its way
            self._shaking = False
        self._pump()
        rd, wr, er = self._ready()
        if er:
            return want & (_RD | _WR) | _ERR | _HUP
        out = 0
        if w.rtt_ms or self._in:
            if self._in and time.ticks_diff(time.ticks_us(), self._in[0][0]) >= 0:
                out |= _RD
        elif rd:
            out |= _RD
        if wr:
            out |= _WR
        return out & (want | _ERR | _HUP)
