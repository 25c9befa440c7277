"""Alerts: telling a person when a kiosk needs one, whether or not anyone is
looking at the dashboard (an excursion at night, a forced door, a jammed
lock, a kiosk gone quiet), as Pyxis-class cabinets and fleet tools page
someone.

What raises an alert is a problem of health.py (the same that colour the
fleet page), matched by the rules of a TOML file (`serve --alerts FILE`;
without one, alert_rules.toml beside this module: raised and shown, sent
nowhere). A rule names problem codes, how long the problem must last
before it counts (`for_s`), the channels to notify, and whom to tell when
nobody has acknowledged it after `escalate_after_s`. Each alert is one
(rule, kiosk, problem, subject): raised once however often it is seen
(deduplicated in the store, so also across restarts and bridges sharing
the store), escalated once, and resolved, with a message, when the
problem is gone.

Channels: a webhook (JSON POST, optionally signed) and email through an
SMTP server (STARTTLS or TLS, login from a file). Every message goes
through a persistent outbox in the store, retried with a growing delay, so
a mail server that is down loses nothing. Secrets (SMTP password, webhook
URL with a token, signing secret) come from files, never from the rules
file itself or a command line.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import threading
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from . import health
from .config import ConfigError
from .store import Store

log = logging.getLogger("kiosk_bridge.alerts")

DEFAULT_RULES = Path(__file__).with_name("alert_rules.toml")
EVAL_S = 1.0                 # how often the problems are looked at
POKE_GAP_S = 0.25            # and at most how often when news keeps coming
RETRY_S = (10, 30, 60, 120, 300, 600, 1800, 3600)   # outbox: wait before each retry
MAX_ATTEMPTS = 30            # then the message is given up (and shown as failed)
SEND_TIMEOUT_S = 20
LEASE_S = 120                # a delivery being sent is not picked up by another bridge meanwhile
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS alerts (
        id TEXT PRIMARY KEY, key TEXT NOT NULL, rule TEXT NOT NULL, kiosk TEXT NOT NULL, code TEXT NOT NULL,
        subject TEXT, level TEXT NOT NULL, text TEXT NOT NULL, since DOUBLE PRECISION,
        opened DOUBLE PRECISION NOT NULL, acked DOUBLE PRECISION, acked_by TEXT, ack_note TEXT,
        escalated DOUBLE PRECISION, resolved DOUBLE PRECISION)""",
    # One open alert per condition: the deduplication, also across bridges.
    "CREATE UNIQUE INDEX IF NOT EXISTS alerts_open ON alerts (key) WHERE resolved IS NULL",
    "CREATE INDEX IF NOT EXISTS alerts_opened ON alerts (opened)",
    """CREATE TABLE IF NOT EXISTS alert_outbox (
        id TEXT PRIMARY KEY, alert TEXT NOT NULL, channel TEXT NOT NULL, event TEXT NOT NULL,
        state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, created DOUBLE PRECISION NOT NULL,
        next_at DOUBLE PRECISION NOT NULL, sent DOUBLE PRECISION, error TEXT)""",
    "CREATE INDEX IF NOT EXISTS alert_outbox_due ON alert_outbox (state, next_at)",
    "CREATE INDEX IF NOT EXISTS alert_outbox_alert ON alert_outbox (alert)",
]
_ALERT_COLS = ("id, key, rule, kiosk, code, subject, level, text, since, opened, acked, acked_by, ack_note, "
               "escalated, resolved")


class DeliveryError(Exception):
    pass


