"""Host side of a scripted kiosk day (tests/mp/day_harness.py), shared by
benchmarks/bench_controller_heap.py and tests/test_controller_heap.py.

A throwaway mosquitto, the host's MQTT client (link_support.Host: signs
commands, verifies and acks events) and the whole kiosk under MicroPython
with the smallest board's heap. The host opens a service session, restocks
bins, ends the session, runs pickups, waits for the scripted temperature
excursion to end and clears it, keeps the day going to its length, then
ends it and returns the harness's heap report."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from kiosk_host import mpy, paths
from link_support import KEY_HEX, Host, Mosquitto

HARNESS = paths.TESTS_MP_DIR / "day_harness.py"
KIOSK_ID = "kiosk-day"
TERMINAL = ("succeeded", "failed", "timed_out", "rejected", "cancelled")


@dataclass
class Plan:
    bins: int = 8                      # restocked in one service session, then picked up
    day_s: float = 180.0               # the day lasts at least this long (from READY)
    # (seconds after READY, sensor, celsius): a warning, an excursion, back to normal
    climate: list = field(default_factory=lambda: [[20, "cabinet", 26.0], [40, "cabinet", 31.0],
                                                   [60, "cabinet", 22.0]])
    policies: dict = field(default_factory=lambda: {
        "door_open_timeout_s": 5, "door_held_open_s": 4, "relock_verify_s": 2,
        "sample_period_s": 1, "telemetry_period_s": 5})


class DayError(AssertionError):
    pass


class KioskDay:
    def __init__(self, workdir: Path, plan: Plan, heap: int | None = None):
        self.workdir = Path(workdir)
        self.plan = plan
        self.heap = heap or mpy.heap_size()
        self.flash = self.workdir / "flash"
        self.flash.mkdir(parents=True, exist_ok=True)
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.log: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.outcomes: dict[str, list[str]] = {"restock": [], "pickup": [], "retries": []}

    # -- the kiosk process ---------------------------------------------------
    def _start(self, port: int) -> None:
        cfg = {"kiosk_id": KIOSK_ID, "key": KEY_HEX, "policies": self.plan.policies,
               "broker": {"host": "127.0.0.1", "port": port, "keepalive_s": 10}}
        (self.flash / "day.json").write_text(json.dumps({"config": cfg, "climate": self.plan.climate}))
        env = mpy.mp_env()
        self.proc = subprocess.Popen(mpy.mp_command([HARNESS], self.heap), cwd=self.flash, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.log.append(line)
            self.lines.put(line)
        self.lines.put("")  # EOF

    def output(self) -> str:
        return "\n".join(self.log[-60:])

    def _line(self, tag: str, timeout: float) -> str:
        end = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.05, end - time.monotonic()))
            except queue.Empty:
                line = None
            if line == "":
                raise DayError(f"the kiosk exited ({self.proc.wait()}) before {tag}:\n{self.output()}")
            if line is not None and (line == tag or line.startswith(tag + " ")):
                return line[len(tag):].strip()
            if time.monotonic() > end:
                raise DayError(f"no {tag} line from the kiosk in {timeout} s:\n{self.output()}")

    # -- the host's script -------------------------------------------------
    def _alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise DayError(f"the kiosk exited ({self.proc.returncode}):\n{self.output()}")

    def _final(self, host: Host, cid: str):
        self._alive()
        return next((x for x in host.replies_for(cid) if x["state"] in TERMINAL), None)

    def _do(self, host: Host, op: str, args: dict, timeout: float = 30.0) -> str:
        """Send a command until it is not refused for a resting lock; its final state."""
        for attempt in range(6):
            cid = host.command(op, args, cid=f"{op}-{args.get('bin', '')}-{attempt}-{time.monotonic_ns()}")
            r = host.wait(lambda: self._final(host, cid), timeout, f"{op} {args} to end")
            if r["state"] == "rejected" and (r.get("info") or {}).get("reason") == "lock_resting":
                self.outcomes["retries"].append(cid)
                time.sleep(1.0)
                continue
            return r["state"] if r["state"] == "succeeded" else f"{r['state']}:{(r.get('info') or {}).get('reason')}"
        raise DayError(f"{op} {args}: the lock kept resting")

    def _excursions(self, host: Host, ev: str) -> list[dict]:
        with host.lock:   # reentrant: also called from host.wait()
            return [e for e in host.events.values() if e.get("k") == "temp" and e.get("ev") == ev]

    def run(self) -> dict:
        broker = Mosquitto(self.workdir / "broker").start()
        host = None
        try:
            host = Host(broker.port, kiosk_id=KIOSK_ID)
            self._start(broker.port)
            base = json.loads(self._line("BASE", 30))
            self._line("READY", 30)
            t0 = time.monotonic()
            host.wait(lambda: self._alive() or any(d.get("online") for d, _ in host.states), 20,
                      "the kiosk online")
            bins = range(1, self.plan.bins + 1)
            if self._do(host, "service_start", {"session": "tech-1"}) != "succeeded":
                raise DayError(f"service session refused:\n{self.output()}")
            for b in bins:
                self.outcomes["restock"].append(self._do(host, "restock", {"order": f"RX-{b}", "bin": b}))
            self._do(host, "service_end", {})
            for b in bins:
                self.outcomes["pickup"].append(self._do(host, "pickup", {"order": f"RX-{b}", "bin": b}))
            if self.plan.climate:
                left = max(5.0, self.plan.climate[-1][0] + 15 - (time.monotonic() - t0))
                host.wait(lambda: self._alive() or self._excursions(host, "excursion_end"), left,
                          "the excursion to end")
                exc = self._excursions(host, "excursion_start")[0]["id"]
                self.outcomes["clear_excursion"] = self._do(host, "clear_excursion", {"excursion": exc})
                self.outcomes["warnings"] = len(self._excursions(host, "warning_start"))
            rest = self.plan.day_s - (time.monotonic() - t0)
            if rest > 0:
                time.sleep(rest)
            self.outcomes["day_s"] = round(time.monotonic() - t0, 1)
            with host.lock:
                self.outcomes["events"] = len(host.events)
                self.outcomes["telemetry"] = len(host.tele)
                self.outcomes["bad_signatures"] = len(host.bad_sig)
            self.proc.stdin.write("end\n")
            self.proc.stdin.flush()
            report = json.loads(self._line("DAY", 60))
            report["base_check"] = base
            report["outcomes"] = self.outcomes
            report["output"] = self.output()
            return report
        finally:
            if self.proc is not None:
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            if host is not None:
                host.close()
            broker.stop()


def trouble(report: dict) -> list[str]:
    """What went wrong in a day that ran to its end (empty: a clean day)."""
    o = report["outcomes"]
    out = report["output"]
    bad = []
    if "MemoryError" in out or "Traceback" in out:
        bad.append("an exception in the kiosk's output")
    if set(o["restock"]) != {"succeeded"} or set(o["pickup"]) != {"succeeded"}:
        bad.append(f"operations: restock {o['restock']}, pickup {o['pickup']}")
    if o.get("clear_excursion", "succeeded") != "succeeded":
        bad.append(f"clear_excursion {o['clear_excursion']}")
    link = report["link"] or {}
    if not report["link_up"] or link.get("drops") or o["bad_signatures"]:
        bad.append(f"link: {link}, bad signatures {o['bad_signatures']}")
    if report["violations"]:
        bad.append(f"safety violations {report['violations']}")
    return bad
