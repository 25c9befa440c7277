"""The firmware build (kiosk_host.build) and the library fetcher (kiosk_host.mpylibs).

Works on small trees made here, not on firmware/, so it does not depend on
what the firmware currently contains, and never touches the network.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from kiosk_host import build, mpy, mpylibs, paths


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def tree(tmp_path):
    """A tiny firmware source tree, boards dir and library dir."""
    fw = tmp_path / "firmware"
    write(fw / "main.py", "import kiosk\n")
    write(fw / "boot.py", "# boot\n")
    write(fw / "kiosk" / "__init__.py", "")
    write(fw / "kiosk" / "version.py", 'VERSION = "1.2.3"\n')
    write(fw / "kiosk" / "util" / "calc.py", "def add(a, b):\n    return a + b\n\n\ndef boom():\n    raise ValueError('boom')\n")
    write(fw / "kiosk" / "defaults.json", '{"door_open_s": 30}\n')
    write(fw / "kiosk" / "__pycache__" / "stale.py", "junk\n")
    boards = tmp_path / "boards"
    write(boards / "tiny.json", '{"name": "tiny", "free_heap": 91000}\n')
    lib = tmp_path / "mpylib"
    write(lib / "fakelib" / "__init__.py", "")
    write(lib / "fakelib" / "mod.py", "VALUE = 42\n")
    return {"fw": fw, "boards": boards, "lib": lib, "tmp": tmp_path}


def run_build(tree, out: Path, **kwargs):
    return build.build(out, firmware_dir=tree["fw"], boards_dir=tree["boards"], mpylib_dir=tree["lib"], **kwargs)


def test_sources_become_mpy_except_main_and_boot(tree):
    out = tree["tmp"] / "out"
    manifest = run_build(tree, out)
    files = set(manifest["files"])
    assert files == {
        "main.py",
        "boot.py",
        "kiosk/__init__.mpy",
        "kiosk/version.mpy",
        "kiosk/util/calc.mpy",
        "kiosk/defaults.json",
        "lib/fakelib/__init__.mpy",
        "lib/fakelib/mod.mpy",
        "boards/tiny.json",
    }
    assert not list(out.rglob("__pycache__"))
    assert (out / "main.py").read_text() == "import kiosk\n"
    assert (out / "kiosk" / "util" / "calc.mpy").read_bytes()[:1] == b"M"
    assert manifest["version"] == "1.2.3"


def test_manifest_matches_files(tree):
    out = tree["tmp"] / "out"
    manifest = run_build(tree, out)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk == set(manifest["files"]) | {"manifest.json"}
    for rel, entry in manifest["files"].items():
        data = (out / rel).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}, rel
    assert build.file_hashes(out) == manifest["files"]


def test_build_is_reproducible(tree):
    first = run_build(tree, tree["tmp"] / "one")
    second = run_build(tree, tree["tmp"] / "two")
    again = run_build(tree, tree["tmp"] / "one")
    assert first == second == again
    assert (tree["tmp"] / "one" / "manifest.json").read_bytes() == (tree["tmp"] / "two" / "manifest.json").read_bytes()


def test_compiled_tree_runs_under_micropython(tree):
    out = tree["tmp"] / "out"
    run_build(tree, out)
    flash = tree["tmp"] / "flash"
    flash.mkdir()
    code = (
        "import kiosk.util.calc as c, fakelib.mod as m\n"
        "print('sum', c.add(2, 3), m.VALUE)\n"
        "c.boom()\n"
    )
    proc = mpy.run_mp(["-c", code], cwd=flash, firmware_dir=out, timeout=30)
    assert "sum 5 42" in proc.stdout, proc.stdout
    # Tracebacks name the file by its place in the tree, not the build machine's path.
    assert 'File "kiosk/util/calc.py"' in proc.stdout, proc.stdout
    assert proc.returncode == 1


def test_version_defaults_and_tuples(tree):
    (tree["fw"] / "kiosk" / "version.py").unlink()
    assert build.firmware_version(tree["fw"]) == "0.0.0"
    write(tree["fw"] / "kiosk" / "version.py", "from micropython import const\nVERSION = (2, 0, 1)\n")
    assert build.firmware_version(tree["fw"]) == "2.0.1"
    write(tree["fw"] / "kiosk" / "version.py", "X = 1\n")
    with pytest.raises(build.BuildError, match="no version found"):
        build.firmware_version(tree["fw"])


def test_version_flag_stamps_what_the_firmware_reports_and_other_sources_build(tree):
    """`--firmware-src` builds another tree (a release made from a branch,
    or a broken one for a test); `--version` stamps the version the
    manifest and the firmware both report; the freeze recipe stays off the
    flash."""
    write(tree["fw"] / "manifest.py", 'package("kiosk")\n')
    out = tree["tmp"] / "rel"
    r = subprocess.run([sys.executable, "-m", "kiosk_host.build", "--out", str(out), "--firmware-src", str(tree["fw"]),
                        "--boards", str(tree["boards"]), "--mpylib", str(tree["lib"]), "--version", "2.0.0-rc.1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == "2.0.0-rc.1" and "manifest.py" not in manifest["files"]
    assert "manifest.mpy" not in manifest["files"]
    assert build.file_hashes(out) == manifest["files"]
    proc = mpy.run_mp(["-c", "import kiosk.version as v\nprint('fw', v.VERSION)"], cwd=tree["tmp"], firmware_dir=out,
                      timeout=30)
    assert "fw 2.0.0-rc.1" in proc.stdout, proc.stdout
    plain = run_build(tree, tree["tmp"] / "plain")   # without --version: the sources' own
    assert plain["version"] == "1.2.3"
    assert plain["files"]["kiosk/version.mpy"] != manifest["files"]["kiosk/version.mpy"]
    for bad in ("", "1.0 beta", "../x", "v" * 33, "-1"):
        with pytest.raises(build.BuildError, match="version"):
            run_build(tree, tree["tmp"] / "bad", version=bad)
    r = subprocess.run([sys.executable, "-m", "kiosk_host.build", "--out", str(tree["tmp"] / "bad2"), "--firmware-src",
                        str(tree["fw"]), "--boards", str(tree["boards"]), "--mpylib", str(tree["lib"]),
                        "--version", "1 0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "version '1 0'" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_syntax_error_names_the_file(tree):
    write(tree["fw"] / "kiosk" / "broken.py", "def f(:\n")
    with pytest.raises(build.BuildError, match="broken.py"):
        run_build(tree, tree["tmp"] / "out")


def test_refuses_to_overwrite_a_directory_that_is_not_a_build(tree):
    out = tree["tmp"] / "precious"
    write(out / "notes.txt", "keep me\n")
    with pytest.raises(build.BuildError, match="refusing"):
        run_build(tree, out)
    assert (out / "notes.txt").read_text() == "keep me\n"


def test_board_march_is_passed_to_mpy_cross(tree):
    write(tree["boards"] / "xtensa.json", '{"name": "xtensa", "mpy_march": "xtensawin"}\n')
    assert build.board_march(tree["boards"], "xtensa") == "xtensawin"
    assert build.board_march(tree["boards"], "tiny") is None
    # Native code needs an architecture: it fails without -march, builds with it.
    write(tree["fw"] / "kiosk" / "fast.py", "import micropython\n\n@micropython.native\ndef f(x):\n    return x + 1\n")
    with pytest.raises(build.BuildError, match="invalid arch"):
        run_build(tree, tree["tmp"] / "plain")
    native = run_build(tree, tree["tmp"] / "native", board="xtensa")
    assert native["board"] == "xtensa"
    assert "kiosk/fast.mpy" in native["files"]
    with pytest.raises(build.BuildError, match="unknown board"):
        run_build(tree, tree["tmp"] / "x", board="nope")


# --- mpylibs -----------------------------------------------------------------


def make_archive(path: Path, members: dict[str, bytes]) -> str:
    """A .tar.gz with the given members; returns its sha256."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def make_index(root: Path, name: str, filename: str, archive: Path) -> str:
    """A file:// PEP 503 simple index listing one file; returns its URL."""
    page = root / "simple" / mpylibs._normalize(name) / "index.html"
    write(page, f'<html><body><a href="{archive.as_uri()}">{filename}</a></body></html>\n')
    return (root / "simple").as_uri()


