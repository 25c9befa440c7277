# The emulator's `socket`: found on sys.path before the built-in one (which
# stays reachable as `usocket`), so the firmware imports `socket` exactly as
# on a board. Sockets work normally while the simulated world's network is
# up; when it goes down (World.handle({"op": "network", "up": False})) new
# connections fail and every socket open at the time is broken for good, as
# a Wi-Fi drop breaks a board's TCP connections. Errors carry the port's
# errno numbering (port.py): newlib's on the ESP32.
from usocket import *  # noqa: F401,F403 (constants, getaddrinfo)
import io
import usocket as _u
import port
import simworld

_ECONNRESET = 104
_EHOSTUNREACH = 113


def _oserror(e):
    """e with this port's number for its errno."""
    if port.NAME == "esp32" and e.args and isinstance(e.args[0], int):
        return OSError(port.errno_of(e.args[0]))
    return e
_POLL = 3  # stream ioctl requests (py/stream.h)
_CLOSE = 4
_FILENO = 10


class socket(io.IOBase):
    def __init__(self, af=AF_INET, kind=SOCK_STREAM, proto=0):  # noqa: F405
        self._s = _u.socket(af, kind, proto)
        self._drops = simworld.world().network_drops

    def _ok(self):
        w = simworld.world()
        if not w.network_up or w.network_drops != self._drops:
            raise _oserror(OSError(_ECONNRESET))

    def connect(self, addr):
        w = simworld.world()
        if not w.network_up:
            raise _oserror(OSError(_EHOSTUNREACH))
        self._drops = w.network_drops
        try:
            return self._s.connect(addr)
        except OSError as e:
            raise _oserror(e)

    def readinto(self, buf, n=None):
        self._ok()
        try:
            return self._s.readinto(buf) if n is None else self._s.readinto(buf, n)
        except OSError as e:
            raise _oserror(e)

    def read(self, n=-1):
        self._ok()
        try:
            return self._s.read(n) if n >= 0 else self._s.read()
        except OSError as e:
            raise _oserror(e)

    def recv(self, n):
        self._ok()
        try:
            return self._s.recv(n)
        except OSError as e:
            raise _oserror(e)

    def write(self, buf, n=None):
        self._ok()
        try:
            return self._s.write(buf) if n is None else self._s.write(buf, n)
        except OSError as e:
            raise _oserror(e)

    def send(self, buf):
        self._ok()
        try:
            return self._s.send(buf)
        except OSError as e:
            raise _oserror(e)

    def setblocking(self, flag):
        self._s.setblocking(flag)

    def settimeout(self, t):
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
        self._s.close()

    def ioctl(self, req, arg):
        """Stream requests from native code (select.poll, ssl)."""
        if req == _FILENO:
            return self._s.fileno()
        if req == _CLOSE:
            self._s.close()
            return 0
        if req == _POLL:
            import select
            p = select.poll()
            p.register(self._s, arg)
            r = p.poll(0)
            return r[0][1] if r else 0
        return -1
