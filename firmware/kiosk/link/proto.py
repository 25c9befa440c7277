# The kiosk's side of docs/protocol.md: topic names and the signed JSON
# payloads the kiosk publishes. Every payload carries "v" (protocol
# version) and "kiosk" (its id) and is signed with auth.sign under the
# kiosk's key. Signatures cannot cover floats (they print differently on
# the kiosk and the host), so a float field `x` is sent as the integer
# `x_centi` (hundredths) and a float inside a list as hundredths.
import json
import binascii
from kiosk.link import auth
from kiosk import clock
from kiosk.contract import VERSION, MAX_PAYLOAD, centi, signable


class Proto:
    def __init__(self, kiosk_id, key, fw="", board="", journal_id=None):
        self.id = kiosk_id
        self.key = key
        self.fw = fw
        self.board = board
        self.jid = journal_id  # the journal's id: in every event, required in acks
        b = "kiosk/%s/" % kiosk_id
        self.t_state = (b + "state").encode()
        self.t_evt = (b + "evt").encode()
        self.t_ack = (b + "ack").encode()
        self.t_tele = (b + "tele").encode()
        self.t_cmd = (b + "cmd").encode()
        self.t_reply = (b + "reply").encode()
        self.prefix = b.encode()

    def seal(self, obj):
        """Add v and kiosk, sign, encode: the bytes to publish. The
        canonical encoding is itself compact JSON, so it is sent as it is
        with the signature appended (same bytes auth.sign would sign, one
        encoding instead of two)."""
        obj["v"] = VERSION
        obj["kiosk"] = self.id
        try:
            c = auth.canonical(signable(obj, True))
        except auth.Unsignable:
            # Nested too deep, or an object JSON cannot hold: keep the plain
            # top-level fields (seq, id, state...) and say what is missing.
            obj = {k: v for k, v in obj.items()
                   if v is None or isinstance(v, (int, str)) and k != "sig"}
            obj["unsignable"] = True
            c = auth.canonical(obj)
        sig = binascii.hexlify(auth.hmac_sha256(self.key, c))
        return b"%s,\"sig\":\"%s\"}" % (c[:-1], sig)

    def event(self, line, replayed, extra=None):
        """A journal record (its JSON bytes) as an evt payload; extra
        fields (never journaled) are signed with it."""
        try:
            d = json.loads(line)
        except ValueError:
            d = {"k": "unreadable"}
        if replayed:
            d["replayed"] = True
        if extra:
            for k in extra:
                if k not in d:
                    d[k] = extra[k]
        if self.jid:
            d["j"] = self.jid
        return self.seal(d)

    def _state(self, online, boot, conn, extra):
        d = {"online": online, "fw": self.fw, "board": self.board, "boot": boot,
             "t": clock.now(), "conn": conn[0], "conns": conn[1]}
        d.update(extra)
        return self.seal(d)

    def birth(self, boot, conn, snap, journal, alarms=()):
        """conn: (this connection's nonce, how many connections this boot
        has made): the will carries the same, so a host can tie the two and
        order connections. journal: {"id", "last", "acked", "first",
        "lost"}. alarms: what the kiosk holds that its journal may not be
        able to carry."""
        return self._state(True, boot, conn, {"snap": snap, "journal": journal,
                                              "alarms": list(alarms)})

    def death(self, boot, conn, why="lost"):
        return self._state(False, boot, conn, {"why": why})

    def reply(self, op_id, state, info):
        d = {"id": op_id, "state": state, "t": clock.now()}
        if info:
            d["info"] = info
        return self.seal(d)

    def tele(self, boot, readings, heap, link, alarms=(), storage=None, journal=None):
        temp = {}
        rh = {}
        for name in readings:
            r = readings[name]
            temp[name] = None if r[0] is None else centi(r[0])
            if len(r) > 1 and r[1] is not None:
                rh[name] = centi(r[1])
        d = {"t": clock.now(), "boot": boot, "temp_centi": temp, "rh_centi": rh, "heap": heap,
             "link": link, "alarms": list(alarms)}
        if storage:
            d["storage"] = storage
        if journal:
            d["journal"] = journal
        return self.seal(d)

    def check_ack(self, payload):
        """(upto, host time) of a valid host ack for this journal, or a
        rejection reason. An ack names the journal it is for ("j"): one
        for another journal (an old board's, before this one was wiped)
        would acknowledge records the host never had."""
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
        if d.get("j") != self.jid:
            return "wrong_journal"
        return u, t
