"""Custody under attack and under faults, end to end: emulated kiosks (the
real firmware) on a real mosquitto, `kiosk-bridge serve` with its store,
and an attacker or a faulty field acting through MQTT, the kiosk's flash
folder or the broker, as docs/security.md and docs/reliability.md describe.

Each test reproduces one finding of the custody review and checks what must
hold: no record lost without a loss record and an alarm, no outcome
rewritten, no command run twice, the kiosk safe and still reporting."""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from bridge_support import TERMINAL, Site, journal_records, wait_until
from kiosk_host import protocol


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    s = Site(tmp_path_factory.mktemp("custody"))
    yield s
    s.close()


def _forced_doors(site: Site, kid: str, n: int) -> None:
    """Someone forces the service door open and shuts it, n times: each
    time a handful of records (door_forced, door_opened, ...)."""
    for _ in range(n):
        site.fleet.door(kid, "service", "force")
        time.sleep(1.2)
        site.fleet.door(kid, "service", "close")
        time.sleep(1.2)


def _shut(site: Site, kid: str, door: str = "service") -> None:
    """Shut a forced door and wait until the bridge has it closed and
    bolted: the records it makes are in before anything is compared."""
    site.fleet.door(kid, door, "close")
    wait_until(lambda: (lambda d: d["door"] == "closed" and d["bolt"] == "engaged" and not d["alarms"])(
        site.bridge.kiosk(kid)["doors"][door]), 20, f"{kid}'s {door} door shut at the bridge")


def _flash_policies(site: Site, kid: str, **policies) -> None:
    """Change a kiosk's policies in config.json on its flash (it is powered off)."""
    path = site.fleet.kiosk(kid).flash / "config.json"
    cfg = json.loads(path.read_text())
    cfg["policies"].update(policies)
    path.write_text(json.dumps(cfg))


def _boot_again(site: Site, kid: str) -> dict:
    boot = site.bridge.kiosk(kid)["boot"] or 0
    site.fleet.power(kid, True)
    return wait_until(lambda: (lambda k: k if k["online"] and k["boot"] != boot else None)(site.bridge.kiosk(kid)),
                      30, f"{kid} back online")


