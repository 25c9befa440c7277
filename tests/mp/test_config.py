# Kiosk configuration: validated at boot with errors naming the field, and
# secrets never shown.
import json
from kiosk import config

GOOD = {
    "kiosk_id": "la-004", "board": "emulator", "key": "00112233445566778899aabbccddeeff",
    "broker": {"host": "127.0.0.1", "port": 1883, "user": "la-004", "password": "hunter2"},
    "policies": {"hold_pickups_on_excursion": True, "door_open_timeout_s": 30},
}


def _write(d, path="config.json"):
    with open(path, "w") as f:
        json.dump(d, f)


def _error(d):
    _write(d)
    try:
        config.load()
    except config.ConfigError as e:
        return str(e)
    raise AssertionError("config accepted: %r" % d)


def test_good_config_loads_with_policy_defaults():
    _write(GOOD)
    c = config.load()
    assert c.kiosk_id == "la-004"
    assert c.policies["door_open_timeout_s"] == 30
    assert c.policies["door_held_open_s"] == config.DEFAULT_POLICIES["door_held_open_s"]
    assert c.key_bytes() == bytes(range(0, 256, 17))


def test_each_bad_field_is_named():
    cases = [
        ({"kiosk_id": "LA 004"}, "config.json.kiosk_id"),
        ({"key": "xyz"}, "config.json.key"),
        ({"key": "0011"}, "config.json.key: must be at least"),
        ({"broker": {"host": "h", "port": -1}}, "config.json.broker.port"),
        ({"policies": {"door_open_timeout_s": "60"}}, "config.json.policies.door_open_timeout_s"),
        ({"policies": {"hold_pickup_on_excursion": True}}, "config.json.policies.hold_pickup_on_excursion: unknown field"),
        ({"sensor_roms": {"t": "28"}}, "config.json.sensor_roms.t"),
    ]
    for change, expect in cases:
        d = dict(GOOD)
        d.update(change)
        msg = _error(d)
        assert expect in msg, (expect, msg)
    d = dict(GOOD)
    del d["board"]
    assert "config.json.board: missing" in _error(d)


def test_unreadable_and_torn_files_are_clear_errors():
    try:
        config.load("absent.json")
        assert False
    except config.ConfigError as e:
        assert "absent.json: cannot read" in str(e)
    with open("config.json", "w") as f:
        f.write('{"kiosk_id": "la-0')
    try:
        config.load()
        assert False
    except config.ConfigError as e:
        assert "not valid JSON" in str(e)


def test_secrets_never_printed():
    _write(GOOD)
    c = config.load()
    text = repr(c) + json.dumps(c.public())
    assert "hunter2" not in text and GOOD["key"] not in text
    assert "***" in text and "la-004" in text


def test_save_is_atomic_and_validated():
    config.save(GOOD)
    bad = dict(GOOD)
    bad["kiosk_id"] = ""
    try:
        config.save(bad)
        assert False
    except config.ConfigError:
        pass
    assert config.load().kiosk_id == "la-004"
