"""For operations: Prometheus metrics, the liveness check and the bridge's
own state (its broker session), which the dashboard's header shows."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from ... import __version__
from ..alerts import BRIDGE, AlertStore
from ..people import Actor
from ..service import Bridge
from .auth import allow, may_see, public
from .common import iso


def router(bridge: Bridge) -> APIRouter:
    store = bridge.store
    alerts = AlertStore(store)
    router = APIRouter(tags=["operations"])

    # Prometheus sends a viewer's token: authorization: {credentials_file: ...}
    @router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics",
                dependencies=[allow("read")])
    def metrics():
        return PlainTextResponse(bridge.registry.render(), media_type="text/plain; version=0.0.4")

    @router.get("/healthz", summary="Liveness: the store answers and the broker session is up",
                dependencies=[public()])
    def healthz():
        ok = bridge.connected.is_set()
        store.acked("-")
        return JSONResponse({"broker": ok, "store": store.kind}, status_code=200 if ok else 503)

    @router.get("/api/bridge", summary="The bridge itself: its broker session (up or down, since when, the last "
                                       "error), its store and version, how many alerts are open")
    def bridge_state(request: Request, actor: Actor = allow("read")):
        link = bridge.link.state()
        link["since_iso"] = iso(link["since"])
        link["host"], link["port"] = bridge.broker["host"], bridge.broker["port"]
        return {"broker": link, "store": store.kind, "version": __version__, "now": iso(time.time()),
                "alerts": alerts.count_open(None if actor.fleet_wide else
                                            may_see(request, actor, bridge.keys.ids()) + [BRIDGE])}

    return router
