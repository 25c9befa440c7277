# Long-lived tasks under supervision, the way an RTOS task watchdog works:
# every task beats a heartbeat as it does its job, and the hardware
# watchdog is fed only while every heartbeat is fresh, so a task that hangs
# (alive but stuck) resets the board. A task that dies (an exception: a
# MemoryError in the sampler, an OSError from a full flash) is reported
# and started again after a pause that doubles with each death, so one bad
# moment never ends temperature monitoring or the link for good. A critical
# task (the monitor that keeps doors and motors safe) that keeps dying is
# given up: it goes stale and the watchdog resets the board rather than
# run without it.
#
# The link is handed the supervisor by the app and adds its own tasks; it
# never imports this module.
import asyncio
import time
from micropython import const

_STEADY_MS = const(60000)   # alive this long since its last start: the pauses start over
_GIVE_UP = const(5)         # deaths of a critical task within _STEADY_MS before it is given up


class Task:
    """One supervised task. Its coroutine calls beat() whenever it has done
    a round of its work; beat() does not allocate."""

    def __init__(self, name, run, silence_ms, backoff_ms, critical):
        self.name = name
        self.run = run                  # run(task) -> the coroutine
        self.silence_ms = silence_ms    # longer than this without a beat: stale
        self.backoff_ms = backoff_ms    # (first pause, longest pause) before a restart
        self.critical = critical
        self.last = time.ticks_ms()
        self.resting = False            # dead, waiting to be started again
        self.ended = False              # returned: its work is over
        self.given_up = False
        self.deaths = 0
        self.handle = None              # the asyncio task keeping it alive

    def beat(self):
        self.last = time.ticks_ms()

    def fresh(self, now):
        if self.given_up:
            return False
        return self.resting or self.ended or time.ticks_diff(now, self.last) < self.silence_ms


class Supervisor:
    def __init__(self, on_death, healthy_ms=2000):
        """on_death(name, exception, pause_ms) reports a death (the
        controller journals it as a fault); healthy_ms: how often the
        watchdog is fed at most twice over."""
        self.on_death = on_death
        self.tasks = []
        self.wdt = None
        self.period_ms = max(1, healthy_ms // 2)
        self.running = False
        self._feeder = None

    def add(self, name, run, silence_ms, backoff_ms=(1000, 60000), critical=False):
        """Supervise run(task): it must beat at least every silence_ms.
        Added while running, it starts at once."""
        t = Task(name, run, silence_ms, backoff_ms, critical)
        self.tasks.append(t)
        if self.running:
            t.handle = asyncio.create_task(self._keep(t))
        return t

    def start(self, wdt=None):
        """Start every task, and feed wdt (machine.WDT) while all are fresh."""
        self.wdt = wdt
        self.running = True
        for t in self.tasks:
            t.beat()
            t.handle = asyncio.create_task(self._keep(t))
        self._feeder = asyncio.create_task(self._feed())

    def stop(self):
        self.running = False
        for t in self.tasks:
            if t.handle is not None:
                t.handle.cancel()
                t.handle = None
        if self._feeder is not None:
            self._feeder.cancel()
            self._feeder = None

    async def _keep(self, t):
        pause = t.backoff_ms[0]
        recent = 0
        while self.running:
            started = time.ticks_ms()
            t.last = started
            t.resting = t.ended = False
            try:
                await t.run(t)
                t.ended = True          # returned: its work is over (a stop)
                return
            except Exception as e:      # CancelledError is not an Exception here
                err = e
            now = time.ticks_ms()
            t.deaths += 1
            if time.ticks_diff(now, started) >= _STEADY_MS:
                pause = t.backoff_ms[0]
                recent = 0
            recent += 1
            if t.critical and recent >= _GIVE_UP:
                t.given_up = True
            try:
                self.on_death(t.name, err, pause)
            except Exception:           # reporting can fail too (no heap, full flash)
                pass
            if t.given_up:
                return
            t.resting = True
            await asyncio.sleep_ms(pause)
            pause = min(pause * 2, t.backoff_ms[1])

    def healthy(self, now=None):
        """Every task fresh."""
        if now is None:
            now = time.ticks_ms()
        for t in self.tasks:
            if not t.fresh(now):
                return False
        return True

    def stale(self):
        now = time.ticks_ms()
        return [t.name for t in self.tasks if not t.fresh(now)]

    async def _feed(self):
        while self.running:
            if self.wdt is not None and self.healthy():
                self.wdt.feed()
            await asyncio.sleep_ms(self.period_ms)

    def state(self):
        """{name: {"beat_ms", "deaths", "resting", "given_up"}} for reports."""
        now = time.ticks_ms()
        return {t.name: {"beat_ms": time.ticks_diff(now, t.last), "deaths": t.deaths,
                         "resting": t.resting, "given_up": t.given_up} for t in self.tasks}
