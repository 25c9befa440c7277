# The bin carousel: a stepper on a STEP/DIR/EN driver turning a ring of bins
# past the pickup door. This module is the logic (position, homing, moves,
# missed-step checks); pulses come from a step-timing backend and every pin
# from kiosk.hw.hal, so it runs unchanged on a board and in the emulator.
#
# Position is counted in motor steps, 0 .. bins*steps_per_bin-1, with bin b
# at the door at b*steps_per_bin. It is only trusted after homing, and the
# home switch (and the index sensor, if fitted) must keep agreeing with it:
# any disagreement is a fault that forgets the position, so a bin is never
# reported at the door when it isn't. See docs/stepper.md.
import asyncio
import time
from array import array
from micropython import const
from kiosk.hw.ramp import Ramp

_MAX_EDGES = const(16)     # home-switch edges recorded per move
_SLACK = const(1)          # steps of play allowed on switch edges
_BACKOFF = const(2)        # steps clear of the switch before a slow approach
_SETTLE_MS = const(5)      # hold torque this long after the last step
_WAKE_US = {"a4988": 1000, "drv8825": 1000, "tmc2209": 0}

# Fault codes (StepperFault.code). The first two are refusals: nothing moved
# and the state is unchanged. The others disable the motor and forget the
# position (the carousel must be homed again).
NOT_HOMED = "not_homed"
BUSY = "busy"
HOME_NOT_FOUND = "home_not_found"
HOME_STUCK = "home_stuck"
POSITION_LOST = "position_lost"
STALL = "stall"
ABORTED = "aborted"


class StepperFault(Exception):
    def __init__(self, code, detail=""):
        super().__init__(code, detail)
        self.code = code
        self.detail = detail

    def __str__(self):
        return "%s: %s" % (self.code, self.detail)


