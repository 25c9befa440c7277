# kiosk.link.gate: only a small, valid, signed, well-formed, fresh and new
# command reaches the controller; every refusal is journaled and, when the
# command's id is known, answered.
import json
from kiosk.link import auth
from kiosk.link.gate import Gate
from kiosk.core.journal import Journal

KEY = b"0123456789abcdef0123456789abcdef"
NOW = 1800000000


class Rig:
    def __init__(self, path="seen.json", max_seen=32):
        self.j = Journal("journal")
        self.submitted = []
        self.by = []
        self.replies = []
        self.now = NOW
        self.synced = True
        self.local_calls = []
        self.gate = self._gate(path, max_seen)

    def _gate(self, path="seen.json", max_seen=32):
        return Gate(KEY, 300, self.j.append, self.submit, self.reply,
                    {"resend": self.local}, path, lambda: self.now, max_seen, lambda: self.synced)

    def restart(self, max_seen=32):
        self.gate = self._gate(max_seen=max_seen)

    def submit(self, cid, op, args, by):
        self.submitted.append((cid, op, args))
        self.by.append(by)
        return "queued"

    def local(self, cid, args):
        self.local_calls.append(cid)
        return "succeeded" if args.get("from") else None

    def reply(self, cid, state, info):
        self.replies.append((cid, state, info))

    def last(self):
        return json.loads(self.j.read_from(self.j.last_seq, 1)[0][1])


def cmd(cid="c1", op="pickup", args=None, iat=None, exp=None, key=KEY, **extra):
    d = {"v": 1, "id": cid, "op": op, "iat": NOW if iat is None else iat,
         "exp": NOW + 60 if exp is None else exp, "args": {"order": "o1", "bin": 2} if args is None else args}
    d.update(extra)
    return json.dumps(auth.sign(key, d)).encode()


def refused(r, payload, why, cid=None):
    seq = r.j.last_seq
    n_replies = len(r.replies)
    n_sub = len(r.submitted)
    assert r.gate.handle(payload) == why, why
    rec = r.last()
    assert r.j.last_seq == seq + 1, "one journal record per refusal"
    assert rec["k"] == "refused" and rec["why"] == why, rec
    assert rec.get("id") == cid, rec
    assert len(r.submitted) == n_sub, "refused command reached the controller"
    if cid is None:
        assert len(r.replies) == n_replies
    else:
        assert r.replies[-1] == (cid, "rejected", {"reason": why}), r.replies[-1]


def test_good_command_is_submitted_once():
    r = Rig()
    assert r.gate.handle(cmd()) == "queued"
    assert r.submitted == [("c1", "pickup", {"order": "o1", "bin": 2})]
    assert r.gate.accepted == 1
    refused(r, cmd(), "replayed", "c1")


def test_the_person_named_in_by_reaches_the_controller():
    r = Rig()
    assert r.gate.handle(cmd("c1")) == "queued"
    assert r.gate.handle(cmd("c2", by="maria.lopez")) == "queued"
    assert r.gate.handle(cmd("c3", by="\u00e9lodie-\u836f")) == "queued"
    assert r.by == [None, "maria.lopez", "\u00e9lodie-\u836f"]
    # by is signed like the rest: changed after signing, the command is forged.
    d = json.loads(cmd("c4", by="maria.lopez"))
    d["by"] = "someone.else"
    refused(r, json.dumps(d).encode(), "bad_signature", "c4")
    # Not text, empty, too long, or text no host could decode: refused, never run.
    for i, bad in enumerate((7, "", "x" * 65, ["a"], True)):
        refused(r, cmd("b%d" % i, by=bad), "bad_schema", "b%d" % i)
    assert len(r.submitted) == 3


def test_size_and_parse_refusals():
    r = Rig()
    big = cmd(args={"pad": "x" * 1100})
    assert len(big) > 1024
    refused(r, big, "oversized")
    refused(r, None, "oversized")
    refused(r, b'{"v":1,"id":"c1"', "bad_json")
    refused(r, b"\xff\xfe\x00garbage", "bad_json")
    refused(r, b"[" * 500 + b"]" * 500, "bad_version")  # parses: a list, not a command
    refused(r, b"[" * 1000, "bad_json")
    refused(r, b"", "bad_json")
    refused(r, b"42", "bad_version")
    refused(r, b'["v", 1]', "bad_version")


def test_version_and_signature_refusals():
    r = Rig()
    d = json.loads(cmd(cid="c2"))
    d["v"] = 2
    refused(r, json.dumps(d).encode(), "bad_version", "c2")
    d["v"] = True
    refused(r, json.dumps(d).encode(), "bad_version", "c2")
    refused(r, cmd(cid="c3", key=b"another key of at least 16 bytes"), "bad_signature", "c3")
    d = json.loads(cmd(cid="c4"))
    d["args"]["bin"] = 3  # tampered after signing
    refused(r, json.dumps(d).encode(), "bad_signature", "c4")
    d = json.loads(cmd(cid="c5"))
    del d["sig"]
    refused(r, json.dumps(d).encode(), "bad_signature", "c5")
    deep = {"v": 1, "id": "c6", "op": "x", "iat": NOW, "exp": NOW + 9, "args": {}}
    x = deep["args"]
    for i in range(20):
        x["a"] = {}
        x = x["a"]
    deep["sig"] = "0" * 64
    refused(r, json.dumps(deep).encode(), "bad_signature", "c6")
    assert r.submitted == []


