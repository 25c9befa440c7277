"""Run code under the unix-port MicroPython the way the board would run it.

Shared by the pytest runner for tests/mp/ and by the emulator: one place
decides the module search path (MICROPYPATH) and the heap limit.

The search path, in order: tests/mp, the emulator's MicroPython modules
(kiosk_host/sim), the firmware tree, its third-party libraries, and
".frozen" (the unix port's frozen modules, asyncio among them).

The firmware tree is firmware/ (sources) by default. Pass firmware_dir, or
set KIOSK_FIRMWARE_DIR (e.g. build/firmware), to run against a compiled
tree instead; then that tree's lib/ replaces build/mpylib.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import paths

DEFAULT_HEAP = 90 * 1024
"""Heap used when no board declares free_heap (a plain ESP32 has about 91 kB free)."""

DEFAULT_TIMEOUT = 60.0

HEAP_ENV = "KIOSK_MP_HEAP"
"""Set in the child's environment to the heap size it was started with."""

REPO_ENV = "KIOSK_REPO"
"""Set in the child's environment to the repository root (for test data such as tests/vectors)."""

_SIZE_RE = re.compile(r"^\s*(\d+)\s*(k|kb|kib)?\s*$", re.IGNORECASE)


def _parse_size(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{where}: free_heap must be a size in bytes, got {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and _SIZE_RE.match(value):
        m = _SIZE_RE.match(value)
        assert m is not None
        size = int(m.group(1)) * (1024 if m.group(2) else 1)
    else:
        raise ValueError(f"{where}: free_heap must be bytes (int) or like '91k', got {value!r}")
    if size <= 0:
        raise ValueError(f"{where}: free_heap must be positive, got {value!r}")
    return size


def _find_free_heap(data: Any) -> Any:
    """The first free_heap value in a board definition (top level first)."""
    if isinstance(data, dict):
        if "free_heap" in data:
            return data["free_heap"]
        for value in data.values():
            found = _find_free_heap(value)
            if found is not None:
                return found
    return None


def heap_size(boards_dir: Path | None = None) -> int:
    """Heap for MicroPython runs: the smallest free_heap among boards/*.json.

    Tests then run with no more memory than the tightest board has after
    boot. Board files without free_heap are ignored; with none at all the
    default is 90 kB. Sizes are bytes, or strings like "91k".
    """
    boards_dir = paths.BOARDS_DIR if boards_dir is None else Path(boards_dir)
    sizes = []
    for path in sorted(boards_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read board definition: {exc}") from exc
        value = _find_free_heap(data)
        if value is not None:
            sizes.append(_parse_size(value, str(path)))
    return min(sizes) if sizes else DEFAULT_HEAP


def firmware_dir(firmware_dir: str | os.PathLike[str] | None = None) -> Path:
    """The firmware tree to run: the argument, else $KIOSK_FIRMWARE_DIR, else firmware/.

    A relative path is taken from the repository root.
    """
    chosen = firmware_dir if firmware_dir is not None else os.environ.get("KIOSK_FIRMWARE_DIR")
    if not chosen:
        return paths.FIRMWARE_DIR
    path = Path(chosen)
    if not path.is_absolute():
        path = paths.REPO_ROOT / path
    return path.resolve()


def mp_path(firmware_dir_: str | os.PathLike[str] | None = None) -> list[str]:
    """The MicroPython module search path, in order, as strings."""
    fw = firmware_dir(firmware_dir_)
    if fw == paths.FIRMWARE_DIR.resolve():
        lib = paths.MPYLIB_DIR
    else:
        if not fw.is_dir():
            raise FileNotFoundError(
                f"firmware tree {fw} does not exist; build it first (make build)"
            )
        lib = fw / "lib"
    return [
        str(paths.TESTS_MP_DIR),
        str(paths.SIM_DIR),
        str(fw),
        str(lib),
        ".frozen",
    ]


def mp_env(
    firmware_dir: str | os.PathLike[str] | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Environment for a MicroPython child: `base` (default os.environ) plus
    MICROPYPATH and KIOSK_REPO (the repository root).

    The unix port reads MICROPYPATH as a colon-separated list that replaces
    its default path; ".frozen" stays in it so frozen modules still import.
    """
    env = dict(os.environ if base is None else base)
    env["MICROPYPATH"] = os.pathsep.join(mp_path(firmware_dir))
    env[REPO_ENV] = str(paths.REPO_ROOT)
    return env


def mp_command(args: Sequence[str | os.PathLike[str]], heap: int | None = None) -> list[str]:
    """Command line running `micropython -X heapsize=H ARGS...`."""
    heap = heap_size() if heap is None else heap
    return [str(paths.micropython_exe()), "-X", f"heapsize={heap}", *map(str, args)]


def run_mp(
    args: Sequence[str | os.PathLike[str]],
    cwd: str | os.PathLike[str],
    heap: int | None = None,
    firmware_dir: str | os.PathLike[str] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run MicroPython with ARGS in CWD (the board's flash) and return its result.

    stdout and stderr are merged into `.stdout` (text). The heap defaults to
    heap_size(). Raises subprocess.TimeoutExpired (with the partial output)
    when the run exceeds `timeout` seconds.
    """
    heap = heap_size() if heap is None else heap
    child_env = mp_env(firmware_dir, base=env)
    child_env[HEAP_ENV] = str(heap)
    return subprocess.run(
        mp_command(args, heap),
        cwd=cwd,
        env=child_env,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
