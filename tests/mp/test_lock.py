# The door lock driver against the simulated lock and door: fail-secure at
# boot, a pickup's events, the alarms (forced, held open, bolt not engaged,
# cut sensor wires) and the energising cap holding while the main loop is
# stalled. Timings are cut short through the board dict and the driver's
# options. Needs KIOSK_REPO (the repository root; the runner sets it).
import gc
import os
import time
# Compiling from source takes heap: the biggest module first, and a collect
# after each so the next compile finds room in the board-sized heap.
from kiosk.hw import lock as K
gc.collect()
import simworld
import kit
gc.collect()
from kiosk.hw import board
from kiosk.hw import hal
gc.collect()
import sim_lock
gc.collect()

FAST = {"open_debounce_ms": 150, "close_debounce_ms": 50, "bolt_debounce_ms": 30,
        "bolt_verify_ms": 200, "held_open_ms": 5000, "relock_grace_ms": 100}


def _board(cap=2000, rest=300):
    """The emulator board with only its locks, their timings cut short."""
    b = kit.on_port(board.load(os.getenv("KIOSK_REPO") + "/boards/emulator.json"))
    b["carousels"] = []
    b["sensors"] = []
    for c in b["locks"]:
        c["max_energize_ms"] = cap
        c["rest_ms"] = rest
    return b


def _rig(cap=2000, rest=300, **opts):
    """(world, simulated pickup lock, settled driver)."""
    b = _board(cap, rest)
    w = simworld.install(b)
    o = dict(FAST)
    o.update(opts)
    lk = K.from_board(b, b["locks"][0], **o)
    ev = []
    _run(lk, 300, ev)
    assert sorted(ev) == [K.BOLT_ENGAGED, K.DOOR_CLOSED], ev  # first readings, no alarm
    assert lk.secure(), lk.state()
    return w, w.locks["pickup"], lk


def _run(lk, ms, ev, stop=None):
    """Poll every 10 ms like the controller for up to ms, collecting events
    into ev; True as soon as `stop` is seen."""
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < ms:
        e = lk.update(time.ticks_ms())
        while e:
            ev.append(e)
            if e == stop:
                return True
            e = lk.next_event()
        time.sleep_ms(10)
    return False


def _door(w, action):
    return w.handle({"op": "door", "door": "pickup", "action": action})


def _fault(w, kind, on=True):
    w.handle({"op": "fault", "kind": kind, "target": "pickup", "on": on})


def _refused(lk, ms, code):
    try:
        lk.unlock(ms)
    except K.LockRefused as e:
        assert e.code == code, e.code
        return e.retry_ms
    raise AssertionError("unlock(%r) accepted" % ms)


def test_boot_deenergises_a_drive_left_on():
    b = _board()
    w = simworld.install(b)
    c = b["locks"][0]
    out = hal.Out(c["drive_pin"], active=1)
    sim = w.locks["pickup"]
    assert sim.energized() and not sim.bolt_extended
    lk = K.DoorLock(c, out, hal.In(c["bolt_pin"]), hal.In(c["door_pin"]), hal.OneShot(b["mcu"]))
    assert not sim.energized() and sim.bolt_engaged()
    assert out.active() == 0 and not lk.energized()


def test_pickup_sequence_reports_events_in_order():
    w, sim, lk = _rig()
    assert _door(w, "open") == {"ok": False, "door": "closed", "reason": "locked"}
    assert lk.unlock(1000) == 1000
    assert sim.energized() and lk.energized()
    ev = []
    assert _run(lk, 500, ev, K.BOLT_RELEASED), ev
    assert _door(w, "open")["ok"]
    assert _run(lk, 1000, ev, K.DOOR_OPENED), ev
    assert _door(w, "close")["ok"]
    assert _run(lk, 500, ev, K.DOOR_CLOSED), ev
    lk.lock()
    assert not sim.energized()
    assert _run(lk, 500, ev, K.BOLT_ENGAGED), ev
    _run(lk, 300, ev)  # and nothing after
    assert ev == [K.BOLT_RELEASED, K.DOOR_OPENED, K.DOOR_CLOSED, K.BOLT_ENGAGED], ev
    assert sim.bolt_engaged() and lk.secure()
    assert sim.forced_count == 0 and w.violation_count == 0, w.violations


