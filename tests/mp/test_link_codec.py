# kiosk.link.mqttio: umqtt.simple driven over the in-memory socket. Every packet
# it encodes is compared byte for byte with MQTT 3.1.1 encoded by hand, and
# the incoming side is fed in pieces, as a socket delivers it.
from kiosk.link import mqttio
from kiosk.link.mqttio import Wire, MemSock


def _s(b):
    return bytes([len(b) >> 8, len(b) & 0xFF]) + b


def _tx(w):
    ms = w.sock
    out = bytes(ms.tx[:ms.tn])
    ms.sent(ms.tn)
    return out


def _feed(w, data):
    ms = w.sock
    ms.rx[ms.rn:ms.rn + len(data)] = data
    ms.rn += len(data)


def _wire(**kw):
    w = Wire(b"k1", 30, rx_size=kw.get("rx", 256), tx_size=kw.get("tx", 512),
             user=kw.get("user"), password=kw.get("password"))
    got = []
    w.set_callback(lambda t, m: got.append((t, m)))
    return w, got


def test_connect_bytes_with_will_and_credentials():
    w, _ = _wire(user=b"u", password=b"p")
    w.connect(b"kiosk/k1/state", b"bye")
    body = (_s(b"MQTT") + b"\x04" + bytes([0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02]) + b"\x00\x1e"
            + _s(b"k1") + _s(b"kiosk/k1/state") + _s(b"bye") + _s(b"u") + _s(b"p"))
    assert len(body) == 41
    assert _tx(w) == b"\x10" + bytes([len(body)]) + body


def test_connect_credentials_given_as_text_are_sent_as_utf8():
    w, _ = _wire(user="kiosk-\u00e9", password=None)
    w.connect(b"kiosk/k1/state", b"bye")
    body = (_s(b"MQTT") + b"\x04\xee\x00\x1e" + _s(b"k1") + _s(b"kiosk/k1/state") + _s(b"bye")
            + _s("kiosk-\u00e9".encode()) + _s(b""))
    assert _tx(w) == b"\x10" + bytes([len(body)]) + body


def test_connect_bytes_without_credentials():
    w, _ = _wire()
    w.connect(b"kiosk/k1/state", b"x" * 200)
    body = (_s(b"MQTT") + b"\x04\x2e\x00\x1e" + _s(b"k1") + _s(b"kiosk/k1/state") + _s(b"x" * 200))
    n = len(body)
    assert n > 127
    assert _tx(w) == b"\x10" + bytes([(n & 0x7F) | 0x80, n >> 7]) + body


def test_publish_bytes():
    w, _ = _wire()
    w.publish(b"kiosk/k1/evt", b'{"s":1}', 7, 1)
    assert _tx(w) == b"\x32" + bytes([2 + 12 + 2 + 7]) + _s(b"kiosk/k1/evt") + b"\x00\x07" + b'{"s":1}'
    w.publish(b"kiosk/k1/state", b"on", 65535, 1, True)
    assert _tx(w) == b"\x33" + bytes([2 + 14 + 2 + 2]) + _s(b"kiosk/k1/state") + b"\xff\xff" + b"on"
    w.publish(b"kiosk/k1/tele", b"t")
    assert _tx(w) == b"\x30" + bytes([2 + 13 + 1]) + _s(b"kiosk/k1/tele") + b"t"
    big = b"y" * 200
    w.publish(b"kiosk/k1/evt", big, 258, 1)
    n = 2 + 12 + 2 + 200
    assert _tx(w) == b"\x32" + bytes([(n & 0x7F) | 0x80, n >> 7]) + _s(b"kiosk/k1/evt") + b"\x01\x02" + big
    assert mqttio.pub_size(b"kiosk/k1/evt", big) >= n + 3


def test_subscribe_ping_disconnect_bytes():
    w, _ = _wire()
    w.subscribe(b"kiosk/k1/cmd", 1, 9)
    assert _tx(w) == b"\x82\x11\x00\x09" + _s(b"kiosk/k1/cmd") + b"\x01"
    w.ping()
    assert _tx(w) == b"\xc0\x00"
    w.disconnect()
    assert _tx(w) == b"\xe0\x00"


def test_capture_leaves_received_bytes_alone():
    w, got = _wire()
    half = b"\x30\x10" + _s(b"kiosk/k1/cmd")  # a PUBLISH still arriving
    _feed(w, half)
    w.publish(b"kiosk/k1/evt", b"e", 1, 1)
    w.subscribe(b"kiosk/k1/ack", 0, 2)
    assert w.sock.rp == 0 and w.sock.rn == len(half)
    assert w.next() == mqttio.NOTHING
    _feed(w, b"x" * 2)
    assert w.next() == mqttio.MESSAGE
    assert got == [(b"kiosk/k1/cmd", b"xx")]


