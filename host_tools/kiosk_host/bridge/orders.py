"""Orders for the patient's pickup and what goes with them: pickup codes, the
scans that present them, the pharmacist's release and counselling, consult
requests, and each order's history, which is also the outbox of the
webhooks to the pharmacy system. See docs/pickup.md.

Everything lives in the bridge's store, beside the kiosks' events, and the
changes a kiosk's event causes (a scan answered, an order stocked or
dispensed) are made by the store's event hooks inside the very transaction
that stores the event: an order never changes for an event the store does
not hold, and an event is never acknowledged before its order changed. The
answer to a scan is a command queued in the same transaction and published
once it commits (store.queue_command, Bridge.flush_commands).

Nothing is deleted. Every change of an order is a row of order_history
naming its actor and time; an order's state, and the facts of each step
(who stocked it and how the label was checked, who released it with what
counselling, when the kiosk says it was handed over), are fields of the
order. Field names borrow HL7 FHIR's MedicationDispense where they fit
(when_prepared, when_handed_over).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from typing import Any

from .. import contract
from . import codes
from .store import Store, _dumps, _loads

log = logging.getLogger("kiosk_bridge")

RECEIVED, STOCKED, DISPENSED, EXPIRED, RETURNED, CANCELLED = (
    "received", "stocked", "dispensed", "expired", "returned", "cancelled")
STATES = (RECEIVED, STOCKED, DISPENSED, EXPIRED, RETURNED, CANCELLED)
OPEN = (RECEIVED, STOCKED)                 # may still reach the patient
BACK_TO_STOCK = (EXPIRED, CANCELLED)       # with a bin: a return-to-stock task
COUNSELLING = ("not_required", "accepted", "declined")

SCAN_ANSWER_TTL_S = 30      # an answer to a scan is valid this long (the kiosk takes it only while the scan waits)
# Verification throttle per kiosk, besides the kiosk's own lockout: more
# than SCAN_RATE scans a minute, or LOCK_FAILS wrong codes within LOCK_S,
# and codes from that kiosk are refused (locked_out) unseen.
SCAN_RATE = 12
LOCK_FAILS = 10
LOCK_S = 900
# The kiosk's screen: how long it shows an answer before asking for a code again.
SHOW_S = 15
WAIT_S = 900                # "a pharmacist will call you", while the request is open, at most this long

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS orders (
        id TEXT PRIMARY KEY, kiosk TEXT NOT NULL, patient_ref TEXT NOT NULL, items TEXT NOT NULL,
        counselling_required INTEGER NOT NULL, pickup_by TEXT NOT NULL, deadline DOUBLE PRECISION NOT NULL,
        state TEXT NOT NULL, bin INTEGER, created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL,
        task TEXT, stocked TEXT, released TEXT, dispensed TEXT, returned TEXT)""",
    "CREATE INDEX IF NOT EXISTS orders_kiosk_state ON orders (kiosk, state)",
    """CREATE TABLE IF NOT EXISTS order_history (
        order_id TEXT NOT NULL, n INTEGER NOT NULL, at DOUBLE PRECISION NOT NULL, actor TEXT NOT NULL,
        event TEXT NOT NULL, state TEXT NOT NULL, detail TEXT NOT NULL,
        delivered DOUBLE PRECISION, attempts INTEGER NOT NULL DEFAULT 0,
        next_try DOUBLE PRECISION NOT NULL DEFAULT 0, last_error TEXT, PRIMARY KEY (order_id, n))""",
    "CREATE INDEX IF NOT EXISTS order_history_undelivered ON order_history (delivered, at)",
    """CREATE TABLE IF NOT EXISTS pickup_codes (
        hash TEXT PRIMARY KEY, order_id TEXT NOT NULL, kiosk TEXT NOT NULL, state TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL, actor TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL,
        claim TEXT, ended DOUBLE PRECISION)""",
    "CREATE INDEX IF NOT EXISTS pickup_codes_order ON pickup_codes (order_id)",
    """CREATE TABLE IF NOT EXISTS scans (
        kiosk TEXT NOT NULL, seq BIGINT NOT NULL, t BIGINT, h TEXT, order_id TEXT, result TEXT NOT NULL,
        command_id TEXT, decided DOUBLE PRECISION NOT NULL, PRIMARY KEY (kiosk, seq))""",
    "CREATE INDEX IF NOT EXISTS scans_kiosk_decided ON scans (kiosk, decided)",
    """CREATE TABLE IF NOT EXISTS consults (
        id TEXT PRIMARY KEY, kiosk TEXT NOT NULL, order_id TEXT, reason TEXT NOT NULL, state TEXT NOT NULL,
        opened DOUBLE PRECISION NOT NULL, seen DOUBLE PRECISION NOT NULL, closed DOUBLE PRECISION,
        closed_by TEXT, note TEXT)""",
    "CREATE INDEX IF NOT EXISTS consults_state ON consults (state, opened)",
]

