# Boots a kiosk whose board allows only a 1 s watchdog, then behaves as the
# mode in argv asks: "healthy" runs normally, "dead_monitor" kills the task
# that keeps the hardware safe while the event loop goes on, "blocked" stalls
# the whole loop. The host test sees whether the watchdog reset the process.
import asyncio
import sys
import time
import kit

mode = sys.argv[1]


async def main():
    b = kit.board()
    b["wdt_max_ms"] = 1000
    app, w = kit.boot(b)
    print("BOOT", app.journal.boot, kit.journal_kinds(app.journal, "boot")[-1]["cause"])
    app.ctl.start()
    await asyncio.sleep_ms(1000)
    if mode == "dead_monitor":
        app.ctl._tasks[0].cancel()      # the monitor is the first task
    elif mode == "blocked":
        time.sleep_ms(3000)
    await asyncio.sleep_ms(4000)
    print("ALIVE")


asyncio.run(main())