LOCK_TEMPLATE = """\
format = 1
empty = ["demo/__init__.py"]

[[archive]]
name = "demo-lib"
version = "1.0"
filename = "demo-lib-1.0.tar.gz"
sha256 = "{sha}"

[archive.extract]
"demo-lib-1.0/demo/core.py" = "demo/core.py"
"""


def test_real_lock_file_lists_umqtt():
    lock = mpylibs.load_lock(paths.LOCK_FILE)
    targets = {dest for a in lock.archives for dest in a.extract.values()}
    assert {"umqtt/simple.py", "umqtt/robust.py"} <= targets
    assert "umqtt/__init__.py" in lock.empty


def test_fetch_unpacks_only_listed_members_and_is_idempotent(tmp_path):
    archive = tmp_path / "files" / "demo-lib-1.0.tar.gz"
    sha = make_archive(archive, {"demo-lib-1.0/demo/core.py": b"X = 1\n", "demo-lib-1.0/setup.py": b"junk\n"})
    lock = tmp_path / "mpylibs.lock"
    lock.write_text(LOCK_TEMPLATE.format(sha=sha))
    index = make_index(tmp_path / "index", "demo-lib", "demo-lib-1.0.tar.gz", archive)
    dest, cache = tmp_path / "mpylib", tmp_path / "cache"

    mpylibs.fetch(dest, cache, lock, index_url=index)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "demo/__init__.py",
        "demo/core.py",
    ]
    assert (dest / "demo" / "core.py").read_bytes() == b"X = 1\n"
    assert (cache / "demo-lib-1.0.tar.gz").read_bytes() == archive.read_bytes()

    # Second run: the cached archive matches, so the (now unreachable) index is not asked.
    mpylibs.fetch(dest, cache, lock, index_url="http://127.0.0.1:9/simple")
    assert (dest / "demo" / "core.py").read_bytes() == b"X = 1\n"


