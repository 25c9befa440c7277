# Board definitions are data (boards/<name>.json); this module is the one
# place that reads and validates them, so a typo or a bad pin is refused at
# boot with a message naming the field, never discovered by a motor.
# Runs under MicroPython and CPython alike (host tools validate before deploy).
from kiosk.schema import check as _check_fields, read_file, SchemaError
from kiosk.hw.pins import parse_pin
from kiosk.contract import BUTTONS


class BoardError(SchemaError):
    pass


# Pin ranges per MCU family; board files add their own reserved pins
# (flash, PSRAM, radio) on top.
MCU_PINS = {"rp2": 30, "esp32": 49, "unix": 64}
DRIVERS = {"a4988": 16, "drv8825": 32, "tmc2209": 256}  # max microstep
STEP_TIMING = ("soft", "pio", "rmt")
LOCK_KINDS = ("solenoid", "strike")
SENSOR_TYPES = {"ds18b20": "onewire", "sht3x": "i2c", "sht4x": "i2c"}
SCANNERS = ("gm65", "gm861")
BAUDS = (9600, 19200, 38400, 57600, 115200)
# UARTs a scanner may use: the ESP32's UART0 is the REPL's.
UARTS = {"rp2": (0, 1), "esp32": (1, 2), "unix": (0, 1, 2, 3)}
# The RP2040/RP2350 route each UART to fixed pins only: (TX pins, RX pins).
RP2_UART_PINS = {0: ((0, 12, 16, 28), (1, 13, 17, 29)), 1: ((4, 8, 20, 24), (5, 9, 21, 25))}

# field: (kind, required); kinds are described in kiosk/schema.py.
_TOP = {
    "board": ("str", 1), "description": ("str", 0), "mcu": (tuple(MCU_PINS), 1),
    "free_heap": ("pos", 1), "wdt_max_ms": ("pos", 1),
    "step_timing": (STEP_TIMING, 1), "reserved_pins": ("list", 0),
    "carousels": ("list", 1), "locks": ("list", 1),
    "buses": ("dict", 0), "sensors": ("list", 0), "status_led": ("pin", 0),
    "mpy_march": ("str", 0), "scanner": ("dict", 0), "buttons": ("list", 0),
}
_CAROUSEL = {
    "name": ("str", 1), "bins": ("pos", 1), "steps_per_bin": ("pos", 1),
    "driver": (tuple(DRIVERS), 1), "microstep": ("pos", 1),
    "max_speed": ("pos", 1), "accel": ("pos", 1), "home_speed": ("pos", 1),
    "home_window": ("pos", 0),
    "step_pin": ("pin", 1), "dir_pin": ("pin", 1), "enable_pin": ("pin", 1),
    "home_pin": ("pin", 1), "index_pin": ("pin", 0), "diag_pin": ("pin", 0),
}
_LOCK = {
    "name": (("pickup", "service"), 1), "kind": (LOCK_KINDS, 1),
    "max_energize_ms": ("pos", 1), "rest_ms": ("pos", 1),
    "drive_pin": ("pin", 1), "bolt_pin": ("pin", 1), "door_pin": ("pin", 1),
}
_BUS = {
    "type": (("onewire", "i2c"), 1), "pin": ("pin", 0), "id": ("int", 0),
    "scl_pin": ("pin", 0), "sda_pin": ("pin", 0), "freq": ("pos", 0),
}
_SCANNER = {
    "type": (SCANNERS, 1), "uart": ("int", 1), "tx_pin": ("pin", 1), "rx_pin": ("pin", 1),
    "baud": (BAUDS, 0),
}
_BUTTON = {"name": (BUTTONS, 1), "pin": ("pin", 1)}
_SENSOR = {
    "name": ("str", 1), "type": (tuple(SENSOR_TYPES), 1), "bus": ("str", 1),
    "rom": ("str", 0), "resolution": ((9, 10, 11, 12), 0), "address": ("pos", 0),
}


def validate(b, source="board"):
    """Return the board dict if valid; raise BoardError listing every
    problem, each prefixed with the field path."""
    errors = []
    _check_fields(b, _TOP, source, errors)
    if errors and not isinstance(b, dict):
        raise BoardError("; ".join(errors))
    for name, schema in (("carousels", _CAROUSEL), ("locks", _LOCK), ("sensors", _SENSOR),
                         ("buttons", _BUTTON)):
        items = b.get(name)
        if isinstance(items, list):
            for i, item in enumerate(items):
                _check_fields(item, schema, "%s.%s[%d]" % (source, name, i), errors)
    if isinstance(b.get("scanner"), dict):
        _check_fields(b["scanner"], _SCANNER, source + ".scanner", errors)
    buses = b.get("buses") or {}
    if isinstance(buses, dict):
        for bname, bus in buses.items():
            where = "%s.buses.%s" % (source, bname)
            _check_fields(bus, _BUS, where, errors)
            if isinstance(bus, dict):
                need = ("pin",) if bus.get("type") == "onewire" else ("scl_pin", "sda_pin")
                for k in need:
                    if k not in bus:
                        errors.append("%s.%s: missing" % (where, k))
    if not errors:
        _check_semantics(b, source, errors)
    if errors:
        raise BoardError("; ".join(errors))
    return b


