# Software step timing: pulses timed with ticks_us in short bursts, giving
# way to asyncio between bursts so the control loop keeps running. Works on
# every port and in the emulator. Its limits are Python's: a few kHz at
# best, and a step interval stretches whenever the loop or the garbage
# collector holds the CPU longer than a burst. Boards that can time pulses
# in hardware use step_pio (RP2) or step_rmt (ESP32) instead.
import time
import asyncio
from micropython import const

_BURST_US = const(2000)    # longest stretch of stepping without yielding
_SPIN_US = const(1500)     # waits shorter than this are timed here, not by asyncio
_PULSE_US = const(2)       # step pulse width: 2 us suits A4988/DRV8825 and TMC


class SoftSteps:
    """Step-timing backend; see docs/stepper.md for the shared API."""

    lag = 0  # steps_done is exact: counted before each pulse goes out

    def __init__(self, step_out, dir_out, carousel_cfg):
        self._step = step_out
        self._dir = dir_out
        self.steps_done = 0
        self._abort = False
        self._busy = False

    def busy(self):
        return self._busy

    def abort(self):
        """Stop before the next step. Only sets a flag: IRQ-safe."""
        self._abort = True

    def stop(self, ramp):
        """End the run early as a success (the home search found the
        switch): decelerate from here. IRQ-safe."""
        ramp.stop()

    async def run(self, forward, ramp):
        """Emit every step `ramp` plans (or until abort()); return the count."""
        self._abort = False
        self.steps_done = 0
        self._busy = True
        step = self._step
        self._dir.set(forward)
        ticks_us = time.ticks_us
        ticks_diff = time.ticks_diff
        try:
            t = ticks_us()              # when the previous step went out
            burst = t
            while not self._abort:
                d = ramp.next_interval()
                if d == 0:
                    break
                t = time.ticks_add(t, d)
                wait = ticks_diff(t, ticks_us())
                if wait > _SPIN_US or ticks_diff(ticks_us(), burst) > _BURST_US:
                    # give the loop its turn: sleep through long waits, or
                    # just yield after a full burst
                    await asyncio.sleep_ms(wait // 1000 - 1 if wait > _SPIN_US else 0)
                    if self._abort:
                        break
                    now = ticks_us()
                    burst = now
                    if ticks_diff(now, t) > 0:
                        # late: never catch up with a burst of quick steps,
                        # stretch this interval instead
                        t = now
                    wait = ticks_diff(t, now)
                if wait > 0:
                    time.sleep_us(wait)
                self.steps_done += 1    # before the pulse: the switch IRQ may follow it at once
                step.on()
                p = ticks_us()
                while ticks_diff(ticks_us(), p) < _PULSE_US:
                    pass
                step.off()
        finally:
            step.off()
            self._busy = False
        return self.steps_done
