"""Who may call what, against a real `kiosk-bridge serve` with emulated
kiosks on a real mosquitto (and the demo's own app for its /api/sim
routes).

The permission matrix enumerates EVERY route the bridge's app and the
demo's app serve (from the apps themselves, so a route added later is in
it without a change here) and calls each with no credentials, as each role,
and as a user of another site: 401 without credentials, 403 for a role the
route's policy leaves out or a kiosk outside the user's sites, and for the
roles it allows an answer past the permission check (2xx for the routes
this file knows how to call well). The roles the routes of the issue must
have are pinned here too, so a policy cannot drift unnoticed.

Then the rest of what guards the API: sessions (cookie attributes, CSRF on
every change, logout, expiry), login throttling, revocation, the Host
allow-list, cross-origin requests, security headers, locally served API
docs, the OpenAPI schema's security, the access log and the
`kiosk-bridge users|sites|kiosks` command line."""

from __future__ import annotations

from http.cookies import SimpleCookie
import json
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from bridge_support import VENV_BIN, BridgeProc, http, new_order, wait_until
from kiosk_host.bridge.api import create_app
from kiosk_host.bridge.api.auth import PERMISSIONS, Public, policy_of, routes
from kiosk_host.bridge.config import Keys
from kiosk_host.bridge.people import ROLES, People
from kiosk_host.bridge.run import demo_app
from kiosk_host.bridge.service import Bridge
from kiosk_host.bridge.store import Store
from kiosk_host.emulator.fleet import Fleet
from link_support import Mosquitto, free_port

POLICIES = {"telemetry_period_s": 2, "sample_period_s": 1}
PASSWORD = "matrix password 1"
HOME, AWAY = "kiosk-001", "kiosk-002"       # in site-a and site-b

# What the issue asks of the routes: method and path -> the roles allowed.
PINNED = {
    ("POST", "/api/kiosks/{kiosk_id}/pickups"): {"pharmacist"},
    ("POST", "/api/kiosks/{kiosk_id}/restocks"): {"technician"},
    ("POST", "/api/kiosks/{kiosk_id}/service"): {"technician"},
    ("DELETE", "/api/kiosks/{kiosk_id}/service"): {"technician"},
    ("POST", "/api/kiosks/{kiosk_id}/commands"): {"technician"},
    ("POST", "/api/kiosks/{kiosk_id}/excursions/{excursion_id}/clear"): {"pharmacist"},
    ("GET", "/api/kiosks"): set(ROLES),
    ("GET", "/api/kiosks/{kiosk_id}"): set(ROLES),
    ("GET", "/api/kiosks/{kiosk_id}/events"): set(ROLES),
    ("GET", "/api/kiosks/{kiosk_id}/temperature"): set(ROLES),
    ("GET", "/api/commands/{command_id}"): set(ROLES),
    ("GET", "/metrics"): set(ROLES),
    ("GET", "/healthz"): set(),             # open
    ("POST", "/api/users"): {"admin"},
    ("POST", "/api/sites"): {"admin"},
    ("PUT", "/api/kiosks/{kiosk_id}/site"): {"admin"},
    # The patient's pickup (issue 14).
    ("POST", "/api/orders"): {"pharmacy_system"},
    ("POST", "/api/orders/{order_id}/pickup-code"): {"pharmacy_system"},
    ("POST", "/api/orders/{order_id}/release"): {"pharmacist"},
    ("GET", "/api/consults"): {"pharmacist"},
    ("POST", "/api/kiosks/{kiosk_id}/retrievals"): {"technician"},
    ("POST", "/api/releases"): {"admin"},
    ("POST", "/api/rollouts"): {"admin"},
    ("POST", "/api/rollouts/{rollout_id}/halt"): {"admin"},
    ("GET", "/api/rollouts/{rollout_id}"): set(ROLES),
}
# The kiosk's screen answers its own paired credential only, whatever staff
# token comes with the request (bridge/screens.py): 401 without it, 403 for
# a pairing link that is no good.
SCREEN_ONLY = {("GET", "/api/screen/{kiosk_id}"), ("POST", "/api/screen/{kiosk_id}/call"),
               ("POST", "/api/screen/{kiosk_id}/pair")}


