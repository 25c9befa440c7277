# A kiosk with only its link: Journal + Link + a stand-in controller that
# records the commands it is given. Run by tests/test_link_mqtt.py and
# benchmarks/bench_link.py under the unix micropython, in a directory that
# holds config.json (and optionally harness.json: {"link": {Link kwargs},
# "journal": {Journal kwargs}}). Driven by JSON lines on stdin; answers with
# JSON lines on stdout:
#   {"do": "events", "n": N, "every_ms": M}  journal N test events
#   {"do": "stats"}                           print a stats line
#   {"do": "network", "up": false}            cut (or restore) the emulated Wi-Fi;
#       also "route": "ok"|"refused"|"blackhole", "rtt_ms": N (sim/socket.py)
#   {"do": "garbage", "ms": M}                bytes the process allocates per
#       second over M ms while nothing happens (the link idle, gc off)
#   {"do": "reset"}                           zero the stall figures
#   {"do": "quit"}                            stop the link (death) and exit
import sys
import gc
import json
import time
import select
import asyncio
from kiosk import config
from kiosk.core.journal import Journal
from kiosk.link.session import Link

PROBE_MS = 10


class Ctl:
    """Just enough of kiosk.core.controller for the link."""

    def __init__(self, journal):
        self.journal = journal
        self.listeners = []
        self.reply = None
        self.submitted = 0
        self.ids = []

    def event(self, kind, fields):
        seq = self.journal.append(kind, fields)
        for cb in self.listeners:
            cb(seq)
        return seq

    def submit(self, op_id, kind, args, by=None):
        self.submitted += 1
        self.ids.append(op_id)
        if len(self.ids) > 16:
            self.ids.pop(0)
        self.reply(op_id, "queued", {})
        self.event("op", {"id": op_id, "op": kind, "state": "succeeded"})
        self.reply(op_id, "succeeded", {"args": args})
        return "queued"

    def snapshot(self):
        return {"bins": {"1": "rx-1001", "2": None}, "doors": {"pickup": "closed"},
                "locks": {"pickup": "locked"}, "sensors": {"shelf": {"value": 4.25}},
                "alarms": []}


def out(obj):
    print(json.dumps(obj))


class Harness:
    def __init__(self):
        opts = {}
        try:
            with open("harness.json") as f:
                opts = json.load(f)
        except OSError:
            pass
        self.cfg = config.load("config.json")
        self.j = Journal("journal", **opts.get("journal", {}))
        self.ctl = Ctl(self.j)
        self.ctl.event("boot", {"fw": "test"})
        self.link = Link(self.cfg, self.j, self.ctl, "test", "emulator",
                         readings=lambda: {"shelf": (4.25, 45.5)}, **opts.get("link", {}))
        self.late_us = 0
        self.n_events = 0
        self.quiet = False

    async def probe(self):
        """The control loop's view: how late does a 10 ms timer fire?"""
        t = time.ticks_us()
        while True:
            await asyncio.sleep_ms(PROBE_MS)
            now = time.ticks_us()
            late = time.ticks_diff(now, t) - PROBE_MS * 1000
            if late > self.late_us:
                self.late_us = late
            t = now

    async def events(self, n, every_ms):
        for i in range(n):
            self.n_events += 1
            self.ctl.event("test", {"i": self.n_events})
            if every_ms:
                await asyncio.sleep_ms(every_ms)
            elif i % 8 == 7:
                await asyncio.sleep_ms(0)
        out({"events_done": self.n_events, "last_seq": self.j.last_seq})

    def stats(self):
        gc.collect()
        return {"stats": self.link.stats(), "submitted": self.ctl.submitted, "ids": self.ctl.ids,
                "acked": self.j.acked, "last_seq": self.j.last_seq, "boot": self.j.boot,
                "mem_alloc": gc.mem_alloc(), "mem_free": gc.mem_free(), "late_us": self.late_us,
                "refused": self.link.gate.counts, "rx_msgs": self.link.rx_msgs,
                "t_ms": time.ticks_ms()}

    async def garbage(self, ms):
        """Heap bytes allocated per second while the kiosk idles: the
        collector is off, this harness's own loops sleep, only the link's
        tick runs."""
        self.quiet = True
        await asyncio.sleep_ms(50)
        gc.collect()
        gc.disable()
        a0 = gc.mem_alloc()
        t0 = time.ticks_ms()
        await asyncio.sleep_ms(ms)
        a1 = gc.mem_alloc()
        dt = time.ticks_diff(time.ticks_ms(), t0)
        gc.enable()
        self.quiet = False
        return (a1 - a0) * 1000 // dt

    async def control(self):
        p = select.poll()
        p.register(sys.stdin, select.POLLIN)
        while True:
            if self.quiet:
                await asyncio.sleep_ms(20)
                continue
            ready = False
            for _ in p.ipoll(0):
                ready = True
            if not ready:
                await asyncio.sleep_ms(5)
                continue
            line = sys.stdin.readline()
            if not line:
                await asyncio.sleep_ms(50)
                continue
            cmd = json.loads(line)
            do = cmd.get("do")
            if do == "events":
                asyncio.create_task(self.events(cmd.get("n", 1), cmd.get("every_ms", 0)))
            elif do == "stats":
                out(self.stats())
            elif do == "network":
                import simworld
                c = {"op": "network"}
                for k in ("up", "route", "rtt_ms"):
                    if k in cmd:
                        c[k] = cmd[k]
                out({"network": simworld.world().handle(c)})
            elif do == "garbage":
                out({"garbage_bps": await self.garbage(cmd.get("ms", 2000))})
            elif do == "reset":
                self.late_us = 0
                self.link.max_stall_us = 0
                out({"reset": True})
            elif do == "quit":
                self.link.stop()
                self.j.close()
                out({"quit": True})
                return

    async def main(self):
        self.link.start()
        asyncio.create_task(self.probe())
        out({"started": True, "boot": self.j.boot, "last_seq": self.j.last_seq,
             "acked": self.j.acked, "t_ms": time.ticks_ms()})
        await self.control()


asyncio.run(Harness().main())
