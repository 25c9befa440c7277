# The operations themselves: what a pickup, a restock, a service unlock, a
# homing and a jog do, step by step, through the controller's guarded
# primitives (ctl.motor, ctl.check_unlock, ctl.step, ctl.until). The
# controller runs one at a time and records how it ended; here is only
# what each does. Each is `async def name(ctl, op, args)` returning the
# info its success reports.
from kiosk.core.jobs import Refused, OpTimeout, OpFailed
from kiosk.hw.lock import LockRefused
from kiosk.contract import K_PICKUP, K_RESTOCK


async def bring(ctl, op, bin_no):
    """Bring a bin to the door, homing first if the position is unknown."""
    c, local = ctl.locate(bin_no)
    if not c.homed:
        ctl.step(op, "homing")
        await ctl.home_all()
    ctl.step(op, "moving")
    await ctl.motor(c.move_to_bin(local), "bin %d" % bin_no)


async def door_cycle(ctl, op, door):
    """The door cycle shared by pickup, restock and service unlock: unlock,
    wait for the door to open, relock at once (the latch catches when it
    shuts), wait for it to close, verify the bolt."""
    ctl.check_unlock(door)
    lk = ctl.locks[door]
    pol = ctl.policies
    ctl.step(op, "unlocking")
    try:
        ms = lk.unlock(pol["door_open_timeout_s"] * 1000)
    except LockRefused as e:
        raise Refused("lock_" + e.code)
    ctl.step(op, "waiting_open")
    if not await ctl.until(lambda: lk.door() == "open", ms):
        lk.lock()
        raise OpTimeout("door_not_opened")
    op.opened = True
    lk.lock()   # de-energise at once: the latch bolt catches when the door shuts
    ctl.step(op, "waiting_close")
    limit = pol["door_held_open_s"] * 1000 * 5
    if not await ctl.until(lambda: lk.door() == "closed", limit):
        raise OpFailed("door_left_open")
    ctl.step(op, "verifying")
    if not await ctl.until(lambda: lk.bolt() == "engaged", pol["relock_verify_s"] * 1000):
        raise OpFailed("bolt_not_engaged")


async def pickup(ctl, op, a):
    b = a["bin"]
    if ctl.policies["hold_pickups_on_excursion"] and ctl.climate.pickups_held():
        raise Refused("excursion_hold")
    if ctl.in_service():
        raise Refused("service_in_progress")
    have = ctl.stock.order_in(b)
    if have is None:
        raise Refused("bin_empty")
    if have != a["order"]:
        raise Refused("bin_mismatch")
    if b in ctl.stock.unverified:
        raise Refused("bin_unverified", "a reset left this bin uncertain; a technician must verify it")
    await bring(ctl, op, b)
    await door_cycle(ctl, op, "pickup")
    ctl.stock.take(b)
    ctl.event(K_PICKUP, {"id": op.id, "order": a["order"], "bin": b})
    return {"bin": b}


async def restock(ctl, op, a):
    b = a["bin"]
    if ctl.stock.order_in(b) is not None:
        raise Refused("bin_full")
    await bring(ctl, op, b)
    await door_cycle(ctl, op, "service")
    ctl.stock.put(b, a["order"])
    ctl.event(K_RESTOCK, {"id": op.id, "order": a["order"], "bin": b})
    return {"bin": b}


async def unlock(ctl, op, a):
    await door_cycle(ctl, op, a["door"])
    return {}


async def home(ctl, op, a):
    ctl.step(op, "homing")
    await ctl.home_all()
    return {}


async def jog(ctl, op, a):
    c = ctl.carousels[0]
    if not c.homed:
        raise Refused("not_homed")
    n = ctl.bins_of(0)
    target = (c.bin_at_door() + a["bins"]) % n
    ctl.step(op, "moving")
    await ctl.motor(c.move_to_bin(target), "jog %d" % a["bins"])
    return {"bin": target + 1}


async def selftest(ctl, op, a):
    from kiosk.core import selftest as st
    return await st.run(ctl, op)


RUN = {"pickup": pickup, "restock": restock, "unlock": unlock, "home": home, "jog": jog,
       "selftest": selftest}