class Rig:
    """mosquitto, two emulated kiosks in two sites, `kiosk-bridge serve`,
    and the demo's app (its /api/sim routes) on the same store and fleet."""

    def __init__(self, root: Path):
        self.root = root
        self.broker = Mosquitto(root / "mq").start()
        url = f"mqtt://127.0.0.1:{self.broker.port}"
        self.fleet = Fleet(url, 2, root / "kiosks", root / "keys", policies=POLICIES, keepalive_s=2).start()
        self.db = f"sqlite:///{root / 'bridge.sqlite3'}"
        people = People(Store(self.db))
        for site, kiosk in (("site-a", HOME), ("site-b", AWAY)):
            people.add_site(site)
            people.assign(kiosk, site)
        # A user per role of every site, and one per role (admins are never
        # limited) of site-b only: the "other site" for kiosk-001.
        self.names, self.tokens, self.other = {}, {}, {}
        for role in ROLES:
            name = f"m-{role.replace('_', '-')}"
            people.add_user(name, role, password=PASSWORD)
            self.names[role] = name
            self.tokens[role] = people.issue_token(name)[1]
            if role != "admin":
                people.add_user(f"o-{role.replace('_', '-')}", role, ["site-b"])
                self.other[role] = people.issue_token(f"o-{role.replace('_', '-')}")[1]
        people.store.close()
        self.bridge = BridgeProc(root / "bridge", url, root / "keys", db=self.db).start()
        for kid in (HOME, AWAY):
            wait_until(lambda: self.get(f"/api/kiosks/{kid}")["online"], 40, f"{kid} online")
        # A command on kiosk-001 to look at and cancel: a pickup the kiosk refuses (the bin is empty).
        status, r = self.call("POST", f"/api/kiosks/{HOME}/pickups", {"order_id": "rx-matrix", "bin": 1}, "pharmacist")
        assert status == 202, r
        self.command = r["command_id"]
        # The demo's app over the same store and fleet, for the routes only the demo has.
        self.store = Store(self.db)
        self.people = People(self.store)
        inproc = Bridge(url, self.store, Keys(root / "keys"))
        self.orders = inproc.orders
        self.demo = demo_app(inproc, self.fleet, self.people, None)
        self.main = create_app(inproc, people=self.people)
        self.demo_port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.demo, host="127.0.0.1", port=self.demo_port,
                                                    log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, 20, "the demo app up")

    def call(self, method: str, path: str, body=None, role: str | None = None, token: str | None = None,
             base: str | None = None, headers: dict | None = None):
        if role is not None:
            token = self.tokens[role]
        return http(method, (base or self.bridge.url) + path, body, token=token, headers=headers)

    def get(self, path: str, role: str = "viewer"):
        status, body = self.call("GET", path, role=role)
        assert status == 200, (path, status, body)
        return body

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.bridge.stop()
        self.fleet.stop()
        self.broker.stop()
        self.store.close()


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = Rig(tmp_path_factory.mktemp("perm"))
    yield r
    r.close()


_n = [0]


def _fresh(prefix: str) -> str:
    _n[0] += 1
    return f"{prefix}-{_n[0]}"


