# The command gate: the only way from the network to the controller. A
# command reaches controller.submit only if it is small, valid JSON, the
# right version, signed with this kiosk's key, well formed, never seen
# before and fresh. Every refusal is journaled (within the budget of
# kiosk.link.refusals) and, when the command's id is known, answered; no
# input, however broken, raises out of here.
import json
from kiosk import files
from micropython import const
from kiosk.link import auth
from kiosk import clock
from kiosk.text import clean
from kiosk.contract import MAX_PAYLOAD, VERSION
from kiosk.contract import K_REFUSED, K_FAULT

FUTURE_S = const(30)  # how far ahead of our clock an issue time may be
MAX_SEEN = const(32)  # command ids remembered for replay checks
_FIELDS = ("v", "id", "op", "iat", "exp", "args", "sig", "by")


def _int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _text(x, n):
    """x if it is a string of 1..n characters that reads back the same
    anywhere (kiosk.text.clean), else None: a refusal that echoed anything
    else would journal an event no host can decode."""
    return clean(x, n)


class Gate:
    def __init__(self, key, max_age_s, event, submit, reply, local=None,
                 path="seen.json", now=clock.now, max_seen=MAX_SEEN, synced=clock.synced):
        """event(kind, fields) journals; submit(id, op, args, by) is the
        controller's (by: the person the host says asked, or None); reply(id, state, info) answers the host; local maps
        op names the link handles itself to handler(id, args) -> state (or
        None for bad args); synced() says the clock has the host's time."""
        self.key = key
        self.max_age = max_age_s
        self._event = event
        self._submit = submit
        self._reply = reply
        self.local = local or {}
        self.path = path
        self._now = now
        self._synced = synced
        self._max = max_seen
        self.accepted = 0
        self.counts = {}  # refusal reason -> count
        self._seen = {}  # command id -> its exp (issued for now, or earlier)
        self._later = {}  # command id -> its exp, for ids issued for later (not_yet_valid)
        self._floor = 0  # no command expiring at or before this is accepted
        self.lost = False  # the memory on flash was unreadable: closed until the clock is set
        self._closed = 0  # ... and then for every command expiring up to this
        self._load()

    # -- replay memory on flash ---------------------------------------------
    def _load(self):
        """An absent file is a new board's empty memory. One that is there
        but unreadable (torn, damaged, tampered with) could have held any
        id: the gate stays closed until it knows the time (memory_lost),
        then refuses everything a command valid before could carry."""
        try:
            d = files.load_json(self.path)
            if d is None:
                return
            self._floor = int(d["floor"])
            self._seen = {str(k): int(v) for k, v in d["ids"].items()}
            self._later = {str(k): int(v) for k, v in d.get("later", {}).items()}
            return
        except Exception:
            self._seen = {}
            self._later = {}
        self.lost = True
        try:
            self._event(K_FAULT, {"code": "replay_memory_lost", "detail": self.path})
        except Exception:  # a full or failing flash must not stop the boot
            pass

    def _reopen(self, now):
        """The clock has the host's time now: every command that could
        have been seen before the memory was lost expires by now + the
        furthest a command may reach; none of them may pass."""
        self._floor = max(self._floor, now + FUTURE_S + self.max_age)
        self._closed = self._floor
        self.lost = False
        try:
            self._save()
        except OSError:  # still closed on flash; open in RAM with the floor
            pass

    def _save(self):
        """Replace the file atomically: a power cut leaves the old or the
        new list, and the new one is on flash before the command acts."""
        files.write_json(self.path, {"floor": self._floor, "ids": self._seen, "later": self._later})

    def _remember(self, cid, iat, exp, now):
        """Remember cid until it expires (raises OSError when the flash
        cannot keep it). A command issued for now sits in _seen, one issued
        for later in _later. When the memory is full an id issued for later
        is forgotten first, with no floor: otherwise a host whose clock ran
        far ahead (or a stolen key) could, by signing more commands than
        the memory holds, raise the floor past what a command valid now
        carries and lock every later command out. Only an id issued for
        now is dropped to the floor (the earliest expiring first), never
        past the last expiry a command sent now could have. The price: an
        id issued for later that was forgotten could be replayed once its
        time comes (it is signed, and the host was told it was refused)."""
        seen = self._seen
        later = self._later
        for d in (seen, later):
            for k in [k for k in d if d[k] < now]:
                self._floor = max(self._floor, d.pop(k))
        cap = now + FUTURE_S + self.max_age
        early = iat <= now + FUTURE_S
        while len(seen) + len(later) >= self._max:
            d = later if later else seen if early else None
            if d is None:
                return  # full of commands issued for now: this later one is not kept
            old = None
            for k in d:
                if old is None or d[k] < d[old]:
                    old = k
            exp_old = d.pop(old)
            if d is seen:
                self._floor = max(self._floor, min(exp_old, cap))
        (seen if early else later)[cid] = exp
        self._save()

    def seen(self, cid):
        return cid in self._seen or cid in self._later

    def closed(self):
        """The replay memory was lost and commands are still refused for it
        (an alarm the link reports in births and telemetry)."""
        return self.lost or self._closed > self._now()

    # -- checking -------------------------------------------------------------
    def handle(self, payload):
        """Check one message from kiosk/<id>/cmd. Returns the submit state,
        or the refusal reason. Never raises."""
        try:
            return self._handle(payload)
        except Exception:
            try:
                return self.refuse("internal")
            except Exception:
                return "internal"

    def refuse(self, why, cid=None, op=None):
        self.counts[why] = self.counts.get(why, 0) + 1
        f = {"why": why}
        if cid is not None:
            f["id"] = cid
        if op is not None:
            f["op"] = op
        try:
            self._event(K_REFUSED, f)
        except Exception:  # a full or failing flash must not stop the gate
            pass
        if cid is not None:
            self._reply(cid, "rejected", {"reason": why})
        return why

    def _handle(self, m):
        if m is None or len(m) > MAX_PAYLOAD:
            return self.refuse("oversized")
        try:
            d = json.loads(m.decode() if isinstance(m, (bytes, bytearray)) else m)
        except Exception:  # not UTF-8, not JSON, nested beyond the parser
            return self.refuse("bad_json")
        if not isinstance(d, dict):
            return self.refuse("bad_version")
        cid = _text(d.get("id"), 64)
        op = _text(d.get("op"), 32)
        v = d.get("v")
        if not _int(v) or v != VERSION:
            return self.refuse("bad_version", cid, op)
        if not auth.verify(self.key, d):
            return self.refuse("bad_signature", cid, op)
        iat = d.get("iat")
        exp = d.get("exp")
        args = d.get("args")
        by = d.get("by")
        if cid is None or op is None or not _int(iat) or not _int(exp) \
                or not isinstance(args, dict) or (by is not None and _text(by, 64) is None):
            return self.refuse("bad_schema", cid, op)
        for k in d:
            if k not in _FIELDS:
                return self.refuse("bad_schema", cid, op)
        if exp < iat or exp - iat > self.max_age:
            # Never valid, whatever the time: nothing to remember.
            return self.refuse("bad_expiry", cid, op)
        now = self._now()
        if self.lost:
            if not self._synced():
                return self.refuse("memory_lost", cid, op)
            self._reopen(now)
        # A copy of a command already seen is "replayed" whatever its time
        # says now: its refusal must never read as the outcome of the first.
        if self.seen(cid):
            return self.refuse("replayed", cid, op)
        if exp <= self._floor:
            return self.refuse("memory_lost" if exp <= self._closed else "replayed", cid, op)
        why = None
        if exp < now:
            why = "expired"
        elif iat > now + FUTURE_S:
            why = "not_yet_valid"
        try:
            # Signed by the host: remember it whatever happens next, so it
            # cannot come back later (say once it is no longer too early).
            self._remember(cid, iat, exp, now)
        except OSError:  # not kept on flash: it must not run (fail closed)
            return self.refuse("storage_full", cid, op)
        if why:
            return self.refuse(why, cid, op)
        self.accepted += 1
        h = self.local.get(op)
        if h is None:
            return self._submit(cid, op, args, by)
        state = h(cid, args)
        if state is None:
            return self.refuse("bad_args", cid, op)
        return state
