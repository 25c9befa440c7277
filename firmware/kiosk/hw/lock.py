# Door lock driver: one fail-secure lock (solenoid bolt or electric strike)
# with a bolt-feedback switch and a door reed switch. The drive is
# energised only to unlock, and a one-shot timer de-energises it from its
# callback: from the interrupt where the port has hard timer callbacks
# (rp2), so the cap holds even when the main loop stalls; at the VM's next
# check where callbacks are scheduled (ESP32). update() is the second line:
# it drops a drive whose window has passed, in case the callback is late or
# was lost. The watchdog bounds the rest (docs/locks.md, "Energising cap").
# update() also polls and debounces the switches and turns them into short
# event codes. Pins and the timer come from kiosk.hw.hal.
import time
from micropython import const
from kiosk.hw.debounce import Debounced as _Debounced

# Events from update() / next_event(): constants, so polling never allocates.
DOOR_OPENED = "door_opened"
DOOR_CLOSED = "door_closed"
DOOR_FORCED = "door_forced"            # alarm: opened while locked
DOOR_HELD_OPEN = "door_held_open"      # alarm: open longer than held_open_ms
BOLT_ENGAGED = "bolt_engaged"
BOLT_RELEASED = "bolt_released"        # bolt left its keeper (expected on unlock)
BOLT_NOT_ENGAGED = "bolt_not_engaged"  # alarm: locked, door shut, bolt not in keeper
LOCK_CAP_REACHED = "lock_cap_reached"  # the hardware cap ended an energising
UNLOCK_EXPIRED = "unlock_expired"      # the requested unlock window ended

# Alarm bits of DoorLock.alarms; names as in state()["alarms"].
ALARM_FORCED = const(1)
ALARM_HELD_OPEN = const(2)
ALARM_BOLT = const(4)
_ALARM_NAMES = ((1, "forced"), (2, "held_open"), (4, "bolt_not_engaged"))

# LockRefused.code values.
REFUSED_RESTING = "resting"  # the coil must cool first: retry after .retry_ms
REFUSED_BAD_MS = "bad_ms"    # duration is not a positive integer

OPEN = "open"
CLOSED = "closed"
ENGAGED = "engaged"
NOT_ENGAGED = "not_engaged"
UNKNOWN = "unknown"

_QUEUE = const(8)
_LATE_MS = const(50)    # past its window this long, a drive is dropped by update()
_STALE_MS = const(20)   # a callback this early for the current window belongs to an earlier one


class LockRefused(Exception):
    """unlock() refused: `.code` says why, `.retry_ms` when to try again."""

    def __init__(self, code, retry_ms=0):
        super().__init__(code, retry_ms)
        self.code = code
        self.retry_ms = retry_ms