# -- the rules file ------------------------------------------------------------
def _secret(path: str, what: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from None


class Webhook:
    """POST the message as JSON; with a secret, an HMAC-SHA256 of the body in
    X-Kiosk-Signature: sha256=<hex>, so the receiver can tell it is ours."""

    kind = "webhook"

    def __init__(self, name: str, url: str, secret: str | None = None):
        u = urlparse(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ConfigError(f"channels.{name}.url must be an http:// or https:// URL")
        self.name, self.url, self.secret = name, url, secret

    def describe(self) -> str:
        u = urlparse(self.url)
        return f"webhook to {u.scheme}://{u.hostname}{f':{u.port}' if u.port else ''}"

    def send(self, message: dict[str, Any]) -> None:
        body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {"content-type": "application/json", "user-agent": "kiosk-bridge-alerts"}
        if self.secret:
            headers["x-kiosk-signature"] = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        req = urllib.request.Request(self.url, body, headers, method="POST")
        try:
            with _HTTP.open(req, timeout=SEND_TIMEOUT_S) as r:
                r.read()
        except urllib.error.HTTPError as e:
            raise DeliveryError(f"the webhook answered {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            raise DeliveryError(f"cannot reach the webhook: {getattr(e, 'reason', e)}") from None


class Email:
    """Mail through an SMTP server: smtp://host:port (STARTTLS when the
    server offers it; ?starttls=required refuses to go on without it),
    smtps://host:port (TLS from the start); ?ca=FILE trusts a private CA."""

    kind = "email"

    def __init__(self, name: str, smtp: str, sender: str, to: list[str], user: str | None = None,
                 password: str | None = None):
        u = urlparse(smtp)
        if u.scheme not in ("smtp", "smtps") or not u.hostname:
            raise ConfigError(f"channels.{name}.smtp must be smtp://host:port or smtps://host:port")
        if u.password:
            raise ConfigError(f"channels.{name}: put the SMTP password in credentials_file, not in the URL")
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        unknown = set(q) - {"starttls", "ca"}
        if unknown:
            raise ConfigError(f"channels.{name}.smtp: unknown option {', '.join(sorted(unknown))} (starttls, ca)")
        if not to or not all(isinstance(a, str) and "@" in a for a in to):
            raise ConfigError(f"channels.{name}.to must list e-mail addresses")
        if "@" not in sender:
            raise ConfigError(f"channels.{name}.from must be an e-mail address")
        self.name, self.host, self.tls = name, u.hostname, u.scheme == "smtps"
        self.port = u.port or (465 if self.tls else 587)
        self.starttls = q.get("starttls", "auto")
        if self.starttls not in ("auto", "required", "never"):
            raise ConfigError(f"channels.{name}.smtp: starttls is auto, required or never")
        self.ca = q.get("ca")
        if self.ca and not Path(self.ca).is_file():
            raise ConfigError(f"channels.{name}.smtp: CA file {self.ca} does not exist")
        self.sender, self.to = sender, list(to)
        self.user = user or (unquote(u.username) if u.username else None)
        self.password = password

    def describe(self) -> str:
        return f"email to {', '.join(self.to)} via {self.host}:{self.port}"

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)

    def send(self, message: dict[str, Any]) -> None:
        m = EmailMessage()
        m["From"], m["To"], m["Subject"] = self.sender, ", ".join(self.to), message["subject"]
        m["Message-ID"] = f"<{message['delivery']}@kiosk-bridge>"
        m.set_content(message["body"])
        try:
            if self.tls:
                s: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=SEND_TIMEOUT_S, context=self._context())
            else:
                s = smtplib.SMTP(self.host, self.port, timeout=SEND_TIMEOUT_S)
            with s:
                s.ehlo()
                if not self.tls and self.starttls != "never":
                    if s.has_extn("starttls"):
                        s.starttls(context=self._context())
                        s.ehlo()
                    elif self.starttls == "required":
                        raise DeliveryError(f"{self.host}:{self.port} offers no STARTTLS (starttls=required)")
                if self.user:
                    s.login(self.user, self.password or "")
                s.send_message(m)
        except DeliveryError:
            raise
        except smtplib.SMTPException as e:
            raise DeliveryError(f"the mail server refused: {e}") from None
        except (OSError, ssl.SSLError) as e:
            raise DeliveryError(f"cannot reach the mail server {self.host}:{self.port}: {e}") from None


def _check_keys(where: str, got: dict[str, Any], allowed: set[str], required: set[str] = frozenset()) -> None:
    unknown = set(got) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key {', '.join(sorted(unknown))} (allowed: {', '.join(sorted(allowed))})")
    missing = set(required) - set(got)
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(sorted(missing))}")


