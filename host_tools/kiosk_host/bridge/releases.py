"""Firmware releases the bridge keeps for over-the-air updates (docs/ota.md).

A release is a build tree (`python -m kiosk_host.build --out DIR`) uploaded
as a .tar.gz. Nothing of it is trusted before it is checked: the archive
holds only regular files and folders with plain relative paths, within size
limits; its manifest.json is well formed; every file it lists is there with
that sha256 and size, and nothing else is. The release keeps the files that
go into a kiosk's firmware slot (kiosk_host.layout) and the slot manifest
kiosks are sent first, in the bridge's store, so every bridge sharing the
store serves the same bytes. The release id is derived from the manifest:
uploading the same build twice gives the same release.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import tarfile
import time
from typing import Any

from .. import build, layout
from .store import Store

MAX_UPLOAD = 8 * 1024 * 1024        # the .tar.gz
MAX_UNPACKED = 16 * 1024 * 1024     # every file in it
MAX_FILES = 400                     # the kiosk's own limit for a slot
MAX_FILE = 512 * 1024
# A path a kiosk writes into a slot: kiosk/... or lib/..., plain names (the
# kiosk checks the same, kiosk/link/ota.py).
SLOT_PATH = re.compile(r"^(kiosk|lib)(/[A-Za-z0-9_][A-Za-z0-9_.-]*)+$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS releases (
        id TEXT PRIMARY KEY, version TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, created_by TEXT,
        manifest TEXT NOT NULL, slot_manifest TEXT NOT NULL, slot_sha256 TEXT NOT NULL,
        size BIGINT NOT NULL, files INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS release_files (
        release TEXT NOT NULL, idx INTEGER NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL,
        size BIGINT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (release, idx))""",
]


class ReleaseError(Exception):
    """An upload the bridge refuses; the message says what is wrong with it."""


def unpack(data: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(manifest, {path: bytes}) of an uploaded build tree, checked."""
    if len(data) > MAX_UPLOAD:
        raise ReleaseError(f"the archive is {len(data)} bytes; at most {MAX_UPLOAD}")
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")
        members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        raise ReleaseError(f"not a .tar.gz archive: {e}") from None
    if len(members) > MAX_FILES + 100:
        raise ReleaseError(f"{len(members)} entries in the archive; at most {MAX_FILES + 100}")
    names = [_clean(m.name) for m in members]
    prefix = _prefix(names)
    files: dict[str, bytes] = {}
    total = 0
    for m, name in zip(members, names):
        if m.isdir():
            continue
        if not m.isfile():
            raise ReleaseError(f"{m.name}: only regular files and folders may be in a release (no links or devices)")
        if not name.startswith(prefix):
            raise ReleaseError(f"{m.name}: outside the build tree {prefix or '/'}")
        rel = name[len(prefix):]
        if m.size > MAX_FILE:
            raise ReleaseError(f"{m.name}: {m.size} bytes; a file may have at most {MAX_FILE}")
        total += m.size
        if total > MAX_UNPACKED:
            raise ReleaseError(f"the archive unpacks to more than {MAX_UNPACKED} bytes")
        if rel in files:
            raise ReleaseError(f"{m.name}: in the archive twice")
        f = tar.extractfile(m)
        files[rel] = f.read() if f is not None else b""
    raw = files.pop(build.MANIFEST, None)
    if raw is None:
        raise ReleaseError(f"no {build.MANIFEST} at the top of the build tree (build with python -m kiosk_host.build)")
    return _check_manifest(raw, files), files


def _clean(name: str) -> str:
    """A member's path, plain and relative, or ReleaseError."""
    n = name
    while n.startswith("./"):
        n = n[2:]
    n = n.rstrip("/")
    parts = n.split("/")
    if (not n or name.startswith("/") or "\\" in name or "\0" in name
            or any(p in ("", ".", "..") for p in parts)):
        if n in ("", "."):
            return ""
        raise ReleaseError(f"{name!r}: not a plain relative path")
    return n


def _prefix(names: list[str]) -> str:
    """The build tree's folder in the archive: "" when manifest.json is at
    the top, "DIR/" when the archive holds one folder with it."""
    if build.MANIFEST in names:
        return ""
    tops = {n.split("/")[0] for n in names if n}
    if len(tops) == 1:
        top = tops.pop()
        if f"{top}/{build.MANIFEST}" in names:
            return top + "/"
    return ""


def _check_manifest(raw: bytes, files: dict[str, bytes]) -> dict[str, Any]:
    try:
        m = json.loads(raw)
    except ValueError as e:
        raise ReleaseError(f"{build.MANIFEST}: not valid JSON: {e}") from None
    if not isinstance(m, dict) or not isinstance(m.get("files"), dict):
        raise ReleaseError(f"{build.MANIFEST}: needs \"version\" and \"files\"")
    try:
        build.check_version(m.get("version"))
    except build.BuildError as e:
        raise ReleaseError(f"{build.MANIFEST}: {e}") from None
    listed = m["files"]
    for path, meta in listed.items():
        if (not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str) or not SHA256.match(meta["sha256"])
                or not isinstance(meta.get("size"), int) or isinstance(meta.get("size"), bool)):
            raise ReleaseError(f"{build.MANIFEST}: {path}: needs a sha256 (64 hex digits) and a size")
        data = files.get(path)
        if data is None:
            raise ReleaseError(f"{path}: listed in {build.MANIFEST} but not in the archive")
        if len(data) != meta["size"] or hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise ReleaseError(f"{path}: its content does not match {build.MANIFEST} (sha256 or size)")
        if layout.in_slot(path) and not SLOT_PATH.match(path):
            raise ReleaseError(f"{path}: not a path a kiosk writes (letters, digits, _ . - in kiosk/ or lib/)")
    extra = sorted(set(files) - set(listed))
    if extra:
        raise ReleaseError(f"{', '.join(extra[:5])}: in the archive but not in {build.MANIFEST}")
    slot, _ = layout.split(listed)
    if not any(p.startswith("kiosk/") for p in slot):
        raise ReleaseError("no kiosk/ firmware in the release")
    if len(slot) > MAX_FILES:
        raise ReleaseError(f"{len(slot)} firmware files; a slot holds at most {MAX_FILES}")
    return m


