# The kiosk's side of docs/protocol.md: topic names and the signed JSON
# payloads the kiosk publishes. Every payload carries "v" (protocol
# version) and "kiosk" (its id) and is signed with auth.sign under the
# kiosk's key. Signatures cannot cover floats (they print differently on
# the kiosk and the host), so a float field `x` is sent as the integer
# `x_centi` (hundredths) and a float inside a list as hundredths.
import json
from kiosk import auth, clock

VERSION = 1
MAX_PAYLOAD = 1024  # largest command or ack accepted, bytes

try:
    json.dumps(1, separators=(",", ":"))
    _SEP = (",", ":")
except TypeError:
    _SEP = None


def dumps(obj):
    return json.dumps(obj, separators=_SEP) if _SEP else json.dumps(obj)


def centi(x):
    try:
        return int(round(x * 100))
    except (ValueError, OverflowError):  # nan, inf
        return None


def signable(v):
    """v with floats turned into hundredths and tuples into lists, ready
    for the canonical encoding. Dicts are changed in place."""
    if isinstance(v, float):
        return centi(v)
    if isinstance(v, dict):
        ks = [k for k in v if isinstance(v[k], float) or not isinstance(k, str)]
        for k in ks:
            x = v.pop(k)
            if isinstance(x, float):
                v[str(k) + "_centi"] = centi(x)
            else:
                v[str(k)] = x
        for k in v:
            x = v[k]
            if isinstance(x, (dict, list, tuple)):
                v[k] = signable(x)
        return v
    if isinstance(v, (list, tuple)):
        return [signable(x) if isinstance(x, (float, dict, list, tuple)) else x for x in v]
    return v


class Proto:
    def __init__(self, kiosk_id, key, fw="", board=""):
        self.id = kiosk_id
        self.key = key
        self.fw = fw
        self.board = board
        b = "kiosk/%s/" % kiosk_id
        self.t_state = (b + "state").encode()
        self.t_evt = (b + "evt").encode()
        self.t_ack = (b + "ack").encode()
        self.t_tele = (b + "tele").encode()
        self.t_cmd = (b + "cmd").encode()
        self.t_reply = (b + "reply").encode()
        self.prefix = b.encode()

    def seal(self, obj):
        """Add v and kiosk, sign, encode: the bytes to publish."""
        obj["v"] = VERSION
        obj["kiosk"] = self.id
        try:
            auth.sign(self.key, signable(obj))
        except auth.Unsignable:  # nested too deep: say so rather than drop it
            obj = {"v": VERSION, "kiosk": self.id, "unsignable": True,
                   "s": obj.get("s"), "b": obj.get("b"), "k": obj.get("k")}
            auth.sign(self.key, obj)
        return dumps(obj).encode()

    def event(self, line, replayed):
        """A journal record (its JSON bytes) as an evt payload."""
        try:
            d = json.loads(line)
        except ValueError:
            d = {"k": "unreadable"}
        if replayed:
            d["replayed"] = True
        return self.seal(d)

    def _state(self, online, boot, extra=None):
        d = {"online": online, "fw": self.fw, "board": self.board, "boot": boot,
             "t": clock.now()}
        if extra:
            d.update(extra)
        return self.seal(d)

    def birth(self, boot, snap, last_seq, acked):
        return self._state(True, boot, {"snap": snap,
                                        "journal": {"last": last_seq, "acked": acked}})

    def death(self, boot, why="lost"):
        return self._state(False, boot, {"why": why})

    def reply(self, op_id, state, info):
        d = {"id": op_id, "state": state, "t": clock.now()}
        if info:
            d["info"] = info
        return self.seal(d)

    def tele(self, boot, readings, heap, link):
        temp = {}
        rh = {}
        for name in readings:
            r = readings[name]
            temp[name] = None if r[0] is None else centi(r[0])
            if len(r) > 1 and r[1] is not None:
                rh[name] = centi(r[1])
        return self.seal({"t": clock.now(), "boot": boot, "temp_centi": temp,
                          "rh_centi": rh, "heap": heap, "link": link})

    def check_ack(self, payload):
        """(upto, host time) of a valid host ack, or a rejection reason."""
        if len(payload) > MAX_PAYLOAD:
            return "oversized"
        try:
            d = json.loads(payload)
        except Exception:
            return "bad_json"
        if not isinstance(d, dict) or d.get("v") != VERSION:
            return "bad_version"
        if not auth.verify(self.key, d):
            return "bad_signature"
        u = d.get("upto")
        t = d.get("t")
        if (not isinstance(u, int) or isinstance(u, bool) or u < 0
                or not isinstance(t, int) or isinstance(t, bool)):
            return "bad_schema"
        return u, t
