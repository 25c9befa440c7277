"""The bridge end to end: emulated kiosks (the real firmware) on a real
mosquitto, `kiosk-bridge serve` as a real process with its SQLite store,
driven through its HTTP API as the pharmacy back end would.

The store is checked against the source of truth, each kiosk's flash
journal: every record there is in the store once, with the same fields."""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from bridge_support import TERMINAL, USERS, BridgeProc, Site, journal_records, wait_until
from kiosk_host import protocol


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    s = Site(tmp_path_factory.mktemp("bridge"))
    yield s
    s.close()


def test_a_pickup_from_request_to_terminal_state_with_its_custody_events(site):
    kid = "kiosk-001"
    site.restock(kid, "rx-100", 4)
    assert site.bridge.kiosk(kid)["status"]["stock"] == {"4": "rx-100"}
    c = site.run(kid, "/pickups", {"order_id": "rx-100", "bin": 4}, door="pickup")
    assert c["state"] == "succeeded" and c["op"] == "pickup" and c["args"] == {"order": "rx-100", "bin": 4}
    cid = c["command_id"]
    # The pharmacist who asked is the command's actor, and the kiosk's own
    # records on flash name them too.
    assert c["actor"] == USERS["pharmacist"], c
    # The authoritative outcome comes from the journal too, not only the reply.
    wait_until(lambda: any(h["by"] == "event" and h["state"] == "succeeded"
                           for h in site.bridge.command(cid)["history"]), 10, "the op event")
    evs = site.bridge.events(kid)
    mine = [e["body"] for e in evs if e["body"].get("id") == cid]
    assert [e["k"] for e in mine] == ["pickup", "op"], mine
    assert mine[0]["order"] == "rx-100" and mine[0]["bin"] == 4 and mine[1]["opened"] is True
    flash = {r["s"]: r for r in journal_records(site.fleet.kiosk(kid).flash).values() if r.get("id") == cid}
    assert sorted(r["k"] for r in flash.values()) == ["op", "pickup"], flash
    assert all(r["by"] == USERS["pharmacist"] for r in flash.values()), flash
    restocked = [r for r in journal_records(site.fleet.kiosk(kid).flash).values() if r.get("k") == "restock"]
    assert restocked and restocked[-1]["by"] == USERS["technician"], restocked
    # The door cycle that released it is in the record, in order, before the pickup.
    pickup_seq = mine[0]["s"]
    doors = [e["body"]["ev"] for e in evs if e["body"]["k"] == "door" and e["body"]["door"] == "pickup"
             and e["seq"] < pickup_seq]
    assert doors[-4:] == ["bolt_released", "door_opened", "bolt_engaged", "door_closed"] or \
        doors[-3:] in (["door_opened", "bolt_engaged", "door_closed"], ["door_opened", "door_closed", "bolt_engaged"]), doors
    k = site.bridge.kiosk(kid)
    assert k["last_pickup"]["order"] == "rx-100" and k["last_pickup"]["command_id"] == cid
    assert k["status"]["stock"] == {} and k["alarms"] == []
    assert k["doors"]["pickup"] == {"door": "closed", "bolt": "engaged", "alarms": [], "secure": True}
    assert k["severity"] == "ok" and k["problems"] == [], k["problems"]
    assert site.bridge.metric("kiosk_bridge_commands_total", op="pickup", state="succeeded") >= 1
    assert site.bridge.metric("kiosk_bridge_command_latency_seconds_count", op="pickup") >= 1
    site.stored_matches_flash(kid)