class Carousel:
    """One carousel. cfg is its board entry; the hardware comes ready from
    kiosk.hw.hal (see from_board): a step backend, the EN output and the
    home/index/diag inputs, all in logical (active/inactive) terms."""

    def __init__(self, cfg, backend, enable_out, home_in, index_in=None, diag_in=None):
        self.name = cfg["name"]
        self._bins = cfg["bins"]
        self._spb = cfg["steps_per_bin"]
        self._total = self._bins * self._spb
        self._w = cfg.get("home_window", 1)
        self._max_speed = cfg["max_speed"]
        self._accel = cfg["accel"]
        self._home_speed = cfg["home_speed"]
        self._slow = max(1, self._home_speed // 4)
        self._wake_us = _WAKE_US.get(cfg["driver"], 1000)
        self._backend = backend
        self._en = enable_out
        self._home = home_in
        self._index = index_in
        self._diag = diag_in
        self._ramp = Ramp()
        self._edge_at = array("i", bytes(4 * _MAX_EDGES))
        self._edge_on = bytearray(_MAX_EDGES)
        self._n_edges = 0
        self._level = False       # the home switch as the last edge left it
        self._seek = False
        self._stalled = False
        self._abort_req = False
        self._moving = False
        self.position = 0
        self.homed = False
        self.fault = None
        self.fault_detail = ""
        self.moves = 0
        self._en.off()
        home_in.on_change(self._on_home)
        if diag_in is not None:
            diag_in.on_change(self._on_diag)

    # -- interrupt handlers: no allocation ---------------------------------
    def _on_home(self):
        # The switch's level after this edge: the opposite of the last. Read
        # from the pin it would be right only from a hard IRQ; a scheduled
        # one (ESP32) runs late, when the carousel may be past the switch.
        on = not self._level
        self._level = on
        n = self._n_edges
        if n < _MAX_EDGES:
            self._edge_at[n] = self._backend.steps_done
            self._edge_on[n] = 1 if on else 0
        self._n_edges = n + 1
        if on and self._seek:
            self._backend.stop(self._ramp)

    def _on_diag(self):
        if self._moving and self._diag.active():
            self._stalled = True
            self._backend.abort()

    # -- queries -------------------------------------------------------------
    def bin_at_door(self):
        """The bin at the door, or None when the position is unknown, the
        carousel is moving or it rests between bins."""
        if not self.homed or self._moving or self.position % self._spb:
            return None
        return self.position // self._spb

    def busy(self):
        return self._moving

    def state(self):
        return {
            "name": self.name,
            "bins": self._bins,
            "homed": self.homed,
            "position": self.position if self.homed else None,
            "bin": self.bin_at_door(),
            "moving": self._moving,
            "enabled": bool(self._en.active()),
            "fault": self.fault,
            "detail": self.fault_detail,
            "moves": self.moves,
        }

    # -- control -------------------------------------------------------------
    def abort(self):
        """Safety stop: no more steps, motor disabled. A move in progress
        ends with StepperFault('aborted') and the position unknown."""
        self._abort_req = True
        self._backend.abort()
        self._en.off()

    def disable(self):
        """De-energise the motor; stops a move in progress like abort()."""
        if self._moving:
            self.abort()
        self._en.off()

    async def home(self):
        """Find the home switch and set the position from its centre, then
        bring bin 0 to the door. Raises StepperFault on any failure."""
        self._start(False)
        self.homed = False
        ok = False
        try:
            await self._wake()
            spb = self._spb
            if self._home.active():
                # start from the near side of the switch
                await self._off_switch()
                await self._travel(-_BACKOFF, self._slow, self._slow, False)
            limit = self._total * 5 // 4
            self._seek = True
            try:
                done = await self._travel(limit, self._home_speed, 0, False)
            finally:
                self._seek = False
            on = self._home.active()
            s = self._first_rise()
            if s < 0:
                if not on:
                    self._fault(HOME_NOT_FOUND, "no home switch within %d steps" % limit)
                s = done
            if on:
                # back to just before the edge, then approach it slowly
                await self._travel(-(done - s + 1 + _BACKOFF + self._backend.lag), self._home_speed, 0, False)
            else:
                # Stopped past the switch: its interrupt ran later than
                # `lag` allows (a scheduled IRQ behind a long call in C, or
                # any IRQ held off by a flash operation), so the edge's step
                # count is unknown. Search back for it, over at most the
                # ground just covered.
                self._seek = True
                try:
                    await self._travel(-done, self._home_speed, 0, False)
                finally:
                    self._seek = False
                if self._first_rise() < 0 and not self._home.active():
                    self._fault(HOME_NOT_FOUND, "home switch lost after the search")
            if self._home.active():
                await self._off_switch()
            if not await self._step_until(True, 1, spb):
                self._fault(HOME_NOT_FOUND, "home switch lost on the slow approach")
            width = await self._step_until(True, 0, spb)
            if not width:
                self._fault(HOME_STUCK, "home switch still active after %d steps" % spb)
            if width > 2 * self._w + 1 + 2 * _SLACK:
                self._fault(HOME_STUCK, "home switch active over %d steps; home_window %d allows %d" % (
                    width, self._w, 2 * self._w + 1))
            # the switch's centre is position 0; we stand on its first
            # inactive step
            self.position = width - (width - 1) // 2
            self.homed = True
            await self._travel(-self.position, self._max_speed, 0, True)
            self._check_at_rest()
            await asyncio.sleep_ms(_SETTLE_MS)
            self.fault = None
            self.fault_detail = ""
            ok = True
        finally:
            self._finish(ok)

    async def move_to_bin(self, b):
        """Bring bin b to the door the shorter way round. Raises
        StepperFault if not homed, busy, or if the move went wrong (then the
        motor is off and the position forgotten)."""
        if not isinstance(b, int) or not 0 <= b < self._bins:
            raise ValueError("carousel %s has no bin %r" % (self.name, b))
        self._start(True)
        delta = (b * self._spb - self.position) % self._total
        if delta > self._total // 2:
            delta -= self._total
        ok = False
        try:
            if delta:
                await self._wake()
                self._check_at_rest()
                await self._travel(delta, self._max_speed, 0, True)
            self._check_at_rest()
            if delta:
                await asyncio.sleep_ms(_SETTLE_MS)
                self.moves += 1
            ok = True
        finally:
            self._finish(ok)

    # -- internals -----------------------------------------------------------
    def _start(self, need_homed):
        if self._moving:
            raise StepperFault(BUSY, "carousel %s is already moving" % self.name)
        if need_homed and not self.homed:
            raise StepperFault(NOT_HOMED, "carousel %s is not homed" % self.name)
        self._moving = True
        self._stalled = False
        self._abort_req = False

    def _finish(self, ok):
        self._en.off()
        if not ok:
            self._backend.abort()
            self.homed = False
        self._moving = False

    def _fault(self, code, detail):
        self._en.off()
        self.homed = False
        self.fault = code
        self.fault_detail = detail
        raise StepperFault(code, detail)

    async def _wake(self):
        self._en.on()
        t0 = time.ticks_us()
        while time.ticks_diff(time.ticks_us(), t0) < self._wake_us:
            await asyncio.sleep_ms(1)

    def _dist(self, p):
        """Steps from p to the home position, either way round."""
        p %= self._total
        return p if p <= self._total - p else self._total - p

    async def _run(self, fwd):
        """Run the planned ramp; return the steps done. Faults on a stall
        or an abort."""
        if self._abort_req:
            self._fault(ABORTED, "stopped by abort()")
        done = await self._backend.run(fwd, self._ramp)
        self.position = (self.position + (done if fwd else -done)) % self._total
        if self._stalled or (self._diag is not None and self._diag.active()):
            self._fault(STALL, "driver reported a stall after %d steps" % done)
        if done < self._ramp.total or self._abort_req:
            self._fault(ABORTED, "stopped after %d of %d steps" % (done, self._ramp.total))
        return done

    async def _travel(self, delta, speed, start_speed, check):
        """Move delta steps (sign = direction) on a ramp; with check, the
        home switch edges seen on the way must match the position."""
        fwd = delta > 0
        n = delta if fwd else -delta
        base = self.position
        was_on = self._home.active()
        self._level = was_on
        self._n_edges = 0
        self._ramp.reset(n, speed, self._accel, start_speed)
        done = await self._run(fwd)
        if check:
            self._check_edges(base, 1 if fwd else -1, done, was_on)
        return done

    async def _step_until(self, fwd, want, limit):
        """Single slow steps until the home switch reads `want`: the number
        of steps taken, or 0 if it didn't within `limit`. Slow and polled, so
        the edge is exact whatever the backend."""
        for k in range(1, limit + 1):
            self._ramp.reset(1, self._slow, self._accel, self._slow)
            await self._run(fwd)
            if self._home.active() == want:
                return k
        return 0

    async def _off_switch(self):
        if not await self._step_until(False, 0, self._spb):
            self._fault(HOME_STUCK, "home switch still active after %d steps" % self._spb)

    def _first_rise(self):
        m = min(self._n_edges, _MAX_EDGES)
        for i in range(m):
            if self._edge_on[i]:
                return self._edge_at[i]
        return -1

    def _lost(self, detail):
        self._fault(POSITION_LOST, detail)

    def _check_edges(self, base, sgn, n, was_on):
        """Missed-step check: every home-switch edge of the move must fall
        at the edge of the home window, and a move through the home position
        must have seen the switch active there."""
        w = self._w
        slack = _SLACK + self._backend.lag
        m = min(self._n_edges, _MAX_EDGES)
        for i in range(m):
            d = self._dist(base + sgn * self._edge_at[i])
            if d > w + 1 + slack or (self._edge_on[i] and d > w + slack):
                self._lost("home switch %s %d steps from home (window %d)" % (
                    "active" if self._edge_on[i] else "released", d, w))
        k = (-base if sgn > 0 else base) % self._total    # steps to the home position
        if 0 < k < n and self._n_edges <= _MAX_EDGES:
            lo = k - w - slack
            hi = k + w + slack
            active = was_on
            for i in range(m):
                s = self._edge_at[i]
                if s >= lo:
                    if s > hi:
                        break
                    if active or self._edge_on[i]:
                        return
                active = self._edge_on[i]
            if not active:
                self._lost("passed home without the home switch")

    def _check_at_rest(self):
        """At a bin: the home switch must be active at bin 0 and only within
        its window; the index sensor (if fitted) must be active."""
        p = self.position
        d = self._dist(p)
        if self._home.active():
            if d > self._w + _SLACK:
                self._lost("home switch active at step %d, %d from home" % (p, d))
        elif d == 0:
            self._lost("home switch not active at home")
        if self._index is not None and p % self._spb == 0 and not self._index.active():
            self._lost("index sensor not active at bin %d" % (p // self._spb))


def from_board(board, cfg):
    """A Carousel for board entry cfg, wired through kiosk.hw.hal."""
    from kiosk.hw import hal
    opt = lambda k: hal.In(cfg[k]) if k in cfg else None
    return Carousel(cfg, hal.step_backend(board, cfg), hal.Out(cfg["enable_pin"]),
                    hal.In(cfg["home_pin"]), opt("index_pin"), opt("diag_pin"))