def test_valid_signature_on_malformed_command():
    r = Rig()
    refused(r, cmd(cid="s1", args=[1, 2]), "bad_schema", "s1")
    refused(r, cmd(cid="s2", iat="now"), "bad_schema", "s2")
    refused(r, cmd(cid="s3", extra_field=1), "bad_schema", "s3")
    refused(r, cmd(cid="x" * 65), "bad_schema")
    refused(r, cmd(cid=7), "bad_schema")
    refused(r, cmd(cid="s4", op=""), "bad_schema", "s4")
    refused(r, cmd(cid="s5", exp=True), "bad_schema", "s5")
    assert r.submitted == []


def test_freshness_refusals():
    r = Rig()
    refused(r, cmd(cid="f1", iat=NOW - 100, exp=NOW - 2), "expired", "f1")
    refused(r, cmd(cid="f2", iat=NOW + 31, exp=NOW + 60), "not_yet_valid", "f2")
    refused(r, cmd(cid="f3", iat=NOW, exp=NOW + 301), "bad_expiry", "f3")
    refused(r, cmd(cid="f4", iat=NOW - 10, exp=NOW - 1), "expired", "f4")
    refused(r, cmd(cid="f5", iat=NOW + 10, exp=NOW + 5), "bad_expiry", "f5")
    assert r.gate.handle(cmd(cid="f6", iat=NOW + 30, exp=NOW + 30)) == "queued"
    # Too early then is not good later: the same command stays refused.
    r.now = NOW + 40
    refused(r, cmd(cid="f2", iat=NOW + 31, exp=NOW + 60), "replayed", "f2")


def test_replay_memory_survives_a_restart():
    r = Rig()
    assert r.gate.handle(cmd(cid="p1")) == "queued"
    r.restart()
    refused(r, cmd(cid="p1"), "replayed", "p1")
    assert r.gate.handle(cmd(cid="p2")) == "queued"
    assert len(r.submitted) == 2


def test_replay_memory_is_bounded_and_still_safe():
    r = Rig(max_seen=4)
    for i in range(6):
        assert r.gate.handle(cmd(cid="b%d" % i, exp=NOW + 10 + i)) == "queued"
    assert len(r.gate._seen) <= 4
    # b0 and b1 were forgotten, but nothing expiring that early can pass.
    refused(r, cmd(cid="b0", exp=NOW + 10), "replayed", "b0")
    refused(r, cmd(cid="b1", exp=NOW + 11), "replayed", "b1")
    # Purged by time: the clock stepping back does not reopen the window.
    r.now = NOW + 100
    assert r.gate.handle(cmd(cid="late", iat=NOW + 90, exp=NOW + 200)) == "queued"
    r.now = NOW
    refused(r, cmd(cid="b5", exp=NOW + 15), "replayed", "b5")
    r.restart()
    refused(r, cmd(cid="b4", exp=NOW + 14), "replayed", "b4")


def test_far_future_commands_do_not_lock_out_later_ones():
    # A host whose clock ran a day ahead signs more commands than the
    # replay list holds: all refused, and the kiosk still takes commands
    # from a host with the right time.
    r = Rig(max_seen=4)
    for i in range(6):
        refused(r, cmd(cid="ff%d" % i, iat=NOW + 86400, exp=NOW + 86460 + i), "not_yet_valid", "ff%d" % i)
    assert r.gate._floor <= NOW, r.gate._floor
    assert r.gate.handle(cmd(cid="fresh", iat=NOW + 400, exp=NOW + 460)) == "not_yet_valid"
    r.now = NOW + 400
    assert r.gate.handle(cmd(cid="fresh2", iat=NOW + 400, exp=NOW + 460)) == "queued"
    r.restart()
    assert r.gate.handle(cmd(cid="fresh3", iat=NOW + 401, exp=NOW + 461)) == "queued"
    # The ones still remembered stay refused once their day comes.
    r.now = NOW + 86400
    refused(r, cmd(cid="ff5", iat=NOW + 86400, exp=NOW + 86465), "replayed", "ff5")


def test_local_ops_and_bad_args():
    r = Rig()
    assert r.gate.handle(cmd(cid="r1", op="resend", args={"from": 3, "to": 9})) == "succeeded"
    refused(r, cmd(cid="r2", op="resend", args={}), "bad_args", "r2")
    assert r.local_calls == ["r1", "r2"] and r.submitted == []


def test_nothing_raises_out_of_the_gate():
    r = Rig()

    def boom(cid, op, args):
        raise RuntimeError("controller fault")
    r.gate._submit = boom
    assert r.gate.handle(cmd(cid="e1")) == "internal"
    assert r.last()["why"] == "internal"

    def full(kind, fields):
        raise OSError(28)  # ENOSPC: the flash is full
    r.gate._event = full
    r.gate._submit = r.submit
    assert r.gate.handle(b"nonsense") == "bad_json"
    assert r.gate.handle(cmd(cid="e2")) == "queued"


