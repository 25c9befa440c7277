"""Pickup codes: what a patient holds up to the kiosk's scanner.

A code is 12 characters of Crockford's base32 (60 random bits from the
operating system's generator), shown in groups of four: `K7Q2-M9XD-3HTR`.
Only its SHA-256 is stored. A plain hash is enough for a random secret of
this size (there is no dictionary to try), and it lets a scan be looked up
by its hash directly. The alphabet has no I, L, O or U, and what a patient
types or a scanner reads is normalised first: case, dashes and spaces do
not matter, and O, I and L read as 0, 1 and 1.
"""

from __future__ import annotations

import hashlib
import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"   # Crockford's base32
LENGTH = 12                                     # 60 bits
_READ_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})


def new_code() -> str:
    """A fresh random code, grouped for reading: XXXX-XXXX-XXXX."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    return "-".join(raw[i:i + 4] for i in range(0, LENGTH, 4))


def normalise(text: str) -> str:
    """A code as scanned or typed, in its one canonical form."""
    return "".join(text.split()).replace("-", "").upper().translate(_READ_AS)


def code_hash(text: str) -> str:
    """What the store keeps of a code: the SHA-256 of its canonical form."""
    return hashlib.sha256(normalise(text).encode()).hexdigest()


def short_hash(text: str) -> str:
    """The kiosk's short hash of what it scanned (kiosk/core/scans.py): the
    first 8 hex digits of the SHA-256 of the text exactly as read."""
    return hashlib.sha256(text.encode()).hexdigest()[:8]
