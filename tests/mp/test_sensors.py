# Temperature/humidity sensors against the simulated 1-Wire and I2C
# devices: DS18B20 and SHT4x/SHT3x decoding and rejection rules, and the
# manager's fault counting (a failing sensor ends as None plus one event,
# never as a plausible number), parallel conversions, steady heap.
# test_emulator_board needs KIOSK_REPO (the repository root).
import gc
import os
import time
from kiosk.hw import sensors as ks  # first: compiling needs the most free heap
from kiosk.hw.ds18b20 import DS18B20, SensorError, conversion_ms
import asyncio
import simworld
import sim_sensors
from kiosk.hw import hal

_BUSES = {
    "ow0": {"type": "onewire", "pin": "gpio20"},
    "i2c0": {"type": "i2c", "id": 0, "scl_pin": "gpio21", "sda_pin": "gpio22"},
}


def _ds(name, res=12):
    return {"name": name, "type": "ds18b20", "bus": "ow0", "resolution": res}


def _sht(name, kind="sht4x", addr=0x44):
    return {"name": name, "type": kind, "bus": "i2c0", "address": addr}


def _world(*cfgs):
    """(board, world) holding only these sensor models, without drift."""
    w = simworld.install(None)
    for i, s in enumerate(cfgs):
        w.sensors[s["name"]] = m = sim_sensors.make(w, s, _BUSES[s["bus"]], i)
        m.set(drift=0)
    return {"buses": _BUSES, "sensors": list(cfgs)}, w


def _code(fn):
    """The SensorError code fn() raises (fails if it returns a value)."""
    try:
        v = fn()
    except SensorError as e:
        return e.code
    raise AssertionError("no SensorError: %r" % (v,))


def _ow():
    return hal.onewire_bus(_BUSES["ow0"])


def _rounds(mgr, n):
    """n sample() rounds; the events of all of them."""
    ev = []
    for _ in range(n):
        ev.extend(asyncio.run(mgr.sample()))
    return ev


def _hex(rom):
    return "".join("%02x" % b for b in rom)


def test_ds18b20_power_on_stale_and_converted_values():
    _, w = _world(_ds("a"))
    dev = DS18B20(_ow(), w.sensors["a"].rom, 12)
    assert _code(dev.read) == "power_on"        # never converted
    dev.start()
    assert _code(dev.read) == "power_on"        # first conversion still running
    time.sleep_ms(conversion_ms(12))
    assert dev.read() == 22.0
    w.handle({"op": "sensor", "sensor": "a", "celsius": 23.4})
    dev.start()
    time.sleep_ms(100)
    assert _code(dev.read) == "not_ready"       # the old 22.0: CRC fine, but stale
    time.sleep_ms(650)
    assert abs(dev.read() - 23.4) <= 1 / 16


def test_ds18b20_rejects_no_power_crc_and_absent():
    _, w = _world(_ds("a", 9), _ds("b", 9))
    a, ow = w.sensors["a"], _ow()
    dev = DS18B20(ow, a.rom, 9)

    def cycle():
        dev.start()
        time.sleep_ms(94)
        return dev.read()

    for kind, code in (("sensor_no_power", "no_power"), ("sensor_crc", "crc")):
        a.set_fault(kind, True)
        assert _code(cycle) == code
        a.set_fault(kind, False)
        assert cycle() == 22.0
    DS18B20(ow, a.rom, 12).prepare()    # its resolution changed behind our back
    assert _code(cycle) == "power_on"   # noticed (the wait was too short) ...
    assert cycle() == 22.0 and a.resolution() == 9     # ... and rewritten
    a.set_fault("sensor_no_power", True)
    assert _code(cycle) == "no_power"
    assert a.sp[0] == 0xFF and a.sp[1] == 0x07      # 127.94 with a valid CRC
    a.set_fault("sensor_unplugged", True)
    assert dev.start()      # "b" answers the reset; 1-Wire has no ACK for a ROM
    assert _code(dev.read) == "absent"          # nobody sends: all 0xFF
    w.sensors["b"].set_fault("sensor_unplugged", True)
    assert not ow.reset() and _code(dev.read) == "absent"
    w.sensors["b"].set_fault("sensor_unplugged", False)
    ghost = DS18B20(ow, sim_sensors.make_rom(9, "ghost"), 9)
    assert _code(ghost.read) == "absent"
    a.set_fault("sensor_unplugged", False)      # a fresh power-up: 85.00 again
    a.set_fault("sensor_no_power", False)
    assert _code(dev.read) == "power_on"
    assert cycle() == 22.0
    for rom in (b"\x28\x01\x02\x03\x04\x05\x06\x07", b"\x10" + a.rom[1:]):
        try:
            DS18B20(ow, rom, 12)
        except ValueError:
            continue
        raise AssertionError("accepted ROM %r" % rom)


