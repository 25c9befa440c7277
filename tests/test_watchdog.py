"""The watchdog resets the kiosk when a supervised task stops working (the
loop that keeps the hardware safe, or any other long-lived task), and only
then: the firmware feeds it from the supervisor's health check, and the
emulator's WDT ends the process like a reset, remembered as WDT_RESET. It
starts only once the boot can no longer fail, so a kiosk that cannot start
stays at the REPL instead of resetting for ever."""

from __future__ import annotations

import os
import signal
import time

import pytest

from kiosk_host import mpy, paths

HARNESS = paths.TESTS_MP_DIR / "wdt_harness.py"


def _run(mode, flash, state, port=None):
    env = {"KIOSK_SIM_STATE": str(state)}
    return mpy.run_mp([HARNESS, mode], cwd=flash, env={**os.environ, **env}, timeout=40, port=port)


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


@pytest.mark.parametrize("port", ["esp32", "rp2"])
def test_a_cpu_held_with_a_lock_energised_is_reset_within_the_watchdog(tmp_path, port):
    """The bound behind the lock's cap where its timer waits for the CPU (a
    scheduled callback on the ESP32, interrupts off during a flash erase on
    the RP2): a hold longer than the watchdog resets the board, and a reset
    drops the coil (its driver's pull-down)."""
    state = tmp_path / "reset-cause"
    t0 = time.monotonic()
    proc = _run("energised_blocked", tmp_path, state, port)
    assert proc.returncode == -signal.SIGKILL, proc.stdout
    assert "ENERGISED True" in proc.stdout and "ALIVE" not in proc.stdout, proc.stdout
    proc = _run("healthy", tmp_path, state, port)
    assert "BOOT 2 watchdog" in proc.stdout, proc.stdout
    assert time.monotonic() - t0 < 30
