# kiosk.link.outbox (what goes to the host next), kiosk.link.proto (signed payloads)
# and kiosk.clock (following the host's time).
import json
import time
from kiosk.link import auth
from kiosk import clock
from kiosk.core.journal import Journal
from kiosk.link.outbox import Outbox
from kiosk.link.proto import Proto
from kiosk.contract import signable

KEY = b"0123456789abcdef0123456789abcdef"


def _journal(n):
    j = Journal("journal", segment_bytes=512)
    for i in range(n):
        j.append("test", {"i": i})
    return j


def _drain(box, limit=100):
    """Publish everything due, acknowledging each at once (PUBACK)."""
    out = []
    while len(out) < limit:
        rec = box.peek()
        if rec is None:
            break
        box.pop()
        pid = box.pid()
        box.track(pid, rec[0])
        out.append((rec[0], rec[2]))
        assert box.puback(pid)
    return out


def test_after_connect_everything_unacked_goes_in_order_marked_replayed():
    j = _journal(10)
    box = Outbox(j, window=4)
    box.restart()
    j.append("test", {"i": 10})  # new on this connection
    got = _drain(box)
    assert [s for s, _ in got] == list(range(1, 12))
    assert all(r for s, r in got if s <= 10) and got[-1] == (11, False)


def test_window_and_pubacks():
    j = _journal(5)
    box = Outbox(j, window=3)
    box.restart()
    pids = []
    while box.n < box.window:
        rec = box.peek()
        box.pop()
        pids.append(box.pid())
        box.track(pids[-1], rec[0])
    assert box.n == 3
    assert not box.puback(999)
    assert box.puback(pids[1]) and box.n == 2
    assert box.puback(pids[0]) and box.puback(pids[2]) and box.n == 0
    assert box.pubacks == 3


def test_host_ack_skips_and_persists():
    j = _journal(20)
    box = Outbox(j, window=8)
    box.restart()
    box.peek()
    assert box.host_ack(12)
    assert not box.host_ack(12) and not box.host_ack(3)
    got = _drain(box)
    assert [s for s, _ in got] == list(range(13, 21))
    j.close()
    j2 = Journal("journal", segment_bytes=512)
    assert j2.acked == 12
    box2 = Outbox(j2)
    box2.restart()
    assert box2.peek()[0] == 13


def test_resend_range_and_ack_timeout():
    j = _journal(30)
    box = Outbox(j, window=8, ack_timeout_ms=10000)
    box.restart()
    _drain(box)
    t0 = time.ticks_ms()
    box.host_ack(30)
    t1 = time.ticks_ms()       # the ack's time is in [t0, t1]: the checks below hold however slow the VM
    assert box.peek() is None
    assert box.resend(5, 17)
    got = _drain(box)
    assert got == [(s, True) for s in range(5, 18)]
    # Published, never acknowledged by the host: sent again after a while.
    for i in range(3):
        j.append("test", {"i": 100 + i})
    got = _drain(box)
    assert got == [(31, False), (32, False), (33, False)]
    assert not box.check_ack_timeout(time.ticks_add(t0, 9999))
    assert _drain(box) == []
    late = time.ticks_add(t1, 10000)
    assert box.check_ack_timeout(late)
    assert _drain(box) == [(31, True), (32, True), (33, True)]
    assert not box.check_ack_timeout(time.ticks_add(late, 19999)), "the wait doubles"
    assert box.check_ack_timeout(time.ticks_add(late, 20000))
    for i in range(5):
        assert box.resend(1, 2) == (i < 4)


def test_rotated_records_are_skipped_not_looped_on():
    j = Journal("journal", segment_bytes=200, max_segments=2)
    for i in range(40):
        j.append("test", {"i": i})
    box = Outbox(j)
    box.restart()
    got = _drain(box)
    assert got[0][0] >= j.first_seq() and got[-1][0] == j.last_seq
    assert [s for s, _ in got] == list(range(got[0][0], j.last_seq + 1))


