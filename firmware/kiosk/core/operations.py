# The operations themselves: what a pickup, a restock, a retrieval, a
# service unlock, a homing and a jog do, step by step, through the controller's guarded
# primitives (ctl.motor, ctl.check_unlock, ctl.step, ctl.until). The
# controller runs one at a time and records how it ended; here is only
# what each does. Each is `async def name(ctl, op, args)` returning the
# info its success reports.
import time
from kiosk.core.jobs import Refused, OpTimeout, OpFailed
from kiosk.core.scans import short_hash
from kiosk.hw.lock import LockRefused
from kiosk.contract import K_PICKUP, K_RESTOCK, K_RETRIEVE, K_SCAN


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
    rec = {"id": op.id, "order": a["order"], "bin": b}
    if "scan" in a:
        rec["scan"] = a["scan"]
    ctl.event(K_PICKUP, _named(op, rec))
    return {"bin": b}


async def read_label(ctl, op, since):
    """The package label the technician scanned since the operation began
    (while the bin turned, or now): the text, or OpTimeout."""
    if ctl.scanner is None:
        raise Refused("no_scanner", "this kiosk has no scanner for the label check")
    ctl.step(op, "scanning_label")
    got = []

    def scanned():
        text = ctl.scans.take_label(since)
        if text is not None:
            got.append(text)
        return bool(got)

    if not await ctl.until(scanned, ctl.policies["label_scan_timeout_s"] * 1000):
        raise OpTimeout("no_label")
    return got[0]


async def restock(ctl, op, a):
    b = a["bin"]
    if ctl.stock.order_in(b) is not None:
        raise Refused("bin_full")
    since = time.ticks_ms()
    label = None
    await bring(ctl, op, b)
    if ctl.policies["restock_label_check"]:
        label = await read_label(ctl, op, since)
        match = label == a["order"]
        ctl.event(K_SCAN, {"ev": "label", "id": op.id, "order": a["order"], "h": short_hash(label),
                           "match": match})
        if not match:
            raise Refused("label_mismatch", "the package's label is not the order to stock")
    await door_cycle(ctl, op, "service")
    ctl.stock.put(b, a["order"])
    rec = {"id": op.id, "order": a["order"], "bin": b}
    if label is not None:
        rec["label"] = "checked"
    ctl.event(K_RESTOCK, _named(op, rec))
    return {"bin": b}


async def retrieve(ctl, op, a):
    """Take an order back out of its bin through the service door (an
    expired or cancelled order returns to the pharmacy's stock)."""
    b = a["bin"]
    have = ctl.stock.order_in(b)
    if have is None:
        raise Refused("bin_empty")
    if have != a["order"]:
        raise Refused("bin_mismatch")
    await bring(ctl, op, b)
    await door_cycle(ctl, op, "service")
    ctl.stock.take(b)
    ctl.event(K_RETRIEVE, _named(op, {"id": op.id, "order": a["order"], "bin": b}))
    return {"bin": b}


def _named(op, fields):
    """The record with the person who asked for the operation (`by`)."""
    if op.by:
        fields["by"] = op.by
    return fields


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


RUN = {"pickup": pickup, "restock": restock, "retrieve": retrieve, "unlock": unlock, "home": home,
       "jog": jog, "selftest": selftest}
