# kiosk.link.refusals: a flood of refusals (junk on cmd or ack, replayed
# copies) cannot push unacknowledged records off the flash, and the
# refusals of signed commands are journaled one by one even meanwhile.
import json
import time
from kiosk.core.journal import Journal
from kiosk.link.refusals import Refusals


def _refusals(j):
    out = []
    for _, line in j.iter_lines():
        d = json.loads(line)
        if d["k"] == "refused":
            out.append(d)
    return out


def test_a_flood_with_the_host_away_takes_a_bounded_budget():
    j = Journal("journal", segment_bytes=2048, max_segments=4)
    forced = j.append("door", {"door": "service", "ev": "door_forced"})
    r = Refusals(j.append, j, summary_ms=100)
    t0 = time.ticks_ms()
    for i in range(1500):
        r("refused", {"why": "bad_signature" if i % 3 else "bad_json", "topic": "ack"})
        if i % 100 == 0:
            time.sleep_ms(60)
            r.tick()
    took = time.ticks_diff(time.ticks_ms(), t0)
    # The last count goes out once its (grown) wait is over.
    r.tick(time.ticks_add(time.ticks_ms(), 3600000))
    recs = _refusals(j)
    single = [d for d in recs if d["why"] != "coalesced"]
    summaries = [d for d in recs if d["why"] == "coalesced"]
    assert len(single) == 16, len(single)
    # Every refusal is on the journal, alone or in a count; the waits between
    # summaries doubled while unacknowledged, so they are a handful however
    # long the flood took (100, 200, 400... ms).
    assert r.count == 0 and len(single) + sum(d["count"] for d in summaries) == 1500, summaries
    assert r.coalesced == 1500 - 16
    most = 2
    while 100 * ((1 << (most - 1)) - 1) < took:
        most += 1
    assert 1 <= len(summaries) <= most, (len(summaries), took)
    assert sum(d["reasons"].get("bad_json", 0) for d in summaries) + \
        sum(1 for d in single if d["why"] == "bad_json") == 500
    # Nothing was rotated away: the forced door is still on flash.
    assert j.first_seq() <= forced and "journal_overflow" not in [json.loads(x)["k"] for _, x in j.iter_lines()]


def test_signed_refusals_keep_their_own_budget_and_the_ack_refills_it():
    j = Journal("journal")
    r = Refusals(j.append, j, summary_ms=60000)
    for i in range(200):
        r("refused", {"why": "replayed", "id": "c%d" % i})
    n = len(_refusals(j))
    assert n == 16
    # A genuine command refused as expired during the flood: its own record,
    # with its id (after the count of the copies so far).
    assert r("refused", {"why": "expired", "id": "genuine", "op": "pickup"})
    recs = _refusals(j)
    assert recs[-1]["id"] == "genuine"
    assert recs[-2]["why"] == "coalesced" and recs[-2]["count"] == 184, recs[-2]
    # The host acknowledges: the copies' budget is free again.
    for i in range(20):
        r("refused", {"why": "replayed", "id": "d%d" % i})
    assert len(_refusals(j)) == n + 2
    j.ack(j.last_seq)
    time.sleep_ms(1100)
    assert r("refused", {"why": "bad_signature", "id": "x"})
    recs = _refusals(j)
    assert recs[-2]["why"] == "coalesced" and recs[-2]["count"] == 20, recs[-2]
    assert recs[-1]["id"] == "x"
    # Other records pass straight through, never counted.
    assert r("door", {"door": "pickup", "ev": "door_opened"}) == j.last_seq
