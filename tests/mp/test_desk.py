# The patient's side of the whole kiosk on the simulated world: a code read
# by the scanner becomes a journaled scan, the pickup that answers it opens
# the door only while the scan waits, the restock's label check, the
# retrieval of an order, the call button, and the lockout seen from the
# controller.
import asyncio
import kit

FAST = {"door_open_timeout_s": 3, "door_held_open_s": 2, "relock_verify_s": 2, "sample_period_s": 5,
        "scan_answer_s": 3, "scan_lockout_after": 2, "scan_lockout_s": 2, "label_scan_timeout_s": 2,
        "button_repeat_s": 2}


async def _up(policies=FAST):
    app, w = kit.boot(policies=policies)
    r = kit.Replies(app.ctl)
    app.ctl.start()
    assert await kit.wait_for(app.ctl.settled, 5000)
    return app, w, r


async def _service(ctl, r, on=True):
    oid = "svc-%d" % len(r.seen)
    ctl.submit(oid, "service_start" if on else "service_end", {"session": "tech-1"} if on else {})
    assert r.last(oid)[0] == "succeeded", r.last(oid)


async def _restock(app, w, r, bin_no, order, label=None):
    """A restock whose technician scans `label` (the order's own by default)."""
    oid = "r-%d-%d" % (bin_no, len(r.seen))
    tech = asyncio.create_task(kit.technician(w, app.ctl, label))
    app.ctl.submit(oid, "restock", {"order": order, "bin": bin_no})
    state, info = await r.final(oid)
    await tech
    return state, info


async def _scanned(app, w, text):
    """Scan text at the scanner; the seq of its scan record."""
    ctl = app.ctl
    kit.scan(w, text)
    assert await kit.wait_for(lambda: ctl.scans.pending is not None, 2000), "the scan never reached the controller"
    return ctl.scans.pending[0]


async def _scan_to_pickup():
    app, w, r = await _up()
    ctl = app.ctl
    await _service(ctl, r)
    state, info = await _restock(app, w, r, 3, "RX-3")
    assert state == "succeeded", (state, info)
    await _service(ctl, r, False)
    labels = [x for x in kit.journal_kinds(app.journal, "scan") if x["ev"] == "label"]
    assert len(labels) == 1 and labels[0]["match"] is True and labels[0]["order"] == "RX-3", labels
    assert kit.journal_kinds(app.journal, "restock")[0]["label"] == "checked"
    # The patient scans; the host answers with a pickup naming the scan.
    seq = await _scanned(app, w, "K7Q2M9XD3HTR")
    assert ctl.scans.reveal(seq) == {"text": "K7Q2M9XD3HTR"}
    patient = asyncio.create_task(kit.person(w, "pickup"))
    assert ctl.submit("p-1", "pickup", {"order": "RX-3", "bin": 3, "scan": seq}) == "queued"
    state, info = await r.final("p-1")
    await patient
    assert state == "succeeded", (state, info)
    (pick,) = kit.journal_kinds(app.journal, "pickup")
    assert pick["scan"] == seq and pick["order"] == "RX-3" and pick["bin"] == 3
    (code,) = [x for x in kit.journal_kinds(app.journal, "scan") if x["ev"] == "code"]
    assert code["s"] == seq and "text" not in code
    assert ctl.stock.bins == {}
    # A second answer to the same scan, or one to no scan at all, opens nothing.
    ctl.submit("p-2", "pickup", {"order": "RX-3", "bin": 3, "scan": seq})
    assert r.last("p-2")[1]["reason"] == "scan_not_pending"
    ctl.submit("p-3", "pickup", {"order": "RX-3", "bin": 3, "scan": "12"})
    assert r.last("p-3")[1]["reason"] == "bad_args"
    assert w.locks["pickup"].energize_count == 1 and w.violation_count == 0, w.violations
    await app.stop()


def test_a_scanned_code_answered_by_a_pickup_releases_the_order():
    asyncio.run(_scan_to_pickup())


async def _late_answer():
    app, w, r = await _up()
    ctl = app.ctl
    await _service(ctl, r)
    assert (await _restock(app, w, r, 2, "RX-2"))[0] == "succeeded"
    await _service(ctl, r, False)
    seq = await _scanned(app, w, "LATE-CODE")
    # The host answers only after the scan's wait ended: the patient may be gone.
    assert await kit.wait_for(lambda: ctl.scans.pending is None, 5000)
    ctl.submit("p-late", "pickup", {"order": "RX-2", "bin": 2, "scan": seq})
    assert r.last("p-late") == ("rejected", {"reason": "scan_not_pending",
                                             "detail": "that scan is no longer waiting for an answer"})
    assert w.locks["pickup"].energize_count == 0 and ctl.stock.bins == {"2": "RX-2"}
    (na,) = [x for x in kit.journal_kinds(app.journal, "scan") if x["ev"] == "no_answer"]
    assert na["scan"] == seq and na["fails"] == 1
    # A refusal: journaled with its reason; an unknown reason is a bad request.
    seq = await _scanned(app, w, "ANOTHER")
    ctl.submit("f-1", "scan_refused", {"scan": seq, "why": "no_such_reason"})
    assert r.last("f-1")[1]["reason"] == "bad_args"
    ctl.submit("f-2", "scan_refused", {"scan": seq, "why": "counselling"})
    assert r.last("f-2")[0] == "succeeded"
    ref = [x for x in kit.journal_kinds(app.journal, "scan") if x["ev"] == "refused"]
    assert ref[-1]["scan"] == seq and ref[-1]["why"] == "counselling" and "fails" not in ref[-1]
    await app.stop()