def test_ds18b20_negative_values_and_resolution_wait():
    assert [conversion_ms(r) for r in (9, 10, 11, 12)] == [94, 188, 375, 750]
    _, w = _world(_ds("a"))
    m, ow = w.sensors["a"], _ow()
    for res, c, want in ((12, -10.125, -10.125), (12, -0.5, -0.5), (11, -10.125, -10.125),
                         (10, -10.2, -10.25), (9, -10.3, -10.5), (9, 21.7, 21.5),
                         (12, -55.0, -55.0), (12, 125.0, 125.0)):
        m.set(celsius=c)
        dev = DS18B20(ow, m.rom, res)
        t0 = time.ticks_ms()
        assert dev.start() and m.resolution() == res
        time.sleep_ms(conversion_ms(res) - 30)
        assert m.converting(), res              # not done just before the time
        time.sleep_ms(30)
        assert dev.read() == want and not m.converting(), (res, c)
        assert time.ticks_diff(time.ticks_ms(), t0) < conversion_ms(res) + 50
    m.set(celsius=126.0)
    dev.start()
    time.sleep_ms(750)
    assert _code(dev.read) == "range"


class _FakeI2C:
    """Answers every read with fixed bytes (known vectors, not the sim)."""

    def __init__(self, data):
        self.data = data

    def writeto(self, addr, buf):
        pass

    def readfrom_into(self, addr, buf):
        buf[:] = self.data


def test_sht_crc_and_formulas_on_known_vectors():
    from kiosk.hw.sht import SHT4x, SHT3x, crc8
    assert crc8(b"\xbe\xef", 0) == 0x92         # the datasheet's example
    assert _ow().crc8(b"123456789") == 0xA1      # CRC-8/MAXIM check value

    def word(hi, lo):
        return bytes((hi, lo, crc8(bytes((hi, lo)), 0)))

    # St 0x6666 -> 25.0 C; Srh 0x8000 -> SHT4x 56.5 %, SHT3x 50.0 %;
    # St 0x3333 -> -10.0 C; Srh 0x0010 on an SHT4x clips to 0 %.
    for cls, raw, c, rh in ((SHT4x, word(0x66, 0x66) + word(0x80, 0), 25.0, 56.5),
                            (SHT3x, word(0x66, 0x66) + word(0x80, 0), 25.0, 50.0),
                            (SHT4x, word(0x33, 0x33) + word(0, 0x10), -10.0, 0.0)):
        dev = cls(_FakeI2C(raw))
        dev.start()
        v = dev.read()
        assert abs(v[0] - c) < 0.01 and abs(v[1] - rh) < 0.01, (cls, v)
        bad = bytearray(raw)
        bad[4] ^= 0x01
        dev = cls(_FakeI2C(bad))
        dev.start()
        assert _code(dev.read) == "crc"


def _sht_case(kind):
    from kiosk.hw import sht
    _, w = _world(_sht("c", kind, 0x45))
    m = w.sensors["c"]
    dev = {"sht4x": sht.SHT4x, "sht3x": sht.SHT3x}[kind](hal.i2c_bus(_BUSES["i2c0"]), 0x45)
    for c, rh in ((22.0, 45.0), (-20.5, 10.0), (4.25, 95.5), (60.0, 0.0), (-39.0, 100.0)):
        m.set(celsius=c, humidity=rh)
        assert dev.start()
        assert _code(dev.read) == "not_ready"   # NACK: still measuring
        time.sleep_ms(dev.measure_ms)
        v = dev.read()
        assert abs(v[0] - c) < 0.01 and abs(v[1] - rh) < 0.01, (kind, v)
        assert _code(dev.read) == "absent"      # one result per start
    for kind, code in (("sensor_crc", "crc"), ("sensor_unplugged", "absent")):
        m.set_fault(kind, True)
        assert dev.start() == (code == "crc")   # unplugged: the address NACKs
        time.sleep_ms(dev.measure_ms)
        assert _code(dev.read) == code
        m.set_fault(kind, False)
    dev.start()
    time.sleep_ms(dev.measure_ms)
    assert abs(dev.read()[0] - -39.0) < 0.01


def test_sht4x_decodes_and_rejects():
    _sht_case("sht4x")


def test_sht3x_decodes_and_rejects():
    _sht_case("sht3x")


