"""Custody at the kiosk's MQTT link: the real firmware link (the MicroPython
harness, tests/mp/link_harness.py) on a real mosquitto, with a host that
signs and a stranger that publishes whatever it likes, as anyone can on a
broker without the locked-down ACL (docs/security.md)."""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
import pytest

from link_support import Host, Kiosk, Mosquitto


@pytest.fixture
def rig(tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    items: list = []

    def kiosk(**kw):
        k = Kiosk(tmp_path / "flash", broker.port, **kw)
        items.append(k)
        return k.start()

    def host(**kw):
        h = Host(broker.port, **kw)
        items.append(h)
        return h

    yield broker, kiosk, host
    for it in reversed(items):
        try:
            it.quit() if isinstance(it, Kiosk) else it.close()
        except Exception:
            pass
    broker.stop()


def _stranger(port: int) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"stranger-{time.monotonic_ns()}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def _reconnect(k: Kiosk) -> dict:
    """Drop the kiosk's network and bring it back; wait for the new session
    to be up and subscribed (the broker sends retained messages then)."""
    before = k.stats()["stats"]["connects"]
    k.send({"do": "network", "up": False})
    time.sleep(0.5)
    k.send({"do": "network", "up": True})
    end = time.monotonic() + 15
    while time.monotonic() < end:
        st = k.stats()
        if st["stats"]["connects"] > before and st["stats"]["connected"]:
            time.sleep(0.5)
            return k.stats()
        time.sleep(0.1)
    raise AssertionError("the kiosk did not reconnect")


def _refused(h: Host) -> list[dict]:
    with h.lock:
        return [e for e in h.events.values() if e["k"] == "refused"]


def test_one_late_ack_never_steps_the_kiosk_clock_back(rig):
    # Finding 9: an ack that waited 8 s somewhere stepped the kiosk's clock
    # (and so every later record's time) 8 s back.
    broker, kiosk, host = rig
    h = host(auto_ack=False)
    k = kiosk()
    h.wait(lambda: [d for d, _ in h.states if d.get("online")], 10, "birth")
    h.wait(lambda: h.contig, 5, "the backlog")
    h.ack(h.contig)                                  # in time: sets the clock
    k.events(1)
    s = h.wait(lambda: h.contig if h.contig and h.contig > h.acked_sent else None, 5, "an event")
    h.ack(s, t=int(time.time()) - 8)                 # the same kind of ack, 8 s late
    time.sleep(0.5)
    k.events(1)
    e = h.wait(lambda: h.events.get(s + 1), 5, "the next event")
    assert abs(e["t"] - time.time()) <= 2, (e["t"], time.time())
    assert k.stats()["stats"]["clock_offset_s"] >= -2
    with h.lock:
        assert not [x for x in h.events.values() if x["k"] == "clock" and x["step_s"] < 0]


def test_retained_junk_on_cmd_and_ack_is_ignored_at_every_reconnect(rig):
    # Finding 10: junk left retained on kiosk/<id>/cmd was journaled again
    # at every reconnect (the broker hands retained messages to every new
    # subscription).
    broker, kiosk, host = rig
    s = _stranger(broker.port)
    try:
        s.publish("kiosk/k1/cmd", b"retained junk", qos=1, retain=True).wait_for_publish(5)
        s.publish("kiosk/k1/ack", b'{"v":1,"upto":99}', qos=1, retain=True).wait_for_publish(5)
        h = host()
        k = kiosk()
        h.wait(lambda: [d for d, _ in h.states if d.get("online")], 10, "birth")
        for n in range(4):
            if n:
                _reconnect(k)
            end = time.monotonic() + 5
            while True:   # both retained messages at this subscribe
                st = k.stats()["stats"]
                if st.get("retained_dropped", 0) >= 2 * (n + 1) or time.monotonic() > end:
                    break
                time.sleep(0.1)
            assert _refused(h) == [], _refused(h)
            assert st["connects"] == n + 1 and st["retained_dropped"] == 2 * (n + 1), st
        # Junk published while the kiosk listens is refused once, as it
        # arrives, and not again at the next subscribe.
        s.publish("kiosk/k1/cmd", b"more junk", qos=1, retain=True).wait_for_publish(5)
        h.wait(lambda: _refused(h), 5, "the live junk refused")
        _reconnect(k)
        _reconnect(k)
        assert [e["why"] for e in _refused(h)] == ["bad_json"]
        # Nothing retained was ever obeyed or acknowledged: the kiosk still works.
        cid = h.command("home")
        h.reply_state(cid, "succeeded")
    finally:
        s.publish("kiosk/k1/cmd", b"", qos=1, retain=True).wait_for_publish(5)
        s.publish("kiosk/k1/ack", b"", qos=1, retain=True).wait_for_publish(5)
        s.loop_stop()
        s.disconnect()
