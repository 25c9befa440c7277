# Simulated temperature/humidity sensors: a DS18B20 on the simulated 1-Wire
# bus (answered through the emulator's onewire module) and an SHT4x/SHT3x on
# the simulated I2C bus (machine.I2C calls present/i2c_write/i2c_read).
# Each keeps the datasheet behaviour the firmware must cope with: conversion
# and measurement times, the DS18B20's 85.00 C power-on scratchpad, NACKs
# before a measurement is done, CRCs on every read. Faults break them the
# ways real sensors break; randomness comes from a seeded LCG so a run is
# reproducible. Kept compact: it is compiled from source inside the
# emulated board's heap.
import math
import time
from kiosk.hw.pins import parse_pin
from onewire import _crc8

DEFAULT_C = 22.0
DEFAULT_RH = 45.0
DEFAULT_DRIFT = 0.1         # amplitude (C) of the slow wobble around the set point
_WOBBLE_MS = 120000         # its period
_CONV_MS = (94, 188, 375, 750)  # DS18B20 9..12 bit: 93.75..750 ms, rounded up
# SHT measure commands -> ms until data (8.3 ms for 0xFD, about 15 for 0x2400).
_SHT_CMDS = {"sht4x": {b"\xfd": 9}, "sht3x": {b"\x24\x00": 16}}


def sht_crc8(b0, b1):
    """Sensirion CRC-8 (poly 0x31, init 0xFF) over one 16-bit word."""
    crc = 0xFF
    for b in (b0, b1):
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def make_rom(index, name):
    """Deterministic valid DS18B20 ROM: family 0x28, a serial from the
    sensor's index and name, and its CRC."""
    h = 5381 + index * 7919
    for ch in name:
        h = (h * 33 + ord(ch)) & 0xFFFFFF
    rom = bytearray((0x28, index & 0xFF, h & 0xFF, (h >> 8) & 0xFF, h >> 16, 0x5E, 0x00, 0))
    rom[7] = _crc8(rom[:7])
    return bytes(rom)


def _since(t):
    return time.ticks_diff(time.ticks_ms(), t)


class _Sensor:
    """Set point, drift, faults and noise shared by both models."""
    FAULTS = ("sensor_unplugged", "sensor_crc", "sensor_noisy")

    def __init__(self, cfg, index):
        self.name = cfg["name"]
        self.kind = cfg["type"]
        self.celsius = DEFAULT_C
        self.humidity = None if self.kind == "ds18b20" else DEFAULT_RH
        self.drift = DEFAULT_DRIFT
        self.faults = []
        self.reads = 0
        self._t0 = time.ticks_ms()
        self._seed = 0x5EED + index * 7919
        for _ in range(4):      # nearby seeds must not start alike
            self._rand(2)
        self.power_on()

    def _rand(self, n):
        """0..n-1 from a tiny LCG's top 15 bits (its low bits are poor)."""
        self._seed = (self._seed * 1103515245 + 12345) & 0x7FFFFFFF
        return ((self._seed >> 16) * n) >> 15

    def set(self, celsius=None, humidity=None, drift=None):
        """Change the set point; None leaves a value as it is."""
        if humidity is not None:
            if self.humidity is None or not 0 <= humidity <= 100:
                raise ValueError("%s: humidity must be 0..100 %%RH on an SHT" % self.name)
            self.humidity = float(humidity)
        if drift is not None:
            if drift < 0:
                raise ValueError("drift must be >= 0")
            self.drift = float(drift)
        if celsius is not None:
            self.celsius = float(celsius)

    def now_c(self):
        """The true temperature now: set point plus the slow wobble."""
        ph = _since(self._t0) % _WOBBLE_MS * 2 * math.pi / _WOBBLE_MS
        return self.celsius + self.drift * math.sin(ph)

    def set_fault(self, kind, on):
        if kind not in self.FAULTS:
            raise ValueError("%s has no fault %r" % (self.name, kind))
        if kind in self.faults:
            if on:
                return
            self.faults.remove(kind)
            if kind == "sensor_unplugged":
                self.power_on()     # plugged back in: a fresh power-up
        elif on:
            self.faults.append(kind)

    def present(self):
        return "sensor_unplugged" not in self.faults

    def _send(self, out):
        """Count a read; apply sensor_crc (bad CRCs) and sensor_noisy (one
        or two flipped bits in ~30 % of reads)."""
        self.reads += 1
        if "sensor_crc" in self.faults:
            for i in self._crcs:
                out[i] ^= 0xA5
        if "sensor_noisy" in self.faults and self._rand(100) < 30:
            for _ in range(1 + self._rand(2)):
                bit = self._rand(len(out) * 8)
                out[bit >> 3] ^= 1 << (bit & 7)
        return out

    def state(self):
        return {
            "type": self.kind, "celsius": self.celsius, "humidity": self.humidity,
            "drift": self.drift, "faults": sorted(self.faults), "reads": self.reads,
            "bus": self.where,
        }


