"""The watchdog resets the kiosk when a supervised task stops working (the
loop that keeps the hardware safe, or any other long-lived task), and only
then: the firmware feeds it from the supervisor's health check, and the
emulator's WDT ends the process like a reset, remembered as WDT_RESET. It
starts only once the boot can no longer fail, so a kiosk that cannot start
stays at the REPL instead of resetting for ever."""

from __future__ import annotations

import os
import signal

import pytest

from kiosk_host import mpy, paths

HARNESS = paths.TESTS_MP_DIR / "wdt_harness.py"


def _run(mode, flash, state):
    env = {"KIOSK_SIM_STATE": str(state)}
    return mpy.run_mp([HARNESS, mode], cwd=flash, env={**os.environ, **env}, timeout=40)


def test_healthy_loop_keeps_the_watchdog_fed(tmp_path):
    proc = _run("healthy", tmp_path, tmp_path / "reset-cause")
    assert proc.returncode == 0 and "ALIVE" in proc.stdout, proc.stdout
    assert "BOOT 1 power_on" in proc.stdout


@pytest.mark.parametrize("mode", ["dead_monitor", "blocked", "hung_sampler"])
def test_unhealthy_loop_is_reset_by_the_watchdog(tmp_path, mode):
    state = tmp_path / "reset-cause"
    proc = _run(mode, tmp_path, state)
    assert proc.returncode == -signal.SIGKILL, proc.stdout
    assert "ALIVE" not in proc.stdout
    # The next boot on the same flash knows why it restarted, and says so.
    proc = _run("healthy", tmp_path, state)
    assert "BOOT 2 watchdog" in proc.stdout, proc.stdout


def test_a_boot_that_fails_leaves_the_board_safe_at_the_repl(tmp_path):
    proc = _run("boot_fails", tmp_path, tmp_path / "reset-cause")
    assert proc.returncode == 0, proc.stdout
    assert "kiosk: not started" in proc.stdout and "MAIN None" in proc.stdout, proc.stdout
    assert "ALIVE safe" in proc.stdout, proc.stdout
