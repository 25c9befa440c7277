"""Shared pytest setup.

tests/mp/ holds MicroPython tests. They are never imported by CPython:
their top-level `def test_*` / `async def test_*` functions are found by a
line match, and tests/test_firmware_mp.py runs each one under the unix-port
`micropython` (through tests/mp/runner.py) as the `mp_case` parameter.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

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


_TEST_DEF = re.compile(r"^(?:async\s+)?def\s+(test_\w+)\s*\(", re.MULTILINE)


def mp_test_cases(mp_dir: Path = paths.TESTS_MP_DIR) -> list[tuple[str, str]]:
    """(module, function) for each top-level test function in tests/mp/test_*.py.

    Found by a line match, not CPython's parser: MicroPython accepts a few
    forms CPython rejects, and these files are never run by CPython."""
    cases = []
    for path in sorted(mp_dir.glob("test_*.py")):
        for name in _TEST_DEF.findall(path.read_text(encoding="utf-8")):
            cases.append((path.stem, name))
    return cases


def pytest_generate_tests(metafunc):
    if "mp_case" in metafunc.fixturenames:
        cases = mp_test_cases()
        metafunc.parametrize("mp_case", cases, ids=[f"{m}.{f}" for m, f in cases])


# Parallel runs (`pytest -n N --dist loadgroup`, as `make test` does): a
# module's tests stay together on one worker, in order, so module-scoped
# rigs (a broker, a fleet of emulated kiosks) are built once and tests that
# build on an earlier one's effect keep it. Modules that set
# `SPREAD_ACROSS_WORKERS = True` (independent processes per test, such as
# the MicroPython cases) are spread over all workers.
def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module
        if not getattr(module, "SPREAD_ACROSS_WORKERS", False):
            item.add_marker(pytest.mark.xdist_group(module.__name__))
