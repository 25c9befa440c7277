"""The shipped broker configuration (deploy/mosquitto/) under attack.

One real mosquitto runs the shipped mosquitto.conf and acl, rendered with
throwaway certificates, a temporary password file and a free loopback port
(`broker_auth render-conf`). Users are made with the provisioning CLI
(`python -m kiosk_host.broker_auth`): kiosks kiosk-a and kiosk-b, bridges
bridge-1 and bridge-2. paho-mqtt clients then show what one kiosk's
credentials can and cannot reach, that strangers are refused at CONNECT,
and that the real firmware works under these rules.

"Receives nothing" is shown without sleeping: after the message that must
not arrive, the same sender publishes one the receiver is allowed to get,
on the same connection; MQTT keeps one publisher's order, so once the
control message is in, the forbidden one would have been too.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from link_support import KEY, Kiosk, free_port, mosquitto_exe, wait_port
from kiosk_host import broker_auth, protocol

SHARED = ["$share/bridges/kiosk/+/" + t for t in ("state", "evt", "reply", "tele")]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kiosk_host.broker_auth", *args],
                          capture_output=True, text=True)


class Broker:
    def __init__(self, root: Path):
        self.root = root
        self.secrets = root / "secrets"
        self.passwords = root / "etc" / "passwords"
        self.acl = root / "etc" / "acl"
        self.acl.parent.mkdir(parents=True)
        self.acl.write_text(broker_auth.SHIPPED_ACL.read_text())
        r = cli("make-certs", str(root / "certs"), "--host", "localhost", "--host", "127.0.0.1")
        assert r.returncode == 0, r.stderr
        self.ca = str(root / "certs" / "ca.pem")
        self.port = free_port()
        settings = {
            "listener": f"{self.port} 127.0.0.1",
            "password_file": str(self.passwords), "acl_file": str(self.acl),
            "cafile": self.ca, "certfile": str(root / "certs" / "server.pem"),
            "keyfile": str(root / "certs" / "server.key"),
            "persistence_location": f"{root / 'db'}/",
        }
        (root / "db").mkdir()
        if os.geteuid() == 0:
            settings["user"] = "root"  # else it drops to `mosquitto`, who cannot read the temp files
        self.conf = root / "mosquitto.conf"
        r = cli("render-conf", str(self.conf), *[f"--set={k}={v}" for k, v in settings.items()])
        assert r.returncode == 0, r.stderr
        self.proc: subprocess.Popen | None = None

    def add(self, kind: str, name: str) -> str:
        r = cli(f"add-{kind}", name, "--passwords", str(self.passwords), "--secrets", str(self.secrets),
                "--acl", str(self.acl))
        assert r.returncode == 0, r.stderr
        secret = self.secrets / f"{name}.mqtt-password"
        password = secret.read_text().strip()
        assert password not in r.stdout + r.stderr and str(secret) in r.stdout
        return password

    def start(self) -> None:
        self.log = open(self.root / "mosquitto.log", "ab")
        self.proc = subprocess.Popen([mosquitto_exe(), "-c", str(self.conf)], stdout=self.log, stderr=self.log)
        wait_port(self.port)

    def reload(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def log_text(self) -> str:
        return (self.root / "mosquitto.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.log.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("locked"))
    b.pw = {name: b.add(kind, name) for kind, name in
            [("kiosk", "kiosk-a"), ("kiosk", "kiosk-b"), ("bridge", "bridge-1"), ("bridge", "bridge-2")]}
    b.start()
    yield b
    b.stop()


class Client:
    """A paho client over TLS (checking the broker's certificate and name)
    that records every message and every connect outcome."""

    def __init__(self, fleet: Broker, user: str | None, password: str | None = None,
                 client_id: str = "", v5: bool = False, will: tuple[str, bytes] | None = None,
                 ca: str | None = None):
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
        self.c.tls_set(ca_certs=ca or fleet.ca)
        if user is not None:
            self.c.username_pw_set(user, fleet.pw.get(user) if password is None else password)
        if will:
            self.c.will_set(will[0], will[1], qos=1, retain=True)
        self.lock = threading.Condition()
        self.msgs: list[mqtt.MQTTMessage] = []
        self.connects: list = []
        self.disconnects = 0
        self.subacks: "queue.Queue[list]" = queue.Queue()
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda cl, u, mid, codes, props: self.subacks.put(codes)
        self.c.reconnect_delay_set(1, 1)
        self.c.connect("localhost", fleet.port, keepalive=30)
        self.c.loop_start()
        self.rc = self.wait(lambda: self.connects and self.connects[0], "CONNACK")

    def _on_connect(self, client, userdata, flags, rc, props):
        with self.lock:
            self.connects.append(rc)
            self.lock.notify_all()
        if rc.is_failure:
            client.disconnect()  # no retries: one answer is what we test

    def _on_disconnect(self, client, userdata, flags, rc, props):
        with self.lock:
            self.disconnects += 1
            self.lock.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.msgs.append(msg)
            self.lock.notify_all()

    def wait(self, pred, what: str, timeout: float = 10.0):
        end = time.monotonic() + timeout
        with self.lock:
            while True:
                r = pred()
                if r:
                    return r
                left = end - time.monotonic()
                assert left > 0, f"timed out after {timeout}s waiting for {what}"
                self.lock.wait(min(left, 0.2))

    def subscribe(self, *filters: str) -> list:
        """Subscribe and wait for the SUBACK; returns its reason codes."""
        self.c.subscribe([(f, 1) for f in filters])
        return self.subacks.get(timeout=10)

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def got(self, topic: str, payload: bytes | str | None = None) -> list[mqtt.MQTTMessage]:
        if isinstance(payload, str):
            payload = payload.encode()
        return [m for m in self.msgs if m.topic == topic and (payload is None or m.payload == payload)]

    def wait_msg(self, topic: str, payload: bytes | str) -> mqtt.MQTTMessage:
        return self.wait(lambda: self.got(topic, payload), f"{topic} {payload!r}")[0]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def clients(fleet):
    made: list[Client] = []

    def make(*args, **kw) -> Client:
        c = Client(fleet, *args, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def can_connect(fleet: Broker, user: str, password: str | None = None) -> bool:
    c = Client(fleet, user, password)
    c.close()
    return not c.rc.is_failure


def mark(what: str) -> str:
    """A payload no other test sends."""
    return f"{what}-{time.monotonic_ns()}"


def ok(c: Client) -> Client:
    assert not c.rc.is_failure, f"refused: {c.rc}"
    return c


def test_a_kiosk_cannot_publish_as_another_kiosk_or_as_the_host(fleet, clients):
    bridge = ok(clients("bridge-1", client_id="bridge-1"))
    assert not any(rc.is_failure for rc in bridge.subscribe(*SHARED))
    b_listener = ok(clients("kiosk-b"))
    assert not any(rc.is_failure for rc in b_listener.subscribe("kiosk/kiosk-b/cmd"))
    a = ok(clients("kiosk-a"))
    forged = {t: mark("forged-" + t) for t in ("evt", "state", "reply", "tele")}
    for t, payload in forged.items():
        a.publish(f"kiosk/kiosk-b/{t}", payload, retain=t == "state")
    a.publish("kiosk/kiosk-b/cmd", mark("forged-cmd"))   # the host's topic, towards another kiosk
    # Positive controls, after the forgeries on the same connection.
    control = mark("control")
    a.publish("kiosk/kiosk-a/evt", control)
    bridge.wait_msg("kiosk/kiosk-a/evt", control)
    a.publish("kiosk/kiosk-a/state", control, retain=True)
    bridge.wait_msg("kiosk/kiosk-a/state", control)
    with bridge.lock:
        assert not [m for m in bridge.msgs if m.topic.startswith("kiosk/kiosk-b/")]
    # kiosk-b never got the forged command (the bridge's own command arrives).
    real = mark("real-cmd")
    bridge.publish("kiosk/kiosk-b/cmd", real)
    b_listener.wait_msg("kiosk/kiosk-b/cmd", real)
    assert [m.payload for m in b_listener.msgs] == [real.encode()]
    # Nothing forged was retained either: a new bridge sees kiosk-a's state only.
    late = ok(clients("bridge-2"))
    late.subscribe("kiosk/+/state")
    late.wait_msg("kiosk/kiosk-a/state", control)
    assert not late.got("kiosk/kiosk-b/state")


def test_a_kiosk_cannot_command_itself(fleet, clients):
    bridge = ok(clients("bridge-1"))
    a_listen = ok(clients("kiosk-a", client_id="ignored"))
    assert not any(rc.is_failure for rc in a_listen.subscribe("kiosk/kiosk-a/cmd", "kiosk/kiosk-a/ack"))
    # A second connection with the same credentials (same client id after
    # use_username_as_clientid) would take the first over; so the forger
    # is the listener itself: it publishes to its own cmd and ack.
    a_listen.publish("kiosk/kiosk-a/cmd", mark("self-cmd"))
    a_listen.publish("kiosk/kiosk-a/ack", mark("self-ack"))
    real_cmd, real_ack = mark("cmd"), mark("ack")
    bridge.publish("kiosk/kiosk-a/cmd", real_cmd)
    bridge.publish("kiosk/kiosk-a/ack", real_ack)
    a_listen.wait_msg("kiosk/kiosk-a/cmd", real_cmd)
    a_listen.wait_msg("kiosk/kiosk-a/ack", real_ack)
    assert sorted(m.payload for m in a_listen.msgs) == sorted([real_cmd.encode(), real_ack.encode()])


def test_a_kiosk_cannot_read_another_kiosks_commands_or_acks(fleet, clients):
    bridge = ok(clients("bridge-1"))
    a = ok(clients("kiosk-a"))
    # Mosquitto grants every SUBACK and checks read rights on each message
    # it would deliver, so shared and wildcard filters are no way around.
    a.subscribe("kiosk/kiosk-b/cmd", "kiosk/kiosk-b/ack", "$share/x/kiosk/kiosk-b/cmd",
                "$share/x/kiosk/+/ack", "kiosk/+/cmd", "#", "kiosk/kiosk-a/ack")
    for t in ("cmd", "ack"):
        bridge.publish(f"kiosk/kiosk-b/{t}", mark("for-b-" + t))
    mine = mark("for-a")
    bridge.publish("kiosk/kiosk-a/ack", mine)
    a.wait(lambda: len(a.got("kiosk/kiosk-a/ack", mine)) >= 1, "own ack")
    with a.lock:
        assert all(m.topic.startswith("kiosk/kiosk-a/") for m in a.msgs), [m.topic for m in a.msgs]
        # "#", "kiosk/+/cmd" and "kiosk/kiosk-a/ack" overlap: one copy per match, all kiosk-a's.
        assert {m.topic for m in a.msgs} == {"kiosk/kiosk-a/ack"}


def test_a_kiosk_cannot_read_what_other_kiosks_publish(fleet, clients):
    a = ok(clients("kiosk-a"))
    a.subscribe("kiosk/kiosk-b/evt", "kiosk/+/state", "kiosk/kiosk-a/ack")
    b = ok(clients("kiosk-b"))
    b.publish("kiosk/kiosk-b/evt", mark("b-evt"))
    bridge = ok(clients("bridge-1"))
    done = mark("done")
    bridge.publish("kiosk/kiosk-a/ack", done)
    a.wait_msg("kiosk/kiosk-a/ack", done)
    assert [m.topic for m in a.msgs] == ["kiosk/kiosk-a/ack"]


def test_one_kiosks_credentials_cannot_knock_another_off(fleet, clients):
    bridge = ok(clients("bridge-1"))
    bridge.subscribe(*SHARED)
    victim = ok(clients("kiosk-b", client_id="kiosk-b", will=("kiosk/kiosk-b/state", b"offline-b")))
    victim.subscribe("kiosk/kiosk-b/cmd")
    # kiosk-a asks for kiosk-b's client id, and leaves a will on kiosk-b's state.
    a = ok(clients("kiosk-a", client_id="kiosk-b", will=("kiosk/kiosk-b/state", b"forged-will")))
    a.c.loop_stop()
    cmd = mark("still-here")
    bridge.publish("kiosk/kiosk-b/cmd", cmd)
    victim.wait_msg("kiosk/kiosk-b/cmd", cmd)
    # Had kiosk-a taken the session over, kiosk-b would have been dropped
    # (before the command could reach it again) and its will published.
    assert victim.disconnects == 0 and len(victim.connects) == 1
    # kiosk-a connects again: its client id is its username, so this takes
    # over its first session, whose will the broker handles before the new
    # CONNACK. That will is not allowed on kiosk-b's topic; kiosk-a's own
    # topic is the control.
    a2 = ok(clients("kiosk-a"))
    control = mark("control")
    a2.publish("kiosk/kiosk-a/evt", control)
    bridge.wait_msg("kiosk/kiosk-a/evt", control)
    assert not bridge.got("kiosk/kiosk-b/state")


def test_shared_subscriptions_split_the_fleet_between_bridges(fleet, clients):
    b1 = ok(clients("bridge-1", v5=True))
    b2 = ok(clients("bridge-2", v5=True))
    for b in (b1, b2):
        assert not any(rc.is_failure for rc in b.subscribe(*SHARED))
    a = ok(clients("kiosk-a"))
    sent = [mark(f"e{i}") for i in range(10)]
    for p in sent:
        a.publish("kiosk/kiosk-a/evt", p)
    a.publish("kiosk/kiosk-a/reply", "r")
    a.publish("kiosk/kiosk-a/tele", "t")
    end = time.monotonic() + 10
    while True:
        got = [m.payload.decode() for b in (b1, b2) for m in b.got("kiosk/kiosk-a/evt")]
        if len(got) >= len(sent) or time.monotonic() > end:
            break
        time.sleep(0.02)
    assert sorted(got) == sorted(sent)   # each exactly once across the group
    assert b1.got("kiosk/kiosk-a/evt") and b2.got("kiosk/kiosk-a/evt")
    b1.wait(lambda: b1.got("kiosk/kiosk-a/reply") + b2.got("kiosk/kiosk-a/reply"), "reply")
    b1.wait(lambda: b1.got("kiosk/kiosk-a/tele") + b2.got("kiosk/kiosk-a/tele"), "tele")


def _split(fleet, clients, group: str, thief_filters: list[str], n: int = 40) -> tuple[list[str], list[str]]:
    """Two bridges in `group`, a kiosk's login (kiosk-b, as from a stolen
    board) subscribed to thief_filters, n events from kiosk-a: (what the
    bridges got between them, what was sent)."""
    b1 = ok(clients("bridge-1", v5=True))
    b2 = ok(clients("bridge-2", v5=True))
    for b in (b1, b2):
        assert not any(rc.is_failure for rc in b.subscribe(*[f"$share/{group}/kiosk/+/evt"]))
    thief = ok(clients("kiosk-b", v5=True))
    thief.subscribe(*thief_filters)
    a = ok(clients("kiosk-a"))
    sent = [mark(f"s{i}") for i in range(n)]
    for p in sent:
        a.publish("kiosk/kiosk-a/evt", p)
    end = time.monotonic() + 5
    while True:
        got = [m.payload.decode() for b in (b1, b2) for m in b.got("kiosk/kiosk-a/evt")]
        if len(got) >= n or time.monotonic() > end:
            return got, sent
        time.sleep(0.05)


def test_a_kiosk_login_can_join_a_share_group_it_can_name(fleet, clients):
    """Why the bridges' group is a secret: mosquitto checks a shared
    SUBSCRIBE's filter without its `$share/GROUP/` prefix, so a kiosk's
    login may join any group it can name, and the broker then drops the
    other kiosks' events it hands that member (finding 7)."""
    got, sent = _split(fleet, clients, "bridges", ["$share/bridges/kiosk/+/evt"])
    assert len(got) < len(sent), "the broker kept the kiosk out of a guessable group (then a plain name would do)"


