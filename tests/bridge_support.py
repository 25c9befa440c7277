"""Helpers for the bridge tests: `kiosk-bridge serve` as a real process, its
HTTP API, and what a kiosk's flash journal holds (to check the store
against the source of truth)."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import quote
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from link_support import free_port, port_open  # noqa: E402

from kiosk_host.bridge.people import ROLES, People  # noqa: E402
from kiosk_host.bridge.store import Store  # noqa: E402

VENV_BIN = Path(sys.executable).parent
TERMINAL = ("succeeded", "failed", "timed_out", "rejected", "cancelled")
SITE_POLICIES = {"door_open_timeout_s": 5, "telemetry_period_s": 2, "sample_period_s": 1}
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # loopback: never through a proxy

# The users the tests act as: one per role, every site.
USERS = {role: f"t-{role.replace('_', '-')}" for role in ROLES}
_TOKENS: dict[str, dict[str, str]] = {}


def provision(db: str, users: dict[str, str] = USERS) -> dict[str, str]:
    """A user per role in the store at db, each with a fresh API token:
    {role: token}. Tokens are kept per store, so bridges sharing one get
    the same."""
    if db not in _TOKENS:
        people = People(Store(db))
        try:
            for role, name in users.items():
                if people.user(name) is None:
                    people.add_user(name, role)
            _TOKENS[db] = {role: people.issue_token(name)[1] for role, name in users.items()}
        finally:
            people.store.close()
    return _TOKENS[db]


def http(method: str, url: str, body: Any = None, raw: bytes | None = None, token: str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One HTTP call: (status, the JSON or text answered). body is sent as
    JSON, or raw as given; token as `Authorization: Bearer`."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    h = {"content-type": "application/json"} if data else {}
    if token:
        h["authorization"] = f"Bearer {token}"
    h.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with _HTTP.open(req, timeout=10) as r:
            raw, status, ctype = r.read(), r.status, r.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        raw, status, ctype = e.read(), e.code, e.headers.get("content-type", "")
    return status, (json.loads(raw) if "json" in ctype else raw.decode())


class Roles:
    """Which role a test acts as for a route it does not name one for: one
    the route's OpenAPI entry allows (x-roles), the least powerful first."""

    PREFERENCE = ("viewer", "pharmacy_system", "technician", "pharmacist", "admin")

    def __init__(self, base: str):
        status, schema = http("GET", base + "/openapi.json")
        assert status == 200, schema
        self.routes = []
        for path, ops in schema["paths"].items():
            pattern = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")
            for method, op in ops.items():
                allowed = op.get("x-roles", [])
                self.routes.append((method.upper(), pattern, next((r for r in self.PREFERENCE if r in allowed), None)))

    def role(self, method: str, path: str) -> str | None:
        path = path.split("?", 1)[0]
        for m, pattern, role in self.routes:
            if m == method and pattern.match(path):
                return role
        return None