def sample(rig: Rig, method: str, path: str, role: str | None):
    """A good request for a route: (concrete path, body, whether it should
    succeed for the roles allowed). Routes this file does not know get
    their path parameters filled in and an empty body, and only the
    permission check is judged."""
    params = {"kiosk_id": HOME, "command_id": rig.command, "excursion_id": "x1", "name": rig.names["viewer"]}
    body, good = None, True
    key = (method, path)
    if "{order_id}" in path or key in (("POST", "/api/kiosks/{kiosk_id}/restocks"),
                                       ("POST", "/api/kiosks/{kiosk_id}/retrievals")):
        # A fresh order at kiosk-001 for each call: one call's cancel or release is not the next's.
        params["order_id"] = _fresh("rx-m")
        o = new_order(params["order_id"], HOME)
        rig.orders.create(o["order_id"], HOME, o["patient_ref"], o["items"], False, o["pickup_by"], "matrix")
    if key == ("POST", "/api/kiosks/{kiosk_id}/pickups"):
        body = {"order_id": "rx-matrix", "bin": 1}
    elif key in (("POST", "/api/kiosks/{kiosk_id}/restocks"), ("POST", "/api/kiosks/{kiosk_id}/retrievals")):
        body, good = {"order_id": params["order_id"]}, False     # no service session open: 409
    elif key == ("POST", "/api/orders"):
        body = new_order(_fresh("rx-m"), HOME)
    elif key == ("PATCH", "/api/orders/{order_id}"):
        body = {"pickup_by": new_order("x", HOME, days=3)["pickup_by"]}
    elif key == ("POST", "/api/orders/{order_id}/cancel"):
        body = {"reason": "matrix"}
    elif key == ("POST", "/api/orders/{order_id}/pickup-code"):
        body = {}
    elif key == ("POST", "/api/orders/{order_id}/release"):
        body = {"counselling": "not_required"}
    elif key == ("POST", "/api/consults/{consult_id}/close"):
        rig.orders.request_call(HOME)
        params["consult_id"] = next(c["id"] for c in rig.orders.consults() if c["kiosk"] == HOME)
        body = {"note": "matrix"}
    elif key == ("POST", "/api/kiosks/{kiosk_id}/screen-pairing"):
        body = None
    elif key == ("DELETE", "/api/kiosks/{kiosk_id}/screens"):
        pass
    elif key == ("POST", "/api/sim/{kiosk_id}/scan"):
        body = {"text": "MATRIX"}
    elif key == ("POST", "/api/sim/{kiosk_id}/button"):
        body = {"name": "call_pharmacist"}
    elif key == ("POST", "/api/screen/{kiosk_id}/pair"):
        body = {"pairing": "not-a-pairing-link-at-all"}
    elif key == ("POST", "/api/kiosks/{kiosk_id}/service"):
        body = {"session": "svc-matrix"}
    elif key == ("POST", "/api/kiosks/{kiosk_id}/commands"):
        body = {"op": "selftest", "args": {}}
    elif key == ("POST", "/api/kiosks/{kiosk_id}/excursions/{excursion_id}/clear"):
        body, good = {"reason": "matrix"}, False       # no such excursion: 404
    elif key == ("GET", "/api/alerts/{alert_id}"):
        good = False                                  # no such alert: 404
    elif key == ("POST", "/api/commands/{command_id}/cancel"):
        good = False                                  # the command has ended: 409
    elif key == ("POST", "/api/session"):
        body = {"name": rig.names["viewer"], "password": PASSWORD}
    elif key == ("POST", "/api/session/password"):
        body = {"current": PASSWORD, "new": PASSWORD}    # every m-* user has this password
    elif key == ("POST", "/api/users"):
        body = {"name": _fresh("m-new"), "role": "viewer"}
    elif key == ("POST", "/api/users/{name}/revoke"):
        params["name"] = _fresh("m-gone")
        rig.people.add_user(params["name"], "viewer")
        body = {}
    elif key == ("POST", "/api/sites"):
        body = {"name": _fresh("site-x")}
    elif key == ("PUT", "/api/kiosks/{kiosk_id}/site"):
        body = {"site": "site-a"}
    elif key == ("GET", "/api/rollouts/{rollout_id}"):
        good = False                                  # no rollout in this rig: 404
    elif key == ("POST", "/api/sim/{kiosk_id}/door"):
        body = {"door": "service", "action": "close"}
    elif key == ("POST", "/api/sim/{kiosk_id}/power"):
        body = {"on": True}
    elif key == ("POST", "/api/sim/{kiosk_id}/network"):
        body = {"up": True}
    elif key == ("POST", "/api/sim/{kiosk_id}/sensor"):
        body = {"sensor": sorted(rig.fleet.world(HOME)["world"]["sensors"])[0], "celsius": 22.0}
    elif method in ("POST", "PUT", "PATCH"):
        body, good = {}, False
    elif method == "DELETE" and key not in (("DELETE", "/api/kiosks/{kiosk_id}/service"), ("DELETE", "/api/session"),
                                            ("DELETE", "/api/kiosks/{kiosk_id}/screens")):
        good = False
    concrete = re.sub(r"\{(\w+)\}", lambda m: params.get(m.group(1), "x"), path)
    if concrete == path and "{" in path:
        good = False
    return concrete, body, good


