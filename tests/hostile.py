"""Hostile input at the kiosk: a seeded generator of bad command payloads and
a runner that publishes them to kiosk/<id>/cmd over a real broker, against a
running kiosk (the real firmware, normally an emulated one), and checks that
it neither crashed nor actuated and that every message came back to the host
as a `refused` event with the reason docs/protocol.md gives.

    from hostile import run
    report = run(fleet, "kiosk-001", key, n=300, seed=1)

Categories (each Case says which refusal reasons are right for it):
- random_bytes: random bytes, 1 to 600 long;
- mutation: a validly signed pickup/unlock/jog/restock command with bytes
  flipped, deleted, inserted or cut off. Its id was already checked by the
  kiosk (sent once too early, see `prime`), so a mutation that keeps the
  signature valid can only come back as too early or a replay;
- restructure: the same commands parsed and changed (a field deleted or
  added, a type swapped), either keeping the old signature or signed again
  with the right key (then with an expiry in the past, so that a command
  this generator mistakes for refused would still not run);
- wrong_key: a fresh, well-formed command signed with another kiosk's key
  (or a random one);
- replay: the exact bytes of a command the kiosk already ran (the probes);
- expired, not_yet_valid (a few far in the future), bad_expiry (exp before
  iat, or a window longer than command_max_age_s);
- oversized: over 1 KiB (parsed by no one) and over 1.5 KiB (skipped by the
  link as it arrives);
- deep: JSON nested 10,000 deep, and nested as deep as fits in 1 KiB;
- floats: a float in a signed field or in args (nothing can sign it), NaN;
- wrong_types: not an object, v/id/op/iat/exp/args/sig of the wrong type;
- unicode: odd but valid text in id/op/args (zero-width, RTL, combining,
  emoji, control characters, line separators), lone surrogates, a BOM,
  invalid UTF-8.

Every command this generator signs with the right key is either refused by
the gate's schema check or has times that the gate refuses (past, or more
than a minute ahead), so nothing it sends can reach the controller even if
an expectation were wrong. The probes (service_start then service_end, which
move nothing) are the only commands meant to run.

Far-future commands are few on purpose: the kiosk remembers every signed,
well-formed command it checked until its exp, in 32 slots, and a dropped
id raises a floor under which every command is `replayed`. More than 32
remembered commands expiring far ahead would push that floor far ahead and
refuse every later command (see the report of benchmarks/hostile_run.py).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from random import Random
from typing import Any, Callable
from urllib.parse import urlparse

import paho.mqtt.client as mqtt

from kiosk_host import protocol
from kiosk_host.contract import COALESCED

REASONS = ("oversized", "bad_json", "bad_version", "bad_signature", "bad_schema", "expired",
           "not_yet_valid", "bad_expiry", "replayed")
CATEGORIES = ("random_bytes", "mutation", "restructure", "wrong_key", "replay", "expired",
              "not_yet_valid", "bad_expiry", "oversized", "deep", "floats", "wrong_types", "unicode")
ACTUATING_OPS = ("pickup", "unlock", "jog", "restock")
ARGS = {"pickup": {"order": "rx-20931", "bin": 3}, "unlock": {"door": "pickup"},
        "jog": {"bins": 2}, "restock": {"order": "rx-777", "bin": 4}}
FAR_FUTURE_MAX = 8        # far-future signed commands per generator (see above)
MAX_PAYLOAD = 1024
RX_BUFFER = 1536
# Door events that only an actuation produces; and journal kinds that only a
# command that reached the controller produces.
ACTUATION_DOOR_EVENTS = ("bolt_released", "lock_cap_reached", "unlock_expired", "door_opened")
ACTUATION_KINDS = ("op", "pickup", "restock")


@dataclass
class Case:
    category: str
    payload: bytes
    expect: frozenset[str]
    cid: str | None = None      # an id only this case carries and the kiosk can read
    note: str = ""


class Generator:
    """Seeded hostile payloads for one kiosk. `now` is the host's clock."""

    def __init__(self, key: bytes, kiosk_id: str, seed: int, other_key: bytes | None = None,
                 now: Callable[[], float] = time.time):
        self.key = key
        self.kiosk = kiosk_id
        self.rnd = Random(seed)
        self.seed = seed
        self.other_key = other_key or Random(seed ^ 0x5EED).randbytes(32)
        self._now = now
        self.ran: list[tuple[bytes, int]] = []   # (payload, exp) of commands the kiosk ran
        self.bases: list[dict] = []
        self.far = 0
        self.n = 0
        self.exps: list[int] = []   # expiries of the commands signed with the kiosk's key so far

    def now(self) -> int:
        return int(self._now())

    def cid(self, tag: str) -> str:
        self.n += 1
        return f"h{self.seed}-{tag}-{self.n}"

    # -- helpers --------------------------------------------------------------------
    def cmd(self, op: str, cid: str, iat: int, exp: int, args: dict | None = None) -> dict:
        return {"v": 1, "id": cid, "op": op, "iat": iat, "exp": exp,
                "args": dict(ARGS.get(op, {})) if args is None else args}

    def signed(self, d: dict, key: bytes | None = None) -> bool:
        """Sign d in place; a payload nothing can sign gets a made-up
        signature. Returns whether the signature is real."""
        try:
            protocol.sign(key or self.key, d)
            if key in (None, self.key) and isinstance(d.get("exp"), int):
                self.exps.append(d["exp"])
            return True
        except (protocol.Unsignable, UnicodeEncodeError):
            d.pop("sig", None)
            d["sig"] = "%064x" % self.rnd.getrandbits(256)
            return False

    def dump(self, d: Any, ascii_only: bool = True) -> bytes:
        return json.dumps(d, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")

    def past(self) -> tuple[int, int]:
        exp = self.now() - self.rnd.randint(5, 10**6)
        return exp - self.rnd.randint(0, 300), exp

    def prime(self) -> list[Case]:
        """The mutation bases: one validly signed command per actuating op,
        issued too early, sent once so that the kiosk remembers its id."""
        now = self.now()
        out = []
        for op in ACTUATING_OPS:
            iat = now + 100 + self.rnd.randint(0, 30)
            d = self.cmd(op, self.cid("base-" + op), iat, iat + 60)
            self.signed(d)
            self.bases.append(d)
            out.append(Case("not_yet_valid", self.dump(d), frozenset({"not_yet_valid"}), d["id"], "base " + op))
        return out

    def probe(self, op: str, args: dict) -> tuple[str, bytes, int]:
        now = self.now()
        cid = f"probe-{uuid.uuid4().hex[:12]}"
        d = self.cmd(op, cid, now, now + 290, args)
        self.signed(d)
        return cid, self.dump(d), d["exp"]

    # -- categories -----------------------------------------------------------------
    def random_bytes(self) -> Case:
        b = self.rnd.randbytes(self.rnd.randint(1, 600))
        return Case("random_bytes", b, frozenset({"bad_json", "bad_version"}))

    def mutation(self) -> Case:
        base = self.rnd.choice(self.bases)
        b = bytearray(self.dump(base))
        for _ in range(self.rnd.randint(1, 4)):
            op = self.rnd.randrange(4)
            i = self.rnd.randrange(len(b))
            if op == 0:
                b[i] ^= 1 << self.rnd.randrange(8)
            elif op == 1:
                del b[i]
            elif op == 2:
                b.insert(i, self.rnd.randrange(256))
            else:
                b = b[:max(1, i)]
        return Case("mutation", bytes(b), frozenset({"bad_json", "bad_version", "bad_signature", "not_yet_valid",
                                                     "replayed", "expired"}), note="bytes of " + base["op"])

    def restructure(self) -> Case:
        orig = self.rnd.choice(self.bases)
        d = {k: v for k, v in orig.items() if k != "sig"}
        d["args"] = dict(d["args"])
        resign = self.rnd.random() < 0.5
        if resign:
            d["id"] = self.cid("re")
            d["iat"], d["exp"] = self.past()
        how = self.rnd.randrange(5)
        f = self.rnd.choice(["v", "id", "op", "iat", "exp", "args"])
        well_formed = {"v": lambda x: type(x) is int and x == 1,
                       "id": lambda x: isinstance(x, str) and 0 < len(x) <= 64,
                       "op": lambda x: isinstance(x, str) and 0 < len(x) <= 32,
                       "iat": lambda x: type(x) is int, "exp": lambda x: type(x) is int,
                       "args": lambda x: isinstance(x, dict)}
        if how == 0:            # delete a field
            del d[f]
            note = "delete " + f
        elif how == 1:          # add a field
            f = self.rnd.choice(["x", "extra", "sig2", "V", "Id", "args2", "", "bin"])
            d[f] = self.rnd.choice([1, "a", None, [], {}])
            note = "add " + f
        elif how == 2:          # swap a field's type
            d[f] = self.rnd.choice([None, True, "1", 7, [], {}, [d[f]], {"x": d[f]}, ""])
            if well_formed[f](d[f]):
                d[f] = None
            note = "swap " + f
        else:                   # change or drop an argument (the gate does not look inside args)
            a = d["args"]
            k = self.rnd.choice(list(a))
            if how == 3:
                del a[k]
            else:
                a[k] = self.rnd.choice(["3", None, [3], -1, 10**30, True])
            note = "args " + k
        v = d.get("v")
        if not (type(v) is int and v == 1):
            why = "bad_version"
        elif not resign:
            why = "bad_signature"
        elif how == 1 or any(k not in d or not well_formed[k](d[k]) for k in well_formed):
            why = "bad_schema"
        else:
            why = "expired"
        if resign:
            self.signed(d)
        else:
            d["sig"] = orig["sig"]
        cid = d.get("id") if resign and well_formed["id"](d.get("id")) else None
        return Case("restructure", self.dump(d), frozenset({why}), cid, ("resigned " if resign else "") + note)

    def wrong_key(self) -> Case:
        now = self.now()
        op = self.rnd.choice(ACTUATING_OPS + ("home",))
        d = self.cmd(op, self.cid("wk"), now, now + 60)
        key = self.other_key if self.rnd.random() < 0.7 else self.rnd.randbytes(32)
        self.signed(d, key)
        return Case("wrong_key", self.dump(d), frozenset({"bad_signature"}), d["id"])

    def replay(self) -> Case:
        payload, exp = self.rnd.choice(self.ran)
        # A copy is "replayed" whatever its time says now (docs/protocol.md).
        return Case("replay", payload, frozenset({"replayed"}))

    def expired(self) -> Case:
        iat, exp = self.past()
        d = self.cmd(self.rnd.choice(ACTUATING_OPS), self.cid("ex"), iat, exp)
        self.signed(d)
        return Case("expired", self.dump(d), frozenset({"expired"}), d["id"])

    def not_yet_valid(self) -> Case:
        now = self.now()
        if self.far < FAR_FUTURE_MAX and self.rnd.random() < 0.1:
            self.far += 1
            iat = now + self.rnd.randint(10**5, 10**9)
        else:
            iat = now + self.rnd.randint(90, 200)
        d = self.cmd(self.rnd.choice(ACTUATING_OPS), self.cid("ny"), iat, iat + self.rnd.randint(1, 60))
        self.signed(d)
        return Case("not_yet_valid", self.dump(d), frozenset({"not_yet_valid"}), d["id"])

    def bad_expiry(self) -> Case:
        now = self.now()
        if self.rnd.random() < 0.5:     # window longer than command_max_age_s (300)
            iat, exp = now - self.rnd.randint(181, 10**6), now + 120
        else:                           # exp before iat, both fresh enough
            iat = now + self.rnd.randint(25, 30)
            exp = now + self.rnd.randint(15, 20)
        d = self.cmd(self.rnd.choice(ACTUATING_OPS), self.cid("be"), iat, exp)
        self.signed(d)
        return Case("bad_expiry", self.dump(d), frozenset({"bad_expiry"}), d["id"])

    def oversized(self) -> Case:
        now = self.now()
        big = self.rnd.random() < 0.5
        size = self.rnd.randint(RX_BUFFER + 64, 4000) if big else self.rnd.randint(MAX_PAYLOAD + 1, 1400)
        d = self.cmd("pickup", self.cid("big"), now, now + 60, {"order": "", "bin": 3})
        body = self.dump(d)
        d["args"]["order"] = "x" * max(0, size - len(body))
        self.signed(d)
        b = self.dump(d)
        return Case("oversized", b, frozenset({"oversized"}), note=f"{len(b)} bytes")

    def deep(self) -> Case:
        k = self.rnd.randrange(5)
        if k == 0:
            return Case("deep", b"[" * 10000 + b"]" * 10000, frozenset({"oversized"}), note="10,000 deep")
        if k == 1:
            return Case("deep", b'{"a":' * 10000 + b"1" + b"}" * 10000, frozenset({"oversized"}), note="10,000 deep object")
        if k == 2:
            n = self.rnd.randint(300, 1000)
            return Case("deep", b"[" * n, frozenset({"bad_json"}), note="unclosed")
        if k == 3:
            n = self.rnd.randint(100, 500)
            return Case("deep", b"[" * n + b"]" * n, frozenset({"bad_version"}), note=f"{n} deep list")
        # a command whose args nest deeper than anything can sign
        iat, exp = self.past()
        d = self.cmd("pickup", self.cid("dp"), iat, exp, {})
        inner: Any = 1
        for _ in range(self.rnd.randint(9, 60)):
            inner = {"a": inner}
        d["args"] = inner
        self.signed(d)
        return Case("deep", self.dump(d), frozenset({"bad_signature"}), d["id"], note="deep args")

    def floats(self) -> Case:
        now = self.now()
        d = self.cmd(self.rnd.choice(ACTUATING_OPS), self.cid("fl"), now - 400, now - 300)
        where = self.rnd.randrange(5)
        if where == 0:
            d["v"] = 1.0
            expect, cid = "bad_version", d["id"]
        elif where == 1:
            d["iat"] = float(d["iat"]) + 0.5
            expect, cid = "bad_signature", d["id"]
        elif where == 2:
            d["exp"] = 1e300
            expect, cid = "bad_signature", d["id"]
        elif where == 3:
            d["args"] = {"order": "o", "bin": 3.0}
            expect, cid = "bad_signature", d["id"]
        else:
            self.signed(d)
            b = self.dump(d).replace(b'"v": 1', b'"v": NaN', 1)
            return Case("floats", b, frozenset({"bad_json"}), note="NaN")
        self.signed(d)
        return Case("floats", self.dump(d), frozenset({expect}), cid, note=["v", "iat", "exp", "args", "nan"][where])

    def wrong_types(self) -> Case:
        iat, exp = self.past()
        k = self.rnd.randrange(6)
        if k == 0:
            v = self.rnd.choice([[], [1, 2], 1, -5, "s", None, True, "", '{"v":1}'])
            return Case("wrong_types", json.dumps(v).encode(), frozenset({"bad_version"}), note="not an object")
        d = self.cmd(self.rnd.choice(ACTUATING_OPS), self.cid("wt"), iat, exp)
        if k == 1:
            d["v"] = self.rnd.choice(["1", True, None, 2, 0, -1, [1], {"v": 1}])
            self.signed(d)
            return Case("wrong_types", self.dump(d), frozenset({"bad_version"}), d["id"], note="v")
        if k == 2:
            d["sig"] = self.rnd.choice([None, 1, [], {}, "", "zz" * 32, "A" * 64])
            return Case("wrong_types", self.dump(d), frozenset({"bad_signature"}), d["id"], note="sig")
        if k == 3:
            f = self.rnd.choice(["iat", "exp", "args"])
            d[f] = self.rnd.choice(["1767225700", None, True, [], [1]])
            self.signed(d)
            return Case("wrong_types", self.dump(d), frozenset({"bad_schema"}), d["id"], note=f)
        if k == 4:
            d["op"] = self.rnd.choice([1, None, True, [], {"op": "pickup"}, "", "p" * 33])
            self.signed(d)
            return Case("wrong_types", self.dump(d), frozenset({"bad_schema"}), d["id"], note="op")
        d["id"] = self.rnd.choice([1, None, False, [], ["a"], {"id": "a"}, "", "i" * 65])
        self.signed(d)
        return Case("wrong_types", self.dump(d), frozenset({"bad_schema"}), note="id")

    ODD = ["\u200b", "\u202e", "e\u0301", "\U0001f48a", "\u0000", "\x07", "\u2028", "\ufeff", "\uffff",
           "\"\\", "\u00e9" * 3, "\U0010ffff", "\u0130", "\u03a3"]

    # What the kiosk's JSON reader makes of bytes no strict UTF-8 reader takes:
    # some it rejects (bad_json); an overlong "/" and an encoded surrogate
    # it reads, so the signature decides (and the gate must not echo them).
    BAD_UTF8 = [(b'"pi\xffkup"', "bad_json"), (b'"pick\xe2\x82"', "bad_json"),
                (b'"\xc0\xafpickup"', "bad_signature"), (b'"\xed\xa0\x80"', "bad_signature")]

    def unicode(self) -> Case:
        iat, exp = self.past()
        k = self.rnd.randrange(6)
        if k == 0:          # invalid UTF-8 in the op of an otherwise fine command
            d = self.cmd("pickup", self.cid("u8"), iat, exp)
            self.signed(d)
            bad, why = self.rnd.choice(self.BAD_UTF8)
            b = self.dump(d).replace(b'"pickup"', bad, 1)
            return Case("unicode", b, frozenset({why}), d["id"] if why != "bad_json" else None,
                        note="invalid utf-8 " + repr(bad))
        if k == 1:          # a byte order mark before the object
            d = self.cmd("pickup", self.cid("bom"), iat, exp)
            self.signed(d)
            return Case("unicode", b"\xef\xbb\xbf" + self.dump(d), frozenset({"bad_json"}), note="bom")
        if k == 2:          # lone surrogates: CPython cannot sign them
            d = self.cmd("pickup", self.cid("sur"), iat, exp, {"order": "a\ud800b", "bin": 3})
            self.signed(d)
            return Case("unicode", self.dump(d), frozenset({"bad_signature"}), d["id"], note="lone surrogate in args")
        odd = "".join(self.rnd.choice(self.ODD) for _ in range(self.rnd.randint(1, 6)))
        # Astral characters sent as escaped surrogate pairs (ensure_ascii)
        # reach the kiosk as two lone surrogates: the signature cannot match.
        ascii_only = self.rnd.random() < 0.5
        pairs = ascii_only and any(ord(ch) > 0xFFFF for ch in odd)
        if k == 3:          # odd text in id, still within 64 characters
            cid = (self.cid("u") + odd)[:64]
            d = self.cmd(self.rnd.choice(ACTUATING_OPS), cid, iat, exp)
            self.signed(d)
            return Case("unicode", self.dump(d, ascii_only), frozenset({"bad_signature" if pairs else "expired"}),
                        None if pairs else cid, note="id" + (" escaped" if ascii_only else ""))
        if k == 4:          # odd text in op: well formed, so the time decides
            d = self.cmd("pickup", self.cid("uo"), iat, exp)
            d["op"] = ("pick" + odd + "up")[:32]
            self.signed(d)
            return Case("unicode", self.dump(d, ascii_only), frozenset({"bad_signature" if pairs else "expired"}),
                        d["id"], note="op" + (" escaped" if ascii_only else ""))
        # 64 astral characters are 64 characters (256 bytes): fine; 65 are too many
        n = self.rnd.choice([64, 65])
        cid = "\U0001f48a" * n
        d = self.cmd("pickup", cid, iat, exp)
        self.signed(d)
        why = "bad_signature" if ascii_only else "expired" if n == 64 else "bad_schema"
        return Case("unicode", self.dump(d, ascii_only), frozenset({why}), cid if why == "expired" else None,
                    note=f"{n} astral id" + (" escaped" if ascii_only else ""))

    def case(self) -> Case:
        cat = self.rnd.choice(CATEGORIES if self.ran else [c for c in CATEGORIES if c != "replay"])
        before = len(self.exps)
        c = getattr(self, cat)()
        if "expired" in c.expect:
            # The kiosk forgets the ids of expired commands into its replay
            # floor: an expired command at or below an earlier one's expiry
            # could be a copy of a forgotten one, and is refused "replayed".
            now = self.now()
            floor = max((e for e in self.exps[:before] if e < now), default=None)
            try:
                exp = json.loads(c.payload).get("exp")
            except ValueError:
                exp = None
            if floor is not None and isinstance(exp, int) and exp <= floor:
                c = Case(c.category, c.payload, c.expect | {"replayed"}, c.cid, c.note)
        return c


def is_cmd_refusal(e: dict) -> bool:
    """A refusal of something sent on cmd (not of an ack). A probe is never
    refused: one that is fails the run (and shifts the refusals)."""
    return e.get("k") == "refused" and "topic" not in e


def refusals_in(e: dict) -> int:
    """How many refusals one record stands for: a coalesced record (the
    kiosk's refusal budget, docs/protocol.md) stands for `count`."""
    return e.get("count", 1) if e.get("why") == COALESCED else 1


def _assign(group: list, reasons: dict) -> list:
    """The reason each case of a coalesced group was refused for: the
    record gives only how many of each, in the cases' order. Cases with
    the fewest acceptable reasons are matched first; what does not match
    is None (wrong)."""
    left = Counter(reasons)
    out: list = [None] * len(group)
    for k in sorted(range(len(group)), key=lambda k: len(group[k].expect)):
        for r in sorted(group[k].expect):
            if left[r] > 0:
                left[r] -= 1
                out[k] = r
                break
    rest = list(left.elements())
    return [r if r is not None else (rest.pop() if rest else None) for r in out]


# -- the host side ----------------------------------------------------------------------
class Observer:
    """A host client of its own (unique client id): subscribes to the kiosk's
    topics, verifies every signature, keeps events, replies and states,
    acknowledges the contiguous events it holds, and publishes commands."""

    def __init__(self, host: str, port: int, kiosk_id: str, key: bytes, user: str | None = None,
                 password: str | None = None):
        self.key = key
        self.base = f"kiosk/{kiosk_id}/"
        self.cv = threading.Condition()
        self.events: dict[int, dict] = {}
        self.replies: list[dict] = []
        self.states: list[dict] = []
        self.tele = 0
        self.unverified: list[tuple[str, bytes]] = []
        self.contig: int | None = None
        self.acked = 0
        self.mark: int | None = None   # count cmd refusals (not the probes') with a seq above this
        self.jid: str | None = None    # the kiosk's journal id (acks name it)
        self.refused = 0
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"hostile-{uuid.uuid4().hex[:10]}",
                             protocol=mqtt.MQTTv311)
        if user:
            self.c.username_pw_set(user, password or "")
        self.c.max_inflight_messages_set(64)
        self.c.max_queued_messages_set(0)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(self.base + "#", qos=1)
        self.c.on_message = self._on_message
        self.c.connect(host, port, keepalive=20)
        self.c.loop_start()
        self._stop = threading.Event()
        threading.Thread(target=self._ack_loop, daemon=True).start()

    def _on_message(self, client, userdata, msg):
        topic = msg.topic[len(self.base):]
        if topic in ("cmd", "ack"):
            return
        try:
            d = json.loads(msg.payload)
        except (ValueError, RecursionError):
            d = None
        with self.cv:
            try:
                ok = isinstance(d, dict) and protocol.verify(self.key, d)
            except UnicodeEncodeError:   # text no signature can cover (lone surrogates)
                ok = False
            if not ok:
                self.unverified.append((topic, msg.payload))
            elif topic == "evt":
                if d["s"] not in self.events:
                    if not self.events and not d.get("replayed") and (self.contig or 0) < d["s"] - 1:
                        # Joined late: what was acknowledged before we came will
                        # not come again; take the first live event as the start.
                        self.contig = d["s"] - 1
                    self.events[d["s"]] = d
                    if self.mark is not None and d["s"] > self.mark and is_cmd_refusal(d):
                        self.refused += refusals_in(d)
                if self.contig is not None:
                    while self.contig + 1 in self.events:
                        self.contig += 1
            elif topic == "reply":
                self.replies.append(d)
            elif topic == "state":
                self.states.append(d)
                if d.get("online"):
                    self.jid = (d.get("journal") or {}).get("id")
                if d.get("online") and self.contig is None:
                    self.contig = d["journal"]["acked"]
                    while self.contig + 1 in self.events:
                        self.contig += 1
            elif topic == "tele":
                self.tele += 1
            self.cv.notify_all()

    def _ack_loop(self) -> None:
        while not self._stop.wait(0.02):
            with self.cv:
                upto = self.contig
            if upto is not None and upto > self.acked:
                self.acked = upto
                msg = protocol.sign(self.key, {"v": 1, "upto": upto, "j": self.jid, "t": int(time.time())})
                self.c.publish(self.base + "ack", json.dumps(msg), qos=0)

    def send(self, payload: bytes) -> None:
        self.c.publish(self.base + "cmd", payload, qos=1)

    def wait(self, pred: Callable[[], Any], timeout: float, what: str) -> Any:
        end = time.monotonic() + timeout
        with self.cv:
            while True:
                r = pred()
                if r:
                    return r
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
                self.cv.wait(min(left, 0.2))

    def reply(self, cid: str, states: tuple[str, ...] = ("succeeded", "failed", "rejected", "timed_out", "cancelled"),
              timeout: float = 10) -> dict:
        return self.wait(lambda: next((r for r in self.replies if r.get("id") == cid and r.get("state") in states), None),
                         timeout, f"a reply to {cid}")

    def close(self) -> None:
        self._stop.set()
        self.c.loop_stop()
        self.c.disconnect()


