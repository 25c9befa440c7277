# Board files are validated on the board itself at boot: every shipped board
# loads, and each kind of mistake is refused with the field named.
import json
import os
from kiosk.hw import board, pins

BOARDS = os.getenv("KIOSK_REPO") + "/boards/"


def _emulator():
    with open(BOARDS + "emulator.json") as f:
        return json.load(f)


def _refused(b):
    try:
        board.validate(b, "b")
    except board.BoardError as e:
        return str(e)
    raise AssertionError("board accepted")


def test_every_shipped_board_loads():
    names = [n for n in os.listdir(BOARDS) if n.endswith(".json")]
    assert len(names) >= 3
    for n in names:
        b = board.load(BOARDS + n)
        assert b["board"] + ".json" == n, n
        assert board.bin_count(b) > 0


def test_missing_and_wrong_fields_are_named():
    b = _emulator()
    del b["carousels"][0]["steps_per_bin"]
    assert "b.carousels[0].steps_per_bin: missing" in _refused(b)
    b = _emulator()
    b["carousels"][0]["driver"] = "l298n"
    assert "b.carousels[0].driver: must be one of" in _refused(b)
    b = _emulator()
    b["locks"][1]["max_energize_ms"] = 0
    assert "b.locks[1].max_energize_ms: must be a positive integer" in _refused(b)
    b = _emulator()
    b["carousels"][0]["home_pin"] = "pin5"
    assert "b.carousels[0].home_pin: bad pin" in _refused(b)
    b = _emulator()
    b["sensors"][0]["resoluton"] = 12
    assert "b.sensors[0].resoluton: unknown field" in _refused(b)


def test_semantic_mistakes_are_named():
    b = _emulator()
    b["carousels"][0]["microstep"] = 32
    assert "microstep: 32 is not a power of two up to 16 for a4988" in _refused(b)
    b = _emulator()
    b["locks"][1]["door_pin"] = b["locks"][0]["door_pin"]
    assert "b.locks[1].door_pin: gpio12 already used by locks[0].door_pin" in _refused(b)
    b = _emulator()
    b["locks"] = b["locks"][:1]
    assert "no 'service' lock" in _refused(b)
    b = _emulator()
    b["sensors"][2]["bus"] = "ow0"
    assert "b.sensors[2].bus: sht4x needs a i2c bus" in _refused(b)
    b = _emulator()
    b["reserved_pins"] = [2]
    assert "b.carousels[0].step_pin: gpio2 is reserved" in _refused(b)


def _board(name):
    with open(BOARDS + name + ".json") as f:
        return json.load(f)


def test_scanner_and_button_mistakes_are_named():
    b = _emulator()
    b["scanner"]["rx_pin"] = b["locks"][0]["door_pin"]
    assert "b.scanner.rx_pin: gpio12 already used by locks[0].door_pin" in _refused(b)
    b = _emulator()
    b["scanner"]["baud"] = 9601
    assert "b.scanner.baud: must be one of 9600" in _refused(b)
    b = _emulator()
    del b["scanner"]["tx_pin"]
    assert "b.scanner.tx_pin: missing" in _refused(b)
    b = _emulator()
    b["buttons"][0]["name"] = "call_pharmacst"
    assert "b.buttons[0].name: must be one of call_pharmacist" in _refused(b)
    b = _emulator()
    b["buttons"].append(dict(b["buttons"][0], pin="gpio17"))
    assert "b.buttons: duplicate button names" in _refused(b)
    # The RP2 routes UART1 to fixed pins only; the ESP32's UART0 is the REPL.
    b = _board("pico2w")
    b["scanner"]["rx_pin"] = "gpio18"
    assert "b.scanner.rx_pin: UART1's RX is on gpio5/9/21/25" in _refused(b)
    b = _board("esp32s3")
    b["scanner"]["uart"] = 0
    assert "b.scanner.uart: esp32 has UART 1 or 2 for a scanner" in _refused(b)
    # Both are optional: a board without them is valid.
    b = _emulator()
    del b["scanner"]
    del b["buttons"]
    board.validate(b, "b")


def test_pin_notation():
    assert pins.parse_pin("gpio7") == (7, None, False)
    assert pins.parse_pin("^!gpio5") == (5, "up", True)
    assert pins.parse_pin("~gpio3") == (3, "down", False)
    for bad in ("gpio", "5", "!^", 5):
        try:
            pins.parse_pin(bad)
            assert False, bad
        except pins.PinError:
            pass


def test_unreadable_board_file():
    with open("broken.json", "w") as f:
        f.write("{")
    try:
        board.load("broken.json")
        assert False
    except board.BoardError as e:
        assert "broken.json: not valid JSON" in str(e)