def test_a_kiosk_login_cannot_join_the_bridges_secret_share_group(fleet, clients):
    """What `kiosk-bridge serve --share-file` does: a random group name that
    kiosks are never told. A stolen kiosk login guessing names and joining
    its own groups takes nothing from the bridges: every event reaches them,
    each once."""
    group = secrets.token_urlsafe(24)
    got, sent = _split(fleet, clients, group, ["$share/bridges/kiosk/+/evt", "$share/kiosk/kiosk/+/evt",
                                               "$share/share/kiosk/+/evt", "$share/default/kiosk/+/evt",
                                               "kiosk/+/evt", "#"])
    assert sorted(got) == sorted(sent)


def test_a_bridge_can_only_do_what_the_host_does(fleet, clients):
    nosy = ok(clients("bridge-1"))
    nosy.subscribe("$SYS/#", "kiosk/+/cmd", "kiosk/+/ack", "kiosk/+/evt")
    sender = ok(clients("bridge-2"))
    a = ok(clients("kiosk-a"))
    a.subscribe("kiosk/kiosk-a/cmd")
    sender.publish("kiosk/kiosk-a/evt", mark("bridge-forged-evt"))   # a bridge cannot pose as a kiosk
    sender.publish("kiosk/kiosk-a/ack", mark("ack"))
    cmd = mark("cmd")
    sender.publish("kiosk/kiosk-a/cmd", cmd)
    # Once kiosk-a holds the command, the broker has queued it (and the ack)
    # for every reader; kiosk-a's next event then queues behind them.
    a.wait_msg("kiosk/kiosk-a/cmd", cmd)
    control = mark("control")
    a.publish("kiosk/kiosk-a/evt", control)
    nosy.wait_msg("kiosk/kiosk-a/evt", control)
    assert [(m.topic, m.payload) for m in nosy.msgs] == [("kiosk/kiosk-a/evt", control.encode())]