def _cases(rig: Rig):
    """(app, base URL, route) for every route: the bridge's app against the
    serve process, the demo's extra routes against the demo app."""
    main = {(tuple(sorted(r.methods or ())), r.path) for r in routes(rig.main)}
    out = [(rig.main, rig.bridge.url, r) for r in routes(rig.main)]
    out += [(rig.demo, f"http://127.0.0.1:{rig.demo_port}", r) for r in routes(rig.demo)
            if (tuple(sorted(r.methods or ())), r.path) not in main]
    return out


def test_every_route_declares_a_policy_and_the_app_refuses_one_that_does_not(rig):
    from fastapi import APIRouter

    seen = 0
    for app in (rig.main, rig.demo):
        for r in routes(app):
            if r.methods:
                assert policy_of(r) is not None, r.path
                seen += 1
    assert seen >= 30
    stray = APIRouter()
    stray.add_api_route("/api/stray", lambda: {}, methods=["GET"])
    with pytest.raises(RuntimeError, match="/api/stray"):
        create_app(Bridge("mqtt://127.0.0.1:1", rig.store, Keys(rig.root / "keys")), [stray], people=rig.people)


def test_the_issues_routes_have_the_roles_it_asks_for(rig):
    by_route = {}
    for r in routes(rig.demo):
        for m in r.methods or ():
            by_route[(m, r.path)] = policy_of(r)
    for key, roles in PINNED.items():
        policy = by_route[key]
        assert set(policy.roles) == roles, (key, policy)
        assert isinstance(policy, Public) == (not roles), key
    # Cancelling: whoever may issue some command, then the command's own permission.
    assert set(by_route[("POST", "/api/commands/{command_id}/cancel")].roles) == {"pharmacist", "technician"}
    # The demo's simulated world is for people at kiosks, not systems or viewers.
    assert set(by_route[("POST", "/api/sim/{kiosk_id}/door")].roles) == set(PERMISSIONS["simulate"])


def test_the_permission_matrix_every_route_no_credentials_each_role_and_another_site(rig):
    checked = 0
    failures = []
    for app, base, route in _cases(rig):
        if not route.methods:        # a mount of static files
            status, _ = http("GET", base + route.path + "/" + ("style.css" if route.path == "/static" else
                                                               "swagger-ui.css"))
            assert status == 200, route.path
            continue
        policy = policy_of(route)
        for method in sorted(route.methods - {"HEAD"}):
            key = (method, route.path)
            allowed = set(policy.roles)
            if key == ("POST", "/api/commands/{command_id}/cancel"):
                allowed = {"pharmacist"}               # the command is a pickup
            # No credentials.
            path, body, good = sample(rig, method, route.path, None)
            status, r = http(method, base + path, body)
            if key in SCREEN_ONLY:
                assert isinstance(policy, Public), key
                for role in (None, *ROLES):
                    status, r = http(method, base + path, body, token=rig.tokens[role] if role else None)
                    if status not in (401, 403):
                        failures.append((key, role or "screen", status, r))
                    checked += 1
                continue
            if isinstance(policy, Public):
                if status in (401, 403) or (good and not 200 <= status < 300):
                    failures.append((key, "public", status, r))
                checked += 1
                continue
            if status != 401:
                failures.append((key, None, status, r))
            # Each role.
            for role in ROLES:
                path, body, good = sample(rig, method, route.path, role)
                status, r = http(method, base + path, body, token=rig.tokens[role])
                if role in allowed:
                    if status in (401, 403) or (good and not 200 <= status < 300):
                        failures.append((key, role, status, r))
                elif status != 403:
                    failures.append((key, role, status, r))
                checked += 1
            # A user of another site, of a role the route allows.
            if "{kiosk_id}" in route.path or "{command_id}" in route.path or "{order_id}" in route.path \
                    or "{consult_id}" in route.path:
                for role in sorted(allowed & set(rig.other)):
                    path, body, _ = sample(rig, method, route.path, role)
                    status, r = http(method, base + path, body, token=rig.other[role])
                    if status != 403:
                        failures.append((key, f"other-site {role}", status, r))
                    checked += 1
    assert not failures, "\n".join(map(repr, failures))
    assert checked > 150, checked


