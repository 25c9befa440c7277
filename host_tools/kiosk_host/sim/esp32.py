# The emulator's `esp32` under the esp32 personality: the RMT transmitter
# as MicroPython's ports/esp32/esp32_rmt.c drives it on an ESP32-S3
# (ESP-IDF's rmt_tx driver with a copy encoder, trans_queue_depth 4, but
# one items buffer per object):
#   - write_pulses() first waits, with the VM held in C, until the previous
#     transmission is done (rmt_tx_wait_all_done(-1)), converts the list to
#     RMT symbols and starts the new one; the pulses then play on their own,
#     whatever the CPU does;
#   - a transmission longer than the channel's memory (num_symbols, at
#     least 48 per block, SOC_RMT_MEM_WORDS_PER_CHANNEL) is refilled by the
#     driver's interrupt, which a flash operation holds off: if that happens
#     the world records a violation (the hardware would replay stale
#     symbols);
#   - the gap between two transmissions is the time write_pulses() takes
#     from the end of the one to the start of the next: SETUP_US, an
#     estimate to be measured on a bench (docs/hardware.md).
import utime as time
import _thread
import port
import simworld

SETUP_US = 40            # write_pulses(): wait returns, symbols converted, rmt_transmit() started
MEM_SYMBOLS = 48         # symbols per RMT memory block on the S3
TX_SYMBOLS = 192         # the S3's TX channels' memory, all blocks together

_lock = _thread.allocate_lock()
_owner = [None]      # the thread playing now: a scheduled callback run in the
                     # middle of it (it is Python) must not wait for itself
_channels = []


def tick():
    """Play every transmission up to now (the service thread, every ms)."""
    now = time.ticks_us()
    for ch in _channels:
        ch._play(now)


class RMT:
    def __init__(self, id=-1, pin=None, clock_div=None, resolution_hz=None, idle_level=False,
                 num_symbols=MEM_SYMBOLS, tx_carrier=None):
        if num_symbols < MEM_SYMBOLS or num_symbols % 2:
            raise ValueError("num_symbols must be even and at least %d" % MEM_SYMBOLS)
        self._symbols = num_symbols
        self._pin = getattr(pin, "_id", pin)
        if resolution_hz is None:
            resolution_hz = 80000000 // clock_div if clock_div else 10000000
        self._ns = 1000000000 // resolution_hz
        self._idle = 1 if idle_level else 0
        self._items = [0] * (2 * num_symbols)
        self._len = 0
        self._pos = 0
        self._level = 0
        self._t = 0              # when the pulse at _pos starts (ticks_us)
        self._on = False
        self._refill = False     # longer than the channel memory
        self.transmissions = 0
        self.late_us = 0         # the longest gap a late write_pulses() left between transmissions
        self._end = 0
        _channels.append(self)
        import machine
        machine.add_hardware(tick)

    def _edge(self, level, t):
        if self._pin is None:
            return
        simworld.world().write_at(self._pin, level, t)

    def _play(self, now):
        me = _thread.get_ident()
        if _owner[0] == me:
            return
        _lock.acquire()
        _owner[0] = me
        try:
            self._play_to(now)
        finally:
            _owner[0] = None
            _lock.release()

    def _play_to(self, now):
        """_play's work, with the lock held."""
        while self._on:
            if time.ticks_diff(now, self._t) < 0:
                break
            if self._pos >= self._len:      # the last pulse has ended
                self._on = False
                self._edge(self._idle, self._t)
                self._end = self._t
                break
            if self._refill and port.held():
                simworld.world().violation("RMT transmission longer than its memory while a flash "
                                           "operation held off the refill interrupt")
                self._refill = False
            self._edge(self._level, self._t)
            d = self._items[self._pos]
            self._t = time.ticks_add(self._t, d * self._ns // 1000)
            self._level ^= 1
            self._pos += 1

    def wait_done(self, timeout=0):
        t0 = time.ticks_ms()
        while True:
            self._play(time.ticks_us())
            if not self._on:
                return True
            if timeout == 0 or time.ticks_diff(time.ticks_ms(), t0) >= timeout:
                return False
            time.sleep_us(200)

    def write_pulses(self, duration, data=True):
        # The previous transmission first: the VM waits in C, callbacks too.
        while True:
            self._play(time.ticks_us())
            if not self._on:
                break
            time.sleep_us(10)
        n = len(duration)
        if n == 0:
            raise ValueError("No pulses")
        if n > len(self._items):
            self._items = [0] * n
        for i in range(n):
            d = duration[i]
            if d == 0:              # a zero duration marks the end of the transmission
                n = i
                break
            self._items[i] = d
        time.sleep_us(SETUP_US)
        now = time.ticks_us()
        _lock.acquire()
        _owner[0] = _thread.get_ident()
        try:
            if self.transmissions and self._end:
                gap = time.ticks_diff(now, self._end)
                if gap > self.late_us:
                    self.late_us = gap
            self._len = n
            self._pos = 0
            self._level = 1 if data else 0
            self._t = now
            self._refill = (len(duration) + 1) // 2 > self._symbols
            self._on = True
            self.transmissions += 1
        finally:
            _owner[0] = None
            _lock.release()
        self._play(now)

    def loop(self, enable):
        if enable:
            raise ValueError("looping is not simulated")

    def active(self, v=None):
        if v is None:
            return self._on
        if not v:
            # Stop at one instant, read under the lock: with the time read
            # first, the service thread could play pulses past it before
            # the stop (the VM descheduled in between on a loaded host),
            # and the stop's edge would land before them (a pulse of
            # negative length).
            me = _thread.get_ident()
            mine = _owner[0] == me      # called from a callback run inside our own play
            if not mine:
                _lock.acquire()
                _owner[0] = me
            try:
                now = time.ticks_us()
                if not mine:            # (inside our own play: played up to its time already)
                    self._play_to(now)
                if self._on:
                    self._on = False
                    self._edge(self._idle, now)
            finally:
                if not mine:
                    _owner[0] = None
                    _lock.release()

    def deinit(self):
        self._on = False