def test_a_copy_of_a_command_is_replayed_whatever_its_time_says():
    # A copy of a running command must never be refused for a reason the
    # host could read as the command's own outcome (expired, say).
    r = Rig()
    assert r.gate.handle(cmd(cid="run", exp=NOW + 60)) == "queued"
    r.now = NOW + 100                     # past its exp: the copy is expired too
    refused(r, cmd(cid="run", exp=NOW + 60), "replayed", "run")
    assert r.gate.handle(cmd(cid="next", iat=NOW + 100, exp=NOW + 160)) == "queued"   # forgets "run"
    assert not r.gate.seen("run")
    refused(r, cmd(cid="run", exp=NOW + 60), "replayed", "run")
    # Unauthenticated copies are refused before any of that, by their signature.
    d = json.loads(cmd(cid="next", iat=NOW + 100, exp=NOW + 160))
    d["sig"] = "0" * 64
    refused(r, json.dumps(d).encode(), "bad_signature", "next")
    assert [c[0] for c in r.submitted] == ["run", "next"]


def test_an_unreadable_replay_memory_fails_closed():
    # seen.json torn or damaged (the flash, or someone with the board): a
    # captured command must not run again after the reboot.
    r = Rig()
    assert r.gate.handle(cmd(cid="cap", exp=NOW + 250)) == "queued"
    for damaged in (b'{"floor": 0, "ids": {"cap": 18', b"\xff" * 40, b'{"floor": "x", "ids": []}'):
        with open("seen.json", "wb") as f:
            f.write(damaged)
        r.synced = False
        r.restart()
        assert r.gate.lost
        fault = r.last()
        assert fault["k"] == "fault" and fault["code"] == "replay_memory_lost", fault
        # Until the clock has the host's time, nothing passes.
        refused(r, cmd(cid="cap", exp=NOW + 250), "memory_lost", "cap")
        refused(r, cmd(cid="new1", exp=NOW + 60), "memory_lost", "new1")
        # Then nothing a command valid before the loss could carry passes.
        r.synced = True
        refused(r, cmd(cid="cap", exp=NOW + 250), "memory_lost", "cap")
        refused(r, cmd(cid="new2", iat=NOW + 20, exp=NOW + 320), "memory_lost", "new2")
        assert not r.gate.lost
    r.restart()       # the floor is on flash now: still closed for those
    refused(r, cmd(cid="cap", exp=NOW + 250), "replayed", "cap")
    r.now = NOW + 331
    assert r.gate.handle(cmd(cid="later", iat=NOW + 331, exp=NOW + 391)) == "queued"
    assert [c[0] for c in r.submitted] == ["cap", "later"]
    # An absent file is a new board's empty memory, not a loss.
    import os
    os.remove("seen.json")
    r.restart()
    assert not r.gate.lost


def test_commands_issued_for_later_never_raise_the_floor():
    # A stolen key (or a host whose clock ran ahead) signs more commands
    # for later than the memory holds, far ahead or just past the 30 s a
    # command may be early: commands issued now still pass, and no command
    # accepted now is forgotten to make room.
    r = Rig(max_seen=6)
    for i in range(3):
        assert r.gate.handle(cmd(cid="ok%d" % i, exp=NOW + 60 + i)) == "queued"
    for i in range(40):
        far = i % 2 == 0
        iat = NOW + 86400 + i if far else NOW + 31 + i
        refused(r, cmd(cid="ff%d" % i, iat=iat, exp=iat + 299), "not_yet_valid", "ff%d" % i)
    assert r.gate._floor <= NOW, r.gate._floor
    for i in range(3):
        refused(r, cmd(cid="ok%d" % i, exp=NOW + 60 + i), "replayed", "ok%d" % i)
    assert r.gate.handle(cmd(cid="legit", exp=NOW + 60)) == "queued"
    r.restart(max_seen=6)
    assert r.gate.handle(cmd(cid="legit2", exp=NOW + 60)) == "queued"
    refused(r, cmd(cid="ok1", exp=NOW + 61), "replayed", "ok1")
    # Full of commands issued now: one issued for later is not kept (and
    # pushes nothing out); the ones issued now stay refused.
    for i in range(3):
        assert r.gate.handle(cmd(cid="n%d" % i, exp=NOW + 70 + i)) == "queued"
    refused(r, cmd(cid="x", iat=NOW + 100, exp=NOW + 200), "not_yet_valid", "x")
    for cid in ("ok0", "ok2", "legit", "legit2", "n0"):
        assert r.gate.seen(cid) or r.gate._floor >= NOW + 60, cid


def test_a_replay_memory_the_flash_cannot_keep_refuses_the_command():
    r = Rig(path="no_such_dir/seen.json")
    refused(r, cmd(cid="s1"), "storage_full", "s1")
    assert r.submitted == []
    # Still remembered in RAM: a copy is a replay.
    refused(r, cmd(cid="s1"), "replayed", "s1")
