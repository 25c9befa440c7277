"""The kiosk's events, the custody records, paged in either direction."""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Query

from ... import contract
from .. import refusals
from ..service import Bridge
from .auth import allow
from .common import iso, known

SEQ_MAX = 2**53   # journal sequence numbers are far below; the stores keep 64-bit integers


def explain_event(b: dict) -> dict | None:
    """What a refusal or an operation that did not succeed means, and what to do."""
    if b.get("k") == contract.K_REFUSED:
        return refusals.explain(b.get("why"), None, b.get("op"))
    if b.get("k") == contract.K_OP and b.get("state") in ("failed", "timed_out", "rejected"):
        return refusals.explain(b.get("reason") or b.get("state"), b, b.get("op"))
    return None


def router(bridge: Bridge) -> APIRouter:
    store = bridge.store
    router = APIRouter(tags=["events"])

    @router.get("/api/kiosks/{kiosk_id}/events", summary="The kiosk's events (custody records), paged",
                dependencies=[allow("read")])
    def events(kiosk_id: str, after: int = Query(0, ge=0, le=SEQ_MAX, description="seq to start after (ascending order)"),
               before: Optional[int] = Query(None, ge=1, le=SEQ_MAX, description="newest first, below this seq"),
               limit: int = Query(100, ge=1, le=1000), kind: Optional[str] = Query(None, max_length=32),
               journal: Optional[str] = Query(None, max_length=64, pattern=r"^[0-9a-f]*$",
                                              description="a journal id (the kiosk's current journal if not given; "
                                                          "an empty value for records from before journal ids)")):
        k = known(bridge, kiosk_id)
        j = k.get("journal") or "" if journal is None else journal
        if before is not None:
            evs = store.events(kiosk_id, before, limit, kind, newest_first=True, journal=j)
            nxt = {"before": evs[-1]["seq"]} if len(evs) == limit else None
        else:
            evs = store.events(kiosk_id, after, limit, kind, journal=j)
            nxt = {"after": evs[-1]["seq"]} if len(evs) == limit else None
        for e in evs:
            e["t_iso"], e["stored_iso"] = iso(e["t"]), iso(e["stored"])
            e["explanation"] = explain_event(e["body"])
        return {"kiosk": kiosk_id, "journal": j, "events": evs, "next": nxt,
                "journals": store.journals(kiosk_id)}

    return router
