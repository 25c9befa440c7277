"""Shared pytest setup.

tests/mp/ holds MicroPython tests. They are never imported by CPython:
tests/test_firmware_mp.py finds their test functions and runs each under
the unix-port `micropython`.

`make test` runs pytest-xdist with `--dist loadscope`: a module's tests (a
class's, for test methods) stay together on one worker, in order, so
module-scoped rigs (a broker, a fleet of emulated kiosks) are built once
and tests that build on an earlier one's effect keep it.
"""

from __future__ import annotations

import os

import pytest

from kiosk_host import paths

# MicroPython code: not for CPython's collector.
collect_ignore = ["mp"]


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    """Compile the flash tree and the emulator's modules first, so the
    MicroPython tests always run the current sources as a board would.
    Once, in the main process: parallel workers (pytest -n) use its build."""
    from kiosk_host import build

    if paths.MPYLIB_DIR.is_dir() and not os.environ.get("PYTEST_XDIST_WORKER"):
        build.build()
        build.build_sim()
