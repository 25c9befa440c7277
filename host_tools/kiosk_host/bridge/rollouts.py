"""Rollouts: a release taken to a set of kiosks, canaries first
(docs/ota.md).

    pending -> transferring -> staged -> rebooting -> confirmed
                                    \\-> failed        \\-> rolled_back

A kiosk's state follows its own journal: the K_OTA records (staging,
staged, switching, trial, confirmed, refused, trial_failed, rolled_back...)
are folded in by the store exactly once, in order, as they join the
contiguous prefix of the kiosk's events (Store.event_hooks), so several
bridges sharing one store agree. What the bridge does itself:

- offers the release (a signed "ota" command) to the kiosks whose turn it
  is: the first `canary` of the list, and the rest only once every canary
  is confirmed; again after 30 s without news (the kiosk resumes);
- answers each kiosk's request for chunks (a reply to the offer naming the
  file, offset and window) with that window, signed with the kiosk's key,
  on kiosk/<id>/ota;
- halts the rollout when a kiosk rolls back or fails (or on request): no
  one else is offered it, and kiosks still receiving or staged drop it.

The kiosk decides when to switch (idle) and whether the new firmware is
healthy; the bridge never restarts a kiosk.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from .. import contract, layout
from .releases import Releases

if TYPE_CHECKING:
    from .service import Bridge

log = logging.getLogger("kiosk_bridge")

PENDING, TRANSFERRING, STAGED, REBOOTING, CONFIRMED, ROLLED_BACK, FAILED = (
    "pending", "transferring", "staged", "rebooting", "confirmed", "rolled_back", "failed")
KIOSK_STATES = (PENDING, TRANSFERRING, STAGED, REBOOTING, CONFIRMED, ROLLED_BACK, FAILED)
RUNNING, COMPLETED, HALTED = "running", "completed", "halted"
OFFER_RETRY_S = 30.0      # no news from a kiosk offered the release: offer it again
WINDOW_MAX = 16           # chunks sent for one request at most
TRIAL_S = 120             # how long a new firmware has to prove itself, by default
# The kiosk's K_OTA record -> the state it puts the kiosk in.
FOLD = {
    "staging": TRANSFERRING, "resumed": TRANSFERRING, "staged": STAGED, "switching": REBOOTING, "trial": REBOOTING,
    "confirmed": CONFIRMED, "current": CONFIRMED, "trial_failed": ROLLED_BACK, "rolled_back": ROLLED_BACK,
    "refused": FAILED,
}
assert set(FOLD) <= set(contract.OTA_EVENTS)
# Refusals that are about now, not about the release: offer again later.
RETRY_LATER = ("on_trial", "expired", "not_yet_valid", "replayed")

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS rollouts (
        id TEXT PRIMARY KEY, release TEXT NOT NULL, canary INTEGER NOT NULL, trial_s INTEGER NOT NULL,
        state TEXT NOT NULL, reason TEXT, created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL,
        created_by TEXT, halted_by TEXT)""",
    """CREATE TABLE IF NOT EXISTS rollout_kiosks (
        rollout TEXT NOT NULL, kiosk TEXT NOT NULL, pos INTEGER NOT NULL, state TEXT NOT NULL, reason TEXT,
        cid TEXT, offered DOUBLE PRECISION, updated DOUBLE PRECISION, done BIGINT NOT NULL DEFAULT 0,
        fw_before TEXT, dropping INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (rollout, kiosk))""",
    "CREATE INDEX IF NOT EXISTS rollout_kiosks_cid ON rollout_kiosks (cid)",
    "CREATE INDEX IF NOT EXISTS rollout_kiosks_kiosk ON rollout_kiosks (kiosk)",
]


