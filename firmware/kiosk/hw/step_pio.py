# RP2 step timing: the move is planned before it starts, as runs of equal
# intervals ((count, wait) words: Klipper's queue_step without its `add`),
# and a DMA channel feeds them to a PIO state machine that times every
# pulse to the microsecond. Nothing on the CPU has to happen while the motor
# turns: a flash erase (tens of ms with interrupts off), a GC pass, a
# DS18B20 read or a TLS record can stall the CPU without stalling a step.
# (One FIFO word per step, topped up by Python, lasted 1 ms at 8,000
# steps/s: benchmarks/bench_motion.py shows what a stall did to it.)
#
# The hardware keeps to the plan, so the plan tells which step came when:
# steps_done is worked out from the clock (the home switch's hard IRQ reads
# it within microseconds of the edge). A run holds steps whose intervals lie
# within 1/32 of its first, so no step comes more than about 3 % off the
# ramp's plan (plus 2 us where a run starts).
import asyncio
import time
import rp2
from array import array
from machine import Pin
from micropython import const
from kiosk.hw.pins import parse_pin

_FREQ = const(1000000)    # state machine clock: one cycle per microsecond
_LOOP = const(8)          # cycles of a step besides its wait
_START = const(2)         # cycles a run's pull and out take before its first step
_EDGE = const(4)          # a step's rising edge comes this long before its interval ends
_WORDS = const(320)       # runs one DMA transfer carries
_TOL = const(5)           # a run's intervals lie within 1/2**_TOL of its first
_MAX_WAIT = const(65535)  # 16 bits of wait: intervals up to 65.5 ms
_MAX_COUNT = const(65536)
_MARGIN_US = const(1500)  # after the plan's last step, before the machine is stopped
_next_sm = [0]            # state machines 0-3 (PIO0); the Pico W radio takes one on PIO1


@rp2.asm_pio(set_init=rp2.PIO.OUT_LOW, out_shiftdir=rp2.PIO.SHIFT_RIGHT)
def _runs():
    pull(block)                 # 1  a run: wait << 16 | (count - 1)
    out(y, 16)                  # 1  y = count - 1; the wait stays in the OSR
    label("step")
    mov(x, osr)                 # 1
    label("wait")
    jmp(x_dec, "wait")          # wait + 1
    set(pins, 1) [3]            # 4  the step pulse, 4 us high
    set(pins, 0)                # 1
    jmp(y_dec, "step")          # 1


