"""The patient's pickup end to end: emulated kiosks (the real firmware) on a
real mosquitto, `kiosk-bridge serve` as a real process posting webhooks to
a pharmacy system on loopback, driven through the HTTP API as the pharmacy
system, the pharmacist and the technician would, and through the kiosk's
scanner, doors and screen as the patient would.

Checked against each kiosk's flash journal: the same chain is there, and a
scanned code's text is not."""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.request
from pathlib import Path

import pytest

from bridge_support import BridgeProc, WebhookReceiver, journal_records, new_order, scan_label, wait_until
from kiosk_host.emulator.fleet import Fleet
from link_support import Mosquitto

POLICIES = {"door_open_timeout_s": 5, "telemetry_period_s": 30, "sample_period_s": 5, "scan_answer_s": 5,
            "scan_lockout_after": 3, "scan_lockout_s": 10, "label_scan_timeout_s": 15}
TERMINAL = ("succeeded", "failed", "timed_out", "rejected", "cancelled")
YESTERDAY = (dt.date.today() - dt.timedelta(days=1)).isoformat()
A, B = "kiosk-001", "kiosk-002"


class Site:
    def __init__(self, root: Path):
        self.root = root
        self.broker = Mosquitto(root / "mq").start()
        url = f"mqtt://127.0.0.1:{self.broker.port}"
        self.fleet = Fleet(url, 2, root / "kiosks", root / "keys", policies=POLICIES, keepalive_s=2).start()
        self.pharmacy = WebhookReceiver()
        self.bridge = BridgeProc(root / "bridge", url, root / "keys", extra=self.pharmacy.args(root)).start()
        for kid in self.fleet.ids:
            wait_until(lambda: self.bridge.kiosk(kid)["online"], 30, f"{kid} online at the bridge")
            wait_until(lambda: all(d.get("door") == "closed" for d in self.bridge.kiosk(kid)["doors"].values())
                       and len(self.bridge.kiosk(kid)["doors"]) == 2, 30, f"{kid}'s doors settled")
        self.screens = {kid: self.pair_screen(kid) for kid in self.fleet.ids}

    # -- the people ----------------------------------------------------------------------
    def order(self, oid: str, kiosk: str, counselling: bool = False) -> dict:
        return self.bridge.ok("POST", "/api/orders", new_order(oid, kiosk, counselling), 201)

    def code(self, oid: str, **body) -> str:
        return self.bridge.ok("POST", f"/api/orders/{oid}/pickup-code", body or None, 201)["code"]

    def service(self, kid: str, on: bool = True) -> None:
        status, r = self.bridge.request("POST" if on else "DELETE", f"/api/kiosks/{kid}/service",
                                        {"session": "tech-ann"} if on else None)
        assert status == 202, r
        self.bridge.wait_command(r["command_id"], "succeeded")
        wait_until(lambda: self.bridge.kiosk(kid)["service"] is on, 10, f"service {on} at the bridge")

    def restock(self, kid: str, oid: str, label: str | None = None) -> dict:
        """The technician stocks order oid: scans `label` (the order's own
        by default) when asked, puts the package through the service door."""
        r = self.bridge.ok("POST", f"/api/kiosks/{kid}/restocks", {"order_id": oid}, 202)
        assert scan_label(self.bridge.command, lambda t: self.fleet.scan(kid, t), r["command_id"], label or oid)
        if label is None or label == oid:
            self.door(kid, "service")
        c = self.bridge.wait_command(r["command_id"], TERMINAL, 40)
        return {**c, "bin": r["bin"]}

    def door(self, kid: str, door: str) -> None:
        wait_until(lambda: self.fleet.world(kid)["world"]["locks"][door]["energized"], 20, f"{door} unlocked")
        self.fleet.door(kid, door, "open")
        time.sleep(1.6)
        self.fleet.door(kid, door, "close")

    def pair_screen(self, kid: str) -> dict[str, str]:
        link = self.bridge.ok("POST", f"/api/kiosks/{kid}/screen-pairing", None, 201)["pair_url"]
        secret = link.split("#pair=")[1]
        req = urllib.request.Request(self.bridge.url + f"/api/screen/{kid}/pair", method="POST",
                                     data=json.dumps({"pairing": secret}).encode(),
                                     headers={"content-type": "application/json"})
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as r:
            cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict"), cookie
        status, _ = self.bridge.post(f"/api/screen/{kid}/pair", {"pairing": secret})
        assert status == 403, "a pairing link is good once"
        return {"cookie": cookie.split(";")[0]}

    def _screen(self, kid: str) -> dict:
        status, r = self.bridge.request("GET", f"/api/screen/{kid}", headers=self.screens[kid])
        assert status == 200, r
        return r

    def wait_screen(self, kid: str, state: str, timeout: float = 20) -> dict:
        return wait_until(lambda: (lambda s: s if s["state"] == state else None)(self._screen(kid)), timeout,
                          f"{kid}'s screen to say {state}")

    def scan(self, kid: str, text: str) -> dict:
        """The patient scans; returns the kiosk's scan record once stored."""
        before = {e["seq"] for e in self.bridge.events(kid, "scan")}
        self.fleet.scan(kid, text)
        return wait_until(lambda: next((e["body"] for e in self.bridge.events(kid, "scan")
                                        if e["seq"] not in before and e["body"]["ev"] == "code"), None), 15,
                          "the scan stored")

    def answered(self, kid: str, scan: dict) -> dict:
        """The kiosk's record of the bridge's answer to a scan."""
        return wait_until(lambda: next((e["body"] for e in self.bridge.events(kid, "scan")
                                        if e["body"].get("scan") == scan["s"]), None), 15, "the answer journaled")

    def close(self) -> None:
        self.bridge.stop()
        self.fleet.stop()
        self.broker.stop()
        self.pharmacy.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    s = Site(tmp_path_factory.mktemp("pickup"))
    yield s
    s.close()