def test_manager_every_fault_kind_faults_once_and_recovers():
    faults = (("a", "sensor_unplugged", "absent"), ("b", "sensor_crc", "crc"),
              ("c", "sensor_no_power", "no_power"), ("d", "sensor_unplugged", "absent"),
              ("e", "sensor_crc", "crc"))
    board, w = _world(_ds("a", 9), _ds("b", 9), _ds("c", 9), _sht("d"), _sht("e", "sht3x", 0x45))
    mgr = ks.from_board(board, fail_after=3, ok_after=2)
    assert _rounds(mgr, 2) == []
    for n, (c, rh) in mgr.values().items():
        assert abs(c - 22.0) < 0.01 and mgr.state(n)["status"] == "ok", n
    for n, kind, _ in faults:
        w.handle({"op": "fault", "kind": kind, "target": n})
    assert _rounds(mgr, 2) == []
    for n, _, code in faults:
        st = mgr.state(n)
        assert st["status"] == "failing" and st["error"] == code and st["value"] > 21, st
    ev = []
    for _ in range(4):
        ev += _rounds(mgr, 1)
        for n, _, _ in faults:
            assert mgr.values()[n] == (None, None) and mgr.state(n)["status"] == "faulted", n
    assert sorted(ev) == sorted(("sensor_fault", n, c) for n, _, c in faults), ev
    assert mgr.faults() == {n: c for n, _, c in faults}
    for n, kind, _ in faults:
        w.handle({"op": "fault", "kind": kind, "target": n, "on": False})
        w.sensors[n].set(celsius=18.5)
    # ok_after=2 good reads clear a fault; a replugged DS18B20 reads 85.00 first.
    assert _rounds(mgr, 1) == []
    ev = _rounds(mgr, 1)
    assert ev == [("sensor_ok", n, None) for n in "bcde"] and mgr.values()["a"] == (None, None), ev
    ev = _rounds(mgr, 2)
    assert ev == [("sensor_ok", "a", None)], ev
    for n, (c, rh) in mgr.values().items():
        assert abs(c - 18.5) < 0.01 and mgr.state(n)["status"] == "ok", n


def test_manager_noisy_sensor_never_reports_a_bad_value():
    board, w = _world(_ds("a", 9), _ds("b", 9), _sht("c"))
    w.sensors["a"].set(celsius=-7.5)
    w.sensors["c"].set(celsius=31.0, humidity=60.0)
    for n in "ac":
        w.handle({"op": "fault", "kind": "sensor_noisy", "target": n})
    mgr = ks.from_board(board, fail_after=3)
    ok = 0
    for _ in range(40):
        _rounds(mgr, 1)
        v = mgr.values()
        a, c = v["a"][0], v["c"]
        assert a is None or abs(a - -7.5) <= 0.5, v     # 9 bit: 0.5 C steps
        assert c[0] is None or (abs(c[0] - 31.0) < 0.01 and abs(c[1] - 60.0) < 0.01), v
        assert v["b"] == (22.0, None), v
        ok += "faulted" not in (mgr.state("a")["status"], mgr.state("c")["status"])
    sa, sc = mgr.state("a"), mgr.state("c")
    assert sa["fail_total"] >= 4 and sc["fail_total"] >= 4, (sa, sc)     # noise did happen
    assert sa["error"] == sc["error"] == "crc"
    assert ok >= 28, ok     # one bad read is common, three in a row are rare


def test_manager_binds_roms_by_scan_config_and_late_plug():
    cfgs = [_ds("s%d" % i, 9) for i in range(4)]
    board, w = _world(*cfgs)
    roms = [w.sensors["s%d" % i].rom for i in range(4)]
    got = ks.from_board(board).bindings()
    assert [got["s%d" % i] for i in range(4)] == [_hex(r) for r in sorted(roms)], got
    # A ROM from the kiosk config (roms=) or the board wins over the search.
    cfgs[1]["rom"] = _hex(roms[0])
    w.sensors["s3"].set_fault("sensor_unplugged", True)
    mgr = ks.from_board(board, roms={"s2": _hex(roms[1])})
    assert mgr.bindings() == {"s0": _hex(roms[2]), "s1": _hex(roms[0]),
                              "s2": _hex(roms[1]), "s3": None}, mgr.bindings()
    assert _rounds(mgr, 1) == [] and mgr.state("s3")["error"] == "absent"
    w.sensors["s3"].set_fault("sensor_unplugged", False)
    _rounds(mgr, 1)         # found by the next search, configured and read
    assert mgr.bindings()["s3"] == _hex(roms[3])
    assert mgr.values()["s3"] == (22.0, None) and mgr.state("s3")["status"] == "ok"


