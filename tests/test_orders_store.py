"""Orders in the store, on both backends (a SQLite file, a real PostgreSQL),
driven by kiosk events as the bridge stores them: stocking, the answer to
every kind of scan, the pharmacist's release and the consult queue, the
claim a pickup holds on a code, dispensing, expiry and return to stock,
the throttle, the command outbox, the webhook outbox and the screen."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from kiosk_host.bridge import codes
from kiosk_host.bridge.orders import LOCK_FAILS, Orders, OrderError
from kiosk_host.bridge.store import Store
from test_bridge_store import postgres, url  # noqa: F401 (fixtures: a store per backend)

K = "kiosk-001"
TOMORROW = (dt.date.today() + dt.timedelta(days=1)).isoformat()
ITEMS = [{"ndc": "0093-4155-73", "name": "Amoxicillin 500 mg", "qty": 21}]


class Kiosk:
    """A kiosk's journal as the bridge receives it: events in seq order."""

    def __init__(self, store: Store, kid: str = K):
        self.st, self.id, self.s = store, kid, 0
        self.event("boot", fw="test")
        self.event("service", state="started", session="t")

    def event(self, k: str, transient: dict | None = None, **f) -> int:
        self.s += 1
        e = {"s": self.s, "b": 1, "t": int(time.time()), "k": k, **f}
        self.st.add_batches([(self.id, "", [e], [])], {(self.id, self.s): transient} if transient else None)
        return self.s

    def scan(self, text: str) -> int:
        return self.event("scan", {"text": text}, ev="code", h=codes.short_hash(text))


def outbox(st: Store) -> list[dict]:
    return st.take_unsent(60)


def answer(st: Store, seq: int) -> dict:
    """The one command the bridge queued for scan seq."""
    sent = [c for c in outbox(st) if c["args"].get("scan") == seq]
    assert len(sent) == 1, sent
    return sent[0]


@pytest.fixture
def rig(url):  # noqa: F811
    st = Store(url)
    o = Orders(st)
    yield st, o, Kiosk(st)
    st.close()


def stock(st, o, kiosk, oid, counselling=False, bins=12):
    o.create(oid, kiosk.id, "pt-77", ITEMS, counselling, TOMORROW, "pharmacy-system")
    status = st.kiosk(kiosk.id)["status"]
    cid, b = o.begin_restock(kiosk.id, oid, "tech-ann", bins, status)
    (c,) = [c for c in outbox(st) if c["command_id"] == cid]
    assert c["op"] == "restock" and c["args"] == {"order": oid, "bin": b}
    kiosk.event("scan", ev="label", id=cid, order=oid, h=codes.short_hash(oid), match=True)
    kiosk.event("restock", id=cid, order=oid, bin=b, label="checked")
    return cid, b


def released(st, o, kiosk, oid):
    """Stocked, the service session over, released: ready for its code."""
    stock(st, o, kiosk, oid)
    kiosk.event("service", state="ended", session="t")
    o.release(oid, "not_required", None, "ph-bob")


