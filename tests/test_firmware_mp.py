"""Run every MicroPython test in tests/mp/ under the unix-port `micropython`.

One pytest test per `test_*` function (collected in conftest.py). Each runs
in a fresh process with the heap of the smallest board (kiosk_host.mpy
.heap_size) and a fresh temporary directory as its working directory, which
stands for the board's flash. Set KIOSK_FIRMWARE_DIR=build/firmware to run
against the compiled tree instead of firmware/.
"""

from __future__ import annotations

import subprocess

import pytest

from kiosk_host import mpy, paths

RUNNER = paths.TESTS_MP_DIR / "runner.py"
SPREAD_ACROSS_WORKERS = True  # one independent micropython process per case
TIMEOUT = 60


def test_mp(mp_case, tmp_path):
    module, func = mp_case
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
