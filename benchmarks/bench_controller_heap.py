"""Heap of the whole kiosk through a scripted day, on the smallest board's budget.

    .venv/bin/python benchmarks/bench_controller_heap.py [--bins 8] [--day-s 180]

Boots the whole kiosk (App: controller, sensors, climate, journal and the
MQTT link against a mosquitto started here, with a host that signs commands
and acks events) under `-X heapsize=` kiosk_host.mpy.heap_size(), and plays
a day in fast time: one service session restocking the bins, as many
pickups, temperature sampled every second with a warning and an excursion
(cleared by the host), telemetry every 5 s. Every 10 ms tests/mp/day_harness.py reads
gc.mem_alloc(), runs gc.collect() and reads it again.

Prints (does not assert): the firmware's peak heap (live data plus the
garbage made since the previous sample), its peak and final live heap, the
VM's heap (-X heapsize), the board budget (the smallest free_heap in
boards/*.json) and the headroom, and the size of the firmware's .mpy files
(the flash they take; in RAM the imported bytecode takes more). Figures are the
firmware's data: the simulated world, asyncio and the firmware's bytecode
(frozen in flash on production boards) are measured in the VM first and
left out. On this 64-bit VM every object is larger than on a 32-bit board.
Then (unless --no-min-heap) it bisects for the smallest heap in which a
short day (2 bins, a warning and an excursion) still runs clean: what the
firmware really needs, garbage collection included.

Needs mosquitto and a built tree (make build).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from day_support import KioskDay, Plan, trouble  # noqa: E402
from kiosk_host import mpy, paths  # noqa: E402


def kib(n: int) -> str:
    return f"{n:7d} bytes ({n / 1024:6.1f} KiB)"


def mpy_files() -> tuple[int, int]:
    """(count, bytes) of the firmware's .mpy files in the build's manifest
    (umqtt in lib/ left out), as benchmarks/run_all.py counts them."""
    files = json.loads((paths.FIRMWARE_BUILD_DIR / "manifest.json").read_text(encoding="utf-8"))["files"]
    mine = [f["size"] for p, f in files.items() if p.endswith(".mpy") and not p.startswith("lib/")]
    return len(mine), sum(mine)


def short_day_ok(heap: int) -> bool:
    plan = Plan(bins=2, day_s=0, climate=[[2, "cabinet", 26.0], [4, "cabinet", 31.0], [7, "cabinet", 22.0]])
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return not trouble(KioskDay(Path(tmp), plan, heap=heap).run())
        except AssertionError:   # DayError, or the host waited in vain
            return False


def min_heap(fixed: int, step: int = 2048) -> tuple[int, int]:
    """Bisect the firmware's room (heap beyond fixed); (smallest clean, largest failing)."""
    lo, hi = 0, mpy.board_heap()
    if not short_day_ok(fixed + hi):
        return -1, hi
    while hi - lo > step:
        mid = (lo + hi) // 2
        if short_day_ok(fixed + mid):
            hi = mid
        else:
            lo = mid
    return hi, lo


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bins", type=int, default=8, help="bins restocked, then picked up")
    ap.add_argument("--day-s", type=float, default=180.0, help="length of the day in seconds")
    ap.add_argument("--no-min-heap", action="store_true", help="skip the search for the smallest heap")
    a = ap.parse_args()
    budget = mpy.board_heap()
    with tempfile.TemporaryDirectory() as tmp:
        r = KioskDay(Path(tmp), Plan(bins=a.bins, day_s=a.day_s)).run()
    o = r["outcomes"]
    print(f"day: {o['day_s']:.0f} s; {a.bins} restocks {sorted(set(o['restock']))}, "
          f"{a.bins} pickups {sorted(set(o['pickup']))}, {len(o['retries'])} retried (lock resting); "
          f"{o.get('warnings', 0)} warning(s), excursion cleared: {o.get('clear_excursion')}")
    j = r["journal"]
    print(f"     {o['events']} events received by the host, {o['telemetry']} telemetry messages; "
          f"journal: last seq {j['last_seq']}, acked {j['acked']}, {j['bytes']} bytes in {j['segments']} segment(s); "
          f"link up at the end: {r['link_up']}")
    print(f"VM heap (-X heapsize):            {kib(r['heap'])}")
    print(f"  simulated world + asyncio:      {kib(r['base'])}  (host probe: {mpy.sim_overhead()})")
    print(f"  firmware bytecode (imported):   {kib(r['code'])}  (host probe: {mpy.code_overhead()})")
    n, size = mpy_files()
    print(f"firmware .mpy files (flash, {n} modules): {kib(size)}")
    print(f"firmware heap, peak (live + garbage since last sample): {kib(r['peak'])}")
    print(f"firmware heap, peak live (after gc.collect()):         {kib(r['peak_live'])}")
    print(f"firmware heap, live at the end of the day:             {kib(r['live_end'])}")
    print(f"board budget (smallest free_heap in boards/):          {kib(budget)}")
    print(f"headroom under the budget at the peak:                 {kib(budget - r['peak'])}")
    print(f"headroom under the budget, peak live:                  {kib(budget - r['peak_live'])}")
    print(f"least free heap seen in the VM:                        {kib(r['min_free'])}")
    print(f"({r['samples']} samples, each followed by gc.collect(), at most {r['max_gap_ms']} ms apart)")
    bad = trouble(r)
    if bad:
        print("the day did not go as scripted: " + "; ".join(bad) + "\n" + r["output"], file=sys.stderr)
        return 1
    if not a.no_min_heap:
        fixed = r["base"] + r["code"]
        room, failed = min_heap(fixed)
        if room < 0:
            print("smallest heap for a short day: not found (it fails even with the full budget)")
            return 1
        print(f"smallest heap a short day runs clean in (-X heapsize): {fixed + room} bytes,")
        print(f"  i.e. for the firmware beyond world + code:       {kib(room)}, "
              f"{100 * room / budget:.0f} % of the budget (it fails with {failed} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
