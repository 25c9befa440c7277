# The emulator's `machine`: found on sys.path before the built-in one, so
# firmware imports `machine` exactly as on a board. Pins are wired to the
# simulated world (simworld); Timer and WDT fire from a service thread, like
# hardware, so they hold even when the firmware's main loop stalls. How an
# interrupt reaches the firmware is the port's (port.py): on the unix port
# at once, from the thread that raised it; on the ESP32 always through the
# scheduler (timers refuse hard=True, pins have no `hard`); on the RP2
# through the scheduler unless hard=True. On the boards an interrupt that
# falls due during a flash operation waits for its end.
import time
import _thread
import port
import simworld

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5


class Pin:
    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self._id = id
        self._mode = self.IN
        self._pull = None
        self.init(mode, pull, value)

    def init(self, mode=-1, pull=-1, value=None):
        if mode != -1:
            self._mode = mode
        if pull != -1:
            self._pull = pull
        w = simworld.world()
        w.claim(self._id, self)
        if value is not None:
            self.value(value)
        elif self._mode == self.OUT:
            w.write(self._id, w.outputs.get(self._id, 0))

    def value(self, v=None):
        w = simworld.world()
        if v is None:
            if self._mode == self.OUT:
                return w.outputs.get(self._id, 0)
            for tick in _hardware:   # what peripherals did up to now shows on the pins
                tick()
            return w.read(self._id, self._pull)
        if self._mode == self.OUT:
            w.write(self._id, 1 if v else 0)

    __call__ = value

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def high(self):
        self.value(1)

    def low(self):
        self.value(0)

    def toggle(self):
        self.value(1 - self.value())

    def irq(self, handler=None, trigger=IRQ_RISING | IRQ_FALLING, **kw):
        if port.NAME == "esp32":
            for k in kw:   # ports/esp32/machine_pin.c: (handler, trigger, wake)
                if k != "wake":
                    raise TypeError("unexpected keyword argument '%s'" % k)
            hard = False
        else:
            hard = kw.get("hard", False)
        if handler is not None and port.BOARD:
            handler = _dispatcher(handler, hard)
        simworld.world().set_irq(self._id, self, handler, trigger)

    def __repr__(self):
        return "Pin(%d)" % self._id


class Signal:
    def __init__(self, pin, invert=False):
        self._pin = pin
        self._invert = invert

    def value(self, v=None):
        if v is None:
            return self._pin.value() ^ self._invert
        self._pin.value((1 if v else 0) ^ self._invert)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


def _dispatcher(handler, hard):
    if hard:
        return lambda pin: port.irq(handler, pin, True)
    return _Scheduled(handler)


class _Scheduled:
    """A pin handler delivered through the scheduler (every pin IRQ on the
    ESP32), timed. On a board it runs when the VM next serves the
    scheduler; here the VM is a Linux process that a loaded host can
    deschedule for tens of ms while the simulated hardware (a service
    thread in real time) goes on. In the simulation nothing else holds a
    scheduled callback back for long (the VM serves the scheduler between
    bytecodes and in every sleep and poll; port.stall() is counted in
    port.stats), so how late it ran is the host's doing, and so is most of
    the time a handler of a few lines takes. Each run is reported to the
    world (World.irq_ran) with both, so models and tests can tell them from
    the firmware's own reaction. Allocates nothing per edge."""

    def __init__(self, handler):
        self._handler = handler
        self._edge_us = 0       # the oldest edge whose callback has not run yet
        self._waiting = False
        self._run_cb = self._run  # bound once: scheduling it allocates nothing

    def __call__(self, pin):
        if not self._waiting:
            self._waiting = True
            self._edge_us = simworld.world().now_us()
        port.irq(self._run_cb, pin, False)

    def _run(self, pin):
        w = simworld.world()
        for tick in _hardware:   # the hardware as it stands when the callback starts
            tick()
        t0 = time.ticks_us()
        late = -1               # a second callback for edges already timed
        if self._waiting:
            self._waiting = False
            late = time.ticks_diff(t0, self._edge_us)
        w.irq_ran(pin._id, late, -1)
        try:
            self._handler(pin)
        finally:
            for tick in _hardware:
                tick()
            w.irq_ran(pin._id, late, time.ticks_diff(time.ticks_us(), t0))


# -- timers: one service thread runs every armed timer and the watchdog ----

_lock = _thread.allocate_lock()
_armed = []          # Timer objects with a deadline
_hardware = []       # tick() of peripherals that run on their own (rp2 PIO and DMA, esp32 RMT)
_thread_started = [False]
_TICK_MS = 1


def add_hardware(tick):
    """Run tick() every service round: a peripheral that works while the
    CPU stalls."""
    if tick not in _hardware:
        _hardware.append(tick)
    _ensure_thread()


def _service():
    while True:
        time.sleep_ms(_TICK_MS)
        for tick in _hardware:
            try:
                tick()
            except Exception as e:
                import sys
                sys.print_exception(e)
        now = time.ticks_ms()
        due = None
        with _lock:
            for t in _armed:
                if time.ticks_diff(now, t._deadline) >= 0:
                    due = t
                    break
            if due is not None:
                if due._mode == Timer.PERIODIC:
                    due._deadline = time.ticks_add(due._deadline, due._period)
                else:
                    _armed.remove(due)
        if due is not None and due._callback is not None:
            try:
                port.irq(due._callback, due, due._hard)
            except Exception as e:  # a dying callback must be loud, not silent
                import sys
                sys.print_exception(e)
        _watchdog_check(now)


