# DS18B20 temperature sensor on a 1-Wire bus, written on the `onewire`
# module's byte API (what kiosk.hw.hal.onewire_bus returns). A read either gives
# a temperature that passed every check, or raises SensorError with a short
# code: the power-on 85.00, the 127.94 of a starved conversion, an absent
# device's all-0xFF and a failed CRC are never passed on as numbers.
#
# Nothing here waits for a conversion: start() sends CONVERT T and returns;
# the caller sleeps (asyncio) for conversion_ms() and then calls read().
# Only the short bus transactions themselves block.
# Needs external power (3 wires); parasite power would need a strong
# pull-up during conversion, which this driver does not drive.
from micropython import const
from time import ticks_ms, ticks_diff

_MATCH_ROM = const(0x55)
_SKIP_ROM = const(0xCC)
_CONVERT_T = const(0x44)
_READ_SCRATCHPAD = const(0xBE)
_WRITE_SCRATCHPAD = const(0x4E)

_RAW_POWER_ON = const(0x0550)   # 85.00 C: reset value, or a read before the first conversion
_RAW_NO_POWER = const(0x07FF)   # 127.94 C: conversion failed for lack of power
_MIN_C = const(-55)
_MAX_C = const(125)
_TH = const(0x4B)               # alarm registers: unused, left at factory values
_TL = const(0x46)
_CONV_MS = (94, 188, 375, 750)  # 93.75 / 187.5 / 375 / 750 ms, rounded up


class SensorError(Exception):
    """A sensor read that must not become a number. `code` is a short
    string the manager counts and journals. Shared by kiosk.hw.sht."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


def conversion_ms(resolution):
    """Datasheet maximum conversion time, rounded up to whole ms:
    9/10/11/12 bit -> 94/188/375/750 ms."""
    if resolution not in (9, 10, 11, 12):
        raise ValueError("resolution must be 9..12")
    return _CONV_MS[resolution - 9]


def start_all(ow):
    """CONVERT T to every device on the bus at once (SKIP ROM). Returns the
    ticks_ms of the start, or None when nobody answered the reset."""
    if not ow.reset():
        return None
    ow.writebyte(_SKIP_ROM)
    ow.writebyte(_CONVERT_T)
    return ticks_ms()


class DS18B20:
    def __init__(self, ow, rom, resolution=12):
        if len(rom) != 8 or ow.crc8(rom) != 0 or rom[0] != 0x28:
            raise ValueError("not a DS18B20 ROM (family 0x28, CRC)")
        self._ow = ow
        self.rom = bytes(rom)
        self.resolution = resolution
        self.wait_ms = conversion_ms(resolution)
        self._cfg = ((resolution - 9) << 5) | 0x1F     # config: 0 R1 R0 1 1 1 1 1
        self._buf = bytearray(9)
        self._wbuf = bytearray((_WRITE_SCRATCHPAD, _TH, _TL, self._cfg))
        self._configured = False
        self._started = None    # ticks_ms of the last CONVERT T this device saw

    def _select(self):
        """Reset and MATCH ROM; False when no device answers the reset."""
        ow = self._ow
        if not ow.reset():
            return False
        ow.writebyte(_MATCH_ROM)
        ow.write(self.rom)
        return True

    def prepare(self):
        """Write the resolution once (into the volatile scratchpad; no EEPROM
        wear). Redone after the device is seen to have reset."""
        if self._configured:
            return True
        if not self._select():
            return False
        self._ow.write(self._wbuf)
        self._configured = True
        return True

    def start(self):
        """CONVERT T to this device only. False when nothing answers the
        reset (1-Wire has no acknowledge: read() tells if it is there)."""
        self.prepare()
        if not self._select():
            return False
        self._ow.writebyte(_CONVERT_T)
        self._started = ticks_ms()
        return True

    def mark_started(self, t):
        """Record a conversion started for the whole bus by start_all()."""
        self._started = t

    def read(self):
        """The converted temperature in C, or SensorError."""
        if not self._select():
            raise SensorError("absent")
        ow = self._ow
        ow.writebyte(_READ_SCRATCHPAD)
        buf = self._buf
        ow.readinto(buf)
        ones = 0xFF
        zeros = 0
        for b in buf:
            ones &= b
            zeros |= b
        if ones == 0xFF:
            raise SensorError("absent")     # nobody drove the bus
        if ow.crc8(buf) != 0:
            raise SensorError("crc")
        if zeros == 0:
            raise SensorError("short")      # line held low: CRC of zeros is zero
        cfg = buf[4]
        if cfg & 0x9F != 0x1F:
            raise SensorError("crc")        # impossible register contents
        raw = buf[0] | (buf[1] << 8)
        if raw == _RAW_POWER_ON or cfg != self._cfg:
            # Power-on value, or its configuration is back to the EEPROM's:
            # it reset, and its conversion time is not the one we waited.
            self._configured = False
            raise SensorError("power_on")
        if raw == _RAW_NO_POWER:
            raise SensorError("no_power")
        if raw & 0x8000:
            raw -= 0x10000
        raw &= ~((1 << (3 - ((cfg >> 5) & 3))) - 1)   # undefined low bits
        started = self._started
        if started is None or ticks_diff(ticks_ms(), started) < self.wait_ms:
            raise SensorError("not_ready")  # a stale value from an older conversion
        c = raw / 16
        if c < _MIN_C or c > _MAX_C:
            raise SensorError("range")
        return c
