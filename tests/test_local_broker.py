"""The demo's own broker (kiosk_host.broker.LocalBroker, mosquitto) caps
the size of a packet as the shipped configuration does: a client that sends
a far larger message is cut off, and nobody receives it."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt

from kiosk_host.broker import MAX_PACKET, LocalBroker


class _Client:
    def __init__(self, port: int):
        self.got: list[bytes] = []
        self.down = threading.Event()
        self.up = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.c.on_connect = lambda *a: self.up.set()
        self.c.on_disconnect = lambda *a: self.down.set()
        self.c.on_message = lambda cl, u, m: self.got.append(m.payload)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.up.wait(10)


def test_the_demo_broker_refuses_a_packet_past_its_cap(tmp_path):
    broker = LocalBroker(tmp_path, prefer="mosquitto").start()
    try:
        sub = _Client(broker.port)
        sub.c.subscribe("kiosk/k1/evt", 1)
        sender = _Client(broker.port)
        sender.c.publish("kiosk/k1/evt", b"x" * (MAX_PACKET + 1024), qos=1)
        assert sender.down.wait(10), "a packet past the cap cut the sender off"
        ok = b"y" * (MAX_PACKET - 1024)
        other = _Client(broker.port)
        other.c.publish("kiosk/k1/evt", ok, qos=1).wait_for_publish(10)
        end = threading.Event()
        for _ in range(100):
            if sub.got:
                break
            end.wait(0.05)
        assert sub.got == [ok], [len(p) for p in sub.got]
        for c in (sub, sender, other):
            c.c.loop_stop()
            c.c.disconnect()
    finally:
        broker.stop()
