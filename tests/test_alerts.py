"""Alerts end to end: an emulated kiosk on a real mosquitto, `kiosk-bridge
serve --alerts FILE` as a process, a webhook receiver and a real SMTP
server (aiosmtpd, STARTTLS with the test CA, a login) on loopback.

A forced door raises one alert, told once by webhook (signed) and by
e-mail however long it lasts, escalated to a second address when nobody
acknowledges it, and resolved (with a message to everyone told) when the
door is shut; a webhook that fails is retried from the outbox. An
excursion acknowledged in time is not escalated. A kiosk offline longer
than its threshold raises its own alert. A rules file with a mistake
stops `serve` with the field named."""

from __future__ import annotations

import email
import hashlib
import hmac
import json
import subprocess
import threading
import time
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from bridge_support import USERS, VENV_BIN, BridgeProc, wait_until
from kiosk_host.emulator.fleet import Fleet
from link_support import Mosquitto, free_port

TLS = Path(__file__).parent / "tls"
POLICIES = {"door_open_timeout_s": 5, "telemetry_period_s": 2, "sample_period_s": 1}
SECRET = "webhook-signing-secret"


class Hook:
    """A webhook receiver on loopback; the first `fail` requests get a 500."""

    def __init__(self, fail: int = 0):
        self.got: list[dict] = []
        self.fail = fail
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                if hook.fail > 0:
                    hook.fail -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                hook.got.append({"body": json.loads(body), "signed": self.headers.get("x-kiosk-signature") == sig})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, alert_id: str | None = None) -> list[str]:
        return [m["body"]["event"] for m in self.got if alert_id is None or m["body"]["alert"]["id"] == alert_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    """aiosmtpd on loopback: STARTTLS required (the test CA's localhost
    certificate), a login required, every message kept."""

    def __init__(self, user: str, password: str):
        import ssl

        self.mails: list[email.message.EmailMessage] = []
        self.rcpts: list[list[str]] = []
        box = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                box.mails.append(email.message_from_bytes(envelope.content, policy=policy.default))
                box.rcpts.append(list(envelope.rcpt_tos))
                return "250 OK"

        def auth(server, session, envelope, mechanism, data):
            return AuthResult(success=isinstance(data, LoginPassword) and data.login == user.encode()
                              and data.password == password.encode())

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(TLS / "server.pem", TLS / "server.key")
        self.port = free_port()
        self.ctl = Controller(Handler(), hostname="127.0.0.1", port=self.port, tls_context=ctx, require_starttls=True,
                              authenticator=auth, auth_required=True, auth_require_tls=True)
        self.ctl.start()

    def to(self, addr: str) -> list[email.message.EmailMessage]:
        return [m for m, r in zip(self.mails, self.rcpts) if addr in r]

    def close(self) -> None:
        self.ctl.stop()


def _rules(tmp: Path, hook: Hook, mail: Mailbox, offline_s: int = 3) -> Path:
    (tmp / "hook.secret").write_text(SECRET)
    (tmp / "smtp.cred").write_text("alerts:s3cret-pass")
    (tmp / "smtp.cred").chmod(0o600)
    p = tmp / "alerts.toml"
    p.write_text(f"""
dashboard_url = "https://kiosks.pharmacy.example"

[channels.ops]
type = "webhook"
url = "{hook.url}"
secret_file = "{tmp / 'hook.secret'}"

[channels.pharmacist]
type = "email"
smtp = "smtp://127.0.0.1:{mail.port}?starttls=required&ca={TLS / 'ca.pem'}"
from = "kiosks@pharmacy.example"
to = ["pharmacist@pharmacy.example"]
credentials_file = "{tmp / 'smtp.cred'}"

[channels.manager]
type = "email"
smtp = "smtp://localhost:{mail.port}?starttls=required&ca={TLS / 'ca.pem'}"
from = "kiosks@pharmacy.example"
to = ["manager@pharmacy.example"]
credentials_file = "{tmp / 'smtp.cred'}"

[[rules]]
name = "door"
when = ["door_forced", "door_held_open", "door_open", "bolt_not_engaged"]
for_s = 2           # a door being shut reads open, bolt engaged, for a moment
notify = ["ops", "pharmacist"]
escalate_after_s = 4
escalate_to = ["manager"]

[[rules]]
name = "temperature"
when = ["excursion"]
notify = ["ops"]
escalate_after_s = 4
escalate_to = ["manager"]

[[rules]]
name = "offline"
when = ["offline"]
for_s = {offline_s}
notify = ["ops"]
""")
    return p


def test_an_alert_is_sent_once_escalated_and_resolved_by_webhook_and_email(tmp_path: Path):
    hook, mail = Hook(fail=1), Mailbox("alerts", "s3cret-pass")
    broker = Mosquitto(tmp_path / "mq").start()
    url = f"mqtt://127.0.0.1:{broker.port}"
    fleet = Fleet(url, 1, tmp_path / "kiosks", tmp_path / "keys", policies=POLICIES, keepalive_s=2).start()
    bridge = BridgeProc(tmp_path / "bridge", url, tmp_path / "keys", extra=["--alerts", str(_rules(tmp_path, hook, mail))])
    bridge.start()
    kid = "kiosk-001"
    try:
        wait_until(lambda: (lambda s: s["online"] and len(s["doors"]) == 2 and all(
            d["secure"] for d in s["doors"].values()))(bridge.kiosk(kid)), 40, "the kiosk up with its doors shut")
        assert bridge.get("/api/alerts") == []
        rules = bridge.get("/api/alerts/rules")
        assert [r["name"] for r in rules["rules"]] == ["door", "temperature", "offline"]
        assert "s3cret" not in json.dumps(rules) and SECRET not in json.dumps(rules)

        # A forced door: one alert, told by webhook (after one failed try) and by e-mail.
        fleet.door(kid, "pickup", "force")
        alert = wait_until(lambda: (lambda a: a[0] if a else None)(bridge.get("/api/alerts")), 20, "the alert")
        assert alert["kiosk"] == kid and alert["rule"] == "door" and alert["code"] == "door_forced", alert
        assert alert["state"] == "open" and alert["opened_iso"].endswith("Z")
        wait_until(lambda: hook.events(alert["id"]) == ["raised"], 30, "the webhook told (retried after a 500)")
        assert hook.got[0]["signed"] and hook.got[0]["body"]["dashboard"] == f"https://kiosks.pharmacy.example/kiosk/{kid}"
        wait_until(lambda: mail.to("pharmacist@pharmacy.example"), 20, "the e-mail")
        m = mail.to("pharmacist@pharmacy.example")[0]
        assert m["Subject"] == f"[ALARM] kiosk {kid}: pickup door forced open", m["Subject"]
        assert "https://kiosks.pharmacy.example/kiosk/kiosk-001" in m.get_content()
        msgs = bridge.get(f"/api/alerts/{alert['id']}")["messages"]
        ops = [x for x in msgs if x["channel"] == "ops"][0]
        assert ops["state"] == "sent" and ops["attempts"] == 2, msgs

        # Nobody acknowledges it: escalated once, to the manager.
        wait_until(lambda: mail.to("manager@pharmacy.example"), 20, "the escalation")
        assert mail.to("manager@pharmacy.example")[0]["Subject"].startswith(f"[ESCALATED] kiosk {kid}: pickup door")
        time.sleep(3)   # the door stays forced: nothing more is sent (deduplicated)
        assert hook.events(alert["id"]) == ["raised"] and len(mail.to("pharmacist@pharmacy.example")) == 1
        assert len(mail.to("manager@pharmacy.example")) == 1 and len(bridge.get("/api/alerts")) == 1
        assert bridge.post(f"/api/alerts/{alert['id']}/ack", {}, who="viewer")[0] == 403   # a viewer only looks

        # Shut: resolved, and everyone told hears so.
        fleet.door(kid, "pickup", "close")
        wait_until(lambda: hook.events(alert["id"]) == ["raised", "resolved"], 30, "the resolve message")
        time.sleep(3)
        assert len(hook.got) == 2, "shutting the door raised nothing new"
        wait_until(lambda: len(mail.to("manager@pharmacy.example")) == 2, 20, "the manager told it is resolved")
        assert mail.to("pharmacist@pharmacy.example")[-1]["Subject"].startswith(f"[RESOLVED] kiosk {kid}: pickup door")
        a = bridge.get(f"/api/alerts/{alert['id']}")
        assert a["state"] == "resolved" and a["resolved_iso"] and bridge.get("/api/alerts") == []
        assert bridge.post(f"/api/alerts/{alert['id']}/ack", {}, who="technician")[0] == 409

        # An excursion acknowledged in time is never escalated.
        fleet.sensor(kid, "cabinet", celsius=33.0)
        exc = wait_until(lambda: (lambda a: a[0] if a else None)(bridge.get("/api/alerts")), 30, "the excursion alert")
        assert exc["rule"] == "temperature" and exc["code"] == "excursion"
        status, acked = bridge.post(f"/api/alerts/{exc['id']}/ack", {"note": "on my way"}, who="pharmacist")
        assert status == 200 and acked["state"] == "acknowledged" and acked["acked_by"] == USERS["pharmacist"], acked
        time.sleep(6)
        assert bridge.get(f"/api/alerts/{exc['id']}")["escalated"] is None
        assert len(mail.to("manager@pharmacy.example")) == 2
        fleet.sensor(kid, "cabinet", celsius=22.0)
        wait_until(lambda: hook.events(exc["id"]) == ["raised", "resolved"], 30, "the excursion's end told")

        # Offline longer than the rule's 3 s: its own alert, resolved when it is back.
        fleet.power(kid, False)
        off = wait_until(lambda: [a for a in bridge.get("/api/alerts") if a["code"] == "offline"], 30, "offline alert")
        assert off[0]["opened"] - off[0]["since"] >= 3
        fleet.power(kid, True)
        wait_until(lambda: hook.events(off[0]["id"]) == ["raised", "resolved"], 40, "back online")
        assert all(m["signed"] for m in hook.got)
    finally:
        bridge.stop()
        fleet.stop()
        broker.stop()
        hook.close()
        mail.close()
    log = bridge.log()
    assert "s3cret-pass" not in log and SECRET not in log


@pytest.mark.parametrize("mistake, named", [
    ('[[rules]]\nname = "x"\nwhen = ["door_forced"]\nnotfy = ["ops"]\n', "rules[0]: unknown key notfy"),
    ('[[rules]]\nname = "x"\nwhen = ["door_froced"]\n', "rules.x.when: unknown problem door_froced"),
    ('[[rules]]\nname = "x"\nwhen = ["offline"]\nnotify = ["pager"]\n', "rules.x.notify: no channel pager"),
    ('[channels.m]\ntype = "email"\nsmtp = "smtp://u:pw@host"\nfrom = "a@b"\nto = ["c@d"]\n'
     '[[rules]]\nname = "x"\nwhen = ["offline"]\n', "put the SMTP password in credentials_file"),
    ('rules = 3', "give at least one [[rules]]"),
])
def test_a_rules_file_with_a_mistake_stops_serve_naming_it(tmp_path: Path, mistake: str, named: str):
    (tmp_path / "keys").mkdir()
    (tmp_path / "bad.toml").write_text(mistake)
    r = subprocess.run([str(VENV_BIN / "kiosk-bridge"), "serve", "--broker", "mqtt://127.0.0.1:1",
                        "--keys", str(tmp_path / "keys"), "--db", str(tmp_path / "b.db"), "--http",
                        f"127.0.0.1:{free_port()}", "--alerts", str(tmp_path / "bad.toml")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and named in r.stderr and "Traceback" not in r.stderr, r.stderr
