"""The dashboard: its static files under /static and its pages. Every page
is the same index.html; the page's script reads the path and shows the
fleet (/), the alerts (/alerts), one kiosk (/kiosk/{id}), the pharmacist's
queue (/pharmacy), people and sites (/people), the access log
(/access-log), reports (/reports), one's own account (/account) or the login (/login). The pages hold no data (it all
comes from the API, which checks who asks), so they are open to anyone.
The kiosk's own screen (/screen/{id}) is a page of its own: api/screen.py."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from ..service import Bridge
from .auth import public

DASHBOARD = Path(__file__).parent.parent / "dashboard"


def static_files() -> StaticFiles:
    return StaticFiles(directory=DASHBOARD)


# The dashboard's pages: each is index.html, whose script shows the page
# for the path (js/main.js).
PAGES = ("/", "/alerts", "/login", "/kiosk/{kiosk_id}", "/pharmacy", "/people", "/access-log", "/reports",
         "/account")


def _page() -> FileResponse:
    return FileResponse(DASHBOARD / "index.html")


def router(bridge: Bridge) -> APIRouter:
    router = APIRouter(include_in_schema=False, dependencies=[public()])
    for path in PAGES:
        router.add_api_route(path, _page, methods=["GET"])
    return router
