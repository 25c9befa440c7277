# kiosk.ops: what flash keeps of accepted door-cycle operations, and how a
# boot closes those a reset cut short, once, by reading the journal first.
import os
from kiosk import ops
from kiosk.journal import Journal

ARGS = {"order": "RX-1", "bin": 3}


def _files():
    return [f for f in (ops.CURRENT, ops.WAITING) if f in os.listdir()]


def _op(op_id, kind="pickup", step=None, opened=False):
    op = ops.Op(op_id, kind, dict(ARGS), boot=1)
    op.step = step
    op.opened = opened
    return op


def test_nothing_on_flash_nothing_to_close():
    j = Journal("journal")
    assert ops.interrupted(j) == []


def test_a_cut_mid_pickup_is_closed_with_its_outcome():
    j = Journal("journal")
    _op("a", step="moving").persist(j.last_seq)
    (rec,) = ops.interrupted(j)
    assert rec["id"] == "a" and rec["state"] == "failed" and rec["reason"] == "reset"
    assert rec["outcome"] == "not_released" and "recorded" not in rec
    _op("a", step="waiting_open").persist(j.last_seq)
    assert ops.interrupted(j)[0]["outcome"] == "unknown"
    assert _files() == [ops.CURRENT], "the caller forgets it once it is journaled"
    ops.forget()
    assert _files() == []


def test_a_pickup_already_journaled_is_closed_without_a_second_one():
    j = Journal("journal")
    _op("a", step="verifying", opened=True).persist(j.last_seq)
    j.append("temp", {"ev": "sample"})
    j.append("pickup", {"id": "a", "order": "RX-1", "bin": 3})
    (rec,) = ops.interrupted(j)
    assert rec["recorded"] is True and rec["outcome"] == "released"
    # A restock's own record counts the same way, even before the door flag.
    ops.forget()
    _op("r", kind="restock", step="verifying").persist(j.last_seq)
    j.append("restock", {"id": "r", "order": "RX-2", "bin": 4})
    (rec,) = ops.interrupted(j)
    assert rec["id"] == "r" and rec["recorded"] is True and rec["outcome"] == "released"


def test_an_operation_whose_terminal_record_is_journaled_is_left_alone():
    j = Journal("journal")
    _op("a", step="verifying", opened=True).persist(j.last_seq)
    j.append("pickup", {"id": "a", "order": "RX-1", "bin": 3})
    j.append("op", {"id": "a", "op": "pickup", "state": "succeeded"})
    assert ops.interrupted(j) == []
    # Records before the operation was last written do not count.
    ops.forget()
    j.append("op", {"id": "b", "op": "pickup", "state": "failed"})
    _op("b", step="moving").persist(j.last_seq)
    assert [r["id"] for r in ops.interrupted(j)] == ["b"]


def test_waiting_operations_are_closed_not_released_and_never_twice():
    j = Journal("journal")
    running = _op("a", step="unlocking")
    queue = [running, _op("b"), ops.Op("h", "home", {}), _op("c", kind="unlock")]
    ops.save_waiting(queue, j.last_seq)
    # "a" begins: op.json is written before the waiting list drops it; a
    # reset in between must not close it twice.
    running.persist(j.last_seq)
    recs = ops.interrupted(j)
    assert [r["id"] for r in recs] == ["a", "b", "c"], recs
    assert [r["outcome"] for r in recs] == ["unknown", "not_released", "not_released"]
    # "c" was cancelled while waiting: its terminal record is in the journal.
    j.append("op", {"id": "c", "op": "unlock", "state": "cancelled"})
    assert [r["id"] for r in ops.interrupted(j)] == ["a", "b"]
    ops.save_waiting([running], j.last_seq)   # nothing that waits is a door cycle but "a"
    ops.save_waiting([ops.Op("h", "home", {})], j.last_seq)
    assert _files() == [ops.CURRENT], "an empty waiting list leaves no file"


def test_torn_or_foreign_files_close_nothing_and_raise_nothing():
    j = Journal("journal")
    with open(ops.CURRENT, "w") as f:
        f.write('{"id": "a", "kind": "pick')
    with open(ops.WAITING, "w") as f:
        f.write('[1, "x", {"kind": "pickup"}]')
    assert ops.interrupted(j) == []
