# RP2 step timing: a PIO state machine times every pulse to the microsecond
# while Python plans the ramp (kiosk.hw.ramp) and keeps the state machine's TX
# FIFO topped up between other tasks, the way Klipper splits the work.
# Not exercised in CI (no RP2 there): see docs/stepper.md.
#
# One FIFO word per step: the wait before the step in PIO cycles (1 us at
# the 1 MHz clock), less the program's own cycles. If the FIFO runs dry the
# state machine just waits at `pull`, so a late refill stretches one
# interval; it never loses or adds a step.
import asyncio
import rp2
from machine import Pin
from micropython import const
from kiosk.hw.pins import parse_pin

_FREQ = const(1000000)    # state machine clock: one cycle per microsecond
_OVERHEAD = const(8)      # cycles per step outside the wait loop
_FIFO = const(8)          # TX FIFO depth with the RX FIFO joined to it
_next_sm = [0]            # state machines 0-3 (PIO0); the Pico W radio takes one on PIO1


@rp2.asm_pio(set_init=rp2.PIO.OUT_LOW, fifo_join=rp2.PIO.JOIN_TX)
def _step_prog():
    pull(block)                 # 1 cycle (more while the FIFO is empty)
    mov(x, osr)                 # 1
    label("wait")
    jmp(x_dec, "wait")          # x + 1
    set(pins, 1) [3]            # 4: the step pulse, 4 us high
    set(pins, 0)                # 1


class PioSteps:
    """Step-timing backend; see docs/stepper.md for the shared API."""

    lag = 2  # steps_done seen from an IRQ can trail the pulses by this much

    def __init__(self, step_pin_spec, dir_out, carousel_cfg):
        n, _, inv = parse_pin(step_pin_spec)
        if inv:
            raise ValueError("step_pin %r: pio step timing drives the pin active-high" % step_pin_spec)
        self._id = _next_sm[0]
        _next_sm[0] += 1
        self._sm = rp2.StateMachine(self._id, _step_prog, freq=_FREQ, set_base=Pin(n, Pin.OUT, value=0))
        self._dir = dir_out
        self._pushed = 0
        self._count = 0
        self._abort = False
        self._busy = False

    @property
    def steps_done(self):
        """Steps emitted so far: words the state machine has finished."""
        if not self._busy:
            return self._count
        n = self._pushed - self._sm.tx_fifo() - 1
        return n if n > 0 else 0

    def busy(self):
        return self._busy

    def abort(self):
        """Stop the state machine at once. No allocation: IRQ-safe."""
        self._abort = True
        self._sm.active(0)

    async def run(self, forward, ramp):
        sm = self._sm
        self._abort = False
        self._pushed = 0
        self._count = 0
        self._busy = True
        self._dir.set(forward)
        sm.restart()
        sm.active(1)
        last = 0
        try:
            while not self._abort:
                d = ramp.next_interval()
                if d == 0:
                    break
                last = d
                while sm.tx_fifo() >= _FIFO:
                    # full: come back after about one interval
                    await asyncio.sleep_ms(d >> 10)
                    if self._abort:
                        break
                else:
                    sm.put(d - _OVERHEAD if d > _OVERHEAD else 0)
                    self._pushed += 1
            while not self._abort and sm.tx_fifo():
                await asyncio.sleep_ms(1)
            if not self._abort and self._pushed:
                await asyncio.sleep_ms(last // 1000 + 2)   # the last word's wait and pulse
        finally:
            self._stop()
        return self._count

    def _stop(self):
        sm = self._sm
        left = sm.tx_fifo()
        sm.active(0)
        if self._abort or left:
            # stopped early: estimate, drop what is queued, pin low
            n = self._pushed - left - 1
            self._count = n if n > 0 else 0
            while sm.tx_fifo():
                sm.exec("pull(noblock)")
            sm.exec("set(pins, 0)")
        else:
            self._count = self._pushed
        self._busy = False
