# The controller's background tasks: the monitor that keeps doors and motor
# safe, the temperature sampler and the desk (code scanner and buttons).
# Each is `async def name(ctl, task)`, started by Controller.start() under
# kiosk.core.supervisor, and calls task.beat() after each round of its
# work: the watchdog is fed only while every task beats.
import asyncio
import time
from micropython import const
from kiosk import clock
from kiosk.contract import K_BUTTON, K_DOOR, K_TEMP

_MONITOR_MS = const(20)
_DESK_MS = const(50)
DESK_SILENCE_MS = 5000           # the desk beats every 50 ms; this long without a beat is a hang
_SAVE_EVERY_MS = const(600000)   # climate state to flash at least this often


async def monitor(ctl, task):
    """Every few ms: debounce the door and lock inputs, journal what they
    report, stop the carousel if a door stops being secure."""
    while not ctl.stopped:
        now = time.ticks_ms()
        for name, lk in ctl.locks.items():
            ev = lk.update(now)
            while ev is not None:
                ctl.event(K_DOOR, {"door": name, "ev": ev})
                ev = lk.next_event()
        if ctl.moving() and not ctl.doors_secure():
            ctl.stop_motion()
        task.beat()
        await asyncio.sleep_ms(_MONITOR_MS)


def sampler_silence_ms(ctl):
    """How long the sampler may go without a beat: a period's sleep, a
    round of conversions, and a round that waited for the self-test's."""
    return 2 * ctl.policies["sample_period_s"] * 1000 + 5000


async def sampler(ctl, task):
    """Sample every sensor on a fixed period; climate state is saved to
    flash every ten minutes and whenever an alarm changes. Samples are
    dated by the host-corrected clock; until the host has given the time
    they raise alarms but stay out of the days' statistics."""
    period = ctl.policies["sample_period_s"] * 1000
    saved = time.ticks_ms()
    while not ctl.stopped:
        t0 = time.ticks_ms()
        task.beat()
        await ctl.sample()
        now_s = clock.now()
        dated = clock.synced()
        changed = False
        for name, val in ctl.sensors.values().items():
            for ev in ctl.climate.add(name, val[0], val[1], now_s, ctl.stock.stocked, dated):
                ctl.event(K_TEMP, ev)
                changed = True
        if changed or time.ticks_diff(time.ticks_ms(), saved) > _SAVE_EVERY_MS:
            await ctl.quiet()           # a flash write: never during a move
            ctl.climate.save()
            saved = time.ticks_ms()
        left = period - time.ticks_diff(time.ticks_ms(), t0)
        await asyncio.sleep_ms(left if left > 0 else 0)


async def desk(ctl, task):
    """The patient's side of the kiosk, every 50 ms: what the code scanner
    sent (read without waiting: a line is handed on only once complete),
    the buttons (a press is journaled at most once per button_repeat_s
    each, so a held or hammered button cannot flood the journal), and the
    scans' timeouts and lockout."""
    scanner = ctl.scanner
    repeat = ctl.policies["button_repeat_s"] * 1000
    told = {}
    while not ctl.stopped:
        now = time.ticks_ms()
        if scanner is not None:
            line = scanner.poll(now)
            if line is not None:
                ctl.scans.read(line, ctl.in_service(), now)
        for name, b in ctl.buttons.items():
            if b.update(now):
                last = told.get(name)
                if last is None or time.ticks_diff(now, last) >= repeat:
                    told[name] = now
                    ctl.event(K_BUTTON, {"name": name, "presses": b.presses})
        ctl.scans.tick(now)
        task.beat()
        await asyncio.sleep_ms(_DESK_MS)
