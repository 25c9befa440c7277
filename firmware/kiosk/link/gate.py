# The command gate: the only way from the network to the controller. A
# command reaches controller.submit only if it is small, valid JSON, the
# right version, signed with this kiosk's key, well formed, fresh and never
# seen before. Every refusal is journaled and, when the command's id is
# known, answered; no input, however broken, raises out of here.
import json
from kiosk import files
from micropython import const
from kiosk.link import auth
from kiosk import clock
from kiosk.text import clean
from kiosk.contract import MAX_PAYLOAD, VERSION
from kiosk.contract import K_REFUSED

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
                 path="seen.json", now=clock.now, max_seen=MAX_SEEN):
        """event(kind, fields) journals; submit(id, op, args, by) is the
        controller's (by: the person the host says asked, or None); reply(id, state, info) answers the host; local maps
        op names the link handles itself to handler(id, args) -> state (or
        None for bad args)."""
        self.key = key
        self.max_age = max_age_s
        self._event = event
        self._submit = submit
        self._reply = reply
        self.local = local or {}
        self.path = path
        self._now = now
        self._max = max_seen
        self.accepted = 0
        self.counts = {}  # refusal reason -> count
        self._seen = {}  # command id -> its exp
        self._floor = 0  # no command expiring at or before this is accepted
        self._load()

    # -- replay memory on flash ---------------------------------------------
    def _load(self):
        try:
            d = files.load_json(self.path)
            if d is not None:
                self._floor = int(d["floor"])
                self._seen = {str(k): int(v) for k, v in d["ids"].items()}
        except Exception:  # torn or damaged: start empty
            pass

    def _save(self):
        """Replace the file atomically: a power cut leaves the old or the
        new list, and the new one is on flash before the command acts."""
        files.write_json(self.path, {"floor": self._floor, "ids": self._seen})

    def _remember(self, cid, exp, now):
        """Remember cid until it expires. When the list is full the entry
        expiring first is forgotten and the floor rises to its expiry, but
        never past the last expiry a command sent now could have: otherwise
        a host whose clock ran far ahead would leave a floor that refuses
        every later command until that far-off day."""
        seen = self._seen
        for k in [k for k in seen if seen[k] < now]:
            self._floor = max(self._floor, seen.pop(k))
        cap = now + FUTURE_S + self.max_age
        while len(seen) >= self._max:
            old = None
            for k in seen:
                if old is None or seen[k] < seen[old]:
                    old = k
            self._floor = max(self._floor, min(seen.pop(old), cap))
        seen[cid] = exp
        self._save()

    def seen(self, cid):
        return cid in self._seen

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
        now = self._now()
        why = None
        if exp < now:
            why = "expired"
        elif iat > now + FUTURE_S:
            why = "not_yet_valid"
        elif exp < iat or exp - iat > self.max_age:
            why = "bad_expiry"
        elif cid in self._seen or exp <= self._floor:
            return self.refuse("replayed", cid, op)
        if cid not in self._seen:
            # Signed by the host: remember it whatever happens next, so it
            # cannot come back later (say once it is no longer too early).
            self._remember(cid, exp, now)
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