def test_an_order_from_the_pharmacy_system_to_the_patients_hands(site):
    b = site.bridge
    o = site.order("rx-1001", A, counselling=True)
    assert o["order_id"] == "rx-1001" and o["state"] == "received"
    code = site.code("rx-1001")
    # Stocking, with the label check: the wrong package is refused and the bin stays empty.
    site.service(A)
    bad = site.restock(A, "rx-1001", label="rx-9999")
    assert (bad["state"], bad["reason"]) == ("rejected", "label_mismatch"), bad
    assert b.get("/api/orders/rx-1001")["state"] == "received"
    assert b.kiosk(A)["status"]["stock"] == {}
    assert site.fleet.world(A)["world"]["locks"]["service"]["energize_count"] == 0
    ok = site.restock(A, "rx-1001")
    assert ok["state"] == "succeeded" and ok["bin"] == bad["bin"], "the same bin, free again"
    wait_until(lambda: b.get("/api/orders/rx-1001")["state"] == "stocked", 15, "stocked")
    site.service(A, False)
    o = b.get("/api/orders/rx-1001")
    assert o["stocked"]["label_check"] == "passed" and o["bin"] == ok["bin"]
    # The patient scans before the pharmacist has counselled: nothing opens.
    assert site.wait_screen(A, "ready")
    s1 = site.scan(A, code)
    assert "text" not in s1
    assert site.answered(A, s1)["why"] == "counselling"
    assert site.wait_screen(A, "pharmacist_will_call")
    (c,) = [c for c in b.get("/api/consults") if c["kiosk"] == A]
    assert c["reason"] == "counselling" and c["order"]["order_id"] == "rx-1001"
    assert site.fleet.world(A)["world"]["locks"]["pickup"]["energize_count"] == 0
    # The pharmacist calls, counsels and releases it.
    status, r = b.post("/api/orders/rx-1001/release", {"counselling": "not_required"})
    assert status == 409 and "counselling" in r["detail"]
    b.ok("POST", "/api/orders/rx-1001/release", {"counselling": "accepted", "note": "first course; dosing explained"})
    assert [c for c in b.get("/api/consults") if c["kiosk"] == A] == []
    assert site.wait_screen(A, "rescan")
    # Scanned again: the bin comes, the door opens, the patient takes it.
    s2 = site.scan(A, code)
    site.wait_screen(A, "open_door", 30)
    site.door(A, "pickup")
    site.wait_screen(A, "done", 30)
    o = wait_until(lambda: (lambda o: o if o["state"] == "dispensed" else None)(b.get("/api/orders/rx-1001")), 20,
                   "dispensed")
    d = o["dispensed"]
    assert d["released_by"] and d["counselling"] == "accepted" and d["scan"] == s2["s"]
    pick = next(e["body"] for e in b.events(A, "pickup") if e["body"]["order"] == "rx-1001")
    assert d["when_handed_over"] == pick["t"] and d["kiosk_seq"] == pick["s"]
    assert [h["event"] for h in o["history"]] == [
        "received", "code_issued", "stocking", "restock_failed", "stocking", "stocked", "consult_requested",
        "released", "dispensing", "dispensed"]
    # The kiosk's flash journal carries the same chain, and never the code.
    flash = site.fleet.kiosk(A).flash
    wait_until(lambda: pick["s"] in journal_records(flash), 10, "the pickup on flash")
    recs = journal_records(flash)
    chain = [r for r in recs.values() if r["k"] in ("scan", "restock", "pickup") or
             (r["k"] == "op" and r.get("order") == "rx-1001")]
    assert [(r["k"], r.get("ev")) for r in chain if r["k"] != "op"] == [
        ("scan", "label"), ("scan", "label"), ("restock", None), ("scan", "code"), ("scan", "refused"),
        ("scan", "code"), ("pickup", None)]
    assert recs[pick["s"]]["scan"] == s2["s"] and recs[s2["s"]]["h"] == s2["h"]
    raw = b"".join(p.read_bytes() for p in flash.rglob("*") if p.is_file())
    assert code.encode() not in raw and code.replace("-", "").encode() not in raw
    # The pharmacy system heard every change, in order, signed.
    wait_until(lambda: site.pharmacy.changes("rx-1001")[-1:] == ["dispensed"], 20, "the last webhook")
    assert site.pharmacy.changes("rx-1001") == [h["event"] for h in o["history"]]
    assert all(ok for d, ok in site.pharmacy.got), "every webhook's signature verifies"
    assert code not in json.dumps([d for d, _ in site.pharmacy.got])


