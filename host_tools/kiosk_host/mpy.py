"""Run code under the unix-port MicroPython the way a board would run it.

Shared by the pytest runner for tests/mp/ and by the emulator: one place
decides the module search path (MICROPYPATH) and the heap limit.

The firmware runs from the compiled flash tree (build/firmware, .mpy files,
as deployed to a board) unless KIOSK_FIRMWARE_DIR or firmware_dir names
another tree (firmware/ runs the sources). The emulator's own modules (the
simulated machine and world) come from build/sim beside a compiled tree.

Heap: the firmware's data gets the smallest board's free heap (boards/*.json
free_heap). Two things share the VM that a production board does not keep
in its heap, and their measured footprints are added on top:
- the simulated world (sim_overhead()), which no board carries;
- the firmware's bytecode (code_overhead()), which production boards keep in
  flash: firmware/manifest.py freezes it into the MicroPython image.
On this 64-bit VM every object is larger than on a 32-bit board, which errs
on the safe side.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Mapping, Sequence

from . import paths

DEFAULT_TIMEOUT = 60.0
HEAP_ENV = "KIOSK_MP_HEAP"
BOARD_HEAP_ENV = "KIOSK_BOARD_HEAP"
BASE_HEAP_ENV = "KIOSK_BASE_HEAP"   # world + firmware code: not the board's data budget
REPO_ENV = "KIOSK_REPO"
PORT_ENV = "KIOSK_SIM_PORT"         # the port personality of the simulated board (sim/port.py)
PORTS = ("unix", "esp32", "rp2")

_PROBE = """
import gc, json, simworld
from kiosk.hw import board
simworld.install(board.load(%r))
import asyncio
gc.collect()
print(gc.mem_alloc())
"""


def board_heap(boards_dir: Path | None = None) -> int:
    """The smallest free_heap (bytes) among the board definitions."""
    boards_dir = paths.BOARDS_DIR if boards_dir is None else Path(boards_dir)
    sizes = []
    for path in sorted(boards_dir.glob("*.json")):
        value = json.loads(path.read_text(encoding="utf-8")).get("free_heap")
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{path}: free_heap must be a positive number of bytes, got {value!r}")
        sizes.append(value)
    if not sizes:
        raise ValueError(f"no board definitions in {boards_dir}")
    return min(sizes)


def port_of(port: str | None = None) -> str:
    """The personality to run: the argument, else $KIOSK_SIM_PORT, else unix."""
    port = port or os.environ.get(PORT_ENV) or "unix"
    if port not in PORTS:
        raise ValueError(f"unknown port personality {port!r} (known: {', '.join(PORTS)})")
    return port


@functools.lru_cache(maxsize=None)
def sim_overhead(port: str | None = None, board: str = "emulator") -> int:
    """Bytes the simulated world (machine, the models of the board's parts,
    the port's personality) and asyncio take in the VM before any firmware
    module is imported."""
    board = str(paths.BOARDS_DIR / f"{board}.json")
    tree = paths.FIRMWARE_BUILD_DIR if paths.FIRMWARE_BUILD_DIR.is_dir() else paths.FIRMWARE_DIR
    proc = subprocess.run(
        mp_command(["-c", _PROBE % board], 1024 * 1024),
        env={**mp_env(tree), PORT_ENV: port_of(port)}, cwd=paths.REPO_ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30, check=False,
    )
    try:
        return int(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"cannot measure the simulated world's heap:\n{proc.stdout}") from None


_CODE_PROBE = """
import gc, os
import simworld
from kiosk.hw import board
simworld.install(board.load(%r))
import asyncio
gc.collect()
base = gc.mem_alloc()
def load(folder, package):
    for name in sorted(os.listdir(folder)):
        if name.endswith(".mpy") or name.endswith(".py"):
            try:
                __import__(package + "." + name.rsplit(".", 1)[0])
            except ImportError:  # another port's backend (rp2 PIO, esp32 RMT)
                pass
        elif "." not in name and name != "__pycache__":
            load(folder + "/" + name, package + "." + name)
load("kiosk", "kiosk")
import umqtt.simple
gc.collect()
print(gc.mem_alloc() - base)
"""


@functools.lru_cache(maxsize=None)
def code_overhead(port: str | None = None) -> int:
    """Bytes the firmware's modules (and umqtt) take once imported: the
    bytecode a production board keeps frozen in flash (with the step
    backend the port can import)."""
    tree = paths.FIRMWARE_BUILD_DIR if paths.FIRMWARE_BUILD_DIR.is_dir() else paths.FIRMWARE_DIR
    proc = subprocess.run(
        mp_command(["-c", _CODE_PROBE % str(paths.BOARDS_DIR / "emulator.json")], 2 * 1024 * 1024),
        env={**mp_env(tree), PORT_ENV: port_of(port)}, cwd=tree,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30, check=False,
    )
    try:
        return int(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"cannot measure the firmware's code size:\n{proc.stdout}") from None


def heap_size(port: str | None = None, board: str = "emulator") -> int:
    """-X heapsize for a VM holding the firmware, its code and the simulated
    world of `board`."""
    port = port_of(port)
    return board_heap() + sim_overhead(port, board) + code_overhead(port)


def port_of_board(board: str) -> str:
    """The personality a board file's mcu asks for (boards/<board>.json)."""
    mcu = json.loads((paths.BOARDS_DIR / f"{board}.json").read_text(encoding="utf-8")).get("mcu")
    return mcu if mcu in PORTS else "unix"


def firmware_dir(chosen: str | os.PathLike[str] | None = None) -> Path:
    """The firmware tree to run: the argument, else $KIOSK_FIRMWARE_DIR, else
    the compiled tree build/firmware. Relative paths are from the repo root."""
    chosen = chosen if chosen is not None else os.environ.get("KIOSK_FIRMWARE_DIR")
    if not chosen:
        return paths.FIRMWARE_BUILD_DIR
    path = Path(chosen)
    return (path if path.is_absolute() else paths.REPO_ROOT / path).resolve()


def mp_path(firmware_dir_: str | os.PathLike[str] | None = None) -> list[str]:
    """The MicroPython module search path, in order."""
    fw = firmware_dir(firmware_dir_)
    if fw == paths.FIRMWARE_DIR.resolve():
        lib, sim = paths.MPYLIB_DIR, paths.SIM_DIR
    else:
        if not fw.is_dir():
            raise FileNotFoundError(f"firmware tree {fw} does not exist; build it first (make build)")
        lib = fw / "lib"
        sim = paths.SIM_BUILD_DIR if paths.SIM_BUILD_DIR.is_dir() else paths.SIM_DIR
    return [str(paths.TESTS_MP_DIR), str(sim), str(fw), str(lib), ".frozen"]


def mp_env(firmware_dir_: str | os.PathLike[str] | None = None,
           base: Mapping[str, str] | None = None, port: str | None = None) -> dict[str, str]:
    """Environment for a MicroPython child: base (default os.environ) plus
    MICROPYPATH (colon-separated; it replaces the default path, so ".frozen"
    stays in it for asyncio), KIOSK_REPO (the repository root) and the port
    personality (KIOSK_SIM_PORT: the argument, else base's, else unix)."""
    env = dict(os.environ if base is None else base)
    env["MICROPYPATH"] = os.pathsep.join(mp_path(firmware_dir_))
    env[REPO_ENV] = str(paths.REPO_ROOT)
    env[PORT_ENV] = port_of(port or env.get(PORT_ENV))
    return env


def mp_command(args: Sequence[str | os.PathLike[str]], heap: int) -> list[str]:
    return [str(paths.micropython_exe()), "-X", f"heapsize={heap}", *map(str, args)]


def run_mp(
    args: Sequence[str | os.PathLike[str]],
    cwd: str | os.PathLike[str],
    heap: int | None = None,
    firmware_dir: str | os.PathLike[str] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    port: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run MicroPython with ARGS in CWD (the board's flash) on the simulated
    board of the port personality `port` (default: $KIOSK_SIM_PORT or
    unix); stdout and stderr merged into .stdout. Raises
    subprocess.TimeoutExpired."""
    child_env = mp_env(firmware_dir, base=env, port=port)
    port = child_env[PORT_ENV]
    heap = heap_size(port) if heap is None else heap
    child_env[HEAP_ENV] = str(heap)
    child_env[BOARD_HEAP_ENV] = str(board_heap())
    child_env[BASE_HEAP_ENV] = str(sim_overhead(port) + code_overhead(port))
    return subprocess.run(
        mp_command(args, heap), cwd=cwd, env=child_env, input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=timeout, check=False,
    )
