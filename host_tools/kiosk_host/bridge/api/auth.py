"""Who may call what, and the defences every request passes.

Every route declares a policy, and the app refuses to start with one that
does not (check_routes; tests/test_permissions.py runs every route with
every role):

    @router.post("/api/kiosks/{kiosk_id}/pickups", ...)
    def pickup(kiosk_id: str, body: Pickup, actor: Actor = allow("pickup")):
        bridge.send(kiosk_id, "pickup", {...}, actor=actor.name)

`allow(permission)` authenticates the request (an API token as
`Authorization: Bearer ...`, or the dashboard's session cookie plus its
CSRF token on anything that changes state), checks the actor's role against
PERMISSIONS, and, when the path has `{kiosk_id}`, that the kiosk is in one of
the actor's sites. It answers 401 (no or bad credentials) or 403 (wrong
role, wrong site, no CSRF token) before the handler runs, and returns the
Actor, whose name goes with every command (`actor=`). A route that needs no
actor in its body writes `dependencies=[allow("read")]`; a route open to
anyone writes `public()`. A route that reaches a kiosk another way (a
command by its id) checks it with `visible(request, actor, kiosk)`, and a
list of kiosks is filtered with `may_see`.

Around every request (install): the Host must be one of --allowed-host
(DNS rebinding); a state-changing request that says where it comes from
(Origin, Sec-Fetch-Site) must come from this origin; each answer carries a
content security policy with `frame-ancestors 'none'`; and every
state-changing request is written to the access log: who, what, when, from
where and how it ended, refused ones included."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Security
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.routing import Mount

from ..people import (ADMIN, PHARMACIST, PHARMACY_SYSTEM, ROLES, TECHNICIAN, VIEWER, Actor, People, csrf_token,
                      same)

log = logging.getLogger("kiosk_bridge")

EVERYONE = ROLES
PEOPLE_AT_KIOSKS = (ADMIN, PHARMACIST, TECHNICIAN)

# Who may do what: the one table the routes, cancel and the dashboard read
# (the dashboard gets the current user's list from GET /api/session).
PERMISSIONS: dict[str, tuple[str, ...]] = {
    "read": EVERYONE,                        # kiosks, events, temperature, commands, metrics
    "session": EVERYONE,                     # one's own session and password
    "pickup": (PHARMACIST,),                 # release an order to the patient; the consult queue
    "clear_excursion": (PHARMACIST,),        # decide about stock after a temperature excursion
    "service": (TECHNICIAN,),                # service sessions, restock, retrieve, home, jog, selftest, unlock,
                                             # verify_bin; pairing a kiosk's screen
    "manage": (ADMIN,),                      # users, tokens, sites, kiosks' sites
    "firmware": (ADMIN,),                    # firmware releases and rollouts (docs/ota.md)
    "audit": (ADMIN, PHARMACIST),            # the access log
    "simulate": PEOPLE_AT_KIOSKS,            # the demo's simulated world (/api/sim)
    "acknowledge_alert": PEOPLE_AT_KIOSKS,   # take an alert on (stops its escalation)
    "order": (PHARMACY_SYSTEM,),             # send orders, ask for their pickup codes, change their deadlines
    "order_read": (ADMIN, PHARMACIST, TECHNICIAN, PHARMACY_SYSTEM),   # orders and their history
    "order_cancel": (PHARMACY_SYSTEM, PHARMACIST),                    # cancel an order
}
# The permission each kiosk operation needs; a cancel needs the permission
# of the command it cancels.
OP_PERMISSION: dict[str, str] = {
    "pickup": "pickup", "clear_excursion": "clear_excursion",
    **{op: "service" for op in ("restock", "retrieve", "service_start", "service_end", "home", "jog", "selftest",
                                "unlock", "verify_bin")},
}
# Cancelling: whoever may issue some command; the route then checks the
# permission of the command being cancelled.
PERMISSIONS["cancel"] = tuple(r for r in ROLES if any(r in PERMISSIONS[p] for p in OP_PERMISSION.values()))
assert set(ROLES) == {ADMIN, PHARMACIST, TECHNICIAN, PHARMACY_SYSTEM, VIEWER}

COOKIE = "kiosk_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Mounts of static files, open to anyone (no data in them).
STATIC_MOUNTS = ("/static", "/docs/assets")
LOOPBACK = ("127.0.0.1", "localhost", "::1")

_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'{style}; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
CSP = _CSP.format(style="")
# Swagger UI sets style attributes from its script: allowed on /docs only.
DOCS_CSP = _CSP.format(style=" 'unsafe-inline'")

_bearer = HTTPBearer(auto_error=False, scheme_name="token",
                     description="An API token (`kiosk-bridge users token NAME`), for systems and scripts.")
_cookie = APIKeyCookie(name=COOKIE, auto_error=False, scheme_name="session",
                       description="The dashboard's login (POST /api/session). Every request that changes state "
                                   f"also sends the session's CSRF token in `{CSRF_HEADER}`.")


@dataclass(frozen=True)
class Web:
    """How the HTTP side is reached: the host names clients use (the Host
    header must be one of them) and whether cookies are Secure (HTTPS)."""
    allowed_hosts: tuple[str, ...] = LOOPBACK
    secure_cookies: bool = False
    hosts: frozenset[str] = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "hosts", frozenset(h.lower().strip("[]") for h in self.allowed_hosts))


def people(request: Request) -> People:
    return request.app.state.people


class Policy:
    """A route's policy: the permission it needs (see PERMISSIONS)."""

    def __init__(self, permission: str):
        if permission not in PERMISSIONS:
            raise ValueError(f"unknown permission {permission!r}: one of {', '.join(PERMISSIONS)}")
        self.permission = permission
        self.roles = PERMISSIONS[permission]

    def __repr__(self) -> str:
        return f"allow({self.permission!r})"

    def __call__(self, request: Request, bearer: HTTPAuthorizationCredentials | None = Security(_bearer),
                 cookie: str | None = Security(_cookie)) -> Actor:
        actor = authenticate(request, bearer, cookie)
        if actor.role not in self.roles:
            raise HTTPException(403, f"{actor.name} ({actor.role}) may not do this: it needs "
                                     f"{' or '.join(self.roles)}")
        kiosk = request.path_params.get("kiosk_id")
        if kiosk is not None:
            visible(request, actor, kiosk)
        return actor


