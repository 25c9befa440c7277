"""Logging in to the dashboard: a password for a session cookie (HttpOnly,
SameSite=Strict, ending after SESSION_IDLE_S unused or SESSION_MAX_S in
all), who is logged in, logging out and changing one's password."""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ..people import PASSWORD_MAX, PASSWORD_MIN, SESSION_MAX_S, Actor, PeopleError, csrf_token
from ..service import Bridge
from .auth import COOKIE, CSRF_HEADER, allow, may, people, public


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=PASSWORD_MAX)


class NewPassword(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    current: str = Field(min_length=1, max_length=PASSWORD_MAX)
    new: str = Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)


class Session(BaseModel):
    name: str
    role: str
    sites: list[str] = Field(description="the sites the user is limited to; empty: every site")
    via: str = Field(description="token or session")
    csrf_token: Optional[str] = Field(None, description=f"send it in {CSRF_HEADER} with every request that "
                                                        "changes something (session logins only)")
    may: list[str] = Field(description="the permissions the user has (see docs/security.md)")


def _session(actor: Actor, cookie: str | None) -> dict:
    return {"name": actor.name, "role": actor.role, "sites": list(actor.sites), "via": actor.via,
            "csrf_token": csrf_token(cookie) if cookie and actor.via == "session" else None, "may": may(actor)}


def router(bridge: Bridge) -> APIRouter:
    router = APIRouter(tags=["session"])

    @router.post("/api/session", response_model=Session, summary="Log in with a name and password",
                 dependencies=[public()],
                 responses={401: {"description": "wrong name or password"},
                            429: {"description": "too many failed logins: wait Retry-After seconds"}})
    async def login(request: Request, body: Login):
        request.state.detail = f"login as {body.name!r}"[:100]
        client = request.client.host if request.client else None
        try:
            actor, cookie = await run_in_threadpool(people(request).login, body.name, body.password, client)
        except PeopleError as e:
            headers = {"Retry-After": str(e.retry_after)} if e.retry_after else {}
            return JSONResponse({"detail": str(e)}, status_code=e.status, headers=headers)
        request.state.actor = actor
        response = JSONResponse(_session(actor, cookie))
        response.set_cookie(COOKIE, cookie, max_age=SESSION_MAX_S, path="/", httponly=True, samesite="strict",
                            secure=request.app.state.web.secure_cookies)
        return response

    @router.get("/api/session", response_model=Session, summary="Who is logged in")
    def whoami(request: Request, actor: Actor = allow("session")):
        return _session(actor, request.cookies.get(COOKIE))

    @router.delete("/api/session", status_code=204, summary="Log out")
    def logout(request: Request, actor: Actor = allow("session")):
        cookie = request.cookies.get(COOKIE)
        if cookie and actor.via == "session":
            people(request).logout(cookie)
        response = Response(status_code=204)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                               secure=request.app.state.web.secure_cookies)
        return response

    @router.post("/api/session/password", status_code=204, summary="Change one's own password",
                 responses={403: {"description": "the current password is wrong"},
                            429: {"description": "too many failed tries: wait Retry-After seconds"}})
    def change_password(request: Request, body: NewPassword, actor: Actor = allow("session")):
        client = request.client.host if request.client else None
        try:
            people(request).login(actor.name, body.current, client, session=False)
            people(request).set_password(actor.name, body.new)
        except PeopleError as e:
            # A wrong current password is not a lost session: 403, not 401.
            status, detail = (403, "the current password is wrong") if e.status == 401 else (e.status, str(e))
            headers = {"Retry-After": str(e.retry_after)} if e.retry_after else {}
            return JSONResponse({"detail": detail}, status_code=status, headers=headers)
        return Response(status_code=204)

    return router
