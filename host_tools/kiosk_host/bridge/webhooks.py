"""Webhooks to the pharmacy system: every change of an order, in order.

The outbox is the orders' own history (order_history): a change and its
webhook are written in one transaction, so a pharmacy system that is down,
a bridge that restarts or a network that drops loses nothing; delivery
resumes where it stopped. Each POST carries one change as JSON and three
headers:

    X-Kiosk-Delivery:  <order id>/<n>, the same on every retry (deduplicate by it)
    X-Kiosk-Timestamp: Unix seconds when this attempt was signed
    X-Kiosk-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" under the shared secret>

A 2xx answer delivers it; anything else (or no answer within the timeout)
is tried again after a pause that doubles from 1 s up to 10 min. Changes go
out one at a time, oldest first, so the receiver sees each order's changes
in the order they happened. The secret is read from a file, never from the
command line (docs/pickup.md, "Webhooks").
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from .config import ConfigError
from .orders import Orders

log = logging.getLogger("kiosk_bridge")

BACKOFF_S = (1.0, 600.0)
TIMEOUT_S = 10.0
LEASE_S = 30.0
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def read_secret(path: str | Path) -> bytes:
    try:
        text = Path(path).read_text().strip()
    except OSError as e:
        raise ConfigError(f"cannot read the webhook secret {path}: {e.strerror}") from None
    if len(text) < 16:
        raise ConfigError(f"the webhook secret in {path} is too short (at least 16 characters)")
    return text.encode()


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def verify(secret: bytes, timestamp: str, body: bytes, signature: str, max_age_s: int = 300) -> bool:
    """What a receiver checks: the signature, and a timestamp recent enough
    that an old delivery replayed by someone else is refused."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs(time.time() - ts) > max_age_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature or "")


class Webhooks:
    def __init__(self, orders: Orders, url: str, secret: bytes, backoff_s: tuple[float, float] = BACKOFF_S):
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"webhook URL must be http:// or https://, not {url!r}")
        self.orders = orders
        self.url = url
        self.secret = secret
        self.backoff_s = backoff_s
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.delivered = 0
        self.failures = 0
        self._thread: threading.Thread | None = None

    def start(self) -> "Webhooks":
        self._thread = threading.Thread(target=self._run, name="bridge-webhooks", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        if self._thread:
            self._thread.join(TIMEOUT_S + 2)

    def poke(self) -> None:
        """Something new may be waiting: look now."""
        self.wake.set()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                busy = self.deliver_one()
            except Exception:
                log.exception("webhook delivery failed")
                busy = False
            if not busy:
                self.wake.wait(1.0)
                self.wake.clear()

    def deliver_one(self) -> bool:
        """Send the oldest undelivered change, if its time has come. True
        when one was delivered (more may wait)."""
        item = self.orders.next_webhook(LEASE_S)
        if item is None:
            return False
        attempts = item.pop("attempts")
        n = item.pop("n")
        body = json.dumps(item, separators=(",", ":"), sort_keys=True).encode()
        ts = int(time.time())
        req = urllib.request.Request(self.url, data=body, method="POST", headers={
            "content-type": "application/json", "x-kiosk-delivery": item["id"],
            "x-kiosk-timestamp": str(ts), "x-kiosk-signature": sign(self.secret, ts, body)})
        error = None
        try:
            with _HTTP.open(req, timeout=TIMEOUT_S) as r:
                if not 200 <= r.status < 300:
                    error = f"HTTP {r.status}"
        except urllib.error.HTTPError as e:
            error = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            error = str(getattr(e, "reason", e))
        if error is None:
            self.orders.webhook_done(item["order_id"], n, None)
            self.delivered += 1
            return True
        pause = min(self.backoff_s[0] * 2 ** attempts, self.backoff_s[1])
        self.failures += 1
        log.warning("webhook %s to %s: %s; again in %.0f s", item["id"], self.url, error, pause)
        self.orders.webhook_done(item["order_id"], n, error, time.time() + pause)
        return False

