"""The bridge's HTTP API (FastAPI; its OpenAPI schema at /openapi.json), the
Prometheus metrics and the dashboard.

Every error is JSON `{"detail": "..."}` with its status: 404 an unknown
kiosk or command, 409 a kiosk that cannot take the request now (offline),
422 a malformed request (checked here, so it never reaches a kiosk), 503 no
broker session. Temperatures go out in °C (the kiosks send hundredths).

One module per concern, each with a `router(bridge)`: fleet, commands,
events, temperature, alerts, firmware (releases and rollouts), operations
(/metrics, /healthz, /api/bridge), session (logging in), users (users,
tokens, sites, the access log), docs (/docs, /openapi.json) and dashboard
(its pages; create_app mounts its static files). What they share (error
answers, id and bin types, `known`, `summary`) is in common. A new concern is a new module here and its line in
ROUTERS.

Who may call each route is declared on the route (auth.allow, auth.public)
and enforced there; create_app refuses a route without a policy, and
auth.install puts the host check, the origin check, the security headers
and the access log around every request (docs/security.md)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ... import __version__
from ..orders import OrderError
from ..people import People
from ..service import Bridge, BridgeError
from . import (alerts, auth, commands, dashboard, docs, events, firmware, fleet, operations, orders, reports, screen,
               session, temperature, users)
from .common import ERRORS

# Pydantic's error types for a body that could not be read as JSON at all.
UNREADABLE = ("json_invalid",)

# In this order in the app, the OpenAPI document and the /docs page.
ROUTERS = (fleet.router, commands.router, orders.router, screen.router, temperature.router, events.router,
           alerts.router, firmware.router, session.router, users.router, operations.router, reports.router,
           docs.router)


def create_app(bridge: Bridge, extra_routers: list | None = None, title: str = "Kiosk bridge",
               people: People | None = None, web: auth.Web | None = None) -> FastAPI:
    """The app for one bridge. people: the users (default: in the bridge's
    store); web: the host names it answers to (default: loopback only)."""
    app = FastAPI(title=title, version=__version__, responses=ERRORS, docs_url=None, redoc_url=None,
                  openapi_url=None,
                  description="Fleet service for prescription-pickup kiosks: requests become signed commands, "
                              "every kiosk event is kept as a custody record. Every route but the login and "
                              "/healthz needs an API token (Authorization: Bearer) or the dashboard's session; "
                              "each says which roles may call it. See docs/bridge.md and docs/security.md.")
    app.state.people = people or People(bridge.store)
    app.state.web = web or auth.Web()
    routers: list[APIRouter] = [make(bridge) for make in ROUTERS] + list(extra_routers or [])

    @app.middleware("http")
    async def allow_header(request: Request, call_next):
        """A 405 names every method the path takes (RFC 9110), not only
        those of the first route that matched it."""
        response = await call_next(request)
        if response.status_code == 405:
            methods = set()
            # app.routes holds one entry per included router, without its
            # routes' paths: look inside the routers themselves.
            for route in [*app.routes, *(r for router in routers for r in router.routes)]:
                regex = getattr(route, "path_regex", None)
                if regex is not None and regex.match(request.url.path):
                    methods |= getattr(route, "methods", None) or set()
            if methods:
                response.headers["Allow"] = ", ".join(sorted(methods))
        return response

    @app.exception_handler(BridgeError)
    @app.exception_handler(OrderError)
    async def bridge_error(request: Request, e: BridgeError | OrderError):
        return JSONResponse({"detail": str(e)}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError):
        unreadable = [err for err in e.errors() if err.get("type") in UNREADABLE]
        if unreadable:
            # Not a malformed request but no request at all: 400, as documented.
            return JSONResponse({"detail": "the body is not JSON (send UTF-8 JSON with "
                                           "content-type: application/json)",
                                 "errors": [{"loc": list(err.get("loc", ())), "msg": str(err.get("msg")),
                                             "type": err.get("type")} for err in unreadable]}, status_code=400)
        msgs = []
        for err in e.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            msgs.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return JSONResponse({"detail": "; ".join(msgs) or "invalid request", "errors": [
            {"loc": list(err.get("loc", ())), "msg": str(err.get("msg")), "type": err.get("type")} for err in e.errors()]},
            status_code=422)

    for r in routers:
        app.include_router(r)

    if dashboard.DASHBOARD.is_dir():
        app.mount("/static", dashboard.static_files(), name="static")
        pages = dashboard.router(bridge)
        routers.append(pages)
        app.include_router(pages)
    app.mount("/docs/assets", docs.assets(), name="docs-assets")

    auth.check_routes(app)
    auth.document(app)
    auth.install(app, app.state.web)
    return app