def _channel(name: str, c: Any) -> Webhook | Email:
    where = f"channels.{name}"
    if not isinstance(c, dict):
        raise ConfigError(f"{where} must be a table")
    kind = c.get("type")
    if kind == "webhook":
        _check_keys(where, c, {"type", "url", "url_file", "secret_file"}, {"type"})
        if ("url" in c) == ("url_file" in c):
            raise ConfigError(f"{where}: give url or url_file (a URL holding a token belongs in a file)")
        url = c["url"] if "url" in c else _secret(c["url_file"], f"{where}.url_file")
        secret = _secret(c["secret_file"], f"{where}.secret_file") if "secret_file" in c else None
        return Webhook(name, url, secret)
    if kind == "email":
        _check_keys(where, c, {"type", "smtp", "from", "to", "credentials_file"}, {"type", "smtp", "from", "to"})
        to = c["to"] if isinstance(c["to"], list) else [c["to"]]
        user = password = None
        if "credentials_file" in c:
            text = _secret(c["credentials_file"], f"{where}.credentials_file")
            user, _, password = text.partition(":") if ":" in text else (None, "", text)
        return Email(name, c["smtp"], c["from"], to, user, password)
    raise ConfigError(f"{where}.type must be webhook or email")


class Rule:
    def __init__(self, i: int, r: Any, channels: dict[str, Webhook | Email]):
        where = f"rules[{i}]"
        if not isinstance(r, dict):
            raise ConfigError(f"{where} must be a table")
        _check_keys(where, r, {"name", "when", "for_s", "kiosks", "notify", "escalate_after_s", "escalate_to"},
                    {"name", "when"})
        self.name = r["name"]
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"{where}.name must be a name")
        where = f"rules.{self.name}"
        when = r["when"] if isinstance(r["when"], list) else [r["when"]]
        bad = [c for c in when if c not in health.CODES]
        if bad or not when:
            raise ConfigError(f"{where}.when: unknown problem {', '.join(map(str, bad)) or '(none given)'}; "
                              f"one of: {', '.join(health.CODES)}")
        self.when = tuple(when)
        self.for_s = self._seconds(r, "for_s", where, 0)
        self.escalate_after_s = self._seconds(r, "escalate_after_s", where, None)
        self.kiosks = tuple(r.get("kiosks") or ("*",))
        for key in ("notify", "escalate_to"):
            names = r.get(key) or []
            unknown = [n for n in names if n not in channels]
            if unknown:
                raise ConfigError(f"{where}.{key}: no channel {', '.join(unknown)} (channels: "
                                  f"{', '.join(channels) or 'none defined'})")
            setattr(self, key, tuple(names))
        if self.escalate_to and self.escalate_after_s is None:
            raise ConfigError(f"{where}: escalate_to needs escalate_after_s")

    @staticmethod
    def _seconds(r: dict[str, Any], key: str, where: str, default: float | None) -> float | None:
        v = r.get(key, default)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise ConfigError(f"{where}.{key} must be a number of seconds, 0 or more")
        return v

    def matches(self, code: str, kiosk: str) -> bool:
        return code in self.when and any(fnmatch.fnmatchcase(kiosk, pat) for pat in self.kiosks)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "when": list(self.when), "for_s": self.for_s, "kiosks": list(self.kiosks),
                "notify": list(self.notify), "escalate_after_s": self.escalate_after_s,
                "escalate_to": list(self.escalate_to)}


