"""The whole kiosk fits the smallest board's heap through a (short) day.

The same scripted day as benchmarks/bench_controller_heap.py, shortened:
the kiosk (controller, sensors, climate, journal, MQTT link to a real
mosquitto, driven by a host that signs commands and acks events) runs under
-X heapsize=kiosk_host.mpy.heap_size() through a service session, restocks,
pickups, a temperature warning and an excursion. It must finish every
operation without a MemoryError, and the firmware's live heap after
gc.collect() must stay under the board budget (a capacity check; the
figures themselves are the benchmark's business). The same day in a heap
with room for only half the firmware's live data must fail with a
MemoryError: the limit is real and the check would notice a firmware that
outgrew it."""

from __future__ import annotations

import pytest

from day_support import DayError, KioskDay, Plan, trouble
from kiosk_host import mpy


def short_plan() -> Plan:
    return Plan(bins=2, day_s=0, climate=[[2, "cabinet", 26.0], [4, "cabinet", 31.0], [7, "cabinet", 22.0]])


def test_a_short_day_fits_the_smallest_board_heap(tmp_path):
    r = KioskDay(tmp_path / "fits", short_plan()).run()
    # The day really happened: every operation finished as scripted, with
    # no MemoryError (or any other exception), the link up all day.
    assert trouble(r) == [], (trouble(r), r["output"])
    o = r["outcomes"]
    assert len(o["restock"]) == len(o["pickup"]) == 2 and o["warnings"] >= 1, o
    assert r["opened"] == {"service": 2, "pickup": 2}, r["opened"]
    assert r["stock"] == {}, r["stock"]
    # Within the smallest board's budget: the VM was sized for it, and what
    # the firmware keeps live never comes near it.
    budget = mpy.board_heap()
    assert r["heap"] <= mpy.heap_size(), r["heap"]
    assert 0 < r["live_end"] <= r["peak_live"] < budget, (r["live_end"], r["peak_live"], budget)
    assert r["samples"] > 100, "the heap was sampled all day"
    # The limit is real: with room for half the live data the kiosk cannot
    # get through its day.
    starved = r["base"] + r["code"] + r["peak_live"] // 2
    with pytest.raises(DayError, match="MemoryError"):
        KioskDay(tmp_path / "starved", short_plan(), heap=starved).run()
