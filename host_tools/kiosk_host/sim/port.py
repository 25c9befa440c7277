# The port personality of the simulated board: which MicroPython port the
# firmware runs on, as far as the firmware can tell, and the facts of that
# port the simulated modules reproduce (machine, socket, errno, time, rp2,
# esp32, and the flash under open()). The unix port behaves like Linux; the
# boards the firmware ships to do not, and a test that runs only on the
# unix port cannot see the difference.
#
# Chosen once per process by KIOSK_SIM_PORT: the emulator sets it from the
# board file's `mcu`, the test runner once per personality.
#   unix   the unix port as it is (the `emulator` board)
#   esp32  MicroPython's ports/esp32 on an ESP32-S3
#   rp2    MicroPython's ports/rp2 on an RP2350 (Pico 2 W)
# Every fact below names its source; docs/hardware.md "Port personalities"
# lists them with what is proven by emulation and what needs a bench.
import io
import os
import utime as time  # the VM's own: time.py (the port's clock) imports this module
import _thread
import micropython

NAME = os.getenv("KIOSK_SIM_PORT") or "unix"
if NAME not in ("unix", "esp32", "rp2"):
    raise ValueError("KIOSK_SIM_PORT must be unix, esp32 or rp2, not %r" % NAME)
BOARD = NAME != "unix"

# -- errno (ports/esp32/mpconfigport.h: MICROPY_USE_INTERNAL_ERRNO 0, so
# newlib's sys/errno.h; ports/rp2 and unix: Linux numbering) --------------
LINUX_TO_NEWLIB = {
    32: 32,     # EPIPE
    95: 95,     # EOPNOTSUPP
    98: 112,    # EADDRINUSE
    100: 115,   # ENETDOWN (newlib 115; Linux 115 is EINPROGRESS)
    101: 114,   # ENETUNREACH
    103: 113,   # ECONNABORTED
    104: 104,   # ECONNRESET
    105: 105,   # ENOBUFS
    106: 127,   # EISCONN
    107: 128,   # ENOTCONN
    110: 116,   # ETIMEDOUT
    111: 111,   # ECONNREFUSED
    112: 117,   # EHOSTDOWN
    113: 118,   # EHOSTUNREACH
    114: 120,   # EALREADY
    115: 119,   # EINPROGRESS
}


def errno_of(linux_errno):
    """The number this port's OSError carries for a Linux errno."""
    if NAME == "esp32":
        return LINUX_TO_NEWLIB.get(linux_errno, linux_errno)
    return linux_errno


# -- the clock (ports/esp32: MICROPY_EPOCH_IS_1970 unset, so the 2000 epoch,
# and the RTC counts from 0 at power-on; ports/rp2/main.c: the RTC starts at
# 2021-01-01 00:00:00 at every boot) --------------------------------------
EPOCH_2000 = NAME == "esp32"
if NAME == "esp32":
    CLOCK_START = 0                  # seconds since 2000-01-01
elif NAME == "rp2":
    CLOCK_START = 1609459200         # 2021-01-01 00:00:00 since 1970
else:
    CLOCK_START = None               # the host's clock

# -- interrupts -----------------------------------------------------------
# ports/esp32/machine_timer.c: hard=True raises ValueError("hard Timers are
# not implemented"); every callback goes through mp_sched_schedule.
# ports/esp32/machine_pin.c: Pin.irq(handler, trigger, wake), no `hard`;
# the ISR schedules the handler. ports/rp2: Pin.irq and Timer take
# hard=False by default (scheduled), hard=True runs in the interrupt.
HARD_TIMERS = NAME != "esp32"
HARD_PIN_IRQ = NAME != "esp32"
ESP32_HW_TIMERS = 4                  # SOC_TIMER_GROUP_TOTAL_TIMERS on the S3
ESP32_TICK_MS = 10                   # FreeRTOS tick: virtual Timer(-1) periods below it are refused

# -- flash (W25Q32JV/RV datasheet, the Pico 2 W's and common ESP32-S3
# modules' QSPI flash class: page program 0.4 ms typical, 3 ms max; 4 KiB
# sector erase 45 ms typical, 400 ms max). ports/rp2/rp2_flash.c runs every
# erase and program with interrupts off and the other core parked; on the
# ESP32, ESP-IDF's SPI flash driver disables the caches for each operation,
# so code and interrupts outside IRAM (all of MicroPython's) wait too.
# LittleFS (extmod/vfs_lfsx.c; progsize 256 on rp2): writes gather in a
# 1 KiB cache, a flush or close programs them and commits metadata, a
# rename or remove commits metadata; a new 4 KiB block is erased before use
# and a metadata pair is compacted (erased) after about 64 commits.
FLASH = BOARD
PAGE_US = 400
ERASE_US = 45000
CACHE = 1024
BLOCK = 4096
COMMITS_PER_ERASE = 64

