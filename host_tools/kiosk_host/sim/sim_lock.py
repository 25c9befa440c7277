# A simulated fail-secure door lock and its door: watches the firmware's
# drive pin and drives the bolt switch and door reed the firmware reads.
# The bolt is extended whenever the coil is unpowered; it sits in its
# keeper (bolt switch active) only when the door is shut, since a latch
# bolt snaps into the keeper as the door is pushed closed. The patient can
# open the door only when the bolt is out of the keeper; "force" opens it
# regardless. The drive callback can run from the timer service thread, so
# it only updates existing attributes and pins.
import time
from simworld import SimPin

FAULTS = ("lock_jam", "bolt_sensor_broken", "door_sensor_broken")
_CAP_MARGIN_MS = 100   # scheduling slack before an over-long energising is a violation
_REST_MARGIN_MS = 50


class Lock:
    FAULTS = FAULTS

    def __init__(self, world, cfg):
        self.world = world
        self.name = cfg["name"]
        self.kind = cfg["kind"]
        self.max_energize_ms = cfg["max_energize_ms"]
        self.rest_ms = cfg["rest_ms"]
        self.drive = SimPin(world, cfg["drive_pin"])
        self.bolt_pin = SimPin(world, cfg["bolt_pin"])
        self.door_pin = SimPin(world, cfg["door_pin"])
        self.faults = {k: False for k in FAULTS}
        self.door_closed = True
        self.bolt_extended = True
        self._on = False
        self.energized_since = None
        self.max_energized_ms = 0
        self.last_energized_ms = 0
        self.energize_count = 0
        self.forced_count = 0
        self._off_at = None
        self._rest_needed = 0
        self.drive.watch(self._on_drive)
        self._update_pins()

    # -- physics -------------------------------------------------------------
    def energized(self):
        """Coil powered: the firmware drives the pin active. An output the
        firmware has not configured yet is high-impedance, so unpowered."""
        return self._on

    def bolt_engaged(self):
        return self.bolt_extended and self.door_closed

    def _on_drive(self, active):
        now = time.ticks_ms()
        if active and not self._on:
            if self._off_at is not None:
                rested = time.ticks_diff(now, self._off_at)
                if rested + _REST_MARGIN_MS < self._rest_needed:
                    self.world.violation("lock %s re-energised after %d ms rest, needs %d ms" % (
                        self.name, rested, self._rest_needed))
            self._on = True
            self.energized_since = now
            self.energize_count += 1
            if not self.faults["lock_jam"]:
                self.bolt_extended = False
        elif not active and self._on:
            on_ms = time.ticks_diff(now, self.energized_since)
            self._on = False
            self.energized_since = None
            self.last_energized_ms = on_ms
            if on_ms > self.max_energized_ms:
                self.max_energized_ms = on_ms
            if on_ms > self.max_energize_ms + _CAP_MARGIN_MS:
                self.world.violation("lock %s energised for %d ms, cap %d ms" % (
                    self.name, on_ms, self.max_energize_ms))
            self._off_at = now
            if on_ms >= self.max_energize_ms:
                self._rest_needed = self.rest_ms
            else:
                self._rest_needed = on_ms * self.rest_ms // self.max_energize_ms
            if not self.faults["lock_jam"]:
                self.bolt_extended = True
        else:
            return
        self._update_pins()

    def _cut(self, pin):
        """A cut sensor wire: the line floats to its pull, as on a board."""
        if pin.pull == "up":
            self.world.drive(pin.num, 1)
        elif pin.pull == "down":
            self.world.drive(pin.num, 0)
        else:
            pin.set(0)

    def _update_pins(self):
        if self.faults["bolt_sensor_broken"]:
            self._cut(self.bolt_pin)
        else:
            self.bolt_pin.set(self.bolt_engaged())
        if self.faults["door_sensor_broken"]:
            self._cut(self.door_pin)
        else:
            self.door_pin.set(self.door_closed)

    # -- control verbs -------------------------------------------------------
    def door_action(self, action):
        """open (as a patient: only if the bolt is out of its keeper),
        force (opens regardless) or close."""
        if action == "open":
            if self.door_closed and self.bolt_engaged():
                return {"ok": False, "door": "closed", "reason": "locked"}
            self.door_closed = False
        elif action == "force":
            if self.door_closed:
                self.forced_count += 1
            self.door_closed = False
        elif action == "close":
            self.door_closed = True
        else:
            raise ValueError("unknown door action %r (open, close, force)" % (action,))
        self._update_pins()
        return {"ok": True, "door": "closed" if self.door_closed else "open", "reason": None}

    def set_fault(self, kind, on):
        if kind not in FAULTS:
            raise ValueError("unknown fault %r for lock %s (known: %s)" % (kind, self.name, ", ".join(FAULTS)))
        self.faults[kind] = bool(on)
        if kind == "lock_jam" and not on:
            self.bolt_extended = not self._on  # freed: the spring or coil wins again
        self._update_pins()

    def energized_for_ms(self):
        if not self._on:
            return 0
        return time.ticks_diff(time.ticks_ms(), self.energized_since)

    def state(self):
        current = self.energized_for_ms()
        return {
            "name": self.name,
            "kind": self.kind,
            "energized": self._on,
            "energized_for_ms": current,
            "door": "closed" if self.door_closed else "open",
            "door_closed": self.door_closed,
            "bolt_extended": self.bolt_extended,
            "bolt_engaged": self.bolt_engaged(),
            "max_energized_ms": max(self.max_energized_ms, current),
            "last_energized_ms": self.last_energized_ms,
            "energize_count": self.energize_count,
            "forced_count": self.forced_count,
            "faults": [k for k in FAULTS if self.faults[k]],
        }
