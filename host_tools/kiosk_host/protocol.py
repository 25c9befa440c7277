"""The kiosk protocol seen from the host: topics, canonical encoding and
HMAC-SHA256 signatures. The firmware's kiosk/link/auth.py implements the same
encoding; tests/vectors/canonical.json is checked against both."""
from __future__ import annotations

import hashlib
import hmac
from typing import Any

from .contract import VERSION  # noqa: F401 (part of this module's API)
MAX_DEPTH = 8


# Text fields a host sends (order ids, session ids, names): printable, as a
# JSON Schema pattern for the HTTP APIs and as clean_text() for the rest.
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]+$"


def clean_text(s: str) -> bool:
    """Text a kiosk can check and show: no control characters, no lone
    surrogates (they have no UTF-8 form, so no signature can cover them)."""
    if any(c < " " or c == "\x7f" for c in s):
        return False
    try:
        s.encode()
    except UnicodeEncodeError:
        return False
    return True


class Unsignable(ValueError):
    """The object holds something a signature cannot cover (a float, a
    non-string key, too much nesting)."""


def _str(s: str, out: list[str]) -> None:
    out.append('"')
    for ch in s:
        if ch in '"\\' or ch < " ":
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    out.append('"')


def _enc(v: Any, out: list[str], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise Unsignable("nested too deep")
    if v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, int):
        out.append(str(v))
    elif isinstance(v, str):
        _str(v, out)
    elif isinstance(v, (list, tuple)):
        out.append("[")
        for i, x in enumerate(v):
            if i:
                out.append(",")
            _enc(x, out, depth + 1)
        out.append("]")
    elif isinstance(v, dict):
        out.append("{")
        for i, k in enumerate(sorted(v)):
            if not isinstance(k, str):
                raise Unsignable("non-string key")
            if i:
                out.append(",")
            _str(k, out)
            out.append(":")
            _enc(v[k], out, depth + 1)
        out.append("}")
    else:
        raise Unsignable(f"cannot sign a {type(v).__name__}")


def canonical(obj: Any) -> bytes:
    """The bytes that are signed: obj without its "sig" field."""
    if isinstance(obj, dict) and "sig" in obj:
        obj = {k: v for k, v in obj.items() if k != "sig"}
    out: list[str] = []
    _enc(obj, out, 0)
    try:
        return "".join(out).encode()
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 form a kiosk could check
        raise Unsignable("text that is not valid Unicode") from None


def signature(key: bytes, obj: Any) -> str:
    return hmac.new(key, canonical(obj), hashlib.sha256).hexdigest()


def sign(key: bytes, obj: dict) -> dict:
    obj["sig"] = signature(key, obj)
    return obj


def verify(key: bytes, obj: Any) -> bool:
    if not isinstance(obj, dict) or not isinstance(obj.get("sig"), str):
        return False
    try:
        want = signature(key, obj)
    except Unsignable:
        return False
    # compare_digest refuses non-ASCII text; a sig is hex, so compare bytes.
    return hmac.compare_digest(want.encode(), obj["sig"].encode("utf-8", "replace"))
