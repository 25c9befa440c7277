"""People and places, for admins: users, their API tokens, revoking them,
sites and which site each kiosk is in; and the access log, which admins
and pharmacists review. The same as `kiosk-bridge users|sites|kiosks`."""

from __future__ import annotations

from typing import Any, Literal, Optional

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ..people import NAME, PASSWORD_MAX, PASSWORD_MIN, PHARMACY_SYSTEM, ROLES, Actor, PeopleError, new_password
from ..service import Bridge
from .auth import allow, people
from .common import known

Name = Field(min_length=1, max_length=64, pattern=NAME.pattern)


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Name
    role: Literal[ROLES]  # type: ignore[valid-type]
    sites: list[str] = Field(default_factory=list, max_length=100,
                             description="limit the user to these sites (empty: every site)")
    password: Optional[str] = Field(None, min_length=PASSWORD_MIN, max_length=PASSWORD_MAX,
                                    description="for people; left out, one is made and shown once")


class Revoke(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    token_id: Optional[str] = Field(None, min_length=1, max_length=16,
                                    description="revoke this token only; left out, the user itself")


class NewSite(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Name


class KioskSite(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    site: str = Name


def _answer(fn, *args):
    try:
        return fn(*args)
    except PeopleError as e:
        raise HTTPException(e.status, str(e)) from None


def router(bridge: Bridge) -> APIRouter:
    router = APIRouter(tags=["people"])

    @router.get("/api/users", summary="Every user, their role, sites and tokens (never a secret)")
    def users(request: Request, actor: Actor = allow("manage")) -> list[dict[str, Any]]:
        return people(request).users()

    @router.post("/api/users", status_code=201, summary="Add a user; a password made here is shown once")
    def add_user(request: Request, body: NewUser, actor: Actor = allow("manage")) -> dict[str, Any]:
        password = body.password
        made = password is None and body.role != PHARMACY_SYSTEM
        if made:
            password = new_password()
        user = _answer(people(request).add_user, body.name, body.role, body.sites, password)
        request.state.detail = f"user {body.name} ({body.role})"
        return dict(user, password=password if made else None)

    @router.post("/api/users/{name}/tokens", status_code=201, summary="Issue an API token (shown once)")
    def token(request: Request, name: str, actor: Actor = allow("manage")) -> dict[str, str]:
        tid, tok = _answer(people(request).issue_token, name)
        request.state.detail = f"token {tid} for {name}"
        return {"id": tid, "token": tok}

    @router.post("/api/users/{name}/revoke", summary="Revoke a user (every token and session), or one token")
    def revoke(request: Request, name: str, body: Revoke, actor: Actor = allow("manage")) -> dict[str, Any]:
        if name == actor.name and body.token_id is None:
            raise HTTPException(409, "an admin cannot revoke themselves")
        _answer(people(request).revoke, name, body.token_id)
        request.state.detail = f"revoked {name}" + (f" token {body.token_id}" if body.token_id else "")
        return people(request).user(name)

    @router.get("/api/sites", summary="Every site and its kiosks")
    def sites(request: Request, actor: Actor = allow("manage")) -> list[dict[str, Any]]:
        return people(request).sites()

    @router.post("/api/sites", status_code=201, summary="Add a site (a clinic with its kiosks)")
    def add_site(request: Request, body: NewSite, actor: Actor = allow("manage")) -> dict[str, Any]:
        return _answer(people(request).add_site, body.name)

    @router.put("/api/kiosks/{kiosk_id}/site", summary="Put a kiosk in a site")
    def assign(request: Request, kiosk_id: str, body: KioskSite, actor: Actor = allow("manage")) -> dict[str, str]:
        known(bridge, kiosk_id)
        _answer(people(request).assign, kiosk_id, body.site)
        return {"kiosk": kiosk_id, "site": body.site}

    @router.get("/api/access-log", summary="Every state-changing request: who, what, when, from where, how it ended")
    def access_log(request: Request, actor: Actor = allow("audit"),
                   before: Optional[int] = Query(None, ge=1, le=2**62, description="entries below this id, newest first"),
                   limit: int = Query(100, ge=1, le=1000),
                   user: Optional[str] = Query(None, max_length=64, description="only this user's requests")):
        if not actor.fleet_wide:
            raise HTTPException(403, "the access log covers every site: it is for users of every site")
        rows = people(request).access_log(before, limit, user)
        return {"entries": rows, "next": {"before": rows[-1]["id"]} if len(rows) == limit else None}

    return router
