"""The firmware's MQTT link against a real broker.

A throwaway mosquitto (required: these tests fail, never skip, without it)
serves the MicroPython link harness (tests/mp/link_harness.py: Journal +
Link + a stand-in controller) and a host client (paho-mqtt) that signs
commands and acks and checks every signature the kiosk sends. See
docs/protocol.md for the protocol under test.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from link_support import KEY, Amqtt, Host, Kiosk, Mosquitto
from kiosk_host import protocol

SNAPSHOT_KEYS = {"bins", "doors", "locks", "sensors", "alarms"}


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture
def started(tmp_path):
    """Start kiosks and hosts through this; all are stopped at the end."""
    items = []

    def kiosk(port, **kw):
        k = Kiosk(kw.pop("flash", tmp_path / "flash"), port, **kw)
        items.append(k)
        return k.start()

    def host(port, **kw):
        h = Host(port, **kw)
        items.append(h)
        return h

    yield kiosk, host
    for it in reversed(items):
        try:
            it.quit() if isinstance(it, Kiosk) else it.close()
        except Exception:
            pass


def births(host):
    return [d for d, _ in host.states if d.get("online")]


def deaths(host):
    return [d for d, _ in host.states if d.get("online") is False]


def refused_events(host, why=None):
    with host.lock:
        return [e for e in host.events.values() if e["k"] == "refused" and (why is None or e["why"] == why)]


def test_birth_is_retained_and_signed_and_the_will_reports_a_power_cut(broker, started):
    kiosk, host = started
    k = kiosk(broker.port, keepalive=2)
    h1 = host(broker.port)
    h1.wait(lambda: births(h1), 10, "birth")
    # A host that subscribes later gets the birth as the retained state.
    h2 = host(broker.port, auto_ack=False)
    d, retained = h2.wait(lambda: next((s for s in h2.states if s[0].get("online")), None), 5, "retained birth")
    assert retained
    assert d["v"] == 1 and d["kiosk"] == "k1" and d["fw"] == "test" and d["board"] == "emulator"
    assert d["boot"] == 1 and isinstance(d["t"], int)
    assert SNAPSHOT_KEYS <= set(d["snap"])
    assert d["journal"]["last"] >= 1
    assert protocol.verify(KEY, d) and not h2.bad_sig
    k.kill()
    # The broker gives up after 1.5 x keepalive (3 s), then publishes the will.
    dead = h1.wait(lambda: deaths(h1), 8, "the will (death) after a power cut")[0]
    assert dead["boot"] == 1 and dead["why"] == "lost" and protocol.verify(KEY, dead)
    h3 = host(broker.port, auto_ack=False)
    d3, retained = h3.wait(lambda: h3.states and h3.states[0], 5, "retained death")
    assert retained and d3["online"] is False
    assert not h1.bad_sig


def test_command_round_trip_with_signed_replies(broker, started):
    kiosk, host = started
    h = host(broker.port)
    k = kiosk(broker.port)
    h.wait(lambda: births(h), 10, "birth")
    cid = h.command("pickup", {"order": "rx-1", "bin": 1})
    queued = h.reply_state(cid, "queued")
    done = h.reply_state(cid, "succeeded")
    assert done["info"] == {"args": {"order": "rx-1", "bin": 1}}
    assert protocol.verify(KEY, queued) and protocol.verify(KEY, done) and not h.bad_sig
    assert abs(done["t"] - time.time()) < 5
    s = k.stats()
    assert s["submitted"] == 1 and s["ids"] == [cid]
    # The controller's own journal record arrives as an event.
    h.wait(lambda: any(e["k"] == "op" and e.get("id") == cid for e in h.events.values()), 5, "op event")


def test_bad_commands_are_refused_answered_and_journaled(broker, started):
    kiosk, host = started
    h = host(broker.port)
    k = kiosk(broker.port)
    h.wait(lambda: births(h), 10, "birth")
    now = int(time.time())
    good = protocol.sign(KEY, {"v": 1, "id": "good", "op": "home", "iat": now, "exp": now + 60, "args": {}})
    h.raw(json.dumps(good).encode())
    h.reply_state("good", "succeeded")
    cases = {
        "bad_signature": lambda: h.command("home", cid="forged", key=b"some other key of enough length"),
        "replayed": lambda: h.raw(json.dumps(good).encode()),
        "expired": lambda: h.command("home", cid="old", iat=now - 100, exp=now - 40),
        "not_yet_valid": lambda: h.command("home", cid="early", iat=now + 120, exp=now + 200),
        "bad_expiry": lambda: h.command("home", cid="long", iat=now, exp=now + 3600),
        "bad_schema": lambda: h.command("home", {"x": 1}, cid="schema", extra="field"),
    }
    for why, send in cases.items():
        send()
    ids = {"bad_signature": "forged", "replayed": "good", "expired": "old", "not_yet_valid": "early",
           "bad_expiry": "long", "bad_schema": "schema"}
    for why, cid in ids.items():
        r = h.wait(lambda: next((r for r in h.replies if r["id"] == cid and r["state"] == "rejected"), None),
                   5, f"rejection of {cid}")
        assert r["info"]["reason"] == why and protocol.verify(KEY, r)
    # No id to answer: journaled only.
    h.raw(b"x" * 1500)  # fits the receive buffer: the gate refuses it unread
    h.raw(b"y" * 6000)  # does not: skipped as it arrives
    h.raw(os.urandom(300))
    h.raw(b'{"v": 1, "id": "trunc')
    h.wait(lambda: len(refused_events(h, "oversized")) == 2, 5, "two oversized refusals")
    h.wait(lambda: len(refused_events(h)) == 10, 5, "ten refusals journaled")
    for why, cid in ids.items():
        assert any(e["why"] == why and e.get("id") == cid for e in refused_events(h)), why
    s = k.stats()
    assert s["submitted"] == 1 and k.alive()
    assert sum(s["refused"].values()) == 10
    assert s["stats"]["connected"] and s["stats"]["drops"] == 0


def test_events_carry_seq_and_boot_and_are_not_resent_once_acked(broker, started):
    kiosk, host = started
    h = host(broker.port)
    k = kiosk(broker.port)
    h.wait(lambda: births(h), 10, "birth")
    k.events(100)
    last = k.wait_line(lambda d: "events_done" in d)["last_seq"]
    h.wait(lambda: h.contig == last, 10, "all events")
    for s in range(1, last + 1):
        e = h.events[s]
        assert e["s"] == s and e["b"] == 1 and e["kiosk"] == "k1" and protocol.verify(KEY, e)
        # Only the boot record predates the connection.
        assert bool(e.get("replayed")) == (s == 1)
    deadline = time.monotonic() + 5
    while k.stats()["acked"] < last:
        assert time.monotonic() < deadline, "host acks did not reach the kiosk"
        time.sleep(0.05)
    # A reconnect (broker restart) must not send acknowledged events again.
    n_log = len(h.evt_log)
    broker.stop()
    broker.start()
    h.wait(lambda: len(births(h)) >= 2, 15, "birth after reconnect")
    k.events(3)
    h.wait(lambda: h.contig == last + 3, 10, "new events after reconnect")
    again = [e["s"] for e in h.evt_log[n_log:] if e["s"] <= last]
    assert again == [], f"acknowledged events sent again: {again}"
    assert k.stats()["stats"]["connects"] >= 2


def test_broker_restart_mid_stream_loses_nothing(broker, started):
    kiosk, host = started
    h = host(broker.port)
    k = kiosk(broker.port)
    h.wait(lambda: births(h), 10, "birth")
    k.events(400, every_ms=5)
    h.wait(lambda: len(h.events) >= 100, 10, "first 100 events")
    broker.stop()  # events go on being journaled while it is down
    time.sleep(1.0)
    broker.start()
    last = k.wait_line(lambda d: "events_done" in d, 20)["last_seq"]
    h.wait(lambda: h.contig is not None and h.contig >= last, 30, f"every event up to {last}")
    seen = sorted({e["s"] for e in h.evt_log})
    assert seen == list(range(1, last + 1)), "missing events"
    assert len(h.events) == last  # after dedup, exactly once each
    assert any(e.get("replayed") for e in h.evt_log), "nothing was resent after the reconnect"
    assert all(protocol.verify(KEY, e) for e in h.evt_log) and not h.bad_sig
    s = k.stats()["stats"]
    assert s["drops"] >= 1 and s["connects"] >= 2 and s["connected"]


def test_power_cut_replays_unacked_events_in_order(broker, started, tmp_path):
    kiosk, host = started
    h = host(broker.port, auto_ack=False)
    k = kiosk(broker.port)
    h.wait(lambda: births(h), 10, "birth")
    k.events(20)
    h.wait(lambda: len(h.events) == 21, 10, "boot + 20 events")
    k.kill()
    n_log = len(h.evt_log)
    k2 = kiosk(broker.port)  # same flash directory
    h.wait(lambda: any(b["boot"] == 2 for b in births(h)), 10, "second birth")
    h.wait(lambda: len(h.events) == 22, 10, "replay and the new boot event")
    after = h.evt_log[n_log:]
    # Everything unacknowledged, in order, marked replayed: the 21 records of
    # boot 1 and the boot record the restart wrote before it connected.
    assert [e["s"] for e in after] == list(range(1, 23)), "replayed in order"
    assert all(e.get("replayed") for e in after)
    assert all(e["b"] == 1 for e in after[:21])
    assert h.events[22]["b"] == 2 and h.events[22]["k"] == "boot"
    # Acknowledged now: a further power cut replays nothing older.
    h.ack(22)
    deadline = time.monotonic() + 5
    while k2.stats()["acked"] < 22:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    k2.quit()  # a clean stop persists the ack pointer (and says goodbye)
    h.wait(lambda: any(d.get("why") == "stopped" for d in deaths(h)), 5, "goodbye on stop")
    n_log = len(h.evt_log)
    kiosk(broker.port)
    h.wait(lambda: any(b["boot"] == 3 for b in births(h)), 10, "third birth")
    h.wait(lambda: 23 in h.events, 10, "third boot event")
    time.sleep(0.3)
    assert [e["s"] for e in h.evt_log[n_log:]] == [23]


def test_host_gap_request_resends_the_range(broker, started):
    kiosk, host = started
    h = host(broker.port)
    k = kiosk(broker.port)
    h.wait(lambda: births(h), 10, "birth")
    k.events(30)
    h.wait(lambda: h.contig == 31, 10, "31 events")
    n_log = len(h.evt_log)
    cid = h.command("resend", {"from": 5, "to": 9})
    assert h.reply_state(cid, "succeeded")["info"] == {"from": 5, "to": 9, "j": h.jid, "lost": []}
    h.wait(lambda: len(h.evt_log) >= n_log + 5, 5, "resent range")
    again = h.evt_log[n_log:n_log + 5]
    assert [e["s"] for e in again] == [5, 6, 7, 8, 9] and all(e["replayed"] for e in again)
    bad = h.command("resend", {"from": 9, "to": 5})
    assert h.reply_state(bad, "rejected")["info"]["reason"] == "bad_args"
    assert k.stats()["submitted"] == 0  # handled by the link, not the controller


def test_kiosk_clock_follows_signed_host_acks(broker, started):
    kiosk, host = started
    h = host(broker.port)
    h.t_offset = 5000  # the host's clock is 5000 s ahead of the kiosk's
    k = kiosk(broker.port)
    h.wait(lambda: births(h), 10, "birth")
    step = h.wait(lambda: next((e for e in h.events.values() if e["k"] == "clock"), None), 10, "clock event")
    assert 4990 <= step["step_s"] <= 5010
    cid = h.command("home", iat=int(time.time()) + 5000, exp=int(time.time()) + 5060)
    r = h.reply_state(cid, "succeeded")
    assert abs(r["t"] - (time.time() + 5000)) < 5
    # Forged acks move nothing and are journaled.
    h.ack(10_000, t=int(time.time()), key=b"forged key forged key forged key")
    h.wait(lambda: refused_events(h, "bad_signature"), 5, "forged ack refused")
    assert k.stats()["stats"]["clock_offset_s"] >= 4990


def test_wifi_drop_in_the_emulator(broker, started):
    kiosk, host = started
    h = host(broker.port)
    k = kiosk(broker.port)
    h.wait(lambda: births(h), 10, "birth")
    k.send({"do": "network", "up": False})
    k.wait_line(lambda d: "network" in d)
    k.events(10)
    k.wait_line(lambda d: "events_done" in d)
    time.sleep(0.5)
    s = k.stats()["stats"]
    assert not s["connected"] and s["last_error"] == "wifi_down" and s["drops"] == 1
    k.send({"do": "network", "up": True})
    h.wait(lambda: h.contig == 11, 15, "events journaled while Wi-Fi was down")
    assert k.stats()["stats"]["connects"] == 2


def _fuzz_payloads(n: int, base: bytes, rnd: random.Random) -> list[bytes]:
    now = int(time.time())
    base_obj = json.loads(base)

    def signed(d, key=KEY):
        try:
            protocol.sign(key, d)
        except protocol.Unsignable:  # floats: nothing can sign them; send a made-up signature
            d["sig"] = "%064x" % rnd.getrandbits(256)
        return json.dumps(d).encode()

    def fresh(i, **kw):
        d = {"v": 1, "id": f"z{i}", "op": "pickup", "iat": now, "exp": now + 60,
             "args": {"order": "o", "bin": 1}}
        d.update(kw)
        return d

    def mutate(b):
        b = bytearray(b)
        for _ in range(rnd.randint(1, 4)):
            op = rnd.randrange(4)
            i = rnd.randrange(len(b))
            if op == 0:
                b[i] ^= 1 << rnd.randrange(8)
            elif op == 1:
                del b[i]
            elif op == 2:
                b.insert(i, rnd.randrange(256))
            else:
                b = b[:i]
            if not b:
                b = bytearray(b"?")
        return bytes(b)

    makers = [
        lambda i: os.urandom(rnd.randrange(0, 400)),
        lambda i: mutate(base),  # only the already-used command: a lucky mutation is a replay
        lambda i: base,
        lambda i: signed(fresh(i), key=rnd.randbytes(32)),
        lambda i: signed(fresh(i, iat=now - 500, exp=now - 400)),
        lambda i: signed(fresh(i, iat=now + 1000, exp=now + 1100)),
        lambda i: signed(fresh(i, exp=now + 100000)),
        lambda i: b"{" + b" " * rnd.randrange(1025, 1400) + b"}",
        lambda i: b"[" * rnd.randrange(100, 1000),
        lambda i: signed(fresh(i, v=rnd.choice(["1", 2, None, [1], 1.0]))),
        lambda i: signed(fresh(i, id=rnd.choice([5, None, "", "x" * 65, ["a"], {"a": 1}]))),
        lambda i: signed(fresh(i, args=rnd.choice([[], "a", 1, None]))),
        lambda i: signed(fresh(i, iat=rnd.choice(["now", 1.5, None, True]))),
        lambda i: signed(fresh(i, extra=1)),
        lambda i: signed({**base_obj, "exp": base_obj["exp"] + 1}, key=b"0" * 32),
        lambda i: json.dumps(rnd.choice([[], 1, "s", None, {"v": 1}])).encode(),
    ]
    out = [makers[i % len(makers)](i) for i in range(n)]
    out[::997] = [b"z" * 4000] * len(out[::997])  # a few too big to buffer at all
    return out


def test_fuzz_ten_thousand_bad_commands(tmp_path, started):
    kiosk, host = started
    b = Mosquitto(tmp_path / "broker", extra=["max_queued_messages 0", "max_inflight_messages 0"]).start()
    try:
        h = host(b.port)
        k = kiosk(b.port, journal={"segment_bytes": 16384, "max_segments": 16})
        h.wait(lambda: births(h), 10, "birth")
        now = int(time.time())
        base = json.dumps(protocol.sign(KEY, {"v": 1, "id": "base", "op": "home", "iat": now,
                                             "exp": now + 120, "args": {}})).encode()
        h.raw(base)
        h.reply_state("base", "succeeded")
        mem0 = k.stats()["mem_alloc"]
        payloads = _fuzz_payloads(10_000, base, random.Random(1234))
        t0 = time.monotonic()
        for p in payloads:
            h.raw(p)
        deadline = t0 + 50
        while True:
            s = k.stats()
            if sum(s["refused"].values()) >= len(payloads):
                break
            assert time.monotonic() < deadline, f"only {sum(s['refused'].values())} handled: {s}"
            time.sleep(0.5)
        elapsed = time.monotonic() - t0
        assert sum(s["refused"].values()) == len(payloads), s["refused"]
        assert s["submitted"] == 1, "a bad command reached the controller"
        assert k.alive()
        assert s["refused"].get("internal", 0) == 0, s["refused"]
        time.sleep(0.5)
        s = k.stats()
        assert s["mem_alloc"] - mem0 < 12_000, f"heap grew from {mem0} to {s['mem_alloc']}"
        assert s["stats"]["drops"] == 0
        print(f"fuzz: {len(payloads)} commands in {elapsed:.1f} s, heap {mem0} -> {s['mem_alloc']} bytes, "
              f"refusals {s['refused']}")
    finally:
        b.stop()


def test_against_the_amqtt_broker(tmp_path, started):
    kiosk, host = started
    b = Amqtt(tmp_path / "amqtt").start()
    try:
        h = host(b.port)
        k = kiosk(b.port)
        h.wait(lambda: births(h), 15, f"birth via amqtt; broker log:\n{b.log()}")
        cid = h.command("pickup", {"order": "a", "bin": 2})
        h.reply_state(cid, "succeeded")
        k.events(50)
        h.wait(lambda: h.contig == 52, 10, "events via amqtt")
        deadline = time.monotonic() + 5
        while k.stats()["acked"] < 52:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert k.stats()["submitted"] == 1 and not h.bad_sig
    finally:
        b.stop()


TLS_DIR = Path(__file__).parent / "tls"
CERTS = {"ca": str(TLS_DIR / "ca.pem"), "cert": str(TLS_DIR / "server.pem"), "key": str(TLS_DIR / "server.key")}


def test_tls_with_the_brokers_ca(tmp_path, started):
    kiosk, host = started
    certs = CERTS
    b = Mosquitto(tmp_path / "broker", tls=certs).start()
    try:
        import paho.mqtt.client as mqtt

        got = []
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        c.tls_set(ca_certs=certs["ca"])
        c.on_message = lambda cl, u, m: got.append(json.loads(m.payload))
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe("kiosk/k1/#", 1)
        c.connect("localhost", b.port)
        c.loop_start()
        k = kiosk(b.port, broker={"host": "localhost", "tls": True, "ca": certs["ca"]})
        deadline = time.monotonic() + 15
        while not any(d.get("online") for d in got):
            assert time.monotonic() < deadline, f"no birth over TLS; kiosk: {k.output()}"
            time.sleep(0.05)
        assert protocol.verify(KEY, next(d for d in got if d.get("online")))
        assert k.stats()["stats"]["connected"]
        c.loop_stop()
        c.disconnect()
        # The wrong CA: the kiosk refuses the broker and never connects.
        k.quit()
        other = str(TLS_DIR / "other_ca.pem")
        k2 = kiosk(b.port, flash=tmp_path / "flash2", broker={"host": "localhost", "tls": True, "ca": other})
        time.sleep(2)
        s = k2.stats()["stats"]
        assert not s["connected"] and s["connects"] == 0 and s["last_error"]
    finally:
        b.stop()


def test_telemetry_is_periodic_signed_and_float_free(broker, started):
    kiosk, host = started
    h = host(broker.port)
    kiosk(broker.port, policies={"telemetry_period_s": 1})
    h.wait(lambda: len(h.tele) >= 2, 6, "two telemetry messages")
    t = h.tele[-1]
    assert protocol.verify(KEY, t) and t["v"] == 1 and t["boot"] == 1
    assert t["temp_centi"] == {"shelf": 425} and t["rh_centi"] == {"shelf": 4550}
    assert isinstance(t["heap"], int) and t["heap"] > 0
    assert t["link"]["connected"] and t["link"]["rssi"] == -58 and "max_stall_us" in t["link"]


def test_a_broker_that_stops_answering_is_dropped_by_keepalive(broker, started):
    kiosk, host = started
    h = host(broker.port)
    k = kiosk(broker.port, keepalive=2, link={"connect_timeout_ms": 3000})
    h.wait(lambda: births(h), 10, "birth")
    broker.proc.send_signal(signal.SIGSTOP)  # alive, connected, silent
    try:
        k.events(5)
        deadline = time.monotonic() + 8
        while True:
            s = k.stats()["stats"]
            if s["drops"] >= 1:
                break
            assert time.monotonic() < deadline, f"no drop after the broker went silent: {s}"
            time.sleep(0.2)
        assert s["last_error"] == "keepalive_timeout"
    finally:
        broker.proc.send_signal(signal.SIGCONT)
    h.wait(lambda: h.contig == 6, 20, "events after the broker woke up")
    assert k.stats()["stats"]["connected"]


def test_broker_credentials_and_a_refused_connect(tmp_path, started):
    kiosk, host = started
    b = Mosquitto(tmp_path / "broker", users={"k1": "s3cret", "host": "hostpw"}).start()
    try:
        k = kiosk(b.port, broker={"user": "k1", "password": "s3cret"})
        deadline = time.monotonic() + 10
        while not k.stats()["stats"]["connected"]:
            assert time.monotonic() < deadline, k.output()
            time.sleep(0.05)
        k.quit()
        bad = kiosk(b.port, flash=tmp_path / "flash2", broker={"user": "k1", "password": "wrong"})
        time.sleep(1.5)
        s = bad.stats()["stats"]
        assert not s["connected"] and s["connects"] == 0
        assert s["last_error"] == "connack_refused 5"  # not authorised
    finally:
        b.stop()


# -- the simulated network's routes (sim/socket.py): never an off-machine dial --

def _stats_until(k, pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        s = k.stats()
        if pred(s["stats"]):
            return s
        assert time.monotonic() < deadline, f"{what}: {s['stats']}"
        time.sleep(0.1)


def test_a_refused_route_is_retried_with_backoff_without_stalling_the_loop(broker, started):
    kiosk, host = started
    h = host(broker.port)
    k = kiosk(broker.port, link={"backoff_ms": [200, 800]})
    h.wait(lambda: births(h), 10, "birth")
    k.send({"do": "network", "route": "refused"})
    k.wait_line(lambda d: "network" in d)
    s = _stats_until(k, lambda s: s["drops"] >= 1 and not s["connected"], 10, "no reset")
    time.sleep(2)
    k.send({"do": "reset"})
    k.wait_line(lambda d: "reset" in d)
    time.sleep(1.5)                      # several refused connects, each backed off
    s = k.stats()
    assert s["stats"]["connects"] == 1 and s["stats"]["last_error"] == "os_error 111", s["stats"]
    assert s["stats"]["max_stall_us"] < 50000 and s["late_us"] < 100000, s
    k.events(3)
    k.send({"do": "network", "route": "ok"})
    h.wait(lambda: h.contig == 4, 15, "events after the route came back")


def test_a_blackholed_route_times_out_connects_and_freezes_a_session(broker, started):
    kiosk, host = started
    h = host(broker.port)
    k = kiosk(broker.port, keepalive=2, link={"backoff_ms": [200, 400], "connect_timeout_ms": 1000})
    h.wait(lambda: births(h), 10, "birth")
    k.send({"do": "network", "route": "blackhole"})
    k.wait_line(lambda d: "network" in d)
    k.events(4)                          # written into a frozen connection: they wait
    s = _stats_until(k, lambda s: s["drops"] >= 1, 10, "the frozen session was never dropped")
    assert s["stats"]["last_error"] == "keepalive_timeout", s["stats"]
    _stats_until(k, lambda s: s["last_error"] == "connect_timeout", 10, "a connect nobody answers never timed out")
    k.send({"do": "reset"})
    k.wait_line(lambda d: "reset" in d)
    time.sleep(1.5)
    s = k.stats()
    assert not s["stats"]["connected"] and s["stats"]["max_stall_us"] < 50000 and s["late_us"] < 100000, s
    k.send({"do": "network", "route": "ok"})
    h.wait(lambda: h.contig == 5, 20, "events after the route came back")


def test_a_slow_route_delivers_everything_in_order(broker, started):
    kiosk, host = started
    h = host(broker.port, ack_ms=5)
    k = kiosk(broker.port)
    h.wait(lambda: births(h), 10, "birth")
    k.send({"do": "network", "rtt_ms": 80})
    k.wait_line(lambda d: "network" in d)
    t0 = time.monotonic()
    k.events(40)
    h.wait(lambda: h.contig == 41, 20, "events over the slow route")
    s = _stats_until(k, lambda s: s["acked"] == 41, 10, "acks over the slow route")
    # A window of 8 in flight, 80 ms a round trip: at least 5 round trips.
    assert time.monotonic() - t0 >= 0.4
    assert s["stats"]["connects"] == 1


def test_an_idle_link_makes_no_garbage(broker, started):
    """At rest the link must not feed the garbage collector: a collection
    it triggers can land in the middle of a carousel move (docs/stepper.md).
    Measured with the collector off while nothing happens but the link's
    own polling (a keepalive ping would fall outside the window)."""
    kiosk, host = started
    h = host(broker.port)
    k = kiosk(broker.port, keepalive=60)
    h.wait(lambda: births(h), 10, "birth")
    h.wait(lambda: k.stats()["acked"] >= 1, 10, "the birth's records acknowledged")
    time.sleep(0.5)
    k.send({"do": "garbage", "ms": 2000})
    bps = k.wait_line(lambda d: "garbage_bps" in d, 20)["garbage_bps"]
    assert bps <= 100, f"the idle link allocates {bps} bytes/s"
