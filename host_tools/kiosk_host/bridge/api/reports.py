"""Reports for the pharmacy's records: every movement of the orders in and
out of the kiosks over a period, with who and when, as JSON or as CSV to
keep or send on. Admins and pharmacists (`audit`); a user limited to sites
gets their sites' kiosks only."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import Any, Literal, Optional

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response

from ..people import Actor
from ..service import Bridge
from .auth import allow, may_see, visible
from .common import iso, known

MAX_ROWS = 10000
CSV_COLUMNS = ("at", "at_iso", "kiosk", "order_id", "event", "state", "actor", "patient_ref", "items", "detail")


DAY = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


def _day(text: str, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise HTTPException(422, f"{name} is not a day of the calendar: {text}") from None


def _local_midnight(day: dt.date) -> float:
    """The start of a day in the bridge's local time."""
    return dt.datetime.combine(day, dt.time()).timestamp()


def _csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        items = "; ".join(f"{i.get('name')} x{i.get('qty')} (NDC {i.get('ndc')})" for i in r["items"] or [])
        w.writerow([f"{r['at']:.3f}", iso(r["at"]), r["kiosk"], r["order_id"], r["event"], r["state"], r["actor"],
                    r["patient_ref"], items, json.dumps(r["detail"], sort_keys=True, separators=(",", ":"))])
    return out.getvalue()


def router(bridge: Bridge) -> APIRouter:
    router = APIRouter(tags=["reports"])

    @router.get("/api/reports/movements",
                summary="Every movement of the orders in and out of the kiosks over a period (JSON or CSV)",
                responses={200: {"content": {"text/csv": {}}}})
    def movements(request: Request,
                  since: Optional[str] = Query(None, pattern=DAY, description="first day, YYYY-MM-DD (the "
                                               "bridge's local time; default: 30 days before until)"),
                  until: Optional[str] = Query(None, pattern=DAY, description="last day, YYYY-MM-DD, included "
                                                                             "(default: today)"),
                  kiosk: Optional[str] = Query(None, max_length=64, description="one kiosk (default: every kiosk "
                                                                                "the user may see)"),
                  format: Literal["json", "csv"] = Query("json"),
                  actor: Actor = allow("audit")) -> Any:
        last = _day(until, "until") if until else dt.date.today()
        first = _day(since, "since") if since else last - dt.timedelta(days=30)
        since, until = first.isoformat(), last.isoformat()
        if last < first:
            raise HTTPException(422, "until is before since")
        if (last - first).days >= 400:
            raise HTTPException(422, "a report covers at most 400 days: ask for a shorter period")
        start, end = _local_midnight(first), _local_midnight(last + dt.timedelta(days=1))
        if kiosk is not None:
            known(bridge, kiosk)
            visible(request, actor, kiosk)
            kiosks: list[str] | None = [kiosk]
        else:
            kiosks = None if actor.fleet_wide else may_see(request, actor, [k["id"] for k in bridge.store.kiosks()])
        rows = bridge.orders.movements(kiosks, start, end, MAX_ROWS + 1)
        if len(rows) > MAX_ROWS:
            raise HTTPException(413, f"more than {MAX_ROWS} movements in that period: ask for a shorter one "
                                     "or one kiosk")
        request.state.disclosure = True
        request.state.detail = f"{len(rows)} movements {since}..{until}" + (f" at {kiosk}" if kiosk else "") \
            + f" as {format}"
        if format == "csv":
            name = f"movements-{kiosk + '-' if kiosk else ''}{since}-{until}.csv"
            return Response(_csv(rows), media_type="text/csv; charset=utf-8",
                            headers={"content-disposition": f'attachment; filename="{name}"',
                                     "cache-control": "no-store"})
        for r in rows:
            r["at_iso"] = iso(r["at"])
        return {"since": since, "until": until, "kiosk": kiosk, "movements": rows}

    return router