def _check_semantics(b, source, errors):
    carousels = b["carousels"]
    if not carousels:
        errors.append("%s.carousels: at least one carousel is needed" % source)
    for i, c in enumerate(carousels):
        where = "%s.carousels[%d]" % (source, i)
        if c["microstep"] > DRIVERS[c["driver"]] or c["microstep"] & (c["microstep"] - 1):
            errors.append("%s.microstep: %d is not a power of two up to %d for %s" % (where, c["microstep"], DRIVERS[c["driver"]], c["driver"]))
        if c["home_speed"] > c["max_speed"]:
            errors.append("%s.home_speed: must not exceed max_speed" % where)
        if c.get("home_window", 1) * 2 >= c["steps_per_bin"]:
            errors.append("%s.home_window: must be under half of steps_per_bin" % where)
    names = [lk["name"] for lk in b["locks"]]
    for must in ("pickup", "service"):
        if must not in names:
            errors.append("%s.locks: no %r lock" % (source, must))
    if len(set(names)) != len(names):
        errors.append("%s.locks: duplicate lock names" % source)
    buses = b.get("buses") or {}
    snames = []
    for i, s in enumerate(b.get("sensors") or []):
        where = "%s.sensors[%d]" % (source, i)
        bus = buses.get(s["bus"])
        snames.append(s["name"])
        if bus is None:
            errors.append("%s.bus: no bus named %r" % (where, s["bus"]))
        elif bus["type"] != SENSOR_TYPES[s["type"]]:
            errors.append("%s.bus: %s needs a %s bus, %r is %s" % (where, s["type"], SENSOR_TYPES[s["type"]], s["bus"], bus["type"]))
        if s["type"] == "ds18b20" and "rom" in s:
            r = s["rom"]
            if len(r) != 16 or not all(ch in "0123456789abcdef" for ch in r.lower()):
                errors.append("%s.rom: must be 16 hex digits" % where)
    if len(set(snames)) != len(snames):
        errors.append("%s.sensors: duplicate sensor names" % source)
    bnames = [x["name"] for x in b.get("buttons") or []]
    if len(set(bnames)) != len(bnames):
        errors.append("%s.buttons: duplicate button names" % source)
    sc = b.get("scanner")
    if sc:
        _check_uart(b["mcu"], sc, source + ".scanner", errors)
    _check_pins(b, source, errors)


def _check_uart(mcu, sc, where, errors):
    if sc["uart"] not in UARTS[mcu]:
        errors.append("%s.uart: %s has UART %s for a scanner" % (where, mcu, " or ".join(str(u) for u in UARTS[mcu])))
    elif mcu == "rp2":
        tx, rx = RP2_UART_PINS[sc["uart"]]
        for k, allowed in (("tx_pin", tx), ("rx_pin", rx)):
            if parse_pin(sc[k])[0] not in allowed:
                errors.append("%s.%s: UART%d's %s is on gpio%s" % (
                    where, k, sc["uart"], k[:2].upper(), "/".join(str(p) for p in allowed)))


def _pin_fields(b):
    """Yield (field path, spec) for every pin the board uses."""
    for i, c in enumerate(b["carousels"]):
        for k in ("step_pin", "dir_pin", "enable_pin", "home_pin", "index_pin", "diag_pin"):
            if k in c:
                yield "carousels[%d].%s" % (i, k), c[k]
    for i, lk in enumerate(b["locks"]):
        for k in ("drive_pin", "bolt_pin", "door_pin"):
            yield "locks[%d].%s" % (i, k), lk[k]
    for name, bus in (b.get("buses") or {}).items():
        for k in ("pin", "scl_pin", "sda_pin"):
            if k in bus:
                yield "buses.%s.%s" % (name, k), bus[k]
    sc = b.get("scanner")
    if sc:
        for k in ("tx_pin", "rx_pin"):
            yield "scanner.%s" % k, sc[k]
    for i, bt in enumerate(b.get("buttons") or []):
        yield "buttons[%d].pin" % i, bt["pin"]
    if "status_led" in b:
        yield "status_led", b["status_led"]


def _check_pins(b, source, errors):
    limit = MCU_PINS[b["mcu"]]
    reserved = b.get("reserved_pins") or []
    seen = {}
    for path, spec in _pin_fields(b):
        n = parse_pin(spec)[0]
        if n >= limit:
            errors.append("%s.%s: gpio%d does not exist on %s" % (source, path, n, b["mcu"]))
        if n in reserved:
            errors.append("%s.%s: gpio%d is reserved on this board" % (source, path, n))
        if n in seen:
            errors.append("%s.%s: gpio%d already used by %s" % (source, path, n, seen[n]))
        seen[n] = path


def load(path):
    """Read and validate a board file; errors name the file and field."""
    return validate(read_file(path, BoardError), path)


def bin_count(b):
    n = 0
    for c in b["carousels"]:
        n += c["bins"]
    return n