def test_a_site_scoped_user_sees_only_its_sites_kiosks(rig):
    everyone = [k["id"] for k in rig.get("/api/kiosks")]
    assert sorted(everyone) == sorted([HOME, AWAY])     # (the most urgent first)
    status, mine = rig.call("GET", "/api/kiosks", token=rig.other["viewer"])
    assert status == 200 and [k["id"] for k in mine] == [AWAY]
    status, _ = rig.call("GET", f"/api/kiosks/{AWAY}/events", token=rig.other["viewer"])
    assert status == 200
    # Not even an unknown kiosk id gets past the site check.
    status, _ = rig.call("GET", "/api/kiosks/no-such-kiosk", token=rig.other["viewer"])
    assert status == 403
    status, _ = rig.call("GET", "/api/kiosks/no-such-kiosk", role="viewer")
    assert status == 404
    # The access log covers every site: not for a user of one.
    status, _ = rig.call("GET", "/api/access-log", token=rig.other["pharmacist"])
    assert status == 403


def _login(rig: Rig, role: str):
    """(cookie header, its attributes, the session JSON)."""
    import urllib.request

    req = urllib.request.Request(rig.bridge.url + "/api/session",
                                 json.dumps({"name": rig.names[role], "password": PASSWORD}).encode(),
                                 {"content-type": "application/json"}, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=10) as r:
        raw = r.headers["set-cookie"]
        session = json.loads(r.read())
    c = SimpleCookie()
    c.load(raw)
    morsel = c["kiosk_session"]
    return f"kiosk_session={morsel.value}", raw, session


def test_a_session_cookie_needs_its_csrf_token_for_every_change_and_ends(rig):
    cookie, raw, session = _login(rig, "technician")
    attrs = {a.strip().split("=")[0].lower() for a in raw.split(";")[1:]}
    assert {"httponly", "samesite", "max-age", "path"} <= attrs and "samesite=strict" in raw.lower(), raw
    assert session["name"] == rig.names["technician"] and session["via"] == "session"
    assert "service" in session["may"] and "pickup" not in session["may"]
    csrf = session["csrf_token"]
    status, me = rig.call("GET", "/api/session", headers={"cookie": cookie})
    assert status == 200 and me["csrf_token"] == csrf
    path = f"/api/kiosks/{HOME}/service"
    before = len(rig.store.commands(HOME, 1000))
    # With a body, without one (DELETE), a wrong token: all refused, nothing sent.
    for method, body, headers in (("POST", {"session": "s"}, {}), ("DELETE", None, {}),
                                  ("POST", {"session": "s"}, {"x-csrf-token": "0" * 64}),
                                  ("DELETE", None, {"x-csrf-token": ""})):
        status, r = rig.call(method, path, body, headers={"cookie": cookie, **headers})
        assert status == 403 and "CSRF" in r["detail"], (method, status, r)
    assert len(rig.store.commands(HOME, 1000)) == before
    status, r = rig.call("POST", path, {"session": "s-csrf"}, headers={"cookie": cookie, "x-csrf-token": csrf})
    assert status == 202, r
    assert rig.get(f"/api/commands/{r['command_id']}")["actor"] == rig.names["technician"]
    status, r = rig.call("DELETE", path, None, headers={"cookie": cookie, "x-csrf-token": csrf})
    assert status == 202, r
    # Logging out ends the session for good.
    status, _ = rig.call("DELETE", "/api/session", headers={"cookie": cookie, "x-csrf-token": csrf})
    assert status == 204
    assert rig.call("GET", "/api/session", headers={"cookie": cookie})[0] == 401
    # A session past its end is refused.
    cookie, _, _ = _login(rig, "viewer")
    assert rig.call("GET", "/api/kiosks", headers={"cookie": cookie})[0] == 200
    with rig.store.lock:
        rig.store._exec("UPDATE sessions SET expires = ?", (time.time() - 1,))
    assert rig.call("GET", "/api/kiosks", headers={"cookie": cookie})[0] == 401