# -- the runner -------------------------------------------------------------------------
@dataclass
class Report:
    kiosk: str
    seed: int
    categories: dict[str, dict[str, int]] = field(default_factory=dict)
    reasons: dict[str, Counter] = field(default_factory=dict)
    wrong: list[dict] = field(default_factory=list)          # refused for an unexpected reason
    missing_replies: list[str] = field(default_factory=list)
    probes: int = 0
    probe_failures: list[str] = field(default_factory=list)
    crashes: int = 0
    actuations: int = 0
    actuation_evidence: list[str] = field(default_factory=list)
    crash_evidence: list[str] = field(default_factory=list)
    unverified: int = 0
    world_checked: bool = False
    samples: int = 0
    elapsed_s: float = 0.0
    stalled: str | None = None
    trace: tuple = ()     # ([(category, note, expected)], [(seq, why, id)]): to line the two up

    @property
    def sent(self) -> int:
        return sum(c["sent"] for c in self.categories.values())

    @property
    def refused(self) -> int:
        return sum(c["refused"] for c in self.categories.values())

    def ok(self) -> bool:
        return (self.crashes == 0 and self.actuations == 0 and not self.wrong and not self.stalled and self.refused == self.sent
                and not self.probe_failures and not self.missing_replies and self.unverified == 0)

    def table(self) -> str:
        rows = [f"{'category':<14} {'sent':>6} {'refused':>8} {'wrong':>6} {'crashes':>8} {'actuations':>11}  reasons"]
        for cat in CATEGORIES:
            c = self.categories.get(cat)
            if not c:
                continue
            rs = ", ".join(f"{r} {n}" for r, n in self.reasons[cat].most_common())
            rows.append(f"{cat:<14} {c['sent']:>6} {c['refused']:>8} {c['wrong']:>6} {c['crashes']:>8} "
                        f"{c['actuations']:>11}  {rs}")
        rows.append(f"{'total':<14} {self.sent:>6} {self.refused:>8} {len(self.wrong):>6} {self.crashes:>8} "
                    f"{self.actuations:>11}  probes {self.probes} ({len(self.probe_failures)} failed), "
                    f"world samples {self.samples}, unverifiable payloads from the kiosk {self.unverified}, "
                    f"{self.elapsed_s:.1f} s")
        return "\n".join(rows)


