"""The patient's pickup: orders from the pharmacy system and their pickup
codes, the pharmacist's release and the consult queue, and the
technician's restocks and retrievals of orders (docs/pickup.md).

Who may: the pharmacy system sends orders, asks for codes and changes
deadlines (`order`); the pharmacist releases, counsels and works the
consult queue (`pickup`); the technician stocks and retrieves (`service`);
either the pharmacy system or the pharmacist cancels (`order_cancel`); the
people at kiosks and the pharmacy system read orders (`order_read`). A
user limited to sites reaches only the orders of their kiosks."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, Optional

from fastapi import APIRouter, Query, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ..orders import OrderError
from ..people import Actor
from ..service import Bridge, bin_count
from .auth import allow, may_see, visible
from .common import ACCEPTED, ID, BinNumber, known

# Order ids travel on the package label (a barcode) and to the kiosk:
# printable text, no leading or trailing space.
ORDER_ID = Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x20\x7f](?:[^\x00-\x1f\x7f]*[^\x00-\x20\x7f])?$")
TEXT = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")


def _day(v: str) -> str:
    try:
        dt.date.fromisoformat(v)
    except ValueError:
        raise ValueError("must be a date, YYYY-MM-DD") from None
    if len(v) != 10:
        raise ValueError("must be a date, YYYY-MM-DD")
    return v


Day = Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$", examples=["2026-01-14"]), AfterValidator(_day)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Item(_Strict):
    ndc: str = Field(pattern=r"^\d{4,5}-\d{3,4}-\d{1,2}$|^\d{10,11}$",
                     description="National Drug Code, with or without its dashes", examples=["0093-4155-73"])
    name: str = TEXT
    qty: int = Field(ge=1, le=100000)


class OrderIn(_Strict):
    order_id: str = ORDER_ID
    kiosk: str = ID
    patient_ref: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$",
                             description="the pharmacy system's opaque reference to the patient")
    items: list[Item] = Field(min_length=1, max_length=50)
    counselling_required: bool
    pickup_by: Day


class OrderPatch(_Strict):
    pickup_by: Day


class CodeIn(_Strict):
    expires_in_s: Optional[int] = Field(None, ge=1, le=90 * 86400,
                                        description="sooner than the order's deadline (a code sent by SMS, say)")


class Release(_Strict):
    counselling: Literal["not_required", "accepted", "declined"]
    note: Optional[str] = Field(None, min_length=1, max_length=1000, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]+$")


class Cancel(_Strict):
    reason: Optional[str] = TEXT


class Close(_Strict):
    note: Optional[str] = Field(None, min_length=1, max_length=1000, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]+$")


class RestockIn(_Strict):
    order_id: str = ORDER_ID
    bin: Optional[BinNumber] = Field(None, description="a bin of the technician's choosing; by default the "
                                                       "bridge chooses the first free one (an order the bridge "
                                                       "does not know, a manual restock, needs one)")


class RetrievalIn(_Strict):
    order_id: str = ORDER_ID


class Placed(BaseModel):
    command_id: str
    bin: int
    state: str = "queued"


class Code(BaseModel):
    code: str
    expires: float


def router(bridge: Bridge) -> APIRouter:
    orders = bridge.orders
    router = APIRouter(tags=["orders"])

    def _reachable(kiosk_id: str) -> dict[str, Any]:
        """The kiosk, online, with the broker session up. Its service session
        is the kiosk's to check: a restock or retrieval outside one is
        refused there (no_service_session) and recorded on the order."""
        k = known(bridge, kiosk_id)
        if not bridge.connected.is_set():
            raise OrderError(503, "the bridge is not connected to the broker")
        if not k["online"]:
            raise OrderError(409, f"kiosk {kiosk_id} is offline")
        return k

    def _sent(cid: str) -> None:
        """The command was queued in the store: publish it now."""
        bridge.flush_commands()
        c = bridge.store.command(cid)
        if c and c["state"] == "failed" and c["reason"] == "not_sent":
            raise OrderError(503, "the command could not be published: the bridge lost the broker")

    def _order(request: Request, actor: Actor, order_id: str) -> dict[str, Any]:
        """The order, if the actor's sites hold its kiosk (else 403)."""
        o = orders.get(order_id)
        visible(request, actor, o["kiosk"])
        return o

    @router.post("/api/orders", status_code=201, summary="A new order from the pharmacy system")
    def create(request: Request, body: OrderIn, actor: Actor = allow("order")) -> dict[str, Any]:
        known(bridge, body.kiosk)
        visible(request, actor, body.kiosk)
        return orders.create(body.order_id, body.kiosk, body.patient_ref, [i.model_dump() for i in body.items],
                             body.counselling_required, body.pickup_by, actor.name)

    @router.get("/api/orders", summary="Orders, by kiosk and state")
    def list_orders(request: Request, kiosk: Optional[str] = Query(None, max_length=64),
                    state: Optional[Literal["received", "stocked", "dispensed", "expired", "returned", "cancelled"]]
                    = Query(None), actor: Actor = allow("order_read")) -> list[dict[str, Any]]:
        found = orders.list(kiosk, state)
        mine = set(may_see(request, actor, sorted({o["kiosk"] for o in found})))
        return [o for o in found if o["kiosk"] in mine]

    @router.get("/api/orders/{order_id}", summary="One order with its history")
    def get(request: Request, order_id: str, actor: Actor = allow("order_read")) -> dict[str, Any]:
        return _order(request, actor, order_id)

    @router.patch("/api/orders/{order_id}", summary="A new pickup deadline")
    def patch(request: Request, order_id: str, body: OrderPatch, actor: Actor = allow("order")) -> dict[str, Any]:
        _order(request, actor, order_id)
        return orders.set_pickup_by(order_id, body.pickup_by, actor.name)

    @router.post("/api/orders/{order_id}/cancel", summary="Cancel an order (one in a bin goes back to stock)")
    def cancel(request: Request, order_id: str, body: Cancel, actor: Actor = allow("order_cancel")) -> dict[str, Any]:
        _order(request, actor, order_id)
        return orders.cancel(order_id, actor.name, body.reason)

    @router.post("/api/orders/{order_id}/pickup-code", status_code=201, response_model=Code,
                 summary="A pickup code for the patient (replaces any earlier one)")
    def pickup_code(request: Request, order_id: str, body: Optional[CodeIn] = None,
                    actor: Actor = allow("order")) -> dict[str, Any]:
        _order(request, actor, order_id)
        code = orders.issue_code(order_id, actor.name, body.expires_in_s if body else None)
        return {"code": code, "expires": orders.get(order_id)["codes"][-1]["expires"]}

    @router.post("/api/orders/{order_id}/release", summary="The pharmacist releases the order, with counselling")
    def release(request: Request, order_id: str, body: Release, actor: Actor = allow("pickup")) -> dict[str, Any]:
        _order(request, actor, order_id)
        out = orders.release(order_id, body.counselling, body.note, actor.name)
        bridge._tell("order", out["kiosk"])
        return out

    @router.get("/api/consults", summary="Counselling requests and patients waiting at kiosks")
    def consults(request: Request, closed: bool = Query(False, description="closed ones too"),
                 actor: Actor = allow("pickup")) -> list[dict[str, Any]]:
        found = orders.consults(closed)
        mine = set(may_see(request, actor, sorted({c["kiosk"] for c in found})))
        return [c for c in found if c["kiosk"] in mine]

    @router.post("/api/consults/{consult_id}/close", summary="The pharmacist has dealt with a request")
    def close(request: Request, consult_id: str, body: Close, actor: Actor = allow("pickup")) -> dict[str, Any]:
        c = next((c for c in orders.consults(True) if c["id"] == consult_id), None)
        if c is not None:
            visible(request, actor, c["kiosk"])
        out = orders.close_consult(consult_id, actor.name, body.note)
        bridge._tell("order", out["kiosk"])
        return out

    @router.post("/api/kiosks/{kiosk_id}/restocks", status_code=202, response_model=Placed, responses=ACCEPTED,
                 summary="Stock an order: the bridge picks the bin (needs a service session)")
    def restock(kiosk_id: str, body: RestockIn, actor: Actor = allow("service")) -> dict[str, Any]:
        k = _reachable(kiosk_id)
        if not orders.exists(body.order_id):
            # An order the pharmacy system never sent (a manual restock): the
            # technician names the bin; the kiosk still checks the label.
            if body.bin is None:
                raise OrderError(404, f"unknown order {body.order_id!r}: the pharmacy system sends it first "
                                      "(POST /api/orders), or name the bin for a manual restock")
            c = bridge.send(kiosk_id, "restock", {"order": body.order_id, "bin": body.bin}, actor=actor.name)
            return {"command_id": c["command_id"], "bin": body.bin}
        bins = bin_count(k)
        if not bins:
            raise OrderError(409, f"kiosk {kiosk_id} has not said how many bins it has")
        cid, b = orders.begin_restock(kiosk_id, body.order_id, actor.name, bins, k["status"], body.bin)
        _sent(cid)
        return {"command_id": cid, "bin": b}

    @router.post("/api/kiosks/{kiosk_id}/retrievals", status_code=202, response_model=Placed, responses=ACCEPTED,
                 summary="Take an expired or cancelled order back out of its bin (needs a service session)")
    def retrieve(kiosk_id: str, body: RetrievalIn, actor: Actor = allow("service")) -> dict[str, Any]:
        _reachable(kiosk_id)
        cid, b = orders.begin_retrieve(kiosk_id, body.order_id, actor.name)
        _sent(cid)
        return {"command_id": cid, "bin": b}

    return router
