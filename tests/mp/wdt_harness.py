# Boots a kiosk whose board allows only a 1 s watchdog, then behaves as the
# mode in argv asks: "healthy" runs normally, "dead_monitor" kills the task
# that keeps the hardware safe while the event loop goes on, "blocked" stalls
# the whole loop, "hung_sampler" leaves the temperature sampler stuck in a
# read that never ends, "boot_fails" makes the controller's constructor fail
# (a full flash) under kiosk.app.main, "energised_blocked" energises a lock
# and then holds the CPU in C for 3 s (a flash erase or DNS lookup gone
# long). The host test sees whether the watchdog reset the process.
import asyncio
import sys
import time
import kit

mode = sys.argv[1]


def _board():
    b = kit.board()
    b["wdt_max_ms"] = 1000
    return b


async def main():
    app, w = kit.boot(_board(), policies={"sample_period_s": 1})
    print("BOOT", app.journal.boot, kit.journal_kinds(app.journal, "boot")[-1]["cause"])
    if mode == "hung_sampler":
        async def never(*args):
            await asyncio.Event().wait()
        app.ctl.sensors.sample = never
    app.start()
    await asyncio.sleep_ms(1000)
    if mode == "dead_monitor":
        for t in app.ctl.supervisor.tasks:
            if t.name == "monitor":
                t.handle.cancel()
    elif mode == "blocked":
        time.sleep_ms(3000)
    elif mode == "energised_blocked":
        import port
        app.locks["pickup"].unlock(60000)
        print("ENERGISED", w.locks["pickup"].energized())
        port.stall(3000000)
    await asyncio.sleep_ms(10000 if mode == "hung_sampler" else 4000)
    print("ALIVE")


def boot_fails():
    from kiosk.core import controller
    from kiosk import app as appmod

    def full(*args, **kw):
        raise OSError(28)   # ENOSPC: the flash is full

    controller.Controller.__init__ = full
    kit.provision(_board())
    w = kit.simworld.install(_board())
    r = appmod.main()
    print("MAIN", r)
    time.sleep_ms(3000)
    safe = all(not lk.energized() for lk in w.locks.values()) and not w.carousels["A"].enabled
    print("ALIVE", "safe" if safe else "UNSAFE")


if mode == "boot_fails":
    boot_fails()
else:
    asyncio.run(main())