def release_id(manifest: dict[str, Any]) -> str:
    canon = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return "rel-" + hashlib.sha256(canon).hexdigest()[:16]


class Releases:
    """The releases in the bridge's store."""

    def __init__(self, store: Store):
        self.store = store
        self._cache: dict[str, list[bytes]] = {}     # release -> [slot manifest, file 1, ...]
        store.migrate(SCHEMA)

    def add(self, data: bytes, by: str | None) -> tuple[dict[str, Any], bool]:
        """Check and keep an uploaded build tree; (the release, whether it is new)."""
        manifest, files = unpack(data)
        rid = release_id(manifest)
        slot, _ = layout.split(manifest["files"])
        smanifest = layout.slot_manifest(manifest)
        names = sorted(slot)
        s = self.store
        with s._tx():
            if s._one("SELECT id FROM releases WHERE id = ?", (rid,)) is not None:
                new = False
            else:
                new = True
                s._exec("INSERT INTO releases (id, version, created, created_by, manifest, slot_manifest, slot_sha256, "
                        "size, files) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (rid, manifest["version"], time.time(), by, json.dumps(manifest, sort_keys=True),
                         smanifest.decode(), layout.digest(smanifest),
                         len(smanifest) + sum(len(files[n]) for n in names), len(names)))
                s._many("INSERT INTO release_files (release, idx, path, sha256, size, data) VALUES (?, ?, ?, ?, ?, ?)",
                        [(rid, i, n, slot[n]["sha256"], slot[n]["size"], base64.b64encode(files[n]).decode())
                         for i, n in enumerate(names, 1)])
        return self.get(rid), new

    def get(self, rid: str) -> dict[str, Any] | None:
        with self.store.lock:
            r = self.store._one("SELECT id, version, created, created_by, slot_sha256, size, files "
                                "FROM releases WHERE id = ?", (rid,))
        return None if r is None else self._row(r)

    def list(self) -> list[dict[str, Any]]:
        with self.store.lock:
            rows = self.store._all("SELECT id, version, created, created_by, slot_sha256, size, files "
                                   "FROM releases ORDER BY created DESC")
        return [self._row(r) for r in rows]

    @staticmethod
    def _row(r) -> dict[str, Any]:
        return {"release_id": r[0], "version": r[1], "created": r[2], "created_by": r[3], "manifest_sha256": r[4],
                "size": r[5], "files": r[6]}

    def parts(self, rid: str) -> list[bytes]:
        """What a kiosk is sent, by index: [slot manifest, file 1, ...]."""
        got = self._cache.get(rid)
        if got is None:
            with self.store.lock:
                head = self.store._one("SELECT slot_manifest FROM releases WHERE id = ?", (rid,))
                if head is None:
                    raise KeyError(rid)
                rows = self.store._all("SELECT data FROM release_files WHERE release = ? ORDER BY idx", (rid,))
            got = [head[0].encode()] + [base64.b64decode(d) for (d,) in rows]
            if len(self._cache) >= 4:
                self._cache.pop(next(iter(self._cache)))
            self._cache[rid] = got
        return got
