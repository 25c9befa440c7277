# The controller on the simulated kiosk: flows end to end, each way a
# pickup can fail, and the interlocks no command can override.
import asyncio
import kit

FAST = {"door_open_timeout_s": 3, "door_held_open_s": 2, "relock_verify_s": 2,
        "sample_period_s": 1}


async def _up(policies=FAST):
    app, w = kit.boot(policies=policies)
    r = kit.Replies(app.ctl)
    app.ctl.start()
    return app, w, r


async def _restock(app, w, r, bin_no, order):
    ctl = app.ctl
    ctl.submit("s-%d" % bin_no, "service_start", {"session": "tech-1"})
    tech = asyncio.create_task(kit.technician(w, ctl))
    ctl.submit("r-%d" % bin_no, "restock", {"order": order, "bin": bin_no})
    state, info = await r.final("r-%d" % bin_no)
    await tech
    ctl.submit("e-%d" % bin_no, "service_end", {})
    return state, info


async def _pickup_ok():
    app, w, r = await _up()
    ctl = app.ctl
    state, info = await _restock(app, w, r, 5, "RX-5")
    assert state == "succeeded", (state, info)
    assert ctl.stock.bins == {"5": "RX-5"}
    patient = asyncio.create_task(kit.person(w, "pickup"))
    assert ctl.submit("p-1", "pickup", {"order": "RX-5", "bin": 5}) == "queued"
    state, info = await r.final("p-1")
    await patient
    assert state == "succeeded", (state, info)
    assert r.states("p-1")[:2] == ["queued", "in_progress"]
    steps = [i.get("step") for s, i in r.seen["p-1"] if s == "in_progress" and i.get("step")]
    assert steps == ["moving", "unlocking", "waiting_open", "waiting_close", "verifying"], steps
    # The world agrees: bin 5 (index 4) at the door, doors shut and locked.
    car = w.carousels["A"].state()
    assert car["position"] == 4 * 40, car
    assert not car["enabled"]
    for lk in w.locks.values():
        assert lk.door_closed and not lk.energized() and lk.bolt_engaged()
    assert w.violation_count == 0, w.violations
    assert ctl.stock.bins == {}
    picks = kit.journal_kinds(app.journal, "pickup")
    assert len(picks) == 1 and picks[0]["order"] == "RX-5" and picks[0]["bin"] == 5
    await app.stop()


def test_full_pickup_after_restock():
    asyncio.run(_pickup_ok())


async def _named():
    app, w, r = await _up()
    ctl = app.ctl
    # A service session is bound to the technician who opened it.
    ctl.submit("s", "service_start", {"session": "svc-1"}, "tom.tech")
    assert ctl.submit("r-other", "restock", {"order": "RX-7", "bin": 7}, "ann.tech") == "rejected"
    assert ctl.submit("r-none", "restock", {"order": "RX-7", "bin": 7}) == "rejected"
    tech = asyncio.create_task(kit.technician(w, ctl))
    ctl.submit("r", "restock", {"order": "RX-7", "bin": 7}, "tom.tech")
    state, info = await r.final("r")
    await tech
    assert state == "succeeded", (state, info)
    # At the kiosk's own console, hands on the board: allowed, and said so.
    assert ctl.submit("v", "verify_bin", {"bin": 7, "present": True}, "console", True) == "succeeded"
    assert kit.journal_kinds(app.journal, "stock")[-1]["by"] == "console"
    ctl.submit("e", "service_end", {}, "ann.tech")
    # The pharmacist who released it is named in the records the pickup leaves.
    patient = asyncio.create_task(kit.person(w, "pickup"))
    ctl.submit("p", "pickup", {"order": "RX-7", "bin": 7}, "maria.pharm")
    state, info = await r.final("p")
    await patient
    assert state == "succeeded", (state, info)
    ctl.submit("p2", "pickup", {"order": "RX-7", "bin": 7}, "maria.pharm")
    state, info = await r.final("p2")
    assert (state, info.get("reason")) == ("rejected", "bin_empty"), (state, info)
    by = {}
    for kind in ("restock", "pickup", "op", "refused", "service"):
        by[kind] = [(x.get("id") or x.get("state"), x.get("by"), x.get("owner"))
                    for x in kit.journal_kinds(app.journal, kind)]
    assert by["restock"] == [("r", "tom.tech", None)], by
    assert by["pickup"] == [("p", "maria.pharm", None)], by
    assert ("r", "tom.tech", None) in by["op"] and ("p", "maria.pharm", None) in by["op"], by
    refusals = {x["id"]: x for x in kit.journal_kinds(app.journal, "refused")}
    assert refusals["r-other"]["why"] == "not_session_owner" and refusals["r-other"]["by"] == "ann.tech"
    assert refusals["r-none"]["why"] == "not_session_owner" and "by" not in refusals["r-none"]
    assert refusals["p2"]["why"] == "bin_empty" and refusals["p2"]["by"] == "maria.pharm"
    # Who opened the session, and who else ended it.
    assert by["service"] == [("started", None, "tom.tech"), ("ended", "ann.tech", "tom.tech")], by
    await app.stop()


