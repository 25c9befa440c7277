"""People and their credentials, in the bridge's store: users with a role,
sites (a clinic and its kiosks), API tokens, login sessions, login
throttling and the access log.

Why here and not in a proxy: a pharmacy must be able to name the person
behind every door opening (California B&P 4427.4, HIPAA 45 CFR 164.312:
unique user identification, audit controls, authentication), so the bridge
itself must know who asked.

Secrets are never stored as given: passwords as Argon2id hashes
(argon2-cffi), API tokens and session cookies as SHA-256 hashes (they are
256-bit random values, so a fast hash is enough: nothing to brute-force).
A token or a generated password is shown once, when it is made.

The tables live in the same store as the custody records (SQLite or
PostgreSQL), through the Store's connection and lock."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .store import Store

ADMIN = "admin"                    # users, tokens, sites, kiosks' sites
PHARMACIST = "pharmacist"          # releases orders, attended pickups, clears excursions, reviews reports
TECHNICIAN = "technician"          # service sessions, restock, jog, unlock, selftest, verify_bin
PHARMACY_SYSTEM = "pharmacy_system"   # the pharmacy's back end: orders, reads
VIEWER = "viewer"                  # read-only dashboard and metrics
ROLES = (ADMIN, PHARMACIST, TECHNICIAN, PHARMACY_SYSTEM, VIEWER)

# Lower case, so "Alice" and "alice" can never be two people.
NAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
PASSWORD_MIN = 12
PASSWORD_MAX = 1024

SESSION_IDLE_S = 30 * 60           # a session unused this long ends
SESSION_MAX_S = 12 * 3600          # and any session ends after a shift
SESSION_TOUCH_S = 60               # how often a session's last use is written

# Logins: after FREE_FAILURES failed tries for one name (or from one
# address), each further try waits 2**(n - free) s, up to MAX_WAIT_S,
# counted from the last failure. A success clears the count. An address
# gets more (a clinic's staff may share one, behind a proxy) so that one
# person mistyping cannot lock out the others.
FREE_FAILURES = {"name": 5, "ip": 20}
MAX_WAIT_S = 15 * 60

TOKEN_PREFIX = "kbt"

_hasher = PasswordHasher()
_dummy_hash: list[str] = []


class PeopleError(Exception):
    """A request about people the store refuses; status is the HTTP status."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class Actor:
    """Who is asking: a user, as authenticated for this request."""
    name: str
    role: str
    sites: tuple[str, ...]       # empty: every site
    via: str                     # "token" or "session"

    @property
    def fleet_wide(self) -> bool:
        return not self.sites


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def csrf_token(cookie: str) -> str:
    """The CSRF token of a session: derived from its cookie, so a page
    that cannot read the cookie's session (any other origin) cannot make
    it, and the store keeps nothing more."""
    return hashlib.sha256(b"csrf\0" + cookie.encode()).hexdigest()


def new_password() -> str:
    return secrets.token_urlsafe(15)          # 20 characters, 120 bits


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise PeopleError(422, f"a name is 1 to 64 of a-z, 0-9, '.', '_', '@', '-' (starting with a letter "
                               f"or digit), not {name!r}")
    return name


def check_password(password: str) -> str:
    if not isinstance(password, str) or not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise PeopleError(422, f"a password is {PASSWORD_MIN} to {PASSWORD_MAX} characters")
    return password


def _parse_sites(text: str | None) -> tuple[str, ...]:
    return tuple(json.loads(text)) if text else ()


