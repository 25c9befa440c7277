# Temperature/humidity sensors as one managed set: built from the board,
# sampled together (every conversion runs in parallel; the wait is an
# asyncio sleep), and judged over time. A bad read is tolerated; a sensor
# that fails N reads in a row is FAULTED: its value becomes None (never the
# last good number, never a placeholder) and one ("sensor_fault", name,
# code) event is returned for the journal. M good reads in a row clear it
# with one ("sensor_ok", name, None). Rules: docs/sensors.md.
import asyncio
from binascii import hexlify, unhexlify
from kiosk.hw.ds18b20 import DS18B20, SensorError, start_all

# Status values.
UNKNOWN = "unknown"     # not read yet
OK = "ok"
FAILING = "failing"     # under N failures in a row: last good value kept
FAULTED = "faulted"     # value None until M good reads in a row


class _Slot:
    """One named sensor and its verdict."""

    def __init__(self, name, kind, dev, res=12):
        self.name = name
        self.kind = kind
        self.dev = dev      # driver; None for a DS18B20 not bound to a ROM yet
        self.res = res
        self.value = self.rh = self.error = None   # error: last code, kept as history
        self.status = UNKNOWN
        self.fails = self.goods = self.fail_total = self.reads = 0


class _Bus:
    """The DS18B20 slots sharing one 1-Wire bus (one SKIP ROM CONVERT T)."""

    def __init__(self, ow):
        self.ow = ow
        self.slots = []

    def bind(self):
        """Give unbound slots the ROMs a bus search finds, in sorted ROM
        order, skipping ROMs already bound. Searches only when needed."""
        free = [s for s in self.slots if s.dev is None]
        if not free:
            return
        ow = self.ow
        taken = [s.dev.rom for s in self.slots if s.dev is not None]
        found = []
        for rom in ow.scan():
            rom = bytes(rom)
            if len(rom) == 8 and rom[0] == 0x28 and ow.crc8(rom) == 0 and rom not in taken:
                found.append(rom)
        found.sort()
        for s, rom in zip(free, found):
            s.dev = DS18B20(ow, rom, s.res)