def test_a_pickup_the_patient_never_opens_fails_and_keeps_the_stock(site):
    kid = "kiosk-001"
    site.restock(kid, "rx-101", 6)
    status, r = site.bridge.post(f"/api/kiosks/{kid}/pickups", {"order_id": "rx-101", "bin": 6})
    assert status == 202
    c = site.bridge.wait_command(r["command_id"], TERMINAL, 40)
    assert c["state"] in ("timed_out", "failed") and c["reason"], c
    # The reply can come before the journal's op record reaches the store.
    op = wait_until(lambda: [e["body"] for e in site.bridge.events(kid, "op") if e["body"]["id"] == r["command_id"]],
                    20, "the op record in the store")
    assert op[-1]["state"] == c["state"] and op[-1]["opened"] is False
    assert not [e for e in site.bridge.events(kid, "pickup") if e["body"]["id"] == r["command_id"]]
    k = site.bridge.kiosk(kid)
    assert k["status"]["stock"] == {"6": "rx-101"}
    w = site.fleet.world(kid)["world"]["locks"]["pickup"]
    assert not w["energized"] and w["door_closed"]


def test_bad_requests_never_reach_a_kiosk(site):
    kid = "kiosk-001"
    seen = []
    got = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="cmd-watch")
    c.on_message = lambda cl, u, m: (seen.append((m.topic, json.loads(m.payload))), got.set())
    c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe("kiosk/+/cmd", 1)
    c.connect("127.0.0.1", site.broker.port)
    c.loop_start()
    try:
        wait_until(lambda: c.is_connected(), 5)
        time.sleep(0.3)
        b = site.bridge
        cases = [
            (f"/api/kiosks/{kid}/pickups", {"order_id": "rx-1", "bin": 99}, 422, "bins 1 to 12"),
            (f"/api/kiosks/{kid}/pickups", {"order_id": "rx-1", "bin": 0}, 422, "bin"),
            (f"/api/kiosks/{kid}/pickups", {"order_id": "", "bin": 1}, 422, "order_id"),
            (f"/api/kiosks/{kid}/pickups", {"order_id": "x" * 65, "bin": 1}, 422, "order_id"),
            (f"/api/kiosks/{kid}/pickups", {"order_id": "rx-1", "bin": "3"}, 422, "bin"),
            (f"/api/kiosks/{kid}/pickups", {"order_id": "rx-1", "bin": 1, "extra": 1}, 422, "extra"),
            (f"/api/kiosks/{kid}/pickups", [1, 2], 422, ""),
            ("/api/kiosks/no-such-kiosk/pickups", {"order_id": "rx-1", "bin": 1}, 404, "unknown kiosk"),
            (f"/api/kiosks/{kid}/commands", {"op": "reboot_everything", "args": {}}, 422, "op"),
            (f"/api/kiosks/{kid}/commands", {"op": "jog", "args": {"bins": "two"}}, 422, "jog.args.bins: Input should be a valid integer"),
            (f"/api/kiosks/{kid}/commands", {"op": "unlock", "args": {}}, 422, "unlock.args.door: Field required"),
            (f"/api/kiosks/{kid}/commands", {"op": "unlock", "args": {"door": "side"}}, 422, "unlock.args.door"),
            (f"/api/kiosks/{kid}/commands", {"op": "verify_bin", "args": {"bin": 2}}, 422, "present"),
        ]
        for path, body, want, text in cases:
            status, r = b.post(path, body)
            assert status == want and isinstance(r, dict) and text in json.dumps(r), (path, body, status, r)
        status, r = b.request("GET", "/api/commands/nope")
        assert status == 404 and "unknown command" in r["detail"]
        status, r = b.request("POST", f"/api/kiosks/{kid}/pickups", None)
        assert status == 422
        # A good request goes out at once, so the silence above was real.
        status, r = b.post(f"/api/kiosks/{kid}/commands", {"op": "home", "args": {}})
        assert status == 202
        assert got.wait(10)
        assert [m["op"] for _, m in seen] == ["home"] and seen[0][1]["id"] == r["command_id"]
        assert protocol.verify(site.key(kid), seen[0][1])
        b.wait_command(r["command_id"], "succeeded", 40)
    finally:
        c.loop_stop()
        c.disconnect()


