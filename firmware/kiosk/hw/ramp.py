# Trapezoidal step-interval planning, kept apart from any hardware so it can
# be tested on its own and shared by every step-timing backend.
#
# The recurrence is David Austin's ("Generate stepper-motor speed profiles in
# real time"): under constant acceleration the interval before step n is
#     c_n = c_{n-1} - 2*c_{n-1} / (4n + 1)
# starting from c_0 = 0.676 * sqrt(2 / accel) seconds. Deceleration runs the
# same recurrence backwards, c_{n-1} = c_n + 2*c_n / (4n - 1), so a move
# slows down along the mirror image of its acceleration. Intervals are kept in
# fixed point (1/256 us) as small integers, the divisions rounded so the
# error doesn't build up: nothing is allocated per step and even 4*c stays
# below 2**30, the small-int limit of 32-bit ports.
from micropython import const

_FRAC = const(8)                 # fixed-point fraction bits
_HALF = const(128)               # 0.5 in fixed point, for rounding
_US_FP = const(256000000)        # one second in fixed-point microseconds
_MAX_US = const(1000000)         # longest interval handed out: 1 s


class Ramp:
    """Intervals (us) of a trapezoidal move. reset() plans a move, then each
    next_interval() gives the wait before the next step, 0 once every step
    has been handed out. stop() (IRQ-safe) turns the move into a
    deceleration from wherever it is."""

    def __init__(self):
        self._accel = 0
        self._c0 = 0
        self.total = 0      # steps in the move (shrinks when stop() is used)
        self.i = 0          # steps handed out so far
        self._acc = 0       # steps at the start that accelerate
        self._dec = 0       # step index where deceleration starts
        self._off = 0       # recurrence index of the start speed
        self._c = 0
        self._cmin = 0
        self._stop = False

    def reset(self, steps, max_speed, accel, start_speed=0):
        """Plan `steps` steps, accelerating at `accel` (steps/s^2) up to
        `max_speed` (steps/s) and back down. The move starts (and ends) at
        `start_speed` when that is above the first step's own speed, so a
        constant-speed move is reset(n, v, accel, v)."""
        if steps < 0 or max_speed <= 0 or accel <= 0:
            raise ValueError("ramp: steps >= 0, max_speed and accel > 0")
        if accel != self._accel:
            # once per acceleration value: the only float use, not per move
            self._c0 = int(173056000 * (2 / accel) ** 0.5)  # 0.676 s in fixed-point us
            self._accel = accel
        cmin = _US_FP // max_speed
        c = self._c0
        off = 0
        if start_speed > 0:
            cs = _US_FP // start_speed
            if cs < c:
                c = cs
                off = start_speed * start_speed // (2 * accel)
        if c < cmin:
            c = cmin
        cap = _MAX_US << _FRAC
        if c > cap:
            c = cap
        acc = max_speed * max_speed // (2 * accel) - off + 1   # step v^2/2a is at speed
        if acc < 0:
            acc = 0
        if acc > steps // 2:
            acc = steps // 2
        self._c = c
        self._cmin = cmin
        self._off = off
        self._acc = acc
        self._dec = steps - acc
        self.total = steps
        self.i = 0
        self._stop = False

    def stop(self):
        """Decelerate from here and end the move. Only sets a flag, so it is
        safe from an interrupt handler; takes effect at the next interval."""
        self._stop = True

    def _apply_stop(self, i):
        self._stop = False
        if i >= self._dec:
            return                      # already slowing down
        if i < self._acc:
            self._acc = i               # mirror what has been done so far
        self._dec = i
        if i + self._acc < self.total:
            self.total = i + self._acc

    def next_interval(self):
        """Microseconds to wait before the next step; 0 when done."""
        i = self.i
        if self._stop:
            self._apply_stop(i)
        if i >= self.total:
            return 0
        c = self._c
        if i == 0:
            pass
        elif i < self._acc:
            d = ((i + self._off) << 2) + 1
            c -= ((c << 2) + d) // (d << 1)     # 2c/d, rounded
            if c < self._cmin:
                c = self._cmin
        elif i > self._dec:
            d = ((self.total - i + self._off) << 2) - 1
            c += ((c << 2) + d) // (d << 1)
        self._c = c
        self.i = i + 1
        return (c + _HALF) >> _FRAC

    def cut(self, n):
        """The move ended after n steps, as planned (a backend that stops
        without a ramp below the start/stop speed: the home search)."""
        self.total = self.i = n

    def remaining(self):
        return self.total - self.i
