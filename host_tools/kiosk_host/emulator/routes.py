"""The emulator's HTTP control routes, /api/sim: on their own port
(`kiosk-bridge emulate --control`) or beside the bridge's API in
`kiosk-bridge demo`."""


from typing import Any, Literal, Optional

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from ..protocol import TEXT_PATTERN
from . import EmulatorError, PoweredOff, UnknownKiosk
from .fleet import Fleet


def sim_router(fleet: Fleet):
    """The /api/sim control routes, for `--control` and for the bridge's demo.
    Errors come back as JSON {"detail": ...}: 404 unknown kiosk, 409 powered
    off or not up, 422 a malformed body or one the world refuses (no such
    sensor or door on this board, a fault its parts cannot take)."""
    name = Field(min_length=1, max_length=64, pattern=TEXT_PATTERN)

    class Body(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)

    class Door(Body):
        door: Literal["pickup", "service"]
        action: Literal["open", "close", "force"]

    class Sensor(Body):
        sensor: str = name
        celsius: Optional[float] = Field(None, ge=-60, le=150, allow_inf_nan=False)
        humidity: Optional[float] = Field(None, ge=0, le=100, allow_inf_nan=False)

    class Fault(Body):
        kind: str = name
        on: bool = True
        target: Optional[str] = Field(None, min_length=1, max_length=64, pattern=TEXT_PATTERN)

    class Power(Body):
        on: bool

    class Scan(Body):
        text: str = Field(min_length=1, max_length=256)

    class Button(Body):
        name: Literal["call_pharmacist"]

    class Network(Body):
        up: Optional[bool] = None
        route: Optional[Literal["ok", "refused", "blackhole"]] = None
        rtt_ms: Optional[int] = Field(None, ge=0, le=10000)

    class Error(BaseModel):
        detail: str

    errors = {404: {"model": Error, "description": "unknown kiosk"},
              409: {"model": Error, "description": "the kiosk is powered off, not up yet, or resetting"},
              422: {"model": Error, "description": "malformed, or refused by the simulated world"}}

    router = APIRouter(prefix="/api/sim", tags=["emulator"], responses=errors)

    def call(fn, *args):
        try:
            return fn(*args)
        except UnknownKiosk as e:
            raise HTTPException(404, str(e)) from None
        except PoweredOff as e:
            raise HTTPException(409, str(e)) from None
        except EmulatorError as e:
            msg = str(e)
            raise HTTPException(409 if "not up" in msg or "reset" in msg else 422, msg) from None

    @router.get("")
    def kiosks() -> list[dict[str, Any]]:
        return fleet.kiosks

    @router.get("/{kiosk_id}")
    def world(kiosk_id: str) -> dict[str, Any]:
        return call(fleet.world, kiosk_id)

    @router.post("/{kiosk_id}/door")
    def door(kiosk_id: str, body: Door):
        return call(fleet.door, kiosk_id, body.door, body.action)

    @router.post("/{kiosk_id}/sensor")
    def sensor(kiosk_id: str, body: Sensor):
        return call(fleet.sensor, kiosk_id, body.sensor, body.celsius, body.humidity)

    @router.post("/{kiosk_id}/fault")
    def fault(kiosk_id: str, body: Fault):
        return call(fleet.fault, kiosk_id, body.kind, body.on, body.target)

    @router.post("/{kiosk_id}/scan", summary="Type a code into the kiosk's scanner (a patient's code, a package label)")
    def scan(kiosk_id: str, body: Scan):
        return call(fleet.scan, kiosk_id, body.text)

    @router.post("/{kiosk_id}/button", summary="Press a button at the kiosk")
    def button(kiosk_id: str, body: Button):
        return call(fleet.button, kiosk_id, body.name)

    @router.post("/{kiosk_id}/power")
    def power(kiosk_id: str, body: Power):
        return call(fleet.power, kiosk_id, body.on)

    @router.post("/{kiosk_id}/network")
    def network(kiosk_id: str, body: Network):
        return call(fleet.network, kiosk_id, body.up, body.route, body.rtt_ms)

    return router
