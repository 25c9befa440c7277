# ESP32 step timing: the RMT peripheral times the pulses (80 MHz source,
# divided to 1 us ticks) while Python plans the ramp (kiosk.hw.ramp) in
# chunks. MicroPython's write_pulses() (ports/esp32/esp32_rmt.c) first waits,
# with the VM held, for the transmission before it to end, then converts
# and starts the new one: so a move goes out as a run of chunks, each
# written just before the one playing ends, and the gap at each boundary is
# that call's own time (measured in the emulator; a bench measures it on
# the chip). A chunk is at most what the channel's memory holds, so no
# refill interrupt is needed while it plays: a flash operation, which holds
# interrupts off, cannot garble it. The CPU must still be there at every
# chunk boundary: the motion quiet window (kiosk.core.controller) keeps
# the kiosk's own flash writes and sensor rounds out of a move.
#
# The chunk in play started when write_pulses() returned and its steps are
# at known offsets from then, so steps_done is worked out from the clock.
# The home switch's IRQ is scheduled on this port (no hard pin IRQs): it
# runs a little late, and `lag` allows for that.
import asyncio
import time
import esp32
from array import array
from machine import Pin
from micropython import const
from kiosk.hw.pins import parse_pin

_SYMBOLS = const(96)      # channel memory: two 48-symbol blocks (the S3's 192 serve two carousels)
_CHUNK = const(96)        # steps per write_pulses(): one symbol each, all in the memory
_PULSE = const(5)         # step pulse, us high
_MAX_TICKS = const(32767) # longest RMT duration
_LEAD_MS = const(2)       # write the next chunk this long before the current one ends
_LATE_MS = const(3)       # how late the scheduled home IRQ may run, for `lag`
_next_channel = [0]


class RmtSteps:
    """Step-timing backend; see docs/stepper.md for the shared API."""

    def __init__(self, step_pin_spec, dir_out, carousel_cfg):
        n, _, inv = parse_pin(step_pin_spec)
        self._idle = 1 if inv else 0
        ch = _next_channel[0]
        _next_channel[0] += 1
        self._rmt = esp32.RMT(ch, pin=Pin(n, Pin.OUT, value=self._idle), clock_div=80,
                              idle_level=bool(inv), num_symbols=_SYMBOLS)
        self._dir = dir_out
        self._buf = [1] * (2 * _CHUNK)
        self._short = None            # the last chunk, when shorter than _CHUNK
        self._rise = (array("i", bytes(4 * _CHUNK)), array("i", bytes(4 * _CHUNK)))
        self._cur = 0                 # which _rise holds the chunk in play
        self._cur_n = 0
        self._t0 = 0                  # when the chunk in play started (ticks_us)
        self._sent = 0                # steps of the chunks before it
        # steps_done from a scheduled IRQ: up to _LATE_MS late at full speed
        self.lag = carousel_cfg["max_speed"] * _LATE_MS // 1000 + 2
        self._count = 0
        self._abort = False
        self._stopped = False
        self._stop_at = 0
        self._busy = False

    def busy(self):
        return self._busy

    @property
    def steps_done(self):
        if not self._busy:
            return self._count
        return self._done_at(self._stop_at if self._abort or self._stopped else time.ticks_us())

    def _done_at(self, t):
        us = time.ticks_diff(t, self._t0)
        rise = self._rise[self._cur]
        k = 0
        n = self._cur_n
        while k < n and rise[k] <= us:
            k += 1
        return self._sent + k

    def abort(self):
        """Stop the pulses now. IRQ-safe (sets flags, stops the channel)."""
        self._stop_at = time.ticks_us()
        self._abort = True
        self._rmt.active(0)

    def stop(self, ramp):
        """End the run where it is, as a success (the home search found the
        switch): the channel stops now, without a ramp, as the home search
        runs below the motor's start/stop speed."""
        self._stop_at = time.ticks_us()
        self._stopped = True
        self._rmt.active(0)

    def _fill(self, ramp, rise):
        """Plan up to _CHUNK steps into the buffer and their rising edges'
        offsets into rise: (steps, duration us)."""
        buf = self._buf
        k = 0
        us = 0
        while k < _CHUNK:
            d = ramp.next_interval()
            if d == 0:
                break
            low = d - _PULSE
            if low < 1:
                low = 1
            elif low > _MAX_TICKS:
                low = _MAX_TICKS
            buf[2 * k] = low
            buf[2 * k + 1] = _PULSE
            rise[k] = us + low
            us += low + _PULSE
            k += 1
        return k, us

    async def run(self, forward, ramp):
        self._abort = self._stopped = False
        self._sent = self._count = 0
        self._cur_n = 0
        self._busy = True
        self._dir.set(forward)
        rmt = self._rmt
        level = self._idle          # each chunk starts with its low part
        nxt = 0
        try:
            n, us = self._fill(ramp, self._rise[nxt])
            while n and not (self._abort or self._stopped):
                if n < _CHUNK:
                    self._buf[2 * n] = 0         # a zero duration ends the transmission
                rmt.write_pulses(self._buf, level)   # waits for the previous chunk
                self._sent += self._cur_n        # ... so everything before is out
                self._t0 = time.ticks_us()
                self._cur = nxt
                self._cur_n = n
                nxt ^= 1
                n, next_us = self._fill(ramp, self._rise[nxt])
                if n:
                    # sleep until just before this chunk ends, then queue the next
                    left = us // 1000 - _LEAD_MS - time.ticks_diff(time.ticks_us(), self._t0) // 1000
                    await asyncio.sleep_ms(left if left > 0 else 0)
                us = next_us
            while not (self._abort or self._stopped) and not rmt.wait_done():
                await asyncio.sleep_ms(1)
            if self._abort or self._stopped:
                self._count = self._done_at(self._stop_at)
            else:
                self._count = self._sent + self._cur_n
        finally:
            if not (self._abort or self._stopped) and not rmt.wait_done():
                rmt.active(0)                  # cancelled: no more pulses
                self._count = self._done_at(time.ticks_us())
            self._busy = False
        if self._stopped:
            ramp.cut(self._count)
        return self._count
