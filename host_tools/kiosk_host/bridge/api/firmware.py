"""Firmware over the air: releases (build trees uploaded as .tar.gz) and
rollouts of a release to kiosks, canaries first (docs/ota.md). Changing
either is for admins; anyone may read them (the dashboard shows running
rollouts), a site-scoped user sees only its sites' kiosks in them."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ..people import Actor
from ..releases import MAX_UPLOAD, ReleaseError
from ..rollouts import KIOSK_STATES, TRIAL_S, RolloutError
from ..service import Bridge
from .auth import allow, may_see

KioskId = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")


class Release(BaseModel):
    release_id: str
    version: str
    created: float
    created_by: Optional[str]
    manifest_sha256: str = Field(description="sha256 of the slot manifest kiosks are sent first")
    size: int = Field(description="bytes a kiosk receives: the slot manifest and the firmware files")
    files: int


class NewRollout(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    release_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    kiosks: Union[Literal["all"], Annotated[list[Annotated[str, KioskId]], Field(min_length=1, max_length=10000)]] = \
        Field(description='the kiosks to update, in order, or "all" (every kiosk with a key, by id)',
              json_schema_extra={"uniqueItems": True})
    canary: int = Field(0, ge=0, le=10000, description="the first N go first, the rest only once those are "
                                                        "confirmed; 0 (or all of them): every kiosk at once")
    trial_s: int = Field(TRIAL_S, ge=30, le=3600, description="how long the new firmware has to prove itself")


class RolloutAccepted(BaseModel):
    rollout_id: str
    state: str
    kiosks: dict[str, str]


class Rollout(BaseModel):
    rollout_id: str
    release_id: str
    version: str
    state: Literal["running", "completed", "halted"]
    reason: Optional[str] = Field(description="why it halted")
    canary: int
    trial_s: int
    created: float
    updated: float
    created_by: Optional[str]
    halted_by: Optional[str]
    kiosks: dict[str, Literal[KIOSK_STATES]] = Field(description="each kiosk's state")  # type: ignore[valid-type]
    detail: dict[str, dict[str, Any]] = Field(description="each kiosk's state, why, bytes received, when")


def _scoped(request: Request, actor: Actor, ro: dict[str, Any]) -> dict[str, Any]:
    """The rollout with only the kiosks the actor may see."""
    if actor.fleet_wide:
        return ro
    mine = set(may_see(request, actor, list(ro["kiosks"])))
    ro["kiosks"] = {k: v for k, v in ro["kiosks"].items() if k in mine}
    ro["detail"] = {k: v for k, v in ro["detail"].items() if k in mine}
    return ro


def router(bridge: Bridge) -> APIRouter:
    rollouts = bridge.rollouts
    router = APIRouter(tags=["firmware"])

    @router.post("/api/releases", status_code=201, response_model=Release,
                 summary="Upload a firmware release: the build tree as a .tar.gz",
                 openapi_extra={"requestBody": {"required": True, "content": {
                     "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
                 responses={413: {"description": f"more than {MAX_UPLOAD} bytes"}})
    async def upload(request: Request, actor: Actor = allow("firmware")) -> dict[str, Any]:
        """`python -m kiosk_host.build --out DIR [--version V]`, then
        `tar czf release.tar.gz -C DIR .`: every file is checked against the
        manifest before the release is kept (422 says what is wrong). The
        same build uploaded again is the same release."""
        data = bytearray()
        async for part in request.stream():
            data += part
            if len(data) > MAX_UPLOAD:
                raise HTTPException(413, f"a release upload is at most {MAX_UPLOAD} bytes")
        try:
            rel, _ = rollouts.releases.add(bytes(data), actor.name)
        except ReleaseError as e:
            raise HTTPException(422, f"release refused: {e}") from None
        return rel

    @router.get("/api/releases", summary="Every release, newest first", dependencies=[allow("read")])
    def releases() -> list[Release]:
        return rollouts.releases.list()

    @router.post("/api/rollouts", status_code=202, response_model=RolloutAccepted,
                 summary="Roll a release out to kiosks, canaries first",
                 responses={409: {"description": "a kiosk is in a running rollout already"}})
    def create(body: NewRollout, actor: Actor = allow("firmware")) -> dict[str, Any]:
        """Each kiosk stages the release, switches to it when idle (never
        during an operation) and confirms the new firmware or rolls back
        by itself; a rollback or failure halts the rollout."""
        try:
            ro = rollouts.create(body.release_id, body.kiosks, body.canary, actor.name, body.trial_s)
        except RolloutError as e:
            raise HTTPException(e.status, str(e)) from None
        return {"rollout_id": ro["rollout_id"], "state": ro["state"], "kiosks": ro["kiosks"]}

    @router.get("/api/rollouts", summary="Rollouts, newest first (state=running: the running ones)")
    def every(request: Request, state: Optional[Literal["running", "completed", "halted"]] = Query(None),
              limit: int = Query(50, ge=1, le=500), actor: Actor = allow("read")) -> list[Rollout]:
        out = [ro for ro in rollouts.list(limit) if state is None or ro["state"] == state]
        return [_scoped(request, actor, ro) for ro in out]

    @router.get("/api/rollouts/{rollout_id}", response_model=Rollout, summary="A rollout and each kiosk's state")
    def get(request: Request, rollout_id: str, actor: Actor = allow("read")) -> dict[str, Any]:
        ro = rollouts.get(rollout_id)
        if ro is None:
            raise HTTPException(404, f"no rollout {rollout_id!r}")
        return _scoped(request, actor, ro)

    @router.post("/api/rollouts/{rollout_id}/halt", response_model=Rollout, summary="Halt a rollout",
                 responses={409: {"description": "the rollout has ended already"}})
    def halt(rollout_id: str, actor: Actor = allow("firmware")) -> dict[str, Any]:
        """No other kiosk is offered the release; kiosks still receiving or
        staged drop it. A kiosk already restarting into it finishes its
        trial (and confirms or rolls back by itself)."""
        try:
            return rollouts.halt(rollout_id, actor.name)
        except RolloutError as e:
            raise HTTPException(e.status, str(e)) from None

    return router