class Wiretap:
    """A client on the plain broker that reads and writes any kiosk's
    topics, as anyone can on a broker without the locked-down ACL."""

    def __init__(self, site: Site, kid: str):
        self.kid = kid
        self.cmds: list[bytes] = []
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"tap-{kid}-{time.monotonic_ns()}")
        self.c.on_message = lambda cl, u, m: self.cmds.append(m.payload)
        self.c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe(f"kiosk/{kid}/cmd", 1)
        self.c.max_inflight_messages_set(100)
        self.c.connect("127.0.0.1", site.broker.port)
        self.c.loop_start()
        wait_until(self.c.is_connected, 5, "wiretap connected")
        time.sleep(0.3)

    def command(self, cid: str) -> bytes:
        return wait_until(lambda: next((p for p in self.cmds if json.loads(p).get("id") == cid), None), 10,
                          f"command {cid} on the wire")

    def publish(self, suffix: str, payload: bytes | str, retain: bool = False) -> None:
        self.c.publish(f"kiosk/{self.kid}/{suffix}", payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def _records(site: Site, kid: str, pred) -> list[dict]:
    return [e["body"] for e in site.bridge.events(kid) if pred(e["body"])]


def test_a_forged_or_replayed_copy_never_rewrites_a_running_pickups_outcome(site):
    # Finding 1: a copy of a running pickup's id, forged (bad signature) or
    # the genuine signed command again, made the kiosk refuse "it"; the
    # bridge recorded the pickup as rejected while the kiosk released it.
    kid, b = "kiosk-001", site.bridge
    site.restock(kid, "rx-c1", 3)
    tap = Wiretap(site, kid)
    try:
        status, r = b.post(f"/api/kiosks/{kid}/pickups", {"order_id": "rx-c1", "bin": 3})
        assert status == 202
        cid = r["command_id"]
        genuine = tap.command(cid)
        wait_until(lambda: site.fleet.world(kid)["world"]["locks"]["pickup"]["energized"], 20, "the door unlocked")
        forged = json.loads(genuine)
        forged["args"]["bin"] = 7
        tap.publish("cmd", json.dumps(forged))          # bad signature, same id
        tap.publish("cmd", genuine)                     # the genuine command again
        wait_until(lambda: {e.get("why") for e in _records(site, kid, lambda e: e.get("id") == cid
                                                             and e["k"] == "refused")} >= {"bad_signature", "replayed"},
                   15, "both copies refused and journaled")
        c = b.command(cid)
        assert c["state"] == "in_progress", c
        assert {h["reason"] for h in c["history"] if h["by"] == "copy"} == {"bad_signature", "replayed"}
        site.hold_door(kid, "pickup")
        c = b.wait_command(cid, TERMINAL, 30)
        assert c["state"] == "succeeded", c
    finally:
        tap.close()
    mine = _records(site, kid, lambda e: e.get("id") == cid and e["k"] in ("pickup", "op"))
    assert [e["k"] for e in mine] == ["pickup", "op"] and mine[1]["state"] == "succeeded"
    assert b.command(cid)["state"] == "succeeded"
    k = b.kiosk(kid)
    assert k["custody"]["unknown_commands"] == [] and not [a for a in k["alarms"] if a.startswith("unknown command")]
    site.stored_matches_flash(kid)


def test_an_ack_flood_with_the_bridge_down_pushes_no_record_off_the_flash(site):
    # Finding 2a: with the bridge down, 1,500 junk messages on
    # kiosk/<id>/ack were journaled one by one and rotated every segment
    # away, a forced door and the overflow record with them.
    kid, b = "kiosk-001", site.bridge
    b.stop()
    tap = Wiretap(site, kid)
    try:
        site.fleet.door(kid, "service", "force")
        forced = wait_until(lambda: max((s for s, r in journal_records(site.fleet.kiosk(kid).flash).items()
                                         if r.get("ev") == "door_forced"), default=None), 10, "door_forced on flash")
        junk = [b"", b"{", b"[]", b'{"v":1}', json.dumps({"v": 1, "upto": 10**9, "t": 1, "sig": "0" * 64}).encode()]
        sent = [tap.c.publish(f"kiosk/{kid}/ack", junk[i % len(junk)] + (b" " * (i % 7)), qos=1)
                for i in range(1500)]
        for m in sent:
            m.wait_for_publish(10)
        time.sleep(1)
    finally:
        tap.close()
    recs = journal_records(site.fleet.kiosk(kid).flash)
    assert forced in recs, "the forced door was rotated off the flash"
    refusals = [r for s, r in recs.items() if s > forced and r["k"] == "refused"]
    assert 0 < len(refusals) <= 40, len(refusals)
    assert not [r for r in recs.values() if r["k"] in ("journal_overflow", "journal_lost")]
    b.start()
    k = wait_until(lambda: (lambda k: k if k["events_stored_upto"] >= max(journal_records(
        site.fleet.kiosk(kid).flash)) else None)(b.kiosk(kid)), 30, "the backlog stored")
    assert "forced" in k["doors"]["service"]["alarms"], k["doors"]
    _shut(site, kid)
    site.stored_matches_flash(kid)


def test_commands_the_bridge_never_issued_raise_an_alarm_and_lock_nothing_out(site):
    # Finding 8: a kiosk key read from a board signed commands the bridge
    # never issued; they ran with no alarm, and 33 commands dated in the
    # future raised the replay floor so that the bridge's own commands were
    # refused as replayed for minutes.
    kid, b = "kiosk-002", site.bridge
    key = site.key(kid)
    tap = Wiretap(site, kid)
    now = int(time.time())

    def signed(cid: str, op: str, iat: int, exp: int) -> str:
        return json.dumps(protocol.sign(key, {"v": 1, "id": cid, "op": op, "iat": iat, "exp": exp, "args": {}}))

    try:
        tap.publish("cmd", signed("intruder-home", "home", now, now + 60))
        for i in range(33):
            tap.publish("cmd", signed(f"far-{i}", "home", now + 86400 + i, now + 86400 + 60 + i))
            tap.publish("cmd", signed(f"near-{i}", "home", now + 31 + i, now + 31 + i + 299))
    finally:
        tap.close()
    # Each record about one of them is flagged (refusals beyond the kiosk's
    # budget are journaled as one coalesced count, without their ids).
    k = wait_until(lambda: (lambda k: k if len(k["custody"]["unknown_commands"]) >= 16 else None)(b.kiosk(kid)),
                   30, "the records about a stranger's commands flagged")
    ran = [u for u in k["custody"]["unknown_commands"] if u["id"] == "intruder-home"]
    assert ran and ran[0]["kind"] in ("op", "refused"), ran
    assert any(a.startswith("unknown command: intruder-home") for a in k["alarms"]), k["alarms"]
    fleet = {x["id"]: x for x in b.get("/api/kiosks")}
    assert any(a.startswith("unknown command") for a in fleet[kid]["alarms"])
    # The bridge's own commands still pass.
    c = site.run(kid, "/commands", {"op": "home", "args": {}})
    assert c["state"] == "succeeded", c
    assert not _records(site, kid, lambda e: e.get("id") == c["command_id"] and e["k"] == "refused")


def test_a_corrupt_replay_memory_lets_no_captured_command_run_again(site):
    # Finding 5: a corrupt seen.json erased the replay memory: a captured
    # command ran a second time after a reboot.
    kid, b = "kiosk-002", site.bridge
    tap = Wiretap(site, kid)
    try:
        c = site.run(kid, "/service", {"session": "cap-1"})
        captured = tap.command(c["command_id"])
        flash = site.fleet.kiosk(kid).flash
        boot = b.kiosk(kid)["boot"]
        site.fleet.power(kid, False)
        (flash / "seen.json").write_bytes(b'{"floor": 17, "ids": {"' + b"\xff" * 30)
        site.fleet.power(kid, True)
        wait_until(lambda: (lambda k: k["online"] and k["boot"] > boot)(b.kiosk(kid)), 30, "back online")
        tap.publish("cmd", captured)
        refusal = wait_until(lambda: next(iter(_records(site, kid, lambda e: e.get("id") == c["command_id"]
                                                        and e["k"] == "refused")), None), 15, "the replay refused")
    finally:
        tap.close()
    assert refusal["why"] in ("memory_lost", "replayed"), refusal
    assert len(_records(site, kid, lambda e: e.get("id") == c["command_id"] and e["k"] == "op")) <= 1
    assert len(_records(site, kid, lambda e: e["k"] == "service" and e.get("session") == "cap-1"
                        and e.get("state") == "started")) == 1, "the captured command ran again"
    assert b.command(c["command_id"])["state"] == "succeeded"
    k = b.kiosk(kid)
    assert any(a.startswith("replay memory lost") for a in k["alarms"]), k["alarms"]
    assert "replay_memory_lost" in k["custody"]["kiosk_alarms"]
    assert any(e["k"] == "fault" and e["code"] == "replay_memory_lost" for e in _records(site, kid, lambda e: True))
    # The kiosk stays safe and keeps reporting.
    w = site.fleet.world(kid)["world"]["locks"]
    assert not any(lk["energized"] for lk in w.values())
    site.stored_matches_flash(kid)


def test_an_unreadable_record_becomes_a_custody_gap_and_the_status_moves_on(site):
    # Finding 2b: one record with a bad CRC was skipped without a record;
    # the bridge asked for it every 5 s for ever, its prefix never moved and
    # the kiosk's status froze (a later forced door never showed).
    kid, b = "kiosk-003", site.bridge
    flash = site.fleet.kiosk(kid).flash
    b.stop()
    before = max(journal_records(flash))
    _forced_doors(site, kid, 2)
    site.fleet.power(kid, False)
    new = sorted(s for s in journal_records(flash) if s > before)
    victim = new[len(new) // 2]          # a record no host has, between two others
    for seg in (flash / "journal").glob("*.log"):
        data = seg.read_bytes()
        at = data.find(b'{"s":%d,' % victim)
        if at >= 0:
            seg.write_bytes(data[:at + 12] + bytes([data[at + 12] ^ 1]) + data[at + 13:])
    b.start()
    _boot_again(site, kid)
    site.settled(kid)
    k = wait_until(lambda: (lambda k: k if any(g["from"] <= victim <= g["to"] for g in k["custody"]["gaps"])
                            else None)(b.kiosk(kid)), 30, "the custody gap")
    assert any(a.startswith("custody gap") for a in k["alarms"]), k["alarms"]
    lost = [e["body"] for e in b.events(kid, "journal_lost")]
    assert lost and lost[-1]["lost_from"] <= victim <= lost[-1]["lost_to"], lost
    # The prefix moved past it, and a later forced door shows.
    site.fleet.door(kid, "service", "force")
    k = wait_until(lambda: (lambda k: k if "forced" in k["doors"]["service"]["alarms"] else None)(b.kiosk(kid)),
                   20, "the forced door at the bridge")
    assert k["events_stored_upto"] >= max(journal_records(flash))
    _shut(site, kid)
    site.stored_matches_flash(kid, gaps_ok=True)


def test_a_host_outage_longer_than_the_journal_is_reported_and_moved_past(site):
    # Finding 2, with no attacker: the bridge away long enough for the
    # journal to rotate twice; the overflow record that covered the loss
    # went with it.
    kid, b = "kiosk-003", site.bridge
    site.fleet.power(kid, False)
    _flash_policies(site, kid, journal_segment_bytes=300, journal_segments=2)
    _boot_again(site, kid)
    site.settled(kid)
    b.stop()
    _forced_doors(site, kid, 3)
    b.start()
    k = wait_until(lambda: (lambda k: k if k["custody"]["gaps"] and k["events_stored_upto"]
                            >= max(journal_records(site.fleet.kiosk(kid).flash)) else None)(b.kiosk(kid)),
                   40, "the loss reported and the backlog stored")
    assert any(g["why"] in ("rotated", "reported") for g in k["custody"]["gaps"]), k["custody"]["gaps"]
    site.fleet.door(kid, "service", "force")
    wait_until(lambda: "forced" in b.kiosk(kid)["doors"]["service"]["alarms"], 20, "a later forced door shows")
    _shut(site, kid)
    site.fleet.power(kid, False)
    _flash_policies(site, kid, journal_segment_bytes=8192, journal_segments=8)
    _boot_again(site, kid)
    site.settled(kid)


def test_a_wiped_journal_on_a_reprovisioned_board_loses_nothing(site):
    # Finding 3: a board re-provisioned with the old id and key (the field
    # guide's replacement) starts again at seq 1; the store took every new
    # record up to the old board's last seq for a duplicate and dropped it.
    kid, b = "kiosk-003", site.bridge
    old = b.kiosk(kid)
    assert old["journal"] and old["events_stored_upto"] > 10
    k = site.fleet.kiosk(kid)
    site.fleet.power(kid, False)
    import shutil
    shutil.rmtree(k.flash)
    k.provision(site.key(kid).hex())
    site.fleet.power(kid, True)
    new = wait_until(lambda: (lambda x: x if x["online"] and x["journal"] != old["journal"] else None)(b.kiosk(kid)),
                     30, "the new board online with a new journal")
    assert new["boot"] == 1
    site.settled(kid)
    site.fleet.door(kid, "service", "force")
    k2 = wait_until(lambda: (lambda x: x if "forced" in x["doors"]["service"]["alarms"] else None)(b.kiosk(kid)),
                    20, "the new board's forced door at the bridge")
    _shut(site, kid)
    n = site.stored_matches_flash(kid)
    assert n >= 2 and k2["events_stored_upto"] <= n
    # The old board's records are all still there, under its journal.
    page = b.get(f"/api/kiosks/{kid}/events?journal={old['journal']}&limit=1000")
    held = {e["seq"] for e in page["events"]}
    for g in old["custody"]["gaps"]:
        held |= set(range(g["from"], g["to"] + 1)) if g["journal"] == old["journal"] else set()
    assert held >= set(range(1, old["events_stored_upto"] + 1))
    assert {j["journal"]: j["retired"] for j in page["journals"]}[old["journal"]] is True


def test_a_replayed_will_never_takes_a_live_kiosk_offline(site):
    # Finding 6: a genuine will, captured and published again, marked a
    # running kiosk offline until it reconnected (every command a 409).
    kid, b = "kiosk-001", site.bridge
    states: list[tuple[bytes, bool]] = []
    tap = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"will-tap-{time.monotonic_ns()}")
    tap.on_message = lambda cl, u, m: states.append((m.payload, m.retain))
    tap.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe(f"kiosk/{kid}/state", 1)
    tap.connect("127.0.0.1", site.broker.port)
    tap.loop_start()
    try:
        site.fleet.network(kid, False)        # the broker gives up on it and publishes its will
        will = wait_until(lambda: next((p for p, _ in states if json.loads(p).get("online") is False), None),
                          20, "the will")
        wait_until(lambda: not b.kiosk(kid)["online"], 10, "offline at the bridge")
        site.fleet.network(kid, True)
        wait_until(lambda: b.kiosk(kid)["online"], 30, "back online")
        tap.publish(f"kiosk/{kid}/state", will, qos=1, retain=True).wait_for_publish(5)
        time.sleep(2)
        assert b.kiosk(kid)["online"], "a replayed will took the kiosk offline"
        c = site.run(kid, "/commands", {"op": "home", "args": {}})
        assert c["state"] == "succeeded"
    finally:
        tap.loop_stop()
        tap.disconnect()


def test_a_full_flash_still_records_refusals_alarms_and_its_own_state(site):
    # Finding 4: with the flash full, a refused pickup carried no command id
    # (the bridge reported timed_out), and a forced door produced no record,
    # no event and no alarm.
    kid, b = "kiosk-001", site.bridge
    site.restock(kid, "rx-full", 5)
    used = site.fleet.flash(kid, None)["used"]
    site.fleet.flash(kid, used + 64)             # something else took the rest of the flash
    try:
        status, r = b.post(f"/api/kiosks/{kid}/pickups", {"order_id": "rx-full", "bin": 5})
        assert status == 202
        c = b.wait_command(r["command_id"], TERMINAL, 30)
        assert c["state"] == "rejected" and c["reason"] == "storage_full", c
        w = site.fleet.world(kid)["world"]["locks"]
        assert not any(lk["energized"] for lk in w.values()), "nothing unlocks on a full flash"
        site.fleet.door(kid, "service", "force")
        k = wait_until(lambda: (lambda k: k if "forced" in k["doors"]["service"]["alarms"]
                                and k["custody"]["storage_full"] else None)(b.kiosk(kid)),
                       30, "the forced door and storage_full at the bridge")
        assert any(a.startswith("storage full") for a in k["alarms"]), k["alarms"]
        forced = [e["body"] for e in b.events(kid, "door") if e["body"].get("ev") == "door_forced"]
        assert forced and [e for e in b.events(kid, "storage") if e["body"]["ev"] == "full"]
        refusal = [e["body"] for e in b.events(kid, "refused") if e["body"].get("id") == r["command_id"]]
        assert refusal and refusal[0]["why"] == "storage_full"
    finally:
        site.fleet.flash(kid, None)                # room again
        site.fleet.door(kid, "service", "close")
    k = wait_until(lambda: (lambda k: k if not k["custody"]["storage_full"] else None)(b.kiosk(kid)), 40,
                   "storage_full cleared")
    c = site.run(kid, "/pickups", {"order_id": "rx-full", "bin": 5}, door="pickup")
    assert c["state"] == "succeeded"
    site.stored_matches_flash(kid)


def test_the_emulators_control_port_takes_no_stranger_and_secrets_stay_private(site):
    # Finding 10: any local process could connect to the emulator's control
    # port and be taken for a kiosk (doors, sensors, power answered by it);
    # config.json with the key and the bridge's store were world-readable.
    import os
    import socket
    import stat
    kid = "kiosk-002"
    k = site.fleet.kiosk(kid)
    for hello in ({"hello": kid}, {"hello": kid, "token": "0" * 32}, {"hello": kid, "token": None}):
        s = socket.create_connection(("127.0.0.1", site.fleet.control_port), timeout=5)
        try:
            s.sendall(json.dumps(hello).encode() + b"\n")
            assert s.recv(100) == b"", f"{hello} was taken for the kiosk"
        finally:
            s.close()
    w = site.fleet.world(kid)["world"]          # the board's own world still answers
    assert set(w["locks"]) == {"pickup", "service"}
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)   # noqa: E731
    assert mode(k.flash / "config.json") == 0o600
    assert mode(site.fleet.keys_dir / f"{kid}.key") == 0o600 and mode(site.fleet.keys_dir) == 0o700
    db = site.bridge.db[len("sqlite:///"):]
    assert mode(db) == 0o600, oct(mode(db))
