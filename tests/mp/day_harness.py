# A whole kiosk through a scripted day, measuring its heap. Run by
# benchmarks/bench_controller_heap.py and tests/test_controller_heap.py
# (host side: tests/day_support.py) under -X heapsize=kiosk_host.mpy.heap_size(),
# in a flash folder holding day.json:
#   {"config": {config.json fields}, "climate": [[after_s, sensor, celsius], ...]}
#
# Boots App (controller and MQTT link) as main.py does, with a technician
# and a patient who open each door the moment it is unlocked, and plays the
# temperature schedule. The host drives the day through the broker (signed
# commands, acks, clear_excursion) and ends it with a line "end" on stdin.
#
# Heap, from the VM's view (gc.mem_alloc()):
#   base  the simulated world, asyncio and this harness, before any firmware
#         module is imported (no board carries these)
#   code  every firmware module (and umqtt) imported: bytecode a production
#         board keeps frozen in flash (kiosk_host.mpy.code_overhead())
#   the firmware's data = what is allocated beyond base + code. Every 10 ms
#   a task reads gc.mem_alloc() (peak: live data plus the garbage made
#   since the previous sample; max_gap_ms says how far apart samples came),
#   runs gc.collect() and reads it again (live). Collecting that
#   often changes when garbage is freed, never what the firmware needs live;
#   without it the firmware's garbage fills any heap between collections and
#   the peak would only show the heap's size.
#
# Prints "BASE {...}" once the firmware is imported, "READY" once started,
# "DAY {...}" (figures in bytes, beyond base + code) at the end.
import gc
import json
import os
import sys
import select
import simworld
import kit
import asyncio

_TICK_MS = 10


def say(tag, obj=None):
    print(tag if obj is None else tag + " " + json.dumps(obj))


class Day:
    def __init__(self, plan):
        self.plan = plan
        b = kit.board()
        kit.provision(b, **plan["config"])
        self.w = simworld.install(b)
        gc.collect()
        self.base = gc.mem_alloc()
        self.code = self._import_firmware()
        self.peak = 0          # mem_alloc sampled every 10 ms
        self.peak_live = 0     # mem_alloc right after gc.collect()
        self.min_free = None
        self.samples = 0
        self.max_gap_ms = 0    # longest time between two samples (garbage builds up)
        self.opened = {}       # door -> times a person opened it
        self.ended = False

    def _import_firmware(self):
        """Import every firmware module now, as a board has them frozen."""
        import kiosk
        here = kiosk.__path__ if isinstance(kiosk.__path__, str) else kiosk.__path__[0]
        self._import_tree(here, "kiosk")
        import umqtt.simple
        gc.collect()
        return gc.mem_alloc() - self.base

    def _import_tree(self, folder, package):
        """Every module under folder, subpackages included."""
        for name in sorted(os.listdir(folder)):
            if name.endswith(".mpy") or name.endswith(".py"):
                try:
                    __import__(package + "." + name.rsplit(".", 1)[0])
                except ImportError:   # another port's backend (rp2 PIO, esp32 RMT)
                    pass
            elif "." not in name and name != "__pycache__":
                self._import_tree(folder + "/" + name, package + "." + name)

    def _note(self, live=False):
        a = gc.mem_alloc() - self.base - self.code
        if live:
            if a > self.peak_live:
                self.peak_live = a
        elif a > self.peak:
            self.peak = a
        f = gc.mem_free()
        if self.min_free is None or f < self.min_free:
            self.min_free = f
        return a

    async def meter(self):
        import time
        last = time.ticks_ms()
        while not self.ended:
            self._note()
            gc.collect()
            self._note(True)
            self.samples += 1
            now = time.ticks_ms()
            gap = time.ticks_diff(now, last)
            if gap > self.max_gap_ms:
                self.max_gap_ms = gap
            last = now
            await asyncio.sleep_ms(_TICK_MS)

    async def person(self, door, hold_ms):
        """Opens the door each time it is unlocked, holds it, shuts it."""
        lk = self.w.locks[door]
        while not self.ended:
            if not lk.energized() or not lk.door_closed:
                await asyncio.sleep_ms(20)
                continue
            await asyncio.sleep_ms(100)
            if self.w.handle({"op": "door", "door": door, "action": "open"})["ok"]:
                self.opened[door] = self.opened.get(door, 0) + 1
                await asyncio.sleep_ms(hold_ms)
                self.w.handle({"op": "door", "door": door, "action": "close"})

    async def labeller(self, ctl):
        """Scans each restock's package label when the kiosk asks for it."""
        done = None
        while not self.ended:
            op = ctl.op
            if op is not None and op.kind == "restock" and op.step == "scanning_label" and op.id != done:
                self.w.handle({"op": "scan", "text": op.args["order"]})
                done = op.id
            await asyncio.sleep_ms(50)

    async def climate(self, t0):
        import time
        for after_s, sensor, celsius in self.plan.get("climate", ()):
            wait = after_s * 1000 - time.ticks_diff(time.ticks_ms(), t0)
            if wait > 0:
                await asyncio.sleep_ms(wait)
            self.w.handle({"op": "sensor", "sensor": sensor, "celsius": celsius, "drift": 0})

    async def until_end(self):
        p = select.poll()
        p.register(sys.stdin, select.POLLIN)
        while True:
            if p.poll(0):
                line = sys.stdin.readline()
                if not line or line.strip() == "end":
                    return
            await asyncio.sleep_ms(50)

    async def main(self):
        import time
        from kiosk.app import App
        say("BASE", {"base": self.base, "code": self.code})
        meter = asyncio.create_task(self.meter())
        self._note()
        app = App()
        app.start()
        self._note()
        people = [asyncio.create_task(self.person("service", 1500)),
                  asyncio.create_task(self.person("pickup", 1200)),
                  asyncio.create_task(self.labeller(app.ctl))]
        clim = asyncio.create_task(self.climate(time.ticks_ms()))
        say("READY")
        await self.until_end()
        self.ended = True
        for t in people + [clim]:
            t.cancel()
        await asyncio.sleep_ms(50)
        gc.collect()
        live_end = self._note(True)
        ctl = app.ctl
        report = {
            "base": self.base, "code": self.code, "peak": self.peak, "peak_live": self.peak_live,
            "live_end": live_end, "min_free": self.min_free, "heap": gc.mem_free() + gc.mem_alloc(),
            "samples": self.samples, "max_gap_ms": self.max_gap_ms, "opened": self.opened,
            "journal": app.journal.stats(), "stock": ctl.stock.bins, "link_up": bool(app.link and app.link.up),
            "link": app.link.stats() if app.link else None, "violations": self.w.violations,
        }
        await app.stop()
        meter.cancel()
        say("DAY", report)


def main():
    with open("day.json") as f:
        plan = json.load(f)
    asyncio.run(Day(plan).main())


main()
