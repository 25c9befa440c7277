# A polled switch, debounced: the door and bolt switches of a lock and the
# buttons at the kiosk all read through it. Allocation-free.
import time


class Debounced:
    """A polled switch whose state changes only after it has read the new
    value without a break for that direction's debounce time."""

    def __init__(self, now):
        self.stable = -1      # unknown until the first debounced reading
        self.cand = -1
        self.since = now      # start of the current candidate
        self.changed_at = now # start of the stable state

    def sample(self, raw, now, ms_to_1, ms_to_0):
        """0: nothing new, 1: a candidate began, 2: the state changed."""
        if raw == self.stable:
            self.cand = -1
            return 0
        if raw != self.cand:
            self.cand = raw
            self.since = now
            return 1
        if time.ticks_diff(now, self.since) >= (ms_to_1 if raw else ms_to_0):
            self.stable = raw
            self.cand = -1
            self.changed_at = self.since
            return 2
        return 0