def test_an_order_from_received_to_dispensed_with_every_step_named(rig):
    st, o, kiosk = rig
    o.create("rx-1", K, "pt-77", ITEMS, True, TOMORROW, "pharmacy-system")
    code = o.issue_code("rx-1", "pharmacy-system")
    assert len(code) == 14 and code[4] == code[9] == "-"
    assert codes.code_hash(code) in str(st._all("SELECT hash FROM pickup_codes"))
    assert code not in str(st._all("SELECT * FROM pickup_codes")), "only the hash is kept"
    # Scanned before it is in the kiosk.
    s = kiosk.scan(code)
    assert answer(st, s)["args"] == {"scan": s, "why": "not_stocked"}
    status = st.kiosk(K)["status"]
    cid, b = o.begin_restock(K, "rx-1", "tech-ann", 12, status)
    assert b == 1
    kiosk.event("restock", id=cid, order="rx-1", bin=b, label="checked")
    order = o.get("rx-1")
    assert order["state"] == "stocked" and order["bin"] == 1
    assert order["stocked"]["by"] == "tech-ann" and order["stocked"]["label_check"] == "passed"
    # Needs counselling and has none: not released; a pharmacist will call.
    s = kiosk.scan(code)
    assert answer(st, s)["args"]["why"] == "counselling"
    (c,) = o.consults()
    assert c["kiosk"] == K and c["order_id"] == "rx-1" and c["reason"] == "counselling"
    assert o.screen(K, st.kiosk(K) | {"online": True})["state"] == "pharmacist_will_call"
    with pytest.raises(OrderError, match="needs counselling"):
        o.release("rx-1", "not_required", None, "ph-bob")
    o.release("rx-1", "accepted", "first antibiotic; explained dosing", "ph-bob")
    assert o.consults() == [], "the release closes the patient's request"
    assert o.screen(K, st.kiosk(K) | {"online": True})["state"] == "rescan"
    with pytest.raises(OrderError, match="released already"):
        o.release("rx-1", "accepted", None, "ph-bob")
    # The service session is still open at the kiosk: it cannot dispense now.
    s = kiosk.scan(code)
    assert answer(st, s)["args"]["why"] == "unavailable"
    kiosk.event("service", state="ended", session="t")
    # Scanned again: a pickup naming the scan, the code claimed.
    s = kiosk.scan(code.lower().replace("-", ""))   # case and dashes do not matter
    c = answer(st, s)
    assert c["op"] == "pickup" and c["args"] == {"order": "rx-1", "bin": 1, "scan": s}
    s2 = kiosk.scan(code)
    assert answer(st, s2)["args"]["why"] == "busy", "one claim at a time"
    # The kiosk reports it handed over: dispensed, with the kiosk's time.
    kiosk.event("pickup", id=c["command_id"], order="rx-1", bin=1, scan=s)
    t_kiosk = kiosk.s
    order = o.get("rx-1")
    assert order["state"] == "dispensed" and order["bin"] is None
    d = order["dispensed"]
    assert d["released_by"] == "ph-bob" and d["counselling"] == "accepted" and d["scan"] == s
    assert isinstance(d["when_handed_over"], int) and d["kiosk_seq"] == t_kiosk
    assert [h["event"] for h in order["history"]] == [
        "received", "code_issued", "stocking", "stocked", "consult_requested", "released", "dispensing",
        "dispensed"]
    assert all(h["actor"] and h["at"] for h in order["history"])
    assert [h["actor"] for h in order["history"]][:4] == ["pharmacy-system", "pharmacy-system", "tech-ann", "tech-ann"]
    assert order["codes"][0]["state"] == "used"
    s = kiosk.scan(code)
    assert answer(st, s)["args"]["why"] == "used"


def test_wrong_other_replaced_and_expired_codes_and_the_throttle(rig):
    st, o, kiosk = rig
    released(st, o, kiosk, "rx-2")
    old = o.issue_code("rx-2", "pharmacy-system")
    new = o.issue_code("rx-2", "pharmacy-system")
    assert answer(st, kiosk.scan(old))["args"]["why"] == "replaced"
    other = Kiosk(st, "kiosk-002")
    o.create("rx-9", "kiosk-002", "pt-9", ITEMS, False, TOMORROW, "pharmacy-system")
    theirs = o.issue_code("rx-9", "pharmacy-system")
    assert answer(st, kiosk.scan(theirs))["args"]["why"] == "other_kiosk"
    assert answer(st, kiosk.scan("NOT-A-CODE"))["args"]["why"] == "unknown_code"
    short = o.issue_code("rx-9", "pharmacy-system", ttl_s=1)
    time.sleep(1.1)
    assert answer(st, other.scan(short))["args"]["why"] == "expired"
    # A replayed scan (no text) or one whose text does not match its hash: never answered.
    s = kiosk.event("scan", ev="code", h=codes.short_hash(new), replayed=True)
    s2 = kiosk.event("scan", {"text": new}, ev="code", h="00000000")
    assert [c for c in outbox(st) if c["args"].get("scan") in (s, s2)] == []
    assert {r[0] for r in st._all("SELECT result FROM scans WHERE seq IN (?, ?)", (s, s2))} == {"stale"}
    # Wrong codes in a row: the bridge stops looking codes up at this kiosk.
    for i in range(LOCK_FAILS - 2):
        kiosk.scan(f"WRONG-{i}")
    outbox(st)
    assert answer(st, kiosk.scan(new))["args"]["why"] == "locked_out", "even the right code"
    assert answer(st, other.scan("NOPE"))["args"]["why"] == "unknown_code", "another kiosk is not locked"


