# Supervised tasks: a task that dies is journaled and restarted with
# backoff, a task that hangs stops the watchdog's feeding, and the
# controller's own tasks (monitor, runner, sampler) live under it.
import asyncio
import gc
import time
import kit


class Dog:
    """Stands in for machine.WDT: counts the feeds."""

    def __init__(self):
        self.feeds = 0

    def feed(self):
        self.feeds += 1


async def _dying_sampler():
    app, w = kit.boot(policies={"sample_period_s": 1})
    ctl = app.ctl
    real = ctl.sensors.sample
    rounds = [0]

    async def flaky(*args):
        rounds[0] += 1
        if rounds[0] == 2:
            raise MemoryError("memory allocation failed, allocating 2048 bytes")
        return await real(*args)

    ctl.sensors.sample = flaky
    ctl.start()
    alive = await kit.wait_for(lambda: rounds[0] >= 4, 15000)
    await ctl.stop()
    assert alive, "temperature sampling ended for good after one MemoryError (%d rounds)" % rounds[0]
    died = [r for r in kit.journal_kinds(app.journal, "fault") if r.get("code") == "task_died"]
    assert len(died) == 1 and died[0]["task"] == "sampler", died
    assert "MemoryError" in died[0]["detail"], died
    assert "task_died" in ctl.faults


def test_a_sampler_that_dies_is_journaled_and_restarted():
    asyncio.run(_dying_sampler())


async def _backoff():
    from kiosk.core.supervisor import Supervisor
    deaths = []
    starts = []
    s = Supervisor(lambda name, err, wait: deaths.append((name, type(err).__name__, wait)), 400)

    async def crashy(task):
        starts.append(time.ticks_ms())
        task.beat()
        raise ValueError("bad input")

    s.add("crashy", crashy, 1000, backoff_ms=(50, 200))
    dog = Dog()
    s.start(dog)
    await asyncio.sleep_ms(900)
    s.stop()
    # Restarted again and again, each pause twice the last up to the cap.
    assert len(starts) >= 5, starts
    gaps = [time.ticks_diff(b, a) for a, b in zip(starts, starts[1:])]
    assert 40 <= gaps[0] < 120 and 90 <= gaps[1] < 180, gaps
    assert all(g >= 190 for g in gaps[2:]), gaps
    assert [d[2] for d in deaths[:4]] == [50, 100, 200, 200], deaths
    assert deaths[0][:2] == ("crashy", "ValueError")
    # Waiting to restart is not hanging: the watchdog was fed throughout.
    assert dog.feeds >= 3, dog.feeds


def test_a_dying_task_restarts_with_growing_pauses():
    asyncio.run(_backoff())


async def _hang():
    from kiosk.core.supervisor import Supervisor
    s = Supervisor(lambda *a: None, 400)
    stuck = asyncio.Event()

    async def beating(task):
        while True:
            task.beat()
            await asyncio.sleep_ms(20)

    async def hangs(task):
        task.beat()
        await asyncio.sleep_ms(300)
        await stuck.wait()          # never set: alive, but no longer working

    s.add("beating", beating, 300)
    s.add("hangs", hangs, 500)
    dog = Dog()
    s.start(dog)
    await asyncio.sleep_ms(400)
    fed = dog.feeds
    assert fed >= 1 and s.healthy()
    await asyncio.sleep_ms(900)
    assert not s.healthy() and s.stale() == ["hangs"], s.state()
    late = dog.feeds
    await asyncio.sleep_ms(500)
    assert dog.feeds == late, "fed while a task was stale"
    s.stop()


def test_a_hung_task_stops_the_watchdog_feeding():
    asyncio.run(_hang())


async def _critical():
    from kiosk.core.supervisor import Supervisor
    s = Supervisor(lambda *a: None, 400)

    async def broken(task):
        task.beat()
        raise OSError(5)

    s.add("monitor", broken, 300, backoff_ms=(10, 40), critical=True)
    s.start(Dog())
    await asyncio.sleep_ms(600)
    # A safety task that cannot stay alive is given up on: stale, so the
    # watchdog resets the board instead of running without it.
    assert not s.healthy() and s.stale() == ["monitor"], s.state()
    s.stop()


def test_a_critical_task_that_keeps_dying_is_given_up():
    asyncio.run(_critical())


def test_a_beat_does_not_allocate():
    from kiosk.core.supervisor import Supervisor
    s = Supervisor(lambda *a: None, 400)
    t = s.add("x", None, 1000)
    t.beat()
    gc.collect()
    before = gc.mem_alloc()
    for _ in range(200):
        t.beat()
        s.healthy()
    assert gc.mem_alloc() == before
