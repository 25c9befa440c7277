"""The bridge's audit store: every kiosk event exactly once, the commands
the host sent and how they ended, telemetry for the temperature history,
and each kiosk's last known state.

SQLite by default (one file, no server); PostgreSQL for a shared store
behind several bridge processes. Both speak the same SQL here: `?`
placeholders (rewritten to `%s` for psycopg), `ON CONFLICT DO NOTHING` for
idempotent inserts, JSON kept as text.

Events are keyed by (kiosk, journal, seq): a journal's sequence numbers are
never reused, and a kiosk whose journal starts again (wiped, a replacement
board) starts a new journal id, so the triple names one record for ever and
a replayed record is a no-op insert. Events from kiosks older than journal
ids have the journal "". `journals.acked` is the contiguous prefix this store
holds of each journal (what the bridge may acknowledge); ranges the kiosk
reported lost (rotated away, unreadable) count as held, since they can never
arrive, and are kept in `lost` as custody gaps. A kiosk's current journal is
the one its newest birth names; its status is folded from that journal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
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

SCHEMA_VERSION = 2
# Each journal of each kiosk, with the contiguous prefix this store holds.
JOURNALS = """CREATE TABLE IF NOT EXISTS journals (
        kiosk TEXT NOT NULL, journal TEXT NOT NULL, acked BIGINT NOT NULL DEFAULT 0,
        first_seen DOUBLE PRECISION NOT NULL, retired INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (kiosk, journal))"""
EVENTS = """CREATE TABLE IF NOT EXISTS events (
        kiosk TEXT NOT NULL, journal TEXT NOT NULL DEFAULT '', seq BIGINT NOT NULL, boot INTEGER, t BIGINT,
        kind TEXT, body TEXT NOT NULL, stored DOUBLE PRECISION NOT NULL, PRIMARY KEY (kiosk, journal, seq))"""
EVENTS_INDEX = "CREATE INDEX IF NOT EXISTS events_journal_kind ON events (kiosk, journal, kind, seq)"
# Custody gaps: records a kiosk reported gone before this store had them.
LOST = """CREATE TABLE IF NOT EXISTS lost (
        kiosk TEXT NOT NULL, journal TEXT NOT NULL DEFAULT '', first BIGINT NOT NULL, last BIGINT NOT NULL,
        why TEXT, noticed DOUBLE PRECISION, PRIMARY KEY (kiosk, journal, first))"""
SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS kiosks (
        id TEXT PRIMARY KEY, online INTEGER NOT NULL DEFAULT 0, boot INTEGER, fw TEXT, board TEXT,
        birth TEXT, tele TEXT, why TEXT, seen DOUBLE PRECISION, acked BIGINT NOT NULL DEFAULT 0,
        journal_last BIGINT NOT NULL DEFAULT 0, status TEXT, journal TEXT)""",
    JOURNALS, EVENTS, EVENTS_INDEX, LOST,
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
    # Kiosk records about a command id this store never issued: a command
    # signed by someone else with the kiosk's key (a key read from a board).
    """CREATE TABLE IF NOT EXISTS unknown_commands (
        kiosk TEXT NOT NULL, id TEXT NOT NULL, kind TEXT, op TEXT, seq BIGINT, t BIGINT,
        noticed DOUBLE PRECISION NOT NULL, PRIMARY KEY (kiosk, id))""",
]

# From schema 1 (events and lost keyed by kiosk and seq alone, no journals):
# CREATE TABLE IF NOT EXISTS adds no column and changes no key, so each
# table is rebuilt once with its rows under the journal "" (the journal of
# kiosks older than journal ids), and the prefixes move to `journals`.
MIGRATE_1_TO_2 = [
    "ALTER TABLE kiosks ADD COLUMN journal TEXT",
    "ALTER TABLE events RENAME TO events_v1",
    "ALTER TABLE lost RENAME TO lost_v1",
    "DROP INDEX IF EXISTS events_kind",
    EVENTS, EVENTS_INDEX, LOST,
    "INSERT INTO events (kiosk, journal, seq, boot, t, kind, body, stored) "
    "SELECT kiosk, '', seq, boot, t, kind, body, stored FROM events_v1",
    "INSERT INTO lost (kiosk, journal, first, last, why, noticed) "
    "SELECT kiosk, '', first, last, 'rotated', NULL FROM lost_v1",
    "DROP TABLE events_v1",
    "DROP TABLE lost_v1",
    JOURNALS,
    "INSERT INTO journals (kiosk, journal, acked, first_seen) SELECT id, '', acked, 0 FROM kiosks",
    "UPDATE kiosks SET journal = ''",
]

