# Code scanner driver: a GM65/GM861-class barcode and QR reader on a UART
# (9600 8N1 out of the box), which sends each code it reads as one line of
# text ending in CR (or CR LF, as configured). poll() never blocks: it takes
# only what the UART already holds, a few bytes at a time, and hands back a
# line once it is complete. A line is printable text in UTF-8 (pickup codes
# are ASCII; a package label carries the pharmacy's order id, whatever its
# script); one with a control byte or bad UTF-8 in it, or longer than an
# id can be, is dropped whole and counted, never half-read. The UART comes
# from kiosk.hw.hal. Wiring: docs/hardware.md, "Code scanner".
import time
from micropython import const
from kiosk.text import clean

MAX_LEN = const(64)     # longest line kept, in characters (the contract's TEXT_MAX)
_MAX_BYTES = const(256) # ... and in UTF-8 bytes (4 per character at most)
_CHUNK = const(32)      # bytes taken from the UART per read
_GAP_MS = const(300)    # a line silent this long mid-way is a fragment: dropped


class Scanner:
    def __init__(self, uart, max_len=MAX_LEN):
        self._uart = uart
        self.max_len = max_len
        self._line = bytearray(min(max_len * 4, _MAX_BYTES))
        self._n = 0
        self._bad = False       # the line so far holds a byte no code has, or overflowed
        self._rx = bytearray(_CHUNK)
        self._rx_n = 0
        self._rx_i = 0
        self._last = time.ticks_ms()
        self.lines = 0          # complete codes handed out
        self.rejected = 0       # lines dropped: unprintable, too long or cut off

    def _reset(self):
        self._n = 0
        self._bad = False

    def poll(self, now=None):
        """The next complete line (str) or None. Allocation-free until a
        line completes."""
        if now is None:
            now = time.ticks_ms()
        if (self._n or self._bad) and self._rx_i >= self._rx_n \
                and time.ticks_diff(now, self._last) > _GAP_MS:
            self.rejected += 1      # a fragment nobody finished: never glued to the next code
            self._reset()
        while True:
            if self._rx_i >= self._rx_n:
                n = self._uart.any()
                if not n:
                    return None
                k = self._uart.readinto(self._rx, n if n < _CHUNK else _CHUNK)
                if not k:
                    return None
                self._rx_n = k
                self._rx_i = 0
                self._last = now
            c = self._rx[self._rx_i]
            self._rx_i += 1
            if c == 13 or c == 10:
                if self._bad:
                    self.rejected += 1
                    self._reset()
                elif self._n:
                    text = self._text()
                    self._reset()
                    if text is None:
                        self.rejected += 1
                    else:
                        self.lines += 1
                        return text
            elif (32 <= c <= 126 or 0x80 <= c <= 0xF4) and self._n < len(self._line):
                self._line[self._n] = c
                self._n += 1
            else:
                self._bad = True

    def _text(self):
        """The line as text, or None when it is not clean UTF-8 (see
        kiosk.text) or has too many characters."""
        try:
            return clean(self._line[:self._n].decode(), self.max_len)
        except UnicodeError:
            return None

    def state(self):
        return {"lines": self.lines, "rejected": self.rejected}


def from_board(board):
    """The board's scanner, or None when it has none."""
    cfg = board.get("scanner")
    if not cfg:
        return None
    from kiosk.hw import hal
    return Scanner(hal.uart(cfg))