def _ensure_thread():
    if not _thread_started[0]:
        _thread_started[0] = True
        _thread.start_new_thread(_service, ())


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id=-1, **kw):
        if port.NAME == "esp32" and not -1 <= id < port.ESP32_HW_TIMERS:
            raise ValueError("invalid Timer number, max %d" % port.ESP32_HW_TIMERS)
        self._id = id
        self._mode = self.ONE_SHOT
        self._period = 0
        self._deadline = 0
        self._callback = None
        self._hard = True
        self._set = False
        if kw:
            self.init(**kw)

    def init(self, mode=PERIODIC, period=-1, freq=-1, callback=None, hard=None):
        if port.NAME == "esp32" and hard:
            raise ValueError("hard Timers are not implemented")
        if freq > 0:
            period = max(1, int(1000 / freq))
        if period < 0:
            raise ValueError("period or freq needed")
        if port.NAME == "esp32" and self._id == -1 and period < port.ESP32_TICK_MS:
            raise ValueError("period too small for soft timer, less than OS tick period of %d ms."
                             "  Try a hardware timer." % port.ESP32_TICK_MS)
        self._disarm()
        self._set = True
        # unix: the callback runs in the service thread, as it always did
        self._hard = (hard is None or hard) if not port.BOARD else bool(hard)
        self._mode = mode
        self._period = period
        self._callback = callback
        self._deadline = time.ticks_add(time.ticks_ms(), period)
        with _lock:
            _armed.append(self)
        _ensure_thread()

    def deinit(self):
        if port.NAME == "esp32" and self._id == -1 and not self._set:
            raise ValueError("timer not set")
        self._disarm()

    def _disarm(self):
        with _lock:
            if self in _armed:
                _armed.remove(self)


# -- watchdog: on expiry the board resets (the process ends; the emulator's
# supervisor restarts it on the same flash, with reset_cause WDT_RESET) ---

_wdt = [None, 0]     # [timeout_ms, last feed]


def _watchdog_check(now):
    if _wdt[0] and time.ticks_diff(now, _wdt[1]) > _wdt[0]:
        simworld.world().note_reset(WDT_RESET)
        simworld.hard_exit(WDT_RESET)


class WDT:
    def __init__(self, id=0, timeout=5000):
        if timeout > simworld.world().wdt_limit_ms:
            raise ValueError("WDT timeout too long")
        _wdt[0] = timeout
        _wdt[1] = time.ticks_ms()
        _ensure_thread()

    def feed(self):
        _wdt[1] = time.ticks_ms()


# -- I2C: transactions go to the simulated devices at each address ---------

class I2C:
    def __init__(self, id=0, scl=None, sda=None, freq=400000, timeout=50000):
        self._bus = simworld.world().i2c_bus(id)

    def scan(self):
        return sorted(a for a, d in self._bus.items() if d.present())

    def _dev(self, addr):
        d = self._bus.get(addr)
        if d is None or not d.present():
            raise OSError(19)  # ENODEV: no ACK, as on a board
        return d

    def writeto(self, addr, buf, stop=True):
        self._dev(addr).i2c_write(bytes(buf))
        return len(buf)

    def readfrom(self, addr, n, stop=True):
        return self._dev(addr).i2c_read(n)

    def readfrom_into(self, addr, buf, stop=True):
        data = self._dev(addr).i2c_read(len(buf))
        for i in range(len(buf)):
            buf[i] = data[i]


SoftI2C = I2C


# -- UART: the receive line of the device wired to its RX pin (simworld) ---

class UART:
    def __init__(self, id, baudrate=9600, **kw):
        self._id = id
        self.init(baudrate, **kw)

    def init(self, baudrate=9600, bits=8, parity=None, stop=1, tx=None, rx=None, rxbuf=256,
             timeout=0, **kw):
        if rx is None:
            raise ValueError("UART: give rx (the emulator wires devices by pin)")
        w = simworld.world()
        num = rx._id if isinstance(rx, Pin) else rx
        self._line = w.uart_line(num)
        self._line.open(max(rxbuf, 32))
        self.baudrate = baudrate
        self.written = 0

    def any(self):
        return self._line.any()

    def readinto(self, buf, nbytes=None):
        n = len(buf) if nbytes is None else nbytes
        got = self._line.read_into(buf, n)
        return got if got else None

    def read(self, nbytes=-1):
        n = self._line.any() if nbytes is None or nbytes < 0 else nbytes
        buf = bytearray(n)
        got = self._line.read_into(buf, n)
        return bytes(buf[:got]) if got else None

    def write(self, data):
        self.written += len(data)
        return len(data)

    def deinit(self):
        pass


def reset_cause():
    return simworld.world().reset_cause


def reset():
    simworld.world().note_reset(HARD_RESET)
    simworld.hard_exit(HARD_RESET)


def soft_reset():
    reset()


def unique_id():
    return simworld.world().uid


def freq(*a):
    return 150000000


def idle():
    time.sleep_ms(1)


def disable_irq():
    return 0


def enable_irq(state=0):
    pass
