"""Commands: a pickup, a restock, a service session and the service
operations, each signed and sent to the kiosk (202 with its command id);
a command's progress and its cancellation."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal, Optional, Union

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from ...protocol import TEXT_PATTERN
from ..people import Actor
from ..service import Bridge
from .auth import OP_PERMISSION, PERMISSIONS, allow, visible
from .common import ACCEPTED, ID, Accepted, BinNumber, command_view, known


class Pickup(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_id: Annotated[str, Field(strict=True)] = ID
    bin: BinNumber


class ServiceSession(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    session: Optional[str] = Field(default=None, min_length=1, max_length=64, pattern=TEXT_PATTERN)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class NoArgs(_Strict):
    pass


class JogArgs(_Strict):
    bins: int = Field(ge=-10000, le=10000, description="bins to turn, negative = backwards")


class UnlockArgs(_Strict):
    door: Literal["pickup", "service"]


class VerifyArgs(_Strict):
    bin: BinNumber
    present: bool = Field(description="what the technician found in the bin")


class PlainCmd(_Strict):
    op: Literal["home", "selftest", "service_end"]
    args: NoArgs = Field(default_factory=NoArgs)


class JogCmd(_Strict):
    op: Literal["jog"]
    args: JogArgs


class UnlockCmd(_Strict):
    op: Literal["unlock"]
    args: UnlockArgs


class VerifyCmd(_Strict):
    op: Literal["verify_bin"]
    args: VerifyArgs


# One schema per operation, told apart by "op": the OpenAPI document says
# exactly which arguments each takes.
Command = Annotated[Union[PlainCmd, JogCmd, UnlockCmd, VerifyCmd],
                    Field(discriminator="op")]


class Explanation(BaseModel):
    code: str
    what: str
    next: str


class CommandState(BaseModel):
    command_id: str
    kiosk: str
    op: str
    args: dict[str, Any]
    state: Literal["queued", "in_progress", "succeeded", "failed", "timed_out", "rejected", "cancelled"]
    reason: Optional[str] = None
    info: dict[str, Any] = {}
    actor: Optional[str] = Field(None, description="the user who asked for it (the kiosk journals it as `by`)")
    note: Optional[str] = Field(None, description="why they asked (an excursion's clearing reason)")
    created: float
    updated: float
    exp: int
    created_iso: Optional[str] = None
    updated_iso: Optional[str] = None
    exp_iso: Optional[str] = None
    history: list[dict[str, Any]]
    explanation: Optional[Explanation] = Field(None, description="for a command that ended without succeeding: "
                                                                 "what happened and what to do next, with the code")


def router(bridge: Bridge) -> APIRouter:
    store = bridge.store
    router = APIRouter(tags=["commands"])

    @router.post("/api/kiosks/{kiosk_id}/pickups", status_code=202, response_model=Accepted, responses=ACCEPTED,
                 summary="Release an order from a bin to the patient")
    def pickup(kiosk_id: str, body: Pickup, actor: Actor = allow("pickup")):
        known(bridge, kiosk_id)
        bridge.orders.check_hand_over(body.order_id, kiosk_id, body.bin)
        return {"command_id": bridge.send(kiosk_id, "pickup", {"order": body.order_id, "bin": body.bin},
                                          actor=actor.name)["command_id"]}

    @router.post("/api/kiosks/{kiosk_id}/service", status_code=202, response_model=Accepted, responses=ACCEPTED,
                 summary="Start an authorised service session (restock, jog, unlock)")
    def service_start(kiosk_id: str, body: ServiceSession, actor: Actor = allow("service")):
        known(bridge, kiosk_id)
        session = body.session or f"svc-{int(time.time())}"
        return {"command_id": bridge.send(kiosk_id, "service_start", {"session": session},
                                          actor=actor.name)["command_id"]}

    @router.delete("/api/kiosks/{kiosk_id}/service", status_code=202, response_model=Accepted, responses=ACCEPTED,
                   summary="End the service session")
    def service_end(kiosk_id: str, actor: Actor = allow("service")):
        known(bridge, kiosk_id)
        return {"command_id": bridge.send(kiosk_id, "service_end", {}, actor=actor.name)["command_id"]}

    @router.post("/api/kiosks/{kiosk_id}/commands", status_code=202, response_model=Accepted, responses=ACCEPTED,
                 summary="A service operation: home, jog, selftest, unlock, verify_bin")
    def command(kiosk_id: str, body: Command, actor: Actor = allow("service")):
        known(bridge, kiosk_id)
        return {"command_id": bridge.send(kiosk_id, body.op, body.args.model_dump(), actor=actor.name)["command_id"]}

    def find(request: Request, actor: Actor, command_id: str) -> dict[str, Any]:
        """The command, if it exists and its kiosk is in the actor's sites."""
        c = store.command(command_id)
        if c is None:
            raise HTTPException(404, f"unknown command {command_id!r}")
        visible(request, actor, c["kiosk"])
        return c

    @router.get("/api/commands/{command_id}", response_model=CommandState, operation_id="get_command",
                summary="A command, who asked for it and how far it got")
    def get_command(request: Request, command_id: str, actor: Actor = allow("read")):
        return command_view(find(request, actor, command_id))

    @router.post("/api/commands/{command_id}/cancel", status_code=202, response_model=Accepted, responses=ACCEPTED,
                 operation_id="cancel_command",
                 summary="Ask the kiosk to cancel a queued or running command (whoever may issue that command)")
    def cancel(request: Request, command_id: str, actor: Actor = allow("cancel")):
        c = find(request, actor, command_id)
        need = PERMISSIONS[OP_PERMISSION.get(c["op"], "manage")]
        if actor.role not in need:
            raise HTTPException(403, f"{actor.name} ({actor.role}) may not cancel a {c['op']}: it needs "
                                     f"{' or '.join(need)}")
        if c["state"] not in ("queued", "in_progress"):
            raise HTTPException(409, f"command {command_id} already ended: {c['state']}")
        return {"command_id": bridge.send(c["kiosk"], "cancel", {"target": command_id},
                                          actor=actor.name)["command_id"]}

    return router
