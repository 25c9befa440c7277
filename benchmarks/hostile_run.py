"""Hostile input at the kiosk, the long run: generated bad commands
(tests/hostile.py) sent straight to kiosk/<id>/cmd of emulated kiosks (the
real firmware, one MicroPython process each) over a throwaway mosquitto.

    .venv/bin/python benchmarks/hostile_run.py --count 10000 --seed 1 [--kiosks 2]

The count is shared between the kiosks, which are attacked at the same time;
each kiosk gets its own seed (seed, seed+1, ...) and the other kiosk's key
for the wrong-key commands. For each kiosk it prints how many messages of
each category were sent, refused with the right reason, refused with another
reason, and the crashes and actuations seen (journal, process, simulated
world sampled every 100 ms). Exits 1 if any kiosk crashed, moved, stalled,
gave a wrong reason or failed a probe.

Needs mosquitto and the MicroPython toolchain (the tree is built first).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from kiosk_host import build  # noqa: E402
from kiosk_host.emulator.fleet import Fleet  # noqa: E402

import hostile  # noqa: E402
from link_support import Mosquitto  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=10_000, help="hostile messages in all (default 10000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--kiosks", type=int, default=2)
    p.add_argument("--window", type=int, default=48, help="messages outstanding per kiosk (default 48)")
    args = p.parse_args(argv)
    if args.kiosks < 1 or args.count < 1:
        p.error("--count and --kiosks must be at least 1")
    build.build()
    build.build_sim()
    root = Path(tempfile.mkdtemp(prefix="hostile-"))
    broker = Mosquitto(root / "mq", extra=["max_queued_messages 0", "max_inflight_messages 0"]).start()
    fleet = None
    try:
        fleet = Fleet(f"mqtt://127.0.0.1:{broker.port}", args.kiosks, root / "state", root / "keys",
                      policies={"telemetry_period_s": 30}, keepalive_s=10).start()
        ids = fleet.ids
        keys = {k: bytes.fromhex((fleet.keys_dir / f"{k}.key").read_text().strip()) for k in ids}
        share = [args.count // len(ids) + (1 if i < args.count % len(ids) else 0) for i in range(len(ids))]
        reports: dict[str, hostile.Report] = {}
        errors: dict[str, BaseException] = {}
        done = {k: 0 for k in ids}

        def attack(i: int, kid: str) -> None:
            other = keys[ids[(i + 1) % len(ids)]] if len(ids) > 1 else None
            try:
                reports[kid] = hostile.run(fleet, kid, keys[kid], share[i], args.seed + i, other_key=other,
                                           window=args.window,
                                           progress=lambda n, total, kid=kid: done.__setitem__(kid, n))
            except BaseException as e:  # reported below
                errors[kid] = e

        print(f"hostile run: {args.count} messages, seed {args.seed}, {len(ids)} kiosks ({', '.join(ids)}); "
              f"state in {root}", flush=True)
        t0 = time.monotonic()
        threads = [threading.Thread(target=attack, args=(i, k)) for i, k in enumerate(ids)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            time.sleep(5)
            print(f"  {time.monotonic() - t0:5.0f} s: " + ", ".join(f"{k} {done[k]}/{share[i]}" for i, k in enumerate(ids)),
                  flush=True)
        for t in threads:
            t.join()
        ok = not errors
        totals = {"sent": 0, "refused": 0, "wrong": 0, "crashes": 0, "actuations": 0}
        for kid in ids:
            if kid in errors:
                print(f"\n{kid}: the run failed: {errors[kid]!r}")
                continue
            r = reports[kid]
            print(f"\n{kid} (seed {r.seed}):\n{r.table()}")
            for w in r.wrong[:10]:
                print(f"  wrong: {w}")
            for what, items in (("probe failure", r.probe_failures), ("crash", r.crash_evidence),
                                ("actuation", r.actuation_evidence), ("no reply", r.missing_replies[:10])):
                for x in items:
                    print(f"  {what}: {x}")
            if r.stalled:
                print(f"  stalled: {r.stalled}")
            ok = ok and r.ok()
            totals["sent"] += r.sent
            totals["refused"] += r.refused
            totals["wrong"] += len(r.wrong)
            totals["crashes"] += r.crashes
            totals["actuations"] += r.actuations
        print(f"\nall kiosks: {totals['sent']} sent, {totals['refused']} refused with the right reason, "
              f"{totals['wrong']} wrong, {totals['crashes']} crashes, {totals['actuations']} actuations, "
              f"{time.monotonic() - t0:.1f} s -> {'OK' if ok else 'FAILED'}")
        return 0 if ok else 1
    finally:
        if fleet is not None:
            fleet.stop()
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
