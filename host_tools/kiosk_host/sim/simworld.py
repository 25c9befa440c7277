# The simulated world behind the emulator's `machine`: pins at the electrical
# level, wired to models of the kiosk's mechanics (carousel, locks and doors,
# temperature sensors) built from the same board file the firmware reads.
# Tests and the emulator drive it through World.handle(), one JSON-able
# command at a time, so the same verbs serve both.
import os
import time
import _thread
from kiosk.hw.pins import parse_pin

_MAX_VIOLATIONS = 32
_world = [None]


class SimPin:
    """A board pin seen from the world's side, in logical terms: the
    board's '!' (active-low) and pull flags are applied here once."""

    def __init__(self, world, spec):
        self.world = world
        self.num, self.pull, self.invert = parse_pin(spec)

    def set(self, active):
        """Drive an input the firmware reads (a switch or sensor line)."""
        self.world.drive(self.num, (1 if active else 0) ^ self.invert)

    def get(self):
        """Logical level the firmware drives on an output. A pin it has not
        driven rests inactive: the wiring guide (docs/hardware.md) puts a
        resistor on every output to that end (pull-down on a coil driver's
        gate, pull-up on an active-low EN)."""
        level = self.world.outputs.get(self.num)
        return 0 if level is None else level ^ self.invert

    def watch(self, cb):
        """cb(active) on each change of the firmware's output."""
        inv = self.invert
        self.world.watch(self.num, lambda level: cb(level ^ inv))


class UartLine:
    """One UART receive line: bytes a device sent that the firmware's UART
    has not read yet, held in the UART's receive buffer (what overflows it
    is lost, as on a board). Fed from the control thread, read by the
    firmware's: guarded by a lock."""

    def __init__(self):
        self.buf = bytearray()
        self.cap = 256
        self.dropped = 0
        self.lock = _thread.allocate_lock()

    def open(self, rxbuf):
        self.cap = rxbuf

    def feed(self, data):
        with self.lock:
            room = self.cap - len(self.buf)
            if room < len(data):
                self.dropped += len(data) - max(room, 0)
                data = data[:max(room, 0)]
            self.buf.extend(data)

    def any(self):
        return len(self.buf)

    def read_into(self, dest, n):
        with self.lock:
            n = min(n, len(self.buf), len(dest))
            dest[:n] = self.buf[:n]
            self.buf = self.buf[n:]
        return n