@pytest.mark.parametrize("user,password", [(None, None), ("kiosk-a", "wrong"), ("nobody", "x"),
                                           ("kiosk-a", "")])
def test_strangers_are_refused_at_connect(fleet, clients, user, password):
    c = clients(user, password)
    assert c.rc.is_failure and c.rc.value in (134, 135), str(c.rc)   # bad credentials / not authorised
    assert not c.msgs


def test_plaintext_mqtt_to_the_tls_port_gets_no_connack(fleet):
    connect = (b"\x00\x04MQTT\x04\x02\x00\x1e" + struct.pack("!H", 2) + b"cx")
    with socket.create_connection(("127.0.0.1", fleet.port), timeout=10) as s:
        s.sendall(b"\x10" + bytes([len(connect)]) + connect)
        data = b""
        while True:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    assert not data.startswith(b"\x20")   # CONNACK
    # The TLS listener answers with a TLS alert or nothing at all.
    assert data == b"" or data[0] == 0x15


def test_the_password_file_holds_hashes_and_secrets_are_private(fleet):
    text = fleet.passwords.read_text()
    for name, pw in fleet.pw.items():
        assert pw not in text
        assert f"{name}:$7$" in text
        secret = fleet.secrets / f"{name}.mqtt-password"
        assert secret.stat().st_mode & 0o777 == 0o600
    assert text.count("\n") == 4


