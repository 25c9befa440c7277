"""The API's documentation: the OpenAPI schema at /openapi.json and Swagger
UI at /docs. Swagger UI's files come from the fastapi-offline package and
are served from here (/docs/assets), never from a CDN: the bridge runs in
pharmacies with no Internet, and a page may only run scripts from its own
origin (the content security policy)."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from ..service import Bridge
from .auth import public
from .dashboard import DASHBOARD

ASSETS = Path(fastapi_offline.__file__).parent / "static"


def assets() -> StaticFiles:
    return StaticFiles(directory=ASSETS)


def router(bridge: Bridge) -> APIRouter:
    router = APIRouter(include_in_schema=False, dependencies=[public()])

    @router.get("/openapi.json")
    def openapi(request: Request):
        return JSONResponse(request.app.openapi())

    @router.get("/docs")
    def docs():
        return FileResponse(DASHBOARD / "docs.html")

    return router