def test_logins_are_throttled_after_failures_and_a_revoked_user_is_out(rig):
    name = _fresh("m-throttle")
    rig.people.add_user(name, "viewer", password=PASSWORD)
    # Unknown names are told the same.
    assert rig.call("POST", "/api/session", {"name": "nobody-here", "password": "x"})[1]["detail"] == \
        "wrong name or password"
    for _ in range(5):
        status, r = rig.call("POST", "/api/session", {"name": name, "password": "not the password"})
        assert status == 401 and r["detail"] == "wrong name or password", r
    # At once (the wait is 1 s from the fifth failure; nothing slow comes between).
    status, r = rig.call("POST", "/api/session", {"name": name, "password": PASSWORD})
    assert status == 429 and "try again" in r["detail"], r
    time.sleep(1.2)   # 2**0 s after the fifth failure
    assert rig.call("POST", "/api/session", {"name": name, "password": PASSWORD})[0] == 200
    # Revoked by an admin: its token and its password stop working at once.
    token = rig.people.issue_token(name)[1]
    assert rig.call("GET", "/api/kiosks", token=token)[0] == 200
    status, r = rig.call("POST", f"/api/users/{name}/revoke", {}, role="admin")
    assert status == 200 and r["revoked"], r
    assert rig.call("GET", "/api/kiosks", token=token)[0] == 401
    assert rig.call("POST", "/api/session", {"name": name, "password": PASSWORD})[0] == 401
    assert rig.call("POST", f"/api/users/{rig.names['admin']}/revoke", {}, role="admin")[0] == 409