def test_provisioning_a_running_fleet(fleet, clients, tmp_path):
    # Refusals: a taken name, a kiosk named like a bridge, a name that is a wildcard.
    r = cli("add-kiosk", "kiosk-a", "--passwords", str(fleet.passwords), "--secrets", str(fleet.secrets))
    assert r.returncode == 1 and "already has a password" in r.stderr
    r = cli("add-kiosk", "bridge-1", "--passwords", str(fleet.passwords), "--secrets", str(tmp_path),
            "--acl", str(fleet.acl), "--rotate")
    assert r.returncode == 1 and "bridge" in r.stderr
    for bad in ("+", "kiosk/x", "a:b", "#"):
        r = cli("add-kiosk", bad, "--passwords", str(fleet.passwords), "--secrets", str(tmp_path))
        assert r.returncode == 1 and "cannot be an MQTT username" in r.stderr
    # A new kiosk, then a reload: it connects and has its own rights only.
    pw_c = fleet.add("kiosk", "kiosk-c")
    fleet.pw["kiosk-c"] = pw_c
    assert not can_connect(fleet, "kiosk-c")   # not before the reload
    fleet.reload()
    end = time.monotonic() + 10
    while not can_connect(fleet, "kiosk-c"):
        assert time.monotonic() < end, fleet.log_text()
    c = ok(clients("kiosk-c"))
    bridge = ok(clients("bridge-1"))
    bridge.subscribe("kiosk/+/evt")
    c.publish("kiosk/kiosk-a/evt", mark("c-as-a"))
    control = mark("c")
    c.publish("kiosk/kiosk-c/evt", control)
    bridge.wait_msg("kiosk/kiosk-c/evt", control)
    assert not bridge.got("kiosk/kiosk-a/evt")
    # Rotation: after the reload the old password no longer works, not even
    # for the connection made with it (the broker checks it again).
    r = cli("add-kiosk", "kiosk-c", "--rotate", "--passwords", str(fleet.passwords),
            "--secrets", str(fleet.secrets))
    assert r.returncode == 0, r.stderr
    fleet.pw["kiosk-c"] = (fleet.secrets / "kiosk-c.mqtt-password").read_text().strip()
    assert fleet.pw["kiosk-c"] != pw_c
    fleet.reload()
    c.wait(lambda: len(c.connects) > 1, "the old session dropped and its reconnect answered")
    assert c.disconnects and c.connects[-1].is_failure
    assert not can_connect(fleet, "kiosk-c", pw_c) and can_connect(fleet, "kiosk-c")
    # Removal: the reload also drops the removed user's live connection.
    live = ok(clients("kiosk-c"))
    r = cli("remove", "kiosk-c", "--passwords", str(fleet.passwords))
    assert r.returncode == 0, r.stderr
    assert "kiosk-c:" not in fleet.passwords.read_text()
    fleet.reload()
    live.wait(lambda: len(live.connects) > 1, "the removed kiosk dropped and its reconnect answered")
    assert live.disconnects and live.connects[-1].is_failure
    assert not can_connect(fleet, "kiosk-c")
    del fleet.pw["kiosk-c"]


