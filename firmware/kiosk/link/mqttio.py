# MQTT framing for the link without ever blocking. umqtt.simple encodes
# every packet (CONNECT with will and credentials, PUBLISH, SUBSCRIBE,
# PINGREQ, the PUBACK for a received message), but it reads replies by
# blocking on its socket. Here it gets an in-memory socket instead: writes
# land in a tx buffer the link pumps to the network, and reads are served
# from an rx buffer the link fills. Methods that would then wait for a reply
# (connect, publish QoS 1, subscribe) are cut off at their first read with a
# private exception; CONNACK, PUBACK and SUBACK are parsed here. umqtt's
# wait_msg() only ever runs when a whole PUBLISH is already buffered.
# Works with umqtt.simple 1.3.4 (pinned in mpylibs.lock) and with
# micropython-lib's current release that board images freeze (its connect()
# also closes an earlier socket and calls settimeout() on the new one).
from umqtt import simple


# What Wire.next() found.
NOTHING = 0
CONNACK = 1  # arg: return code
PUBACK = 2  # arg: packet id
SUBACK = 3  # arg: granted QoS (0x80: refused)
PINGRESP = 4
MESSAGE = 5  # handed to the callback (arg: None)
OVERSIZED = 6  # arg: its topic; skipped, not buffered; PUBACK queued


class Bad(Exception):
    """The broker sent something that is not MQTT 3.1.1 as we speak it."""


class Need(Exception):
    """umqtt asked to read what is not buffered (or is not its to read)."""


class Full(Exception):
    """A write would overflow the tx buffer; callers check room() first."""


class MemSock:
    """The socket umqtt sees."""

    def __init__(self, rx_size, tx_size):
        self.rx = bytearray(rx_size)
        self.rxmv = memoryview(self.rx)
        self.rp = 0  # unread data is rx[rp:rn]
        self.rn = 0
        self._base = bytearray(tx_size)
        self.tx = self._base
        self.txmv = memoryview(self.tx)
        self.tn = 0  # pending output is tx[:tn]
        self.capture = False

    # -- umqtt's side -----------------------------------------------------
    def read(self, n):
        if self.capture or self.rn - self.rp < n:
            raise Need()
        p = self.rp
        self.rp = p + n
        return bytes(self.rxmv[p:p + n])

    def write(self, buf, n=None):
        if n is None:
            n = len(buf)
        t = self.tn
        if t + n > len(self.tx):
            raise Full()
        self.tx[t:t + n] = buf if n == len(buf) else memoryview(buf)[:n]
        self.tn = t + n
        return n

    def connect(self, addr):
        pass

    def setblocking(self, flag):
        pass

    def settimeout(self, t):
        pass

    def close(self):
        pass

    # -- the link's side -----------------------------------------------------
    def reset(self):
        self.rp = self.rn = self.tn = 0
        self.tx = self._base
        self.txmv = memoryview(self.tx)

    def room(self):
        return len(self.tx) - self.tn

    def reserve(self, n):
        """True when n bytes fit now. A packet larger than the whole buffer
        gets a one-off buffer once the normal one has drained."""
        if len(self.tx) - self.tn >= n:
            return True
        if self.tn == 0 and n > len(self._base):
            self.tx = bytearray(n)
            self.txmv = memoryview(self.tx)
            return True
        return False

    def sent(self, n):
        """n bytes of tx went out: keep the rest at the front."""
        left = self.tn - n
        if left > 0:
            self.tx[0:left] = self.txmv[n:self.tn]
        self.tn = left
        if left == 0 and self.tx is not self._base:
            self.tx = self._base
            self.txmv = memoryview(self.tx)

    def compact(self):
        p = self.rp
        if p:
            n = self.rn - p
            if n:
                self.rx[0:n] = self.rxmv[p:self.rn]
            self.rp = 0
            self.rn = n

    def frame(self):
        """(first byte, total length, header length) of the packet at the
        read position, or None while its fixed header is incomplete."""
        p = self.rp
        avail = self.rn - p
        if avail < 2:
            return None
        rx = self.rx
        n = 0
        sh = 0
        i = 1
        while True:
            if i >= avail:
                return None
            b = rx[p + i]
            n |= (b & 0x7F) << sh
            i += 1
            if not b & 0x80:
                break
            sh += 7
            if i > 4:
                raise ValueError("bad length")
        return rx[p], i + n, i


class _Net:
    """Stands in for umqtt's socket module during connect()."""

    def __init__(self, ms):
        self._ms = ms

    def socket(self, *a):
        return self._ms

    def getaddrinfo(self, *a):
        return [(0, 0, 0, "", ("", 0))]