def _broker(target) -> tuple[str, int, str | None, str | None, Any]:
    """(host, port, user, password, fleet or None) from a Fleet, a URL or a port."""
    fleet = None
    if hasattr(target, "broker_url"):
        fleet, url = target, target.broker_url
    elif isinstance(target, int):
        url = f"mqtt://127.0.0.1:{target}"
    else:
        url = str(target)
    u = urlparse(url)
    return u.hostname or "127.0.0.1", u.port or 1883, u.username, u.password, fleet


def _world_counts(fleet, kid) -> dict[str, Any]:
    info = fleet.world(kid)
    w = info["world"] or {}
    return {"pid": info["pid"], "boots": info["boots"],
            "energize": {n: lk["energize_count"] for n, lk in w.get("locks", {}).items()},
            "energized": [n for n, lk in w.get("locks", {}).items() if lk["energized"]],
            "steps": {n: c["steps"] for n, c in w.get("carousels", {}).items()},
            "enabled": [n for n, c in w.get("carousels", {}).items() if c["enabled"]],
            "violations": w.get("violation_count", 0)}


def run(target, kiosk_id: str, key: bytes, n: int, seed: int, other_key: bytes | None = None,
        window: int = 48, probe_every: int = 200, settle_s: float = 60.0,
        progress: Callable[[int, int], None] | None = None) -> Report:
    """Send n hostile messages (plus primers and probes) to kiosk_id and
    check the outcome. target: a kiosk_host.emulator.fleet.Fleet (then the
    simulated world is watched too), or a broker URL or port. At most
    `window` messages are outstanding (sent, not yet refused) at a time, so
    that the times in them are still what they were made for when the kiosk
    reads them."""
    host, port, user, password, fleet = _broker(target)
    gen = Generator(key, kiosk_id, seed, other_key)
    rep = Report(kiosk_id, seed)
    for cat in CATEGORIES:
        rep.categories[cat] = {"sent": 0, "refused": 0, "wrong": 0, "crashes": 0, "actuations": 0}
        rep.reasons[cat] = Counter()
    obs = Observer(host, port, kiosk_id, key, user, password)
    sampler_stop = threading.Event()
    seen_bad: list[str] = []
    t0 = time.monotonic()
    try:
        obs.wait(lambda: any(d.get("online") for d in obs.states), 30, f"{kiosk_id} online")
        before = _world_counts(fleet, kiosk_id) if fleet is not None else None

        def probe() -> int:
            """service_start then service_end: both must succeed. Returns the
            seq of the session's start event (0 when it did not come)."""
            rep.probes += 1
            session = f"hostile-{uuid.uuid4().hex[:8]}"
            for op, args in (("service_start", {"session": session}), ("service_end", {})):
                cid, payload, exp = gen.probe(op, args)
                obs.send(payload)
                try:
                    r = obs.reply(cid, timeout=settle_s)
                except TimeoutError as e:
                    rep.probe_failures.append(f"{op}: {e}")
                    return 0
                if r["state"] != "succeeded":
                    rep.probe_failures.append(f"{op}: {r['state']} {r.get('info')}")
                    return 0
                gen.ran.append((payload, exp))
            try:
                return obs.wait(lambda: next((s for s, e in obs.events.items() if e.get("k") == "service"
                                              and e.get("session") == session), 0), settle_s, "the service event")
            except TimeoutError as e:
                rep.probe_failures.append(f"service event: {e}")
                return 0

        start_s = probe()
        if not start_s:
            raise AssertionError(f"{kiosk_id}: the first probe failed: {rep.probe_failures}")
        with obs.cv:   # everything the kiosk journals from here on is part of the run
            obs.mark = start_s
            obs.refused = sum(refusals_in(e) for s, e in obs.events.items() if s > start_s and is_cmd_refusal(e))

        if fleet is not None:
            rep.world_checked = True

            def sample() -> None:
                while not sampler_stop.wait(0.1):
                    try:
                        w = _world_counts(fleet, kiosk_id)
                    except Exception as e:  # a board resetting: counted as a crash below
                        seen_bad.append(f"world not reachable: {e}")
                        continue
                    rep.samples += 1
                    if w["energized"] or w["enabled"]:
                        seen_bad.append(f"sample: locks energised {w['energized']}, carousels enabled {w['enabled']}")

            threading.Thread(target=sample, daemon=True).start()

        def refused_since() -> list[dict]:
            return [e for s, e in sorted(obs.events.items()) if s > start_s and is_cmd_refusal(e)]

        cases: list[Case] = []

        def send(case: Case) -> None:
            cases.append(case)
            obs.send(case.payload)
            obs.wait(lambda: obs.refused >= len(cases) - window, settle_s,
                     f"{kiosk_id} to catch up ({len(cases)} sent, {obs.refused} refused)")

        try:
            for c in gen.prime():
                send(c)
            for i in range(n):
                if i and i % probe_every == 0:
                    probe()
                send(gen.case())
                if progress:
                    progress(i + 1, n)
            obs.wait(lambda: obs.refused >= len(cases), settle_s,
                     f"{kiosk_id} to refuse all {len(cases)} messages ({obs.refused} so far)")
        except TimeoutError as e:   # the kiosk stopped answering: what came back is checked below
            rep.stalled = str(e)
        probe()
        time.sleep(0.3)
        sampler_stop.set()

        # -- what came back ----------------------------------------------------------------
        with obs.cv:
            refusals = refused_since()
            rep.trace = ([(c.category, c.note, sorted(c.expect)) for c in cases],
                         [(e["s"], e.get("why"), e.get("id")) for e in refusals])
            after_events = {s: e for s, e in obs.events.items() if s > start_s}
            replies = list(obs.replies)
            rep.unverified = len(obs.unverified)
        last_cat = "random_bytes"
        order = sorted(after_events)
        ri = 0
        for s in order:
            e = after_events[s]
            if is_cmd_refusal(e):
                ri += refusals_in(e)
                if ri - 1 < len(cases):
                    last_cat = cases[ri - 1].category
            elif e.get("k") in ACTUATION_KINDS or (e.get("k") == "door" and e.get("ev") in ACTUATION_DOOR_EVENTS):
                rep.actuations += 1
                rep.categories[last_cat]["actuations"] += 1
                rep.actuation_evidence.append(f"event {e}")
            elif e.get("k") == "boot":
                rep.crashes += 1
                rep.categories[last_cat]["crashes"] += 1
                rep.crash_evidence.append(f"boot event {e}")
        # One refusal per case, in order: a record of its own, or its place
        # in a coalesced record's count.
        # Coalesced records journaled one after the other (one per class of
        # refusal) stand together for the refusals between their
        # neighbours, in some order. A case with an id takes the reason its
        # reply gave, when the counts have it; the others are matched.
        reply_by_id: dict[str, list[dict]] = {}
        for r in replies:
            reply_by_id.setdefault(r.get("id"), []).append(r)

        def assign(group: list, pool: Counter) -> list:
            left = Counter(pool)
            known: list = [None] * len(group)
            for k, case in enumerate(group):
                rs = [r for r in reply_by_id.get(case.cid, []) if r.get("state") == "rejected"] if case.cid else []
                why = rs[0].get("info", {}).get("reason") if rs else None
                if why is not None and left[why] > 0:
                    left[why] -= 1
                    known[k] = why
            rest = iter(_assign([c for k, c in enumerate(group) if known[k] is None], left))
            return [w if w is not None else next(rest) for w in known]

        per_case: list = []
        pool: Counter = Counter()
        pooled = 0
        for e in refusals + [{}]:
            if e.get("why") == COALESCED:
                pool.update(e.get("reasons") or {})
                pooled += refusals_in(e)
                continue
            if pooled:
                group = cases[len(per_case):len(per_case) + pooled]
                per_case += [{"why": r} for r in assign(group, pool)]
                pool, pooled = Counter(), 0
            if e:
                per_case.append(e)
        for i, case in enumerate(cases):
            c = rep.categories[case.category]
            c["sent"] += 1
            if i >= len(per_case):
                rep.wrong.append({"category": case.category, "expect": sorted(case.expect), "got": None,
                                  "note": case.note, "payload": case.payload[:120]})
                continue
            e = per_case[i]
            why = e.get("why")
            rep.reasons[case.category][why] += 1
            if why in case.expect and (case.cid is None or "id" not in e and "s" not in e or e.get("id") == case.cid):
                c["refused"] += 1
            else:
                c["wrong"] += 1
                rep.wrong.append({"category": case.category, "expect": sorted(case.expect), "got": why,
                                  "id": e.get("id"), "want_id": case.cid, "note": case.note,
                                  "payload": case.payload[:120]})
            if case.cid is not None:
                rs = [r for r in reply_by_id.get(case.cid, []) if r.get("state") == "rejected"]
                if not rs or rs[0].get("info", {}).get("reason") != why:
                    rep.missing_replies.append(case.cid)
        if len(per_case) > len(cases):
            rep.wrong.append({"category": "-", "expect": [], "got": f"{len(per_case) - len(cases)} extra refusals"})

        if fleet is not None:
            after = _world_counts(fleet, kiosk_id)
            if after["pid"] != before["pid"] or after["boots"] != before["boots"]:
                if not rep.crash_evidence:
                    rep.crashes += 1
                rep.crash_evidence.append(f"process {before['pid']} (boot {before['boots']}) -> "
                                          f"{after['pid']} (boot {after['boots']})")
            else:
                if after["energize"] != before["energize"] or after["steps"] != before["steps"]:
                    rep.actuations += 1
                    rep.actuation_evidence.append(f"world: locks {before['energize']} -> {after['energize']}, "
                                                  f"carousel steps {before['steps']} -> {after['steps']}")
                if after["violations"] != before["violations"]:
                    rep.actuation_evidence.append(f"world violations {before['violations']} -> {after['violations']}")
            for bad in seen_bad:
                if bad.startswith("sample"):
                    rep.actuations += 1
                rep.actuation_evidence.append(bad)
    finally:
        sampler_stop.set()
        rep.elapsed_s = time.monotonic() - t0
        obs.close()
    return rep