def test_control_packets_parsed_byte_by_byte():
    w, _ = _wire()
    stream = b"\x20\x02\x00\x00" + b"\x40\x02\x01\x02" + b"\x90\x03\x00\x09\x01" + b"\xd0\x00" + b"\x20\x02\x00\x05"
    seen = []
    for i in range(len(stream)):
        _feed(w, stream[i:i + 1])
        k = w.next()
        if k != mqttio.NOTHING:
            seen.append((k, w.arg if k != mqttio.PINGRESP else None))
    assert seen == [(mqttio.CONNACK, 0), (mqttio.PUBACK, 0x102), (mqttio.SUBACK, 1),
                    (mqttio.PINGRESP, None), (mqttio.CONNACK, 5)]


def test_incoming_publish_qos1_is_delivered_and_acknowledged():
    w, got = _wire()
    pkt = b"\x32" + bytes([2 + 12 + 2 + 5]) + _s(b"kiosk/k1/cmd") + b"\x00\x05" + b"hello"
    _feed(w, pkt[:7])
    assert w.next() == mqttio.NOTHING and got == []
    _feed(w, pkt[7:] + b"\xd0\x00")
    assert w.next() == mqttio.MESSAGE
    assert got == [(b"kiosk/k1/cmd", b"hello")]
    assert _tx(w) == b"\x40\x02\x00\x05"
    assert w.next() == mqttio.PINGRESP


def test_oversized_publish_is_skipped_and_acknowledged():
    w, got = _wire(rx=64)
    body = _s(b"kiosk/k1/cmd") + b"\x00\x21" + b"z" * 300
    pkt = b"\x32" + bytes([(len(body) & 0x7F) | 0x80, len(body) >> 7]) + body
    pkt += b"\x40\x02\x00\x08"  # the next packet must still be read right
    kinds = []
    i = 0
    while i < len(pkt):
        ms = w.sock
        ms.compact()
        n = min(len(ms.rx) - ms.rn, 20, len(pkt) - i)
        _feed(w, pkt[i:i + n])
        i += n
        while True:
            k = w.next()
            if k == mqttio.NOTHING:
                break
            kinds.append((k, w.arg))
    assert kinds == [(mqttio.OVERSIZED, b"kiosk/k1/cmd"), (mqttio.PUBACK, 8)]
    assert got == []
    assert _tx(w) == b"\x40\x02\x00\x21"


def test_bad_length_and_unknown_packets_raise_bad():
    for junk in (b"\x30\xff\xff\xff\xff\x01", b"\x50\x02\x00\x01"):
        w, _ = _wire()
        _feed(w, junk)
        try:
            w.next()
            raise AssertionError("accepted %r" % junk)
        except mqttio.Bad:
            pass


def test_memsock_reserve_grows_only_when_empty():
    ms = MemSock(16, 32)
    assert ms.reserve(32) and len(ms.tx) == 32
    ms.write(b"abc")
    try:
        ms.write(b"w" * 30)
        raise AssertionError("wrote past the end")
    except mqttio.Full:
        pass
    assert not ms.reserve(100)
    ms.sent(3)
    assert ms.reserve(100) and len(ms.tx) == 100
    ms.write(b"q" * 100)
    ms.sent(60)
    assert ms.tn == 40 and bytes(ms.tx[:2]) == b"qq"
    ms.sent(40)
    assert len(ms.tx) == 32  # back to the buffer made at start


def test_connect_works_with_the_umqtt_the_ports_freeze():
    # The ESP32 port's image freezes micropython-lib's current umqtt.simple
    # (1.8.0), whose connect() closes an earlier socket and calls
    # sock.settimeout(timeout) on the new one before connecting; 1.3.4,
    # pinned for the emulator, does neither. The adapter must serve both.
    # This stand-in adds exactly those calls to the pinned client.
    from umqtt import simple
    pinned = simple.MQTTClient

    class Current(pinned):
        def connect(self, clean_session=True, timeout=None):
            if self.sock:
                self.sock.close()
            s = simple.socket.socket()
            s.settimeout(timeout)
            return pinned.connect(self, clean_session)

    simple.MQTTClient = Current
    try:
        w, _ = _wire(user=b"u", password=b"p")
        w.connect(b"kiosk/k1/state", b"bye")
        w.connect(b"kiosk/k1/state", b"bye")   # a reconnect closes the old socket first
    finally:
        simple.MQTTClient = pinned
    body = (_s(b"MQTT") + b"\x04" + bytes([0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02]) + b"\x00\x1e"
            + _s(b"k1") + _s(b"kiosk/k1/state") + _s(b"bye") + _s(b"u") + _s(b"p"))
    assert _tx(w) == b"\x10" + bytes([len(body)]) + body
