"""For operations: Prometheus metrics and the liveness check."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from ..service import Bridge
from .auth import allow, public


def router(bridge: Bridge) -> APIRouter:
    store = bridge.store
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

    return router