class DS18B20Model(_Sensor):
    FAULTS = _Sensor.FAULTS + ("sensor_no_power",)
    _crcs = (8,)

    def __init__(self, world, cfg, bus_cfg, index):
        rom = cfg.get("rom")
        if rom:
            import binascii
            self.rom = bytes(binascii.unhexlify(rom))
        else:
            self.rom = make_rom(index, cfg["name"])
        super().__init__(cfg, index)
        self.where = "".join("%02x" % b for b in self.rom)
        world.onewire_bus(parse_pin(bus_cfg["pin"])[0]).append(self)

    def power_on(self):
        """Scratchpad as after power-up: 85.00 C, factory TH/TL, 12 bit."""
        self.sp = bytearray(b"\x50\x05\x4b\x46\x7f\xff\x0c\x10\x00")
        self._conv = None       # (start ticks, ms) of a running conversion

    def resolution(self):
        return 9 + ((self.sp[4] >> 5) & 3)

    # -- called by the onewire bus ---------------------------------------
    def convert(self):
        self.converting()
        self._conv = (time.ticks_ms(), _CONV_MS[self.resolution() - 9])

    def converting(self):
        """Latch the result once the conversion time has passed."""
        c = self._conv
        if c is None or _since(c[0]) < c[1]:
            return c is not None
        self._conv = None
        if "sensor_no_power" in self.faults:
            raw = 0x07FF    # 127.94 C: the conversion starved
        else:
            step = 1 << (12 - self.resolution())
            raw = max(-2048, min(2047, int(round(self.now_c() * 16 / step)) * step))
        self.sp[0] = raw & 0xFF
        self.sp[1] = (raw >> 8) & 0xFF
        return False

    def scratchpad(self):
        """The 9 bytes the device sends for READ SCRATCHPAD."""
        self.converting()
        out = bytearray(self.sp)
        out[8] = _crc8(out[:8])
        return self._send(out)

    def write_scratchpad(self, th, tl, cfg):
        self.sp[2] = th
        self.sp[3] = tl
        self.sp[4] = (cfg & 0x60) | 0x1F

    def state(self):
        s = _Sensor.state(self)
        s["resolution"] = self.resolution()
        return s


class SHTModel(_Sensor):
    _crcs = (2, 5)

    def __init__(self, world, cfg, bus_cfg, index):
        super().__init__(cfg, index)
        self.addr = cfg.get("address", 0x44)
        self.where = "i2c%d@0x%02x" % (bus_cfg.get("id", 0), self.addr)
        bus = world.i2c_bus(bus_cfg.get("id", 0))
        if self.addr in bus:
            raise ValueError("%s: I2C address used twice" % self.where)
        bus[self.addr] = self

    def power_on(self):
        self._meas = None       # (ready ticks, celsius, humidity)

    # -- called by machine.I2C ---------------------------------------------
    def i2c_write(self, data):
        ms = _SHT_CMDS[self.kind].get(bytes(data))
        if ms is None:
            raise OSError(5)        # a command this model does not know: NACK
        self._meas = (time.ticks_add(time.ticks_ms(), ms), self.now_c(), self.humidity)

    def i2c_read(self, n):
        m = self._meas
        if m is None or time.ticks_diff(time.ticks_ms(), m[0]) < 0:
            raise OSError(5)        # no data (yet): NACK, as on a board
        self._meas = None
        if self.kind == "sht4x":
            words = ((m[1] + 45) / 175, (m[2] + 6) / 125)
        else:
            words = ((m[1] + 45) / 175, m[2] / 100)
        out = bytearray(6)
        for i in (0, 1):
            v = max(0, min(0xFFFF, int(round(words[i] * 65535))))
            out[3 * i] = v >> 8
            out[3 * i + 1] = v & 0xFF
            out[3 * i + 2] = sht_crc8(v >> 8, v & 0xFF)
        return bytes(self._send(out)[:n])


def make(world, sensor_cfg, bus_cfg, index):
    """The model for one board sensor, registered on its simulated bus."""
    if sensor_cfg["type"] == "ds18b20":
        return DS18B20Model(world, sensor_cfg, bus_cfg, index)
    return SHTModel(world, sensor_cfg, bus_cfg, index)