def test_order_ids_beyond_ascii_reach_the_kiosk_signed_intact(site):
    # Non-BMP characters go out as UTF-8, not as JSON surrogate escapes the
    # kiosk would decode differently and so refuse as badly signed.
    kid = "kiosk-002"
    order = "rx-\U0001F48A-\u00e9t\u00e9-\u836f"
    site.restock(kid, order, 4)
    c = site.run(kid, "/pickups", {"order_id": order, "bin": 4}, door="pickup")
    assert c["args"]["order"] == order
    wait_until(lambda: any(e["body"].get("order") == order for e in site.bridge.events(kid, "pickup")), 20,
               "the pickup record in the store")
    assert not [e for e in site.bridge.events(kid, "refused")], "the kiosk refused a command"
    # Text with no UTF-8 form (a lone surrogate) is refused at the door.
    status, r = site.bridge.request("POST", f"/api/kiosks/{kid}/pickups", None,
                                    raw=b'{"order_id": "rx-\\ud83d", "bin": 4}')
    assert status == 422 and "order_id" in r["detail"], (status, r)


def test_forged_and_malformed_messages_are_counted_and_never_stored(site):
    kid = "kiosk-002"
    b = site.bridge
    before = b.kiosk(kid)["events_stored_upto"]
    bad0 = {r: b.metric("kiosk_bridge_messages_rejected_total", reason=r)
            for r in ("bad_signature", "unknown_kiosk", "bad_json", "oversized", "wrong_kiosk")}
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="intruder")
    c.connect("127.0.0.1", site.broker.port)
    c.loop_start()
    try:
        forged = protocol.sign(b"\x01" * 32, {"s": before + 1, "b": 1, "t": 1, "k": "pickup", "bin": 1,
                                             "v": 1, "kiosk": kid})
        other = protocol.sign(site.key("kiosk-003"), {"s": before + 1, "b": 1, "t": 1, "k": "pickup", "v": 1,
                                                      "kiosk": "kiosk-003"})
        for topic, payload in [(f"kiosk/{kid}/evt", json.dumps(forged)),
                               (f"kiosk/{kid}/evt", json.dumps(other)),      # signed, but by kiosk-003
                               ("kiosk/stranger/evt", json.dumps(forged)),
                               (f"kiosk/{kid}/evt", "{not json"),
                               (f"kiosk/{kid}/evt", "x" * 70000),
                               (f"kiosk/{kid}/state", json.dumps({"online": False, "v": 1, "kiosk": kid}))]:
            c.publish(topic, payload, qos=1).wait_for_publish(5)
        wait_until(lambda: b.metric("kiosk_bridge_messages_rejected_total", reason="bad_signature")
                   >= bad0["bad_signature"] + 2, 10, "the forgeries rejected")
        # kiosk-003's key signs a message claiming kiosk-003 on kiosk-002's topic.
        assert b.metric("kiosk_bridge_messages_rejected_total", reason="wrong_kiosk") + \
            b.metric("kiosk_bridge_messages_rejected_total", reason="bad_signature") >= bad0["bad_signature"] + 3
        wait_until(lambda: b.metric("kiosk_bridge_messages_rejected_total", reason="oversized") > bad0["oversized"], 5)
        assert b.metric("kiosk_bridge_messages_rejected_total", reason="unknown_kiosk") > bad0["unknown_kiosk"]
        assert b.metric("kiosk_bridge_messages_rejected_total", reason="bad_json") > bad0["bad_json"]
    finally:
        c.loop_stop()
        c.disconnect()
    k = b.kiosk(kid)
    assert k["online"], "an unsigned death did not take the kiosk offline"
    assert all(e["body"].get("sig") for e in b.events(kid))
    assert not [e for e in b.events(kid) if e["seq"] > before and e["body"]["k"] == "pickup"]
    site.stored_matches_flash(kid)