def test_an_answer_after_the_scan_stopped_waiting_opens_nothing():
    asyncio.run(_late_answer())


async def _lockout():
    app, w, r = await _up()
    ctl = app.ctl
    for i in range(2):
        seq = await _scanned(app, w, "WRONG-%d" % i)
        ctl.submit("w-%d" % i, "scan_refused", {"scan": seq, "why": "unknown_code"})
    assert ctl.scans.locked_until is not None
    assert ctl.snapshot()["scanner"]["locked_s"] == 2
    n = len(kit.journal_kinds(app.journal, "scan"))
    kit.scan(w, "RIGHT-CODE")
    await asyncio.sleep_ms(300)
    assert ctl.scans.pending is None and len(kit.journal_kinds(app.journal, "scan")) == n
    # The desk task ends the lockout on time, journaled, and reads codes again.
    assert await kit.wait_for(lambda: ctl.scans.locked_until is None, 3000)
    ends = [x for x in kit.journal_kinds(app.journal, "scan") if x["ev"] == "lockout_end"]
    assert ends and ends[0]["ignored"] == 1
    assert await _scanned(app, w, "RIGHT-CODE")
    await app.stop()


def test_wrong_codes_lock_the_scanner_out_then_it_reads_again():
    asyncio.run(_lockout())


async def _labels():
    app, w, r = await _up()
    ctl = app.ctl
    await _service(ctl, r)
    # The wrong package: refused before the door unlocks; the bin stays empty.
    state, info = await _restock(app, w, r, 5, "RX-5", label="RX-6")
    assert (state, info["reason"]) == ("rejected", "label_mismatch"), (state, info)
    assert w.locks["service"].energize_count == 0 and ctl.stock.bins == {}
    (lb,) = [x for x in kit.journal_kinds(app.journal, "scan") if x["ev"] == "label"]
    assert lb["match"] is False and lb["order"] == "RX-5" and "RX-6" not in str(lb)
    # No label at all: the restock times out, the door never unlocked.
    ctl.submit("r-none", "restock", {"order": "RX-5", "bin": 5})
    state, info = await r.final("r-none", 8000)
    assert (state, info["reason"]) == ("timed_out", "no_label"), (state, info)
    assert w.locks["service"].energize_count == 0 and ctl.stock.bins == {}
    # A label read before the restock began does not count for it.
    kit.scan(w, "RX-5")
    await asyncio.sleep_ms(200)
    ctl.submit("r-old", "restock", {"order": "RX-5", "bin": 5})
    state, info = await r.final("r-old", 8000)
    assert (state, info["reason"]) == ("timed_out", "no_label"), (state, info)
    # The right one, scanned while the bin turns: stocked.
    state, info = await _restock(app, w, r, 5, "RX-5")
    assert state == "succeeded", (state, info)
    assert ctl.stock.bins == {"5": "RX-5"}
    await app.stop()


def test_a_restock_checks_the_package_label_before_the_door_opens():
    asyncio.run(_labels())


async def _retrieve():
    app, w, r = await _up()
    ctl = app.ctl
    ctl.submit("x-0", "retrieve", {"order": "RX-7", "bin": 7})
    assert r.last("x-0")[1]["reason"] == "no_service_session"
    await _service(ctl, r)
    assert (await _restock(app, w, r, 7, "RX-7"))[0] == "succeeded"
    ctl.submit("x-1", "retrieve", {"order": "RX-8", "bin": 7})
    assert (await r.final("x-1"))[1]["reason"] == "bin_mismatch"
    ctl.submit("x-2", "retrieve", {"order": "RX-7", "bin": 6})
    assert (await r.final("x-2"))[1]["reason"] == "bin_empty"
    tech = asyncio.create_task(kit.person(w, "service"))
    ctl.submit("x-3", "retrieve", {"order": "RX-7", "bin": 7})
    state, info = await r.final("x-3")
    await tech
    assert state == "succeeded" and info["bin"] == 7, (state, info)
    assert ctl.stock.bins == {}
    (rec,) = kit.journal_kinds(app.journal, "retrieve")
    assert rec["id"] == "x-3" and rec["order"] == "RX-7" and rec["bin"] == 7
    ops = [o for o in kit.journal_kinds(app.journal, "op") if o["id"] == "x-3"]
    assert ops[0]["state"] == "succeeded" and ops[0]["order"] == "RX-7" and ops[0]["opened"] is True
    assert w.locks["pickup"].energize_count == 0, "a retrieval uses the service door only"
    await app.stop()


def test_a_technician_retrieves_an_order_through_the_service_door():
    asyncio.run(_retrieve())


async def _button():
    app, w, r = await _up()
    import _thread
    for _ in range(3):   # a patient pressing again and again
        _thread.start_new_thread(w.handle, ({"op": "button", "name": "call_pharmacist", "ms": 100},))
        await asyncio.sleep_ms(250)
    assert await kit.wait_for(lambda: kit.journal_kinds(app.journal, "button"), 2000)
    await asyncio.sleep_ms(300)
    (b,) = kit.journal_kinds(app.journal, "button")
    assert b["name"] == "call_pharmacist" and b["presses"] == 1
    await asyncio.sleep_ms(2000)   # button_repeat_s later, a press is journaled again
    _thread.start_new_thread(w.handle, ({"op": "button", "name": "call_pharmacist", "ms": 100},))
    assert await kit.wait_for(lambda: len(kit.journal_kinds(app.journal, "button")) == 2, 2000)
    assert kit.journal_kinds(app.journal, "button")[1]["presses"] == 4
    await app.stop()


def test_the_call_button_is_journaled_at_most_once_per_repeat_time():
    asyncio.run(_button())
