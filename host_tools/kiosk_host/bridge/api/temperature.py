"""Storage temperature: history, daily statistics, mean kinetic temperature
and excursions; clearing (acknowledging) an excursion."""

from __future__ import annotations

import math
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from ...protocol import TEXT_PATTERN
from ..health import BAND_C, LIMITS_C
from ..people import Actor
from ..service import Bridge, BridgeError
from .auth import allow
from .common import ACCEPTED, Accepted, celsius, iso, known, readings

DH_R = 10000.0              # MKT: activation energy / gas constant, K
K0 = 273.15
DAY_S = 86400


def mkt(temps_c: list[float]) -> float | None:
    """Mean kinetic temperature of equally spaced readings, °C."""
    if not temps_c:
        return None
    s = sum(math.exp(-DH_R / (t + K0)) for t in temps_c) / len(temps_c)
    return round(DH_R / -math.log(s) - K0, 2)


class Clearing(BaseModel):
    """The pharmacist's decision about the stock an excursion touched
    (keep, quarantine, ask the manufacturer) and why: kept with the
    clearing command; the kiosk journals who cleared it."""
    model_config = ConfigDict(extra="forbid", strict=True)
    reason: str = Field(min_length=1, max_length=500, pattern=r"\S",
                        description="what was decided about the stock, and why")