SCHEMA_LOCK = 0x6b696f736b      # the advisory lock id under which PostgreSQL schema changes are made
TERMINAL = contract.TERMINAL
STATES = contract.STATES
LINK_OPS = ("resend",)    # the bridge's own requests to the link, never recorded as commands


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) else None


class StoreError(Exception):
    pass


def _older(msg: dict[str, Any], boot: int, last: int, held: dict[str, Any], held_boot: int, held_last: int) -> bool:
    """Is this birth of the current journal older than the one held? By boot,
    then by the connection count within the boot (`conns`), or for kiosks
    without it, by the journal's newest seq."""
    if boot != held_boot:
        return boot < held_boot
    n, m = msg.get("conns"), held.get("conns")
    if isinstance(n, int) and isinstance(m, int):
        return n < m or (n == m and msg.get("conn") != held.get("conn"))
    return last < held_last


def _private(path: Path) -> None:
    """The store holds the pharmacy's records: readable by its owner only
    (the file, its WAL and shared-memory files; a folder made for it is
    0700, an existing one is left as it is)."""
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            os.chmod(p, 0o600)
        except OSError:
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
                if not Path(path).parent.exists():
                    Path(path).parent.mkdir(parents=True, mode=0o700)
                os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
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
        self._upgrade()
        # Who asked for each command, and why (an excursion's clearing
        # reason): added to stores made before there were users.
        self.migrate(SCHEMA, (("commands", "actor", "TEXT"), ("commands", "note", "TEXT")))
        with self._tx():
            self._exec("INSERT INTO meta (name, value) VALUES ('schema', ?) ON CONFLICT DO NOTHING",
                       (str(SCHEMA_VERSION),))
        if self.kind == "sqlite" and path != ":memory:":
            _private(Path(path))

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

    def _upgrade(self) -> None:
        """Bring a store made by an older bridge up to SCHEMA_VERSION, in
        one transaction (all or nothing), before the tables are made."""
        with self._tx():
            self.schema_lock()
            if self.kind == "postgresql":
                tables = {r[0] for r in self._all("SELECT table_name FROM information_schema.tables "
                                                  "WHERE table_schema = current_schema()")}
            else:
                tables = {r[0] for r in self._all("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "events" not in tables or "meta" in tables:
                return      # a new store, or one already versioned
            for stmt in MIGRATE_1_TO_2:
                self._exec(stmt)
                if self.kind == "postgresql" and stmt.startswith("ALTER TABLE") and "RENAME TO" in stmt:
                    # The old key keeps its name (events_pkey): free it for the new table.
                    old = stmt.split()[2]
                    self._exec(f"ALTER TABLE {old}_v1 RENAME CONSTRAINT {old}_pkey TO {old}_v1_pkey")

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
    def add_events(self, kiosk: str, events: list[dict[str, Any]], lost: Iterable[tuple] = (),
                   journal: str = "") -> tuple[int, int, list[dict[str, Any]]]:
        """Insert a batch of one kiosk journal's verified events (dicts with s,
        b, t, k), ignoring ones already held; advance that journal's
        contiguous prefix; and apply the events that joined it, in seq order,
        to the kiosk's status (when it is the kiosk's current journal) and
        its commands. lost: (first, last[, why]) ranges the kiosk reported
        gone. All in one transaction, committed before returning: only then
        may the bridge acknowledge. Whichever bridge process advances the
        prefix applies those events, once, in order, so several bridges
        sharing the work keep each kiosk's order.
        Returns (how many were new, the new acked, the outcomes of commands
        that became terminal)."""
        return self.add_batches([(kiosk, journal, events, lost)])[(kiosk, journal)]

    def add_batches(self, batches: list[tuple[str, str, list[dict[str, Any]], Iterable[tuple]]],
                    transient: dict[tuple[str, int], dict[str, Any]] | None = None
                    ) -> dict[tuple[str, str], tuple[int, int, list[dict[str, Any]]]]:
        """add_events for several (kiosk, journal) batches (each named once)
        in ONE transaction: one commit for a whole ingest batch instead of one
        per kiosk. Kiosks are locked in id order, so two bridges storing
        overlapping sets cannot deadlock. Returns {(kiosk, journal): (new,
        acked, done)}; nothing is committed, and so nothing may be
        acknowledged, unless all of it is. `transient` holds, by (kiosk,
        seq), fields an event carried that are never stored (a scanned
        code's text): the event hooks see them once, if the event joins the
        prefix now."""
        now = time.time()
        out = {}
        with self._tx():
            for kiosk, journal, events, lost in sorted(batches, key=lambda b: (b[0], b[1])):
                out[(kiosk, journal)] = self._add(kiosk, journal, events, lost, now, transient)
        return out

    def _add(self, kiosk: str, journal: str, events: list[dict[str, Any]], lost, now: float, transient=None):
        rows = [(kiosk, journal, e["s"], e.get("b"), e.get("t"), e.get("k"), _dumps(e), now) for e in events]
        if self._lock_kiosk(kiosk) is None:     # the first we hear of it: this journal is its current one
            self._exec("UPDATE kiosks SET journal = ? WHERE id = ?", (journal, kiosk))
        acked = self._journal(kiosk, journal, now)
        new = self._many("INSERT INTO events (kiosk, journal, seq, boot, t, kind, body, stored) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", rows)
        self._lost(kiosk, journal, lost, now)
        upto = self._advance(kiosk, journal, acked)
        done = self._apply(kiosk, journal, acked, upto, transient) if upto > acked else []
        self._exec("UPDATE kiosks SET seen = ? WHERE id = ?", (now, kiosk))    # heard from, whatever it said
        return new, upto, done

    def _lock_kiosk(self, kiosk: str) -> str | None:
        """Lock the kiosk's row (made if new); its current journal."""
        self._exec("INSERT INTO kiosks (id) VALUES (?) ON CONFLICT DO NOTHING", (kiosk,))
        row = self._one("SELECT journal FROM kiosks WHERE id = ?" + (" FOR UPDATE" if self.kind == "postgresql" else ""),
                        (kiosk,))
        return row[0]

    def _journal(self, kiosk: str, journal: str, now: float) -> int:
        """The journal's row (made if new); its acked prefix."""
        self._exec("INSERT INTO journals (kiosk, journal, acked, first_seen) VALUES (?, ?, 0, ?) ON CONFLICT DO NOTHING",
                   (kiosk, journal, now))
        return self._one("SELECT acked FROM journals WHERE kiosk = ? AND journal = ?", (kiosk, journal))[0]

    def _lost(self, kiosk: str, journal: str, ranges: Iterable[tuple], now: float) -> None:
        rows = []
        for r in ranges:
            a, b, why = (r[0], r[1], r[2] if len(r) > 2 else "rotated")
            if isinstance(a, int) and isinstance(b, int) and 0 < a <= b:
                rows.append((kiosk, journal, a, b, why, now))
        self._many("INSERT INTO lost (kiosk, journal, first, last, why, noticed) VALUES (?, ?, ?, ?, ?, ?) "
                   "ON CONFLICT DO NOTHING", rows)

    def _apply(self, kiosk: str, journal: str, after: int, upto: int,
               transient=None) -> list[dict[str, Any]]:
        """The events after..upto of a journal, in order: into the kiosk's
        status if it is the current journal, into their commands always."""
        row = self._one("SELECT status, journal FROM kiosks WHERE id = ?", (kiosk,))
        fold = row is not None and row[1] == journal
        st = (_loads(row[0]) if row[0] else kstatus.empty()) if fold else None
        done = []
        for (body,) in self._all("SELECT body FROM events WHERE kiosk = ? AND journal = ? AND seq > ? AND seq <= ? "
                                 "ORDER BY seq", (kiosk, journal, after, upto)):
            ev = json.loads(body)
            if fold:
                kstatus.apply(st, ev)
            done += self._command_news(kiosk, ev)
            r = kstatus.reading_of(ev)
            if r:   # the sample that raised a warning or an excursion belongs in the history too
                self._exec("INSERT INTO telemetry (kiosk, t, sensor, temp_centi, rh_centi) VALUES (?, ?, ?, ?, ?)",
                           (kiosk, r[1], r[0], r[2], r[3]))
            extra = transient.get((kiosk, ev["s"])) if transient else None
            for hook in self.event_hooks:
                self._hook(hook, kiosk, ev, extra)
        if fold:
            self._exec("UPDATE kiosks SET status = ? WHERE id = ?", (_dumps(st), kiosk))
        return done

    def _command_news(self, kiosk: str, ev: dict[str, Any]) -> list[dict[str, Any]]:
        """The journal is the authoritative outcome of a command: an `op` event
        ends it, a `refused` one rejects it, unless the refusal is of a copy
        (contract.COPY_REFUSALS: a forged or replayed message with the same
        id), which is only noted in the command's history. A record about an
        id this store never issued is kept in unknown_commands: the kiosk
        acted on (or refused) a command signed by someone else."""
        cid, k = ev.get("id"), ev.get("k")
        if not isinstance(cid, str) or k not in (contract.K_OP, contract.K_REFUSED, contract.K_PICKUP,
                                                 contract.K_RESTOCK):
            return []
        copy = k == contract.K_REFUSED and ev.get("why") in contract.COPY_REFUSALS
        row = self._one("SELECT kiosk FROM commands WHERE id = ?", (cid,))
        if row is None or row[0] != kiosk:
            if not copy and ev.get("op") not in LINK_OPS:
                self._exec("INSERT INTO unknown_commands (kiosk, id, kind, op, seq, t, noticed) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                           (kiosk, cid, k, _text(ev.get("op")), ev.get("s"), ev.get("t"), time.time()))
            return []
        if copy:
            self._note_copy(cid, str(ev.get("why")))
            return []
        if k == contract.K_OP and ev.get("state") in TERMINAL:
            info = {k: ev[k] for k in ("step", "outcome", "opened") if k in ev}
            r = self._update(cid, ev["state"], ev.get("reason"), info, "event", kiosk)
        elif k == contract.K_REFUSED:
            r = self._update(cid, "rejected", ev.get("why"), {"detail": ev["detail"]} if "detail" in ev else {},
                             "event", kiosk)
        else:
            return []
        return [r[0]] if r and r[1] else []

    def note_copy(self, cmd_id: str, why: str, kiosk: str) -> bool:
        """A kiosk refused a copy of this command (a `rejected` reply whose
        reason is in contract.COPY_REFUSALS): kept in its history, never its
        outcome. False for an id this store does not know for that kiosk."""
        with self._tx():
            row = self._one("SELECT kiosk FROM commands WHERE id = ?", (cmd_id,))
            if row is None or row[0] != kiosk:
                return False
            self._note_copy(cmd_id, why)
            return True

    def _note_copy(self, cmd_id: str, why: str) -> None:
        r = self._one("SELECT state, history FROM commands WHERE id = ?", (cmd_id,))
        hist = json.loads(r[1])
        if any(h.get("by") == "copy" and h.get("reason") == why for h in hist):
            return
        hist.append({"state": r[0], "at": time.time(), "by": "copy", "reason": why})
        self._exec("UPDATE commands SET history = ? WHERE id = ?", (_dumps(hist), cmd_id))

    def unknown_commands(self, kiosk: str | None = None) -> list[dict[str, Any]]:
        """Records about command ids this store never issued, oldest first."""
        q = "SELECT kiosk, id, kind, op, seq, t, noticed FROM unknown_commands"
        with self.lock:
            rows = self._all(q + " WHERE kiosk = ? ORDER BY noticed" if kiosk else q + " ORDER BY noticed",
                             (kiosk,) if kiosk else ())
        return [{"kiosk": r[0], "id": r[1], "kind": r[2], "op": r[3], "seq": r[4], "t": r[5], "noticed": r[6]}
                for r in rows]

    def _advance(self, kiosk: str, journal: str, acked: int) -> int:
        start = acked
        lost = self._all("SELECT first, last FROM lost WHERE kiosk = ? AND journal = ? AND last > ? ORDER BY first",
                         (kiosk, journal, acked))
        while True:
            progressed = False
            for (s,) in self._all("SELECT seq FROM events WHERE kiosk = ? AND journal = ? AND seq > ? ORDER BY seq "
                                  "LIMIT 2000", (kiosk, journal, acked)):
                if s != acked + 1:
                    break
                acked, progressed = s, True
            for a, b in lost:
                if a <= acked + 1 <= b:
                    acked, progressed = b, True
            if not progressed:
                break
        if acked != start:
            self._exec("UPDATE journals SET acked = ? WHERE kiosk = ? AND journal = ? AND acked < ?",
                       (acked, kiosk, journal, acked))
            self._exec("UPDATE kiosks SET acked = ? WHERE id = ? AND journal = ?", (acked, kiosk, journal))
        return acked

    def current(self, kiosk: str) -> tuple[str, int]:
        """(the kiosk's current journal, its acked prefix): what to ack."""
        with self.lock:
            row = self._one("SELECT journal, acked FROM kiosks WHERE id = ?", (kiosk,))
            return (row[0] or "", row[1]) if row else ("", 0)

    def acked(self, kiosk: str, journal: str | None = None) -> int:
        """The contiguous prefix held of a journal (the kiosk's current one
        if not named)."""
        if journal is None:
            return self.current(kiosk)[1]
        with self.lock:
            row = self._one("SELECT acked FROM journals WHERE kiosk = ? AND journal = ?", (kiosk, journal))
            return row[0] if row else 0

    def adopt_acked(self, kiosk: str, upto: int, journal: str | None = None) -> int:
        """The kiosk says a host already acknowledged up to `upto` (records this
        store never saw, acked by an earlier store): they will never come again,
        so the prefix starts there."""
        with self._tx():
            cur = self._lock_kiosk(kiosk)
            j = (cur or "") if journal is None else journal
            if cur is None:
                self._exec("UPDATE kiosks SET journal = ? WHERE id = ?", (j, kiosk))
            acked = self._journal(kiosk, j, time.time())
            if upto > acked:
                self._exec("UPDATE journals SET acked = ? WHERE kiosk = ? AND journal = ?", (upto, kiosk, j))
                self._exec("UPDATE kiosks SET acked = ? WHERE id = ? AND journal = ?", (upto, kiosk, j))
                self._apply(kiosk, j, upto, self._advance(kiosk, j, upto))
                acked = self._one("SELECT acked FROM journals WHERE kiosk = ? AND journal = ?", (kiosk, j))[0]
            return acked

    def mark_lost(self, kiosk: str, journal: str, ranges: Iterable[tuple], why: str = "reported"
                  ) -> tuple[int, list[dict[str, Any]]]:
        """The kiosk says these records of a journal are gone for good (a
        resend reply, a birth): kept as custody gaps, and the prefix moves past
        them. Returns (the new acked, the outcomes of commands that became
        terminal)."""
        with self._tx():
            self._lock_kiosk(kiosk)
            now = time.time()
            acked = self._journal(kiosk, journal, now)
            self._lost(kiosk, journal, [(r[0], r[1], why) for r in ranges], now)
            upto = self._advance(kiosk, journal, acked)
            return upto, (self._apply(kiosk, journal, acked, upto) if upto > acked else [])

    def gaps(self, kiosk: str | None = None) -> list[dict[str, Any]]:
        """Custody gaps: ranges of records a kiosk reported gone before this
        store had them (rotated away, unreadable), oldest noticed first."""
        q = "SELECT kiosk, journal, first, last, why, noticed FROM lost"
        with self.lock:
            rows = self._all(q + " WHERE kiosk = ? ORDER BY noticed, first" if kiosk else q + " ORDER BY noticed, first",
                             (kiosk,) if kiosk else ())
        return [{"kiosk": r[0], "journal": r[1], "from": r[2], "to": r[3], "why": r[4], "noticed": r[5]} for r in rows]

    def first_after(self, kiosk: str, seq: int, journal: str | None = None) -> int | None:
        """The lowest stored seq above `seq` (where a gap ends), or None."""
        j = self.current(kiosk)[0] if journal is None else journal
        with self.lock:
            row = self._one("SELECT MIN(seq) FROM events WHERE kiosk = ? AND journal = ? AND seq > ?", (kiosk, j, seq))
            return row[0] if row else None

    def events(self, kiosk: str, after: int = 0, limit: int = 100, kind: str | None = None,
               newest_first: bool = False, journal: str | None = None) -> list[dict[str, Any]]:
        """A page of one journal's events (the kiosk's current journal if not
        named)."""
        j = self.current(kiosk)[0] if journal is None else journal
        q = "SELECT seq, boot, t, kind, body, stored, journal FROM events WHERE kiosk = ? AND journal = ?"
        p: list[Any] = [kiosk, j]
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
        return [{"seq": r[0], "boot": r[1], "t": r[2], "kind": r[3], "body": _loads(r[4]), "stored": r[5],
                 "journal": r[6]} for r in rows]

    def journals(self, kiosk: str) -> list[dict[str, Any]]:
        """Every journal of a kiosk this store has held, first seen first."""
        with self.lock:
            rows = self._all("SELECT journal, acked, first_seen, retired FROM journals WHERE kiosk = ? "
                             "ORDER BY first_seen", (kiosk,))
        return [{"journal": r[0], "acked": r[1], "first_seen": r[2], "retired": bool(r[3])} for r in rows]

    def count_events(self, kiosk: str | None = None) -> int:
        with self.lock:
            if kiosk is None:
                return self._one("SELECT COUNT(*) FROM events")[0]
            return self._one("SELECT COUNT(*) FROM events WHERE kiosk = ?", (kiosk,))[0]

    def seqs(self, kiosk: str, journal: str | None = None) -> list[int]:
        j = self.current(kiosk)[0] if journal is None else journal
        with self.lock:
            return [r[0] for r in self._all("SELECT seq FROM events WHERE kiosk = ? AND journal = ? ORDER BY seq",
                                            (kiosk, j))]

    # -- kiosks ----------------------------------------------------------------
    def set_state(self, kiosk: str, msg: dict[str, Any]) -> tuple[bool, list[dict[str, Any]]]:
        """A birth or a death. Both are retained on the broker, so they are seen
        again on every subscribe, and anyone may replay an old one:

        - a birth counts when it is newer than the one held: a later boot, or
          a later connection of the same boot (`conns`), of the same journal;
          or the first birth of a journal this kiosk never had (a wiped or
          replaced board), which retires the old journal for good;
        - a death counts only for the connection of the birth held (its
          `conn` nonce): an old will cannot take a newer session offline.
          (Kiosks older than nonces: a death of the current boot or later.)

        A birth resets the status to its snapshot and re-applies the stored
        events after it; its lost ranges become custody gaps and the prefix
        moves past them. Returns (whether the kiosk is online now, the
        outcomes of commands that became terminal)."""
        online = bool(msg.get("online"))
        boot = msg.get("boot") if isinstance(msg.get("boot"), int) else 0
        now = time.time()
        with self._tx():
            cur_j = self._lock_kiosk(kiosk)
            cur = self._one("SELECT boot, online, journal_last, birth FROM kiosks WHERE id = ?", (kiosk,))
            held = _loads(cur[3]) or {}
            if not online:
                if isinstance(held.get("conn"), str):
                    counts = msg.get("conn") == held["conn"]
                else:
                    counts = cur[0] is None or boot >= cur[0]
                if not counts:
                    return bool(cur[1]), []        # the will of another connection
                self._exec("UPDATE kiosks SET online = 0, why = ?, seen = ? WHERE id = ?",
                           (str(msg.get("why") or "lost"), now, kiosk))
                return False, []
            j = msg.get("journal") if isinstance(msg.get("journal"), dict) else {}
            jid = j.get("id") if isinstance(j.get("id"), str) else ""
            last = j.get("last") if isinstance(j.get("last"), int) else 0
            retired = self._one("SELECT retired FROM journals WHERE kiosk = ? AND journal = ?", (kiosk, jid))
            if retired and retired[0]:
                return bool(cur[1]), []            # a birth of a journal this kiosk left behind
            if jid == cur_j and cur[0] is not None and _older(msg, boot, last, held, cur[0], cur[2]):
                return bool(cur[1]), []            # an old retained birth
            acked = self._journal(kiosk, jid, now)
            if cur_j is not None and jid != cur_j:
                self._exec("UPDATE journals SET retired = 1 WHERE kiosk = ? AND journal = ?", (kiosk, cur_j))
                if cur_j == "" and jid and acked == 0 and isinstance(j.get("acked"), int) and j["acked"] > 0:
                    acked = self._claim_legacy(kiosk, jid)
            self._exec("UPDATE kiosks SET journal = ? WHERE id = ?", (jid, kiosk))
            theirs = j.get("acked") if isinstance(j.get("acked"), int) else 0
            if theirs > acked and self._one("SELECT MIN(seq) FROM events WHERE kiosk = ? AND journal = ?",
                                            (kiosk, jid))[0] is None:
                # Records up to theirs were acknowledged before this store knew
                # this journal (an earlier store): they will not come again.
                self._exec("UPDATE journals SET acked = ? WHERE kiosk = ? AND journal = ?", (theirs, kiosk, jid))
                acked = theirs
            self._lost(kiosk, jid, [(r[0], r[1], "reported") for r in j.get("lost") or []
                                    if isinstance(r, list) and len(r) == 2], now)
            upto = self._advance(kiosk, jid, acked)
            st = kstatus.from_birth(msg)
            done = []
            for (body,) in self._all("SELECT body FROM events WHERE kiosk = ? AND journal = ? AND seq > ? "
                                     "AND seq <= ? ORDER BY seq", (kiosk, jid, min(st["as_of"], acked), upto)):
                ev = json.loads(body)
                if ev.get("s", 0) > st["as_of"]:
                    kstatus.apply(st, ev)
                if ev.get("s", 0) > acked:
                    done += self._command_news(kiosk, ev)
            self._exec("UPDATE kiosks SET online = 1, boot = ?, fw = ?, board = ?, birth = ?, why = NULL, seen = ?, "
                       "journal_last = ?, status = ?, acked = ? WHERE id = ?",
                       (boot, msg.get("fw"), msg.get("board"), _dumps(msg), now, last, _dumps(st), upto, kiosk))
            return True, done

    def _claim_legacy(self, kiosk: str, jid: str) -> int:
        """A kiosk's first birth with a journal id after a firmware update:
        its journal went on from the one this store holds without an id (its
        ack pointer is past 0), so those records are this journal's."""
        self._exec("UPDATE events SET journal = ? WHERE kiosk = ? AND journal = ''", (jid, kiosk))
        self._exec("UPDATE lost SET journal = ? WHERE kiosk = ? AND journal = ''", (jid, kiosk))
        acked = self._one("SELECT acked FROM journals WHERE kiosk = ? AND journal = ''", (kiosk,))
        acked = acked[0] if acked else 0
        self._exec("UPDATE journals SET acked = ? WHERE kiosk = ? AND journal = ?", (acked, kiosk, jid))
        self._exec("DELETE FROM journals WHERE kiosk = ? AND journal = ''", (kiosk,))
        return acked

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
            rows = self._all("SELECT id, online, boot, fw, board, birth, tele, why, seen, acked, journal_last, status, "
                             "journal FROM kiosks ORDER BY id")
        unknown: dict[str, list[dict[str, Any]]] = {}
        for u in self.unknown_commands():
            unknown.setdefault(u["kiosk"], []).append(u)
        gaps: dict[str, list[dict[str, Any]]] = {}
        for g in self.gaps():
            gaps.setdefault(g["kiosk"], []).append(g)
        out = [self._kiosk(r) for r in rows]
        for k in out:
            k["unknown_commands"] = unknown.get(k["id"], [])
            k["gaps"] = gaps.get(k["id"], [])
        return out

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
            r = self._one("SELECT id, online, boot, fw, board, birth, tele, why, seen, acked, journal_last, status, "
                          "journal FROM kiosks WHERE id = ?", (kiosk,))
        if not r:
            return None
        k = self._kiosk(r)
        k["unknown_commands"] = self.unknown_commands(kiosk)
        k["gaps"] = self.gaps(kiosk)
        return k

    @staticmethod
    def _kiosk(r) -> dict[str, Any]:
        return {"id": r[0], "online": bool(r[1]), "boot": r[2], "fw": r[3], "board": r[4], "birth": _loads(r[5]),
                "tele": _loads(r[6]), "why": r[7], "seen": r[8], "acked": r[9], "journal_last": r[10],
                "status": _loads(r[11]) or kstatus.empty(), "journal": r[12]}

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
