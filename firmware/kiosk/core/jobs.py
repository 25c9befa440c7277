# Operations (pickup, restock, service actions) as job executions: each has
# an id from the host, a kind, explicit steps and exactly one terminal
# state. The operation in progress is kept on flash at every step, so after
# a reset the controller can say how it ended, and never runs it again.
import json
from kiosk import files
from kiosk.contract import QUEUED, FAILED, DOOR_CYCLE, STOCK_MOVES, K_STOCK

CURRENT = "op.json"     # the door-cycle operation in progress
WAITING = "queue.json"  # door-cycle operations accepted and not yet begun

# What a reset during each step of a door cycle means for the medicine:
# before the door was unlocked nothing left the bin; once it was unlocked
# nobody can say (the patient may have taken it); once the door was seen
# open and closed again it was released. "unlocking" is on flash from just
# before the coil is powered until "waiting_open" is written, so a reset
# in it may follow the unlock: unknown. A restock's label is read before
# the door is unlocked.
_NOT_RELEASED = ("homing", "moving", "scanning_label")


class Refused(Exception):
    """A request the interlocks or the rules refuse; code says why."""

    def __init__(self, code, detail=None):
        super().__init__(code)
        self.code = code
        self.detail = detail


class OpTimeout(Exception):
    """An operation ran out of time (say, a door nobody opened)."""


class OpFailed(Exception):
    """An operation began and could not finish; the argument says why."""


class Op:

    def __init__(self, op_id, kind, args, boot=0, by=None):
        self.id = op_id
        self.kind = kind
        self.args = args
        self.by = by            # the person who asked (the host's `by`), or None
        self.cancelled_by = None
        self.state = QUEUED
        self.step = None
        self.reason = None
        self.opened = False
        self.boot = boot

    def record(self, seq=0):
        """What flash keeps of it; seq is the journal's last record when
        written, so a boot reads only what came after."""
        return {"id": self.id, "kind": self.kind, "args": self.args, "state": self.state,
                "step": self.step, "opened": self.opened, "boot": self.boot, "seq": seq, "by": self.by}

    def persist(self, seq):
        """Keep this operation's progress on flash (door-cycle operations
        only: they are the ones a reset can leave half done)."""
        files.write_json(CURRENT, self.record(seq))

    def finish(self, state, reason=None):
        self.state = state
        self.reason = reason


def save_waiting(queue, seq):
    """Keep the accepted door-cycle operations on flash from the moment
    the host is told they are queued until they begin or end."""
    recs = [op.record(seq) for op in queue if op.kind in DOOR_CYCLE]
    if recs:
        files.write_json(WAITING, recs)
    else:
        files.remove(WAITING)


def done():
    """The operation in progress has its terminal record in the journal:
    forget it on flash."""
    files.remove(CURRENT)


def _journaled(journal, rec):
    """Kinds of the records journaled about rec's operation after it was
    last written to flash."""
    kinds = []
    want = rec["id"]
    seq = rec.get("seq")
    lines = journal.iter_lines(seq + 1 if isinstance(seq, int) and seq >= 0 else 1)
    try:
        for _, line in lines:
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if d.get("id") == want or d.get("after") == want:   # a stock record names it as after
                kinds.append(d.get("k"))
    finally:
        lines.close()
    return kinds


def _closing(rec, journal):
    """The terminal record for one operation a reset cut short, or None
    when the journal already holds one."""
    if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
        return None
    kinds = _journaled(journal, rec)
    if "op" in kinds:
        return None
    kind = rec.get("kind")
    step = rec.get("step")
    # Its pickup (restock, retrieve) record is journaled once the stock
    # changed: close it without journaling that a second time. Likewise a
    # bin already marked uncertain for it (a cut during an earlier closing).
    moved = kind in STOCK_MOVES and kind in kinds
    if rec.get("opened") or moved:
        outcome = "released"
    elif step in _NOT_RELEASED or step is None:
        outcome = "not_released"
    else:
        outcome = "unknown"
    recorded = moved or (kind in STOCK_MOVES and outcome == "unknown" and K_STOCK in kinds)
    out = {"id": rec["id"], "kind": kind, "args": rec.get("args"),
           "state": FAILED, "reason": "reset", "step": step, "outcome": outcome,
           "boot": rec.get("boot")}
    if rec.get("by"):
        out["by"] = rec["by"]
    if recorded:
        out["recorded"] = True
    return out


def interrupted(journal):
    """Terminal records for the operations a reset cut short: the one in
    progress, then those waiting. Each is left out when the journal shows
    it already ended. The files stay until forget() is called, after the
    caller has journaled these, so a reset in between loses nothing."""
    out = []
    cur = files.read_json(CURRENT)
    c = _closing(cur, journal)
    if c:
        out.append(c)
    waiting = files.read_json(WAITING)
    for rec in waiting if isinstance(waiting, list) else ():
        if isinstance(cur, dict) and isinstance(rec, dict) and rec.get("id") == cur.get("id"):
            continue  # begun: op.json is written before queue.json drops it
        c = _closing(rec, journal)
        if c:
            out.append(c)
    return out


def forget():
    """After interrupted()'s records are journaled."""
    files.remove(CURRENT)
    files.remove(WAITING)
