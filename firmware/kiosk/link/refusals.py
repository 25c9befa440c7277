# Refusals on the way to the journal, within a budget. Anyone who can
# publish to kiosk/<id>/cmd or ack can make the kiosk refuse something, as
# fast as the network carries it; journaling each refusal would let such a
# flood rotate unacknowledged records (a forced door...) off the flash while
# the host is away. So each class of refusal has a budget:
#
# - a refusal is journaled on its own while its class has a token (BURST,
#   one more every REFILL_MS) and fewer than UNACKED of its class's records
#   wait for the host's ack;
# - past that it is counted, and the counts go to the journal as one
#   refusal record {"why": "coalesced", "count", "reasons", "since"}: as soon
#   as the class's budget allows again, else at most every SUMMARY_MS, a
#   wait that doubles (up to SUMMARY_MAX_MS) while the last count is
#   unacknowledged. Counts are always journaled before a later refusal, so
#   the journal keeps the order in which refusals happened.
#
# The classes: copies and unauthenticated messages (contract.COPY_REFUSALS,
# which anyone can send), and refusals of correctly signed commands (which
# carry an outcome the host needs). A flood of the first cannot use up the
# budget of the second. Other records pass straight through.
import time
from micropython import const
from kiosk import clock
from kiosk.contract import K_REFUSED, COPY_REFUSALS, COALESCED

BURST = const(16)
REFILL_MS = const(1000)
UNACKED = const(16)
SUMMARY_MS = const(60000)
SUMMARY_MAX_MS = const(3600000)


class _Class:
    """One class of refusals: its budget and what it has only counted."""

    def __init__(self, burst, refill_ms, unacked, summary_ms):
        self.burst = self.tokens = burst
        self.refill = refill_ms
        self.unacked = unacked
        self.t = time.ticks_ms()
        self.seqs = []  # seqs of this class's records not yet acknowledged
        self.count = 0  # refusals counted, not yet journaled
        self.reasons = {}
        self.since = 0
        self.sum_ms = self.wait = summary_ms
        self.sum_t = self.t
        self.sum_seq = 0

    def allows(self, now, acked):
        gained = time.ticks_diff(now, self.t) // self.refill
        if gained > 0:
            self.tokens = min(self.burst, self.tokens + gained)
            self.t = time.ticks_add(self.t, gained * self.refill)
        if self.seqs and self.seqs[0] <= acked:
            self.seqs = [s for s in self.seqs if s > acked]
        return self.tokens > 0 and len(self.seqs) < self.unacked

    def took(self, seq):
        if seq:
            self.seqs.append(seq)


class Refusals:
    def __init__(self, event, journal, burst=BURST, refill_ms=REFILL_MS, unacked=UNACKED,
                 summary_ms=SUMMARY_MS):
        """event(kind, fields) -> seq journals; journal gives .acked."""
        self._event = event
        self._j = journal
        self._classes = (_Class(burst, refill_ms, unacked, summary_ms),
                         _Class(burst, refill_ms, unacked, summary_ms))
        self.coalesced = 0  # refusals journaled only as a count, since boot

    @property
    def count(self):
        """Refusals counted and not journaled yet."""
        return self._classes[0].count + self._classes[1].count

    @property
    def reasons(self):
        out = {}
        for c in self._classes:
            for why, n in c.reasons.items():
                out[why] = out.get(why, 0) + n
        return out

    def __call__(self, kind, fields):
        """Journal one record: a refusal within its budget, else count it.
        Returns the seq, or None when only counted."""
        if kind != K_REFUSED:
            return self._event(kind, fields)
        c = self._classes[0 if fields.get("why") in COPY_REFUSALS else 1]
        now = time.ticks_ms()
        if not c.allows(now, self._j.acked):
            if not c.count:
                c.since = clock.now()
            c.count += 1
            self.coalesced += 1
            why = fields.get("why")
            c.reasons[why] = c.reasons.get(why, 0) + 1
            if time.ticks_diff(now, c.sum_t) >= c.wait:
                self._flush(now)
            return None
        self._flush(now)  # what came before goes first
        c.tokens -= 1
        seq = self._event(kind, fields)
        c.took(seq)
        return seq

    def tick(self, now=None):
        """Journal the counts when a class's budget allows it again, or a
        summary is due (call it now and then)."""
        now = time.ticks_ms() if now is None else now
        acked = self._j.acked
        for c in self._classes:
            if c.count and (c.allows(now, acked) or time.ticks_diff(now, c.sum_t) >= c.wait):
                if c.tokens > 0 and len(c.seqs) < c.unacked:
                    c.tokens -= 1
                self._flush(now)
                return

    def _flush(self, now):
        """Every class's counts, one record each, one after the other: the
        journal keeps the order in which refusals happened."""
        for c in self._classes:
            if c.count:
                self._summary(c, now)

    def _summary(self, c, now):
        acked = c.sum_seq <= self._j.acked
        c.wait = c.sum_ms if acked else min(c.wait * 2, SUMMARY_MAX_MS)
        c.sum_t = now
        f = {"why": COALESCED, "count": c.count, "reasons": c.reasons, "since": c.since}
        try:
            seq = self._event(K_REFUSED, f)
        except Exception:  # the flash failed: keep counting, try again later
            return None
        c.count = 0
        c.reasons = {}
        c.sum_seq = seq or 0
        c.took(seq)
        return seq