def test_tampered_hash_is_refused_and_nothing_is_unpacked(tmp_path):
    # The real lock file with one hash altered; the cache and the index only
    # offer a file that does not match, so no network is needed.
    lock_text = paths.LOCK_FILE.read_text()
    first = mpylibs.load_lock(paths.LOCK_FILE).archives[0]
    tampered = "0" * 64
    lock = tmp_path / "mpylibs.lock"
    lock.write_text(lock_text.replace(first.sha256, tampered))
    cache = tmp_path / "cache"
    wrong = cache / first.filename
    write(wrong, "not the archive\n")
    served = tmp_path / "files" / first.filename
    write(served, "not the archive either\n")
    index = make_index(tmp_path / "index", first.name, first.filename, served)
    dest = tmp_path / "mpylib"

    with pytest.raises(mpylibs.MpylibError, match="sha256 mismatch") as err:
        mpylibs.fetch(dest, cache, lock, index_url=index)
    assert first.filename in str(err.value) and tampered in str(err.value)
    assert not dest.exists()
    assert wrong.read_text() == "not the archive\n"  # a bad download never lands in the cache

    assert mpylibs.main(["--lock", str(lock), "--dest", str(dest), "--cache", str(cache), "--index-url", index]) == 1
    assert not dest.exists()


def test_offline_error_is_clear(tmp_path, capsys):
    rc = mpylibs.main(
        [
            "--dest", str(tmp_path / "mpylib"),
            "--cache", str(tmp_path / "cache"),
            "--index-url", "http://127.0.0.1:9/simple",  # nothing listens on the discard port
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert "cannot download" in err and "To work offline" in err, err
    assert not (tmp_path / "mpylib").exists()


def _run_manifest(port_requires: tuple[str, ...]) -> dict[str, list]:
    """Execute firmware/manifest.py the way MicroPython's tools/manifestfile.py
    does (its functions, paths relative to the manifest), recording what it
    freezes. The port's board manifest is stood in for by port_requires."""
    seen: dict[str, list] = {"require": [], "package": [], "module": [], "include": []}
    here = paths.FIRMWARE_DIR

    def include(path, **kw):
        seen["include"].append(path)
        if path == "$(PORT_DIR)/boards/manifest.py":
            for name in port_requires:
                seen["require"].append(name)

    def require(name, **kw):
        seen["require"].append(name)

    def package(name, files=None, base_path=".", opt=None):
        seen["package"].append(((here / base_path / name).resolve(), name))

    def module(name, base_path=".", opt=None):
        seen["module"].append(((here / base_path / name).resolve(), name))

    def freeze(path, script=None, opt=None):
        raise AssertionError("freeze() is legacy: use package()/module()")

    code = (here / "manifest.py").read_text(encoding="utf-8")
    exec(compile(code, "manifest.py", "exec"), {"include": include, "require": require, "package": package,
                                                  "module": module, "freeze": freeze, "metadata": lambda **kw: None,
                                                  "options": type("O", (), {})()})
    return seen


@pytest.mark.parametrize("port_requires", [("umqtt.robust", "umqtt.simple"), ()], ids=["esp32", "rp2"])
def test_image_manifest_freezes_every_layer_and_one_umqtt(port_requires):
    seen = _run_manifest(port_requires)
    # The whole kiosk package, every layer's folder with it.
    assert (paths.FIRMWARE_DIR / "kiosk", "kiosk") in seen["package"], seen
    for layer in ("hw", "core", "link", "service"):
        assert (paths.FIRMWARE_DIR / "kiosk" / layer / "__init__.py").is_file()
    # umqtt only as micropython-lib's package, as the ESP32 port's own board
    # manifest already asks for it: never a second copy from build/mpylib.
    assert "umqtt.simple" in seen["require"], seen
    frozen = [name for _, name in seen["package"] + seen["module"]]
    assert not any(n.startswith("umqtt") for n in frozen), frozen
