# kiosk.core.scans: a scanned code journaled as its short hash only, the
# text handed to the link while the code waits for its answer, one code at
# a time, the local lockout after wrong or unanswered codes (kept across a
# reset), and labels read in a service session.
import json
import time
from kiosk.core.journal import Journal
from kiosk.core.scans import Scans, short_hash
from kiosk.core.jobs import Refused

POL = {"scan_answer_s": 1, "scan_lockout_after": 3, "scan_lockout_s": 2}


def _rig(policies=POL):
    j = Journal("journal")
    return j, Scans(policies, j.append)


def _recs(j, ev=None):
    out = []
    for _, line in j.iter_lines():
        d = json.loads(line)
        if d["k"] == "scan" and (ev is None or d["ev"] == ev):
            out.append(d)
    return out


def _refused(fn, *args):
    try:
        fn(*args)
    except Refused as r:
        return r.code
    raise AssertionError("accepted")


def test_a_code_is_journaled_as_its_hash_and_its_text_given_once_to_the_link():
    j, sc = _rig()
    now = time.ticks_ms()
    seq = sc.read("K7Q2M9XD3HTR", False, now)
    (rec,) = _recs(j)
    assert rec["s"] == seq and rec["ev"] == "code" and rec["h"] == short_hash("K7Q2M9XD3HTR")
    assert len(rec["h"]) == 8
    with open("journal/%s" % [n for n in __import__("os").listdir("journal") if n.endswith(".log")][0]) as f:
        assert "K7Q2M9XD3HTR" not in f.read(), "the text never reaches flash"
    assert sc.reveal(seq) == {"text": "K7Q2M9XD3HTR"}
    assert sc.reveal(seq - 1) is None
    # One code at a time: another read while this one waits is dropped.
    assert sc.read("OTHER", False, now) is None and sc.busy == 1
    sc.claim(seq)
    assert sc.reveal(seq) is None, "answered: the text is gone"
    assert _refused(sc.claim, seq) == "scan_not_pending"
    assert sc.fails == 0 and sc.state()["waiting"] is False


def test_wrong_and_unanswered_codes_lock_the_scanner_out_for_a_while():
    j, sc = _rig()
    now = time.ticks_ms()
    s1 = sc.read("WRONG-1", False, now)
    sc.refused(s1, "unknown_code", now)
    s2 = sc.read("ELSEWHERE", False, now)
    sc.refused(s2, "counselling", now)       # not a wrong code: does not count
    assert sc.fails == 1
    s3 = sc.read("WRONG-2", False, now)
    sc.tick(time.ticks_add(now, 999))
    assert sc.pending is not None
    sc.tick(time.ticks_add(now, 1000))      # no answer in scan_answer_s: counts
    assert sc.pending is None and sc.fails == 2
    assert _refused(sc.refused, s3, "unknown_code", now) == "scan_not_pending", "a late answer changes nothing"
    s4 = sc.read("WRONG-3", False, now)
    sc.refused(s4, "used", now)
    assert sc.fails == 3 and sc.locked_s(now) == 2
    # Locked out: even the right code is not read, not sent, not journaled.
    n = len(_recs(j))
    assert sc.read("RIGHT", False, now) is None and sc.read("RIGHT", False, now) is None
    assert len(_recs(j)) == n and sc.ignored == 2
    sc.tick(time.ticks_add(now, 1999))
    assert sc.locked_until is not None
    sc.tick(time.ticks_add(now, 2000))
    assert sc.locked_until is None and sc.fails == 0
    assert [r["ev"] for r in _recs(j)] == ["code", "refused", "code", "refused", "code", "no_answer",
                                           "code", "refused", "lockout", "lockout_end"]
    assert [r.get("fails") for r in _recs(j, "refused")] == [1, None, 3]
    assert _recs(j, "lockout")[0]["fails"] == 3 and _recs(j, "lockout")[0]["for_s"] == 2
    assert _recs(j, "lockout_end")[0]["ignored"] == 2
    assert sc.read("RIGHT", False, time.ticks_ms()) is not None


def test_a_reset_keeps_the_count_and_restarts_a_lockout_in_full():
    j, sc = _rig()
    now = time.ticks_ms()
    sc.refused(sc.read("W1", False, now), "unknown_code", now)
    sc.refused(sc.read("W2", False, now), "expired", now)
    # Power cut: a new Scans reads the count back.
    sc = Scans(POL, j.append)
    assert sc.fails == 2 and sc.locked_until is None
    now = time.ticks_ms()
    sc.refused(sc.read("W3", False, now), "other_kiosk", now)
    assert sc.locked_until is not None
    sc = Scans(POL, j.append)
    assert sc.locked_until is not None and sc.locked_s() == 2, "a reset does not end a lockout"
    assert _recs(j, "lockout")[-1].get("resumed") is True
    assert sc.read("RIGHT", False, time.ticks_ms()) is None


def test_a_right_code_clears_the_count():
    j, sc = _rig()
    now = time.ticks_ms()
    sc.refused(sc.read("W1", False, now), "unknown_code", now)
    sc.refused(sc.read("W2", False, now), "unknown_code", now)
    sc.claim(sc.read("RIGHT", False, now))
    assert sc.fails == 0
    assert Scans(POL, j.append).fails == 0


def test_in_a_service_session_the_scanner_reads_labels():
    j, sc = _rig()
    t0 = time.ticks_ms()
    assert sc.read("RX-OLD", True, time.ticks_add(t0, -5)) is None
    assert sc.take_label(t0) is None, "a label read before the restock began does not count"
    assert sc.read("RX-1", True, time.ticks_add(t0, 5)) is None
    assert sc.take_label(t0) == "RX-1"
    assert sc.take_label(t0) is None, "once"
    assert _recs(j) == [] and sc.pending is None, "labels are not codes"