def test_an_excursion_is_raised_shown_and_cleared(site):
    kid = "kiosk-002"
    b = site.bridge
    site.fleet.sensor(kid, "cabinet", celsius=31.5)
    k = wait_until(lambda: (lambda k: k if k["excursions_open"] else None)(b.kiosk(kid)), 30, "an excursion")
    assert any("excursion" in a for a in k["alarms"])
    t = b.get(f"/api/kiosks/{kid}/temperature?hours=1")
    assert t["band_c"] == [20.0, 25.0] and t["limits_c"] == [15.0, 30.0]
    x = t["excursions_open"][0]
    assert x["sensor"] == "cabinet" and x["end"] is None and x["max"] >= 31.0
    wait_until(lambda: any(v is not None and v >= 31 for _, v in
                           b.get(f"/api/kiosks/{kid}/temperature?hours=1")["series"].get("cabinet", [])),
               20, "the high reading in the temperature history")
    # Clearing an ongoing excursion is refused (nothing is sent), and so is
    # one without the pharmacist's reason.
    reason = "kept: 31.5 °C for minutes, MKT within limits"
    status, r = b.post(f"/api/kiosks/{kid}/excursions/{x['id']}/clear", {"reason": reason})
    assert status == 409 and "still going on" in r["detail"], (status, r)
    status, r = b.post(f"/api/kiosks/{kid}/excursions/{x['id']}/clear")
    assert status == 422 and "reason" in r["detail"], (status, r)
    assert b.post(f"/api/kiosks/{kid}/excursions/nope/clear", {"reason": reason})[0] == 404
    assert not [c for c in b.kiosk(kid)["commands"] if c["op"] == "clear_excursion"]
    site.fleet.sensor(kid, "cabinet", celsius=22.0)
    wait_until(lambda: any(e["body"].get("ev") == "excursion_end" for e in b.events(kid, "temp")), 30,
               "the excursion's end")
    t = wait_until(lambda: (lambda t: t if any(v is not None and v <= 22.5 for _, v in t["series"]["cabinet"]) else None)(
        b.get(f"/api/kiosks/{kid}/temperature?hours=1")), 20, "a reading back in range")
    ended = [e for e in t["excursion_events"] if e["ev"] == "excursion_end" and e["id"] == x["id"]]
    assert ended and ended[0]["end"] and ended[0]["max"] >= 31.0 and ended[0]["min"] <= ended[0]["max"]
    day = [d for d in t["days"] if d["sensor"] == "cabinet"]
    assert day and day[-1]["max"] >= 31.0 and day[-1]["min"] <= 22.5 and day[-1]["min"] <= day[-1]["mkt"] <= day[-1]["max"]
    c = site.run(kid, f"/excursions/{x['id']}/clear", {"reason": reason})
    assert c["op"] == "clear_excursion" and c["actor"] == USERS["pharmacist"] and c["note"] == reason
    k = wait_until(lambda: (lambda k: k if not k["excursions_open"] else None)(b.kiosk(kid)), 15, "cleared")
    span = [s for s in b.get(f"/api/kiosks/{kid}/temperature?hours=1")["excursions"] if s["id"] == x["id"]]
    assert span and span[0]["state"] == "cleared" and span[0]["cleared_by"] == USERS["pharmacist"], span
    assert span[0]["cleared_reason"] == reason and span[0]["start"] < span[0]["end"] and span[0]["max"] >= 31.0
    assert not any("excursion" in a for a in k["alarms"])
    assert any(e["body"].get("ev") == "excursion_cleared" and e["body"]["id"] == x["id"]
               and e["body"]["by"] == USERS["pharmacist"] for e in b.events(kid, "temp"))
    cleared = [e for e in b.get(f"/api/kiosks/{kid}/temperature?hours=1")["excursion_events"]
               if e["ev"] == "excursion_cleared" and e["id"] == x["id"]]
    assert cleared and cleared[0]["by"] == USERS["pharmacist"] and cleared[0]["reason"] == reason, cleared
    assert b.metric("kiosk_bridge_excursions_total") >= 1