class Sensors:
    def __init__(self, fail_after=3, ok_after=2):
        if fail_after < 1 or ok_after < 1:
            raise ValueError("fail_after and ok_after must be >= 1")
        self.fail_after = fail_after
        self.ok_after = ok_after
        self._slots = []
        self._buses = []
        self._busy = False

    def _add(self, slot):
        if slot.name in self.names():
            raise ValueError("duplicate sensor %r" % slot.name)
        self._slots.append(slot)

    def add_ds18b20(self, name, ow, rom=None, resolution=12):
        """rom: 8 bytes, or 16 hex digits in bus order (family code first,
        CRC last); None binds by bus search at the next sample."""
        if isinstance(rom, str):
            rom = unhexlify(rom)
        bus = None
        for b in self._buses:
            if b.ow is ow:
                bus = b
        if bus is None:
            bus = _Bus(ow)
            self._buses.append(bus)
        s = _Slot(name, "ds18b20", rom and DS18B20(ow, rom, resolution), resolution)
        self._add(s)
        bus.slots.append(s)

    def add_sht(self, name, kind, i2c, addr=0x44):
        from kiosk.hw import sht
        cls = {"sht4x": sht.SHT4x, "sht3x": sht.SHT3x}[kind]
        self._add(_Slot(name, kind, cls(i2c, addr)))

    # -- sampling -------------------------------------------------------------
    async def sample(self, before_read=None):
        """Start every conversion, sleep for the longest, read them all.
        Returns the events, or () when nothing changed. One caller at a
        time: a second start would restart the conversions. before_read, a
        coroutine function, is awaited before the reads (which block the
        loop): the controller's motion quiet window."""
        if self._busy:
            raise RuntimeError("sensor sample already running")
        self._busy = True
        try:
            wait = 0
            for bus in self._buses:
                bus.bind()
                for s in bus.slots:
                    if s.dev:
                        s.dev.prepare()
                t = start_all(bus.ow)
                for s in bus.slots:
                    if s.dev and t is not None:
                        s.dev.mark_started(t)
                        wait = max(wait, s.dev.wait_ms)
            for s in self._slots:
                if s.kind != "ds18b20" and s.dev.start():
                    wait = max(wait, s.dev.measure_ms)
            if wait:
                await asyncio.sleep_ms(wait)
            if before_read:
                await before_read()
            ev = None
            for s in self._slots:
                try:
                    if s.dev is None:
                        raise SensorError("absent")
                    v = s.dev.read()
                except SensorError as e:
                    ev = self._bad(s, e.code, ev)
                except OSError:
                    ev = self._bad(s, "bus", ev)
                else:
                    if s.kind == "ds18b20":
                        ev = self._good(s, v, None, ev)
                    else:
                        ev = self._good(s, v[0], v[1], ev)
            return ev or ()
        finally:
            self._busy = False

    def _good(self, s, c, rh, ev):
        s.fails = 0
        s.goods += 1
        s.reads += 1
        if s.status == FAULTED:
            if s.goods < self.ok_after:
                return ev
            ev = ev or []
            ev.append(("sensor_ok", s.name, None))
        s.status = OK
        s.value = c
        s.rh = rh
        return ev

    def _bad(self, s, code, ev):
        s.goods = 0
        s.fails += 1
        s.fail_total += 1
        s.error = code
        if s.status == FAULTED:
            return ev
        if s.fails < self.fail_after:
            s.status = FAILING
            return ev
        s.status = FAULTED
        s.value = s.rh = None
        ev = ev or []
        ev.append(("sensor_fault", s.name, code))
        return ev

    # -- reporting ------------------------------------------------------------
    def names(self):
        return [s.name for s in self._slots]

    def values(self):
        """{name: (celsius or None, rh or None)}; None while faulted."""
        return {s.name: (s.value, s.rh) for s in self._slots}

    def faults(self):
        """{name: code} of the sensors currently faulted."""
        return {s.name: s.error for s in self._slots if s.status == FAULTED}

    def bindings(self):
        """{name: ROM hex or None} of the DS18B20s, e.g. for the kiosk config."""
        return {s.name: s.dev and hexlify(s.dev.rom).decode()
                for s in self._slots if s.kind == "ds18b20"}

    def state(self, name=None):
        """One sensor's state dict, or {name: state} for all."""
        out = {}
        for s in self._slots:
            out[s.name] = {
                "type": s.kind, "value": s.value, "rh": s.rh, "status": s.status,
                "error": s.error, "fails": s.fails, "fail_total": s.fail_total,
                "reads": s.reads,
            }
        return out if name is None else out[name]


def from_board(board, roms=None, fail_after=3, ok_after=2):
    """Every sensor the board lists, on buses made by kiosk.hw.hal. A DS18B20's
    ROM comes from `roms` (name -> hex, the kiosk config), else the board's
    "rom", else a bus search (sorted ROMs to board order)."""
    from kiosk.hw import hal
    mgr = Sensors(fail_after, ok_after)
    buses = board.get("buses") or {}
    made = {}
    for s in board.get("sensors") or []:
        name = s["name"]
        bus = made.get(s["bus"])
        if bus is None:
            cfg = buses[s["bus"]]
            bus = hal.onewire_bus(cfg) if cfg["type"] == "onewire" else hal.i2c_bus(cfg)
            made[s["bus"]] = bus
        if s["type"] == "ds18b20":
            rom = (roms or {}).get(name) or s.get("rom")
            mgr.add_ds18b20(name, bus, rom, s.get("resolution", 12))
        else:
            mgr.add_sht(name, s["type"], bus, s.get("address", 0x44))
    for b in mgr._buses:
        b.bind()
    return mgr
