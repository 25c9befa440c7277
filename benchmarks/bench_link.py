"""Benchmark of the firmware's MQTT link under the unix MicroPython.

    .venv/bin/python benchmarks/bench_link.py [--events 5000]

Prints (does not assert):
- time from process start to the birth message on the broker;
- acked events per second from one emulated kiosk, the host acking as it
  goes (journal append, sign, publish QoS 1, PUBACK, host ack), over a
  route with no added delay and over one with a 10 ms round trip (the
  simulated network, sim/socket.py; with 8 in flight a 10 ms round trip
  allows at most 800/s);
- the link's garbage at rest (bytes allocated per second, the collector
  off, nothing happening), now and at the commit before the idle tick
  stopped allocating;
- the longest control-loop stall while the broker is down and the link keeps
  reconnecting, and while it comes back (a 10 ms asyncio timer in the
  harness measures its own lateness; the link reports its longest
  synchronous step);
- the same while the simulated route refuses every connection and while it
  blackholes them (connects never answered);
- the same for a TLS connection (handshake included; tests/tls certificates).

Every connection stays on loopback: an unreachable broker is the simulated
network's doing, never an address off this machine.
Needs mosquitto and a built tree (make build).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from link_support import Host, Kiosk, Mosquitto  # noqa: E402

import baseline  # noqa: E402

SEGMENT = 8192  # journal segment bytes (the firmware's default); 64 of them hold the burst


def births(h):
    return [d for d, _ in h.states if d.get("online")]


def wait_acked(k, seq, timeout):
    end = time.monotonic() + timeout
    while True:
        s = k.stats()
        if s["acked"] >= seq:
            return s
        if time.monotonic() > end:
            raise SystemExit(f"kiosk acked only {s['acked']} of {seq}")
        time.sleep(0.02)


def bench_start_and_throughput(tmp: Path, n: int, rtt_ms: int) -> None:
    b = Mosquitto(tmp / f"broker-{rtt_ms}").start()
    h = Host(b.port, ack_ms=10)
    k = Kiosk(tmp / f"flash-{rtt_ms}", b.port, journal={"segment_bytes": SEGMENT, "max_segments": 64})
    try:
        t0 = time.monotonic()
        k.start()
        h.wait(lambda: births(h), 20, "birth")
        if not rtt_ms:
            print(f"start to birth:              {1000 * (time.monotonic() - t0):8.0f} ms")
        k.send({"do": "network", "rtt_ms": rtt_ms})
        k.wait_line(lambda d: "network" in d)
        s0 = k.stats()
        first = s0["last_seq"]
        t0 = time.monotonic()
        k.events(n)
        last = k.wait_line(lambda d: "events_done" in d, 120)["last_seq"]
        t_journal = time.monotonic() - t0
        h.wait(lambda: h.contig is not None and h.contig >= last, 300, "all events")
        s = wait_acked(k, last, 60)
        dt = time.monotonic() - t0
        count = last - first
        print(f"acked events, {rtt_ms:2d} ms RTT:     {count / dt:8.0f} events/s ({count} in {dt:.2f} s; "
              f"journaling alone took {t_journal:.2f} s)")
        print(f"  longest link step:         {s['stats']['max_stall_us'] / 1000:8.1f} ms; "
              f"10 ms timer late by at most {s['late_us'] / 1000:.1f} ms")
    finally:
        k.quit()
        h.close()
        b.stop()


IDLE_FIX = "Test: an idle link allocates"   # the commit before the fix still has the old tick


def idle_garbage(tmp: Path, name: str) -> int:
    b = Mosquitto(tmp / f"broker-{name}").start()
    h = Host(b.port)
    k = Kiosk(tmp / f"flash-{name}", b.port, keepalive=60)
    try:
        k.start()
        h.wait(lambda: births(h), 20, "birth")
        time.sleep(1)
        rates = []
        for _ in range(3):
            k.send({"do": "garbage", "ms": 3000})
            rates.append(k.wait_line(lambda d: "garbage_bps" in d, 30)["garbage_bps"])
        return sorted(rates)[1]
    finally:
        k.quit()
        h.close()
        b.stop()


def bench_idle_garbage(tmp: Path) -> None:
    now = idle_garbage(tmp, "now")
    commit = baseline.commit_of(IDLE_FIX)
    old_tree = baseline.firmware_at(commit, tmp)
    saved = os.environ.get("KIOSK_FIRMWARE_DIR")
    os.environ["KIOSK_FIRMWARE_DIR"] = str(old_tree)
    try:
        before = idle_garbage(tmp, "before")
    finally:
        if saved is None:
            os.environ.pop("KIOSK_FIRMWARE_DIR", None)
        else:
            os.environ["KIOSK_FIRMWARE_DIR"] = saved
    print(f"idle link garbage:           {now:8d} bytes/s (before, at {commit[:10]}: {before} bytes/s; "
          "64-bit VM, median of three 3 s windows)")


def bench_outage(tmp: Path) -> None:
    b = Mosquitto(tmp / "broker2").start()
    h = Host(b.port)
    k = Kiosk(tmp / "flash2", b.port, link={"backoff_ms": [1000, 60000]})
    try:
        k.start()
        h.wait(lambda: births(h), 20, "birth")
        k.send({"do": "reset"})
        k.wait_line(lambda d: "reset" in d)
        b.stop()
        k.events(200, every_ms=20)  # the control loop keeps journaling throughout
        time.sleep(8)  # several reconnect attempts to a dead broker (refused)
        s = k.stats()
        print(f"broker down 8 s:             longest link step {s['stats']['max_stall_us'] / 1000:.2f} ms, "
              f"10 ms timer late by at most {s['late_us'] / 1000:.1f} ms "
              f"(last error: {s['stats']['last_error']})")
        k.send({"do": "reset"})
        k.wait_line(lambda d: "reset" in d)
        t0 = time.monotonic()
        b.start()
        last = s["last_seq"]
        h.wait(lambda: h.contig is not None and h.contig >= last, 90, "events after the outage")
        s = wait_acked(k, last, 30)
        print(f"broker back, backlog sent:   longest link step {s['stats']['max_stall_us'] / 1000:.2f} ms, "
              f"10 ms timer late by at most {s['late_us'] / 1000:.1f} ms, "
              f"all delivered {time.monotonic() - t0:.1f} s after the restart")
    finally:
        k.quit()
        h.close()
        b.stop()


def bench_bad_route(tmp: Path, route: str) -> None:
    """The simulated route refuses every connection, or never answers one."""
    b = Mosquitto(tmp / f"broker-{route}").start()
    h = Host(b.port)
    k = Kiosk(tmp / f"flash-{route}", b.port, link={"backoff_ms": [500, 1000], "connect_timeout_ms": 1500})
    try:
        k.start()
        h.wait(lambda: births(h), 20, "birth")
        k.send({"do": "network", "route": route})
        k.wait_line(lambda d: "network" in d)
        time.sleep(3)
        k.send({"do": "reset"})
        k.wait_line(lambda d: "reset" in d)
        k.events(100, every_ms=20)
        time.sleep(5)
        s = k.stats()
        label = "refused route 5 s:" if route == "refused" else "blackholed route 5 s:"
        print(f"{label:<29}longest link step {s['stats']['max_stall_us'] / 1000:.2f} ms, "
              f"10 ms timer late by at most {s['late_us'] / 1000:.1f} ms "
              f"(last error: {s['stats']['last_error']})")
    finally:
        k.quit()
        h.close()
        b.stop()


def bench_tls(tmp: Path) -> None:
    tls = ROOT / "tests" / "tls"
    b = Mosquitto(tmp / "broker4", tls={"ca": str(tls / "ca.pem"), "cert": str(tls / "server.pem"),
                                        "key": str(tls / "server.key")}).start()
    k = Kiosk(tmp / "flash4", b.port, broker={"host": "localhost", "tls": True, "ca": str(tls / "ca.pem")})
    try:
        k.start()
        end = time.monotonic() + 15
        while not k.stats()["stats"]["connected"]:
            if time.monotonic() > end:
                raise SystemExit("no TLS connection")
            time.sleep(0.05)
        s = k.stats()
        print(f"TLS connect (ECDHE P-256):   longest link step {s['stats']['max_stall_us'] / 1000:.2f} ms, "
              f"10 ms timer late by at most {s['late_us'] / 1000:.1f} ms")
    finally:
        k.quit()
        b.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=5000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        bench_start_and_throughput(tmp, args.events, 0)
        bench_start_and_throughput(tmp, args.events // 2, 10)
        bench_idle_garbage(tmp)
        bench_outage(tmp)
        bench_bad_route(tmp, "refused")
        bench_bad_route(tmp, "blackhole")
        bench_tls(tmp)


if __name__ == "__main__":
    main()