def test_codes_that_open_nothing_and_the_lockout(site):
    b = site.bridge
    site.order("rx-2001", B)
    site.service(B)
    assert site.restock(B, "rx-2001")["state"] == "succeeded"
    site.service(B, False)
    b.ok("POST", "/api/orders/rx-2001/release", {"counselling": "not_required"})
    code = site.code("rx-2001")
    site.order("rx-2002", A)
    elsewhere = site.code("rx-2002")
    site.order("rx-2003", B)
    short = site.code("rx-2003", expires_in_s=1)
    time.sleep(1.2)
    for text, why in ((short, "expired"), (elsewhere, "other_kiosk")):
        s = site.scan(B, text)
        assert site.answered(B, s)["why"] == why
        assert site.wait_screen(B, why)["state"] == why
    # The third wrong one in a row: the kiosk locks its scanner out, on its own.
    s = site.scan(B, "ZZZZ-ZZZZ-ZZZZ")
    assert site.answered(B, s)["why"] == "unknown_code"
    lock = wait_until(lambda: next((e["body"] for e in b.events(B, "scan") if e["body"]["ev"] == "lockout"), None),
                      10, "the lockout journaled")
    assert lock["fails"] == 3
    assert site.wait_screen(B, "locked_out")["until"] >= lock["t"] + 10
    n = len(b.events(B, "scan"))
    site.fleet.scan(B, code)                       # the right code, during the lockout
    time.sleep(1.5)
    assert len(b.events(B, "scan")) == n, "not even sent"
    assert site.fleet.world(B)["world"]["locks"]["pickup"]["energize_count"] == 0
    wait_until(lambda: any(e["body"]["ev"] == "lockout_end" for e in b.events(B, "scan")), 20, "the lockout ends")
    assert site.wait_screen(B, "ready")
    # After it: the right code works; used again, it opens nothing.
    s = site.scan(B, code)
    site.door(B, "pickup")
    wait_until(lambda: b.get("/api/orders/rx-2001")["state"] == "dispensed", 30, "dispensed")
    s = site.scan(B, code)
    assert site.answered(B, s)["why"] == "used"
    assert site.wait_screen(B, "used")
    assert site.fleet.world(B)["world"]["locks"]["pickup"]["energize_count"] == 1


def test_an_order_past_its_deadline_goes_back_to_stock(site):
    b = site.bridge
    site.pharmacy.down = True             # the pharmacy system is down all through
    site.order("rx-3001", A)
    site.service(A)
    r = site.restock(A, "rx-3001")
    assert r["state"] == "succeeded"
    wait_until(lambda: b.get("/api/orders/rx-3001")["state"] == "stocked", 15, "stocked")
    status, e = b.post(f"/api/kiosks/{A}/retrievals", {"order_id": "rx-3001"})
    assert status == 409 and "expired or cancelled" in e["detail"]
    # The pharmacy shortens the hold: the deadline has passed.
    b.ok("PATCH", "/api/orders/rx-3001", {"pickup_by": YESTERDAY})
    o = wait_until(lambda: (lambda o: o if o["state"] == "expired" else None)(b.get("/api/orders/rx-3001")), 10,
                   "expired")
    assert o["return_to_stock"] and o["bin"] == r["bin"]
    assert [x["order_id"] for x in b.get(f"/api/orders?kiosk={A}&state=expired")] == ["rx-3001"]
    got = b.ok("POST", f"/api/kiosks/{A}/retrievals", {"order_id": "rx-3001"}, 202)
    assert got["bin"] == r["bin"]
    site.door(A, "service")
    assert b.wait_command(got["command_id"], TERMINAL, 40)["state"] == "succeeded"
    o = wait_until(lambda: (lambda o: o if o["state"] == "returned" else None)(b.get("/api/orders/rx-3001")), 15,
                   "returned")
    assert o["returned"]["by"] and o["bin"] is None
    wait_until(lambda: str(r["bin"]) not in b.kiosk(A)["status"]["stock"], 10, "the bin free")
    site.order("rx-3002", A)
    assert site.restock(A, "rx-3002")["bin"] == r["bin"], "the bin is given again"
    site.service(A, False)
    # Its webhooks waited in the store; a bridge that crashes meanwhile loses none.
    assert site.pharmacy.refused >= 1 and site.pharmacy.changes("rx-3001") == []
    b.stop(kill=True)
    b.start()
    site.pharmacy.down = False
    want = [h["event"] for h in b.get("/api/orders/rx-3001")["history"]]
    assert want == ["received", "stocking", "stocked", "pickup_by_changed", "expired", "retrieving", "returned"]
    wait_until(lambda: site.pharmacy.changes("rx-3001") == want, 60, "the webhooks delivered after the outage")