class DoorLock:
    """One door. drive_out active = energised = unlocked; bolt_in active =
    bolt in its keeper; door_in active = door closed; timer a hal.OneShot."""

    def __init__(self, cfg, drive_out, bolt_in, door_in, timer,
                 open_debounce_ms=1000, close_debounce_ms=250,
                 bolt_debounce_ms=100, bolt_verify_ms=1000,
                 held_open_ms=None, relock_grace_ms=1000):
        # Fail-secure at boot: whatever the pin was left at, drop it first.
        timer.cancel()
        drive_out.set(0)
        self._drive = drive_out
        self._timer = timer
        self._bolt_in = bolt_in
        self._door_in = door_in
        self.cfg = cfg
        self.name = cfg["name"]
        self.kind = cfg["kind"]
        self.max_energize_ms = cfg["max_energize_ms"]
        self.rest_ms = cfg["rest_ms"]
        self.open_debounce_ms = open_debounce_ms
        self.close_debounce_ms = close_debounce_ms
        self.bolt_debounce_ms = bolt_debounce_ms
        self.bolt_verify_ms = bolt_verify_ms
        if held_open_ms is None:  # restocking keeps the service door open longer
            held_open_ms = 600000 if self.name == "service" else 30000
        self.held_open_ms = held_open_ms
        self.relock_grace_ms = relock_grace_ms
        now = time.ticks_ms()
        self._door = _Debounced(now)
        self._bolt = _Debounced(now)
        self._on = False          # energised as software knows it (see _settle)
        self._on_since = now
        self._capped = False      # the armed timer is the cap, not the request
        self._fired = False       # set by the timer interrupt
        self._fired_at = now
        self._deadline = now      # when the current window ends
        self._off_at = now
        self._grace = False       # within relock_grace_ms of de-energising
        self._resting = False
        self._rest_until = now
        self._verify_from = now   # bolt must be engaged bolt_verify_ms after this
        self._open_auth = False   # the current door opening began while unlocked
        self._opened_at = now
        self._held_told = False
        self.alarms = 0
        self.energize_count = 0
        self.cap_count = 0
        self.late_caps = 0        # windows update() had to end: the timer's callback was late or lost
        self.dropped_events = 0
        self._q = [None] * _QUEUE
        self._qhead = 0
        self._qlen = 0
        self._expire_cb = self._expire  # bound once: the IRQ must not allocate

    # -- the drive ---------------------------------------------------------
    def _expire(self, _t):
        """Timer callback: drop the drive, note when. Allocation-free. A
        scheduled callback can run after lock() and a new unlock(): one
        that comes well before the current window ends is that earlier
        window's, and is ignored."""
        now = time.ticks_ms()
        if time.ticks_diff(self._deadline, now) > _STALE_MS:
            return
        self._drive.set(0)
        self._fired_at = now
        self._fired = True

    def _off(self, now):
        # Rest in proportion to the time on: the duty cycle stays at the
        # rating, max_energize_ms on to rest_ms off.
        self._on = False
        on_ms = time.ticks_diff(now, self._on_since)
        rest = self.rest_ms
        if on_ms < self.max_energize_ms:
            rest = on_ms * rest // self.max_energize_ms
        self._rest_until = time.ticks_add(now, rest)
        self._resting = rest > 0
        self._off_at = now
        self._grace = True
        self._verify_from = now

    def _settle(self):
        """Account for an expiry the timer interrupt already applied."""
        if self._fired:
            self._fired = False
            if self._on:
                self._off(self._fired_at)
                if self._capped:
                    self.cap_count += 1
                    self._push(LOCK_CAP_REACHED)
                else:
                    self._push(UNLOCK_EXPIRED)

    def unlock(self, ms, now_ms=None):
        """Energise for min(ms, max_energize_ms); return the ms granted.
        Again while energised: extends, never past max_energize_ms from the
        first energising. Raises LockRefused while the coil rests."""
        if not isinstance(ms, int) or ms <= 0:
            raise LockRefused(REFUSED_BAD_MS)
        self._settle()
        now = time.ticks_ms() if now_ms is None else now_ms
        if self._on:
            left = max(1, self.max_energize_ms - time.ticks_diff(now, self._on_since))
        else:
            if self._resting:
                wait = time.ticks_diff(self._rest_until, now)
                if wait > 0:
                    raise LockRefused(REFUSED_RESTING, wait)
                self._resting = False
            left = self.max_energize_ms
            self._on_since = now
            self.energize_count += 1
        grant = min(ms, left)
        self._capped = ms >= left
        self._deadline = time.ticks_add(now, grant)
        self._on = True
        self._grace = False
        self.alarms &= ~ALARM_BOLT  # re-judged after relocking
        self._drive.set(1)
        try:
            self._timer.arm(grant, self._expire_cb)
        except Exception:
            self._drive.set(0)  # never energised without its cap
            self._off(now)
            raise
        return grant

    def lock(self, now_ms=None):
        """De-energise now (fail-secure: the bolt extends unpowered)."""
        self._timer.cancel()
        self._drive.set(0)
        self._settle()
        if self._on:
            self._off(time.ticks_ms() if now_ms is None else now_ms)
        self._fired = False

    def energized(self):
        """The drive pin as it is now (the cap may have dropped it)."""
        return self._drive.active() == 1

    def rest_left(self, now_ms=None):
        """ms until unlock() is accepted again; 0 if now."""
        if not self._resting or self._on:
            return 0
        now = time.ticks_ms() if now_ms is None else now_ms
        return max(0, time.ticks_diff(self._rest_until, now))

    # -- switches and events -------------------------------------------------
    def _push(self, code):
        if self._qlen >= _QUEUE:
            self.dropped_events += 1
        else:
            self._q[(self._qhead + self._qlen) % _QUEUE] = code
            self._qlen += 1

    def next_event(self):
        """The oldest queued event code, or None."""
        if not self._qlen:
            return None
        code = self._q[self._qhead]
        self._q[self._qhead] = None
        self._qhead = (self._qhead + 1) % _QUEUE
        self._qlen -= 1
        return code

    def update(self, now):
        """Sample the switches (every 20-50 ms) and return the oldest event
        code or None. Events falling due together queue up for later calls
        or next_event(). Allocation-free."""
        if self._on and not self._fired and time.ticks_diff(now, self._deadline) >= _LATE_MS:
            # The timer's callback is late or lost: end the window here.
            self._drive.set(0)
            self.late_caps += 1
            self._fired_at = now
            self._fired = True
        self._settle()
        if self._grace and time.ticks_diff(now, self._off_at) >= self.relock_grace_ms:
            self._grace = False
        if self._resting and time.ticks_diff(now, self._rest_until) >= 0:
            self._resting = False
        d = self._door
        prev = d.stable
        r = d.sample(self._door_in.active(), now, self.close_debounce_ms, self.open_debounce_ms)
        if r == 1 and d.cand == 0:
            # The opening starts now: judge it by the lock as it is now, not
            # when the debounce confirms it.
            self._open_auth = self._on or self._grace
        elif r == 2:
            if d.stable == 0:
                self._opened_at = d.changed_at
                self._held_told = False
                self._push(DOOR_OPENED)
                if prev == 1 and not self._open_auth:
                    self.alarms |= ALARM_FORCED
                    self._push(DOOR_FORCED)
            else:
                self.alarms &= ~(ALARM_FORCED | ALARM_HELD_OPEN)
                self._verify_from = now
                self._push(DOOR_CLOSED)
        if d.stable == 0 and not self._held_told and \
                time.ticks_diff(now, self._opened_at) >= self.held_open_ms:
            self._held_told = True
            self.alarms |= ALARM_HELD_OPEN
            self._push(DOOR_HELD_OPEN)
        b = self._bolt
        prev = b.stable
        if b.sample(self._bolt_in.active(), now, self.bolt_debounce_ms, self.bolt_debounce_ms) == 2:
            if b.stable == 1:
                self.alarms &= ~ALARM_BOLT
                self._push(BOLT_ENGAGED)
            else:
                self._verify_from = now
                if prev == 1:
                    self._push(BOLT_RELEASED)
        if not self._on and d.stable == 1 and b.stable != 1 and not self.alarms & ALARM_BOLT and \
                time.ticks_diff(now, self._verify_from) >= self.bolt_verify_ms:
            self.alarms |= ALARM_BOLT
            self._push(BOLT_NOT_ENGAGED)
        return self.next_event()

    # -- queries -----------------------------------------------------------
    def door(self):
        """OPEN, CLOSED or UNKNOWN, debounced."""
        s = self._door.stable
        return CLOSED if s == 1 else OPEN if s == 0 else UNKNOWN

    def bolt(self):
        """ENGAGED, NOT_ENGAGED or UNKNOWN, debounced."""
        s = self._bolt.stable
        return ENGAGED if s == 1 else NOT_ENGAGED if s == 0 else UNKNOWN

    def secure(self):
        """Locked, door shut, bolt in its keeper and no alarm."""
        return (not self.energized() and self._door.stable == 1
                and self._bolt.stable == 1 and not self.alarms)

    def state(self, now=None):
        """JSON-able snapshot (allocates: for reports, not the poll loop)."""
        if now is None:
            now = time.ticks_ms()
        on = self.energized()
        return {
            "name": self.name, "kind": self.kind, "energized": on,
            "energized_ms": time.ticks_diff(now, self._on_since) if on else 0,
            "door": self.door(), "door_ms": time.ticks_diff(now, self._door.changed_at),
            "bolt": self.bolt(), "bolt_ms": time.ticks_diff(now, self._bolt.changed_at),
            "alarms": [n for bit, n in _ALARM_NAMES if self.alarms & bit],
            "rest_left_ms": self.rest_left(now), "energize_count": self.energize_count,
            "cap_count": self.cap_count, "late_caps": self.late_caps,
            "dropped_events": self.dropped_events,
        }


def from_board(board, cfg, **timings):
    """A DoorLock for one board lock entry, on kiosk.hw.hal objects; timings
    are DoorLock's keyword options."""
    from kiosk.hw import hal
    return DoorLock(cfg, hal.Out(cfg["drive_pin"]), hal.In(cfg["bolt_pin"]),
                    hal.In(cfg["door_pin"]), hal.OneShot(board["mcu"]), **timings)
