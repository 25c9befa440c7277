"""Alerts (bridge/alerts.py): the list, one alert with its messages, and
acknowledging one (which stops its escalation); the rules in force."""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from ...protocol import TEXT_PATTERN
from ..alerts import AlertStore, view
from ..service import Bridge


class Ack(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    by: str = Field(min_length=1, max_length=64, pattern=TEXT_PATTERN, description="who takes it on")
    note: str | None = Field(None, max_length=500, pattern=TEXT_PATTERN, description="what they will do")


def router(bridge: Bridge) -> APIRouter:
    alerts = AlertStore(bridge.store)
    router = APIRouter(tags=["alerts"])

    def with_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        msgs = alerts.deliveries([a["id"] for a in items])
        return [dict(view(a), messages=msgs.get(a["id"], [])) for a in items]

    @router.get("/api/alerts", summary="Alerts, newest first: open ones (state=open) or all")
    def list_alerts(state: Literal["open", "all"] = "open", kiosk: str | None = Query(None, max_length=64),
                    limit: int = Query(100, ge=1, le=1000)) -> list[dict[str, Any]]:
        return with_messages(alerts.alerts(open_only=state == "open", limit=limit, kiosk=kiosk))

    @router.get("/api/alerts/rules", summary="The alert rules and channels in force (no secrets)")
    def rules() -> dict[str, Any]:
        a = getattr(bridge, "alerter", None)
        return a.rules.describe() if a else {"source": None, "rules": [], "channels": {}}

    @router.get("/api/alerts/{alert_id}", summary="One alert and the messages sent about it")
    def one(alert_id: str) -> dict[str, Any]:
        a = alerts.alert(alert_id)
        if a is None:
            raise HTTPException(404, f"unknown alert {alert_id!r}")
        return with_messages([a])[0]

    @router.post("/api/alerts/{alert_id}/ack", summary="Acknowledge an alert: someone takes it on; it is not "
                                                       "escalated any more")
    def ack(alert_id: str, body: Ack) -> dict[str, Any]:
        a = alerts.alert(alert_id)
        if a is None:
            raise HTTPException(404, f"unknown alert {alert_id!r}")
        if a["resolved"]:
            raise HTTPException(409, f"alert {alert_id} is already resolved: nothing to take on")
        if a["acked"]:
            raise HTTPException(409, f"alert {alert_id} was already acknowledged by {a['acked_by']}")
        return with_messages([alerts.ack(alert_id, body.by, body.note, time.time())])[0]

    return router
