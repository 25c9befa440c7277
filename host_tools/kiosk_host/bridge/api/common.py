"""What the API's routers share: the error answers every route documents,
the 202 that every command route answers, the id and bin number types, and
the kiosk lookups (`known`, `summary`)."""

from __future__ import annotations

from typing import Annotated, Any, Optional

from fastapi import HTTPException
from pydantic import BaseModel, BeforeValidator, Field

from ...protocol import TEXT_PATTERN
from .. import status as kstatus
from ..service import Bridge

ID = Field(min_length=1, max_length=64, pattern=TEXT_PATTERN)


def _number(v: Any) -> Any:
    """A JSON number (3, or 3.0 as JSON Schema allows), never a string or a boolean."""
    if isinstance(v, (str, bool)):
        raise ValueError("must be a JSON integer")
    return v


BinNumber = Annotated[int, Field(ge=1, le=10000), BeforeValidator(_number)]


class Error(BaseModel):
    detail: str
    errors: Optional[list[dict[str, Any]]] = None


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Error, "description": "the body could not be read (not UTF-8 or not JSON)"},
    404: {"model": Error, "description": "unknown kiosk or command"},
    409: {"model": Error, "description": "the kiosk cannot take it now (offline), or the command already ended"},
    422: {"model": Error, "description": "malformed request: it never reaches a kiosk"},
    503: {"model": Error, "description": "the bridge has no broker session"},
}


# Every route that sends a command answers 202 with its id; these links
# tell clients (and schemathesis) where to follow or cancel it.
ACCEPTED: dict[int | str, dict[str, Any]] = {202: {
    "description": "sent to the kiosk; follow it at /api/commands/{command_id}",
    "links": {
        "GetCommand": {"operationId": "get_command", "parameters": {"command_id": "$response.body#/command_id"}},
        "CancelCommand": {"operationId": "cancel_command",
                          "parameters": {"command_id": "$response.body#/command_id"}},
    }}}


class Accepted(BaseModel):
    command_id: str
    state: str = "queued"


def celsius(v: Any) -> float | None:
    return round(v / 100.0, 2) if isinstance(v, int) and not isinstance(v, bool) else None


def known(bridge: Bridge, kiosk_id: str) -> dict[str, Any]:
    """The kiosk as stored; one with a key that never reported is offline,
    "never seen"; any other id is a 404."""
    k = bridge.store.kiosk(kiosk_id)
    if k is None:
        if bridge.keys.get(kiosk_id) is not None:
            return {"id": kiosk_id, "online": False, "boot": None, "fw": None, "board": None, "birth": None,
                    "tele": None, "why": "never seen", "seen": None, "acked": 0, "journal_last": 0,
                    "status": kstatus.empty()}
        raise HTTPException(404, f"unknown kiosk {kiosk_id!r}")
    return k


def summary(k: dict[str, Any]) -> dict[str, Any]:
    """What the fleet view shows of one kiosk."""
    st = k["status"]
    tele = k.get("tele") or {}
    temps = {n: celsius(v) for n, v in (tele.get("temp_centi") or {}).items()} if isinstance(tele.get("temp_centi"), dict) else {}
    rh = {n: celsius(v) for n, v in (tele.get("rh_centi") or {}).items()} if isinstance(tele.get("rh_centi"), dict) else {}
    if not temps:
        sensors = ((k.get("birth") or {}).get("snap") or {}).get("climate", {}).get("sensors", {})
        temps = {n: celsius(s.get("last_centi")) for n, s in sensors.items() if isinstance(s, dict)}
    return {
        "id": k["id"], "online": k["online"], "why_offline": None if k["online"] else k.get("why"),
        "boot": k["boot"], "fw": k["fw"], "board": k["board"], "seen": k["seen"],
        "doors": {n: {"door": d.get("door"), "bolt": d.get("bolt"), "alarms": d.get("alarms", [])}
                  for n, d in st.get("doors", {}).items()},
        "alarms": kstatus.alarms(st),
        "excursions_open": len(st.get("excursions", {})),
        "last_pickup": st.get("last_pickup"),
        "service": st.get("service", False),
        "temperature_c": temps, "humidity_pct": rh,
        "events_stored_upto": k["acked"], "journal_last": max(k["journal_last"] or 0, k["acked"] or 0),
    }
