"""Run every benchmark in benchmarks/ and write docs/benchmarks.md.

    .venv/bin/python benchmarks/run_all.py        (make bench)

Each benchmark is a script benchmarks/bench_*.py that prints its figures;
this runner records what each printed, the command that produced it, the
machine and the date, plus the size of the compiled firmware. Figures are
measurements of this machine on this day, not promises: the page says so.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks.md"
TIMEOUT = 20 * 60
# Arguments per benchmark (default: none). bench_bridge.py's full run (10,000
# simulated kiosks, one and two bridge processes) takes about 3 minutes; give
# it ["--quick"] (2,000 kiosks, under a minute) when that is too long.
ARGS: dict[str, list[str]] = {"bench_bridge.py": []}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    mp = subprocess.run([str(Path(sys.executable).parent / "micropython"), "-c",
                         "import sys; print(sys.version.split(';')[1].strip())"],
                        capture_output=True, text=True).stdout.strip()
    return f"{cpu}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()}; Python {platform.python_version()}; {mp}"


def code_size() -> str:
    manifest = json.loads((ROOT / "build" / "firmware" / "manifest.json").read_text())
    files = manifest["files"]
    mpy = sum(f["size"] for p, f in files.items() if p.endswith(".mpy") and not p.startswith("lib/"))
    lib = sum(f["size"] for p, f in files.items() if p.startswith("lib/"))
    n = sum(1 for p in files if p.endswith(".mpy") and not p.startswith("lib/"))
    return (f"firmware bytecode (.mpy, {n} modules): {mpy} bytes\n"
            f"third-party (umqtt, .mpy):          {lib} bytes\n"
            f"flash tree in total:                {sum(f['size'] for f in files.values())} bytes")


def main() -> int:
    subprocess.run([sys.executable, "-m", "kiosk_host.build"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    load_before = os.getloadavg()
    sections = [("Code size of the .mpy build", "python -m kiosk_host.build (build/firmware/manifest.json)", code_size(), 0.0)]
    failed = []
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        cmd = [sys.executable, str(script.relative_to(ROOT))] + ARGS.get(script.name, [])
        print(f"== {' '.join(cmd[1:])}", flush=True)
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
            text = proc.stdout.rstrip()
            if proc.returncode != 0:
                failed.append(script.name)
                text += f"\n(exit {proc.returncode})\n{proc.stderr.rstrip()[-2000:]}"
        except subprocess.TimeoutExpired:
            failed.append(script.name)
            text = f"(timed out after {TIMEOUT} s)"
        print(text, flush=True)
        title = _title(script)
        sections.append((title, " ".join([".venv/bin/python", str(script.relative_to(ROOT))] + ARGS.get(script.name, [])),
                         text, time.monotonic() - t0))
    write(sections, (load_before, os.getloadavg()))
    print(f"wrote {OUT.relative_to(ROOT)}")
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


def _title(script: Path) -> str:
    """The first line of the benchmark's docstring."""
    text = script.read_text(encoding="utf-8")
    for quote in ('"""', "'''"):
        if quote in text:
            return text.split(quote, 2)[1].strip().splitlines()[0].rstrip(".")
    return script.stem


def write(sections, load: tuple[tuple[float, float, float], tuple[float, float, float]]) -> None:
    """load: the 1, 5 and 15 minute load averages before and after the runs
    (a shared machine's figures that depend on CPU time are lower)."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`benchmarks/run_all.py`), which runs every",
        "`benchmarks/bench_*.py` and records what it printed. These are measurements",
        "of one machine on one day, not guarantees; tests never assert timings.",
        "The fault-injection counts (`make torture`, `make hostile`) are in",
        "[reliability.md](reliability.md).",
        "",
        f"- date: {now}",
        f"- machine: {machine()}",
        "- load average (1, 5, 15 min) before the runs: %.2f %.2f %.2f; after: %.2f %.2f %.2f" % (*load[0], *load[1]),
        "",
    ]
    for title, cmd, text, secs in sections:
        lines += [f"## {title}", "", f"Command: `{cmd}`" + (f" ({secs:.0f} s)" if secs else ""), "", "```", text, "```", ""]
    OUT.write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
