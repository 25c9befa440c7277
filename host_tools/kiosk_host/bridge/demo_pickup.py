"""The demo's pickup, ready to try: once the demo's last kiosk is up, an order
arrives as from the pharmacy system, a technician stocks it (a service
session, its label scanned, the service door opened and shut, all in the
simulated world), a pharmacist releases it, and its pickup code is
printed with a link that pairs the kiosk's screen. Scanning the code in the
dashboard's Simulate panel then opens the pickup door for it. A second
order waits at the first kiosk for the demo's visitor to stock, release
and hand over from the dashboard (the banner's next steps)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Callable

from ..emulator import EmulatorError
from ..emulator.fleet import Fleet
from .orders import OrderError
from .service import Bridge, BridgeError, bin_count

log = logging.getLogger("kiosk_bridge")

ORDER = "demo-rx-1"
TO_STOCK = "demo-rx-2"
# Who does each step: the demo's own users (run.DEMO_USERS).
SYSTEM, TECHNICIAN, PHARMACIST = "demo-system", "demo-technician", "demo-pharmacist"
ITEMS = [{"ndc": "0093-4155-73", "name": "Amoxicillin 500 mg capsule", "qty": 21}]


class Failed(Exception):
    pass


def _until(what: str, cond: Callable[[], object], timeout: float = 60.0):
    end = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > end:
            raise Failed(f"timed out waiting for {what}")
        time.sleep(0.2)


def _run(bridge: Bridge, kiosk: str, op: str, args: dict) -> dict:
    cid = bridge.send(kiosk, op, args, actor=TECHNICIAN)["command_id"]
    c = _until(f"{op} to end", lambda: (lambda c: c if c["state"] in ("succeeded", "failed", "timed_out",
                                                                       "rejected", "cancelled") else None)(
        bridge.store.command(cid)))
    if c["state"] != "succeeded":
        raise Failed(f"{op} {c['state']} ({c.get('reason')})")
    return c


def prepare(bridge: Bridge, fleet: Fleet, url: str, say: Callable[[str], None] = print) -> str | None:
    """Stock and release the demo's order at the last kiosk and say its
    code; None (said why) if the demo's world got in the way."""
    kiosk = fleet.ids[-1]
    orders = bridge.orders
    try:
        k = _until(f"{kiosk} online, its doors settled", lambda: (lambda k: k if k and k["online"] and all(
            d.get("door") == "closed" for d in k["status"]["doors"].values()) and len(k["status"]["doors"]) == 2
            else None)(bridge.store.kiosk(kiosk)), 90)
        pickup_by = (dt.date.today() + dt.timedelta(days=7)).isoformat()
        orders.create(ORDER, kiosk, "demo-patient-1", ITEMS, False, pickup_by, SYSTEM)
        _run(bridge, kiosk, "service_start", {"session": "demo-technician"})
        cid, bin_no = orders.begin_restock(kiosk, ORDER, TECHNICIAN, bin_count(k) or 1, k["status"])
        bridge.flush_commands()
        _until("the kiosk to ask for the label", lambda: (bridge.store.command(cid)["info"] or {}).get("step")
               == "scanning_label")
        fleet.scan(kiosk, ORDER)
        _until("the service door to unlock", lambda: fleet.world(kiosk)["world"]["locks"]["service"]["energized"])
        fleet.door(kiosk, "service", "open")
        time.sleep(1.6)
        fleet.door(kiosk, "service", "close")
        _until("the order stocked", lambda: orders.get(ORDER)["state"] == "stocked")
        _run(bridge, kiosk, "service_end", {})
        orders.release(ORDER, "not_required", "demo", PHARMACIST)
        code = orders.issue_code(ORDER, SYSTEM)
        orders.create(TO_STOCK, fleet.ids[0], "demo-patient-2", ITEMS, True, pickup_by, SYSTEM)
        from .screens import Screens
        secret, _ = Screens(bridge.store).pairing(kiosk, TECHNICIAN)
    except (Failed, OrderError, BridgeError, EmulatorError) as e:
        say(f"demo: the demo order could not be prepared: {e}")
        return None
    except Exception as e:  # the demo runs on: say what went wrong, in one line
        say(f"demo: the demo order could not be prepared: {type(e).__name__}: {e}")
        return None
    say(f"demo: the kiosk's screen: {url}screen/{kiosk}#pair={secret}")
    say(f"demo: scan the code in the Simulate panel of {url}kiosk/{kiosk}, then open and close the pickup door")
    say(f"demo: order {ORDER} waits in bin {bin_no} of {kiosk}, released; its pickup code is {code}")
    say(f"demo: order {TO_STOCK} has come from the pharmacy system for {fleet.ids[0]}: for the technician to stock")
    return code
