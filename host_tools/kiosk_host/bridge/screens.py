"""The kiosks' screens: the tablet (or panel) in kiosk mode at each kiosk that
shows the patient what to do, /screen/{kiosk}.

A screen is not a person and has no staff login: it holds a credential of
its own, for its kiosk only, that lets it read that kiosk's screen state
and ask for a pharmacist, nothing else. A technician pairs it: they ask
the bridge for a pairing link (valid 10 minutes, good once), open it on the
tablet, and the tablet trades it for its credential, kept in an HttpOnly
cookie. Only hashes are stored. Pairing again, or revoking, ends the
screens paired before.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

from .store import Store

PAIRING_S = 600
COOKIE = "kiosk_screen"
COOKIE_MAX_AGE_S = 400 * 86400   # the longest browsers keep a cookie

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS screens (
        hash TEXT PRIMARY KEY, kiosk TEXT NOT NULL, kind TEXT NOT NULL, created DOUBLE PRECISION NOT NULL,
        actor TEXT NOT NULL, expires DOUBLE PRECISION, ended DOUBLE PRECISION)""",
    "CREATE INDEX IF NOT EXISTS screens_kiosk ON screens (kiosk, kind)",
]


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Screens:
    def __init__(self, store: Store):
        self.s = store
        store.migrate(SCHEMA)

    def pairing(self, kiosk: str, actor: str) -> tuple[str, float]:
        """A one-time pairing secret for a screen at this kiosk, and when it
        stops working."""
        secret = secrets.token_urlsafe(24)
        now = time.time()
        with self.s._tx():
            self.s._exec("INSERT INTO screens (hash, kiosk, kind, created, actor, expires) VALUES (?, ?, 'pairing', ?, ?, ?)",
                         (_hash(secret), kiosk, now, actor, now + PAIRING_S))
        return secret, now + PAIRING_S

    def pair(self, kiosk: str, pairing: str) -> str | None:
        """Trade a pairing secret for the screen's credential (None if the
        secret is unknown, used, expired or for another kiosk). The kiosk's
        other screens stop working: one screen per kiosk."""
        now = time.time()
        with self.s._tx():
            r = self.s._one("SELECT kiosk, actor, expires, ended FROM screens WHERE hash = ? AND kind = 'pairing'",
                            (_hash(pairing),))
            if r is None or r[0] != kiosk or r[3] is not None or r[2] < now:
                return None
            self.s._exec("UPDATE screens SET ended = ? WHERE hash = ?", (now, _hash(pairing)))
            self.s._exec("UPDATE screens SET ended = ? WHERE kiosk = ? AND kind = 'device' AND ended IS NULL",
                         (now, kiosk))
            cred = secrets.token_urlsafe(32)
            self.s._exec("INSERT INTO screens (hash, kiosk, kind, created, actor) VALUES (?, ?, 'device', ?, ?)",
                         (_hash(cred), kiosk, now, r[1]))
        return cred

    def valid(self, kiosk: str, credential: str | None) -> bool:
        if not credential or len(credential) > 200:
            return False
        with self.s.lock:
            r = self.s._one("SELECT kiosk, ended FROM screens WHERE hash = ? AND kind = 'device'", (_hash(credential),))
        return r is not None and r[0] == kiosk and r[1] is None

    def revoke(self, kiosk: str) -> int:
        """End every screen credential and pairing link of the kiosk."""
        with self.s._tx():
            return max(self.s._exec("UPDATE screens SET ended = ? WHERE kiosk = ? AND ended IS NULL",
                                    (time.time(), kiosk)).rowcount, 0)

    def paired(self, kiosk: str) -> list[dict[str, Any]]:
        with self.s.lock:
            return [{"created": c, "paired_by": a} for c, a in self.s._all(
                "SELECT created, actor FROM screens WHERE kiosk = ? AND kind = 'device' AND ended IS NULL", (kiosk,))]