class Rules:
    """A parsed rules file: its channels and rules. Mistakes are ConfigErrors
    naming the field, so `serve` stops before anything runs."""

    def __init__(self, text: str, source: str = "rules", dashboard_url: str | None = None):
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{source}: not TOML: {e}") from None
        _check_keys(source, doc, {"dashboard_url", "channels", "rules"}, {"rules"})
        self.source = source
        # The URL people open (behind the proxy) from the file; else where this bridge serves.
        self.dashboard_url = (doc.get("dashboard_url") or dashboard_url or "").rstrip("/") or None
        chans = doc.get("channels") or {}
        if not isinstance(chans, dict):
            raise ConfigError(f"{source}: channels must be a table of tables")
        self.channels = {name: _channel(name, c) for name, c in chans.items()}
        rules = doc["rules"]
        if not isinstance(rules, list) or not rules:
            raise ConfigError(f"{source}: give at least one [[rules]]")
        self.rules = [Rule(i, r, self.channels) for i, r in enumerate(rules)]
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ConfigError(f"{source}: rule names must differ")
        self.by_name = {r.name: r for r in self.rules}

    @classmethod
    def load(cls, path: str | Path | None = None, dashboard_url: str | None = None) -> "Rules":
        p = Path(path) if path else DEFAULT_RULES
        try:
            text = p.read_text()
        except OSError as e:
            raise ConfigError(f"cannot read the alert rules {p}: {e.strerror}") from None
        return cls(text, str(p), dashboard_url)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "rules": [r.describe() for r in self.rules],
                "channels": {n: {"type": c.kind, "to": c.describe()} for n, c in self.channels.items()}}


# -- what is told --------------------------------------------------------------
EVENTS = ("raised", "escalated", "resolved")


def message(alert: dict[str, Any], event: str, delivery: str, dashboard_url: str | None) -> dict[str, Any]:
    """One notification: the JSON a webhook gets; `subject` and `body` are the e-mail's."""
    tag = {"raised": alert["level"].upper(), "escalated": "ESCALATED", "resolved": "RESOLVED"}[event]
    where = "the bridge" if alert["kiosk"] == BRIDGE else f"kiosk {alert['kiosk']}"
    subject = f"[{tag}] {where}: {alert['text']}"
    link = None
    if dashboard_url:
        link = f"{dashboard_url}/alerts" if alert["kiosk"] == BRIDGE else f"{dashboard_url}/kiosk/{alert['kiosk']}"
    subject_ = f", {alert['subject']}" if alert.get("subject") else ""
    lines = [
        {"raised": f"An alert was raised for {where}.",
         "escalated": f"Nobody has acknowledged this alert for {where} since {iso(alert['opened'])}.",
         "resolved": f"Resolved: the problem at {where} is gone."}[event],
        "",
        f"What: {alert['text']}",
        f"Rule: {alert['rule']} (problem {alert['code']}{subject_})",
        f"Raised: {iso(alert['opened'])}" + (f" (problem since {iso(alert['since'])})" if alert.get("since") else ""),
    ]
    if alert.get("acked"):
        lines.append(f"Acknowledged: {iso(alert['acked'])} by {alert.get('acked_by') or '?'}"
                     + (f": {alert['ack_note']}" if alert.get("ack_note") else ""))
    if alert.get("resolved"):
        lines.append(f"Resolved: {iso(alert['resolved'])}")
    if link:
        lines += ["", f"Dashboard: {link}"]
    if event != "resolved":
        lines += ["", "Acknowledge it on the dashboard's Alerts page so that it is not escalated."]
    return {"event": event, "delivery": delivery, "subject": subject, "body": "\n".join(lines) + "\n",
            "alert": view(alert), "dashboard": link}


