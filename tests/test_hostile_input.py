"""Hostile input at the kiosk: generated bad commands (tests/hostile.py) sent
straight to kiosk/<id>/cmd of an emulated kiosk over mosquitto, and broken
config.json and board files on its flash. Nothing crashes, nothing moves,
every refusal reaches the host with its reason, and a broken file stops the
boot with a message naming the field while the locks stay de-energised."""

from __future__ import annotations

import json
import time

import pytest

from kiosk_host import protocol
from kiosk_host.emulator.fleet import Fleet

import hostile
from emu_support import wait_for
from link_support import Mosquitto

# Refusal reasons each category must produce (and nothing else).
EXACT = {
    "wrong_key": {"bad_signature"},
    "replay": {"replayed"},
    "not_yet_valid": {"not_yet_valid"},
    "bad_expiry": {"bad_expiry"},
    "oversized": {"oversized"},
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    broker = Mosquitto(root / "mq", extra=["max_queued_messages 0", "max_inflight_messages 0"]).start()
    f = Fleet(f"mqtt://127.0.0.1:{broker.port}", 2, root / "state", root / "keys",
              policies={"telemetry_period_s": 600}, keepalive_s=5).start()
    yield f
    f.stop()
    broker.stop()


def key(fleet, kid: str) -> bytes:
    return bytes.fromhex((fleet.keys_dir / f"{kid}.key").read_text().strip())


def test_hostile_commands_are_all_refused_without_a_crash_or_a_movement(fleet):
    a, b = fleet.ids
    rep = hostile.run(fleet, a, key(fleet, a), n=400, seed=7, other_key=key(fleet, b))
    print("\n" + rep.table())
    assert rep.stalled is None, rep.stalled
    assert rep.crashes == 0, rep.crash_evidence
    assert rep.actuations == 0, rep.actuation_evidence
    assert rep.world_checked and rep.samples > 0
    assert not rep.probe_failures, rep.probe_failures
    assert rep.wrong == [], rep.wrong[:10]
    assert rep.refused == rep.sent > 400            # 400 plus the primers
    assert not rep.missing_replies, rep.missing_replies[:10]
    assert rep.unverified == 0, "the kiosk sent something the host cannot verify"
    for cat in hostile.CATEGORIES:
        assert rep.categories[cat]["sent"] > 0, cat
    for cat, want in EXACT.items():
        assert set(rep.reasons[cat]) == want, (cat, rep.reasons[cat])
    # An expired command is "replayed" when an earlier one expired after it
    # (it could be a copy of one forgotten into the replay floor).
    assert "expired" in rep.reasons["expired"] and set(rep.reasons["expired"]) <= {"expired", "replayed"}
    seen = set()
    for c in rep.reasons.values():
        seen |= set(c)
    assert seen == set(hostile.REASONS), "every gate refusal is exercised"
    assert rep.probes >= 3


def test_text_a_host_cannot_read_is_not_echoed_back(fleet):
    """The kiosk's JSON reader takes lone surrogates and overlong UTF-8: a
    refusal echoing them would be an event no host can decode or verify,
    and the host could not acknowledge past it. (The other kiosk: the
    first one's refusal budget went to the hostile run.)"""
    kid = fleet.ids[1]
    k = key(fleet, kid)
    host, port = "127.0.0.1", int(fleet.broker_url.rsplit(":", 1)[1])
    obs = hostile.Observer(host, port, kid, k)
    try:
        obs.wait(lambda: any(d.get("online") for d in obs.states), 20, "birth")
        with obs.cv:
            obs.mark = max(obs.events, default=0)
        now = int(time.time())

        def body(cid: bytes, op: bytes) -> bytes:
            return (b'{"v":1,"id":' + cid + b',"op":' + op + b',"iat":%d,"exp":%d,"args":{},"sig":"%s"}'
                    % (now, now + 60, b"0" * 64))

        sent = [
            (body(b'"ok-id-1"', b'"\xed\xa0\x80"'), "ok-id-1"),        # an encoded surrogate as the op
            (body(b'"\\ud800x"', b'"pickup"'), None),                  # an escaped lone surrogate as the id
            (body(b'"\xc0\xafid"', b'"pickup"'), None),                # an overlong "/" in the id
            (body(b'"\\ud83d\\udc8a"', b'"pickup"'), None),            # an escaped pair: two surrogates here
            (body(b'"ok-id-2"', b'"pick\xe2\x80\xaeup"'), "ok-id-2"),  # odd but valid text is echoed
        ]
        for payload, _ in sent:
            obs.send(payload)
        obs.wait(lambda: obs.refused >= len(sent), 20, "the refusals")
        got = [e for s, e in sorted(obs.events.items()) if s > obs.mark and hostile.is_cmd_refusal(e)]
        assert [e["why"] for e in got] == ["bad_signature"] * len(sent)
        assert [e.get("id") for e in got] == [cid for _, cid in sent]
        assert "op" not in got[0] and got[4]["op"] == "pick\u202eup" and got[1]["op"] == "pickup"
        assert obs.unverified == []
        obs.wait(lambda: obs.acked >= got[-1]["s"], 10, "the host to acknowledge past them")
    finally:
        obs.close()


# -- broken files on the flash ---------------------------------------------------------

def _cfg(c):
    c.pop("kiosk_id")


def _short_key_bad_policy(c):
    c["key"] = "00112233"
    c["policies"]["command_max_age_s"] = 0


def _pin_reused(b):
    b["locks"][1]["drive_pin"] = b["locks"][0]["drive_pin"]


def _wrong_type(b):
    b["carousels"][0]["bins"] = "12"
    del b["locks"][0]["bolt_pin"]


# (file, how it is broken, what the message names, whether the simulated
# wiring still comes up: it is built from the board file config.json names)
BROKEN = [
    ("config.json", _cfg, ["config.json.kiosk_id: missing"], True),
    ("config.json", _short_key_bad_policy, ["config.json.key: must be at least 16 bytes",
                                            "config.json.policies.command_max_age_s: must be a positive integer"], True),
    ("config.json", '{"kiosk_id": "kiosk-002", "board": "emulator", ', ["config.json: not valid JSON"], False),
    ("boards/emulator.json", _pin_reused, ["boards/emulator.json.locks[1].drive_pin: gpio",
                                           "already used by locks[0].drive_pin"], False),
    ("boards/emulator.json", _wrong_type, ["boards/emulator.json.carousels[0].bins: must be a positive integer",
                                           "boards/emulator.json.locks[0].bolt_pin: missing"], False),
    ("boards/emulator.json", "[1, 2", ["boards/emulator.json: not valid JSON"], False),
]


@pytest.mark.parametrize("path,breakage,named,hardware", BROKEN, ids=[
    "config-missing-kiosk_id", "config-short-key-and-policy", "config-not-json",
    "board-pin-reused", "board-wrong-type-missing-pin", "board-not-json"])
def test_a_broken_file_stops_the_boot_safely_with_the_field_named(fleet, path, breakage, named, hardware):
    kid = fleet.ids[1]
    k = fleet.kiosk(kid)
    target = k.flash / path
    good = target.read_text()
    fleet.power(kid, False)
    try:
        if callable(breakage):
            d = json.loads(good)
            breakage(d)
            target.write_text(json.dumps(d))
        else:
            target.write_text(breakage)
        log = k.dir / "console.log"
        mark = log.stat().st_size
        fleet.power(kid, True)
        boots = k.boots
        text = wait_for(lambda: (t := log.read_bytes()[mark:].decode(errors="replace")) and ">>> " in t and t,
                        20, f"{kid} to reach the REPL")
        line = next((ln for ln in text.splitlines() if ln.startswith("kiosk: not started:")), None)
        assert line is not None, text
        for want in named:
            assert want in line, (want, line)
        assert "Traceback" not in text
        time.sleep(1.0)   # no crash loop: the board sits at its REPL with the message on screen
        assert k.boots == boots and k.running()
        w = fleet.world(kid)["world"]
        if hardware:                # the board file is good: its outputs are held safe, nothing moved
            assert w["locks"] and w["carousels"]
            for lk in w["locks"].values():
                assert not lk["energized"] and lk["energize_count"] == 0 and lk["bolt_engaged"]
            for c in w["carousels"].values():
                assert c["steps"] == 0 and c["moves"] == 0 and c["position"] == 0 and not c["enabled"]
        else:                       # no simulated wiring without a board file to build it from
            assert "emuboot: no simulated hardware" in text
            assert w["locks"] == {} and w["carousels"] == {}
    finally:
        fleet.power(kid, False)
        target.write_text(good)