class RolloutError(Exception):
    """A request about rollouts the bridge refuses; status is the HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def chunk(key: bytes, release: str, f: int, o: int, data: bytes) -> bytes:
    """One chunk as the kiosk checks it (kiosk/link/ota.py)."""
    body = b"%s %d %d\n" % (release.encode(), f, o) + data
    return b"KOTA1 " + hmac.new(key, body, hashlib.sha256).hexdigest().encode() + b" " + body


class Rollouts:
    def __init__(self, bridge: "Bridge"):
        self.bridge = bridge
        self.store = bridge.store
        self.releases = Releases(self.store)
        self.store.migrate(SCHEMA)
        self.store.event_hooks.append(self._apply)

    # -- requests ----------------------------------------------------------------
    def create(self, release_id: str, kiosks: list[str] | str, canary: int, by: str | None,
               trial_s: int = TRIAL_S) -> dict[str, Any]:
        rel = self.releases.get(release_id)
        if rel is None:
            raise RolloutError(404, f"no release {release_id!r} (upload it first: POST /api/releases)")
        known = set(self.bridge.keys.ids())
        if kiosks == "all":
            ids = sorted(known)
        else:
            ids = list(kiosks)
            if len(set(ids)) != len(ids):
                raise RolloutError(422, "a kiosk is named twice")
            unknown = [k for k in ids if k not in known]
            if unknown:
                raise RolloutError(404, f"unknown kiosks: {', '.join(unknown[:10])}")
        if not ids:
            raise RolloutError(409, "no kiosks to update: none has a key yet")
        if canary < 0:
            raise RolloutError(422, "canary must be 0 or more")
        canary = min(canary, len(ids))
        rid = "ro-" + uuid.uuid4().hex[:12]
        now = time.time()
        s = self.store
        with s._tx():
            busy = s._all("SELECT rk.kiosk, r.id FROM rollout_kiosks rk JOIN rollouts r ON r.id = rk.rollout "
                          "WHERE r.state = ? ORDER BY rk.kiosk", (RUNNING,))
            clash = [f"{k} ({r})" for k, r in busy if k in ids]
            if clash:
                raise RolloutError(409, f"already in a running rollout: {', '.join(clash[:10])}; halt it first")
            fws = {k: v for k, v in s._all("SELECT id, fw FROM kiosks")}
            s._exec("INSERT INTO rollouts (id, release, canary, trial_s, state, created, updated, created_by) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (rid, release_id, canary, trial_s, RUNNING, now, now, by))
            s._many("INSERT INTO rollout_kiosks (rollout, kiosk, pos, state, updated, fw_before) "
                    "VALUES (?, ?, ?, ?, ?, ?)", [(rid, k, i, PENDING, now, fws.get(k)) for i, k in enumerate(ids)])
        log.info("rollout %s of %s (%s) to %d kiosks, canary %d, by %s", rid, release_id, rel["version"],
                 len(ids), canary, by)
        self.tick()
        return self.get(rid)

    def get(self, rid: str) -> dict[str, Any] | None:
        s = self.store
        with s.lock:
            r = s._one("SELECT r.id, r.release, r.canary, r.trial_s, r.state, r.reason, r.created, r.updated, "
                       "r.created_by, r.halted_by, rel.version, rel.size FROM rollouts r "
                       "JOIN releases rel ON rel.id = r.release WHERE r.id = ?", (rid,))
            if r is None:
                return None
            rows = s._all("SELECT kiosk, state, reason, done, updated, fw_before FROM rollout_kiosks "
                          "WHERE rollout = ? ORDER BY pos", (rid,))
        return {"rollout_id": r[0], "release_id": r[1], "version": r[10], "canary": r[2], "trial_s": r[3],
                "state": r[4], "reason": r[5], "created": r[6], "updated": r[7], "created_by": r[8],
                "halted_by": r[9],
                "kiosks": {k: st for k, st, *_ in rows},
                "detail": {k: {"state": st, "reason": why, "bytes": done, "size": r[11], "updated": upd,
                               "fw_before": fw} for k, st, why, done, upd, fw in rows}}

    def list(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.store.lock:
            ids = [x for (x,) in self.store._all("SELECT id FROM rollouts ORDER BY created DESC LIMIT ?", (limit,))]
        return [self.get(i) for i in ids]

    def halt(self, rid: str, by: str | None, reason: str | None = None) -> dict[str, Any]:
        ro = self.get(rid)
        if ro is None:
            raise RolloutError(404, f"no rollout {rid!r}")
        if ro["state"] != RUNNING:
            raise RolloutError(409, f"rollout {rid} is {ro['state']} already")
        self._halt(rid, reason or f"halted by {by or 'request'}", by)
        return self.get(rid)

    def _halt(self, rid: str, reason: str, by: str | None) -> None:
        """No one else is offered it; kiosks still receiving or staged are
        told to drop it, until they say they did (tick), so a kiosk that
        was offline does not switch to it later on its own."""
        s = self.store
        with s._tx():
            moved = s._exec("UPDATE rollouts SET state = ?, reason = ?, halted_by = ?, updated = ? "
                            "WHERE id = ? AND state = ?", (HALTED, reason, by, time.time(), rid, RUNNING)).rowcount
            if moved:
                s._exec("UPDATE rollout_kiosks SET state = ?, reason = ?, dropping = 1, offered = NULL, updated = ? "
                        "WHERE rollout = ? AND state IN (?, ?)",
                        (PENDING, "halted: dropping the release", time.time(), rid, TRANSFERRING, STAGED))
        if moved:
            log.warning("rollout %s halted: %s", rid, reason)
            self._drop(rid)

    def _drop(self, rid: str) -> None:
        """Tell the kiosks of a halted rollout that still hold its release to
        drop it; again every 30 s until one says it did."""
        s = self.store
        now = time.time()
        with s.lock:
            rel = s._one("SELECT release FROM rollouts WHERE id = ?", (rid,))[0]
            rows = s._all("SELECT kiosk, offered FROM rollout_kiosks WHERE rollout = ? AND dropping = 1", (rid,))
        for k, sent in rows:
            kiosk = self.store.kiosk(k)
            if kiosk is None or not kiosk["online"] or (sent is not None and now - sent < OFFER_RETRY_S):
                continue
            try:
                cid = self.bridge.send(k, "ota_abort", {"release": rel}, record=False)["command_id"]
            except Exception as e:   # no broker just now: the next tick tries again
                log.warning("%s: could not tell it to drop %s: %s", k, rel, e)
                continue
            with s._tx():
                s._exec("UPDATE rollout_kiosks SET cid = ?, offered = ? WHERE rollout = ? AND kiosk = ?",
                        (cid, now, rid, k))
            self.bridge._tell("rollout", k)

    # -- the bridge's own work (housekeeping thread, every second) ----------------------
    def tick(self) -> None:
        s = self.store
        with s.lock:
            running = s._all("SELECT id, release, canary, trial_s FROM rollouts WHERE state = ? ORDER BY created",
                             (RUNNING,))
            dropping = s._all("SELECT DISTINCT rollout FROM rollout_kiosks WHERE dropping = 1")
        for (rid,) in dropping:
            self._drop(rid)
        for rid, release, canary, trial_s in running:
            with s.lock:
                rows = s._all("SELECT kiosk, state, reason, offered, updated FROM rollout_kiosks WHERE rollout = ? "
                              "ORDER BY pos", (rid,))
            bad = [(k, st, why) for k, st, why, _, _ in rows if st in (ROLLED_BACK, FAILED)]
            if bad:
                k, st, why = bad[0]
                self._halt(rid, f"{k} {st.replace('_', ' ')}" + (f": {why}" if why else ""), None)
                continue
            if all(st == CONFIRMED for _, st, _, _, _ in rows):
                with s._tx():
                    s._exec("UPDATE rollouts SET state = ?, updated = ? WHERE id = ? AND state = ?",
                            (COMPLETED, time.time(), rid, RUNNING))
                log.info("rollout %s completed", rid)
                continue
            first = rows[:canary]
            turn = first if any(st != CONFIRMED for _, st, _, _, _ in first) else rows
            now = time.time()
            for k, st, _, offered, updated in turn:
                quiet = now - max(offered or 0, updated or 0) >= OFFER_RETRY_S
                if st == PENDING and (offered is None or quiet) or st == TRANSFERRING and quiet:
                    self._offer(rid, release, trial_s, k, offered)

    def _offer(self, rid: str, release: str, trial_s: int, kiosk: str, offered: float | None) -> None:
        k = self.store.kiosk(kiosk)
        if k is None or not k["online"]:
            return       # offered when it comes back
        rel = self.releases.get(release)
        parts = self.releases.parts(release)
        now = time.time()
        s = self.store
        with s._tx():    # claim it: one bridge offers, whichever gets here first
            claimed = s._exec("UPDATE rollout_kiosks SET offered = ? WHERE rollout = ? AND kiosk = ? AND "
                              + ("offered IS NULL" if offered is None else "offered = ?"),
                              (now, rid, kiosk) + (() if offered is None else (offered,))).rowcount
        if not claimed:
            return
        args = {"release": release, "version": rel["version"], "manifest": layout.digest(parts[0]),
                "msize": len(parts[0]), "size": rel["size"], "trial_s": trial_s}
        try:
            sent = self.bridge.send(kiosk, "ota", args, record=False)
        except Exception as e:
            log.warning("%s: could not offer %s: %s", kiosk, release, e)
            return
        with s._tx():
            s._exec("UPDATE rollout_kiosks SET cid = ? WHERE rollout = ? AND kiosk = ?", (sent["command_id"], rid, kiosk))
        log.info("%s: offered %s (%s) for rollout %s", kiosk, release, rel["version"], rid)

    # -- what kiosks say ------------------------------------------------------------------
    def reply(self, kiosk: str, msg: dict[str, Any]) -> bool:
        """A reply to an offer: a request for chunks, or how staging goes.
        False when the reply is not about an update."""
        cid = msg.get("id")
        s = self.store
        with s.lock:
            row = s._one("SELECT rk.rollout, r.release, rk.state, r.state FROM rollout_kiosks rk "
                         "JOIN rollouts r ON r.id = rk.rollout WHERE rk.cid = ? AND rk.kiosk = ?", (cid, kiosk))
        if row is None:
            return False
        rid, release, st, ro_state = row
        info = msg.get("info") if isinstance(msg.get("info"), dict) else {}
        now = time.time()
        if ro_state == HALTED and msg.get("state") == "succeeded" and "step" not in info:
            with s._tx():   # the answer to ota_abort: the kiosk holds nothing of it now
                s._exec("UPDATE rollout_kiosks SET dropping = 0, reason = ? WHERE rollout = ? AND kiosk = ? "
                        "AND dropping = 1", ("halted", rid, kiosk))
            return True
        if msg.get("state") == "rejected" and info.get("reason") in RETRY_LATER:
            with s._tx():   # about now, not the release: offer again soon
                s._exec("UPDATE rollout_kiosks SET offered = ?, updated = ? WHERE rollout = ? AND kiosk = ?",
                        (now - OFFER_RETRY_S + 5, now, rid, kiosk))
            return True
        with s._tx():
            s._exec("UPDATE rollout_kiosks SET updated = ? WHERE rollout = ? AND kiosk = ?", (now, rid, kiosk))
        if info.get("step") == "transferring" and ro_state == RUNNING and st in (PENDING, TRANSFERRING):
            self._send_window(kiosk, rid, release, info)
        return True

    def _send_window(self, kiosk: str, rid: str, release: str, info: dict[str, Any]) -> None:
        f, o, n, done = info.get("file"), info.get("offset"), info.get("window"), info.get("done")
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in (f, o, n)):
            return
        key = self.bridge.keys.get(kiosk)
        parts = self.releases.parts(release)
        client = self.bridge.client
        if key is None or client is None or f >= len(parts) or o > len(parts[f]):
            return
        sent = 0
        while sent < min(n, WINDOW_MAX) and f < len(parts):
            data = parts[f][o:o + contract.OTA_CHUNK]
            if data:
                client.publish(f"kiosk/{kiosk}/{contract.OTA_TOPIC}", chunk(key, release, f, o, data), qos=0)
                sent += 1
            o += len(data)
            if o >= len(parts[f]):
                f, o = f + 1, 0
        if isinstance(done, int):
            with self.store._tx():
                self.store._exec("UPDATE rollout_kiosks SET done = ? WHERE rollout = ? AND kiosk = ?", (done, rid, kiosk))
            self.bridge._tell("rollout", kiosk)

    def _apply(self, kiosk: str, ev: dict[str, Any], extra: Any = None) -> None:
        """A kiosk's event, in order, once (inside the store's transaction):
        its K_OTA records move its state in the rollout of that release; a
        gate's refusal of an offer fails it."""
        s = self.store
        k = ev.get("k")
        if k == contract.K_OTA and isinstance(ev.get("release"), str):
            new = FOLD.get(ev.get("ev"))
            if ev.get("ev") == "refused" and ev.get("why") in RETRY_LATER:
                new = None
            row = s._one("SELECT rk.rollout, rk.state FROM rollout_kiosks rk JOIN rollouts r ON r.id = rk.rollout "
                         "WHERE rk.kiosk = ? AND r.release = ? ORDER BY r.created DESC LIMIT 1",
                         (kiosk, ev["release"]))
        elif k == contract.K_REFUSED and isinstance(ev.get("id"), str) and ev.get("op") == "ota":
            new = None if ev.get("why") in RETRY_LATER else FAILED
            row = s._one("SELECT rollout, state FROM rollout_kiosks WHERE kiosk = ? AND cid = ?", (kiosk, ev["id"]))
        else:
            return
        if row is None:
            return
        rid, cur = row
        if k == contract.K_OTA and ev.get("ev") == "aborted":
            # Dropped as the halt asked: the kiosk holds nothing of it.
            s._exec("UPDATE rollout_kiosks SET dropping = 0, state = ?, reason = ?, updated = ? "
                    "WHERE rollout = ? AND kiosk = ? AND dropping = 1 AND state IN (?, ?, ?)",
                    (PENDING, "halted", time.time(), rid, kiosk, PENDING, TRANSFERRING, STAGED))
        elif k == contract.K_OTA and ev.get("ev") == "switching":
            # It switched before the halt reached it: nothing left to drop.
            s._exec("UPDATE rollout_kiosks SET dropping = 0 WHERE rollout = ? AND kiosk = ?", (rid, kiosk))
        if new is None:
            return
        if cur in (ROLLED_BACK, FAILED) or (new not in (ROLLED_BACK, FAILED)
                                            and KIOSK_STATES.index(new) <= KIOSK_STATES.index(cur)):
            return         # only forward; a failure is final
        why = ev.get("why")
        if ev.get("file"):
            why = f"{why}: {ev['file']}"
        s._exec("UPDATE rollout_kiosks SET state = ?, reason = ?, updated = ? WHERE rollout = ? AND kiosk = ?",
                (new, why if new in (ROLLED_BACK, FAILED) else None, time.time(), rid, kiosk))

    def running_for(self, kiosk: str) -> dict[str, Any] | None:
        """The running rollout a kiosk is in, as {rollout_id, version, state}."""
        with self.store.lock:
            r = self.store._one("SELECT r.id, rel.version, rk.state FROM rollout_kiosks rk JOIN rollouts r ON "
                                "r.id = rk.rollout JOIN releases rel ON rel.id = r.release WHERE rk.kiosk = ? AND "
                                "r.state = ?", (kiosk, RUNNING))
        return None if r is None else {"rollout_id": r[0], "version": r[1], "state": r[2]}
