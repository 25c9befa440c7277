"""Alerts (bridge/alerts.py): the list, one alert with its messages, and
acknowledging one (which stops its escalation); the rules in force. A
site-scoped user sees the alerts of their sites' kiosks and the bridge's
own."""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ...protocol import TEXT_PATTERN
from ..alerts import BRIDGE, AlertStore, view
from ..people import Actor
from ..service import Bridge
from .auth import allow, may_see, visible


class Ack(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    note: str | None = Field(None, max_length=500, pattern=TEXT_PATTERN,
                             description="what the person taking it on will do")


def router(bridge: Bridge) -> APIRouter:
    alerts = AlertStore(bridge.store)
    router = APIRouter(tags=["alerts"])

    def with_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        msgs = alerts.deliveries([a["id"] for a in items])
        return [dict(view(a), messages=msgs.get(a["id"], [])) for a in items]

    def find(request: Request, actor: Actor, alert_id: str) -> dict[str, Any]:
        a = alerts.alert(alert_id)
        if a is None:
            raise HTTPException(404, f"unknown alert {alert_id!r}")
        if a["kiosk"] != BRIDGE:
            visible(request, actor, a["kiosk"])
        return a

    @router.get("/api/alerts", summary="Alerts, newest first: open ones (state=open) or all")
    def list_alerts(request: Request, state: Literal["open", "all"] = "open",
                    kiosk: str | None = Query(None, max_length=64), limit: int = Query(100, ge=1, le=1000),
                    actor: Actor = allow("read")) -> list[dict[str, Any]]:
        items = alerts.alerts(open_only=state == "open", limit=limit, kiosk=kiosk)
        if not actor.fleet_wide:
            seen = set(may_see(request, actor, list({a["kiosk"] for a in items}))) | {BRIDGE}
            items = [a for a in items if a["kiosk"] in seen]
        return with_messages(items)

    @router.get("/api/alerts/rules", summary="The alert rules and channels in force (no secrets)",
                dependencies=[allow("read")])
    def rules() -> dict[str, Any]:
        a = bridge.alerter
        return a.rules.describe() if a else {"source": None, "rules": [], "channels": {}}

    @router.get("/api/alerts/{alert_id}", summary="One alert and the messages sent about it")
    def one(request: Request, alert_id: str, actor: Actor = allow("read")) -> dict[str, Any]:
        return with_messages([find(request, actor, alert_id)])[0]

    @router.post("/api/alerts/{alert_id}/ack", summary="Acknowledge an alert: the caller takes it on; it is not "
                                                       "escalated any more")
    def ack(request: Request, alert_id: str, body: Ack, actor: Actor = allow("acknowledge_alert")) -> dict[str, Any]:
        a = find(request, actor, alert_id)
        if a["resolved"]:
            raise HTTPException(409, f"alert {alert_id} is already resolved: nothing to take on")
        if a["acked"]:
            raise HTTPException(409, f"alert {alert_id} was already acknowledged by {a['acked_by']}")
        return with_messages([alerts.ack(alert_id, actor.name, body.note, time.time())])[0]

    return router
