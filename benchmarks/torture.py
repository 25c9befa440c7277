"""`make torture`: the long power-cut, outage, custody and firmware-update
runs (tests/torture.py says what is checked), with every count printed.
Exits non-zero on the first broken promise: an event lost or duplicated, a
pickup repeated, a door left unlocked, a safety violation in the simulated
world, a kiosk left on neither its old nor its new firmware, a firmware
switch in the middle of an operation.

    .venv/bin/python benchmarks/torture.py --cuts 500 --outages 100 --custody 50 --ota-cuts 72 --kiosks 4 --seed 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from torture import Problem, Rig, custody_run, ota_cut_run, outage_run, power_cut_run  # noqa: E402

SHOWN = ["power_cuts", "boots_checked", "outages", "outages_broker", "outages_bridge", "outages_broker_and_bridge",
         "outages_network", "orders_created", "restocks_requested", "codes_scanned", "temperature_changes",
         "pickups_released", "ops_cut_short", "events_checked", "orders_checked", "webhooks_checked", "events_lost",
         "pickups_repeated", "orders_dispensed_twice", "order_transitions_lost", "webhooks_lost",
         "doors_left_unlocked", "violations", "max_link_stall_us",
         "custody_ack_flood", "custody_corrupt", "custody_wipe", "custody_full_flash", "custody_recovery_cut",
         "junk_acks", "records_corrupted", "journals_wiped", "flash_filled", "recovery_boots_cut",
         "events_reported_lost", "events_duplicated",
         "ota_cuts_transfer", "ota_cuts_switch", "ota_cuts_switch_after_switching",
         "ota_cuts_trial", "ota_cuts_before", "ota_cuts_after",
         "ota_confirmed", "ota_rolled_back", "ota_transfer_confirmed", "ota_transfer_rolled_back",
         "ota_switch_confirmed", "ota_switch_rolled_back", "ota_trial_confirmed", "ota_trial_rolled_back",
         "ota_old_or_new", "ota_neither", "ota_failed", "switches_checked", "switches_mid_operation"]
ALWAYS = ("events_lost", "pickups_repeated", "orders_dispensed_twice", "order_transitions_lost", "webhooks_lost",
          "doors_left_unlocked", "violations")
CUSTODY_ALWAYS = ("events_lost", "events_duplicated", "pickups_repeated", "doors_left_unlocked", "violations")
OTA_ALWAYS = ALWAYS + ("ota_neither", "ota_failed", "switches_mid_operation")


def show(title: str, out: dict, seconds: float, always: tuple[str, ...] = ALWAYS) -> None:
    print(f"\n{title} ({seconds:.0f} s)")
    for k in SHOWN:
        if k in out or k in always:
            print(f"  {k:<28} {out.get(k, 0)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cuts", type=int, default=500, help="power cuts in all (spread over the kiosks)")
    p.add_argument("--outages", type=int, default=100, help="broker/bridge/network outages")
    p.add_argument("--custody", type=int, default=50,
                   help="custody faults (ack floods, corrupt records, wiped journals, full flash, recovery-boot cuts)")
    p.add_argument("--ota-cuts", type=int, default=72,
                   help="power cuts during firmware updates (spread over the kiosks and the three phases)")
    p.add_argument("--kiosks", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", help="also write the counts to this file")
    a = p.parse_args()
    results = {}
    ok = True
    with tempfile.TemporaryDirectory(prefix="kiosk-torture-") as tmp:
        for name, run, n in (("power cuts", power_cut_run, a.cuts), ("outages", outage_run, a.outages),
                             ("custody", custody_run, a.custody), ("firmware update cuts", ota_cut_run, a.ota_cuts)):
            if n <= 0:
                continue
            rig = Rig(Path(tmp) / name.replace(" ", "_"), kiosks=a.kiosks)
            t0 = time.monotonic()
            try:
                if run is power_cut_run or run is ota_cut_run:
                    out = run(rig, -(-n // a.kiosks), a.seed, log=lambda m: print(m, flush=True))
                else:
                    out = run(rig, n, a.seed, log=lambda m: print(m, flush=True))
            except Problem as e:
                out = dict(rig.counts, failure=str(e))
                ok = False
                print(f"FAILED: {e}", flush=True)
            finally:
                rig.close()
            results[name] = out
            # The custody run checks the journals, not orders or webhooks.
            show(f"{name}: seed {a.seed}, {a.kiosks} kiosks", out, time.monotonic() - t0,
                 CUSTODY_ALWAYS if run is custody_run else OTA_ALWAYS if run is ota_cut_run else ALWAYS)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2) + "\n")
    print("\ntorture: " + ("every check held" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