def test_a_pickup_that_ends_without_the_order_frees_the_code_and_one_that_may_have_does_not(rig):
    st, o, kiosk = rig
    released(st, o, kiosk, "rx-3")
    code = o.issue_code("rx-3", "pharmacy-system")
    c = answer(st, kiosk.scan(code))
    # The patient never opened the door: the op record ends the command.
    kiosk.event("op", id=c["command_id"], op="pickup", state="timed_out", reason="door_not_opened",
                order="rx-3", bin=1, opened=False)
    order = o.get("rx-3")
    assert order["state"] == "stocked" and order["history"][-1]["event"] == "dispense_failed"
    assert order["codes"][-1]["state"] == "active"
    assert o.screen(K, st.kiosk(K) | {"online": True})["state"] == "door_timeout"
    # Scanned again; a power cut after the door was unlocked: nobody knows.
    c = answer(st, kiosk.scan(code))
    kiosk.event("op", id=c["command_id"], op="pickup", state="failed", reason="reset", step="waiting_open",
                outcome="unknown", order="rx-3", bin=1)
    order = o.get("rx-3")
    assert order["history"][-1]["event"] == "dispense_interrupted"
    assert order["codes"][-1]["state"] == "claimed", "the code is spent until someone knows"
    assert answer(st, kiosk.scan(code))["args"]["why"] == "busy"
    # A bridge-side failure (never sent) frees it again.
    c2 = st.queue_command(K, "pickup", {"order": "rx-3", "bin": 1, "scan": 999}, 30)
    with st._tx():
        st._exec("UPDATE pickup_codes SET claim = ? WHERE order_id = 'rx-3' AND state = 'claimed'", (c2,))
    st.update_command(c2, "failed", "not_sent", {}, "bridge")
    assert o.get("rx-3")["codes"][-1]["state"] == "active"


def test_expiry_makes_a_return_to_stock_task_and_retrieval_frees_the_bin(rig):
    st, o, kiosk = rig
    stock(st, o, kiosk, "rx-4")
    code = o.issue_code("rx-4", "pharmacy-system")
    o.create("rx-5", K, "pt-5", ITEMS, False, TOMORROW, "pharmacy-system")
    with pytest.raises(OrderError, match="only an expired or cancelled order"):
        o.begin_retrieve(K, "rx-4", "tech-ann")
    assert o.expire_due(time.time() + 2 * 86400) == ["rx-4", "rx-5"]
    order = o.get("rx-4")
    assert order["state"] == "expired" and order["return_to_stock"] and order["bin"] == 1
    assert o.get("rx-5")["return_to_stock"] is False, "never stocked: nothing to take back"
    assert answer(st, kiosk.scan(code))["args"]["why"] == "expired"
    # The bin stays taken until the order is out.
    cid, b = o.begin_retrieve(K, "rx-4", "tech-ann")
    assert b == 1
    with pytest.raises(OrderError, match="under way"):
        o.begin_retrieve(K, "rx-4", "tech-ann")
    kiosk.event("retrieve", id=cid, order="rx-4", bin=1)
    order = o.get("rx-4")
    assert order["state"] == "returned" and order["bin"] is None and order["returned"]["by"] == "tech-ann"
    assert st.kiosk(K)["status"]["stock"] == {}
    assert [h["event"] for h in order["history"]][-3:] == ["expired", "retrieving", "returned"]
    assert order["history"][-3]["actor"] == "bridge"
    with pytest.raises(OrderError, match="returned"):
        o.cancel("rx-4", "pharmacy-system")


def test_restock_picks_free_bins_and_a_failed_one_lets_its_bin_go(rig):
    st, o, kiosk = rig
    stock(st, o, kiosk, "rx-6")                       # bin 1
    o.create("rx-7", K, "pt", ITEMS, False, TOMORROW, "pharmacy-system")
    o.create("rx-8", K, "pt", ITEMS, False, TOMORROW, "pharmacy-system")
    c7, b7 = o.begin_restock(K, "rx-7", "tech-ann", 12, st.kiosk(K)["status"])
    c8, b8 = o.begin_restock(K, "rx-8", "tech-ann", 12, st.kiosk(K)["status"])
    assert (b7, b8) == (2, 3), "a bin held by a restock under way is not given twice"
    o.create("rx-10", K, "pt", ITEMS, False, TOMORROW, "pharmacy-system")
    with pytest.raises(OrderError, match="not free"):
        o.begin_restock(K, "rx-10", "tech-ann", 12, st.kiosk(K)["status"], bin_no=1)
    # The technician scanned the wrong package: the kiosk refused it.
    kiosk.event("scan", ev="label", id=c7, order="rx-7", h="12345678", match=False)
    kiosk.event("refused", id=c7, op="restock", why="label_mismatch")
    kiosk.event("op", id=c7, op="restock", state="rejected", reason="label_mismatch", order="rx-7", bin=2,
                opened=False)
    order = o.get("rx-7")
    assert order["state"] == "received" and order["task"] is None and order["bin"] is None
    assert order["history"][-1]["event"] == "restock_failed"
    assert order["history"][-1]["detail"]["reason"] == "label_mismatch"
    c7, b7 = o.begin_restock(K, "rx-7", "tech-ann", 12, st.kiosk(K)["status"])
    assert b7 == 2, "its bin is free again"
    with pytest.raises(OrderError, match="only a received order"):
        o.begin_restock(K, "rx-6", "tech-ann", 12, st.kiosk(K)["status"])


