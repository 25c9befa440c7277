# Temperature records are dated by the host-corrected clock (kiosk/clock.py),
# not the board's own: neither board keeps the date across a reset and the
# ESP32 counts from 2000. Until the host has given the time, samples still
# raise alarms but are not put in a day's statistics (that day would be
# 2000-01-01 or 2021-01-01, and would close the real one).
import asyncio
import kit

HOST_T = 1800000000          # the host's time in its first signed ack (Unix s)
DAY = 86400


async def _hot_cabinet(app, w, ms=8000):
    w.handle({"op": "sensor", "sensor": "cabinet", "celsius": 31.5, "drift": 0})
    app.ctl.start()
    ok = await kit.wait_for(lambda: any(t.get("ev") == "excursion_start"
                                        for t in kit.journal_kinds(app.journal, "temp")), ms)
    await app.ctl.stop()
    assert ok, "no excursion journaled"
    return [t for t in kit.journal_kinds(app.journal, "temp") if t.get("ev") == "excursion_start"][0]


async def _dated():
    from kiosk import clock
    app, w = kit.boot(policies={"sample_period_s": 1})
    assert clock.adjust(HOST_T) != 0
    start = await _hot_cabinet(app, w)
    assert abs(start["start"] - HOST_T) < 60, start
    assert abs(start["t"] - HOST_T) < 60, start
    assert app.climate.day_stats("cabinet")["day"] == HOST_T // DAY
    app.climate.save()
    app.journal.close()

    # A reset: the board's clock starts over and the host has not spoken yet.
    clock._off[0] = 0
    clock._synced[0] = False
    app, w = kit.boot(policies={"sample_period_s": 1})
    assert app.climate.day_stats("cabinet")["day"] == HOST_T // DAY   # loaded from flash
    w.handle({"op": "sensor", "sensor": "cabinet", "celsius": 31.5, "drift": 0})
    app.ctl.start()
    assert await kit.wait_for(lambda: app.sensors.state("cabinet")["reads"] >= 3, 8000)
    await app.ctl.stop()
    assert not clock.synced()
    s = app.climate.day_stats("cabinet")
    assert s["day"] == HOST_T // DAY, s            # still the host's day, not 1970, 2000 or 2021
    days = [t for t in kit.journal_kinds(app.journal, "temp") if t.get("ev") == "day"]
    assert days == [], days                        # nothing closed the real day


def test_climate_is_dated_by_the_host_corrected_clock():
    asyncio.run(_dated())