class World:
    def __init__(self, board=None):
        self.board = board
        self.outputs = {}
        self.inputs = {}
        self.claimed = {}
        self.watchers = {}
        self.irq_watchers = {}
        self.irqs = {}
        self.i2c_buses = {}
        self.onewire_buses = {}
        self.carousels = {}
        self.locks = {}
        self.sensors = {}
        self.scanners = {}
        self.buttons = {}
        self.uarts = {}
        self.violations = []
        self.violation_count = 0
        self.uid = (os.getenv("KIOSK_SIM_UID") or "sim-0001").encode()
        self.wdt_limit_ms = 8388
        self.state_file = os.getenv("KIOSK_SIM_STATE")
        self.reset_cause = self._load_reset_cause()
        self.network_up = True  # Wi-Fi and the route to the broker (sim socket, network)
        self.network_drops = 0  # each drop breaks the sockets open at the time
        self.edge_us = None     # set by simulated hardware: when its pin edge happened
        self.route = "ok"       # "refused" (resets) or "blackhole" (silence) beyond the Wi-Fi
        self.rtt_ms = 0         # round trip added to every connection
        if board:
            self.wdt_limit_ms = board["wdt_max_ms"]
            self._build(board)

    # -- pins -------------------------------------------------------------
    def claim(self, num, pin):
        self.claimed[num] = pin

    def read(self, num, pull):
        level = self.inputs.get(num)
        if level is None:  # floating: the pull decides, as on a board
            return 1 if pull == 1 else 0
        return level

    def write_at(self, num, level, t):
        """Drive a pin from simulated hardware (PIO, RMT) at the instant t
        (ticks_us) its edge happened, which may be a little before now: an
        IRQ the edge raises is timed from it (edge_us), and a hard handler
        reads it from ticks_us() (sim/time.py), as on the chip."""
        self.edge_us = t
        time.irq_ticks[0] = t
        try:
            self.write(num, level)
        finally:
            self.edge_us = None
            time.irq_ticks[0] = None

    def write(self, num, level):
        if self.outputs.get(num) == level:
            return
        self.outputs[num] = level
        for cb in self.watchers.get(num, ()):
            cb(level)

    def drive(self, num, level):
        old = self.inputs.get(num)
        self.inputs[num] = level
        irq = self.irqs.get(num)
        if irq is None or old == level:
            return
        pin, handler, trigger = irq
        if handler and trigger & (1 if level else 2):  # IRQ_RISING=1, IRQ_FALLING=2
            handler(pin)

    def watch(self, num, cb):
        self.watchers.setdefault(num, []).append(cb)

    def watch_irq(self, num, cb):
        """cb(late_us, took_us) when a scheduled callback for input pin num
        starts (took_us -1) and returns; see irq_ran."""
        self.irq_watchers.setdefault(num, []).append(cb)

    def irq_ran(self, num, late_us, took_us):
        """A scheduled pin callback started (took_us -1) or returned after
        took_us; it started late_us after the edge that raised it (-1: a
        further callback for an edge already timed). Called by `machine`
        from the firmware's thread."""
        for cb in self.irq_watchers.get(num, ()):
            cb(late_us, took_us)

    def now_us(self):
        """When the output change being handled happened: the simulated
        hardware's time when a peripheral (PIO, RMT) drives the pin, else
        now. Microseconds; compare with ticks_diff only."""
        t = self.edge_us
        return time.ticks_us() if t is None else t

    def set_irq(self, num, pin, handler, trigger):
        self.irqs[num] = (pin, handler, trigger)

    def uart_line(self, rx_num):
        """The receive line of the UART whose RX is on pin rx_num."""
        line = self.uarts.get(rx_num)
        if line is None:
            line = self.uarts[rx_num] = UartLine()
        return line

    def i2c_bus(self, bus_id):
        return self.i2c_buses.setdefault(bus_id, {})

    def onewire_bus(self, num):
        return self.onewire_buses.setdefault(num, [])

    # -- safety observation ----------------------------------------------
    def violation(self, what):
        """Record a safety rule broken by the firmware (never by the world)."""
        self.violation_count += 1
        if len(self.violations) < _MAX_VIOLATIONS:
            self.violations.append(what)

    def doors_secure(self):
        for lk in self.locks.values():
            if lk.energized() or not lk.door_closed:
                return False
        return True

    # -- resets -------------------------------------------------------------
    def _load_reset_cause(self):
        if not self.state_file:
            return 1  # PWRON_RESET
        try:
            with open(self.state_file) as f:
                cause = int(f.read().strip() or 1)
            os.remove(self.state_file)
            return cause
        except (OSError, ValueError):
            return 1

    def note_reset(self, cause):
        if self.state_file:
            try:
                with open(self.state_file, "w") as f:
                    f.write(str(cause))
            except OSError:
                pass

    # -- building from a board ---------------------------------------------
    def _build(self, board):
        # Each model module is imported only if the board has such models:
        # compiling one from source costs heap a test may not have to spare.
        if board["carousels"]:
            import sim_carousel
            for c in board["carousels"]:
                self.carousels[c["name"]] = sim_carousel.Carousel(self, c)
        if board["locks"]:
            import sim_lock
            for lk in board["locks"]:
                self.locks[lk["name"]] = sim_lock.Lock(self, lk)
        if board.get("scanner"):
            import sim_scanner
            self.scanners["scanner"] = sim_scanner.Scanner(self, board["scanner"])
        if board.get("buttons"):
            import sim_button
            for b in board["buttons"]:
                self.buttons[b["name"]] = sim_button.Button(self, b)
        buses = board.get("buses") or {}
        if board.get("sensors"):
            import sim_sensors
            for i, s in enumerate(board["sensors"]):
                self.sensors[s["name"]] = sim_sensors.make(self, s, buses[s["bus"]], i)

    # -- the control verbs (tests, the emulator's control API) -------------
    def _groups(self):
        return (self.carousels, self.locks, self.sensors, self.scanners, self.buttons)

    def models_for_fault(self, kind, target):
        found = []
        for group in self._groups():
            for name, m in group.items():
                if kind in m.FAULTS and (target is None or target == name):
                    found.append(m)
        return found

    def fault_kinds(self):
        kinds = set()
        for group in self._groups():
            for m in group.values():
                kinds.update(m.FAULTS)
        return sorted(kinds)

    def handle(self, cmd):
        """Apply one control command (a dict) and return a JSON-able result.
        Raises ValueError with a clear message for a bad command."""
        op = cmd.get("op")
        if op == "door":
            lk = self.locks.get(cmd.get("door"))
            if lk is None:
                raise ValueError("no door %r (have %s)" % (cmd.get("door"), ", ".join(self.locks)))
            return lk.door_action(cmd.get("action"))
        if op == "sensor":
            s = self.sensors.get(cmd.get("sensor"))
            if s is None:
                raise ValueError("no sensor %r (have %s)" % (cmd.get("sensor"), ", ".join(self.sensors)))
            s.set(cmd.get("celsius"), cmd.get("humidity"), cmd.get("drift"))
            return s.state()
        if op == "fault":
            kind = cmd.get("kind")
            target = cmd.get("target")
            models = self.models_for_fault(kind, target)
            if not models:
                raise ValueError("unknown fault %r%s (known: %s)" % (
                    kind, "" if target is None else " on %r" % target, ", ".join(self.fault_kinds())))
            for m in models:
                m.set_fault(kind, bool(cmd.get("on", True)))
            return {"kind": kind, "on": bool(cmd.get("on", True)), "targets": [m.name for m in models]}
        if op == "network":
            if "up" in cmd or ("route" not in cmd and "rtt_ms" not in cmd):
                up = bool(cmd.get("up", True))
                if self.network_up and not up:
                    self.network_drops += 1
                self.network_up = up
            route = cmd.get("route")
            if route is not None:
                if route not in ("ok", "refused", "blackhole"):
                    raise ValueError("route must be ok, refused or blackhole, not %r" % (route,))
                self.route = route
            rtt = cmd.get("rtt_ms")
            if rtt is not None:
                if not isinstance(rtt, int) or isinstance(rtt, bool) or not 0 <= rtt <= 10000:
                    raise ValueError("rtt_ms must be an integer from 0 to 10000")
                self.rtt_ms = rtt
            return {"up": self.network_up, "drops": self.network_drops, "route": self.route,
                    "rtt_ms": self.rtt_ms}
        if op == "scan":
            sc = self.scanners.get("scanner")
            if sc is None:
                raise ValueError("this board has no scanner")
            return sc.scan(cmd.get("text"), cmd.get("end", "\r"))
        if op == "button":
            b = self.buttons.get(cmd.get("name"))
            if b is None:
                raise ValueError("no button %r (have %s)" % (cmd.get("name"), ", ".join(self.buttons) or "none"))
            return b.press(cmd.get("ms", 150))
        if op == "flash":
            import simflash
            return simflash.set_size(cmd.get("size"))
        if op == "state":
            return self.state()
        raise ValueError("unknown op %r" % op)

    def state(self):
        return {
            "carousels": {n: m.state() for n, m in self.carousels.items()},
            "locks": {n: m.state() for n, m in self.locks.items()},
            "sensors": {n: m.state() for n, m in self.sensors.items()},
            "scanner": {n: m.state() for n, m in self.scanners.items()}.get("scanner"),
            "buttons": {n: m.state() for n, m in self.buttons.items()},
            "violations": list(self.violations),
            "violation_count": self.violation_count,
        }


def install(board):
    """Make a fresh world for this board the one `machine` talks to."""
    _world[0] = World(board)
    return _world[0]


def world():
    if _world[0] is None:
        _world[0] = World(None)
    return _world[0]


def hard_exit(cause):
    """End this process the way a reset ends a board's run: at once, from
    any thread, with no cleanup."""
    os.system("kill -9 $PPID")
    time.sleep(10)


def now_ms():
    return time.ticks_ms()