class People:
    """Users, sites, tokens, sessions, throttling and the access log, on a Store."""

    def __init__(self, store: Store):
        self.store = store
        s = store
        log_id = "id INTEGER PRIMARY KEY" if s.kind == "sqlite" else "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
        with s._tx():
            for stmt in (
                "CREATE TABLE IF NOT EXISTS sites (name TEXT PRIMARY KEY, created DOUBLE PRECISION NOT NULL)",
                """CREATE TABLE IF NOT EXISTS kiosk_sites (kiosk TEXT PRIMARY KEY, site TEXT NOT NULL,
                    assigned DOUBLE PRECISION NOT NULL)""",
                """CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, role TEXT NOT NULL, sites TEXT NOT NULL,
                    password TEXT, created DOUBLE PRECISION NOT NULL, revoked DOUBLE PRECISION)""",
                """CREATE TABLE IF NOT EXISTS tokens (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE,
                    user_name TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, last_used DOUBLE PRECISION,
                    revoked DOUBLE PRECISION)""",
                """CREATE TABLE IF NOT EXISTS sessions (hash TEXT PRIMARY KEY, user_name TEXT NOT NULL,
                    created DOUBLE PRECISION NOT NULL, seen DOUBLE PRECISION NOT NULL,
                    expires DOUBLE PRECISION NOT NULL, ip TEXT)""",
                """CREATE TABLE IF NOT EXISTS login_failures (key TEXT PRIMARY KEY, failures INTEGER NOT NULL,
                    last DOUBLE PRECISION NOT NULL)""",
                f"""CREATE TABLE IF NOT EXISTS access_log ({log_id}, at DOUBLE PRECISION NOT NULL, actor TEXT,
                    role TEXT, method TEXT NOT NULL, path TEXT NOT NULL, status INTEGER NOT NULL, ip TEXT,
                    detail TEXT)""",
                "CREATE INDEX IF NOT EXISTS access_log_at ON access_log (at)",
            ):
                s._exec(stmt)

    # -- sites -------------------------------------------------------------------
    def add_site(self, name: str) -> dict[str, Any]:
        check_name(name)
        with self.store._tx():
            if self.store._one("SELECT 1 FROM sites WHERE name = ?", (name,)):
                raise PeopleError(409, f"site {name} already exists")
            self.store._exec("INSERT INTO sites (name, created) VALUES (?, ?)", (name, time.time()))
        return {"name": name, "kiosks": []}

    def sites(self) -> list[dict[str, Any]]:
        with self.store.lock:
            names = [r[0] for r in self.store._all("SELECT name FROM sites ORDER BY name")]
            kiosks = self.store._all("SELECT kiosk, site FROM kiosk_sites ORDER BY kiosk")
        return [{"name": n, "kiosks": [k for k, s in kiosks if s == n]} for n in names]

    def assign(self, kiosk: str, site: str) -> None:
        """Put a kiosk in a site (a kiosk belongs to one site)."""
        with self.store._tx():
            if not self.store._one("SELECT 1 FROM sites WHERE name = ?", (site,)):
                raise PeopleError(404, f"unknown site {site!r}")
            self.store._exec("DELETE FROM kiosk_sites WHERE kiosk = ?", (kiosk,))
            self.store._exec("INSERT INTO kiosk_sites (kiosk, site, assigned) VALUES (?, ?, ?)",
                             (kiosk, site, time.time()))

    def site_of(self, kiosk: str) -> str | None:
        with self.store.lock:
            r = self.store._one("SELECT site FROM kiosk_sites WHERE kiosk = ?", (kiosk,))
        return r[0] if r else None

    def may_see(self, actor: Actor, kiosk: str) -> bool:
        """A fleet-wide user sees every kiosk; a site-scoped one only its
        sites' kiosks (not a kiosk in no site)."""
        return actor.fleet_wide or self.site_of(kiosk) in actor.sites

    # -- users -------------------------------------------------------------------
    def add_user(self, name: str, role: str, sites: list[str] | tuple[str, ...] = (),
                 password: str | None = None) -> dict[str, Any]:
        check_name(name)
        if role not in ROLES:
            raise PeopleError(422, f"role must be one of {', '.join(ROLES)}, not {role!r}")
        sites = sorted(set(sites))
        if role == ADMIN and sites:
            raise PeopleError(422, "an admin manages every site: an admin cannot be limited to sites")
        hashed = _hasher.hash(check_password(password)) if password is not None else None
        with self.store._tx():
            for site in sites:
                if not self.store._one("SELECT 1 FROM sites WHERE name = ?", (site,)):
                    raise PeopleError(404, f"unknown site {site!r} (kiosk-bridge sites add {site})")
            if self.store._one("SELECT 1 FROM users WHERE name = ?", (name,)):
                raise PeopleError(409, f"user {name} already exists (names are never reused)")
            self.store._exec("INSERT INTO users (name, role, sites, password, created) VALUES (?, ?, ?, ?, ?)",
                             (name, role, json.dumps(sites), hashed, time.time()))
        return self.user(name)

    def set_password(self, name: str, password: str) -> None:
        hashed = _hasher.hash(check_password(password))
        with self.store._tx():
            self._active(name)
            self.store._exec("UPDATE users SET password = ? WHERE name = ?", (hashed, name))
            self.store._exec("DELETE FROM sessions WHERE user_name = ?", (name,))

    def _active(self, name: str) -> tuple:
        r = self.store._one("SELECT name, role, sites, revoked FROM users WHERE name = ?", (name,))
        if r is None:
            raise PeopleError(404, f"unknown user {name!r}")
        if r[3] is not None:
            raise PeopleError(409, f"user {name} is revoked")
        return r

    def user(self, name: str) -> dict[str, Any] | None:
        with self.store.lock:
            r = self.store._one("SELECT name, role, sites, password IS NOT NULL, created, revoked FROM users "
                                "WHERE name = ?", (name,))
            if r is None:
                return None
            toks = self.store._all("SELECT id, created, last_used, revoked FROM tokens WHERE user_name = ? "
                                   "ORDER BY created", (name,))
        return {"name": r[0], "role": r[1], "sites": list(_parse_sites(r[2])), "password": bool(r[3]),
                "created": r[4], "revoked": r[5],
                "tokens": [{"id": t[0], "created": t[1], "last_used": t[2], "revoked": t[3]} for t in toks]}

    def users(self) -> list[dict[str, Any]]:
        with self.store.lock:
            names = [r[0] for r in self.store._all("SELECT name FROM users ORDER BY name")]
        return [self.user(n) for n in names]

    def revoke(self, name: str, token_id: str | None = None) -> None:
        """Revoke one of a user's tokens, or the user: every token and
        session ends and no login works any more. The name stays, so the
        records that carry it keep meaning one person."""
        now = time.time()
        with self.store._tx():
            self._active(name)
            if token_id is not None:
                r = self.store._one("SELECT revoked FROM tokens WHERE id = ? AND user_name = ?", (token_id, name))
                if r is None:
                    raise PeopleError(404, f"user {name} has no token {token_id!r}")
                self.store._exec("UPDATE tokens SET revoked = ? WHERE id = ? AND revoked IS NULL", (now, token_id))
                return
            self.store._exec("UPDATE users SET revoked = ?, password = NULL WHERE name = ?", (now, name))
            self.store._exec("UPDATE tokens SET revoked = ? WHERE user_name = ? AND revoked IS NULL", (now, name))
            self.store._exec("DELETE FROM sessions WHERE user_name = ?", (name,))

    # -- API tokens ----------------------------------------------------------------
    def issue_token(self, name: str) -> tuple[str, str]:
        """A new API token for the user: (its id, the token). Only its hash
        is kept: this is the one time anyone sees it."""
        tid = secrets.token_hex(4)
        token = f"{TOKEN_PREFIX}_{tid}_{secrets.token_urlsafe(32)}"
        with self.store._tx():
            self._active(name)
            self.store._exec("INSERT INTO tokens (id, hash, user_name, created) VALUES (?, ?, ?, ?)",
                             (tid, sha256(token), name, time.time()))
        return tid, token

    def by_token(self, token: str) -> Actor | None:
        if not token or len(token) > 200:
            return None
        now = time.time()
        with self.store.lock:
            r = self.store._one("SELECT t.id, t.last_used, u.name, u.role, u.sites FROM tokens t "
                                "JOIN users u ON u.name = t.user_name "
                                "WHERE t.hash = ? AND t.revoked IS NULL AND u.revoked IS NULL", (sha256(token),))
            if r is None:
                return None
            if r[1] is None or now - r[1] > SESSION_TOUCH_S:
                self.store._exec("UPDATE tokens SET last_used = ? WHERE id = ?", (now, r[0]))
        return Actor(r[2], r[3], _parse_sites(r[4]), "token")

    # -- passwords and sessions ----------------------------------------------------
    def login(self, name: str, password: str, ip: str | None, session: bool = True) -> tuple[Actor, str | None]:
        """Check a password: (the actor, a new session cookie, or None when
        session is False). Refused tries are counted per name and per
        address; past FREE_FAILURES the caller must wait (429) before the
        password is even looked at."""
        keys = [f"ip:{ip or '-'}"] + ([f"name:{name}"] if isinstance(name, str) and NAME.match(name) else [])
        wait = self._throttled(keys)
        if wait:
            raise PeopleError(429, f"too many failed logins: try again in {wait} s", retry_after=wait)
        with self.store.lock:
            r = self.store._one("SELECT name, role, sites, password FROM users WHERE name = ? AND revoked IS NULL",
                                (name,)) if isinstance(name, str) and NAME.match(name) else None
        stored = r[3] if r else None
        if not _verify(stored, password if isinstance(password, str) else ""):
            self._failed(keys)
            raise PeopleError(401, "wrong name or password")
        if _hasher.check_needs_rehash(stored):
            with self.store._tx():
                self.store._exec("UPDATE users SET password = ? WHERE name = ?", (_hasher.hash(password), name))
        cookie = secrets.token_urlsafe(32) if session else None
        now = time.time()
        with self.store._tx():
            self.store._exec("DELETE FROM login_failures WHERE key IN (%s)" % ",".join("?" * len(keys)), keys)
            if cookie is None:
                return Actor(r[0], r[1], _parse_sites(r[2]), "password"), None
            self.store._exec("DELETE FROM sessions WHERE expires < ?", (now,))
            self.store._exec("INSERT INTO sessions (hash, user_name, created, seen, expires, ip) VALUES (?, ?, ?, ?, ?, ?)",
                             (sha256(cookie), r[0], now, now, now + SESSION_MAX_S, ip))
        return Actor(r[0], r[1], _parse_sites(r[2]), "session"), cookie

    def by_session(self, cookie: str) -> tuple[Actor, float] | None:
        """The actor of a live session cookie and when the session ends."""
        if not cookie or len(cookie) > 200:
            return None
        now = time.time()
        h = sha256(cookie)
        with self.store.lock:
            r = self.store._one("SELECT s.seen, s.expires, u.name, u.role, u.sites FROM sessions s "
                                "JOIN users u ON u.name = s.user_name WHERE s.hash = ? AND u.revoked IS NULL", (h,))
            if r is None:
                return None
            if now > r[1] or now - r[0] > SESSION_IDLE_S:
                self.store._exec("DELETE FROM sessions WHERE hash = ?", (h,))
                return None
            if now - r[0] > SESSION_TOUCH_S:
                self.store._exec("UPDATE sessions SET seen = ? WHERE hash = ?", (now, h))
        return Actor(r[2], r[3], _parse_sites(r[4]), "session"), min(r[1], max(now, r[0]) + SESSION_IDLE_S)

    def logout(self, cookie: str) -> None:
        with self.store._tx():
            self.store._exec("DELETE FROM sessions WHERE hash = ?", (sha256(cookie),))

    def _throttled(self, keys: list[str]) -> int:
        """Seconds to wait before another try, 0 if none."""
        now = time.time()
        wait = 0.0
        with self.store.lock:
            for key in keys:
                free = FREE_FAILURES[key.split(":", 1)[0]]
                r = self.store._one("SELECT failures, last FROM login_failures WHERE key = ?", (key,))
                if r and r[0] >= free:
                    wait = max(wait, r[1] + min(2 ** min(r[0] - free, 20), MAX_WAIT_S) - now)
        return int(wait + 0.999) if wait > 0 else 0

    def _failed(self, keys: list[str]) -> None:
        now = time.time()
        with self.store._tx():
            for key in keys:
                self.store._exec("INSERT INTO login_failures (key, failures, last) VALUES (?, 0, ?) "
                                 "ON CONFLICT DO NOTHING", (key, now))
                self.store._exec("UPDATE login_failures SET failures = failures + 1, last = ? WHERE key = ?",
                                 (now, key))

    # -- the access log ------------------------------------------------------------
    def log_access(self, actor: Actor | None, method: str, path: str, status: int, ip: str | None,
                   detail: str | None = None) -> None:
        with self.store._tx():
            self.store._exec("INSERT INTO access_log (at, actor, role, method, path, status, ip, detail) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (time.time(), actor.name if actor else None, actor.role if actor else None,
                              method, path[:2000], status, ip, detail))

    def access_log(self, before: int | None = None, limit: int = 100, actor: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT id, at, actor, role, method, path, status, ip, detail FROM access_log WHERE 1 = 1"
        p: list[Any] = []
        if before is not None:
            q += " AND id < ?"
            p.append(before)
        if actor is not None:
            q += " AND actor = ?"
            p.append(actor)
        q += " ORDER BY id DESC LIMIT ?"
        p.append(limit)
        with self.store.lock:
            rows = self.store._all(q, p)
        return [{"id": r[0], "at": r[1], "actor": r[2], "role": r[3], "method": r[4], "path": r[5], "status": r[6],
                 "ip": r[7], "detail": r[8]} for r in rows]


def _verify(stored: str | None, password: str) -> bool:
    """Argon2 verification; an unknown user costs as much as a known one,
    so the time taken does not tell which names exist."""
    if not _dummy_hash:
        _dummy_hash.append(_hasher.hash(uuid.uuid4().hex))
    try:
        return _hasher.verify(stored or _dummy_hash[0], password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