def test_payloads_are_signed_and_float_free():
    p = Proto("k1", KEY, "1.2.3", "emulator")
    ev = json.loads(p.event(b'{"s":7,"b":2,"t":100,"k":"temp","value":4.25,"rh":[50.5,null]}', True))
    assert auth.verify(KEY, ev)
    assert ev["value_centi"] == 425 and "value" not in ev and ev["rh"] == [5050, None]
    assert ev["replayed"] is True and ev["v"] == 1 and ev["kiosk"] == "k1" and ev["s"] == 7
    b = json.loads(p.birth(3, ("n0nce", 2), {"sensors": {"a": {"value": -0.5, "bad": float("nan")}}},
                           {"last": 40, "acked": 38}, ["storage_full"]))
    assert auth.verify(KEY, b) and b["online"] and b["boot"] == 3 and (b["conn"], b["conns"]) == ("n0nce", 2)
    assert b["snap"]["sensors"]["a"] == {"value_centi": -50, "bad_centi": None}
    assert b["journal"] == {"last": 40, "acked": 38} and b["alarms"] == ["storage_full"]
    d = json.loads(p.death(3, ("n0nce", 2)))
    assert auth.verify(KEY, d) and d["online"] is False and d["fw"] == "1.2.3" and (d["conn"], d["conns"]) == ("n0nce", 2)
    r = json.loads(p.reply("c1", "rejected", {"reason": "expired"}))
    assert auth.verify(KEY, r) and r["id"] == "c1" and r["info"] == {"reason": "expired"}
    t = json.loads(p.tele(3, {"s1": (4.256, 45.0), "s2": (None, None)}, 1000, {"rssi": -60}))
    assert auth.verify(KEY, t) and t["temp_centi"] == {"s1": 426, "s2": None} and t["rh_centi"] == {"s1": 4500}
    deep = {}
    x = deep
    for i in range(12):
        x["d"] = {}
        x = x["d"]
    u = json.loads(p.seal({"s": 9, "deep": deep}))
    assert auth.verify(KEY, u) and u["unsignable"] and u["s"] == 9 and "deep" not in u
    u = json.loads(p.reply("c9", "succeeded", {"obj": object()}))
    assert auth.verify(KEY, u) and u["unsignable"] and u["id"] == "c9" and u["state"] == "succeeded"
    assert signable({1: 2.0}) == {"1_centi": 200}
    live = {"sensors": {"a": 1.5}, "t": (1, 2.25)}
    assert signable(live) == {"sensors": {"a_centi": 150}, "t": [1, 225]}
    assert live == {"sensors": {"a": 1.5}, "t": (1, 2.25)}, "the caller's data is not changed"


def test_host_ack_checks():
    p = Proto("k1", KEY, journal_id="0123456789abcdef")
    good = auth.sign(KEY, {"v": 1, "upto": 5, "t": 1800000000, "j": "0123456789abcdef"})
    assert p.check_ack(json.dumps(good).encode()) == (5, 1800000000)
    # An ack for another journal (or one that names none) acknowledges nothing here.
    other = auth.sign(KEY, {"v": 1, "upto": 5, "t": 1800000000, "j": "fedcba9876543210"})
    assert p.check_ack(json.dumps(other).encode()) == "wrong_journal"
    assert p.check_ack(json.dumps(auth.sign(KEY, {"v": 1, "upto": 5, "t": 1})).encode()) == "wrong_journal"
    assert p.check_ack(b"{") == "bad_json"
    assert p.check_ack(b"[]") == "bad_version"
    forged = auth.sign(b"not the key not the key", {"v": 1, "upto": 5, "t": 1})
    assert p.check_ack(json.dumps(forged).encode()) == "bad_signature"
    assert p.check_ack(json.dumps(auth.sign(KEY, {"v": 1, "upto": "5", "t": 1})).encode()) == "bad_schema"
    assert p.check_ack(b" " * 1025) == "oversized"


def test_clock_follows_the_host_once_per_step():
    # A board wakes up with no idea of the date (the ESP32 in 2000, the
    # RP2350 in 2021): only the host's acks set it, in Unix seconds.
    steps = []
    host = 1800000000
    assert clock.adjust(host, lambda k, f: steps.append((k, f))) != 0
    assert abs(clock.now() - host) <= 2
    base = clock.now()
    assert clock.adjust(base + 1, lambda k, f: steps.append((k, f))) == 0
    assert clock.adjust(base + 3600, lambda k, f: steps.append((k, f))) >= 3598
    assert abs(clock.now() - (base + 3600)) <= 2
    assert len(steps) == 2 and steps[1][0] == "clock" and steps[1][1]["host_t"] == base + 3600
    assert clock.adjust(clock.now(), lambda k, f: steps.append((k, f))) == 0
    assert len(steps) == 2
