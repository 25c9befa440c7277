# The link's socket: TCP (optionally TLS) opened and used without ever
# waiting. connect() returns at once (EINPROGRESS) and completion is polled
# with a zero timeout; reads and writes move what the socket can take now.
#
# Error numbers are the port's: the unix and rp2 ports use Linux's, the
# ESP32 newlib's (EINPROGRESS 119 there, and 115 is ENETDOWN). So they come
# from `errno` at run time, never as numbers, and never as `errno.X`
# attributes either: the compiler folds those into the build host's values.
import select
import socket
from errno import EAGAIN, EINPROGRESS, ECONNREFUSED


def der(cert):
    """A certificate as DER: some ports' TLS cannot parse PEM, so the
    first PEM block is decoded here; DER passes through."""
    if cert[:10] != b"-----BEGIN":
        return cert
    import binascii
    lines = cert.split(b"\n")
    b64 = []
    for ln in lines[1:]:
        if ln.startswith(b"-----END"):
            break
        b64.append(ln.strip())
    return binascii.a2b_base64(b"".join(b64))


def _is_ip(host):
    """A literal IPv4 or IPv6 address: nothing for DNS to look up."""
    if ":" in host:
        return True
    parts = host.split(".")
    if len(parts) != 4:
        return False
    for p in parts:
        if not p or not p.isdigit() or int(p) > 255:
            return False
    return True


class Closed(Exception):
    """The other end closed the connection."""


class Conn:
    def __init__(self, host, port, tls=False, ca=None):
        self.host = host
        self.port = port
        self.tls = tls
        self.ca = ca
        self.sock = None
        self._poll = None
        self._addr = None

    def open(self):
        """Start connecting. DNS is the one call that may block on a board
        (the whole VM waits in C: seconds with an unreachable DNS server),
        so the answer is kept (forget() drops it); a literal IP address is
        never looked up again."""
        if self._addr is None:
            self._addr = socket.getaddrinfo(self.host, self.port)[0][-1]
        s = socket.socket()
        self.sock = s
        try:
            s.setsockopt(6, 1, 1)  # TCP_NODELAY: each QoS 1 publish costs ~40 ms without
        except Exception:
            pass
        s.setblocking(False)
        try:
            s.connect(self._addr)
        except OSError as e:
            if e.args[0] != EINPROGRESS:
                raise
        self._poll = select.poll()
        self._poll.register(s, select.POLLOUT)

    def forget(self):
        """Look the broker's name up again at the next open() (it may have
        moved); an IP address stays."""
        if not _is_ip(self.host):
            self._addr = None

    def connected(self):
        """True once TCP is up (and TLS set going), False while connecting.
        Raises OSError if the connection failed."""
        if self._poll is None:
            return True
        ev = self._poll.poll(0)
        if not ev:
            return False
        self._poll = None
        if ev[0][1] & (select.POLLERR | select.POLLHUP):
            raise OSError(ECONNREFUSED)
        if self.tls:
            self.sock = self._wrap(self.sock)
        return True

    def _wrap(self, s):
        """TLS with the broker's CA; the handshake runs inside the first
        non-blocking reads and writes."""
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.ca:
            with open(self.ca, "rb") as f:
                ctx.load_verify_locations(cadata=der(f.read()))
            ctx.verify_mode = ssl.CERT_REQUIRED
        else:
            ctx.verify_mode = ssl.CERT_NONE
        return ctx.wrap_socket(s, server_hostname=self.host, do_handshake_on_connect=False)

    def send(self, mv):
        """Write what the socket takes now; returns the count (0 if none)."""
        try:
            n = self.sock.write(mv)
        except OSError as e:
            if e.args[0] == EAGAIN:
                return 0
            raise
        return n or 0

    def recv_into(self, mv):
        """Read what has arrived; returns the count (0 if none)."""
        try:
            n = self.sock.readinto(mv)
        except OSError as e:
            if e.args[0] == EAGAIN:
                return 0
            raise
        if n is None:
            return 0
        if n == 0:
            raise Closed("closed_by_broker")
        return n

    def close(self):
        s = self.sock
        self.sock = None
        self._poll = None
        if s:
            try:
                s.close()
            except Exception:
                pass
