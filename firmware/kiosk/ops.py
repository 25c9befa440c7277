# Operations (pickup, restock, service actions) as job executions: each has
# an id from the host, a kind, explicit steps and exactly one terminal
# state. The operation in progress is kept on flash at every step, so after
# a reset the controller can say how it ended, and never runs it again.
from kiosk import store

QUEUED = "queued"
IN_PROGRESS = "in_progress"
SUCCEEDED = "succeeded"
FAILED = "failed"
TIMED_OUT = "timed_out"
REJECTED = "rejected"
CANCELLED = "cancelled"
TERMINAL = (SUCCEEDED, FAILED, TIMED_OUT, REJECTED, CANCELLED)

CURRENT = "op.json"

# What a reset during each step of a door cycle means for the medicine:
# before the door was unlocked nothing left the bin; once it was unlocked
# nobody can say (the patient may have taken it); once the door was seen
# open and closed again it was released. "unlocking" is on flash from just
# before the coil is powered until "waiting_open" is written, so a reset
# in it may follow the unlock: unknown.
_NOT_RELEASED = ("homing", "moving")


class Op:

    def __init__(self, op_id, kind, args, boot=0):
        self.id = op_id
        self.kind = kind
        self.args = args
        self.state = QUEUED
        self.step = None
        self.reason = None
        self.opened = False
        self.boot = boot

    def record(self):
        return {"id": self.id, "kind": self.kind, "args": self.args, "state": self.state,
                "step": self.step, "opened": self.opened, "boot": self.boot}

    def persist(self):
        """Keep this operation's progress on flash (door-cycle operations
        only: they are the ones a reset can leave half done)."""
        store.write_json(CURRENT, self.record())

    def finish(self, state, reason=None):
        self.state = state
        self.reason = reason
        store.remove(CURRENT)


def interrupted():
    """The operation a reset cut short, as a terminal record, or None. It
    is removed from flash: the caller journals it once and never resumes it."""
    rec = store.read_json(CURRENT)
    store.remove(CURRENT)
    if not isinstance(rec, dict) or "id" not in rec:
        return None
    step = rec.get("step")
    if rec.get("opened"):
        outcome = "released"
    elif step in _NOT_RELEASED or step is None:
        outcome = "not_released"
    else:
        outcome = "unknown"
    return {"id": rec["id"], "kind": rec.get("kind"), "args": rec.get("args"),
            "state": FAILED, "reason": "reset", "step": step, "outcome": outcome,
            "boot": rec.get("boot")}