MAIN = _thread.get_ident()

# -- the interrupt gate ----------------------------------------------------
# While the CPU stalls (a flash operation), interrupts wait; hardware (PIO,
# DMA, RMT, the simulated mechanics) carries on. Handlers that fall due
# meanwhile run the moment the stall ends.
_held = [0]
_pending = []
_lock = _thread.allocate_lock()
stats = {"stalls": 0, "stall_us": 0, "longest_stall_us": 0, "erases": 0, "programs": 0,
         "irq_lost": 0, "irq_deferred": 0}


def held():
    return _held[0] > 0


def _schedule(handler, arg):
    try:
        micropython.schedule(handler, arg)
    except RuntimeError:   # queue full: the port's mp_sched_schedule drops it
        stats["irq_lost"] += 1


def irq(handler, arg, hard):
    """Deliver an interrupt: at once in this thread (hard), or through the
    scheduler to the main thread (soft); after the stall if one is on."""
    with _lock:
        if _held[0]:
            _pending.append((handler, arg, hard))
            stats["irq_deferred"] += 1
            return
    if hard:
        handler(arg)
    else:
        _schedule(handler, arg)


def stall(us):
    """The CPU stops for us microseconds: the main thread blocks in C (no
    bytecode, no scheduled callbacks) and interrupts wait."""
    if us <= 0 or _thread.get_ident() != MAIN:
        return
    with _lock:
        _held[0] += 1
    stats["stalls"] += 1
    stats["stall_us"] += us
    if us > stats["longest_stall_us"]:
        stats["longest_stall_us"] = us
    try:
        time.sleep_us(us)
    finally:
        with _lock:
            _held[0] -= 1
            due = _pending[:] if not _held[0] else ()
            if due:
                del _pending[:]
        for handler, arg, hard in due:
            if hard:
                handler(arg)
            else:
                _schedule(handler, arg)


# -- the flash model under open() -------------------------------------------
class _Flash:
    def __init__(self):
        self.programmed = 0      # data bytes programmed since the last data-block erase
        self.commits = 0         # metadata commits since the last compaction

    def program(self, nbytes):
        pages = (nbytes + 255) // 256 if nbytes else 0
        us = pages * PAGE_US
        self.programmed += nbytes
        stats["programs"] += pages
        while self.programmed >= BLOCK:
            self.programmed -= BLOCK
            us += ERASE_US
            stats["erases"] += 1
        return us

    def commit(self):
        self.commits += 1
        stats["programs"] += 1
        us = PAGE_US
        if self.commits >= COMMITS_PER_ERASE:
            self.commits = 0
            us += ERASE_US
            stats["erases"] += 1
        return us


flash = _Flash()


class _File(io.IOBase):
    """A file open for writing on the simulated flash: the real file, plus
    the stalls LittleFS's programs and erases cost the CPU. A stream, so
    json.dump and print(file=) write to it as to a file."""

    def __init__(self, f):
        self._f = f
        self._cached = 0

    def write(self, data, *n):
        r = self._f.write(data, *n) if n else self._f.write(data)
        self._cached += r or 0
        if self._cached >= CACHE:
            full = self._cached - self._cached % CACHE
            self._cached -= full
            stall(flash.program(full))
        return r

    def readinto(self, buf, *n):
        return self._f.readinto(buf, *n)

    def ioctl(self, req, arg):
        if req == 4:            # close (py/stream.h MP_STREAM_CLOSE)
            self.close()
            return 0
        if req == 1:            # flush
            self.flush()
            return 0
        return -1

    def flush(self):
        self._f.flush()
        stall(flash.program(self._cached) + flash.commit())
        self._cached = 0

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None
            stall(flash.program(self._cached) + flash.commit())
            self._cached = 0

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def __getattr__(self, name):   # read, readline, seek, tell, ... unchanged
        return getattr(self._f, name)


_real_open = open


def _open(path, mode="r", *a, **kw):
    f = _real_open(path, mode, *a, **kw)
    if _thread.get_ident() != MAIN or not ("w" in mode or "a" in mode or "+" in mode):
        return f
    stall(flash.commit())       # the file's creation or opening for append
    return _File(f)


def metadata():
    """A rename, remove or mkdir: one metadata commit."""
    stall(flash.commit())


if FLASH:
    import builtins
    builtins.open = _open