class BridgeProc:
    """One `kiosk-bridge serve` process; stop(kill=True) is a crash."""

    def __init__(self, root: Path, broker_url: str, keys: Path, db: str | None = None, share: str | None = None,
                 name: str = "bridge", ttl: int = 60, extra: list[str] | None = None):
        self.root = Path(root)
        self.extra = list(extra or [])
        self.root.mkdir(parents=True, exist_ok=True)
        self.broker_url, self.keys, self.share, self.name, self.ttl = broker_url, keys, share, name, ttl
        self.db = db or f"sqlite:///{self.root / 'bridge.sqlite3'}"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.tokens = provision(self.db)
        self._roles: Roles | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, verbose: bool = True, connected: bool = True) -> "BridgeProc":
        """Start it; wait for its HTTP port, and for its broker session if `connected`."""
        args = [str(VENV_BIN / "kiosk-bridge"), "serve", "--broker", self.broker_url, "--db", self.db,
                "--http", f"127.0.0.1:{self.port}", "--keys", str(self.keys), "--command-ttl", str(self.ttl)]
        if verbose:
            args.append("-v")
        if self.share:
            # The group as production keeps it: a secret in a private file,
            # the same for every bridge given the same name.
            group = self.root / "share-group"
            group.write_text(hashlib.sha256(self.share.encode()).hexdigest()[:32] + "\n")
            group.chmod(0o600)
            args += ["--share-file", str(group)]
        args += self.extra
        self.starts += 1
        log = open(self.root / f"{self.name}.log", "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log)
        # On a loaded machine its imports alone can take tens of seconds:
        # wait as long as it is alive, up to a minute.
        proc = self.proc
        wait_until(lambda: proc.poll() is not None or port_open(self.port), 60, f"{self.name} listening")
        assert proc.poll() is None, f"{self.name} exited ({proc.returncode}): {self.log()}"
        if connected:
            wait_until(lambda: self.get("/healthz", ok_only=False)[0] == 200, 20, f"{self.name} connected to the broker")
        return self

    def stop(self, kill: bool = False) -> None:
        p, self.proc = self.proc, None
        if p and p.poll() is None:
            p.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            p.wait(15)

    def log(self) -> str:
        return (self.root / f"{self.name}.log").read_text(errors="replace")[-4000:]

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                who: str | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """A call as the user of role `who` (default: a role the route allows)."""
        if who is None:
            if self._roles is None:
                self._roles = Roles(self.url)
            who = self._roles.role(method, path)
        return http(method, self.url + path, body, raw, token=self.tokens.get(who) if who else None,
                    headers=headers)

    def get(self, path: str, ok_only: bool = True, who: str | None = None):
        status, body = self.request("GET", path, who=who)
        if ok_only:
            assert status == 200, (path, status, body)
            return body
        return status, body

    def post(self, path: str, body: Any = None, who: str | None = None) -> tuple[int, Any]:
        return self.request("POST", path, {} if body is None else body, who=who)

    def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        """A request that must answer `status`; its JSON."""
        got, r = self.request(method, path, body)
        assert got == status, (method, path, got, r)
        return r

    def command(self, cid: str) -> dict[str, Any]:
        return self.get(f"/api/commands/{cid}")

    def wait_command(self, cid: str, states, timeout: float = 30) -> dict[str, Any]:
        states = (states,) if isinstance(states, str) else tuple(states)
        return wait_until(lambda: (lambda c: c if c["state"] in states else None)(self.command(cid)), timeout,
                          f"command {cid} to reach {states}")

    def kiosk(self, kid: str) -> dict[str, Any]:
        return self.get(f"/api/kiosks/{kid}")

    def events(self, kid: str, kind: str | None = None) -> list[dict[str, Any]]:
        out, after = [], 0
        while True:
            q = f"/api/kiosks/{kid}/events?after={after}&limit=1000" + (f"&kind={kind}" if kind else "")
            page = self.get(q)
            out += page["events"]
            if not page["next"]:
                return out
            after = page["next"]["after"]

    def metric(self, name: str, **labels: str) -> float:
        text = self.get("/metrics")
        want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
        for line in text.splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
        return 0.0


def wait_until(pred, timeout: float = 10, what: str = "condition", every: float = 0.1):
    end = time.monotonic() + timeout
    while True:
        r = pred()
        if r:
            return r
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def new_order(order: str, kiosk: str, counselling: bool = False, days: int = 1) -> dict[str, Any]:
    """A POST /api/orders body, as the pharmacy system sends it."""
    import datetime as dt

    return {"order_id": order, "kiosk": kiosk, "patient_ref": f"pt-{order}", "counselling_required": counselling,
            "items": [{"ndc": "0093-4155-73", "name": "Amoxicillin 500 mg capsule", "qty": 21}],
            "pickup_by": (dt.date.today() + dt.timedelta(days=days)).isoformat()}


class WebhookReceiver:
    """The pharmacy system's end of the webhooks, on loopback: keeps each
    delivery with whether its signature verified; answers 503 while
    `down`. `args(root)` are the `kiosk-bridge serve` options that point a
    bridge at it (the secret in a file under root)."""

    SECRET = "webhook-secret-for-the-tests-0123"

    def __init__(self):
        from kiosk_host.bridge import webhooks

        self.got: list[tuple[dict[str, Any], bool]] = []
        self.down = False
        self.refused = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                if outer.down:
                    outer.refused += 1
                    self.send_response(503)
                    self.end_headers()
                    return
                ok = webhooks.verify(outer.SECRET.encode(), self.headers["x-kiosk-timestamp"], body,
                                     self.headers["x-kiosk-signature"])
                d = json.loads(body)
                outer.got.append((d, ok and self.headers["x-kiosk-delivery"] == d["id"]))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def args(self, root: Path) -> list[str]:
        secret = Path(root) / "webhook.secret"
        secret.write_text(self.SECRET + "\n")
        secret.chmod(0o600)
        return ["--webhook", f"http://127.0.0.1:{self.port}/hooks", "--webhook-secret", str(secret)]

    def changes(self, order: str) -> list[str]:
        """The order's changes as delivered (duplicates of a retried delivery kept once)."""
        seen, out = set(), []
        for d, _ in self.got:
            if d["order_id"] == order and d["id"] not in seen:
                seen.add(d["id"])
                out.append(d["type"].split(".", 1)[1])
        return out

    def close(self) -> None:
        self.server.shutdown()


def scan_label(get_command, scan, cid: str, label: str, timeout: float = 30.0) -> bool:
    """A technician at the kiosk's scanner: once restock `cid` asks for its
    package's label (its step is scanning_label), scan `label`. False when
    the command ended first or never asked within timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        c = get_command(cid)
        if c["state"] not in ("queued", "in_progress"):
            return False
        if c["info"].get("step") == "scanning_label":
            scan(label)
            return True
        time.sleep(0.1)
    return False


def journal_records(flash: Path) -> dict[int, dict[str, Any]]:
    """Every intact record on a kiosk's flash journal, by seq."""
    out = {}
    for seg in sorted((Path(flash) / "journal").glob("*.log")):
        for line in seg.read_bytes().splitlines():
            if line.startswith(b"#") or b"\t" not in line:
                continue
            body, crc = line.rsplit(b"\t", 1)
            if crc.decode(errors="replace") != "%08x" % zlib.crc32(body):
                continue
            rec = json.loads(body)
            out[rec["s"]] = rec
    return out


def signed_fields(rec: dict[str, Any]) -> dict[str, Any]:
    """A stored event without what the wire adds (v, kiosk, sig, replayed, j)."""
    return {k: v for k, v in rec.items() if k not in ("v", "kiosk", "sig", "replayed", "j")}


class Site:
    """A pharmacy's set-up on loopback: mosquitto, emulated kiosks (the real
    firmware), `kiosk-bridge serve`, driven as the back end would."""

    def __init__(self, root: Path, count: int = 3, policies: dict[str, Any] | None = None):
        from kiosk_host.emulator.fleet import Fleet
        from link_support import Mosquitto
        self.root = root
        self.broker = Mosquitto(root / "mq").start()
        self.url = f"mqtt://127.0.0.1:{self.broker.port}"
        self.fleet = Fleet(self.url, count, root / "kiosks", root / "keys", policies=policies or SITE_POLICIES,
                           keepalive_s=2).start()
        self.bridge = BridgeProc(root / "bridge", self.url, root / "keys").start()
        for kid in self.fleet.ids:
            wait_until(lambda: self.bridge.kiosk(kid)["online"], 30, f"{kid} online at the bridge")

    def key(self, kid: str) -> bytes:
        return bytes.fromhex((self.root / "keys" / f"{kid}.key").read_text().strip())

    def hold_door(self, kid: str, door: str, seconds: float = 1.6) -> None:
        self.fleet.door(kid, door, "open")
        time.sleep(seconds)              # past the inputs' debounce
        self.fleet.door(kid, door, "close")

    def run(self, kid: str, path: str, body=None, expect: str | tuple = "succeeded", door: str | None = None,
            bridge: BridgeProc | None = None, label: str | None = None) -> dict:
        b = bridge or self.bridge
        status, r = b.post(f"/api/kiosks/{kid}{path}", body)
        assert status == 202, (status, r)
        if label:
            assert scan_label(b.command, lambda text: self.fleet.scan(kid, text), r["command_id"], label)
        if door:
            wait_until(lambda: self.fleet.world(kid)["world"]["locks"][door]["energized"], 20, f"{door} unlocked")
            self.hold_door(kid, door)
        c = b.wait_command(r["command_id"], TERMINAL, 40)
        assert c["state"] in ((expect,) if isinstance(expect, str) else expect), c
        return c

    def restock(self, kid: str, order: str, bin_no: int) -> None:
        """The order comes from the pharmacy system, is stocked in bin_no and
        released by a pharmacist (so a pickup may hand it over)."""
        self.bridge.ok("POST", "/api/orders", new_order(order, kid), 201)
        self.run(kid, "/service", {"session": "tech-1"})
        self.run(kid, "/restocks", {"order_id": order, "bin": bin_no}, door="service", label=order)
        status, r = self.bridge.request("DELETE", f"/api/kiosks/{kid}/service")
        assert status == 202, r
        self.bridge.wait_command(r["command_id"], "succeeded")
        # A reply can overtake the journal record it follows: wait for the stock.
        wait_until(lambda: self.bridge.kiosk(kid)["status"]["stock"].get(str(bin_no)) == order, 20,
                   f"{order} in bin {bin_no} at the bridge")
        self.bridge.ok("POST", f"/api/orders/{quote(order, safe='')}/release", {"counselling": "not_required"})

    def settled(self, kid: str, timeout: float = 20) -> dict[str, Any]:
        """Wait until the kiosk's running boot has journaled both doors shut
        (its inputs settle a debounce period after each boot: a door opened
        before that is not yet a forced door)."""
        def done():
            k = self.bridge.kiosk(kid)
            shut = {e["body"].get("door") for e in self.bridge.events(kid, "door")
                    if e["boot"] == k["boot"] and e["body"].get("ev") == "door_closed"}
            return k if k["online"] and shut >= {"pickup", "service"} else None
        return wait_until(done, timeout, f"{kid}'s doors settled after boot")

    def stored_matches_flash(self, kid: str, bridge: BridgeProc | None = None, gaps_ok: bool = False) -> int:
        """Wait until the store holds the kiosk's whole journal, then compare:
        same seqs (contiguous from 1), same fields, nothing extra. With
        gaps_ok, seqs the kiosk reported lost (its custody gaps) may be
        missing, and only those."""
        b = bridge or self.bridge
        flash = self.fleet.kiosk(kid).flash
        wait_until(lambda: b.kiosk(kid)["events_stored_upto"] >= max(journal_records(flash)), 30,
                   f"{kid}'s journal in the store")
        recs = journal_records(flash)
        k = b.kiosk(kid)
        gaps = [(g["from"], g["to"]) for g in k["custody"]["gaps"] if g["journal"] == k["journal"]]
        assert gaps_ok or not gaps, gaps
        stored = {e["seq"]: e["body"] for e in b.events(kid)}
        missing = [s for s in range(1, max(stored) + 1)
                   if s not in stored and not any(a <= s <= z for a, z in gaps)]
        assert not missing, f"the store has a gap at {missing[:10]}"
        assert max(stored) == max(recs)
        for s, rec in recs.items():
            assert signed_fields(stored[s]) == rec, (s, stored[s], rec)
        return len(stored)

    def close(self) -> None:
        self.bridge.stop()
        self.fleet.stop()
        self.broker.stop()