def test_every_record_names_the_person_and_service_sessions_are_bound_to_their_technician():
    asyncio.run(_named())


async def _refusals():
    app, w, r = await _up()
    ctl = app.ctl
    cases = [
        ("a1", "pickup", {"order": "RX-1", "bin": 3}, "bin_empty"),
        ("a2", "pickup", {"order": "RX-1", "bin": 99}, "bad_bin"),
        ("a3", "pickup", {"order": "RX-1"}, "bad_args"),
        ("a4", "pickup", {"order": "RX-1", "bin": "3"}, "bad_args"),
        ("a5", "launch", {}, "unknown_op"),
        ("a6", "restock", {"order": "RX-1", "bin": 3}, "no_service_session"),
        ("a7", "unlock", {"door": "service"}, "no_service_session"),
        ("a8", "jog", {"bins": 1}, "no_service_session"),
    ]
    for op_id, kind, args, why in cases:
        ctl.submit(op_id, kind, args)
        state, info = await r.final(op_id)
        assert state == "rejected" and info["reason"] == why, (op_id, state, info)
    ctl.submit("a1", "home", {})
    assert r.last("a1")[1]["reason"] == "duplicate"
    refused = kit.journal_kinds(app.journal, "refused")
    assert [x["why"] for x in refused] == [c[3] for c in cases] + ["duplicate"]
    assert w.carousels["A"].state()["moves"] == 0 and w.locks["pickup"].energize_count == 0
    await app.stop()


def test_bad_requests_are_refused_journaled_and_never_actuate():
    asyncio.run(_refusals())


async def _excursion():
    pol = dict(FAST)
    pol["hold_pickups_on_excursion"] = True
    app, w, r = await _up(pol)
    ctl = app.ctl
    state, _ = await _restock(app, w, r, 2, "RX-2")
    assert state == "succeeded"
    w.handle({"op": "sensor", "sensor": "cabinet", "celsius": 31.5, "drift": 0})
    assert await kit.wait_for(lambda: ctl.climate.pickups_held(), 8000)
    ctl.submit("p-held", "pickup", {"order": "RX-2", "bin": 2})
    state, info = await r.final("p-held")
    assert state == "rejected" and info["reason"] == "excursion_hold", (state, info)
    xid = [t for t in kit.journal_kinds(app.journal, "temp") if t.get("ev") == "excursion_start"][0]["id"]
    ctl.submit("c-0", "clear_excursion", {"excursion": str(xid)})
    assert r.last("c-0")[1]["reason"] == "excursion_ongoing", "one still going on cannot be cleared"
    assert ctl.climate.pickups_held()
    w.handle({"op": "sensor", "sensor": "cabinet", "celsius": 22.0, "drift": 0})
    temps = []
    assert await kit.wait_for(lambda: any(t.get("ev") == "excursion_end" for t in kit.journal_kinds(app.journal, "temp")), 8000)
    temps = kit.journal_kinds(app.journal, "temp")
    start = [t for t in temps if t.get("ev") == "excursion_start"][0]
    end = [t for t in temps if t.get("ev") == "excursion_end"][0]
    # Journaled in centi-degrees, signable, with the stocked bin named.
    assert end["max_centi"] >= 3100 and isinstance(end["max_centi"], int), end
    assert 2 in end["bins"], end
    assert ctl.climate.pickups_held(), "an ended excursion stays held until the host clears it"
    ctl.submit("c-1", "clear_excursion", {"excursion": str(start["id"])})
    assert r.last("c-1")[0] == "succeeded", r.last("c-1")
    assert not ctl.climate.pickups_held()
    ctl.submit("c-2", "clear_excursion", {"excursion": "nope"})
    assert r.last("c-2")[1]["reason"] == "unknown_excursion"
    await app.stop()


def test_excursion_holds_pickups_until_cleared():
    asyncio.run(_excursion())


async def _stocked():
    app, w, r = await _up()
    state, _ = await _restock(app, w, r, 4, "RX-4")
    assert state == "succeeded"
    return app, w, r


