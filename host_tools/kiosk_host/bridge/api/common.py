"""What the API's routers share: the error answers every route documents,
the 202 that every command route answers, the id and bin number types, and
the kiosk lookups (`known`, `summary`), times as ISO 8601 (`iso`)."""

from __future__ import annotations

import time
from typing import Annotated, Any, Optional

from fastapi import HTTPException
from pydantic import BaseModel, BeforeValidator, Field

from ...protocol import TEXT_PATTERN
from .. import health, refusals
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
                    "status": kstatus.empty(), "unknown_commands": [], "gaps": [], "journal": None}
        raise HTTPException(404, f"unknown kiosk {kiosk_id!r}")
    return k


def iso(t: Any) -> str | None:
    """A Unix time as ISO 8601 in UTC (2026-12-05T14:03:07Z); None stays None."""
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 <= t < 253402300800:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def readings(st: dict[str, Any], now: float) -> dict[str, dict[str, Any]]:
    """Each sensor's latest reading with its time and age: the one truth the
    fleet, the kiosk page and the chart all show (status.py keeps the
    newest of telemetry, births and climate events)."""
    out = {}
    for name, r in sorted((st.get("readings") or {}).items()):
        c = celsius(r.get("temp_centi"))
        out[name] = {"c": c, "rh": celsius(r.get("rh_centi")), "t": r.get("t"), "t_iso": iso(r.get("t")),
                     "age_s": max(0, int(now - r["t"])) if isinstance(r.get("t"), int) else None,
                     "range": health.temp_range(c)}
    return out


def summary(k: dict[str, Any], active: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What the fleet view shows of one kiosk; `active` are its commands
    still queued or running (what an open door may be open for). Times are
    Unix seconds, each also as ISO 8601 under the same name + `_iso`."""
    now = time.time()
    st = k["status"]
    latest = readings(st, now)
    probs = health.problems(k, active, now)
    last_pickup = st.get("last_pickup")
    if last_pickup:
        last_pickup = dict(last_pickup, t_iso=iso(last_pickup.get("t")))
    custody = kstatus.custody(k)
    return {
        "id": k["id"], "online": k["online"], "why_offline": None if k["online"] else k.get("why"),
        "boot": k["boot"], "fw": k["fw"], "board": k["board"],
        "seen": k["seen"], "seen_iso": iso(k["seen"]),
        "seen_age_s": None if k["seen"] is None else max(0, int(now - k["seen"])),
        "severity": health.severity(probs), "problems": probs,
        "doors": {n: {"door": d.get("door"), "bolt": d.get("bolt"), "alarms": d.get("alarms", []),
                      "secure": d.get("door") == "closed" and d.get("bolt") == "engaged" and not d.get("alarms")}
                  for n, d in st.get("doors", {}).items()},
        # The kiosk's own alarms, its custody alarms, and a door not secure
        # that raised none (yet).
        "alarms": (kstatus.alarms(st) + kstatus.custody_alarms(custody)
                   + [p["text"] for p in probs if p["code"] in health.UNRAISED]),
        "custody": custody,
        "excursions_open": len(st.get("excursions", {})),
        "last_pickup": last_pickup,
        "service": st.get("service", False),
        "readings": latest,
        "temperature_c": {n: r["c"] for n, r in latest.items()},
        "humidity_pct": {n: r["rh"] for n, r in latest.items() if r["rh"] is not None},
        "events_stored_upto": k["acked"], "journal_last": max(k["journal_last"] or 0, k["acked"] or 0),
        "journal": k.get("journal"),
    }


def command_view(c: dict[str, Any]) -> dict[str, Any]:
    """A command as the API shows it: its times also as ISO 8601, and for one
    that ended without succeeding, what happened and what to do next."""
    out = dict(c, created_iso=iso(c["created"]), updated_iso=iso(c["updated"]), exp_iso=iso(c["exp"]))
    out["explanation"] = (refusals.explain(c.get("reason") or c["state"], c.get("args"), c.get("op"))
                          if c["state"] in ("rejected", "failed", "timed_out") else None)
    return out