def test_forced_door_alarms_but_a_short_bounce_does_not():
    w, sim, lk = _rig(open_debounce_ms=1000)
    ev = []
    _door(w, "force")  # yanked; springs back within 100 ms
    _run(lk, 60, ev)
    _door(w, "close")
    _run(lk, 1300, ev)
    assert K.DOOR_OPENED not in ev and K.DOOR_FORCED not in ev, ev
    assert not lk.alarms & K.ALARM_FORCED
    ev = []
    _door(w, "force")
    t0 = time.ticks_ms()
    assert _run(lk, 1500, ev, K.DOOR_FORCED), ev
    assert time.ticks_diff(time.ticks_ms(), t0) >= 1000
    assert ev.index(K.DOOR_OPENED) == len(ev) - 2, ev
    assert lk.alarms & K.ALARM_FORCED and not lk.secure()
    assert "forced" in lk.state()["alarms"]
    assert sim.forced_count == 2
    _door(w, "close")
    assert _run(lk, 500, ev, K.DOOR_CLOSED), ev
    assert not lk.alarms & K.ALARM_FORCED


def test_door_held_open_alarm_once_per_opening():
    w, sim, lk = _rig(held_open_ms=300)
    lk.unlock(2000)
    ev = []
    _run(lk, 100, ev)
    assert _door(w, "open")["ok"]
    t0 = time.ticks_ms()
    assert _run(lk, 1000, ev, K.DOOR_HELD_OPEN), ev
    assert time.ticks_diff(time.ticks_ms(), t0) >= 300
    assert lk.alarms & K.ALARM_HELD_OPEN
    _run(lk, 600, ev)
    assert ev.count(K.DOOR_HELD_OPEN) == 1 and K.DOOR_FORCED not in ev, ev
    _door(w, "close")
    assert _run(lk, 500, ev, K.DOOR_CLOSED), ev
    assert not lk.alarms & K.ALARM_HELD_OPEN


def test_jammed_bolt_reports_not_engaged_after_relock():
    w, sim, lk = _rig()
    lk.unlock(2000)
    ev = []
    assert _run(lk, 500, ev, K.BOLT_RELEASED), ev
    _fault(w, "lock_jam")
    lk.lock()
    t0 = time.ticks_ms()
    assert not sim.energized() and not sim.bolt_extended
    assert _run(lk, 1000, ev, K.BOLT_NOT_ENGAGED), ev
    assert time.ticks_diff(time.ticks_ms(), t0) >= 200  # bolt_verify_ms
    assert lk.alarms & K.ALARM_BOLT and not lk.secure()
    assert _door(w, "open")["ok"]  # shut but not held: it really is open to anyone
    _door(w, "close")
    _fault(w, "lock_jam", False)
    assert _run(lk, 500, ev, K.BOLT_ENGAGED), ev
    assert not lk.alarms & K.ALARM_BOLT


def test_cap_holds_while_the_main_loop_is_stalled():
    w, sim, lk = _rig(cap=300)
    assert lk.unlock(60000) == 300
    time.sleep_ms(100)
    assert lk.unlock(60000) <= 210  # extends, but not past the first cap
    # Stalled: no update(), no asyncio. Only the hardware timer can help.
    time.sleep_ms(800)
    assert not sim.energized() and not lk.energized()
    assert 280 <= sim.max_energized_ms <= 350, sim.max_energized_ms
    assert sim.energize_count == 1
    ev = []
    _run(lk, 100, ev)
    assert ev[0] == K.LOCK_CAP_REACHED, ev
    assert lk.cap_count == 1
    assert w.violation_count == 0, w.violations


def test_cap_holds_while_python_code_hogs_the_cpu():
    # A long stretch of Python (no await, no sleep): a hard timer interrupts
    # it (rp2), a scheduled callback runs between its bytecodes (esp32).
    w, sim, lk = _rig(cap=300)
    lk.unlock(60000)
    t0 = time.ticks_ms()
    n = 0
    while time.ticks_diff(time.ticks_ms(), t0) < 900:
        n += 1
    assert not sim.energized()
    assert 280 <= sim.max_energized_ms <= 350, sim.max_energized_ms


