"""The bridge's HTTP API (FastAPI; its OpenAPI schema at /openapi.json), the
Prometheus metrics and the dashboard.

Every error is JSON `{"detail": "..."}` with its status: 404 an unknown
kiosk or command, 409 a kiosk that cannot take the request now (offline),
422 a malformed request (checked here, so it never reaches a kiosk), 503 no
broker session. Temperatures go out in °C (the kiosks send hundredths)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from .. import __version__
from ..protocol import TEXT_PATTERN
from . import status as kstatus
from .service import Bridge, BridgeError

DASHBOARD = Path(__file__).with_name("dashboard")
BAND_C = (20.0, 25.0)       # USP controlled room temperature
LIMITS_C = (15.0, 30.0)     # allowed excursions
DH_R = 10000.0              # MKT: activation energy / gas constant, K
K0 = 273.15
DAY_S = 86400

SEQ_MAX = 2**53   # journal sequence numbers are far below; the stores keep 64-bit integers
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


class Accepted(BaseModel):
    command_id: str
    state: str = "queued"


class CommandState(BaseModel):
    command_id: str
    kiosk: str
    op: str
    args: dict[str, Any]
    state: Literal["queued", "in_progress", "succeeded", "failed", "timed_out", "rejected", "cancelled"]
    reason: Optional[str] = None
    info: dict[str, Any] = {}
    created: float
    updated: float
    exp: int
    history: list[dict[str, Any]]


def celsius(v: Any) -> float | None:
    return round(v / 100.0, 2) if isinstance(v, int) and not isinstance(v, bool) else None


def mkt(temps_c: list[float]) -> float | None:
    """Mean kinetic temperature of equally spaced readings, °C."""
    if not temps_c:
        return None
    s = sum(math.exp(-DH_R / (t + K0)) for t in temps_c) / len(temps_c)
    return round(DH_R / -math.log(s) - K0, 2)


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


def create_app(bridge: Bridge, extra_routers: list | None = None, title: str = "Kiosk bridge") -> FastAPI:
    app = FastAPI(title=title, version=__version__, responses=ERRORS,
                  description="Fleet service for prescription-pickup kiosks: requests become signed commands, "
                              "every kiosk event is kept as a custody record. See docs/bridge.md.")
    store = bridge.store

    @app.middleware("http")
    async def allow_header(request: Request, call_next):
        """A 405 names every method the path takes (RFC 9110), not only
        those of the first route that matched it."""
        response = await call_next(request)
        if response.status_code == 405:
            methods = set()
            for route in app.routes:
                regex = getattr(route, "path_regex", None)
                if regex is not None and regex.match(request.url.path):
                    methods |= getattr(route, "methods", None) or set()
            if methods:
                response.headers["Allow"] = ", ".join(sorted(methods))
        return response

    @app.exception_handler(BridgeError)
    async def bridge_error(request: Request, e: BridgeError):
        return JSONResponse({"detail": str(e)}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError):
        msgs = []
        for err in e.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            msgs.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return JSONResponse({"detail": "; ".join(msgs) or "invalid request", "errors": [
            {"loc": list(err.get("loc", ())), "msg": str(err.get("msg")), "type": err.get("type")} for err in e.errors()]},
            status_code=422)

    def known(kiosk_id: str) -> dict[str, Any]:
        k = store.kiosk(kiosk_id)
        if k is None:
            if bridge.keys.get(kiosk_id) is not None:
                return {"id": kiosk_id, "online": False, "boot": None, "fw": None, "board": None, "birth": None,
                        "tele": None, "why": "never seen", "seen": None, "acked": 0, "journal_last": 0,
                        "status": kstatus.empty()}
            raise HTTPException(404, f"unknown kiosk {kiosk_id!r}")
        return k

    # -- fleet -----------------------------------------------------------------
    @app.get("/api/kiosks", tags=["fleet"], summary="Every kiosk and its state")
    def kiosks() -> list[dict[str, Any]]:
        seen = {k["id"]: k for k in store.kiosks()}
        for kid in bridge.keys.ids():
            if kid not in seen:
                seen[kid] = known(kid)
        return [summary(k) for k in sorted(seen.values(), key=lambda k: k["id"]) if bridge.keys.get(k["id"])]

    @app.get("/api/kiosks/{kiosk_id}", tags=["fleet"], summary="One kiosk in detail")
    def kiosk(kiosk_id: str) -> dict[str, Any]:
        k = known(kiosk_id)
        out = summary(k)
        out["status"] = k["status"]
        out["snapshot"] = (k.get("birth") or {}).get("snap")
        out["telemetry"] = k.get("tele")
        out["commands"] = store.commands(kiosk_id, 20)
        return out

    # -- commands --------------------------------------------------------------
    @app.post("/api/kiosks/{kiosk_id}/pickups", status_code=202, response_model=Accepted, responses=ACCEPTED,
              tags=["commands"], summary="Release an order from a bin to the patient")
    def pickup(kiosk_id: str, body: Pickup):
        known(kiosk_id)
        return {"command_id": bridge.send(kiosk_id, "pickup", {"order": body.order_id, "bin": body.bin})["command_id"]}

    @app.post("/api/kiosks/{kiosk_id}/restocks", status_code=202, response_model=Accepted, responses=ACCEPTED,
              tags=["commands"], summary="Load an order into a bin (needs a service session)")
    def restock(kiosk_id: str, body: Pickup):
        known(kiosk_id)
        return {"command_id": bridge.send(kiosk_id, "restock", {"order": body.order_id, "bin": body.bin})["command_id"]}

    @app.post("/api/kiosks/{kiosk_id}/service", status_code=202, response_model=Accepted, responses=ACCEPTED,
              tags=["commands"], summary="Start an authorised service session (restock, jog, unlock)")
    def service_start(kiosk_id: str, body: ServiceSession):
        known(kiosk_id)
        session = body.session or f"svc-{int(time.time())}"
        return {"command_id": bridge.send(kiosk_id, "service_start", {"session": session})["command_id"]}

    @app.delete("/api/kiosks/{kiosk_id}/service", status_code=202, response_model=Accepted, responses=ACCEPTED,
                tags=["commands"], summary="End the service session")
    def service_end(kiosk_id: str):
        known(kiosk_id)
        return {"command_id": bridge.send(kiosk_id, "service_end", {})["command_id"]}

    @app.post("/api/kiosks/{kiosk_id}/commands", status_code=202, response_model=Accepted, responses=ACCEPTED,
              tags=["commands"], summary="A service operation: home, jog, selftest, unlock, verify_bin")
    def command(kiosk_id: str, body: Command):
        known(kiosk_id)
        return {"command_id": bridge.send(kiosk_id, body.op, body.args.model_dump())["command_id"]}

    @app.post("/api/kiosks/{kiosk_id}/excursions/{excursion_id}/clear", status_code=202, response_model=Accepted,
              responses=ACCEPTED, tags=["temperature"], summary="Acknowledge (clear) an excursion")
    def clear_excursion(kiosk_id: str, excursion_id: Annotated[str, PathParam(min_length=1, max_length=64,
                                                                            pattern=TEXT_PATTERN)]):
        known(kiosk_id)
        return {"command_id": bridge.send(kiosk_id, "clear_excursion", {"excursion": excursion_id})["command_id"]}

    @app.get("/api/commands/{command_id}", response_model=CommandState, tags=["commands"], operation_id="get_command",
             summary="A command and how far it got")
    def get_command(command_id: str):
        c = store.command(command_id)
        if c is None:
            raise HTTPException(404, f"unknown command {command_id!r}")
        return c

    @app.post("/api/commands/{command_id}/cancel", status_code=202, response_model=Accepted, responses=ACCEPTED,
              tags=["commands"], operation_id="cancel_command",
              summary="Ask the kiosk to cancel a queued or running command")
    def cancel(command_id: str):
        c = store.command(command_id)
        if c is None:
            raise HTTPException(404, f"unknown command {command_id!r}")
        if c["state"] not in ("queued", "in_progress"):
            raise HTTPException(409, f"command {command_id} already ended: {c['state']}")
        return {"command_id": bridge.send(c["kiosk"], "cancel", {"target": command_id})["command_id"]}

    # -- events and temperature --------------------------------------------------
    @app.get("/api/kiosks/{kiosk_id}/events", tags=["events"], summary="The kiosk's events (custody records), paged")
    def events(kiosk_id: str, after: int = Query(0, ge=0, le=SEQ_MAX, description="seq to start after (ascending order)"),
               before: Optional[int] = Query(None, ge=1, le=SEQ_MAX, description="newest first, below this seq"),
               limit: int = Query(100, ge=1, le=1000), kind: Optional[str] = Query(None, max_length=32)):
        known(kiosk_id)
        if before is not None:
            evs = store.events(kiosk_id, before, limit, kind, newest_first=True)
            nxt = {"before": evs[-1]["seq"]} if len(evs) == limit else None
        else:
            evs = store.events(kiosk_id, after, limit, kind)
            nxt = {"after": evs[-1]["seq"]} if len(evs) == limit else None
        return {"kiosk": kiosk_id, "events": evs, "next": nxt}

    @app.get("/api/kiosks/{kiosk_id}/temperature", tags=["temperature"],
             summary="Temperature history, daily statistics, MKT and excursions")
    def temperature(kiosk_id: str, hours: float = Query(24, gt=0, le=24 * 90)):
        k = known(kiosk_id)
        since = int(time.time() - hours * 3600)
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
        for e in store.events(kiosk_id, 0, 1000, "temp", newest_first=True):
            b = e["body"]
            if b.get("ev") in ("excursion_start", "excursion_end", "excursion_cleared"):
                excursions.append({"seq": e["seq"], "ev": b["ev"], "id": b.get("id"), "sensor": b.get("sensor"),
                                   "start": b.get("start"), "end": b.get("end"), "min": celsius(b.get("min_centi")),
                                   "max": celsius(b.get("max_centi")), "max_rh": celsius(b.get("max_rh_centi")),
                                   "bins": b.get("bins")})
        open_ = [dict(x, min=celsius(x.get("min_centi")), max=celsius(x.get("max_centi")))
                 for x in k["status"].get("excursions", {}).values()]
        return {"kiosk": kiosk_id, "band_c": list(BAND_C), "limits_c": list(LIMITS_C), "since": since,
                "series": series, "humidity": rh,
                "days": sorted(days.values(), key=lambda d: (d["sensor"] or "", d["day"])),
                "mkt_window": window, "excursions_open": open_, "excursion_events": excursions}

    # -- operations --------------------------------------------------------------
    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"], summary="Prometheus metrics")
    def metrics():
        return PlainTextResponse(bridge.registry.render(), media_type="text/plain; version=0.0.4")

    @app.get("/healthz", tags=["operations"], summary="Liveness: the store answers and the broker session is up")
    def healthz():
        ok = bridge.connected.is_set()
        store.acked("-")
        return JSONResponse({"broker": ok, "store": store.kind}, status_code=200 if ok else 503)

    for r in extra_routers or []:
        app.include_router(r)

    if DASHBOARD.is_dir():
        app.mount("/static", StaticFiles(directory=DASHBOARD), name="static")

        @app.get("/", include_in_schema=False)
        def index():
            return FileResponse(DASHBOARD / "index.html")

        @app.get("/kiosk/{kiosk_id}", include_in_schema=False)
        def kiosk_page(kiosk_id: str):
            return FileResponse(DASHBOARD / "index.html")

    return app