class Public:
    """A route open to anyone (the login, liveness, the dashboard's pages)."""
    permission = None
    roles = ()

    def __repr__(self) -> str:
        return "public()"

    def __call__(self) -> None:
        return None


_PUBLIC = Public()


def allow(permission: str) -> Any:
    """The dependency that admits only the roles PERMISSIONS gives
    `permission`, and returns the Actor."""
    return Depends(Policy(permission))


def public() -> Any:
    return Depends(_PUBLIC)


def authenticate(request: Request, bearer: HTTPAuthorizationCredentials | None, cookie: str | None) -> Actor:
    """The actor of a request, from its API token or its session cookie
    (plus the CSRF token when the request changes state); else 401/403."""
    p = people(request)
    if request.headers.get("authorization") is not None:
        actor = p.by_token(bearer.credentials) if bearer is not None else None
        if actor is None:
            raise HTTPException(401, "unknown, revoked or malformed API token",
                                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    elif cookie:
        found = p.by_session(cookie)
        if found is None:
            raise HTTPException(401, "the session has ended: log in again", headers={"WWW-Authenticate": "Bearer"})
        actor = found[0]
        if request.method not in SAFE_METHODS and not same(request.headers.get(CSRF_HEADER, ""), csrf_token(cookie)):
            request.state.actor = actor
            raise HTTPException(403, f"missing or wrong {CSRF_HEADER}: a request that changes something must "
                                     "come from the dashboard itself")
    else:
        raise HTTPException(401, "log in, or send an API token (Authorization: Bearer ...)",
                            headers={"WWW-Authenticate": "Bearer"})
    request.state.actor = actor
    return actor


def visible(request: Request, actor: Actor, kiosk: str) -> None:
    """403 unless the actor's sites hold the kiosk."""
    if not people(request).may_see(actor, kiosk):
        raise HTTPException(403, f"kiosk {kiosk!r} is not in {actor.name}'s sites ({', '.join(actor.sites)})")


def may_see(request: Request, actor: Actor, kiosks: list[str]) -> list[str]:
    """The kiosks of the list the actor may see."""
    if actor.fleet_wide:
        return kiosks
    p = people(request)
    return [k for k in kiosks if p.site_of(k) in actor.sites]


def may(actor: Actor) -> list[str]:
    """The permissions the actor has."""
    return [name for name, roles in PERMISSIONS.items() if actor.role in roles]


def guarded(router: APIRouter, permission: str) -> APIRouter:
    """A router whose every route takes `permission` (for routers built
    elsewhere, such as the emulator's /api/sim in the demo)."""
    outer = APIRouter(dependencies=[allow(permission)])
    outer.include_router(router)
    return outer


# -- every route declares a policy ----------------------------------------------
def routes(app: FastAPI) -> list[Any]:
    """Every route the app serves, as served: with the dependencies of the
    routers it was included through."""
    return list(iter_route_contexts(app.routes))


def policy_of(route: Any) -> Policy | Public | None:
    """The policy a route (one of routes()) declares, wherever in its
    dependencies it sits."""
    todo = [route.dependant] if isinstance(route.original_route, APIRoute) else []
    while todo:
        d = todo.pop()
        if isinstance(d.call, (Policy, Public)):
            return d.call
        todo.extend(d.dependencies)
    return None


def check_routes(app: FastAPI) -> None:
    """Refuse to serve a route that declares no policy."""
    bad = []
    for route in routes(app):
        if isinstance(route.original_route, Mount):
            if route.path not in STATIC_MOUNTS:
                bad.append(f"mount {route.path}")
        elif policy_of(route) is None:
            bad.append(f"{','.join(sorted(route.methods or []))} {route.path}")
    if bad:
        raise RuntimeError("routes without a policy (allow(...) or public(), see api/auth.py): " + "; ".join(bad))


def document(app: FastAPI) -> None:
    """Each operation in the OpenAPI schema says who may call it: the
    roles in `x-roles` and in its description, 401/403 among its answers,
    and no security for public ones."""
    make = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = make()
        for route in routes(app):
            if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
                continue
            policy = policy_of(route)
            for method in route.methods:
                op = schema["paths"].get(route.path_format, {}).get(method.lower())
                if op is None or policy is None:
                    continue
                op["x-roles"] = list(policy.roles)
                if isinstance(policy, Public):
                    op["security"] = []
                    op["description"] = (op.get("description", "") + "\n\nOpen to anyone.").strip()
                    continue
                scope = " Site-scoped: a user limited to sites reaches only their kiosks." \
                    if "{kiosk_id}" in route.path_format else ""
                op["description"] = (op.get("description", "")
                                     + f"\n\nRoles: {', '.join(policy.roles)} (`{policy.permission}`).{scope}").strip()
                op["responses"].setdefault("401", {"description": "no credentials, or bad ones", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
                op["responses"].setdefault("403", {"description": "the role or the site may not; or no CSRF token",
                                                   "content": {"application/json": {
                                                       "schema": {"$ref": "#/components/schemas/Error"}}}})
        return schema

    app.openapi = openapi


# -- around every request -------------------------------------------------------
def host_of(header: str) -> str:
    """The host name of a Host header (or an Origin's authority), without
    the port: "[::1]:8080" -> "::1"."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def install(app: FastAPI, web: Web) -> None:
    """The host check, the origin check, the security headers and the
    access log, around every request."""

    @app.middleware("http")
    async def guard(request: Request, call_next):
        host = request.headers.get("host", "")
        if host_of(host) not in web.hosts:
            return JSONResponse({"detail": f"unknown host {host!r}: this bridge answers to "
                                           f"{', '.join(web.allowed_hosts)} (--allowed-host)"}, status_code=400)
        unsafe = request.method not in SAFE_METHODS
        refused = None
        if unsafe:
            origin = request.headers.get("origin")
            site = request.headers.get("sec-fetch-site")
            if origin is not None and (origin == "null" or urlsplit(origin).netloc.lower() != host.lower()):
                refused = f"a request from {origin} may not change anything here"
            elif site is not None and site not in ("same-origin", "none"):
                refused = f"a {site} request may not change anything here"
        if refused:
            response = JSONResponse({"detail": refused}, status_code=403)
        else:
            response = await call_next(request)
        path = request.url.path
        h = response.headers
        h.setdefault("Content-Security-Policy", DOCS_CSP if path == "/docs" else CSP)
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("Referrer-Policy", "no-referrer")
        if path.startswith("/api/"):
            h.setdefault("Cache-Control", "no-store")
        if web.secure_cookies:
            h.setdefault("Strict-Transport-Security", "max-age=31536000")
        # Every change, and the reads a route marks as disclosures (a report
        # of patients' orders taken away), go in the access log.
        if unsafe or getattr(request.state, "disclosure", False):
            state = request.state
            actor = getattr(state, "actor", None)
            detail = refused or getattr(state, "detail", None)
            client = request.client.host if request.client else None
            try:
                await run_in_threadpool(people(request).log_access, actor, request.method, path,
                                        response.status_code, client, detail)
            except Exception:   # the answer stands; the failure is loud
                log.exception("could not write the access log for %s %s", request.method, path)
        return response
