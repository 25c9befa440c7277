# Self-test of every actuator and sensor, run as a service operation (the
# technician is at the kiosk): each sensor must give a checked reading, each
# lock must release and re-engage its bolt on a short pulse with the door
# shut, and each carousel must home and step one bin out and back. Every
# result is journaled; any failure fails the operation with the details.
import asyncio
from kiosk.hw.lock import LockRefused
from kiosk.core.jobs import OpFailed
from kiosk.contract import K_SELFTEST

_PULSE_MS = 600


async def run(ctl, op):
    res = {"sensors": {}, "locks": {}, "carousels": {}}
    ctl.step(op, "sensors")
    await ctl.sample()
    for name, val in ctl.sensors.values().items():
        res["sensors"][name] = "ok" if val[0] is not None else ctl.sensors.state(name)["error"] or "no_reading"
    ctl.step(op, "locks")
    for name, lk in ctl.locks.items():
        res["locks"][name] = await _pulse(ctl, name, lk)
    ctl.step(op, "carousels")
    for c in ctl.carousels:
        res["carousels"][c.name] = await _carousel(ctl, c)
    passed = True
    for group in res.values():
        for v in group.values():
            passed = passed and v == "ok"
    res["passed"] = passed
    ctl.event(K_SELFTEST, res)
    if not passed:
        raise OpFailed("selftest_failed")
    return res


async def _pulse(ctl, name, lk):
    if lk.door() != "closed" or lk.bolt() != "engaged":
        return "door_not_shut"
    try:
        ctl.check_unlock(name)
        lk.unlock(_PULSE_MS)
    except LockRefused as e:
        return "lock_" + e.code
    except Exception as e:
        return getattr(e, "code", "refused")
    released = await ctl.until(lambda: lk.bolt() == "not_engaged", _PULSE_MS)
    lk.lock()
    if not released:
        return "bolt_did_not_release"
    if lk.door() != "closed":
        return "door_opened_during_test"
    if not await ctl.until(lambda: lk.bolt() == "engaged", ctl.policies["relock_verify_s"] * 1000):
        return "bolt_not_engaged"
    return "ok"


async def _carousel(ctl, c):
    try:
        await ctl.motor(c.home(), "selftest home " + c.name)
        await ctl.motor(c.move_to_bin(1), "selftest bin 2")
        await ctl.motor(c.move_to_bin(0), "selftest bin 1")
    except Exception as e:
        return getattr(e, "args", ("fault",))[0] if not hasattr(e, "code") else e.code
    await asyncio.sleep_ms(0)
    return "ok" if c.bin_at_door() == 0 else "position_lost"