def test_cap_waits_no_longer_than_the_cpu_is_held():
    # While the CPU is held in C (a flash erase, a blocking DNS lookup on the
    # ESP32) no interrupt or scheduled callback runs: the cap falls due and
    # drops the coil the moment the hold ends, never later. The watchdog
    # bounds the hold itself (tests/test_watchdog.py).
    import port
    w, sim, lk = _rig(cap=300)
    lk.unlock(60000)
    t0 = time.ticks_ms()
    port.stall(1000000)
    held = time.ticks_diff(time.ticks_ms(), t0)
    ev = []
    _run(lk, 100, ev)
    assert not sim.energized()
    assert held - 50 <= sim.max_energized_ms <= held + 100, (held, sim.max_energized_ms)
    assert ev[0] == K.LOCK_CAP_REACHED, ev


def test_a_lost_cap_callback_is_caught_by_the_poll():
    # The second line behind the timer: a callback that never comes (an
    # ESP32 ISR finds the scheduler's queue full and drops it) still ends
    # the energising at the next poll past the window.
    w, sim, lk = _rig(cap=300)
    lk.unlock(60000)
    lk._timer.cancel()
    ev = []
    assert _run(lk, 800, ev, K.LOCK_CAP_REACHED), ev
    assert not sim.energized()
    assert 280 <= sim.max_energized_ms <= 400, sim.max_energized_ms
    assert lk.late_caps == 1 and lk.state()["late_caps"] == 1


def test_a_late_callback_never_cuts_a_later_window_short():
    # A scheduled callback of an earlier window that runs after the coil was
    # energised again must not end the new window.
    w, sim, lk = _rig(cap=300, rest=0)
    lk.unlock(100)
    lk._timer.cancel()
    ev = []
    assert _run(lk, 400, ev, K.UNLOCK_EXPIRED), ev
    assert lk.unlock(250) == 250
    lk._expire(None)                  # the old window's callback, late
    assert sim.energized() and lk.energized()
    ev = []
    assert _run(lk, 500, ev, K.UNLOCK_EXPIRED), ev
    assert 230 <= sim.max_energized_ms <= 320, sim.max_energized_ms


def test_unlock_refused_while_the_coil_rests():
    w, sim, lk = _rig(cap=300, rest=300)
    for bad in (0, -5, 1.5):
        _refused(lk, bad, K.REFUSED_BAD_MS)
    lk.unlock(5000)
    ev = []
    assert _run(lk, 600, ev, K.LOCK_CAP_REACHED), ev
    wait = _refused(lk, 100, K.REFUSED_RESTING)
    assert 0 < wait <= 300, wait
    assert lk.rest_left() > 0 and not sim.energized()
    time.sleep_ms(wait + 20)
    assert lk.unlock(100) == 100
    assert _run(lk, 400, ev, K.UNLOCK_EXPIRED), ev
    wait = _refused(lk, 100, K.REFUSED_RESTING)  # rest in proportion: ~100 ms
    assert wait <= 150, wait
    time.sleep_ms(wait + 20)
    lk.unlock(100)
    lk.lock()
    assert sim.energize_count == 3
    assert w.violation_count == 0, w.violations


def test_broken_sensors_fail_toward_alarms():
    w, sim, lk = _rig()
    c = w.board["locks"][0]
    ev = []
    _fault(w, "bolt_sensor_broken")
    assert hal.In(c["bolt_pin"]).active() == 0  # a cut wire reads "not engaged"
    assert _run(lk, 1000, ev, K.BOLT_NOT_ENGAGED), ev
    _fault(w, "door_sensor_broken")
    assert hal.In(c["door_pin"]).active() == 0  # a cut wire reads "open"
    assert _run(lk, 1000, ev, K.DOOR_FORCED), ev
    assert sim.door_closed and not sim.energized()  # nothing really moved
    assert lk.door() == K.OPEN
    assert lk.alarms == K.ALARM_FORCED | K.ALARM_BOLT


def test_update_does_not_allocate():
    w, sim, lk = _rig(open_debounce_ms=5, close_debounce_ms=5, bolt_debounce_ms=5,
                      bolt_verify_ms=10, held_open_ms=20, relock_grace_ms=5)
    num = sim.door_pin.num
    levels = (w.inputs[num] ^ 1, w.inputs[num])  # door open, closed (electrical)
    loop = range(1000)
    seen = 0
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for i in loop:
        if i % 50 == 0:
            w.drive(num, levels[(i // 50) & 1])
        e = lk.update(time.ticks_ms())
        while e:
            seen += 1
            e = lk.next_event()
        time.sleep_ms(1)
    grew = gc.mem_alloc() - before
    gc.enable()
    assert grew <= 0, grew
    assert seen >= 20, seen  # it did go through openings and alarms