def _safe(w):
    car = w.carousels["A"].state()
    assert not car["enabled"], car
    for lk in w.locks.values():
        assert not lk.energized(), lk.state()
    assert w.violation_count == 0, w.violations


async def _door_never_opened():
    app, w, r = await _stocked()
    app.ctl.submit("p", "pickup", {"order": "RX-4", "bin": 4})
    state, info = await r.final("p")
    assert (state, info["reason"]) == ("timed_out", "door_not_opened"), (state, info)
    _safe(w)
    assert app.ctl.stock.bins == {"4": "RX-4"}, "the medicine is still in its bin"
    await app.stop()


def test_pickup_door_never_opened_times_out_locked():
    asyncio.run(_door_never_opened())


async def _held_open():
    app, w, r = await _stocked()
    patient = asyncio.create_task(kit.person(w, "pickup", hold=12000))
    app.ctl.submit("p", "pickup", {"order": "RX-4", "bin": 4})
    state, info = await r.final("p", 15000)
    patient.cancel()
    assert (state, info["reason"]) == ("failed", "door_left_open"), (state, info)
    doors = kit.journal_kinds(app.journal, "door")
    assert any(d["ev"] == "door_held_open" and d["door"] == "pickup" for d in doors), doors
    assert not w.locks["pickup"].energized()
    await app.stop()


def test_pickup_door_held_open_alarms_and_fails():
    asyncio.run(_held_open())


async def _bolt_jam():
    app, w, r = await _stocked()
    patient = asyncio.create_task(kit.person(w, "pickup"))
    app.ctl.submit("p", "pickup", {"order": "RX-4", "bin": 4})
    assert await kit.wait_for(lambda: w.locks["pickup"].energized(), 10000)
    w.handle({"op": "fault", "kind": "lock_jam", "target": "pickup", "on": True})
    state, info = await r.final("p")
    await patient
    assert (state, info["reason"]) == ("failed", "bolt_not_engaged"), (state, info)
    await app.stop()


def test_pickup_lock_not_engaging_fails_with_alarm():
    asyncio.run(_bolt_jam())


async def _stall():
    app, w, r = await _up()
    app.ctl.submit("h", "home", {})
    assert (await r.final("h"))[0] == "succeeded"
    app.ctl.submit("s", "service_start", {"session": "tech"})
    w.handle({"op": "fault", "kind": "stall", "on": True})
    app.ctl.submit("r", "restock", {"order": "RX-4", "bin": 4})
    state, info = await r.final("r")
    assert state == "failed" and info["reason"] == "position_lost", (state, info)
    _safe(w)
    assert w.locks["service"].energize_count == 0, "never unlock at a wrong bin"
    assert "position_lost" in app.ctl.faults
    faults = kit.journal_kinds(app.journal, "fault")
    assert faults and faults[-1]["code"] == "position_lost", faults
    assert app.ctl.stock.bins == {}
    await app.stop()


def test_stall_fails_the_pickup_before_any_door_opens():
    asyncio.run(_stall())


async def _wrong_home(fault, reason):
    # A bin is stocked from before a reset, so the carousel must home first;
    # its home switch is broken (never seen) or stuck (always closed).
    from kiosk import files as store
    store.write_json("stock.json", {"bins": {"5": "RX-5"}, "unverified": []})
    app, w, r = await _up()
    w.handle({"op": "fault", "kind": fault, "on": True})
    app.ctl.submit("p", "pickup", {"order": "RX-5", "bin": 5})
    state, info = await r.final("p", 20000)
    assert (state, info.get("reason")) == ("failed", reason), (state, info)
    _safe(w)
    assert w.locks["pickup"].energize_count == 0, "never unlock without knowing the bin"
    assert app.ctl.stock.bins == {"5": "RX-5"}, "nothing left the bin"
    faults = kit.journal_kinds(app.journal, "fault")
    assert faults and faults[-1]["code"] == reason, faults
    op = kit.journal_kinds(app.journal, "op")[-1]
    assert op["id"] == "p" and op["state"] == "failed" and op["opened"] is False, op
    await app.stop()


def test_a_home_switch_never_seen_fails_the_pickup_with_the_door_locked():
    asyncio.run(_wrong_home("home_broken", "home_not_found"))


def test_a_home_switch_stuck_closed_fails_the_pickup_with_the_door_locked():
    asyncio.run(_wrong_home("home_stuck", "home_stuck"))


