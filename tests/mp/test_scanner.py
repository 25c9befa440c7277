# The code scanner and button drivers: lines as a GM65 sends them (CR or
# CR LF, in pieces), what is dropped whole (control bytes, bad UTF-8, too
# long, a fragment nobody finished), reading without waiting or allocating, and
# both on the simulated board through machine.UART and a pin.
import gc
import os
import time
from kiosk.hw import scanner as S
from kiosk.hw import button as B
gc.collect()
import simworld
from kiosk.hw import board


class FakeUart:
    """Bytes that arrived, handed out as a UART's any()/readinto() do."""

    def __init__(self):
        self.buf = bytearray()
        self.reads = 0

    def feed(self, data):
        self.buf.extend(data)

    def any(self):
        return len(self.buf)

    def readinto(self, dest, n):
        self.reads += 1
        n = min(n, len(self.buf))
        for i in range(n):
            dest[i] = self.buf[i]
        self.buf = self.buf[n:]
        return n or None


def _lines(sc, now=None):
    out = []
    while True:
        s = sc.poll(now)
        if s is None:
            return out
        out.append(s)


def test_lines_end_in_cr_or_crlf_and_arrive_in_pieces():
    u = FakeUart()
    sc = S.Scanner(u)
    assert sc.poll() is None and u.reads == 0   # nothing there: nothing read
    u.feed(b"K7Q2-M9")
    assert sc.poll() is None                    # half a code is not a code
    u.feed(b"XD\r")
    assert _lines(sc) == ["K7Q2-M9XD"]
    u.feed(b"RX-1\r\nRX-2\r\n\r\n\nRX-3\n")
    assert _lines(sc) == ["RX-1", "RX-2", "RX-3"]
    # More than one read's worth in one go: still one line each.
    code = "A" * 60
    u.feed((code + "\r") * 3)
    assert _lines(sc) == [code] * 3
    assert sc.lines == 7 and sc.rejected == 0


def test_unprintable_and_overlong_lines_are_dropped_whole():
    u = FakeUart()
    sc = S.Scanner(u)
    u.feed(b"GOOD\x00BAD\r")           # a NUL inside: the whole line goes
    u.feed(b"\xc3t\xc3\xa9\r")         # a broken UTF-8 sequence
    u.feed(b"\xc0\xafetc\r")           # an overlong form of "/"
    u.feed(b"\xed\xa0\x80x\r")         # a surrogate
    u.feed(b"B" * 65 + b"\r")          # one longer than an id can be
    u.feed(b"\x1b[2J\r")               # a control sequence
    u.feed(b"NEXT\r")
    assert _lines(sc) == ["NEXT"], "the line after a bad one reads clean"
    assert sc.rejected == 6 and sc.lines == 1
    u.feed(b"C" * 64 + b"\r")          # exactly the longest allowed
    assert _lines(sc) == ["C" * 64]
    # A label may carry an order id in any script, as UTF-8.
    order = "rx-\U0001F48A-\u00e9t\u00e9-\u836f"
    u.feed(order.encode() + b"\r")
    assert _lines(sc) == [order]
    u.feed(("\u836f" * 64).encode() + b"\r")   # 64 characters, 192 bytes
    assert _lines(sc) == ["\u836f" * 64]


def test_a_fragment_is_never_glued_to_the_next_code():
    u = FakeUart()
    sc = S.Scanner(u)
    t0 = time.ticks_ms()
    u.feed(b"K7Q2")                    # the scanner lost power mid-line
    assert sc.poll(t0) is None
    assert sc.poll(time.ticks_add(t0, 200)) is None   # still within the gap: may continue
    assert sc.poll(time.ticks_add(t0, 1000)) is None  # now it is a fragment
    u.feed(b"RX-9\r")
    assert _lines(sc, time.ticks_add(t0, 1000)) == ["RX-9"]
    assert sc.rejected == 1


def test_polling_does_not_allocate_until_a_line_completes():
    u = FakeUart()
    sc = S.Scanner(u)
    u.feed(b"X" * 30)    # a code coming in: read once, then nothing more
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in range(500):
        sc.poll()
    grew = gc.mem_alloc() - before
    gc.enable()
    assert grew <= 64, grew   # the fake's one read and slice, not the driver's
    assert sc.lines == 0


def _board():
    b = board.load(os.getenv("KIOSK_REPO") + "/boards/emulator.json")
    b["carousels"] = []
    b["sensors"] = []
    b["locks"] = []
    return b


def test_scanner_and_button_on_the_simulated_board():
    b = _board()
    w = simworld.install(b)
    sc = S.from_board(b)
    btns = B.from_board(b)
    assert list(btns) == ["call_pharmacist"]
    assert sc.poll() is None
    r = w.handle({"op": "scan", "text": "RX-20931"})
    assert r["sent"] == 9, r
    assert _lines(sc) == ["RX-20931"]
    w.handle({"op": "scan", "text": "AB", "end": "\r\n"})
    assert _lines(sc) == ["AB"]
    # The button: one press, however long the debounce sees it.
    bt = btns["call_pharmacist"]
    import _thread
    _thread.start_new_thread(w.handle, ({"op": "button", "name": "call_pharmacist", "ms": 200},))
    presses = 0
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < 600:
        if bt.update(time.ticks_ms()):
            presses += 1
        time.sleep_ms(10)
    assert presses == 1 and bt.presses == 1 and not bt.pressed()
    # An unplugged scanner sends nothing; a board without one has none.
    w.handle({"op": "fault", "kind": "scanner_unplugged"})
    assert w.handle({"op": "scan", "text": "RX-1"})["sent"] == 0
    assert _lines(sc) == []
    del b["scanner"]
    assert S.from_board(b) is None


def test_a_full_uart_buffer_loses_bytes_and_the_broken_line_is_dropped():
    b = _board()
    w = simworld.install(b)
    sc = S.from_board(b)    # its UART holds 256 bytes, as on a board
    for i in range(40):
        w.handle({"op": "scan", "text": "CODE-%04d" % i})
    assert w.state()["scanner"]["dropped"] > 0
    got = _lines(sc)
    assert got and len(got) < 40
    for g in got:
        assert len(g) == 9 and g.startswith("CODE-"), g   # never two codes run together
