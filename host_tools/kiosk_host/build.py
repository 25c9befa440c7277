"""Build the tree that goes onto a board's flash.

    python -m kiosk_host.build [--out build/firmware] [--board NAME]
                               [--firmware-src DIR] [--version V]

- every .py under firmware/ (or --firmware-src) is compiled to .mpy with
  mpy-cross, folders kept; the top-level main.py and boot.py stay source
  files, because MicroPython only runs those two by their .py names at
  boot; firmware/manifest.py (the recipe for freezing the firmware into a
  MicroPython image) is not part of the flash;
- other files under firmware/ are copied as they are;
- the third-party modules in build/mpylib/ (see kiosk_host.mpylibs) are
  compiled into lib/;
- boards/*.json are copied into boards/;
- manifest.json lists every other file with its sha256 and size, and the
  firmware version from firmware/kiosk/version.py ("0.0.0" without one);
  --version V stamps V instead: kiosk/version.mpy is compiled to say V, so
  the firmware reports what the manifest says.

The tree is a release: kioskctl deploy, the emulator and the bridge's
over-the-air updates install it into the flash's slot layout
(kiosk_host.layout, docs/ota.md).

The same inputs give byte-identical outputs (the name compiled into each
.mpy is its path in the tree, not where the build ran), so two builds have
the same manifest.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable

from . import paths

MANIFEST = "manifest.json"
BOOT_SOURCES = frozenset({"main.py", "boot.py"})
BUILD_ONLY = frozenset({"manifest.py"})   # the freeze recipe: for an image build, not the flash
VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,31}$")
VERSION_FILE = Path("kiosk") / "version.py"
VERSION_NAMES = ("VERSION", "__version__", "FIRMWARE_VERSION", "version")
DEFAULT_VERSION = "0.0.0"
MARCH_KEYS = ("mpy_march", "march")
_SKIP_DIRS = frozenset({"__pycache__"})
_SKIP_SUFFIXES = (".pyc", ".mpy", ".tmp", "~")


class BuildError(Exception):
    """The build cannot go on; the message says why."""


def _source_files(root: Path) -> list[Path]:
    """Files under root, relative, sorted; no hidden files, caches or stale bytecode."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or name.endswith(_SKIP_SUFFIXES):
                continue
            found.append((Path(dirpath) / name).relative_to(root))
    return sorted(found, key=lambda p: p.as_posix())


def file_hashes(directory: str | os.PathLike[str], exclude: Iterable[str] = (MANIFEST,)) -> dict[str, dict[str, Any]]:
    """{posix relpath: {"sha256": hex, "size": bytes}} for every file under directory.

    Paths in `exclude` (relative, posix) are left out; by default the
    top-level manifest.json.
    """
    directory = Path(directory)
    skip = set(exclude)
    result: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel in skip:
            continue
        data = path.read_bytes()
        result[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    return dict(sorted(result.items()))


def firmware_version(firmware_dir: str | os.PathLike[str]) -> str:
    """The version string assigned in <firmware>/kiosk/version.py, read without running it.

    Accepts VERSION / __version__ / FIRMWARE_VERSION / version set to a
    string or to a tuple of ints (joined with dots). No file: "0.0.0".
    """
    path = Path(firmware_dir) / VERSION_FILE
    if not path.is_file():
        return DEFAULT_VERSION
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as exc:
        raise BuildError(f"{path}: {exc}") from exc
    values: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id in VERSION_NAMES:
                    try:
                        values[target.id] = ast.literal_eval(node.value)
                    except ValueError:
                        continue
    for name in VERSION_NAMES:
        value = values.get(name)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, tuple) and value and all(isinstance(v, int) for v in value):
            return ".".join(map(str, value))
    raise BuildError(
        f"{path}: no version found; assign a string literal to one of {', '.join(VERSION_NAMES)}"
    )