async def _forced():
    app, w, r = await _up()
    await asyncio.sleep_ms(1500)
    w.handle({"op": "door", "door": "pickup", "action": "force"})
    assert await kit.wait_for(lambda: any(d["ev"] == "door_forced" for d in kit.journal_kinds(app.journal, "door")), 4000)
    # While a door stands open nothing may move: the home request is refused.
    app.ctl.submit("h", "home", {})
    state, info = await r.final("h")
    assert (state, info["reason"]) == ("rejected", "door_not_secure"), (state, info)
    assert w.carousels["A"].state()["moves"] == 0
    await app.stop()


def test_forced_door_alarms_and_blocks_motion():
    asyncio.run(_forced())


async def _selftest(fault=None):
    app, w, r = await _up()
    app.ctl.submit("s", "service_start", {"session": "tech"})
    if fault:
        w.handle(fault)
    app.ctl.submit("t", "selftest", {})
    state, info = await r.final("t", 30000)
    rec = kit.journal_kinds(app.journal, "selftest")
    _safe(w)
    await app.stop()
    return state, info, rec


def test_selftest_passes_on_healthy_hardware():
    state, info, rec = asyncio.run(_selftest())
    assert state == "succeeded", (state, info)
    assert rec and rec[-1]["passed"] is True
    assert set(rec[-1]["locks"]) == {"pickup", "service"} and set(rec[-1]["sensors"]) == {"shelf_top", "shelf_bottom", "cabinet"}


def test_selftest_names_each_failed_part():
    state, info, rec = asyncio.run(_selftest({"op": "fault", "kind": "lock_jam", "target": "service", "on": True}))
    assert (state, info.get("reason")) == ("failed", "selftest_failed"), (state, info)
    assert rec[-1]["locks"] == {"pickup": "ok", "service": "bolt_did_not_release"}, rec[-1]
    state, info, rec = asyncio.run(_selftest({"op": "fault", "kind": "sensor_unplugged", "target": "cabinet", "on": True}))
    assert state == "failed" and rec[-1]["sensors"]["cabinet"] != "ok", rec[-1]
    assert rec[-1]["sensors"]["shelf_top"] == "ok"


async def _verify():
    app, w, r = await _up()
    ctl = app.ctl
    state, _ = await _restock(app, w, r, 6, "RX-6")
    assert state == "succeeded"
    ctl.stock.unverified.append(6)              # as a reset during a door cycle leaves it
    ctl.submit("p", "pickup", {"order": "RX-6", "bin": 6})
    assert (await r.final("p"))[1]["reason"] == "bin_unverified"
    ctl.submit("v0", "verify_bin", {"bin": 6, "present": False})
    assert r.last("v0")[1]["reason"] == "no_service_session"
    ctl.submit("s2", "service_start", {"session": "tech"})
    ctl.submit("v1", "verify_bin", {"bin": 6, "present": 1})
    assert r.last("v1")[1]["reason"] == "bad_args"
    ctl.submit("v2", "verify_bin", {"bin": 6, "present": False})
    assert r.last("v2")[0] == "succeeded"
    assert ctl.stock.bins == {} and ctl.stock.unverified == []
    ev = kit.journal_kinds(app.journal, "stock")
    assert ev[-1]["ev"] == "verified" and ev[-1]["present"] is False
    await app.stop()


def test_unverified_bin_refused_until_a_technician_verifies_it():
    asyncio.run(_verify())


async def _one_door():
    app, w, r = await _up()
    ctl = app.ctl
    assert await kit.wait_for(ctl.settled, 3000)
    ctl.submit("s", "service_start", {"session": "tech"})
    w.handle({"op": "door", "door": "service", "action": "force"})
    assert await kit.wait_for(lambda: ctl.locks["service"].door() == "open", 3000)
    ctl.submit("u", "unlock", {"door": "pickup"})
    state, info = await r.final("u")
    assert (state, info["reason"]) == ("rejected", "other_door_open"), (state, info)
    ctl.submit("j", "jog", {"bins": 1})
    state, info = await r.final("j")
    assert state == "rejected" and info["reason"] in ("not_homed", "door_not_secure"), (state, info)
    ctl.submit("h", "home", {})
    assert (await r.final("h"))[1]["reason"] == "door_not_secure"
    why = [x["why"] for x in kit.journal_kinds(app.journal, "refused")]
    assert "other_door_open" in why and "door_not_secure" in why, why
    assert w.locks["pickup"].energize_count == 0 and w.carousels["A"].state()["moves"] == 0
    await app.stop()


def test_one_door_at_a_time_and_no_motion_with_a_door_open():
    asyncio.run(_one_door())
