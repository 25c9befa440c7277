# kiosk.core.jobs: what flash keeps of accepted door-cycle operations, and how a
# boot closes those a reset cut short, once, by reading the journal first.
import os
from kiosk.core import jobs
from kiosk.core.journal import Journal

ARGS = {"order": "RX-1", "bin": 3}


def _files():
    return [f for f in (jobs.CURRENT, jobs.WAITING) if f in os.listdir()]


def _op(op_id, kind="pickup", step=None, opened=False):
    op = jobs.Op(op_id, kind, dict(ARGS), boot=1)
    op.step = step
    op.opened = opened
    return op


def test_nothing_on_flash_nothing_to_close():
    j = Journal("journal")
    assert jobs.interrupted(j) == []


def test_a_cut_mid_pickup_is_closed_with_its_outcome():
    j = Journal("journal")
    _op("a", step="moving").persist(j.last_seq)
    (rec,) = jobs.interrupted(j)
    assert rec["id"] == "a" and rec["state"] == "failed" and rec["reason"] == "reset"
    assert rec["outcome"] == "not_released" and "recorded" not in rec
    _op("a", step="waiting_open").persist(j.last_seq)
    assert jobs.interrupted(j)[0]["outcome"] == "unknown"
    assert _files() == [jobs.CURRENT], "the caller forgets it once it is journaled"
    jobs.forget()
    assert _files() == []


def test_a_pickup_already_journaled_is_closed_without_a_second_one():
    j = Journal("journal")
    _op("a", step="verifying", opened=True).persist(j.last_seq)
    j.append("temp", {"ev": "sample"})
    j.append("pickup", {"id": "a", "order": "RX-1", "bin": 3})
    (rec,) = jobs.interrupted(j)
    assert rec["recorded"] is True and rec["outcome"] == "released"
    # A restock's own record counts the same way, even before the door flag.
    jobs.forget()
    _op("r", kind="restock", step="verifying").persist(j.last_seq)
    j.append("restock", {"id": "r", "order": "RX-2", "bin": 4})
    (rec,) = jobs.interrupted(j)
    assert rec["id"] == "r" and rec["recorded"] is True and rec["outcome"] == "released"


def test_an_operation_whose_terminal_record_is_journaled_is_left_alone():
    j = Journal("journal")
    _op("a", step="verifying", opened=True).persist(j.last_seq)
    j.append("pickup", {"id": "a", "order": "RX-1", "bin": 3})
    j.append("op", {"id": "a", "op": "pickup", "state": "succeeded"})
    assert jobs.interrupted(j) == []
    # Records before the operation was last written do not count.
    jobs.forget()
    j.append("op", {"id": "b", "op": "pickup", "state": "failed"})
    _op("b", step="moving").persist(j.last_seq)
    assert [r["id"] for r in jobs.interrupted(j)] == ["b"]


def test_waiting_operations_are_closed_not_released_and_never_twice():
    j = Journal("journal")
    running = _op("a", step="unlocking")
    queue = [running, _op("b"), jobs.Op("h", "home", {}), _op("c", kind="unlock")]
    jobs.save_waiting(queue, j.last_seq)
    # "a" begins: op.json is written before the waiting list drops it; a
    # reset in between must not close it twice.
    running.persist(j.last_seq)
    recs = jobs.interrupted(j)
    assert [r["id"] for r in recs] == ["a", "b", "c"], recs
    assert [r["outcome"] for r in recs] == ["unknown", "not_released", "not_released"]
    # "c" was cancelled while waiting: its terminal record is in the journal.
    j.append("op", {"id": "c", "op": "unlock", "state": "cancelled"})
    assert [r["id"] for r in jobs.interrupted(j)] == ["a", "b"]
    jobs.save_waiting([running], j.last_seq)   # nothing that waits is a door cycle but "a"
    jobs.save_waiting([jobs.Op("h", "home", {})], j.last_seq)
    assert _files() == [jobs.CURRENT], "an empty waiting list leaves no file"


def test_torn_or_foreign_files_close_nothing_and_raise_nothing():
    j = Journal("journal")
    with open(jobs.CURRENT, "w") as f:
        f.write('{"id": "a", "kind": "pick')
    with open(jobs.WAITING, "w") as f:
        f.write('[1, "x", {"kind": "pickup"}]')
    assert jobs.interrupted(j) == []


def _settle(st, rec, event):
    """As the boot does: the book on flash first, then its records."""
    for kind, fields in st.settle(rec):
        event(kind, fields)


def test_a_cut_retrieval_or_scanned_pickup_settles_the_stock_book_once():
    from kiosk.core.stock import Stock
    j = Journal("journal")
    st = Stock()
    st.put(3, "RX-1")
    st.put(4, "RX-2")
    st.put(5, "RX-3")
    got = []

    def event(kind, fields):
        got.append((kind, fields))
        return j.append(kind, fields)

    # A retrieval cut after the door was seen open: the order left its bin.
    op = jobs.Op("x", "retrieve", {"order": "RX-1", "bin": 3}, boot=1)
    op.step, op.opened = "waiting_close", True
    op.persist(j.last_seq)
    (rec,) = jobs.interrupted(j)
    _settle(st, rec, event)
    assert got == [("retrieve", {"id": "x", "order": "RX-1", "bin": 3, "recovered": True})]
    assert st.order_in(3) is None
    jobs.forget()
    # A retrieval cut while the door was unlocked: nobody knows; the bin waits for a technician.
    op = jobs.Op("y", "retrieve", {"order": "RX-2", "bin": 4}, boot=1)
    op.step = "waiting_open"
    op.persist(j.last_seq)
    _settle(st, jobs.interrupted(j)[0], event)
    assert 4 in st.unverified and st.order_in(4) == "RX-2"
    jobs.forget()
    # A pickup answering a scan keeps the scan in its recovered record.
    op = jobs.Op("p", "pickup", {"order": "RX-3", "bin": 5, "scan": 41}, boot=1)
    op.step, op.opened = "verifying", True
    op.persist(j.last_seq)
    _settle(st, jobs.interrupted(j)[0], event)
    assert got[-1] == ("pickup", {"id": "p", "order": "RX-3", "bin": 5, "recovered": True, "scan": 41})
    # A restock cut while scanning its label never unlocked: nothing changes.
    jobs.forget()
    op = jobs.Op("r", "restock", {"order": "RX-9", "bin": 9}, boot=1)
    op.step = "scanning_label"
    op.persist(j.last_seq)
    (rec,) = jobs.interrupted(j)
    assert rec["outcome"] == "not_released"
    n = len(got)
    _settle(st, rec, event)
    assert len(got) == n and st.order_in(9) is None and 9 not in st.unverified