def spans(events: list[dict[str, Any]], status: dict[str, Any], clears: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each excursion once, as the chart shades it and the table lists it:
    start, end (None while it goes on), range, bins, state (ongoing, ended,
    cleared) and, once cleared, who cleared it (as the kiosk journaled it),
    when and why."""
    out: dict[str, dict[str, Any]] = {}
    for e in sorted(events, key=lambda e: e["seq"]):
        x = out.setdefault(str(e["id"]), {"id": str(e["id"]), "sensor": e.get("sensor"), "start": None, "end": None,
                                         "min": None, "max": None, "bins": [], "state": "ongoing"})
        if e["ev"] in ("excursion_start", "excursion_end"):
            for f in ("sensor", "start", "end", "min", "max", "bins"):
                if e.get(f) is not None:
                    x[f] = e[f]
            x["state"] = "ended" if x["end"] else "ongoing"
        elif e["ev"] == "excursion_cleared":
            x.update(state="cleared", cleared_by=e.get("by"))
    for xid, x in (status.get("excursions") or {}).items():   # from the birth, when its events are older
        y = out.setdefault(xid, {"id": xid, "bins": []})
        y.update({"sensor": x.get("sensor"), "start": x.get("start"), "end": x.get("end"),
                  "min": celsius(x.get("min_centi")), "max": celsius(x.get("max_centi")), "bins": x.get("bins") or [],
                  "state": "ended" if x.get("end") else "ongoing"})
    for c in clears:
        x = out.get(str((c.get("args") or {}).get("excursion")))
        if x is not None and c["state"] == "succeeded":
            x.update(cleared_by=x.get("cleared_by") or c.get("actor"), cleared_at=c["updated"],
                     cleared_at_iso=iso(c["updated"]), cleared_reason=c.get("note"), cleared_command=c["command_id"])
    for x in out.values():
        x["start_iso"], x["end_iso"] = iso(x.get("start")), iso(x.get("end"))
    return sorted(out.values(), key=lambda x: (x.get("start") or 0, x["id"]))


def router(bridge: Bridge) -> APIRouter:
    store = bridge.store
    router = APIRouter(tags=["temperature"])

    @router.post("/api/kiosks/{kiosk_id}/excursions/{excursion_id}/clear", status_code=202, response_model=Accepted,
                 responses=ACCEPTED, summary="Clear an ended excursion, with the pharmacist's reason")
    def clear_excursion(kiosk_id: str, excursion_id: Annotated[str, PathParam(min_length=1, max_length=64,
                                                                            pattern=TEXT_PATTERN)],
                        body: Clearing, actor: Actor = allow("clear_excursion")):
        k = known(bridge, kiosk_id)
        x = (k["status"].get("excursions") or {}).get(excursion_id)
        if x is None:
            raise BridgeError(404, f"kiosk {kiosk_id} has no excursion {excursion_id} to clear (cleared already?)")
        if not x.get("end"):
            raise BridgeError(409, f"excursion {excursion_id} is still going on: it can be cleared once the "
                                   "temperature is back in range and the kiosk has ended it")
        return {"command_id": bridge.send(kiosk_id, "clear_excursion", {"excursion": excursion_id},
                                          actor=actor.name, note=body.reason.strip())["command_id"]}

    @router.get("/api/kiosks/{kiosk_id}/temperature", dependencies=[allow("read")],
                summary="Temperature history, daily statistics, MKT and excursions")
    def temperature(kiosk_id: str, hours: float = Query(24, gt=0, le=24 * 90)):
        k = known(bridge, kiosk_id)
        now = time.time()
        since = int(now - hours * 3600)
        series: dict[str, list] = {}
        rh: dict[str, list] = {}
        per_day: dict[tuple[str, int], list[float]] = {}
        for t, sensor, tc, rc in store.telemetry(kiosk_id, since):
            c = celsius(tc)
            series.setdefault(sensor, []).append([t, c])
            if rc is not None:
                rh.setdefault(sensor, []).append([t, celsius(rc)])
            if c is not None:
                per_day.setdefault((sensor, t // DAY_S), []).append(c)
        days = {}
        for e in store.events(kiosk_id, 0, 1000, "temp", newest_first=True):
            b = e["body"]
            if b.get("ev") == "day" and isinstance(b.get("day"), int):
                days.setdefault((b.get("sensor"), b["day"]), {
                    "sensor": b.get("sensor"), "day": b["day"], "source": "kiosk",
                    "min": celsius(b.get("min_centi")), "max": celsius(b.get("max_centi")),
                    "mean": celsius(b.get("mean_centi")), "mkt": celsius(b.get("mkt_centi")), "samples": b.get("n")})
        for (sensor, day), vals in per_day.items():
            days.setdefault((sensor, day), {
                "sensor": sensor, "day": day, "source": "telemetry", "min": min(vals), "max": max(vals),
                "mean": round(sum(vals) / len(vals), 2), "mkt": mkt(vals), "samples": len(vals)})
        for d in days.values():
            d["date"] = time.strftime("%Y-%m-%d", time.gmtime(d["day"] * DAY_S))
        climate = ((k.get("birth") or {}).get("snap") or {}).get("climate") or {}
        window = {n: celsius(s.get("mkt_window_centi")) for n, s in (climate.get("sensors") or {}).items()
                  if isinstance(s, dict)}
        excursions = []
        # A clearing names the pharmacist (journaled by the kiosk as `by`)
        # and their reason (kept with the command that cleared it).
        clears = store.commands(kiosk_id, 200, op="clear_excursion")
        reasons = {c["args"].get("excursion"): c["note"] for c in reversed(clears) if c["state"] == "succeeded"}
        for e in store.events(kiosk_id, 0, 1000, "temp", newest_first=True):
            b = e["body"]
            if b.get("ev") in ("excursion_start", "excursion_end", "excursion_cleared"):
                x = {"seq": e["seq"], "ev": b["ev"], "id": b.get("id"), "sensor": b.get("sensor"),
                     "start": b.get("start"), "end": b.get("end"), "min": celsius(b.get("min_centi")),
                     "max": celsius(b.get("max_centi")), "max_rh": celsius(b.get("max_rh_centi")),
                     "bins": b.get("bins")}
                if b["ev"] == "excursion_cleared":
                    x.update(by=b.get("by"), reason=reasons.get(str(b.get("id"))))
                excursions.append(x)
        open_ = [dict(x, min=celsius(x.get("min_centi")), max=celsius(x.get("max_centi")),
                      start_iso=iso(x.get("start")), end_iso=iso(x.get("end")))
                 for x in k["status"].get("excursions", {}).values()]
        return {"kiosk": kiosk_id, "band_c": list(BAND_C), "limits_c": list(LIMITS_C),
                "since": since, "until": int(now), "since_iso": iso(since), "until_iso": iso(now),
                "latest": readings(k["status"], now), "series": series, "humidity": rh,
                "days": sorted(days.values(), key=lambda d: (d["sensor"] or "", d["day"])),
                "mkt_window": window, "excursions_open": open_, "excursion_events": excursions,
                "excursions": spans(excursions, k["status"], clears)}

    return router
