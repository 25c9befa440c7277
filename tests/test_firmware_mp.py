"""Run every MicroPython test in tests/mp/ under the unix-port `micropython`,
on the simulated board of each port personality it is meant for.

Each top-level `def test_*` / `async def test_*` of tests/mp/test_<name>.py
becomes one pytest test, `TestMp_<name>::test_mp[<function>]` on the unix
port and `TestMp_<name>_<port>::...` under the esp32 and rp2 personalities
(host_tools/kiosk_host/sim/port.py), run in a fresh process with the heap
of the smallest board (kiosk_host.mpy.heap_size) and a fresh temporary
directory as its working directory, which stands for the board's flash.
One class per (module, personality), so parallel runs (`--dist loadscope`)
spread them over the workers. Set KIOSK_FIRMWARE_DIR=firmware to run
against the sources instead of the compiled tree.

Which modules run under the board personalities is chosen in BOARD_PORTS
(docs/hardware.md says why).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from kiosk_host import mpy, paths

RUNNER = paths.TESTS_MP_DIR / "runner.py"
TIMEOUT = 60
_TEST_DEF = re.compile(r"^(?:async\s+)?def\s+(test_\w+)\s*\(", re.MULTILINE)


def mp_test_cases(mp_dir: Path = paths.TESTS_MP_DIR) -> dict[str, list[str]]:
    """{module: [test function, ...]} for tests/mp/test_*.py.

    Found by a line match, not CPython's parser: MicroPython accepts a few
    forms CPython rejects, and these files are never run by CPython."""
    return {path.stem: _TEST_DEF.findall(path.read_text(encoding="utf-8"))
            for path in sorted(mp_dir.glob("test_*.py"))}


# Modules whose code meets what differs between ports (errno, clock, timer
# and pin interrupts, flash stalls, step-timing hardware): run under every
# shipped board's personality. The rest is plain logic (schema, signatures,
# the board validator, the MQTT codec, climate arithmetic) or talks to
# buses the personalities do not change (the sensor drivers): unix only.
BOARD_PORTS = ("esp32", "rp2")
# Modules about a board's own hardware: under the board personalities only.
BOARD_ONLY = {"test_motion": BOARD_PORTS}
PORT_MODULES = {"test_boot_failsafe", "test_climate_clock", "test_conn", "test_controller", "test_gate",
                "test_journal", "test_lock", "test_ops", "test_outbox", "test_quiet", "test_stepper",
                "test_supervisor"}


def run_case(module: str, func: str, tmp_path: Path, port: str = "unix") -> None:
    name = f"{module}.{func}"
    try:
        proc = mpy.run_mp([RUNNER, module, func], cwd=tmp_path, timeout=TIMEOUT, port=port)
    except subprocess.TimeoutExpired as exc:
        output = exc.output or ""
        if isinstance(output, bytes):
            output = output.decode("utf-8", "replace")
        pytest.fail(f"{name} timed out after {TIMEOUT}s under micropython ({port}); output:\n{output}",
                    pytrace=False)
    if proc.returncode != 0 or f"PASS {name}" not in proc.stdout:
        pytest.fail(
            f"{name} failed under micropython ({port} personality; exit {proc.returncode}, "
            f"MICROPYPATH={':'.join(mpy.mp_path())}); output:\n{proc.stdout}",
            pytrace=False,
        )


def _suite(module: str, funcs: list[str], port: str) -> type:
    class Suite:
        @pytest.mark.parametrize("func", funcs)
        def test_mp(self, func: str, tmp_path: Path) -> None:
            run_case(module, func, tmp_path, port)

    name = f"TestMp_{module.removeprefix('test_')}" + ("" if port == "unix" else f"_{port}")
    Suite.__name__ = Suite.__qualname__ = name
    return Suite


for _module, _funcs in mp_test_cases().items():
    if _funcs:
        ports = ("unix",) + (BOARD_PORTS if _module in PORT_MODULES else ())
        for _port in BOARD_ONLY.get(_module, ports):
            _cls = _suite(_module, _funcs, _port)
            globals()[_cls.__name__] = _cls