def test_only_the_allowed_hosts_are_answered_and_no_other_origin_changes_anything(rig):
    port = rig.bridge.port
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "[::2]"):
        for method, path, body in (("GET", "/", None), ("GET", "/api/kiosks", None), ("GET", "/healthz", None),
                                   ("POST", f"/api/kiosks/{HOME}/pickups", {"order_id": "rx-h", "bin": 1})):
            status, r = rig.call(method, path, body, role="pharmacist", headers={"host": host})
            assert status == 400 and "unknown host" in str(r), (host, path, status, r)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST"):
        assert rig.call("GET", "/api/kiosks", role="viewer", headers={"host": host})[0] == 200, host
    before = len(rig.store.commands(HOME, 1000))
    for headers in ({"origin": "http://evil.example"}, {"origin": f"http://127.0.0.1:{port + 1}"},
                    {"origin": "null"}, {"sec-fetch-site": "cross-site"}, {"sec-fetch-site": "same-site"}):
        status, r = rig.call("POST", f"/api/kiosks/{HOME}/pickups", {"order_id": "rx-o", "bin": 1}, role="pharmacist",
                             headers=headers)
        assert status == 403, (headers, status, r)
    assert len(rig.store.commands(HOME, 1000)) == before
    status, _ = rig.call("POST", f"/api/kiosks/{HOME}/pickups", {"order_id": "rx-o", "bin": 1}, role="pharmacist",
                         headers={"origin": f"http://127.0.0.1:{port}", "sec-fetch-site": "same-origin"})
    assert status == 202
    # serve on every address wants the names clients use.
    r = subprocess.run([str(VENV_BIN / "kiosk-bridge"), "serve", "--broker", "mqtt://127.0.0.1:1", "--keys",
                        str(rig.root / "keys"), "--db", rig.db, "--http", "0.0.0.0:0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--allowed-host" in r.stderr, r


def test_every_answer_forbids_framing_and_foreign_scripts_and_the_docs_are_served_locally(rig):
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for path in ("/", "/login", "/healthz", "/docs", "/openapi.json", "/static/js/main.js"):
        with opener.open(rig.bridge.url + path, timeout=10) as r:
            csp = r.headers["content-security-policy"]
            body = r.read().decode()
        assert "frame-ancestors 'none'" in csp and "script-src 'self';" in csp, (path, csp)
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
        if path == "/docs":
            scripts = re.findall(r'(?:src|href)="([^"]+)"', body)
            assert scripts and all(s.startswith("/") or s.startswith("data:") for s in scripts), scripts
            assert "<script>" not in body    # no inline script: it would need 'unsafe-inline'
    status, js = http("GET", rig.bridge.url + "/docs/assets/swagger-ui-bundle.js")
    assert status == 200 and "SwaggerUIBundle" in js
    status, r = http("GET", rig.bridge.url + "/api/kiosks", token=rig.tokens["viewer"])
    assert status == 200


def test_the_schema_documents_the_security_schemes_and_each_routes_roles(rig):
    schema = rig.get("/openapi.json")
    schemes = schema["components"]["securitySchemes"]
    assert schemes["token"]["scheme"] == "bearer" and schemes["session"]["in"] == "cookie"
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            assert "x-roles" in op, (method, path)
            if op["x-roles"]:
                assert op["security"] == [{"token": []}, {"session": []}], (method, path)
                assert "Roles: " + ", ".join(op["x-roles"]) in op["description"], (method, path)
                assert {"401", "403"} <= set(op["responses"]), (method, path)
            else:
                assert op["security"] == [], (method, path)


def test_every_state_changing_request_is_in_the_access_log_with_who_what_when_and_where(rig):
    t0 = time.time()
    rig.call("POST", f"/api/kiosks/{HOME}/pickups", {"order_id": "rx-log", "bin": 1}, role="pharmacist")
    rig.call("POST", f"/api/kiosks/{HOME}/pickups", {"order_id": "rx-log", "bin": 1}, role="viewer")
    rig.call("POST", f"/api/kiosks/{HOME}/pickups", {"order_id": "rx-log", "bin": 1})
    rig.call("GET", "/api/kiosks", role="viewer")           # a read: not logged
    status, page = rig.call("GET", "/api/access-log?limit=3", role="pharmacist")
    assert status == 200
    got = [(e["actor"], e["role"], e["method"], e["path"], e["status"], e["ip"]) for e in page["entries"]]
    path = f"/api/kiosks/{HOME}/pickups"
    assert got == [(None, None, "POST", path, 401, "127.0.0.1"),
                   (rig.names["viewer"], "viewer", "POST", path, 403, "127.0.0.1"),
                   (rig.names["pharmacist"], "pharmacist", "POST", path, 202, "127.0.0.1")], got
    assert all(e["at"] >= t0 - 1 for e in page["entries"]) and page["next"]
    older = rig.call("GET", f"/api/access-log?limit=3&before={page['next']['before']}", role="admin")[1]
    assert older["entries"] and older["entries"][0]["id"] < page["entries"][-1]["id"]


def test_the_command_line_manages_users_sites_and_kiosks(rig, tmp_path):
    def cli(*args, ok=True):
        r = subprocess.run([str(VENV_BIN / "kiosk-bridge"), *args, "--db", rig.db], capture_output=True, text=True,
                           timeout=60)
        assert (r.returncode == 0) == ok, r
        return r

    cli("sites", "add", "site-cli")
    cli("kiosks", "assign", AWAY, "--site", "site-cli")
    pw = tmp_path / "pw"
    pw.write_text("a password from a file\n")
    pw.chmod(0o600)
    out = cli("users", "add", "cli.pharm", "--role", "pharmacist", "--sites", "site-cli", "--password-file",
              str(pw)).stdout
    assert "a password from a file" not in out
    made = cli("users", "add", "cli.viewer", "--role", "viewer").stdout
    password = re.search(r"password \(shown once\): (\S+)", made).group(1)
    assert rig.call("POST", "/api/session", {"name": "cli.viewer", "password": password})[0] == 200
    assert rig.call("POST", "/api/session", {"name": "cli.pharm", "password": "a password from a file"})[0] == 200
    token = cli("users", "token", "cli.pharm").stdout.splitlines()[-1]
    assert re.fullmatch(r"kbt_[0-9a-f]{8}_\S{40,}", token), token
    status, kiosks = rig.call("GET", "/api/kiosks", token=token)
    assert status == 200 and [k["id"] for k in kiosks] == [AWAY]
    assert rig.call("POST", f"/api/kiosks/{HOME}/pickups", {"order_id": "rx-c", "bin": 1}, token=token)[0] == 403
    listing = cli("users", "list").stdout
    assert re.search(r"cli\.pharm\s+pharmacist\s+site-cli", listing) and token not in listing
    tid = token.split("_")[1]
    cli("users", "revoke", "cli.pharm", "--token", tid)
    assert rig.call("GET", "/api/kiosks", token=token)[0] == 401
    assert rig.call("POST", "/api/session", {"name": "cli.pharm", "password": "a password from a file"})[0] == 200
    cli("users", "revoke", "cli.pharm")
    assert rig.call("POST", "/api/session", {"name": "cli.pharm", "password": "a password from a file"})[0] == 401
    # Mistakes are told, and change nothing.
    assert "already exists" in cli("users", "add", "cli.viewer", "--role", "viewer", ok=False).stderr
    assert "unknown site" in cli("users", "add", "cli.x", "--role", "viewer", "--sites", "nowhere", ok=False).stderr
    assert "admin" in cli("users", "add", "cli.adm", "--role", "admin", "--sites", "site-cli", ok=False).stderr
    assert "name" in cli("users", "add", "Bad Name", "--role", "viewer", ok=False).stderr
    cli("kiosks", "assign", AWAY, "--site", "site-b")


def test_served_over_https_the_session_cookie_is_secure_and_hsts_is_sent(rig, tmp_path):
    import ssl
    import urllib.request

    tls = Path(__file__).parent / "tls"
    port = free_port()
    log = open(tmp_path / "tls.log", "wb")
    p = subprocess.Popen([str(VENV_BIN / "kiosk-bridge"), "serve", "--broker", f"mqtt://127.0.0.1:{rig.broker.port}",
                          "--keys", str(rig.root / "keys"), "--db", rig.db, "--http", f"127.0.0.1:{port}",
                          "--tls-cert", str(tls / "server.pem"), "--tls-key", str(tls / "server.key")],
                         stdout=log, stderr=log)
    try:
        ctx = ssl.create_default_context(cafile=str(tls / "ca.pem"))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
        req = urllib.request.Request(f"https://localhost:{port}/api/session",
                                     json.dumps({"name": rig.names["viewer"], "password": PASSWORD}).encode(),
                                     {"content-type": "application/json"}, method="POST")

        def login():
            try:
                with opener.open(req, timeout=5) as r:
                    return r.headers
            except OSError:
                return None
        headers = wait_until(login, 30, "the bridge on HTTPS")
        assert "; secure" in headers["set-cookie"].lower() and "httponly" in headers["set-cookie"].lower()
        assert headers["strict-transport-security"].startswith("max-age=")
    finally:
        p.terminate()
        p.wait(15)
        log.close()
