# The outbox: which journal records go to the host next. The journal keeps
# every record until the host acknowledges it (kiosk/<id>/ack, up to a
# seq); here we only track what is in flight on the current connection.
# After any (re)connect we start again from the host's acknowledgement, so
# nothing unacknowledged is ever skipped; the host drops duplicates by seq.
import time
from micropython import const

_RANGES = const(4)  # host resend requests kept at once
_ACK_MAX_MS = const(600000)


class Outbox:
    def __init__(self, journal, window=8, ack_timeout_ms=30000):
        self.j = journal
        self.window = window
        self._pids = [0] * window
        self._seqs = [0] * window
        self.n = 0  # QoS 1 publishes awaiting PUBACK
        self._pid = 0
        self.held = []  # records read from flash, not yet published
        self.ranges = []  # [from, to] the host asked to have again
        self.next = journal.acked + 1
        self.replay_upto = 0  # records up to here are marked "replayed"
        self.top = 0  # highest seq published on this connection
        self.sent = 0
        self.pubacks = 0
        self._ack_to = ack_timeout_ms
        self._ack_wait = ack_timeout_ms
        self._ack_t = time.ticks_ms()

    def restart(self):
        """A new connection: send everything unacknowledged again, marking
        what already existed as replayed."""
        self.n = 0
        self.held = []
        self.ranges = []
        self.next = self.j.acked + 1
        self.replay_upto = self.j.last_seq
        self.top = 0
        self._ack_t = time.ticks_ms()

    def pid(self):
        p = self._pid % 65535 + 1
        self._pid = p
        return p

    def track(self, pid, seq):
        self._pids[self.n] = pid
        self._seqs[self.n] = seq
        self.n += 1
        if seq > self.top:
            self.top = seq

    def puback(self, pid):
        """The broker has the publish with this packet id."""
        n = self.n
        for i in range(n):
            if self._pids[i] == pid:
                n -= 1
                self._pids[i] = self._pids[n]
                self._seqs[i] = self._seqs[n]
                self.n = n
                self.pubacks += 1
                return True
        return False

    def peek(self):
        """(seq, json bytes, replayed) of the next record to publish, or None."""
        if not self.held:
            self._fill()
        return self.held[0] if self.held else None

    def pop(self):
        self.held.pop(0)

    def _fill(self):
        lim = self.window
        while self.ranges:
            r = self.ranges[0]
            recs = self.j.read_from(r[0], lim, r[1])
            if recs and recs[-1][0] < r[1]:
                r[0] = recs[-1][0] + 1
            else:
                self.ranges.pop(0)
            if recs:
                self.held = [(s, line, True) for s, line in recs]
                return
        last = self.j.last_seq
        if self.next > last:
            return
        recs = self.j.read_from(self.next, lim)
        if not recs:
            self.next = last + 1
            return
        self.next = recs[-1][0] + 1
        # A loop, not a comprehension: a comprehension reading `up` would
        # make it a closure cell, allocated on every call, records or not.
        held = []
        for s, line in recs:
            held.append((s, line, s <= self.replay_upto))
        self.held = held

    def host_ack(self, upto):
        """The host stored everything up to upto. Returns True if that is
        news."""
        if upto <= self.j.acked:
            return False
        self.j.ack(upto)
        if self.held:
            self.held = [h for h in self.held if h[0] > upto]
        if self.next <= upto:
            self.next = upto + 1
        self._ack_t = time.ticks_ms()
        self._ack_wait = self._ack_to
        return True

    def resend(self, a, b):
        """The host saw a gap: publish a..b again (as replayed)."""
        if len(self.ranges) >= _RANGES:
            return False
        self.ranges.append([a, b])
        return True

    def check_ack_timeout(self, now):
        """Published records the host has not acknowledged for a while are
        sent again (the host may have missed them while it was away); the
        wait doubles each time nothing comes back."""
        if self.j.acked >= self.top or time.ticks_diff(now, self._ack_t) < self._ack_wait:
            return False
        self.next = self.j.acked + 1
        self.held = []
        if self.top > self.replay_upto:
            self.replay_upto = self.top
        self._ack_t = now
        self._ack_wait = min(self._ack_wait * 2, _ACK_MAX_MS)
        return True

    def unacked(self):
        return self.j.last_seq - self.j.acked