class PioSteps:
    """Step-timing backend; see docs/stepper.md for the shared API."""

    lag = 2  # steps_done from a hard IRQ: exact to the microsecond; 2 steps of slack

    def __init__(self, step_pin_spec, dir_out, carousel_cfg):
        n, _, inv = parse_pin(step_pin_spec)
        if inv:
            raise ValueError("step_pin %r: pio step timing drives the pin active-high" % step_pin_spec)
        self._id = _next_sm[0]
        _next_sm[0] += 1
        self._sm = rp2.StateMachine(self._id, _runs, freq=_FREQ, set_base=Pin(n, Pin.OUT, value=0))
        self._dma = rp2.DMA()
        # Paced by this machine's TX request (DREQ_PIO0_TX0 + n on the RP2040 and RP2350).
        self._ctrl = self._dma.pack_ctrl(size=2, inc_read=True, inc_write=False, treq_sel=self._id)
        self._dir = dir_out
        self._words = array("I", bytes(4 * _WORDS))  # what the DMA feeds the machine
        self._wait = array("H", bytes(2 * _WORDS))   # each run's wait, for the IRQ (small ints only)
        self._end = array("i", bytes(4 * _WORDS))    # us from the start when each run ends
        self._upto = array("i", bytes(4 * _WORDS))   # steps through each run
        self._n = 0
        self._t0 = 0
        self._carry = 0           # an interval taken from the ramp, not planned yet
        self._running = False
        self._stopped = False
        self._abort = False
        self._stop_at = 0
        self._base = 0            # steps of earlier segments of this move
        self._count = 0
        self._busy = False

    # -- what the home switch's IRQ reads -------------------------------------
    def _done_at(self, t):
        """Steps of this segment out by ticks_us t. Allocation-free."""
        n = self._n
        if n == 0:
            return 0
        us = time.ticks_diff(t, self._t0)
        if us < 0:
            return 0
        end = self._end
        lo = 0
        hi = n - 1
        if us >= end[hi]:
            return self._upto[hi]
        while lo < hi:                     # the run in play: the first that ends after us
            mid = (lo + hi) >> 1
            if end[mid] > us:
                hi = mid
            else:
                lo = mid + 1
        d = self._wait[lo] + _LOOP
        start = end[lo - 1] if lo else 0
        before = self._upto[lo - 1] if lo else 0
        c = self._upto[lo] - before
        since = us - (start + _START + d - _EDGE)
        if since < 0:
            return before
        k = since // d + 1
        return before + (k if k < c else c)

    @property
    def steps_done(self):
        """Steps emitted so far in this run."""
        if self._running:
            t = self._stop_at if (self._stopped or self._abort) else time.ticks_us()
            return self._base + self._done_at(t)
        return self._count

    def busy(self):
        return self._busy

    def abort(self):
        """Stop the pulses at once. No allocation: IRQ-safe."""
        self._stop_at = time.ticks_us()
        self._sm.active(0)
        self._dma.active(0)
        self._abort = True

    def stop(self, ramp):
        """End this run where it is, as a success (the home search found the
        switch). Stops without a ramp: the home search runs below the
        motor's start/stop speed. IRQ-safe."""
        self._stop_at = time.ticks_us()
        self._sm.active(0)
        self._dma.active(0)
        self._stopped = True

    # -- planning ----------------------------------------------------------
    def _plan(self, ramp):
        """Compress the ramp's next intervals into runs; returns how many."""
        words = self._words
        end = self._end
        upto = self._upto
        n = t = steps = 0
        d = self._carry or ramp.next_interval()
        self._carry = 0
        while d and n < _WORDS:
            if d < _LOOP:
                d = _LOOP
            elif d > _MAX_WAIT + _LOOP:
                d = _MAX_WAIT + _LOOP          # only a first step under ~430 steps/s^2
            tol = d >> _TOL
            c = 1
            nxt = ramp.next_interval()
            while nxt and c < _MAX_COUNT and d - tol <= nxt <= d + tol:
                c += 1
                nxt = ramp.next_interval()
            words[n] = (d - _LOOP) << 16 | (c - 1)
            self._wait[n] = d - _LOOP
            t += _START + c * d
            steps += c
            end[n] = t
            upto[n] = steps
            n += 1
            d = nxt
        self._carry = d
        return n

    # -- running --------------------------------------------------------------
    def _drain(self):
        sm = self._sm
        while sm.tx_fifo():
            sm.exec("pull(noblock)")
        sm.exec("set(pins, 0)")

    async def run(self, forward, ramp):
        """Emit every step the ramp plans (or until abort()/stop()); return
        the count."""
        self._abort = self._stopped = False
        self._base = self._count = 0
        self._carry = 0
        self._busy = True
        self._dir.set(forward)
        try:
            while not (self._abort or self._stopped):
                n = self._plan(ramp)
                if n == 0:
                    break
                self._base += await self._play(n)
            self._count = self._base
        finally:
            self._running = False
            self._busy = False
        if self._stopped:
            ramp.cut(self._count)
        return self._count

    async def _play(self, n):
        """One planned segment: DMA into the FIFO, the machine started,
        then only sleeping until the plan says it is over."""
        sm = self._sm
        dma = self._dma
        sm.active(0)
        sm.restart()
        self._drain()
        self._n = n
        dma.config(read=self._words, write=sm, count=n, ctrl=self._ctrl, trigger=True)
        self._running = True
        self._t0 = time.ticks_us()
        sm.active(1)
        total = self._end[n - 1]
        try:
            while not (self._abort or self._stopped):
                left = total + _MARGIN_US - time.ticks_diff(time.ticks_us(), self._t0)
                if left <= 0:
                    break
                await asyncio.sleep_ms(left // 1000 + 1 if left < 20000 else 20)
        finally:            # a cancelled move stops here too, at once
            sm.active(0)
            dma.active(0)
            if not (self._abort or self._stopped):
                self._stop_at = time.ticks_us()
        if self._abort or self._stopped:
            done = self._done_at(self._stop_at)
        else:
            done = self._upto[n - 1]
        self._drain()
        self._n = 0
        return done