def test_a_kiosk_that_loses_power_mid_pickup_reports_how_it_ended_and_never_repeats_it(site):
    kid = "kiosk-003"
    b = site.bridge
    site.restock(kid, "rx-300", 2)
    boot = b.kiosk(kid)["boot"]
    status, r = b.post(f"/api/kiosks/{kid}/pickups", {"order_id": "rx-300", "bin": 2})
    assert status == 202
    cid = r["command_id"]
    wait_until(lambda: site.fleet.world(kid)["world"]["locks"]["pickup"]["energized"], 20, "the door unlocked")
    site.fleet.power(kid, False)
    site.fleet.power(kid, True)
    c = b.wait_command(cid, TERMINAL, 40)
    assert c["state"] == "failed" and c["reason"] == "reset" and c["info"].get("outcome") == "unknown", c
    k = wait_until(lambda: (lambda k: k if k["online"] and k["boot"] > boot and k["status"]["unverified"] else None)(
        b.kiosk(kid)), 30, "back, with the bin to verify")
    assert k["status"]["unverified"] == [2] and any("verify" in a for a in k["alarms"])
    w = site.fleet.world(kid)["world"]["locks"]["pickup"]
    assert not w["energized"] and w["door_closed"]
    time.sleep(3)   # it would have run again by now if it were going to
    assert not [e for e in b.events(kid, "pickup") if e["body"]["id"] == cid]
    assert len([e for e in b.events(kid, "op") if e["body"]["id"] == cid]) == 1
    site.stored_matches_flash(kid)


def _door_traffic(site: Site, kids: list[str], stop: threading.Event) -> None:
    """Doors forced open and shut again: each cycle journals several events."""
    while not stop.is_set():
        for kid in kids:
            site.fleet.door(kid, "service", "force")
        time.sleep(1.6)
        for kid in kids:
            site.fleet.door(kid, "service", "close")
        time.sleep(1.6)


def test_the_bridge_restarted_mid_stream_loses_and_duplicates_nothing(site):
    kids = ["kiosk-001", "kiosk-002"]
    b = site.bridge
    start = {kid: b.kiosk(kid)["events_stored_upto"] for kid in kids}
    stop = threading.Event()
    t = threading.Thread(target=_door_traffic, args=(site, kids, stop), daemon=True)
    t.start()
    try:
        wait_until(lambda: all(b.kiosk(k)["events_stored_upto"] > start[k] + 2 for k in kids), 30, "traffic")
        b.stop(kill=True)                   # a crash: no goodbye, batches in flight
        time.sleep(4)                       # the kiosks go on journaling meanwhile
        b.start()
        time.sleep(5)
    finally:
        stop.set()
        t.join()
    for kid in kids:
        n = site.stored_matches_flash(kid)
        assert n > start[kid] + 6
    assert b.metric("kiosk_bridge_events_stored_total") > 0    # the new process stored what it missed


def test_two_bridges_share_the_work_and_keep_each_kiosks_order(site):
    """Two processes on one store behind a shared subscription; one dies and
    the other carries on."""
    site.bridge.stop()
    db = site.bridge.db
    pair = [BridgeProc(site.root / f"share{i}", site.url, site.root / "keys", db=db, share="bridges",
                       name=f"bridge{i}").start() for i in (1, 2)]
    kids = ["kiosk-001", "kiosk-002", "kiosk-003"]
    stop = threading.Event()
    t = threading.Thread(target=_door_traffic, args=(site, kids, stop), daemon=True)
    try:
        start = {kid: pair[0].kiosk(kid)["events_stored_upto"] for kid in kids}
        t.start()
        wait_until(lambda: all(p.metric("kiosk_bridge_messages_total", kind="evt") >= 3 for p in pair), 40,
                   "both bridges taking events")
        # A command through either bridge's API works: replies may reach the other one.
        site.run("kiosk-003", "/service", {"session": "s-2"}, bridge=pair[1])
        site.run("kiosk-003", "/commands", {"op": "service_end", "args": {}}, bridge=pair[0])
        pair[0].stop(kill=True)
        time.sleep(4)
    finally:
        stop.set()
        t.join()
    for kid in kids:
        assert site.stored_matches_flash(kid, bridge=pair[1]) > start[kid]
        # Status folded in seq order whichever bridge stored what.
        assert pair[1].kiosk(kid)["doors"]["service"]["door"] == "closed"
    pair[1].stop()
    site.bridge.start()