def iso(t: Any) -> str | None:
    if not isinstance(t, (int, float)):
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def view(a: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k in ("since", "opened", "acked", "escalated", "resolved"):
        out[f"{k}_iso"] = iso(a.get(k))
    out["state"] = "resolved" if a.get("resolved") else "acknowledged" if a.get("acked") else "open"
    return out


# -- the store -----------------------------------------------------------------
BRIDGE = "-"          # the kiosk column of the bridge's own alerts


class AlertStore:
    """Alerts and their outbox, in the bridge's store (its connection and lock)."""

    def __init__(self, store: Store):
        self.s = store
        with store._tx():
            store.schema_lock()
            for stmt in SCHEMA:
                store._exec(stmt)

    @staticmethod
    def _alert(r) -> dict[str, Any]:
        keys = [k.strip() for k in _ALERT_COLS.split(",")]
        return dict(zip(keys, r))

    def open_alerts(self) -> list[dict[str, Any]]:
        with self.s.lock:
            return [self._alert(r) for r in self.s._all(f"SELECT {_ALERT_COLS} FROM alerts WHERE resolved IS NULL")]

    def count_open(self, kiosks: list[str] | None = None) -> dict[str, int]:
        """Open alerts by level, and how many nobody has acknowledged (of
        these kiosks only, if given)."""
        q = "SELECT level, COUNT(*), SUM(CASE WHEN acked IS NULL THEN 1 ELSE 0 END) FROM alerts WHERE resolved IS NULL"
        p: list[Any] = []
        if kiosks is not None:
            q += " AND kiosk IN (" + ", ".join("?" for _ in kiosks) + ")" if kiosks else " AND 0 = 1"
            p = list(kiosks)
        with self.s.lock:
            rows = self.s._all(q + " GROUP BY level", p)
        out = {"open": sum(r[1] for r in rows), "unacknowledged": sum(int(r[2] or 0) for r in rows)}
        out.update({r[0]: r[1] for r in rows})
        return out

    def alert(self, alert_id: str) -> dict[str, Any] | None:
        with self.s.lock:
            r = self.s._one(f"SELECT {_ALERT_COLS} FROM alerts WHERE id = ?", (alert_id,))
        return self._alert(r) if r else None

    def alerts(self, open_only: bool = False, limit: int = 200, kiosk: str | None = None) -> list[dict[str, Any]]:
        q = f"SELECT {_ALERT_COLS} FROM alerts"
        cond, p = [], []
        if open_only:
            cond.append("resolved IS NULL")
        if kiosk:
            cond.append("kiosk = ?")
            p.append(kiosk)
        if cond:
            q += " WHERE " + " AND ".join(cond)
        q += " ORDER BY opened DESC LIMIT ?"
        p.append(limit)
        with self.s.lock:
            return [self._alert(r) for r in self.s._all(q, p)]

    def raise_(self, key: str, rule: str, kiosk: str, p: dict[str, Any], now: float,
               channels: tuple[str, ...]) -> dict[str, Any] | None:
        """Open the alert unless one is open for this key; its messages go into
        the outbox in the same transaction. The new alert, or None."""
        aid = uuid.uuid4().hex
        with self.s._tx():
            cur = self.s._exec("INSERT INTO alerts (id, key, rule, kiosk, code, subject, level, text, since, opened) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                               (aid, key, rule, kiosk, p["code"], p.get("subject"), p["level"], p["text"],
                                p.get("since") if isinstance(p.get("since"), (int, float)) else None, now))
            if cur.rowcount != 1:
                return None
            self._queue(aid, "raised", channels, now)
        return self.alert(aid)

    def resolve(self, alert_id: str, now: float, channels: tuple[str, ...]) -> bool:
        with self.s._tx():
            cur = self.s._exec("UPDATE alerts SET resolved = ? WHERE id = ? AND resolved IS NULL", (now, alert_id))
            if cur.rowcount != 1:
                return False
            self._queue(alert_id, "resolved", channels, now)
        return True

    def escalate(self, alert_id: str, now: float, channels: tuple[str, ...]) -> bool:
        with self.s._tx():
            cur = self.s._exec("UPDATE alerts SET escalated = ? WHERE id = ? AND escalated IS NULL AND acked IS NULL "
                               "AND resolved IS NULL", (now, alert_id))
            if cur.rowcount != 1:
                return False
            self._queue(alert_id, "escalated", channels, now)
        return True

    def ack(self, alert_id: str, by: str, note: str | None, now: float) -> dict[str, Any] | None:
        """Acknowledge (the first acknowledgement stands); None for an unknown id."""
        with self.s._tx():
            self.s._exec("UPDATE alerts SET acked = ?, acked_by = ?, ack_note = ? WHERE id = ? AND acked IS NULL",
                         (now, by, note, alert_id))
        return self.alert(alert_id)

    def _queue(self, alert_id: str, event: str, channels: tuple[str, ...], now: float) -> None:
        for ch in channels:
            self.s._exec("INSERT INTO alert_outbox (id, alert, channel, event, state, created, next_at) "
                         "VALUES (?, ?, ?, ?, 'pending', ?, ?)", (uuid.uuid4().hex, alert_id, ch, event, now, now))

    def due(self, now: float, limit: int = 50) -> list[tuple]:
        with self.s.lock:
            return self.s._all("SELECT id, alert, channel, event, attempts, next_at FROM alert_outbox "
                               "WHERE state = 'pending' AND next_at <= ? ORDER BY next_at LIMIT ?", (now, limit))

    def claim(self, delivery: str, next_at: float, now: float) -> bool:
        """Take a due delivery for LEASE_S (no other bridge sends it meanwhile)."""
        with self.s._tx():
            cur = self.s._exec("UPDATE alert_outbox SET next_at = ? WHERE id = ? AND next_at = ? AND state = 'pending'",
                               (now + LEASE_S, delivery, next_at))
            return cur.rowcount == 1

    def delivered(self, delivery: str, now: float) -> None:
        with self.s._tx():
            self.s._exec("UPDATE alert_outbox SET state = 'sent', sent = ?, attempts = attempts + 1, error = NULL "
                         "WHERE id = ?", (now, delivery))

    def failed(self, delivery: str, attempts: int, error: str, now: float) -> None:
        state = "failed" if attempts >= MAX_ATTEMPTS else "pending"
        wait = RETRY_S[min(attempts - 1, len(RETRY_S) - 1)]
        with self.s._tx():
            self.s._exec("UPDATE alert_outbox SET state = ?, attempts = ?, error = ?, next_at = ? WHERE id = ?",
                         (state, attempts, error[:500], now + wait, delivery))

    def deliveries(self, alert_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        if not alert_ids:
            return {}
        out: dict[str, list[dict[str, Any]]] = {a: [] for a in alert_ids}
        marks = ", ".join("?" for _ in alert_ids)
        with self.s.lock:
            rows = self.s._all("SELECT alert, channel, event, state, attempts, created, sent, error, next_at FROM "
                               f"alert_outbox WHERE alert IN ({marks}) ORDER BY created", alert_ids)
        for r in rows:
            out[r[0]].append({"channel": r[1], "event": r[2], "state": r[3], "attempts": r[4], "created": r[5],
                              "sent": r[6], "sent_iso": iso(r[6]), "error": r[7],
                              "next_try_iso": iso(r[8]) if r[3] == "pending" else None})
        return out


# -- the engine ----------------------------------------------------------------
class Alerter:
    """Looks at every kiosk's problems each second (and when the bridge has
    news), raises, escalates and resolves alerts by the rules, and sends the
    outbox. Two threads: one looks, one sends (a slow mail server never
    delays noticing a problem)."""

    def __init__(self, bridge, rules: Rules):
        self.bridge = bridge
        self.rules = rules
        self.store = AlertStore(bridge.store)
        self.first_seen: dict[str, float] = {}
        self.stopping = threading.Event()
        self.poked = threading.Event()
        self.sent = threading.Event()         # set after each delivery attempt (tests wait on it)
        self._threads: list[threading.Thread] = []

    def start(self) -> "Alerter":
        self.bridge.listeners.append(lambda kind, kiosk: self.poked.set())
        for target, name in ((self._look_loop, "bridge-alerts"), (self._send_loop, "bridge-alert-outbox")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.poked.set()
        for t in self._threads:
            t.join(SEND_TIMEOUT_S + 5)

    def _look_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.look()
            except Exception:
                log.exception("looking for alerts failed")
            # News from a kiosk wakes it early, but at most every POKE_GAP_S
            # however busy the fleet is.
            if self.poked.wait(EVAL_S):
                self.stopping.wait(POKE_GAP_S)
            self.poked.clear()

    def problems(self, now: float) -> list[tuple[str, dict[str, Any]]]:
        """(kiosk, problem) of the whole fleet, and the bridge's own."""
        store, keys = self.bridge.store, self.bridge.keys
        kiosks = {k["id"]: k for k in store.kiosks()}
        active = store.active_commands()
        out = [(BRIDGE, p) for p in health.bridge_problems(self.bridge.link.state())]
        for kid in keys.ids():
            k = kiosks.get(kid) or {"id": kid, "online": False, "seen": None, "why": "never seen", "status": {}}
            out += [(kid, p) for p in health.problems(k, active.get(kid), now)]
        return out

    def look(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        current: dict[str, tuple[Rule, str, dict[str, Any]]] = {}
        for kiosk, p in self.problems(now):
            for rule in self.rules.rules:
                if rule.matches(p["code"], kiosk):
                    current[f"{rule.name}|{kiosk}|{p['code']}|{p.get('subject') or ''}"] = (rule, kiosk, p)
        for key in list(self.first_seen):
            if key not in current:
                del self.first_seen[key]
        for key, (rule, kiosk, p) in current.items():
            first = self.first_seen.setdefault(key, now)
            # Offline counts from when the kiosk was last heard, not from when this bridge started looking.
            start = p["since"] if p["code"] in ("offline", "broker_down") and isinstance(p.get("since"), (int, float)) else first
            if now - start >= rule.for_s:
                a = self.store.raise_(key, rule.name, kiosk, p, now, rule.notify)
                if a:
                    log.warning("alert %s raised: %s: %s", a["id"], kiosk, p["text"])
        for a in self.store.open_alerts():
            rule = self.rules.by_name.get(a["rule"])
            if a["key"] not in current:
                told = tuple(rule.notify) if rule else ()
                if rule and a.get("escalated"):
                    told += tuple(c for c in rule.escalate_to if c not in told)
                if self.store.resolve(a["id"], now, told):
                    log.warning("alert %s resolved: %s: %s", a["id"], a["kiosk"], a["text"])
            elif rule and rule.escalate_after_s is not None and not a["acked"] and not a["escalated"] \
                    and now - a["opened"] >= rule.escalate_after_s:
                if self.store.escalate(a["id"], now, rule.escalate_to or rule.notify):
                    log.warning("alert %s escalated: %s: %s", a["id"], a["kiosk"], a["text"])

    def _send_loop(self) -> None:
        while not self.stopping.wait(EVAL_S):
            try:
                self.send_due()
            except Exception:
                log.exception("sending alerts failed")

    def send_due(self, now: float | None = None) -> int:
        """Send every message due; how many went out."""
        sent = 0
        for did, aid, channel, event, attempts, next_at in self.store.due(time.time() if now is None else now):
            if self.stopping.is_set():
                break
            if not self.store.claim(did, next_at, time.time()):
                continue
            ch = self.rules.channels.get(channel)
            a = self.store.alert(aid)
            try:
                if ch is None:
                    raise DeliveryError(f"no channel {channel} in the rules any more")
                ch.send(message(a, event, did, self.rules.dashboard_url))
                self.store.delivered(did, time.time())
                sent += 1
                log.info("alert %s: %s message sent by %s", aid, event, channel)
            except DeliveryError as e:
                self.store.failed(did, attempts + 1, str(e), time.time())
                log.warning("alert %s: %s message by %s failed (attempt %d): %s", aid, event, channel, attempts + 1, e)
            finally:
                self.sent.set()
        return sent
