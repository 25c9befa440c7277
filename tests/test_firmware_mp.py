"""Run every MicroPython test in tests/mp/ under the unix-port `micropython`.

Each top-level `def test_*` / `async def test_*` of tests/mp/test_<name>.py
becomes one pytest test, `TestMp_<name>::test_mp[<function>]`, run in a
fresh process with the heap of the smallest board (kiosk_host.mpy
.heap_size) and a fresh temporary directory as its working directory, which
stands for the board's flash. One class per MicroPython module, so parallel
runs (`--dist loadscope`) spread the modules over the workers. Set
KIOSK_FIRMWARE_DIR=firmware to run against the sources instead of the
compiled tree.
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


def run_case(module: str, func: str, tmp_path: Path) -> None:
    name = f"{module}.{func}"
    try:
        proc = mpy.run_mp([RUNNER, module, func], cwd=tmp_path, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        output = exc.output or ""
        if isinstance(output, bytes):
            output = output.decode("utf-8", "replace")
        pytest.fail(f"{name} timed out after {TIMEOUT}s under micropython; output:\n{output}", pytrace=False)
    if proc.returncode != 0 or f"PASS {name}" not in proc.stdout:
        pytest.fail(
            f"{name} failed under micropython (exit {proc.returncode}, "
            f"MICROPYPATH={':'.join(mpy.mp_path())}); output:\n{proc.stdout}",
            pytrace=False,
        )


def _suite(module: str, funcs: list[str]) -> type:
    class Suite:
        @pytest.mark.parametrize("func", funcs)
        def test_mp(self, func: str, tmp_path: Path) -> None:
            run_case(module, func, tmp_path)

    Suite.__name__ = Suite.__qualname__ = f"TestMp_{module.removeprefix('test_')}"
    return Suite


for _module, _funcs in mp_test_cases().items():
    if _funcs:
        _cls = _suite(_module, _funcs)
        globals()[_cls.__name__] = _cls