def test_the_command_outbox_sends_once_and_never_late(rig):
    st, o, kiosk = rig
    with st._tx():
        fresh = st.queue_command(K, "scan_refused", {"scan": 1, "why": "unknown_code"}, 30)
        old = st.queue_command(K, "scan_refused", {"scan": 2, "why": "unknown_code"}, 30)
        st._exec("UPDATE command_outbox SET iat = iat - 100 WHERE id = ?", (old,))
    got = st.take_unsent(10)
    assert [c["command_id"] for c in got] == [fresh]
    assert st.take_unsent(10) == [], "taken once"
    assert st.command(old)["state"] == "failed" and st.command(old)["reason"] == "not_sent"


def test_the_webhook_outbox_goes_in_order_with_a_lease_and_retries(rig):
    st, o, kiosk = rig
    o.create("rx-w", K, "pt-w", ITEMS, False, TOMORROW, "pharmacy-system")
    code = o.issue_code("rx-w", "pharmacy-system")
    assert o.webhook_backlog() == 2
    first = o.next_webhook(30)
    assert first["id"] == "rx-w/1" and first["type"] == "order.received" and first["patient_ref"] == "pt-w"
    assert o.next_webhook(30) is None, "leased: and nothing goes ahead of it"
    o.webhook_done("rx-w", 1, "HTTP 503", time.time() - 1)
    assert o.next_webhook(30)["id"] == "rx-w/1"
    o.webhook_done("rx-w", 1, None)
    nxt = o.next_webhook(30)
    assert nxt["id"] == "rx-w/2" and nxt["type"] == "order.code_issued" and code not in str(nxt)
    hist = o.get("rx-w")["history"]
    assert hist[0]["webhook_delivered"] and not hist[1]["webhook_delivered"]


def test_the_call_button_opens_one_request_and_the_screen_says_so(rig):
    st, o, kiosk = rig
    kiosk.event("service", state="ended", session="t")
    online = lambda: st.kiosk(K) | {"online": True}  # noqa: E731
    assert o.screen(K, online())["state"] == "ready"
    assert o.screen(K, st.kiosk(K) | {"online": False})["state"] == "offline"
    kiosk.event("button", name="call_pharmacist", presses=1)
    kiosk.event("button", name="call_pharmacist", presses=3)
    (c,) = o.consults()
    assert c["reason"] == "call" and c["order_id"] is None
    assert o.screen(K, online())["state"] == "calling"
    o.close_consult(c["id"], "ph-bob", "called back")
    assert o.screen(K, online())["state"] == "ready"
    assert o.consults(True)[0]["closed_by"] == "ph-bob"
    # A wrong code shows for a while, then the screen asks for a code again.
    kiosk.scan("WRONG")
    assert o.screen(K, online())["state"] == "unknown_code"
    assert o.screen(K, online(), now=time.time() + 60)["state"] == "ready"
    # A lockout shows until it ends.
    kiosk.event("scan", ev="lockout", fails=5, for_s=300)
    v = o.screen(K, online())
    assert v["state"] == "locked_out" and v["until"] > time.time() + 200
    assert set(v) <= {"state", "until", "since"}


def test_a_failing_hook_is_undone_and_the_custody_record_goes_on(rig):
    st, o, kiosk = rig
    o.create("rx-h", K, "pt", ITEMS, False, TOMORROW, "pharmacy-system")

    def broken(kid, ev, extra):
        if ev["k"] == "button":
            st._exec("UPDATE orders SET patient_ref = 'tampered' WHERE id = 'rx-h'")
            raise RuntimeError("a bug in a hook")

    st.event_hooks.insert(0, broken)
    s = kiosk.event("button", name="call_pharmacist", presses=1)
    assert st.acked(K) == s, "the event is stored and may be acknowledged"
    assert o.get("rx-h")["patient_ref"] == "pt", "what the failing hook wrote is undone"
    assert [c["reason"] for c in o.consults()] == ["call"], "the other hooks ran"