def board_march(boards_dir: Path, board: str) -> str | None:
    """The -march a board asks for (key mpy_march or march in its JSON), if any."""
    path = boards_dir / f"{board}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in boards_dir.glob("*.json"))) or "none"
        raise BuildError(f"unknown board {board!r}: no {path} (known: {known})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise BuildError(f"{path}: not valid JSON: {exc}") from exc
    for key in MARCH_KEYS:
        if isinstance(data, dict) and data.get(key):
            return str(data[key])
    return None


def compile_py(src: Path, dest: Path, source_name: str, march: str | None = None) -> None:
    """Compile one file with mpy-cross; source_name is what tracebacks will show."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(paths.mpy_cross_exe()), "-o", str(dest), "-s", source_name]
    if march:
        cmd.append(f"-march={march}")
    cmd.append(str(src))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"mpy-cross failed on {src}:\n{proc.stdout.rstrip()}")


def _prepare_out(out_dir: Path) -> None:
    """Refuse to replace anything that is not a previous build."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise BuildError(f"{out_dir} exists and is not a directory")
        if any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
            raise BuildError(f"{out_dir} is not empty and holds no {MANIFEST}; refusing to overwrite it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)


def _compile_tree(src_root: Path, out_root: Path, prefix: str, march: str | None, keep_source: frozenset[str],
                  skip: frozenset[str] = frozenset()) -> None:
    for rel in _source_files(src_root):
        src = src_root / rel
        posix = rel.as_posix()
        if posix in skip:
            continue
        if rel.suffix == ".py" and posix not in keep_source:
            target = out_root / rel.with_suffix(".mpy")
            compile_py(src, target, prefix + posix, march)
        else:
            target = out_root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)


def check_version(version: str) -> str:
    """A version string a manifest, a birth message and a file name can all
    carry: 1-32 characters of letters, digits and . + _ -."""
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise BuildError(f"version {version!r}: use 1-32 letters, digits and . + _ - (starting with a letter or digit)")
    return version


def _stamp_version(out: Path, version: str, march: str | None) -> None:
    """Compile kiosk/version.mpy to say version (the firmware reports it)."""
    src = out / ".version.py"
    src.write_text(f"VERSION = {version!r}\n", encoding="utf-8")
    try:
        compile_py(src, out / VERSION_FILE.with_suffix(".mpy"), VERSION_FILE.as_posix(), march)
    finally:
        src.unlink()


def write_manifest(out_dir: Path, version: str, board: str | None = None) -> dict[str, Any]:
    manifest: dict[str, Any] = {"version": version}
    if board:
        manifest["board"] = board
    manifest["files"] = file_hashes(out_dir)
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def build(
    out_dir: str | os.PathLike[str] = paths.FIRMWARE_BUILD_DIR,
    firmware_dir: str | os.PathLike[str] = paths.FIRMWARE_DIR,
    boards_dir: str | os.PathLike[str] = paths.BOARDS_DIR,
    mpylib_dir: str | os.PathLike[str] = paths.MPYLIB_DIR,
    board: str | None = None,
    march: str | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """Build the flash tree into out_dir (replacing a previous build) and return the manifest.

    `board` picks boards/<board>.json, whose mpy_march (if set) is passed to
    mpy-cross; an explicit `march` wins. Without either no -march is given
    and the bytecode runs on any port. `version` stamps that version instead
    of the one in the sources.
    """
    out, fw, boards, mpylib = (Path(p).resolve() for p in (out_dir, firmware_dir, boards_dir, mpylib_dir))
    if not fw.is_dir():
        raise BuildError(f"firmware directory {fw} does not exist")
    if not mpylib.is_dir():
        raise BuildError(f"{mpylib} does not exist; fetch the libraries first: make mpylibs")
    if board and not march:
        march = board_march(boards, board)
    stamp = version is not None
    version = check_version(version) if stamp else firmware_version(fw)
    _prepare_out(out)
    tmp = _staging(out)
    _compile_tree(fw, tmp, "", march, BOOT_SOURCES, BUILD_ONLY)
    if stamp:
        _stamp_version(tmp, version, march)
    _compile_tree(mpylib, tmp / "lib", "lib/", march, frozenset())
    if boards.is_dir():
        for path in sorted(boards.glob("*.json")):
            (tmp / "boards").mkdir(exist_ok=True)
            shutil.copyfile(path, tmp / "boards" / path.name)
    manifest = write_manifest(tmp, version, board)
    _swap_in(tmp, out)
    return manifest


def _staging(out: Path) -> Path:
    """A fresh sibling folder to build into: a tree in use (by a running
    emulator or another test session) is replaced only when complete."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _swap_in(tmp: Path, out: Path) -> None:
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    if old.exists():
        shutil.rmtree(old)


def build_sim(out_dir: str | os.PathLike[str] = paths.SIM_BUILD_DIR) -> Path:
    """Compile the emulator's MicroPython modules (the simulated machine and
    world) to .mpy, as the firmware is, so the emulator loads both alike."""
    out = Path(out_dir).resolve()
    tmp = _staging(out)
    for src in sorted(paths.SIM_DIR.glob("*.py")):
        if src.name != "__init__.py":
            compile_py(src, tmp / (src.stem + ".mpy"), src.name)
    _swap_in(tmp, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kiosk_host.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=paths.FIRMWARE_BUILD_DIR, help="output tree (default: %(default)s)")
    parser.add_argument("--board", help="board name (boards/NAME.json); sets -march if the board has mpy_march")
    parser.add_argument("--firmware-src", "--firmware", dest="firmware", type=Path, default=paths.FIRMWARE_DIR,
                        help="firmware sources (default: %(default)s)")
    parser.add_argument("--version", help="stamp this version (default: the one in kiosk/version.py)")
    parser.add_argument("--boards", type=Path, default=paths.BOARDS_DIR, help="board definitions (default: %(default)s)")
    parser.add_argument("--mpylib", type=Path, default=paths.MPYLIB_DIR, help="third-party modules (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        manifest = build(args.out, args.firmware, args.boards, args.mpylib, board=args.board, version=args.version)
    except (BuildError, FileNotFoundError) as exc:
        print(f"build: error: {exc}", file=sys.stderr)
        return 1
    total = sum(f["size"] for f in manifest["files"].values())
    print(f"built firmware {manifest['version']} into {args.out}: {len(manifest['files'])} files, {total} bytes")
    if args.out.resolve() == paths.FIRMWARE_BUILD_DIR.resolve():
        build_sim()
    return 0


if __name__ == "__main__":
    sys.exit(main())