_ORDER_COLS = ("id, kiosk, patient_ref, items, counselling_required, pickup_by, deadline, state, bin, created, "
               "updated, task, stocked, released, dispensed, returned")


class OrderError(Exception):
    """A request about an order the bridge refuses; status is the HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def deadline_of(pickup_by: str) -> float:
    """The end of the pickup_by day in the bridge's local time (when an
    uncollected order becomes a return-to-stock task)."""
    day = dt.date.fromisoformat(pickup_by)
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time()).timestamp()


def kiosk_actor(kiosk: str) -> str:
    return f"kiosk:{kiosk}"


class Orders:
    def __init__(self, store: Store):
        self.s = store
        store.migrate(SCHEMA)
        store.event_hooks.append(self.on_event)
        store.command_hooks.append(self.on_command_end)

    # -- plumbing (inside a store transaction) ------------------------------------
    def _row(self, order_id: str, lock: bool = False):
        q = f"SELECT {_ORDER_COLS} FROM orders WHERE id = ?"
        if lock and self.s.kind == "postgresql":
            q += " FOR UPDATE"
        return self.s._one(q, (order_id,))

    def _set(self, order_id: str, **fields: Any) -> None:
        fields["updated"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        vals = [(_dumps(v) if isinstance(v, (dict, list)) else v) for v in fields.values()]
        self.s._exec(f"UPDATE orders SET {cols} WHERE id = ?", (*vals, order_id))

    def _history(self, order_id: str, actor: str, event: str, state: str, detail: dict[str, Any] | None = None,
                 at: float | None = None) -> None:
        n = self.s._one("SELECT COALESCE(MAX(n), 0) + 1 FROM order_history WHERE order_id = ?", (order_id,))[0]
        self.s._exec("INSERT INTO order_history (order_id, n, at, actor, event, state, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (order_id, n, time.time() if at is None else at, actor, event, state, _dumps(detail or {})))

    def _need(self, order_id: str, lock: bool = True):
        r = self._row(order_id, lock)
        if r is None:
            raise OrderError(404, f"unknown order {order_id!r}")
        return r

    @staticmethod
    def _out(r) -> dict[str, Any]:
        state, b = r[7], r[8]
        return {"order_id": r[0], "kiosk": r[1], "patient_ref": r[2], "items": _loads(r[3]),
                "counselling_required": bool(r[4]), "pickup_by": r[5], "deadline": r[6], "state": state, "bin": b,
                "created": r[9], "updated": r[10], "task": _loads(r[11]), "stocked": _loads(r[12]),
                "released": _loads(r[13]), "dispensed": _loads(r[14]), "returned": _loads(r[15]),
                "return_to_stock": state in BACK_TO_STOCK and b is not None}

    def _history_of(self, order_id: str) -> list[dict[str, Any]]:
        return [{"n": n, "at": at, "actor": actor, "event": ev, "state": st, "detail": _loads(d),
                 "webhook_delivered": dl}
                for n, at, actor, ev, st, d, dl in self.s._all(
                    "SELECT n, at, actor, event, state, detail, delivered FROM order_history "
                    "WHERE order_id = ? ORDER BY n", (order_id,))]

    def movements(self, kiosks: list[str] | None, since: float, until: float,
                  limit: int = 10000) -> list[dict[str, Any]]:
        """Every change of the orders at these kiosks (None: every kiosk)
        from since to until, oldest first: what went into and out of each
        kiosk, each release, cancellation and deadline, who and when. The
        pharmacy's record of all movements (B&P 4427.4), from the
        append-only history."""
        if kiosks is not None and not kiosks:
            return []
        q = ("SELECT h.at, o.kiosk, h.order_id, h.n, h.event, h.state, h.actor, h.detail, o.patient_ref, o.items "
             "FROM order_history h JOIN orders o ON o.id = h.order_id WHERE h.at >= ? AND h.at < ?")
        p: list[Any] = [since, until]
        if kiosks is not None:
            q += f" AND o.kiosk IN ({', '.join('?' * len(kiosks))})"
            p += kiosks
        q += " ORDER BY h.at, h.order_id, h.n LIMIT ?"
        p.append(limit)
        with self.s.lock:
            rows = self.s._all(q, p)
        return [{"at": at, "kiosk": k, "order_id": oid, "n": n, "event": ev, "state": st, "actor": actor,
                 "detail": _loads(d), "patient_ref": pref, "items": _loads(items)}
                for at, k, oid, n, ev, st, actor, d, pref, items in rows]

    # -- the pharmacy system ------------------------------------------------------------
    def create(self, order_id: str, kiosk: str, patient_ref: str, items: list[dict[str, Any]],
               counselling_required: bool, pickup_by: str, actor: str) -> dict[str, Any]:
        now = time.time()
        deadline = deadline_of(pickup_by)
        if deadline <= now:
            raise OrderError(422, f"pickup_by {pickup_by} has passed")
        with self.s._tx():
            if self._row(order_id) is not None:
                raise OrderError(409, f"order {order_id!r} exists already")
            self.s._exec(f"INSERT INTO orders ({_ORDER_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (order_id, kiosk, patient_ref, _dumps(items), 1 if counselling_required else 0, pickup_by,
                          deadline, RECEIVED, None, now, now, None, None, None, None, None))
            self._history(order_id, actor, "received", RECEIVED,
                          {"kiosk": kiosk, "counselling_required": counselling_required, "pickup_by": pickup_by,
                           "items": len(items)}, now)
        return self.get(order_id)

    def get(self, order_id: str) -> dict[str, Any]:
        with self.s.lock:
            r = self._row(order_id)
            if r is None:
                raise OrderError(404, f"unknown order {order_id!r}")
            out = self._out(r)
            out["history"] = self._history_of(order_id)
            out["codes"] = [{"state": st, "created": c, "expires": e, "ended": en}
                            for st, c, e, en in self.s._all(
                                "SELECT state, created, expires, ended FROM pickup_codes WHERE order_id = ? "
                                "ORDER BY created", (order_id,))]
        return out

    def exists(self, order_id: str) -> bool:
        with self.s.lock:
            return self._row(order_id) is not None

    def list(self, kiosk: str | None = None, state: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        q, p = f"SELECT {_ORDER_COLS} FROM orders WHERE 1 = 1", []
        if kiosk:
            q += " AND kiosk = ?"
            p.append(kiosk)
        if state:
            q += " AND state = ?"
            p.append(state)
        q += " ORDER BY created LIMIT ?"
        p.append(limit)
        with self.s.lock:
            return [self._out(r) for r in self.s._all(q, p)]

    def issue_code(self, order_id: str, actor: str, ttl_s: int | None = None) -> str:
        """A new pickup code for the order; any earlier one that was not
        used stops working (replaced). Only its hash is kept."""
        now = time.time()
        with self.s._tx():
            r = self._need(order_id)
            if r[7] not in OPEN:
                raise OrderError(409, f"order {order_id} is {r[7]}: no pickup code for it")
            code = codes.new_code()
            expires = r[6] if ttl_s is None else min(r[6], now + ttl_s)
            old = self.s._exec("UPDATE pickup_codes SET state = 'replaced', ended = ? "
                               "WHERE order_id = ? AND state IN ('active', 'claimed')", (now, order_id)).rowcount
            self.s._exec("INSERT INTO pickup_codes (hash, order_id, kiosk, state, created, actor, expires) "
                         "VALUES (?, ?, ?, 'active', ?, ?, ?)", (codes.code_hash(code), order_id, r[1], now, actor, expires))
            self._history(order_id, actor, "code_issued", r[7], {"expires": expires, "replaced": max(old, 0)}, now)
        return code

    def set_pickup_by(self, order_id: str, pickup_by: str, actor: str) -> dict[str, Any]:
        """A new pickup deadline (the pharmacy extends or shortens the hold);
        it takes effect at the next expiry sweep."""
        deadline = deadline_of(pickup_by)
        with self.s._tx():
            r = self._need(order_id)
            if r[7] not in OPEN:
                raise OrderError(409, f"order {order_id} is {r[7]}: its deadline no longer matters")
            self._set(order_id, pickup_by=pickup_by, deadline=deadline)
            self.s._exec("UPDATE pickup_codes SET expires = ? WHERE order_id = ? AND state = 'active' AND expires > ?",
                         (deadline, order_id, deadline))
            self._history(order_id, actor, "pickup_by_changed", r[7], {"from": r[5], "to": pickup_by})
        return self.get(order_id)

    def cancel(self, order_id: str, actor: str, reason: str | None = None) -> dict[str, Any]:
        """Cancelled before it reached the patient. One already in its bin
        becomes a return-to-stock task."""
        with self.s._tx():
            r = self._need(order_id)
            if r[7] not in OPEN:
                raise OrderError(409, f"order {order_id} is {r[7]}: it cannot be cancelled")
            self._end_codes(order_id, "revoked")
            self._set(order_id, state=CANCELLED)
            self._close_consults(order_id, actor, "order cancelled")
            self._history(order_id, actor, "cancelled", CANCELLED, {"reason": reason, "bin": r[8],
                                                                   "return_to_stock": r[8] is not None})
        return self.get(order_id)

    # -- the pharmacist ---------------------------------------------------------------------
    def release(self, order_id: str, counselling: str, note: str | None, actor: str) -> dict[str, Any]:
        """The pharmacist's authorisation: from now a scan of the order's
        code at its kiosk dispenses it. An order that needs counselling is
        released only with its outcome (accepted or declined)."""
        if counselling not in COUNSELLING:
            raise OrderError(422, f"counselling must be one of {', '.join(COUNSELLING)}")
        now = time.time()
        with self.s._tx():
            r = self._need(order_id)
            if r[7] not in OPEN:
                raise OrderError(409, f"order {order_id} is {r[7]}: nothing to release")
            if r[13] is not None:
                raise OrderError(409, f"order {order_id} was released already")
            if r[4] and counselling == "not_required":
                raise OrderError(409, f"order {order_id} needs counselling: record accepted or declined")
            rel = {"by": actor, "at": now, "counselling": counselling, "note": note}
            self._set(order_id, released=rel)
            self._close_consults(order_id, actor, "released")
            self._history(order_id, actor, "released", r[7], {"counselling": counselling, "note": note}, now)
        return self.get(order_id)

    def consults(self, include_closed: bool = False) -> list[dict[str, Any]]:
        """Open counselling requests and patients waiting at kiosks, oldest
        first, with what the pharmacist needs of each order."""
        q = "SELECT id, kiosk, order_id, reason, state, opened, seen, closed, closed_by, note FROM consults"
        if not include_closed:
            q += " WHERE state = 'open'"
        q += " ORDER BY opened"
        out = []
        with self.s.lock:
            for r in self.s._all(q):
                c = {"id": r[0], "kiosk": r[1], "order_id": r[2], "reason": r[3], "state": r[4], "opened": r[5],
                     "seen": r[6], "closed": r[7], "closed_by": r[8], "note": r[9], "order": None}
                if r[2]:
                    o = self._row(r[2])
                    if o is not None:
                        o = self._out(o)
                        c["order"] = {k: o[k] for k in ("order_id", "state", "counselling_required", "items",
                                                         "patient_ref", "released", "bin")}
                out.append(c)
        return out

    def close_consult(self, consult_id: str, actor: str, note: str | None) -> dict[str, Any]:
        now = time.time()
        with self.s._tx():
            r = self.s._one("SELECT state, order_id FROM consults WHERE id = ?", (consult_id,))
            if r is None:
                raise OrderError(404, f"unknown consult {consult_id!r}")
            if r[0] != "open":
                raise OrderError(409, f"consult {consult_id} is closed already")
            self.s._exec("UPDATE consults SET state = 'closed', closed = ?, closed_by = ?, note = ? WHERE id = ?",
                         (now, actor, note, consult_id))
            if r[1]:
                o = self._row(r[1])
                self._history(r[1], actor, "consult_closed", o[7] if o else "", {"consult": consult_id, "note": note}, now)
        return next(c for c in self.consults(True) if c["id"] == consult_id)

    def request_call(self, kiosk: str) -> None:
        """The patient asked for a pharmacist from the kiosk's screen."""
        with self.s._tx():
            self._open_consult(kiosk, None, "call", time.time())

    def _open_consult(self, kiosk: str, order_id: str | None, reason: str, now: float) -> None:
        q = "SELECT id FROM consults WHERE state = 'open' AND kiosk = ? AND reason = ? AND "
        q += "order_id = ?" if order_id else "order_id IS NULL"
        r = self.s._one(q, (kiosk, reason, order_id) if order_id else (kiosk, reason))
        if r:
            self.s._exec("UPDATE consults SET seen = ? WHERE id = ?", (now, r[0]))
            return
        cid = uuid.uuid4().hex[:12]
        self.s._exec("INSERT INTO consults (id, kiosk, order_id, reason, state, opened, seen) "
                     "VALUES (?, ?, ?, ?, 'open', ?, ?)", (cid, kiosk, order_id, reason, now, now))
        if order_id:
            o = self._row(order_id)
            self._history(order_id, kiosk_actor(kiosk), "consult_requested", o[7], {"consult": cid, "reason": reason},
                          now)

    def _close_consults(self, order_id: str, actor: str, note: str) -> None:
        self.s._exec("UPDATE consults SET state = 'closed', closed = ?, closed_by = ?, note = ? "
                     "WHERE order_id = ? AND state = 'open'", (time.time(), actor, note, order_id))

    def check_hand_over(self, order_id: str, kiosk: str, bin_no: int) -> None:
        """A pickup asked for directly (not by a patient's scan): an order
        this bridge knows must be stocked in that bin at that kiosk, and
        released by a pharmacist."""
        with self.s.lock:
            r = self._row(order_id)
        if r is None:
            return
        if r[1] != kiosk or r[8] != bin_no:
            raise OrderError(409, f"order {order_id} is not in bin {bin_no} of kiosk {kiosk}")
        if r[7] != STOCKED:
            raise OrderError(409, f"order {order_id} is {r[7]}")
        if r[13] is None:
            raise OrderError(409, f"order {order_id} has not been released by a pharmacist")

    # -- the technician: stocking and taking back ----------------------------------------------
    def begin_restock(self, kiosk: str, order_id: str, actor: str, bins: int, status: dict[str, Any],
                      bin_no: int | None = None) -> tuple[str, int]:
        """Choose a free bin for the order (or check the one asked for) and
        queue the restock command; returns (command id, bin). The order is
        stocked when the kiosk journals the restock, after its label check."""
        with self.s._tx():
            r = self._need(order_id)
            if r[1] != kiosk:
                raise OrderError(409, f"order {order_id} is for kiosk {r[1]}")
            if r[7] != RECEIVED:
                raise OrderError(409, f"order {order_id} is {r[7]}: only a received order is stocked")
            task = _loads(r[11])
            if task and self._running(task):
                raise OrderError(409, f"order {order_id} has a {task['op']} under way ({task['command_id']})")
            busy = {int(b) for b in (status.get("stock") or {})} | set(status.get("unverified") or [])
            busy |= {b for (b,) in self.s._all("SELECT bin FROM orders WHERE kiosk = ? AND bin IS NOT NULL", (kiosk,))}
            for (t,) in self.s._all("SELECT task FROM orders WHERE kiosk = ? AND task IS NOT NULL AND id != ?",
                                    (kiosk, order_id)):
                t = _loads(t)
                if t and self._running(t):
                    busy.add(t["bin"])
            if bin_no is None:
                free = [b for b in range(1, bins + 1) if b not in busy]
                if not free:
                    raise OrderError(409, f"kiosk {kiosk} has no free bin")
                bin_no = free[0]
            elif bin_no in busy or not 1 <= bin_no <= bins:
                raise OrderError(409, f"bin {bin_no} of kiosk {kiosk} is not free")
            cid = self.s.queue_command(kiosk, "restock", {"order": order_id, "bin": bin_no}, 60, actor)
            self._set(order_id, task={"op": "restock", "command_id": cid, "bin": bin_no, "by": actor, "at": time.time()})
            self._history(order_id, actor, "stocking", RECEIVED, {"bin": bin_no, "command_id": cid})
        return cid, bin_no

    def begin_retrieve(self, kiosk: str, order_id: str, actor: str) -> tuple[str, int]:
        """Queue the retrieval of an order that must go back to stock."""
        with self.s._tx():
            r = self._need(order_id)
            if r[1] != kiosk:
                raise OrderError(409, f"order {order_id} is for kiosk {r[1]}")
            if r[7] not in BACK_TO_STOCK or r[8] is None:
                raise OrderError(409, f"order {order_id} is {r[7]}" + ("" if r[8] is None else f" in bin {r[8]}")
                                 + ": only an expired or cancelled order in a bin is retrieved")
            task = _loads(r[11])
            if task and self._running(task):
                raise OrderError(409, f"order {order_id} has a {task['op']} under way ({task['command_id']})")
            cid = self.s.queue_command(kiosk, "retrieve", {"order": order_id, "bin": r[8]}, 60, actor)
            self._set(order_id, task={"op": "retrieve", "command_id": cid, "bin": r[8], "by": actor, "at": time.time()})
            self._history(order_id, actor, "retrieving", r[7], {"bin": r[8], "command_id": cid})
        return cid, r[8]

    def _running(self, task: dict[str, Any]) -> bool:
        c = self.s._one("SELECT state FROM commands WHERE id = ?", (task.get("command_id"),))
        return c is not None and c[0] not in contract.TERMINAL

    # -- housekeeping -------------------------------------------------------------------------
    def expire_due(self, now: float | None = None) -> list[str]:
        """Orders past their pickup deadline: expired (a return-to-stock task
        when in a bin), their codes revoked. Returns their ids."""
        now = time.time() if now is None else now
        out = []
        with self.s._tx():
            for oid, st, b in self.s._all("SELECT id, state, bin FROM orders WHERE state IN (?, ?) AND deadline <= ?",
                                          (RECEIVED, STOCKED, now)):
                self._end_codes(oid, "revoked")
                self._set(oid, state=EXPIRED)
                self._history(oid, "bridge", "expired", EXPIRED, {"bin": b, "return_to_stock": b is not None}, now)
                out.append(oid)
        return out

    def _end_codes(self, order_id: str, state: str) -> None:
        self.s._exec("UPDATE pickup_codes SET state = ?, ended = ? WHERE order_id = ? AND state IN ('active', 'claimed')",
                     (state, time.time(), order_id))

    # -- what the kiosks report (event hooks, inside the store's transaction) --------------------
    def on_event(self, kiosk: str, ev: dict[str, Any], extra: dict[str, Any] | None) -> None:
        k = ev.get("k")
        if k == contract.K_SCAN and ev.get("ev") == "code":
            self._scan(kiosk, ev, (extra or {}).get("text"))
        elif k == contract.K_RESTOCK:
            self._stocked(kiosk, ev)
        elif k == contract.K_PICKUP:
            self._handed_over(kiosk, ev)
        elif k == contract.K_RETRIEVE:
            self._returned(kiosk, ev)
        elif k == contract.K_BUTTON and ev.get("name") == "call_pharmacist":
            self._open_consult(kiosk, None, "call", time.time())
        elif k == contract.K_STOCK and ev.get("ev") == "verified":
            self._verified(kiosk, ev)

    def _order_at(self, kiosk: str, ev: dict[str, Any]):
        oid = ev.get("order")
        r = self._row(oid, True) if isinstance(oid, str) else None
        return r if r is not None and r[1] == kiosk else None

    def _stocked(self, kiosk: str, ev: dict[str, Any]) -> None:
        r = self._order_at(kiosk, ev)
        if r is None:
            return
        task = _loads(r[11]) or {}
        by = task.get("by") if task.get("command_id") == ev.get("id") else None
        stocked = {"by": by or kiosk_actor(kiosk), "when_prepared": ev.get("t"), "command_id": ev.get("id"),
                   "label_check": "passed" if ev.get("label") == "checked" else "not_checked"}
        state = STOCKED if r[7] == RECEIVED else r[7]   # cancelled meanwhile: in a bin, to go back
        self._set(r[0], state=state, bin=ev.get("bin"), stocked=stocked, task=None)
        self._history(r[0], stocked["by"], "stocked", state, {"bin": ev.get("bin"), "when_prepared": ev.get("t"),
                                                               "label_check": stocked["label_check"],
                                                               "kiosk_seq": ev.get("s")})

    def _handed_over(self, kiosk: str, ev: dict[str, Any]) -> None:
        r = self._order_at(kiosk, ev)
        if r is None:
            return
        if r[7] in (DISPENSED, RETURNED):
            log.error("%s: a second pickup record (seq %s) for order %s, already %s", kiosk, ev.get("s"), r[0], r[7])
            return
        rel = _loads(r[13]) or {}
        d = {"when_handed_over": ev.get("t"), "kiosk_seq": ev.get("s"), "bin": ev.get("bin"),
             "command_id": ev.get("id"), "scan": ev.get("scan"), "recovered": bool(ev.get("recovered")),
             "released_by": rel.get("by"), "counselling": rel.get("counselling")}
        self.s._exec("UPDATE pickup_codes SET state = 'used', ended = ? WHERE order_id = ? AND state = 'claimed'",
                     (time.time(), r[0]))
        self._end_codes(r[0], "revoked")
        self._set(r[0], state=DISPENSED, bin=None, task=None, dispensed=d)
        self._close_consults(r[0], kiosk_actor(kiosk), "dispensed")
        self._history(r[0], kiosk_actor(kiosk), "dispensed", DISPENSED, d)

    def _returned(self, kiosk: str, ev: dict[str, Any]) -> None:
        r = self._order_at(kiosk, ev)
        if r is None:
            return
        task = _loads(r[11]) or {}
        by = task.get("by") if task.get("command_id") == ev.get("id") else kiosk_actor(kiosk)
        ret = {"by": by, "at": ev.get("t"), "bin": ev.get("bin"), "command_id": ev.get("id"), "from": r[7]}
        self._end_codes(r[0], "revoked")
        self._set(r[0], state=RETURNED, bin=None, task=None, returned=ret)
        self._history(r[0], by, "returned", RETURNED, {**ret, "kiosk_seq": ev.get("s")})

    def _verified(self, kiosk: str, ev: dict[str, Any]) -> None:
        """A technician looked into a bin a reset left uncertain. The order
        still there: a pickup cut short gave nothing, its code works again.
        The bin empty: the order is missing from the kiosk (most likely in
        the patient's hands after a cut mid-pickup, nobody can say): it is
        out of its bin, back to `received`, and the pharmacist is asked."""
        b = ev.get("bin")
        r = self.s._one(f"SELECT {_ORDER_COLS} FROM orders WHERE kiosk = ? AND bin = ?", (kiosk, b))
        if r is None:
            return
        actor = kiosk_actor(kiosk)
        if ev.get("present"):
            n = self.s._exec("UPDATE pickup_codes SET state = 'active', claim = NULL "
                             "WHERE order_id = ? AND state = 'claimed'", (r[0],)).rowcount
            self._history(r[0], actor, "bin_verified", r[7], {"bin": b, "present": True, "code_freed": n > 0})
            return
        self._end_codes(r[0], "revoked")
        state = RECEIVED if r[7] == STOCKED else r[7]
        self._set(r[0], state=state, bin=None, task=None)
        self._history(r[0], actor, "missing", state, {"bin": b, "kiosk_seq": ev.get("s")})
        self._open_consult(kiosk, r[0], "missing", time.time())

    def on_command_end(self, cmd: dict[str, Any]) -> None:
        """A restock, retrieval or scan's pickup that ended without moving
        the order lets go of what it held: the bin, the code's claim."""
        op, cid, st = cmd["op"], cmd["command_id"], cmd["state"]
        args = cmd.get("args") or {}
        if op in ("restock", "retrieve") and st != "succeeded":
            r = self._row(args.get("order"), True) if isinstance(args.get("order"), str) else None
            task = _loads(r[11]) if r is not None else None
            if task and task.get("command_id") == cid:
                self._set(r[0], task=None)
                self._history(r[0], "bridge" if cmd.get("reason") in ("not_sent", "no_answer") else kiosk_actor(cmd["kiosk"]),
                              f"{op}_failed", r[7], {"command_id": cid, "state": st, "reason": cmd.get("reason")})
        elif op == "pickup" and "scan" in args and st != "succeeded":
            c = self.s._one("SELECT hash, order_id FROM pickup_codes WHERE claim = ? AND state = 'claimed'", (cid,))
            if c is None:
                return
            outcome = (cmd.get("info") or {}).get("outcome")
            r = self._row(c[1])
            if outcome in ("released", "unknown"):
                # The door may have opened: the code stays spent until a
                # technician knows (a released pickup's record follows).
                self._history(c[1], kiosk_actor(cmd["kiosk"]), "dispense_interrupted", r[7] if r else "",
                              {"command_id": cid, "outcome": outcome, "reason": cmd.get("reason")})
                return
            self.s._exec("UPDATE pickup_codes SET state = 'active', claim = NULL WHERE hash = ?", (c[0],))
            self._history(c[1], kiosk_actor(cmd["kiosk"]), "dispense_failed", r[7] if r else "",
                          {"command_id": cid, "state": st, "reason": cmd.get("reason")})

    # -- a patient's scan ---------------------------------------------------------------------
    def _scan(self, kiosk: str, ev: dict[str, Any], text: str | None) -> None:
        seq, now = ev["s"], time.time()
        order_id, cid = None, None
        if text is None or codes.short_hash(text) != ev.get("h"):
            # A replay (the text goes out once) or a scan the kiosk no longer
            # waits on: recorded, never answered.
            result = "stale"
        else:
            result, order_id = self._judge(kiosk, text, now)
            if result == "dispense":
                cid = self._dispense(kiosk, order_id, seq)
                result = "dispensing"
            else:
                cid = self.s.queue_command(kiosk, "scan_refused", {"scan": seq, "why": result}, SCAN_ANSWER_TTL_S,
                                           None, f"the patient's scan {seq}")
        self.s._exec("INSERT INTO scans (kiosk, seq, t, h, order_id, result, command_id, decided) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                     (kiosk, seq, ev.get("t"), ev.get("h"), order_id, result, cid, now))

    def _judge(self, kiosk: str, text: str, now: float) -> tuple[str, str | None]:
        """What a code scanned at a kiosk means: ("dispense", order) or a
        refusal reason (contract.SCAN_REASONS) and the order if known."""
        wrong = self.s._one("SELECT COUNT(*) FROM scans WHERE kiosk = ? AND decided > ? AND result IN (?, ?, ?, ?)",
                            (kiosk, now - LOCK_S, *contract.SCAN_WRONG))[0]
        recent = self.s._one("SELECT COUNT(*) FROM scans WHERE kiosk = ? AND decided > ? AND result != 'stale'",
                             (kiosk, now - 60))[0]
        if wrong >= LOCK_FAILS or recent >= SCAN_RATE:
            return "locked_out", None
        c = self.s._one("SELECT order_id, kiosk, state, expires FROM pickup_codes WHERE hash = ?",
                        (codes.code_hash(text),))
        if c is None:
            return "unknown_code", None
        oid, ckiosk, cstate, expires = c
        if ckiosk != kiosk:
            return "other_kiosk", None
        r = self._row(oid, True)
        state = r[7]
        if cstate == "used" or state == DISPENSED:
            return "used", oid
        if cstate == "replaced":
            return "replaced", oid
        if state == EXPIRED or now > expires:
            return "expired", oid
        if state in (CANCELLED, RETURNED) or cstate == "revoked":
            return "cancelled", oid
        if cstate == "claimed":
            return "busy", oid
        if state == RECEIVED:
            return "not_stocked", oid
        if r[13] is None:
            reason = "counselling" if r[4] else "not_released"
            self._open_consult(kiosk, oid, "counselling" if r[4] else "release", now)
            return reason, oid
        k = self.s._one("SELECT status FROM kiosks WHERE id = ?", (kiosk,))
        st = _loads(k[0]) if k and k[0] else {}
        if st.get("service") or r[8] in (st.get("unverified") or []) or st.get("held"):
            return "unavailable", oid
        return "dispense", oid

    def _dispense(self, kiosk: str, order_id: str, seq: int) -> str:
        r = self._row(order_id)
        # The kiosk journals the pharmacist whose release it acts on.
        by = (_loads(r[13]) or {}).get("by")
        cid = self.s.queue_command(kiosk, "pickup", {"order": order_id, "bin": r[8], "scan": seq}, SCAN_ANSWER_TTL_S,
                                   by, f"the patient's scan {seq}")
        self.s._exec("UPDATE pickup_codes SET state = 'claimed', claim = ? WHERE order_id = ? AND state = 'active'",
                     (cid, order_id))
        self._history(order_id, kiosk_actor(kiosk), "dispensing", r[7], {"scan": seq, "command_id": cid, "bin": r[8]})
        return cid

    # -- the kiosk's screen -------------------------------------------------------------------
    def screen(self, kiosk: str, k: dict[str, Any] | None, now: float | None = None) -> dict[str, Any]:
        """What the kiosk's screen tells the patient now: a state name and,
        for some, when it ends. Never an order, a name or a medicine."""
        now = time.time() if now is None else now
        if k is None or not k.get("online"):
            return {"state": "offline"}
        st = k.get("status") or {}
        until = st.get("scanner_locked_until")
        if isinstance(until, (int, float)) and until > now:
            return {"state": "locked_out", "until": until}
        with self.s.lock:
            scan = self.s._one("SELECT seq, result, command_id, decided, order_id FROM scans "
                               "WHERE kiosk = ? AND result != 'stale' ORDER BY seq DESC LIMIT 1", (kiosk,))
            call = self.s._one("SELECT seen FROM consults WHERE kiosk = ? AND reason = 'call' AND state = 'open' "
                               "ORDER BY seen DESC LIMIT 1", (kiosk,))
            view = self._scan_view(scan, now) if scan else None
        if view and call and call[0] > scan[3]:
            view = None        # the patient pressed the button after the scan
        if view is None and call and now - call[0] < WAIT_S:
            return {"state": "calling", "since": call[0]}
        return view or {"state": "ready"}

    def _scan_view(self, scan, now: float) -> dict[str, Any] | None:
        seq, result, cid, decided, order_id = scan
        if result == "dispensing":
            c = self.s._command(cid)
            if c is None:
                return None
            if c["state"] in ("queued", "in_progress"):
                step = (c.get("info") or {}).get("step")
                name = {"waiting_open": "open_door", "waiting_close": "close_door",
                        "verifying": "close_door"}.get(step, "opening")
                return {"state": name, "since": decided}
            if now - c["updated"] > SHOW_S:
                return None
            if c["state"] == "succeeded":
                return {"state": "done", "since": c["updated"]}
            if c.get("reason") == "door_not_opened":
                return {"state": "door_timeout", "since": c["updated"]}
            return {"state": "problem", "since": c["updated"]}
        if result in ("counselling", "not_released"):
            r = self._row(order_id) if order_id else None
            if r is not None and r[13] is not None and now - decided < WAIT_S:
                return {"state": "rescan", "since": decided}
            open_ = self.s._one("SELECT 1 FROM consults WHERE order_id = ? AND state = 'open'", (order_id,))
            if open_ and now - decided < WAIT_S:
                return {"state": "pharmacist_will_call", "since": decided}
            return None
        if now - decided > SHOW_S:
            return None
        return {"state": result, "since": decided}

    # -- webhooks (order_history is their outbox) ----------------------------------------------
    def next_webhook(self, lease_s: float) -> dict[str, Any] | None:
        """The oldest undelivered history row, leased to this caller for
        lease_s (another bridge will not send it meanwhile); None if there
        is none, or if it waits for its next try: rows go out in order."""
        now = time.time()
        with self.s._tx():
            r = self.s._one("SELECT h.order_id, h.n, h.at, h.actor, h.event, h.state, h.detail, h.attempts, h.next_try, "
                            "o.kiosk, o.patient_ref FROM order_history h JOIN orders o ON o.id = h.order_id "
                            "WHERE h.delivered IS NULL ORDER BY h.at, h.order_id, h.n LIMIT 1")
            if r is None or r[8] > now:
                return None
            self.s._exec("UPDATE order_history SET next_try = ? WHERE order_id = ? AND n = ?", (now + lease_s, r[0], r[1]))
        return {"id": f"{r[0]}/{r[1]}", "type": f"order.{r[4]}", "order_id": r[0], "n": r[1], "at": r[2],
                "actor": r[3], "state": r[5], "detail": json.loads(r[6]), "kiosk": r[9], "patient_ref": r[10],
                "attempts": r[7]}

    def webhook_done(self, order_id: str, n: int, error: str | None, retry_at: float | None = None) -> None:
        with self.s._tx():
            if error is None:
                self.s._exec("UPDATE order_history SET delivered = ?, attempts = attempts + 1, last_error = NULL "
                             "WHERE order_id = ? AND n = ?", (time.time(), order_id, n))
            else:
                self.s._exec("UPDATE order_history SET attempts = attempts + 1, last_error = ?, next_try = ? "
                             "WHERE order_id = ? AND n = ?", (error[:500], retry_at or time.time(), order_id, n))

    def webhook_backlog(self) -> int:
        with self.s.lock:
            return self.s._one("SELECT COUNT(*) FROM order_history WHERE delivered IS NULL")[0]
