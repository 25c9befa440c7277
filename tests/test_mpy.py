"""kiosk_host.mpy (heap size, module path) and the console entry points."""

from __future__ import annotations

import pytest

from kiosk_host import mpy, paths


def test_heap_is_the_smallest_board_plus_world_and_code(tmp_path):
    (tmp_path / "pico.json").write_text('{"free_heap": 210000}')
    (tmp_path / "esp32.json").write_text('{"free_heap": 91000}')
    assert mpy.board_heap(tmp_path) == 91000
    (tmp_path / "bad.json").write_text('{"free_heap": "lots"}')
    with pytest.raises(ValueError, match="bad.json"):
        mpy.board_heap(tmp_path)
    # The world and the firmware's bytecode are measured, not guessed.
    world, code = mpy.sim_overhead(), mpy.code_overhead()
    assert 10_000 < world < 200_000
    assert 50_000 < code < 400_000
    assert mpy.heap_size() == mpy.board_heap() + world + code


def test_mp_path_order(tmp_path, monkeypatch):
    monkeypatch.setenv("KIOSK_FIRMWARE_DIR", "firmware")
    assert mpy.mp_path() == [
        str(paths.TESTS_MP_DIR),
        str(paths.SIM_DIR),
        str(paths.FIRMWARE_DIR.resolve()),
        str(paths.MPYLIB_DIR),
        ".frozen",
    ]
    monkeypatch.delenv("KIOSK_FIRMWARE_DIR")
    assert mpy.mp_path()[1:4] == [str(paths.SIM_BUILD_DIR), str(paths.FIRMWARE_BUILD_DIR), str(paths.FIRMWARE_BUILD_DIR / "lib")]
    monkeypatch.setenv("KIOSK_FIRMWARE_DIR", str(tmp_path))
    assert mpy.mp_path()[2:4] == [str(tmp_path.resolve()), str(tmp_path.resolve() / "lib")]
    env = mpy.mp_env()
    assert env["MICROPYPATH"].split(":")[2] == str(tmp_path.resolve())
    assert env["KIOSK_REPO"] == str(paths.REPO_ROOT)


def test_run_mp_uses_the_heap_and_cwd(tmp_path):
    proc = mpy.run_mp(
        ["-c", "import gc, os; print(gc.mem_free() + gc.mem_alloc(), os.getenv('KIOSK_MP_HEAP'), os.getcwd())"],
        cwd=tmp_path,
        heap=64 * 1024,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stdout
    total, heap, cwd = proc.stdout.split()
    assert heap == str(64 * 1024)
    assert int(total) <= 64 * 1024
    assert cwd == str(tmp_path)

