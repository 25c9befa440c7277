"""The fleet: every kiosk and its state, and one kiosk in detail."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from .. import health
from ..people import Actor
from ..service import Bridge
from .auth import allow, may_see
from .common import command_view, known, summary


def router(bridge: Bridge) -> APIRouter:
    store = bridge.store
    router = APIRouter(tags=["fleet"])

    @router.get("/api/kiosks", summary="Every kiosk and its state, the most urgent first (severity alarm, offline, "
                                       "attention, ok; then by id); a site-scoped user: its sites' kiosks")
    def kiosks(request: Request, actor: Actor = allow("read")) -> list[dict[str, Any]]:
        seen = {k["id"]: k for k in store.kiosks()}
        for kid in bridge.keys.ids():
            if kid not in seen:
                seen[kid] = known(bridge, kid)
        ids = set(may_see(request, actor, list(seen)))
        active = store.active_commands()
        out = [summary(k, active.get(k["id"])) for k in seen.values() if k["id"] in ids and bridge.keys.get(k["id"])]
        return sorted(out, key=lambda s: (-health.rank(s["severity"]), s["id"]))

    @router.get("/api/kiosks/{kiosk_id}", summary="One kiosk in detail", dependencies=[allow("read")])
    def kiosk(kiosk_id: str) -> dict[str, Any]:
        k = known(bridge, kiosk_id)
        out = summary(k, store.active_commands().get(kiosk_id))
        out["status"] = k["status"]
        out["snapshot"] = (k.get("birth") or {}).get("snap")
        out["telemetry"] = k.get("tele")
        out["commands"] = [command_view(c) for c in store.commands(kiosk_id, 20)]
        return out

    return router
