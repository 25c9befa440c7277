# Boot with a broken board file while the wiring is all there (the simulated
# world is built from the good board): kiosk.app.main() stops with the field
# named and returns to the REPL, and no pin was ever driven, so the lock
# coils stay off and the carousel never steps.
import json
import os
import simworld
import kit
from kiosk.hw import board, pins

REPO = os.getenv("KIOSK_REPO")
CFG = {"kiosk_id": "k1", "board": "emulator", "key": "00112233445566778899aabbccddeeff",
       "broker": {"host": "127.0.0.1", "port": 1}}


def _flash(b, cfg):
    """Write the board file and config.json where the firmware reads them."""
    try:
        os.mkdir("boards")
    except OSError:
        pass
    with open("boards/emulator.json", "w") as f:
        json.dump(b, f)
    with open("config.json", "w") as f:
        json.dump(cfg, f)


def _boot(change):
    good = kit.on_port(board.load(REPO + "/boards/emulator.json"))
    w = simworld.install(good)
    b = json.loads(json.dumps(good))
    change(b)
    _flash(b, CFG)
    from kiosk import app
    assert app.main() is None, "the kiosk started on a broken board file"
    assert w.outputs == {}, "a pin was driven: %r" % w.outputs
    for lk in w.locks.values():
        s = lk.state()
        assert not s["energized"] and s["energize_count"] == 0 and s["bolt_engaged"]
    for c in w.carousels.values():
        assert c.state()["steps"] == 0
    try:
        app.App()
    except board.BoardError as e:
        return str(e)
    raise AssertionError("board accepted")


def test_a_lock_pin_shared_with_the_carousel_stops_the_boot_before_any_pin_moves():
    def change(b):
        b["locks"][0]["drive_pin"] = b["carousels"][0]["step_pin"]
    msg = _boot(change)
    assert "boards/emulator.json.locks[0].drive_pin: gpio2 already used by carousels[0].step_pin" in msg, msg


def test_a_lock_with_a_wrong_type_stops_the_boot_before_any_pin_moves():
    def change(b):
        b["locks"][1]["max_energize_ms"] = "3000"
        del b["carousels"][0]["enable_pin"]
    msg = _boot(change)
    assert "boards/emulator.json.locks[1].max_energize_ms: must be a positive integer" in msg, msg
    assert "boards/emulator.json.carousels[0].enable_pin: missing" in msg, msg


def test_a_broken_config_on_a_good_board_drives_locks_and_motors_safe():
    good = kit.on_port(board.load(REPO + "/boards/emulator.json"))
    w = simworld.install(good)
    cfg = dict(CFG)
    del cfg["key"]
    _flash(good, cfg)
    from kiosk import app
    assert app.main() is None, "the kiosk started without its key"
    en = pins.parse_pin(good["carousels"][0]["enable_pin"])
    assert w.outputs.get(en[0]) == int(en[2]), "EN not driven to disabled: %r" % w.outputs
    for c in good["locks"]:
        num, _, inv = pins.parse_pin(c["drive_pin"])
        assert w.outputs.get(num) == inv, "lock %s coil not driven off" % c["name"]
    for c in w.carousels.values():
        s = c.state()
        assert not s["enabled"] and s["steps"] == 0, s
    for lk in w.locks.values():
        assert not lk.state()["energized"] and lk.state()["bolt_engaged"]
