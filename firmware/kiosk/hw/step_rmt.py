# ESP32 step timing: the RMT peripheral times the pulses (80 MHz source,
# divided to 1 us ticks) while Python plans the ramp (kiosk.hw.ramp) in chunks.
# Not exercised in CI (no ESP32 there): see docs/stepper.md.
#
# RMT.write_pulses blocks while an earlier sequence is still going out, and
# hardware looping stops at 126 pulses, so a move is sent as a run of
# chunks: the next chunk is planned while the current one plays, then
# written just before it ends (a short, bounded block) so it follows with
# only the call's latency as a gap. Each step is a low part (the wait
# since the last pulse) then a high pulse; a late write only stretches the
# gap before a chunk's first step.
import asyncio
import time
import esp32
from machine import Pin
from micropython import const
from kiosk.hw.pins import parse_pin

_CHUNK = const(32)        # steps per write_pulses call
_PULSE = const(5)         # step pulse, us high
_MAX_TICKS = const(32767)  # longest RMT duration
_LEAD_MS = const(2)       # write the next chunk this long before the current one ends
_next_channel = [0]


class RmtSteps:
    """Step-timing backend; see docs/stepper.md for the shared API."""

    lag = _CHUNK  # steps_done is counted per chunk

    def __init__(self, step_pin_spec, dir_out, carousel_cfg):
        n, _, inv = parse_pin(step_pin_spec)
        self._idle = 1 if inv else 0
        ch = _next_channel[0]
        _next_channel[0] += 1
        self._rmt = esp32.RMT(ch, pin=Pin(n, Pin.OUT, value=self._idle), clock_div=80, idle_level=bool(inv))
        self._dir = dir_out
        self._buf = [1] * (2 * _CHUNK)
        self.steps_done = 0
        self._abort = False
        self._busy = False

    def busy(self):
        return self._busy

    def abort(self):
        """No more chunks: stops within the chunk in flight (<= 32 steps),
        the count stays exact. Only sets a flag: IRQ-safe."""
        self._abort = True

    def stop(self, ramp):
        """End the run early as a success (the home search found the
        switch): decelerate from the next chunk on. IRQ-safe."""
        ramp.stop()

    def _fill(self, ramp):
        """Plan up to _CHUNK steps into the buffer: (steps, duration us)."""
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
            us += low + _PULSE
            k += 1
        return k, us

    async def run(self, forward, ramp):
        self._abort = False
        self.steps_done = 0
        self._busy = True
        self._dir.set(forward)
        rmt = self._rmt
        level = self._idle          # each chunk starts with its low part
        try:
            n, us = self._fill(ramp)
            sent = 0
            while n and not self._abort:
                chunk = self._buf if n == _CHUNK else self._buf[:2 * n]
                rmt.write_pulses(chunk, level)   # waits for the previous chunk
                self.steps_done = sent           # ... so everything before is out
                sent += n
                t0 = time.ticks_ms()
                n, next_us = self._fill(ramp)
                if n:
                    # sleep until just before this chunk ends, then queue the next
                    left = us // 1000 - _LEAD_MS - time.ticks_diff(time.ticks_ms(), t0)
                    if left > 0:
                        await asyncio.sleep_ms(left)
                    else:
                        await asyncio.sleep_ms(0)
                us = next_us
            while not rmt.wait_done():
                await asyncio.sleep_ms(1)
            self.steps_done = sent
        finally:
            self._busy = False
        return self.steps_done
