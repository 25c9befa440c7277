# The emulator's `time`: the port's clock. The tick counters are the VM's
# own (no cost, no difference); the calendar clock is the board's. Neither
# board keeps the time across a reset: the ESP32 counts from 2000-01-01 at
# power-on (its epoch is 2000), the RP2350 from 2021-01-01 (epoch 1970).
# Only the host can tell a kiosk the date (kiosk/clock.py).
from utime import *  # noqa: F401,F403
import utime as _t
import port as _port

if _port.CLOCK_START is not None:
    _BOOT_NS = _t.time_ns()      # the host's clock when this board powered on
    _OFFSET_2000 = 946684800     # 1970-01-01 to 2000-01-01 in seconds

    def time_ns():
        return _port.CLOCK_START * 1000000000 + _t.time_ns() - _BOOT_NS

    def time():
        return time_ns() // 1000000000

    def _unix(t):
        return t + _OFFSET_2000 if _port.EPOCH_2000 else t

    def gmtime(t=None):
        return _t.gmtime(_unix(time() if t is None else t))

    localtime = gmtime

    def mktime(tup):
        t = _t.mktime(tup)
        return t - _OFFSET_2000 if _port.EPOCH_2000 else t


# A hard IRQ raised by simulated hardware at the instant of an edge reads
# that instant from ticks_us() (sim/rp2.py sets it while the handler runs):
# on the chip the handler starts within microseconds of the edge, while the
# simulated hardware may catch up with real time a little late.
irq_ticks = [None]

if _port.NAME == "rp2":
    def ticks_us():
        v = irq_ticks[0]
        return _t.ticks_us() if v is None else v
