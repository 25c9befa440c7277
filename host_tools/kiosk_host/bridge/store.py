"""The bridge's audit store: every kiosk event exactly once, the commands
the host sent and how they ended, telemetry for the temperature history,
and each kiosk's last known state.

SQLite by default (one file, no server); PostgreSQL for a shared store
behind several bridge processes. Both speak the same SQL here: `?`
placeholders (rewritten to `%s` for psycopg), `ON CONFLICT DO NOTHING` for
idempotent inserts, JSON kept as text.

Events are keyed by (kiosk, seq): a kiosk's sequence numbers are global
and never reused, across boots, so the pair names one record for ever and a
replayed record is a no-op insert. `acked` is the contiguous prefix this
store holds (what the bridge may acknowledge); ranges the kiosk reported
lost (journal_overflow) count as held, since they can never arrive.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlparse

from .. import contract
from . import status as kstatus

log = logging.getLogger("kiosk_bridge")

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS kiosks (
        id TEXT PRIMARY KEY, online INTEGER NOT NULL DEFAULT 0, boot INTEGER, fw TEXT, board TEXT,
        birth TEXT, tele TEXT, why TEXT, seen DOUBLE PRECISION, acked BIGINT NOT NULL DEFAULT 0,
        journal_last BIGINT NOT NULL DEFAULT 0, status TEXT)""",
    """CREATE TABLE IF NOT EXISTS events (
        kiosk TEXT NOT NULL, seq BIGINT NOT NULL, boot INTEGER, t BIGINT, kind TEXT, body TEXT NOT NULL,
        stored DOUBLE PRECISION NOT NULL, PRIMARY KEY (kiosk, seq))""",
    "CREATE INDEX IF NOT EXISTS events_kind ON events (kiosk, kind, seq)",
    """CREATE TABLE IF NOT EXISTS lost (
        kiosk TEXT NOT NULL, first BIGINT NOT NULL, last BIGINT NOT NULL, PRIMARY KEY (kiosk, first))""",
    """CREATE TABLE IF NOT EXISTS commands (
        id TEXT PRIMARY KEY, kiosk TEXT NOT NULL, op TEXT NOT NULL, args TEXT NOT NULL, state TEXT NOT NULL,
        reason TEXT, info TEXT, created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL,
        exp BIGINT NOT NULL, history TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS commands_kiosk ON commands (kiosk, created)",
    # Commands made inside a store transaction (an answer to a patient's
    # scan, a restock the bridge placed) wait here until published, so a
    # command is never sent for a change that was not committed.
    """CREATE TABLE IF NOT EXISTS command_outbox (
        id TEXT PRIMARY KEY, kiosk TEXT NOT NULL, iat BIGINT NOT NULL, sent DOUBLE PRECISION)""",
    "CREATE INDEX IF NOT EXISTS commands_state ON commands (state)",
    """CREATE TABLE IF NOT EXISTS telemetry (
        kiosk TEXT NOT NULL, t BIGINT NOT NULL, sensor TEXT NOT NULL, temp_centi INTEGER, rh_centi INTEGER)""",
    "CREATE INDEX IF NOT EXISTS telemetry_kiosk ON telemetry (kiosk, t)",
]

SCHEMA_LOCK = 0x6b696f736b      # the advisory lock id under which PostgreSQL schema changes are made
TERMINAL = contract.TERMINAL
STATES = contract.STATES


class StoreError(Exception):
    pass


def _dumps(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"), sort_keys=True)


def _loads(s: str | None) -> Any:
    return None if s is None else json.loads(s)


class Store:
    """One connection, used under a lock: the bridge's ingest thread and the
    HTTP handlers share it. Writes are batched by the caller."""

    def __init__(self, url: str):
        self.url = url
        self.lock = threading.RLock()
        u = urlparse(url)
        if u.scheme in ("postgresql", "postgres"):
            try:
                import psycopg
            except ImportError:
                raise StoreError("a postgresql:// store needs the psycopg package (pip install 'psycopg[binary]')") from None
            try:
                self.db = psycopg.connect(url, autocommit=True)
            except Exception as e:  # psycopg.OperationalError and friends
                raise StoreError(f"cannot open the store: {e}") from None
            self.kind = "postgresql"
            self.integrity = psycopg.IntegrityError
        elif u.scheme == "sqlite" or "://" not in url:
            # sqlite:///relative/path or sqlite:////absolute/path, as SQLAlchemy writes them
            path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else url
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            try:
                self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as e:
                raise StoreError(f"cannot open the store {path}: {e}") from None
            self.kind = "sqlite"
            self.integrity = sqlite3.IntegrityError
        else:
            raise StoreError(f"unsupported store URL {url!r}: use a file path, sqlite:///PATH or postgresql://...")
        # Called inside the transaction that applies each event in seq order:
        # hook(kiosk, event, transient fields the event carried or None).
        self.event_hooks: list = []
        # Called inside the transaction in which a command became terminal: hook(command).
        self.command_hooks: list = []
        # Who asked for each command, and why (an excursion's clearing
        # reason): added to stores made before there were users.
        self.migrate(SCHEMA, (("commands", "actor", "TEXT"), ("commands", "note", "TEXT")))

    def migrate(self, schema: list[str], columns: tuple[tuple[str, str, str], ...] = ()) -> None:
        """Create what a schema list needs and add (table, column, type)
        columns a store made before them lacks (idempotent); other modules'
        tables use this too."""
        with self._tx():
            self.schema_lock()
            for stmt in schema:
                self._exec(stmt)
            for table, column, decl in columns:
                self._column(table, column, decl)

    # -- plumbing --------------------------------------------------------------
    @contextlib.contextmanager
    def _tx(self):
        """One transaction under the lock. SQLite takes its write lock at the
        start (BEGIN IMMEDIATE), so a read-then-update is atomic across
        bridge processes; PostgreSQL rows are locked with FOR UPDATE."""
        with self.lock:
            if self.kind == "postgresql":
                with self.db.transaction():
                    yield
                return
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.db.rollback()
                raise
            self.db.commit()

    def schema_lock(self) -> None:
        """In a transaction that creates or changes tables: on PostgreSQL two
        processes doing it at once collide (or deadlock on ALTER TABLE), so
        an advisory lock takes them in turn. SQLite's BEGIN IMMEDIATE
        already does."""
        if self.kind == "postgresql":
            self._exec("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))

    def _column(self, table: str, column: str, decl: str) -> None:
        if self.kind == "postgresql":
            self._exec(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {decl}")
        elif column not in [r[1] for r in self._all(f"PRAGMA table_info({table})")]:
            self._exec(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    @contextlib.contextmanager
    def _savepoint(self):
        """Inside a transaction: what the block writes is undone if it
        raises; the rest of the transaction stands."""
        if self.kind == "postgresql":
            with self.db.transaction():     # nested: a savepoint
                yield
            return
        self.db.execute("SAVEPOINT hook")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK TO SAVEPOINT hook")
            self.db.execute("RELEASE SAVEPOINT hook")
            raise
        self.db.execute("RELEASE SAVEPOINT hook")

    def _hook(self, hook, *args) -> None:
        """Run an event or command hook in a savepoint. One that fails (a
        bug, or a record no hook foresaw) is logged and undone, and the
        custody record goes on: the event is stored and acknowledged
        rather than sent again for ever."""
        try:
            with self._savepoint():
                hook(*args)
        except Exception:
            log.exception("a store hook failed on %r; its changes are undone, the record is kept", args[:2])

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.kind == "postgresql" else sql

    def _exec(self, sql: str, params: Iterable[Any] = ()):
        cur = self.db.cursor()
        cur.execute(self._sql(sql), tuple(params))
        return cur

    def _many(self, sql: str, rows: list[tuple]) -> int:
        """Run one statement per row; how many rows it changed."""
        if not rows:
            return 0
        cur = self.db.cursor()
        cur.executemany(self._sql(sql), rows)
        return max(cur.rowcount, 0)

    def _all(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        return self._exec(sql, params).fetchall()

    def _one(self, sql: str, params: Iterable[Any] = ()):
        return self._exec(sql, params).fetchone()

    def close(self) -> None:
        with self.lock:
            self.db.close()

    # -- events ----------------------------------------------------------------
    def add_events(self, kiosk: str, events: list[dict[str, Any]],
                   lost: list[tuple[int, int]] = ()) -> tuple[int, int, list[dict[str, Any]]]:
        """Insert a batch of one kiosk's verified events (dicts with s, b, t, k),
        ignoring ones already held; advance the contiguous prefix; and apply
        the events that joined it, in seq order, to the kiosk's status and its
        commands. All in one transaction, committed before returning: only
        then may the bridge acknowledge. Whichever bridge process advances the
        prefix applies those events, once, in order, so several bridges sharing
        the work keep each kiosk's order.
        Returns (how many were new, the new acked, the outcomes of commands
        that became terminal)."""
        return self.add_batches([(kiosk, events, lost)])[kiosk]

    def add_batches(self, batches: list[tuple[str, list[dict[str, Any]], list[tuple[int, int]]]],
                    transient: dict[tuple[str, int], dict[str, Any]] | None = None
                    ) -> dict[str, tuple[int, int, list[dict[str, Any]]]]:
        """add_events for several kiosks (each named once) in ONE transaction:
        one commit for a whole ingest batch instead of one per kiosk. Each
        kiosk is handled exactly as add_events does; kiosks are locked in id
        order, so two bridges storing overlapping sets cannot deadlock.
        Returns {kiosk: (new, acked, done)}; nothing is committed, and so
        nothing may be acknowledged, unless all of it is. `transient` holds,
        by (kiosk, seq), fields an event carried that are never stored (a
        scanned code's text): the event hooks see them once, if the event
        joins the prefix now."""
        now = time.time()
        out = {}
        with self._tx():
            for kiosk, events, lost in sorted(batches, key=lambda b: b[0]):
                out[kiosk] = self._add(kiosk, events, lost, now, transient)
        return out

    def _add(self, kiosk: str, events: list[dict[str, Any]], lost, now: float, transient=None):
        rows = [(kiosk, e["s"], e.get("b"), e.get("t"), e.get("k"), _dumps(e), now) for e in events]
        acked = self._lock_kiosk(kiosk)
        new = self._many("INSERT INTO events (kiosk, seq, boot, t, kind, body, stored) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", rows)
        self._many("INSERT INTO lost (kiosk, first, last) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                   [(kiosk, a, b) for a, b in lost])
        upto = self._advance(kiosk, acked)
        done = self._apply(kiosk, acked, upto, transient) if upto > acked else []
        self._exec("UPDATE kiosks SET seen = ? WHERE id = ?", (now, kiosk))    # heard from, whatever it said
        return new, upto, done

    def _lock_kiosk(self, kiosk: str) -> int:
        self._exec("INSERT INTO kiosks (id) VALUES (?) ON CONFLICT DO NOTHING", (kiosk,))
        row = self._one("SELECT acked FROM kiosks WHERE id = ?" + (" FOR UPDATE" if self.kind == "postgresql" else ""),
                        (kiosk,))
        return row[0]

    def _apply(self, kiosk: str, after: int, upto: int, transient=None) -> list[dict[str, Any]]:
        row = self._one("SELECT status FROM kiosks WHERE id = ?", (kiosk,))
        st = _loads(row[0]) if row and row[0] else kstatus.empty()
        done = []
        for (body,) in self._all("SELECT body FROM events WHERE kiosk = ? AND seq > ? AND seq <= ? ORDER BY seq",
                                 (kiosk, after, upto)):
            ev = json.loads(body)
            kstatus.apply(st, ev)
            done += self._command_news(kiosk, ev)
            r = kstatus.reading_of(ev)
            if r:   # the sample that raised a warning or an excursion belongs in the history too
                self._exec("INSERT INTO telemetry (kiosk, t, sensor, temp_centi, rh_centi) VALUES (?, ?, ?, ?, ?)",
                           (kiosk, r[1], r[0], r[2], r[3]))
            extra = transient.get((kiosk, ev["s"])) if transient else None
            for hook in self.event_hooks:
                self._hook(hook, kiosk, ev, extra)
        self._exec("UPDATE kiosks SET status = ? WHERE id = ?", (_dumps(st), kiosk))
        return done

    def _command_news(self, kiosk: str, ev: dict[str, Any]) -> list[dict[str, Any]]:
        """The journal is the authoritative outcome of a command: an `op` event
        ends it, a `refused` one rejects it."""
        cid = ev.get("id")
        if not isinstance(cid, str):
            return []
        if ev.get("k") == contract.K_OP and ev.get("state") in TERMINAL:
            info = {k: ev[k] for k in ("step", "outcome", "opened") if k in ev}
            r = self._update(cid, ev["state"], ev.get("reason"), info, "event", kiosk)
        elif ev.get("k") == contract.K_REFUSED:
            r = self._update(cid, "rejected", ev.get("why"), {"detail": ev["detail"]} if "detail" in ev else {},
                             "event", kiosk)
        else:
            return []
        return [r[0]] if r and r[1] else []

    def _advance(self, kiosk: str, acked: int) -> int:
        start = acked
        lost = self._all("SELECT first, last FROM lost WHERE kiosk = ? AND last > ? ORDER BY first", (kiosk, acked))
        while True:
            progressed = False
            for (s,) in self._all("SELECT seq FROM events WHERE kiosk = ? AND seq > ? ORDER BY seq LIMIT 2000",
                                  (kiosk, acked)):
                if s != acked + 1:
                    break
                acked, progressed = s, True
            for a, b in lost:
                if a <= acked + 1 <= b:
                    acked, progressed = b, True
            if not progressed:
                break
        if acked != start:
            self._exec("UPDATE kiosks SET acked = ? WHERE id = ? AND acked < ?", (acked, kiosk, acked))
        return acked

    def acked(self, kiosk: str) -> int:
        with self.lock:
            row = self._one("SELECT acked FROM kiosks WHERE id = ?", (kiosk,))
            return row[0] if row else 0

    def adopt_acked(self, kiosk: str, upto: int) -> int:
        """The kiosk says a host already acknowledged up to `upto` (records this
        store never saw, acked by an earlier store): they will never come again,
        so the prefix starts there."""
        with self._tx():
            acked = self._lock_kiosk(kiosk)
            if upto > acked:
                self._exec("UPDATE kiosks SET acked = ? WHERE id = ?", (upto, kiosk))
                self._apply(kiosk, upto, self._advance(kiosk, upto))
                acked = self._one("SELECT acked FROM kiosks WHERE id = ?", (kiosk,))[0]
            return acked

    def first_after(self, kiosk: str, seq: int) -> int | None:
        """The lowest stored seq above `seq` (where a gap ends), or None."""
        with self.lock:
            row = self._one("SELECT MIN(seq) FROM events WHERE kiosk = ? AND seq > ?", (kiosk, seq))
            return row[0] if row else None

    def events(self, kiosk: str, after: int = 0, limit: int = 100, kind: str | None = None,
               newest_first: bool = False) -> list[dict[str, Any]]:
        q = "SELECT seq, boot, t, kind, body, stored FROM events WHERE kiosk = ?"
        p: list[Any] = [kiosk]
        if newest_first:
            if after:
                q += " AND seq < ?"
                p.append(after)
        else:
            q += " AND seq > ?"
            p.append(after)
        if kind:
            q += " AND kind = ?"
            p.append(kind)
        q += " ORDER BY seq " + ("DESC" if newest_first else "ASC") + " LIMIT ?"
        p.append(limit)
        with self.lock:
            rows = self._all(q, p)
        return [{"seq": r[0], "boot": r[1], "t": r[2], "kind": r[3], "body": _loads(r[4]), "stored": r[5]} for r in rows]

    def count_events(self, kiosk: str | None = None) -> int:
        with self.lock:
            if kiosk is None:
                return self._one("SELECT COUNT(*) FROM events")[0]
            return self._one("SELECT COUNT(*) FROM events WHERE kiosk = ?", (kiosk,))[0]

    def seqs(self, kiosk: str) -> list[int]:
        with self.lock:
            return [r[0] for r in self._all("SELECT seq FROM events WHERE kiosk = ? ORDER BY seq", (kiosk,))]

    # -- kiosks ----------------------------------------------------------------
    def set_state(self, kiosk: str, msg: dict[str, Any]) -> bool:
        """A birth or a death. Both are retained on the broker, so they are seen
        again on every subscribe: a death only counts for the current boot or a
        newer one. A birth resets the status to its snapshot and re-applies the
        stored events after it. Returns whether the kiosk is online now."""
        online = bool(msg.get("online"))
        boot = msg.get("boot") if isinstance(msg.get("boot"), int) else 0
        with self._tx():
            self._lock_kiosk(kiosk)
            cur = self._one("SELECT boot, online, acked FROM kiosks WHERE id = ?", (kiosk,))
            if online:
                if cur[0] is not None and boot < cur[0]:
                    return bool(cur[1])            # an old retained birth
                j = msg.get("journal") if isinstance(msg.get("journal"), dict) else {}
                st = kstatus.from_birth(msg)
                for (body,) in self._all("SELECT body FROM events WHERE kiosk = ? AND seq > ? AND seq <= ? ORDER BY seq",
                                         (kiosk, st["as_of"], cur[2])):
                    kstatus.apply(st, json.loads(body))
                self._exec("UPDATE kiosks SET online = 1, boot = ?, fw = ?, board = ?, birth = ?, why = NULL, seen = ?, "
                           "journal_last = ?, status = ? WHERE id = ?",
                           (boot, msg.get("fw"), msg.get("board"), _dumps(msg), time.time(),
                            j.get("last") if isinstance(j.get("last"), int) else 0, _dumps(st), kiosk))
                return True
            if cur[0] is not None and boot < cur[0]:
                return bool(cur[1])                # the will of an earlier boot
            self._exec("UPDATE kiosks SET online = 0, why = ?, seen = ? WHERE id = ?",
                       (str(msg.get("why") or "lost"), time.time(), kiosk))
            return False

    def set_tele(self, rows: list[tuple[str, dict[str, Any]]]) -> None:
        """A batch of telemetry messages: each kiosk's latest, and one sample per
        sensor for the temperature history."""
        now = time.time()
        samples = []
        latest: dict[str, dict[str, Any]] = {}
        for kiosk, m in rows:
            latest[kiosk] = m
            t = m.get("t") if isinstance(m.get("t"), int) else int(now)
            temps = m.get("temp_centi") if isinstance(m.get("temp_centi"), dict) else {}
            rhs = m.get("rh_centi") if isinstance(m.get("rh_centi"), dict) else {}
            for name in sorted(set(temps) | set(rhs)):
                tc, rc = temps.get(name), rhs.get(name)
                samples.append((kiosk, t, name, tc if isinstance(tc, int) else None, rc if isinstance(rc, int) else None))
        with self._tx():
            statuses = {}
            for kiosk in sorted(latest):     # locked in id order, as add_batches does: no deadlock
                self._exec("INSERT INTO kiosks (id) VALUES (?) ON CONFLICT DO NOTHING", (kiosk,))
                row = self._one("SELECT status FROM kiosks WHERE id = ?"
                                + (" FOR UPDATE" if self.kind == "postgresql" else ""), (kiosk,))
                statuses[kiosk] = _loads(row[0]) if row and row[0] else kstatus.empty()
            for kiosk, m in rows:   # every message's readings: the newest wins
                kstatus.telemetry(statuses[kiosk], m)
            for kiosk, m in latest.items():
                self._exec("UPDATE kiosks SET tele = ?, seen = ?, status = ? WHERE id = ?",
                           (_dumps(m), now, _dumps(statuses[kiosk]), kiosk))
            self._many("INSERT INTO telemetry (kiosk, t, sensor, temp_centi, rh_centi) VALUES (?, ?, ?, ?, ?)", samples)

    def kiosks(self) -> list[dict[str, Any]]:
        with self.lock:
            rows = self._all("SELECT id, online, boot, fw, board, birth, tele, why, seen, acked, journal_last, status "
                             "FROM kiosks ORDER BY id")
        return [self._kiosk(r) for r in rows]

    def open_excursions(self) -> int:
        """Excursions not yet cleared, across the fleet (the metrics gauge).
        Statuses are stored canonically (_dumps: sorted keys, no spaces), so an
        empty set is exactly `"excursions":{}`: only the kiosks with one are
        read and parsed, not the whole fleet on every scrape."""
        with self.lock:
            rows = self._all("SELECT status FROM kiosks WHERE status LIKE ?", ('%"excursions":{"%',))
        return sum(len((_loads(r[0]) or {}).get("excursions") or {}) for r in rows)

    def kiosk(self, kiosk: str) -> dict[str, Any] | None:
        with self.lock:
            r = self._one("SELECT id, online, boot, fw, board, birth, tele, why, seen, acked, journal_last, status "
                          "FROM kiosks WHERE id = ?", (kiosk,))
        return self._kiosk(r) if r else None

    @staticmethod
    def _kiosk(r) -> dict[str, Any]:
        return {"id": r[0], "online": bool(r[1]), "boot": r[2], "fw": r[3], "board": r[4], "birth": _loads(r[5]),
                "tele": _loads(r[6]), "why": r[7], "seen": r[8], "acked": r[9], "journal_last": r[10],
                "status": _loads(r[11]) or kstatus.empty()}

    def telemetry(self, kiosk: str, since: int) -> list[tuple[int, str, int | None, int | None]]:
        with self.lock:
            return [tuple(r) for r in self._all(
                "SELECT t, sensor, temp_centi, rh_centi FROM telemetry WHERE kiosk = ? AND t >= ? ORDER BY t",
                (kiosk, since))]

    # -- commands --------------------------------------------------------------
    def add_command(self, cmd_id: str, kiosk: str, op: str, args: dict[str, Any], exp: int,
                    actor: str | None = None, note: str | None = None) -> dict[str, Any]:
        """A command as sent: actor is the user who asked, note why (both
        kept with it for ever)."""
        now = time.time()
        hist = [{"state": "queued", "at": now, "by": "bridge"}]
        with self._tx():
            self._exec("INSERT INTO commands (id, kiosk, op, args, state, created, updated, exp, history, actor, note) "
                       "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
                       (cmd_id, kiosk, op, _dumps(args), now, now, exp, _dumps(hist), actor, note))
        return self.command(cmd_id)

    def update_command(self, cmd_id: str, state: str, reason: str | None = None, info: dict | None = None,
                       by: str = "reply", kiosk: str | None = None) -> tuple[dict[str, Any], bool] | None:
        """Move a command forward. A terminal state is final: later news is kept
        in the history only. Returns (command, became_terminal), or None for an
        unknown id or one that belongs to another kiosk."""
        with self._tx():
            return self._update(cmd_id, state, reason, info, by, kiosk)

    def _update(self, cmd_id, state, reason, info, by, kiosk):
        if state not in STATES:
            return None
        now = time.time()
        r = self._one("SELECT state, history, kiosk FROM commands WHERE id = ?", (cmd_id,))
        if r is None or (kiosk is not None and r[2] != kiosk):
            return None
        cur, hist = r[0], json.loads(r[1])
        entry = {"state": state, "at": now, "by": by}
        if reason:
            entry["reason"] = reason
        if state == "in_progress" and isinstance((info or {}).get("step"), str):
            entry["step"] = info["step"]     # each step the kiosk reports, with its time
        if any(all(h.get(k) == entry.get(k) for k in ("state", "reason", "by", "step")) for h in hist):
            return self._command(cmd_id), False    # heard before (a replayed event or reply)
        hist.append(entry)
        moves = cur not in TERMINAL and (state in TERMINAL or STATES.index(state) >= STATES.index(cur))
        if moves:
            self._exec("UPDATE commands SET state = ?, reason = ?, info = ?, updated = ?, history = ? WHERE id = ?",
                       (state, reason, _dumps(info or {}), now, _dumps(hist), cmd_id))
        else:
            self._exec("UPDATE commands SET history = ? WHERE id = ?", (_dumps(hist), cmd_id))
        cmd = self._command(cmd_id)
        if moves and state in TERMINAL:
            for hook in self.command_hooks:
                self._hook(hook, cmd)
        return cmd, moves and state in TERMINAL

    def queue_command(self, kiosk: str, op: str, args: dict[str, Any], ttl_s: int, actor: str | None = None,
                      note: str | None = None) -> str:
        """Inside a transaction: a command to send once it commits (into the
        command outbox); returns its id. actor: the person it acts for."""
        cid = uuid.uuid4().hex
        now = time.time()
        iat = int(now)
        hist = [{"state": "queued", "at": now, "by": "bridge"}]
        self._exec("INSERT INTO commands (id, kiosk, op, args, state, created, updated, exp, history, actor, note) "
                   "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
                   (cid, kiosk, op, _dumps(args), now, now, iat + ttl_s, _dumps(hist), actor, note))
        self._exec("INSERT INTO command_outbox (id, kiosk, iat) VALUES (?, ?, ?)", (cid, kiosk, iat))
        return cid

    def take_unsent(self, max_age_s: float) -> list[dict[str, Any]]:
        """Commands in the outbox not yet sent, oldest first, each taken by
        this caller only (another bridge sharing the store gets none of
        them). Those older than max_age_s are too late to send: they end
        failed (not_sent) instead."""
        now = time.time()
        out = []
        with self._tx():
            for cid, iat in self._all("SELECT id, iat FROM command_outbox WHERE sent IS NULL ORDER BY iat, id"):
                if self._exec("UPDATE command_outbox SET sent = ? WHERE id = ? AND sent IS NULL",
                              (now, cid)).rowcount != 1:
                    continue
                if now - iat > max_age_s:
                    self._update(cid, "failed", "not_sent", {"detail": "the bridge stopped before sending it"},
                                 "bridge", None)
                    continue
                c = self._command(cid)
                if c is not None:
                    c["iat"] = iat
                    out.append(c)
        return out

    def command(self, cmd_id: str) -> dict[str, Any] | None:
        with self.lock:
            return self._command(cmd_id)

    def _command(self, cmd_id: str) -> dict[str, Any] | None:
        r = self._one("SELECT id, kiosk, op, args, state, reason, info, created, updated, exp, history, actor, note "
                      "FROM commands WHERE id = ?", (cmd_id,))
        if r is None:
            return None
        return {"command_id": r[0], "kiosk": r[1], "op": r[2], "args": _loads(r[3]), "state": r[4], "reason": r[5],
                "info": _loads(r[6]) or {}, "created": r[7], "updated": r[8], "exp": r[9], "history": _loads(r[10]),
                "actor": r[11], "note": r[12]}

    def commands(self, kiosk: str, limit: int = 50, op: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            ids = [r[0] for r in self._all("SELECT id FROM commands WHERE kiosk = ?" + (" AND op = ?" if op else "")
                                           + " ORDER BY created DESC LIMIT ?",
                                           (kiosk, op, limit) if op else (kiosk, limit))]
        return [self.command(i) for i in ids]

    def active_commands(self) -> dict[str, list[dict[str, Any]]]:
        """Every command still queued or in progress, by kiosk: what a door
        that stands open may be open for."""
        with self.lock:
            rows = self._all("SELECT id, kiosk, op, args, state FROM commands WHERE state IN ('queued', 'in_progress')")
        out: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            out.setdefault(r[1], []).append({"command_id": r[0], "op": r[2], "args": _loads(r[3]), "state": r[4]})
        return out

    def stale_commands(self, now: float) -> list[dict[str, Any]]:
        """Commands still queued after their expiry: the kiosk never took them."""
        with self.lock:
            ids = [r[0] for r in self._all("SELECT id FROM commands WHERE state = 'queued' AND exp < ?", (int(now),))]
        return [self.command(i) for i in ids]

    def command_counts(self) -> dict[tuple[str, str], int]:
        with self.lock:
            return {(r[0], r[1]): r[2] for r in self._all("SELECT op, state, COUNT(*) FROM commands GROUP BY op, state")}
