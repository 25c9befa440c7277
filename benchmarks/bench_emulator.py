"""How many emulated kiosks this machine holds while each stays responsive.

    .venv/bin/python benchmarks/bench_emulator.py [--steps 8,16,32,48,64,80,96,128] [--window 10]

For each fleet size: start the fleet (the real firmware, one MicroPython
process per kiosk, on a throwaway mosquitto), wait until every kiosk is
online, then over a steady window measure per kiosk
- memory: resident set (RSS) and unique set (USS) of its process;
- CPU: the share of one core it used over the window;
- responsiveness: control-channel round trips into its world (the same path
  as the control API), and one REPL round trip (mpremote's transport, as
  kioskctl uses it) on one kiosk at the end.
A size counts as held when every kiosk came online, none reset during the
window (a starved control loop would trip the watchdog), every kiosk stayed
online, the control round trip stayed under 50 ms at p95, and the kiosks
together left headroom: under 80 % of all cores (past that every kiosk's
loops wait for the CPU). Stops at the
first size that is not held. Prints figures; asserts nothing.

Needs mosquitto and a built tree (make build).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from kiosk_host.board_link import BoardLink  # noqa: E402
from kiosk_host.emulator.fleet import Fleet  # noqa: E402
from link_support import Mosquitto  # noqa: E402

P95_LIMIT_MS = 50.0
CPU_SHARE_LIMIT = 0.8


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory(pid: int) -> tuple[int, int]:
    """(resident, unique) bytes of a process: RSS and its private pages."""
    kb = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        kb[name] = int(value.split()[0])
    return kb["Rss"] * 1024, (kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)) * 1024


def meminfo(name: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    return 0


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def run_size(n: int, window: float) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-emu-{n}-"))
    broker = Mosquitto(tmp / "mq").start()
    res: dict = {"n": n}
    t0 = time.monotonic()
    fleet = Fleet(f"mqtt://127.0.0.1:{broker.port}", n, tmp / "state", tmp / "keys", keepalive_s=10)
    try:
        fleet.start()
        res["start_s"] = time.monotonic() - t0
        end = time.monotonic() + 60 + n
        while time.monotonic() < end and not all(fleet.online.get(k) for k in fleet.ids):
            time.sleep(0.1)
        online = sum(1 for k in fleet.ids if fleet.online.get(k))
        res["online_s"] = time.monotonic() - t0
        res["online"] = online
        procs = {k: fleet.kiosk(k).proc.pid for k in fleet.ids}
        boots0 = {k: fleet.kiosk(k).boots for k in fleet.ids}
        cpu0 = {k: cpu_seconds(p) for k, p in procs.items()}
        w0 = time.monotonic()
        rtts = []
        while time.monotonic() - w0 < window:
            for k in fleet.ids:
                t = time.perf_counter()
                fleet.world(k)
                rtts.append((time.perf_counter() - t) * 1000)
            time.sleep(0.5)
        span = time.monotonic() - w0
        cpu = [(cpu_seconds(p) - cpu0[k]) / span * 100 for k, p in procs.items()]
        mem = [memory(p) for p in procs.values()]
        res["rss_mb"] = statistics.mean(m[0] for m in mem) / 2**20
        res["uss_mb"] = statistics.mean(m[1] for m in mem) / 2**20
        res["cpu_pct"] = statistics.mean(cpu)
        res["cpu_max_pct"] = max(cpu)
        res["rtt_p50_ms"] = pct(rtts, 0.5)
        res["rtt_p95_ms"] = pct(rtts, 0.95)
        res["resets"] = sum(fleet.kiosk(k).boots - boots0[k] for k in fleet.ids)
        res["still_online"] = sum(1 for k in fleet.ids if fleet.online.get(k))
        res["load_1m"] = os.getloadavg()[0]
        t = time.perf_counter()
        link = BoardLink(fleet.pty(fleet.ids[-1]))
        link.enter()
        res["repl_enter_ms"] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        link.exec("print(1)")
        res["repl_exec_ms"] = (time.perf_counter() - t) * 1000
        link.close(restart=True)
        res["cpu_total_pct"] = sum(cpu) / os.cpu_count()
        res["held"] = (online == n and res["still_online"] == n and res["resets"] == 0
                       and res["rtt_p95_ms"] < P95_LIMIT_MS and res["cpu_total_pct"] < CPU_SHARE_LIMIT * 100)
    except Exception as e:  # a size the machine cannot start at all
        res["error"] = str(e)
        res["held"] = False
    finally:
        fleet.stop()
        broker.stop()
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", default="8,16,32,48,64,80,96,128")
    ap.add_argument("--window", type=float, default=10.0, help="steady-state window per size (s)")
    args = ap.parse_args()
    cores = os.cpu_count()
    print(f"machine: {cores} cores, {meminfo('MemTotal') / 2**30:.1f} GiB RAM")
    print(f"{'kiosks':>6} {'online':>7} {'start s':>8} {'RSS MB':>7} {'USS MB':>7} {'CPU %':>6} {'CPU max':>8} "
          f"{'all CPU':>8} {'rtt p50':>8} {'rtt p95':>8} {'REPL ms':>8} {'resets':>6} {'load':>5}  held")
    best = None
    per = None
    for n in [int(x) for x in args.steps.split(",")]:
        r = run_size(n, args.window)
        if "error" in r:
            print(f"{n:>6}  error: {r['error']}")
        else:
            print(f"{n:>6} {r['online']:>3}/{n:<3} {r['start_s']:>8.1f} {r['rss_mb']:>7.1f} {r['uss_mb']:>7.1f} "
                  f"{r['cpu_pct']:>6.1f} {r['cpu_max_pct']:>8.1f} {r['cpu_total_pct']:>7.0f}% {r['rtt_p50_ms']:>6.1f}ms {r['rtt_p95_ms']:>6.1f}ms "
                  f"{r['repl_enter_ms'] + r['repl_exec_ms']:>8.0f} {r['resets']:>6} {r['load_1m']:>5.1f}  "
                  f"{'yes' if r['held'] else 'NO'}", flush=True)
        if not r["held"]:
            break
        best, per = n, r
    if best is None:
        print("held: none of the sizes tried")
        return 0
    print(f"held: {best} kiosks, each responsive (online, no resets, control p95 < {P95_LIMIT_MS:.0f} ms, "
          f"kiosks under {CPU_SHARE_LIMIT:.0%} of the machine's CPU)")
    print(f"per kiosk at {best}: {per['rss_mb']:.1f} MB RSS ({per['uss_mb']:.1f} MB unique), "
          f"{per['cpu_pct']:.1f}% of one core")
    ram_bound = meminfo("MemAvailable") / (per["uss_mb"] * 2**20)
    cpu_bound = cores * 100 * CPU_SHARE_LIMIT / max(per["cpu_pct"], 0.01)
    print(f"estimate from those: memory allows ~{ram_bound:.0f}, CPU at {CPU_SHARE_LIMIT:.0%} of {cores} cores "
          f"~{cpu_bound:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