class Wire:
    """umqtt as an encoder/decoder over a MemSock."""

    def __init__(self, client_id, keepalive_s, user=None, password=None,
                 rx_size=1536, tx_size=2048):
        self.sock = MemSock(rx_size, tx_size)
        if isinstance(user, str):  # lengths on the wire are in bytes
            user = user.encode()
        if isinstance(password, str):
            password = password.encode()
        if user is not None and password is None:
            password = b""
        self.c = simple.MQTTClient(client_id, "mem", 1, user, password, keepalive_s)
        self.c.sock = self.sock
        self._net = _Net(self.sock)
        self.skip = 0  # bytes of an oversized packet still to discard
        self.arg = None
        self.retained = False  # the PUBLISH being handled came from the broker's retained store

    def set_callback(self, cb):
        self.c.set_callback(cb)

    def _cut(self, fn, *args):
        s = self.sock
        s.capture = True
        try:
            fn(*args)
        except Need:
            pass
        finally:
            s.capture = False

    def connect(self, will_topic, will_msg, clean=True):
        """Start a session: CONNECT (with a retained QoS 1 will) into tx."""
        self.sock.reset()
        self.skip = 0
        self.c.set_last_will(will_topic, will_msg, True, 1)
        real = simple.socket
        simple.socket = self._net
        try:
            self._cut(self.c.connect, clean)
        finally:
            simple.socket = real
            self.c.sock = self.sock

    def publish(self, topic, msg, pid=0, qos=0, retain=False):
        """PUBLISH into tx; pid is used for QoS 1. Check room first."""
        self.c.pid = pid - 1
        self._cut(self.c.publish, topic, msg, retain, qos)

    def subscribe(self, topic, qos, pid):
        self.c.pid = pid - 1
        self._cut(self.c.subscribe, topic, qos)

    def ping(self):
        self.c.ping()

    def disconnect(self):
        self.sock.write(b"\xe0\0")

    def next(self):
        """Handle the next complete packet in rx, if any: returns what it
        was (NOTHING while none is complete) with details in self.arg.
        A PUBLISH goes to umqtt's wait_msg(), which calls the callback and
        queues the PUBACK; one too big for rx is skipped as it arrives."""
        ms = self.sock
        if self.skip:
            k = min(self.skip, ms.rn - ms.rp)
            ms.rp += k
            self.skip -= k
            if self.skip:
                return NOTHING
        try:
            f = ms.frame()
        except ValueError:
            raise Bad("bad_length")
        if f is None:
            return NOTHING
        typ, total, hl = f
        p = ms.rp
        kind = typ & 0xF0
        if kind == 0x30:
            self.retained = typ & 1 == 1
            if total > len(ms.rx):
                return self._oversized(typ, total, hl)
            if ms.rn - p < total or ms.room() < 4:
                return NOTHING
            try:
                self.c.wait_msg()
            except Need:  # its inner lengths disagree with its frame
                raise Bad("bad_publish")
            ms.rp = p + total
            return MESSAGE
        if total > 8:
            raise Bad("bad_packet")
        if ms.rn - p < total:
            return NOTHING
        rx = ms.rx
        ms.rp = p + total
        if kind == 0x20:
            self.arg = rx[p + 3]
            return CONNACK
        if kind == 0x40:
            self.arg = rx[p + 2] << 8 | rx[p + 3]
            return PUBACK
        if kind == 0x90:
            self.arg = rx[p + total - 1]
            return SUBACK
        if kind == 0xD0:
            return PINGRESP
        raise Bad("unexpected_packet")

    def _oversized(self, typ, total, hl):
        ms = self.sock
        p = ms.rp
        rx = ms.rx
        avail = ms.rn - p
        if avail < hl + 2 or ms.room() < 4:
            return NOTHING
        tl = rx[p + hl] << 8 | rx[p + hl + 1]
        need = hl + 2 + tl + (2 if typ & 6 else 0)
        if need > len(rx):
            raise Bad("bad_publish")
        if avail < need:
            return NOTHING
        self.arg = bytes(ms.rxmv[p + hl + 2:p + hl + 2 + tl])
        if typ & 6:  # QoS 1: acknowledge it, or the broker keeps it for us
            ms.write(b"\x40\x02")
            ms.write(ms.rxmv[p + need - 2:p + need])
        self.skip = total
        return OVERSIZED


def pub_size(topic, msg):
    """Bytes a QoS 1 PUBLISH of msg on topic takes."""
    return len(topic) + len(msg) + 9