def test_manager_converts_in_parallel_without_blocking():
    board, w = _world(_ds("a", 11), _ds("b", 11), _ds("c", 11), _sht("d"), _sht("e", "sht3x", 0x45))
    mgr = ks.from_board(board)
    ticks = [0]

    async def ticker():
        while True:
            ticks[0] += 1
            await asyncio.sleep_ms(5)

    async def main():
        t = asyncio.create_task(ticker())
        t0 = time.ticks_ms()
        ev = await mgr.sample()
        dt = time.ticks_diff(time.ticks_ms(), t0)
        t.cancel()
        return ev, dt

    ev, dt = asyncio.run(main())
    # Serial conversions would take 3 * 375 + 9 + 16 ms.
    assert 375 <= dt < 500, dt
    assert ticks[0] >= 40, ticks    # the loop kept running during the wait
    assert ev == () and all(abs(v[0] - 22.0) < 0.01 for v in mgr.values().values())


def test_sim_world_verbs_scan_and_drift():
    _, w = _world(*([_ds("t%d" % i, 9) for i in range(6)] + [_sht("c")]))
    st = w.handle({"op": "sensor", "sensor": "c", "celsius": 5, "humidity": 80, "drift": 0.5})
    assert (st["celsius"], st["humidity"], st["drift"], st["faults"], st["reads"]) == (5.0, 80.0, 0.5, [], 0)
    st = w.handle({"op": "sensor", "sensor": "t0", "celsius": -3})
    assert st["celsius"] == -3.0 and st["humidity"] is None and st["resolution"] == 12, st
    for bad in ({"op": "sensor", "sensor": "t0", "humidity": 50},
                {"op": "sensor", "sensor": "c", "humidity": 150},
                {"op": "fault", "kind": "sensor_no_power", "target": "c"}):
        try:
            w.handle(bad)
        except ValueError:
            continue
        raise AssertionError("accepted %r" % bad)
    assert sorted(w.handle({"op": "fault", "kind": "sensor_noisy"})["targets"]) == ["c"] + ["t%d" % i for i in range(6)]
    assert w.handle({"op": "state"})["sensors"]["c"]["faults"] == ["sensor_noisy"]
    m = w.sensors["c"]
    assert abs(m.now_c() - 5.0) <= 0.5      # a slow wobble within its amplitude
    m.set(drift=0)
    assert m.now_c() == 5.0
    # The ROM search finds exactly the present devices.
    ow = _ow()
    roms = sorted(w.sensors["t%d" % i].rom for i in range(6))
    assert len(set(roms)) == 6 and all(r[0] == 0x28 and ow.crc8(r) == 0 for r in roms)
    assert sorted(bytes(r) for r in ow.scan()) == roms
    w.sensors["t2"].set_fault("sensor_unplugged", True)
    assert sorted(bytes(r) for r in ow.scan()) == [r for r in roms if r != w.sensors["t2"].rom]
    for i in range(6):
        w.sensors["t%d" % i].set_fault("sensor_unplugged", True)
    assert ow.scan() == []


def _heap_growth(cfgs, n, toggle):
    """Heap kept after n sample() rounds, measured after a warm-up cycle
    (first uses allocate once, e.g. inside asyncio)."""
    board, w = _world(*cfgs)
    mgr = ks.from_board(board)
    for i in range(20 + n):
        if i == 20:
            gc.collect()
            before = gc.mem_alloc()
        if i % 10 == 0:     # faults come and go: the event path runs too
            w.sensors[toggle].set_fault("sensor_crc", i % 20 == 0)
        asyncio.run(mgr.sample())
    gc.collect()
    grew = gc.mem_alloc() - before
    assert mgr.state(toggle)["fail_total"] >= n // 2
    return grew


def test_heap_steady_over_200_sht_rounds():
    grew = _heap_growth((_sht("d"), _sht("e", "sht3x", 0x45)), 200, "e")
    assert grew <= 256, grew


def test_heap_steady_over_40_ds18b20_rounds():
    grew = _heap_growth((_ds("a", 9), _ds("b", 9), _sht("d")), 40, "a")
    assert grew <= 256, grew


def test_emulator_board():
    from kiosk.hw import board
    b = board.load(os.getenv("KIOSK_REPO") + "/boards/emulator.json")
    w = simworld.install(None)
    for i, s in enumerate(b["sensors"]):
        w.sensors[s["name"]] = sim_sensors.make(w, s, b["buses"][s["bus"]], i)
    mgr = ks.from_board(b)
    _rounds(mgr, 1)
    st = mgr.state()
    assert sorted(st) == sorted(s["name"] for s in b["sensors"]), st
    for s in st.values():
        assert s["status"] == "ok" and abs(s["value"] - 22.0) <= 0.2, st    # drift 0.1
    assert abs(st["cabinet"]["rh"] - 45.0) < 0.01
