"""The kiosk's screen: its page (/screen/{kiosk}), pairing a tablet to a
kiosk, and the screen's own API: what to tell the patient now (a long
poll, so the page is live without polling hard) and the on-screen "call a
pharmacist" button. See bridge/screens.py for how a screen authenticates.

The screen's answers carry a state name and times, never an order, a
name, a medicine or a bin: what a passer-by may read off a kiosk.

Who may: a technician pairs and unpairs screens (`service`, site-scoped);
the screen's own routes are public() to staff credentials and answer only
the paired screen's credential (401 otherwise): a screen is not a person."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any, Optional

from fastapi import APIRouter, Cookie, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ..people import Actor
from ..screens import COOKIE, COOKIE_MAX_AGE_S, Screens
from ..service import Bridge
from .auth import allow, public
from .common import known
from .dashboard import DASHBOARD

LONG_POLL_S = 20.0
RECHECK_S = 1.0     # a change made by another bridge process, or one that comes with time


class PairIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    pairing: str = Field(min_length=16, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")


class ScreenState(BaseModel):
    kiosk: str
    state: str
    since: Optional[float] = None
    until: Optional[float] = None
    now: float
    version: str


class Error(BaseModel):
    detail: str


UNPAIRED = {401: {"model": Error, "description": "the screen is not paired with this kiosk (no or a revoked "
                                                 "screen credential)"}}
BAD_LINK = {403: {"model": Error, "description": "the pairing link is unknown, used or expired"}}


class Pairing(BaseModel):
    pair_url: str
    expires: float


def _versioned(kiosk: str, view: dict[str, Any]) -> dict[str, Any]:
    out = {"kiosk": kiosk, **view}
    out["version"] = hashlib.sha256(json.dumps(out, sort_keys=True).encode()).hexdigest()[:16]
    out["now"] = time.time()
    return out


def router(bridge: Bridge) -> APIRouter:
    screens = Screens(bridge.store)
    router = APIRouter(tags=["screen"])
    changed: dict[str, asyncio.Event] = {}
    loop: list[asyncio.AbstractEventLoop] = []

    def on_change(kind: str, kiosk: str) -> None:
        """From the bridge's threads: wake the screens waiting on this kiosk."""
        if not loop:
            return
        for k, ev in list(changed.items()):
            if not kiosk or k == kiosk:
                loop[0].call_soon_threadsafe(ev.set)

    bridge.listeners.append(on_change)

    def view(kiosk_id: str) -> dict[str, Any]:
        return _versioned(kiosk_id, bridge.orders.screen(kiosk_id, bridge.store.kiosk(kiosk_id)))

    def need_screen(kiosk_id: str, credential: Optional[str]) -> None:
        if not screens.valid(kiosk_id, credential):
            raise HTTPException(401, "this screen is not paired with the kiosk: a technician pairs it from the "
                                     "dashboard")

    @router.get("/screen/{kiosk_id}", include_in_schema=False, dependencies=[public()])
    def page(kiosk_id: str):
        return FileResponse(DASHBOARD / "screen.html")

    @router.post("/api/kiosks/{kiosk_id}/screen-pairing", status_code=201, response_model=Pairing,
                 summary="A one-time link that pairs a tablet as this kiosk's screen")
    def pairing(kiosk_id: str, actor: Actor = allow("service")) -> dict[str, Any]:
        known(bridge, kiosk_id)
        secret, expires = screens.pairing(kiosk_id, actor.name)
        return {"pair_url": f"/screen/{kiosk_id}#pair={secret}", "expires": expires}

    @router.delete("/api/kiosks/{kiosk_id}/screens", summary="Unpair every screen of this kiosk")
    def revoke(kiosk_id: str, actor: Actor = allow("service")) -> dict[str, int]:
        known(bridge, kiosk_id)
        return {"revoked": screens.revoke(kiosk_id)}

    @router.post("/api/screen/{kiosk_id}/pair", status_code=204, responses=BAD_LINK, dependencies=[public()],
                 summary="A tablet trades its pairing link for its screen credential (an HttpOnly cookie)")
    def pair(kiosk_id: str, body: PairIn, response: Response, request: Request) -> Response:
        cred = screens.pair(kiosk_id, body.pairing)
        if cred is None:
            raise HTTPException(403, "this pairing link is unknown, used or expired: ask for a new one")
        response.status_code = 204
        response.set_cookie(COOKIE, cred, max_age=COOKIE_MAX_AGE_S, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/")
        return response

    @router.get("/api/screen/{kiosk_id}", response_model=ScreenState, responses=UNPAIRED, dependencies=[public()],
                summary="What the kiosk's screen shows now")
    async def state(kiosk_id: str, after: Optional[str] = Query(None, max_length=32,
                                                               description="the version the screen shows: wait "
                                                                           "(up to 20 s) until there is another"),
                    kiosk_screen: Optional[str] = Cookie(None)) -> dict[str, Any]:
        await run_in_threadpool(need_screen, kiosk_id, kiosk_screen)
        if not loop:
            loop.append(asyncio.get_running_loop())
        end = time.monotonic() + (LONG_POLL_S if after else 0)
        ev = changed.setdefault(kiosk_id, asyncio.Event())
        while True:
            ev.clear()
            out = await run_in_threadpool(view, kiosk_id)
            left = end - time.monotonic()
            if out["version"] != after or left <= 0:
                return out
            try:
                await asyncio.wait_for(ev.wait(), min(left, RECHECK_S))
            except asyncio.TimeoutError:
                pass

    @router.post("/api/screen/{kiosk_id}/call", status_code=202, response_model=ScreenState, responses=UNPAIRED,
                 dependencies=[public()], summary="The patient asks for a pharmacist "
                 "from the screen")
    def call(kiosk_id: str, kiosk_screen: Optional[str] = Cookie(None)) -> dict[str, Any]:
        need_screen(kiosk_id, kiosk_screen)
        bridge.orders.request_call(kiosk_id)
        bridge._tell("order", kiosk_id)
        return view(kiosk_id)

    return router