def test_the_firmware_works_under_the_locked_broker(fleet, clients, tmp_path):
    """The real kiosk link (MicroPython) with its password over TLS: birth and
    will on its state, events acked by a bridge, a command answered."""
    bridge = ok(clients("bridge-1"))
    bridge.subscribe(*SHARED)
    k = Kiosk(tmp_path / "flash", fleet.port, kiosk_id="kiosk-a", keepalive=2,
              broker={"host": "localhost", "tls": True, "ca": fleet.ca, "user": "kiosk-a",
                      "password": fleet.pw["kiosk-a"]})
    k.start()
    try:
        def signed(topic):
            out = []
            for m in bridge.got(topic):
                try:
                    d = json.loads(m.payload)
                except ValueError:
                    continue
                if isinstance(d, dict) and protocol.verify(KEY, d):
                    out.append(d)
            return out

        birth = bridge.wait(lambda: [d for d in signed("kiosk/kiosk-a/state") if d.get("online")], "birth")[0]
        assert birth["kiosk"] == "kiosk-a"
        evts = bridge.wait(lambda: signed("kiosk/kiosk-a/evt"), "an event")
        upto = max(e["s"] for e in evts)
        bridge.publish("kiosk/kiosk-a/ack", json.dumps(
            protocol.sign(KEY, {"v": 1, "upto": upto, "j": birth["journal"]["id"], "t": int(time.time())})))
        now = int(time.time())
        cmd = protocol.sign(KEY, {"v": 1, "id": mark("c"), "op": "pickup", "iat": now, "exp": now + 60,
                                  "args": {"order": "rx-1", "bin": 1}})
        bridge.publish("kiosk/kiosk-a/cmd", json.dumps(cmd))
        bridge.wait(lambda: [d for d in signed("kiosk/kiosk-a/reply")
                             if d["id"] == cmd["id"] and d["state"] == "succeeded"], "reply")
        assert k.stats()["acked"] >= upto
        # A power cut: the broker publishes the kiosk's will on its own state.
        k.kill()
        bridge.wait(lambda: [d for d in signed("kiosk/kiosk-a/state") if d.get("online") is False],
                    "the will", 15)
    finally:
        k.quit()


def test_server_certificate_rotation_on_reload(fleet, clients):
    """A new server certificate (here from a new CA as well) is taken on
    SIGHUP; connected clients stay, new ones must trust the new CA."""
    kept = ok(clients("bridge-1"))
    kept.subscribe("kiosk/+/evt")
    old_ca = fleet.ca
    new = fleet.root / "certs-new"
    r = cli("make-certs", str(new), "--host", "localhost")
    assert r.returncode == 0, r.stderr
    for name in ("server.pem", "server.key"):   # same paths as in the config
        (fleet.root / "certs" / name).write_bytes((new / name).read_bytes())
    fleet.ca = str(new / "ca.pem")
    fleet.reload()
    end = time.monotonic() + 10
    while True:
        try:
            c = clients("kiosk-a")
            break
        except ssl.SSLCertVerificationError:
            assert time.monotonic() < end, fleet.log_text()
            time.sleep(0.1)
    assert not c.rc.is_failure
    control = mark("after-rotation")
    c.publish("kiosk/kiosk-a/evt", control)
    kept.wait_msg("kiosk/kiosk-a/evt", control)   # the connection made before still works
    with pytest.raises(ssl.SSLCertVerificationError):
        clients("kiosk-a", ca=old_ca)
