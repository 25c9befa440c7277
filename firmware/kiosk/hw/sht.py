# Sensirion SHT4x / SHT3x temperature and humidity sensors on I2C (the bus
# object kiosk.hw.hal.i2c_bus returns). start() sends the measure command and
# returns at once; the caller sleeps (asyncio) for measure_ms and then
# calls read(). Each 16-bit word comes with a CRC-8 (poly 0x31, init 0xFF):
# a word that fails it is a SensorError, never a value.
from micropython import const
from time import ticks_ms, ticks_diff
from kiosk.hw.ds18b20 import SensorError

_MIN_C = const(-40)     # specified range of both families
_MAX_C = const(125)


def crc8(buf, start):
    """Sensirion CRC-8 over buf[start], buf[start + 1]."""
    crc = 0xFF
    for i in range(start, start + 2):
        crc ^= buf[i]
        for _ in range(8):
            if crc & 0x80:
                crc = ((crc << 1) ^ 0x31) & 0xFF
            else:
                crc = (crc << 1) & 0xFF
    return crc


class _SHT:
    """Shared start/read: subclasses give the command, the wait and the
    humidity formula."""

    def __init__(self, i2c, addr, cmd, measure_ms):
        self._i2c = i2c
        self.addr = addr
        self._cmd = cmd
        self.measure_ms = measure_ms
        self._buf = bytearray(6)
        self._started = None    # ticks_ms of a measurement not yet read

    def start(self):
        """Send the measure command. False if the device did not ACK."""
        try:
            self._i2c.writeto(self.addr, self._cmd)
        except OSError:
            self._started = None
            return False
        self._started = ticks_ms()
        return True

    def read(self):
        """(celsius, rh) of the measurement start() began, or SensorError."""
        started = self._started
        if started is None:
            raise SensorError("absent")     # no measurement was accepted
        buf = self._buf
        try:
            self._i2c.readfrom_into(self.addr, buf)
        except OSError:
            # A NACK: still measuring, or gone since start().
            if ticks_diff(ticks_ms(), started) < self.measure_ms:
                raise SensorError("not_ready")
            self._started = None
            raise SensorError("absent")
        self._started = None
        if crc8(buf, 0) != buf[2] or crc8(buf, 3) != buf[5]:
            raise SensorError("crc")
        c = -45 + 175 * ((buf[0] << 8) | buf[1]) / 65535
        if c < _MIN_C or c > _MAX_C:
            raise SensorError("range")
        return c, self._rh((buf[3] << 8) | buf[4])


class SHT4x(_SHT):
    """0xFD: T and RH, high precision, 8.3 ms max."""

    def __init__(self, i2c, addr=0x44):
        super().__init__(i2c, addr, b"\xfd", 9)

    def _rh(self, s):
        rh = -6 + 125 * s / 65535
        return 0.0 if rh < 0 else 100.0 if rh > 100 else rh


class SHT3x(_SHT):
    """0x2400: single shot, high repeatability, no clock stretching,
    about 15 ms (the device NACKs reads until it is done)."""

    def __init__(self, i2c, addr=0x44):
        super().__init__(i2c, addr, b"\x24\x00", 16)

    def _rh(self, s):
        return 100 * s / 65535
