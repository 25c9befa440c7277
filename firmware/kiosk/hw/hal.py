# The thin hardware layer: the only firmware module (with its step-timing
# backends) that touches `machine`. Drivers get ready objects from here, in
# logical terms (active/inactive), with the board's pulls and inversions
# applied once, so no logic ever handles a raw pin.
from machine import Pin
from kiosk.hw.pins import parse_pin


class Out:
    """A digital output; `set(1)` means active (energised, enabled...)."""

    def __init__(self, spec, active=0):
        n, _, self._inv = parse_pin(spec)
        self.num = n
        self._pin = Pin(n, Pin.OUT, value=(1 if active else 0) ^ self._inv)

    def set(self, active):
        self._pin.value((1 if active else 0) ^ self._inv)

    def on(self):
        self.set(1)

    def off(self):
        self.set(0)

    def active(self):
        return self._pin.value() ^ self._inv


class In:
    """A digital input (switch, reed, sensor line) read as active or not."""

    def __init__(self, spec):
        n, pull, self._inv = parse_pin(spec)
        self.num = n
        p = Pin.PULL_UP if pull == "up" else Pin.PULL_DOWN if pull == "down" else None
        self._pin = Pin(n, Pin.IN, p)

    def active(self):
        return self._pin.value() ^ self._inv

    def on_change(self, handler):
        """Call handler() on every edge, from a hard pin interrupt where the
        port has them (rp2: within microseconds of the edge, so a step count
        read there is the edge's); the ESP32 port has none and schedules it
        (it then runs at the VM's next check: `hard` says which). The
        handler must not allocate."""
        if handler is None:
            self._pin.irq(None)
            return
        cb = lambda p: handler()
        try:
            self._pin.irq(cb, Pin.IRQ_RISING | Pin.IRQ_FALLING, hard=True)
            self.hard = True
        except TypeError:       # ports/esp32: Pin.irq(handler, trigger, wake), no `hard`
            self._pin.irq(cb, Pin.IRQ_RISING | Pin.IRQ_FALLING)
            self.hard = False


_esp32_timers = [0]


class OneShot:
    """A hardware one-shot timer for safety caps. Where the port has hard
    timer callbacks (rp2) the callback runs from the interrupt, so it fires
    even while the main loop is stalled. The ESP32 port has none (it raises
    ValueError for hard=True since v1.27; older ports raise TypeError): its
    callbacks are scheduled and run at the VM's next check, so `hard` is
    False there and the caller must not rely on a stalled loop being cut
    short (docs/locks.md)."""

    def __init__(self, mcu):
        from machine import Timer
        if mcu == "esp32":
            tid = _esp32_timers[0]
            _esp32_timers[0] += 1
            self._t = Timer(tid)
        else:
            self._t = Timer(-1)
        self._mcu = mcu
        self.hard = True        # until the port refuses it

    def arm(self, ms, callback):
        from machine import Timer
        if self.hard:
            try:
                self._t.init(mode=Timer.ONE_SHOT, period=ms, callback=callback, hard=True)
                return
            except (ValueError, TypeError):  # no hard timer callbacks on this port
                self.hard = False
        self._t.init(mode=Timer.ONE_SHOT, period=ms, callback=callback)

    def cancel(self):
        self._t.deinit()


def watchdog(ms):
    from machine import WDT
    return WDT(timeout=ms)


def onewire_bus(bus):
    import onewire
    return onewire.OneWire(Pin(parse_pin(bus["pin"])[0]))


def i2c_bus(bus):
    from machine import I2C
    scl = Pin(parse_pin(bus["scl_pin"])[0])
    sda = Pin(parse_pin(bus["sda_pin"])[0])
    return I2C(bus.get("id", 0), scl=scl, sda=sda, freq=bus.get("freq", 100000))


def uart(cfg, rxbuf=256):
    """The UART a board entry names ({"uart", "tx_pin", "rx_pin", "baud"}),
    with a read timeout of 0: a read takes what is there and never waits."""
    from machine import UART
    return UART(cfg["uart"], baudrate=cfg.get("baud", 9600), tx=Pin(parse_pin(cfg["tx_pin"])[0]),
                rx=Pin(parse_pin(cfg["rx_pin"])[0]), rxbuf=rxbuf, timeout=0)


def step_backend(board, carousel):
    """The step-timing backend the board names: software timing (emulator,
    any port), RP2 PIO or ESP32 RMT (pulses timed in hardware)."""
    kind = board["step_timing"]
    d = Out(carousel["dir_pin"])
    if kind == "pio":
        from kiosk.hw.step_pio import PioSteps
        return PioSteps(carousel["step_pin"], d, carousel)
    if kind == "rmt":
        from kiosk.hw.step_rmt import RmtSteps
        return RmtSteps(carousel["step_pin"], d, carousel)
    from kiosk.hw.step_soft import SoftSteps
    return SoftSteps(Out(carousel["step_pin"]), d, carousel)


def reset_cause():
    import machine
    c = machine.reset_cause()
    if c == getattr(machine, "WDT_RESET", -1):
        return "watchdog"
    if c == getattr(machine, "PWRON_RESET", -1):
        return "power_on"
    if c == getattr(machine, "SOFT_RESET", -1):
        return "soft"
    return "hard"


def unique_id():
    import machine
    import binascii
    return binascii.hexlify(machine.unique_id()).decode()


def reset():
    """Restart the board at once (a firmware update's switch, a failed
    trial): what a reset leaves the pins is the safe state (docs/locks.md)."""
    import machine
    machine.reset()


_feeder = []


def feed_while_idle(wdt):
    """Once the controller is stopped at the REPL (Ctrl-C) the watchdog,
    which cannot be stopped, is fed from a timer so the field team can work;
    the hardware is already safe by then."""
    from machine import Timer
    t = Timer(-1)
    t.init(mode=Timer.PERIODIC, period=1000, callback=lambda _t: wdt.feed())
    _feeder.append(t)
