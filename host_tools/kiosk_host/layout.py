"""The flash layout with firmware slots, seen from the host (docs/ota.md).

A release (a build tree from kiosk_host.build) holds two kinds of file:

- slot files, under kiosk/ and lib/: the firmware proper. They are
  installed into a slot, fw/a/ or fw/b/, beside the slot's manifest.txt.
  An over-the-air update replaces these, and only these;
- root files: main.py and bootsel.mpy (the boot selector) and boards/*.json
  (the wiring). kioskctl deploy and the emulator install them; an update
  never does, because the selector is what recovers a bad update and the
  board files describe hardware that does not change with the firmware.

Everything else at the root (config.json, the journal, stock, replay
memory, climate history) belongs to the kiosk and no installer touches it.
The board side of the same layout is firmware/bootsel.py.
"""

from __future__ import annotations

import hashlib
from typing import Any

SLOTS = ("a", "b")
SLOT_DIRS = ("kiosk/", "lib/")
STATE = "fw/boot.json"
SLOT_MANIFEST = "manifest.txt"
SLOT_MAGIC = "kiosk-slot 1"
# The flat layout's firmware at the root of the flash, from before slots:
# removed once a slot holds the firmware.
LEGACY = ("kiosk", "lib", "manifest.json")


def in_slot(rel: str) -> bool:
    """A release file that belongs in a slot (else at the root)."""
    return rel.startswith(SLOT_DIRS)


def slot_dir(slot: str) -> str:
    if slot not in SLOTS:
        raise ValueError(f"no slot {slot!r}: slots are {', '.join(SLOTS)}")
    return f"fw/{slot}"


def running_slot(state: dict[str, Any] | None) -> str | None:
    """The slot a board runs by its fw/boot.json (bootsel.running), or None
    in the flat layout."""
    if not isinstance(state, dict):
        return None
    if state.get("trial") in SLOTS and state.get("trying"):
        return state["trial"]
    return state.get("active") if state.get("active") in SLOTS else SLOTS[0]


def split(files: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A manifest's files as (slot files, root files)."""
    slot = {k: v for k, v in files.items() if in_slot(k)}
    root = {k: v for k, v in files.items() if not in_slot(k)}
    return slot, root


def slot_manifest(manifest: dict[str, Any]) -> bytes:
    """The manifest a slot keeps (and an update sends first): its version,
    then one line per slot file, "<sha256> <size> <path>", sorted by path.
    Plain lines, so the kiosk reads it one line at a time."""
    slot, _ = split(manifest["files"])
    lines = [SLOT_MAGIC, f"version {manifest['version']}"]
    lines += [f"{slot[p]['sha256']} {slot[p]['size']} {p}" for p in sorted(slot)]
    return ("\n".join(lines) + "\n").encode()


def parse_slot_manifest(data: bytes) -> tuple[str, dict[str, tuple[str, int]]]:
    """(version, {path: (sha256, size)}) of a slot manifest; ValueError if
    it is not one."""
    lines = data.decode().split("\n")
    if len(lines) < 3 or lines[0] != SLOT_MAGIC or not lines[1].startswith("version ") or lines[-1] != "":
        raise ValueError("not a slot manifest")
    files = {}
    for line in lines[2:-1]:
        sha, size, path = line.split(" ", 2)
        files[path] = (sha, int(size))
    return lines[1][8:], files


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