def test_the_movements_report_holds_every_change_with_who_and_when_and_is_taken_as_csv(site):
    """The pharmacy's record of every movement in and out of the kiosks:
    the orders' histories over a period, as JSON and CSV, for admins and
    pharmacists of the kiosks' sites only; each export is in the access log."""
    import csv
    import io

    b = site.bridge
    site.order("rx-4001", B)
    today = dt.date.today().isoformat()
    q = f"/api/reports/movements?since={YESTERDAY}&until={today}"
    got = b.get(q, who="pharmacist")["movements"]
    assert [m["at"] for m in got] == sorted(m["at"] for m in got), "oldest first"
    # Each order that has come to rest (and the new one) appears with its whole history, nothing else.
    quiet = [o for o in b.get("/api/orders", who="pharmacist")
             if o["state"] in ("dispensed", "returned") or o["order_id"] == "rx-4001"]
    assert "rx-4001" in {o["order_id"] for o in quiet}
    for o in quiet:
        want = [(h["at"], h["event"], h["actor"], h["state"]) for h in b.get(f"/api/orders/{o['order_id']}")["history"]]
        mine = [(m["at"], m["event"], m["actor"], m["state"]) for m in got if m["order_id"] == o["order_id"]]
        assert mine == want, o["order_id"]
        assert all(m["kiosk"] == o["kiosk"] and m["patient_ref"] == o["patient_ref"]
                   for m in got if m["order_id"] == o["order_id"])
    # One kiosk; a period before anything happened; the CSV the same rows.
    only_b = b.get(q + f"&kiosk={B}", who="admin")["movements"]
    assert only_b and {m["kiosk"] for m in only_b} == {B}
    long_ago = (dt.date.today() - dt.timedelta(days=30)).isoformat()
    assert b.get(f"/api/reports/movements?since={long_ago}&until={long_ago}", who="admin")["movements"] == []
    status, text = b.request("GET", q + "&format=csv", who="pharmacist")
    assert status == 200
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(float(r["at"]), r["order_id"], r["event"], r["actor"]) for r in rows] == \
        [(round(m["at"], 3), m["order_id"], m["event"], m["actor"]) for m in got]
    assert all(r["at_iso"].endswith("Z") for r in rows)
    # Bad periods are told why; other roles may not.
    for bad, why in ((f"since={today}&until={YESTERDAY}", "until is before since"),
                     (f"since=2026-13-01&until={today}", "since is not a day of the calendar"),
                     (f"since=2020-01-01&until={today}", "at most 400 days")):
        status, r = b.request("GET", f"/api/reports/movements?{bad}", who="admin")
        assert status == 422 and why in r["detail"], (bad, r)
    for role in ("technician", "viewer", "pharmacy_system"):
        assert b.request("GET", q, who=role)[0] == 403, role
    # A pharmacist of one site sees that site's kiosks only, and not another's by name.
    b.ok("POST", "/api/sites", {"name": "clinic-b"}, 201)
    b.ok("PUT", f"/api/kiosks/{B}/site", {"site": "clinic-b"})
    b.ok("POST", "/api/users", {"name": "pat.b", "role": "pharmacist", "sites": ["clinic-b"]}, 201)
    token = b.ok("POST", "/api/users/pat.b/tokens", None, 201)["token"]
    from bridge_support import http

    status, r = http("GET", b.url + q, token=token)
    assert status == 200 and r["movements"] and {m["kiosk"] for m in r["movements"]} == {B}
    assert http("GET", b.url + q + f"&kiosk={A}", token=token)[0] == 403
    # Each export is in the access log: who took which report.
    log = b.get("/api/access-log?limit=50", who="admin")["entries"]
    took = [e for e in log if e["path"] == "/api/reports/movements" and e["status"] == 200]
    assert {e["actor"] for e in took} >= {"pat.b"} and any("as csv" in (e["detail"] or "") for e in took)
