"""Fetch the pinned third-party MicroPython modules listed in mpylibs.lock.

    python -m kiosk_host.mpylibs [--dest build/mpylib] [--cache build/cache]

Each archive is looked up by name on the package index, downloaded into the
cache, and checked against the sha256 in the lock file before anything is
unpacked. A cached archive whose hash matches is used without a download,
so running this again is cheap and works offline.

Where the archives come from: --index-url, else $KIOSK_MPYLIB_INDEX_URL,
else $PIP_INDEX_URL (all PEP 503 "simple" indexes, file:// works too), else
PyPI's JSON API.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tarfile
import tempfile
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from . import paths

PYPI_JSON = "https://pypi.org/pypi/{name}/json"
TIMEOUT = 60.0
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_ANCHOR_RE = re.compile(r"<a\s[^>]*?href=\"([^\"]+)\"[^>]*>([^<]+)</a>", re.IGNORECASE)


class MpylibError(Exception):
    """A problem the user has to fix (bad lock file, hash mismatch, no network)."""


@dataclass(frozen=True)
class Archive:
    name: str
    version: str
    filename: str
    sha256: str
    extract: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Lock:
    archives: list[Archive]
    empty: list[str]


def _safe_relpath(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise MpylibError(f"{where}: expected a relative path, got {value!r}")
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or "\\" in value:
        raise MpylibError(f"{where}: path must stay inside the destination: {value!r}")
    return str(path)


def load_lock(lock_path: str | os.PathLike[str] = paths.LOCK_FILE) -> Lock:
    """Parse and validate the lock file."""
    lock_path = Path(lock_path)
    try:
        data = tomllib.loads(lock_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MpylibError(f"cannot read lock file {lock_path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise MpylibError(f"{lock_path}: not valid TOML: {exc}") from exc
    if data.get("format") != 1:
        raise MpylibError(f"{lock_path}: unsupported format {data.get('format')!r} (expected 1)")
    archives = []
    for i, entry in enumerate(data.get("archive", [])):
        where = f"{lock_path}: archive #{i + 1}"
        missing = [k for k in ("name", "version", "filename", "sha256", "extract") if k not in entry]
        if missing:
            raise MpylibError(f"{where}: missing {', '.join(missing)}")
        sha = str(entry["sha256"]).lower()
        if not _SHA256_RE.match(sha):
            raise MpylibError(f"{where}: sha256 must be 64 hex digits, got {entry['sha256']!r}")
        if not isinstance(entry["extract"], dict) or not entry["extract"]:
            raise MpylibError(f"{where}: extract must map archive members to paths")
        extract = {
            str(member): _safe_relpath(dest, f"{where} extract[{member!r}]")
            for member, dest in entry["extract"].items()
        }
        archives.append(
            Archive(
                name=str(entry["name"]),
                version=str(entry["version"]),
                filename=_safe_relpath(entry["filename"], f"{where} filename"),
                sha256=sha,
                extract=extract,
            )
        )
    empty = [_safe_relpath(p, f"{lock_path}: empty") for p in data.get("empty", [])]
    return Lock(archives=archives, empty=empty)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_url(url: str) -> bytes:
    """GET a URL (http(s) or file://); a file:// directory serves its index.html."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        local = Path(urllib.request.url2pathname(parsed.path))
        if local.is_dir():
            local = local / "index.html"
        try:
            return local.read_bytes()
        except OSError as exc:
            raise MpylibError(f"cannot read {url}: {exc}") from exc
    request = urllib.request.Request(url, headers={"User-Agent": "kiosk-host-mpylibs"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        raise MpylibError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MpylibError(f"cannot download {url}: {reason} (no network?)") from exc


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _url_from_simple_index(index_url: str, archive: Archive) -> str:
    page = index_url.rstrip("/") + "/" + _normalize(archive.name) + "/"
    html = _read_url(page).decode("utf-8", "replace")
    for href, text in _ANCHOR_RE.findall(html):
        if text.strip() == archive.filename:
            return urllib.parse.urljoin(page, href).split("#", 1)[0]
    raise MpylibError(f"{archive.filename} is not listed on {page}")


def _url_from_pypi_json(archive: Archive) -> str:
    # The per-version endpoint (/pypi/<name>/<version>/json) is not served by
    # every mirror; the project endpoint lists all releases.
    url = PYPI_JSON.format(name=urllib.parse.quote(archive.name))
    try:
        data = json.loads(_read_url(url))
    except ValueError as exc:
        raise MpylibError(f"{url}: not a JSON answer: {exc}") from exc
    files = data.get("releases", {}).get(archive.version)
    if files is None:
        raise MpylibError(f"{archive.name} {archive.version} is not on {url}")
    for item in files:
        if item.get("filename") == archive.filename:
            return str(item["url"])
    raise MpylibError(f"{archive.filename} is not among the files of {archive.name} {archive.version}")


def archive_url(archive: Archive, index_url: str | None = None) -> str:
    """Where to download `archive` from."""
    if index_url:
        return _url_from_simple_index(index_url, archive)
    return _url_from_pypi_json(archive)


def default_index_url() -> str | None:
    return os.environ.get("KIOSK_MPYLIB_INDEX_URL") or os.environ.get("PIP_INDEX_URL") or None


def ensure_cached(archive: Archive, cache_dir: Path, index_url: str | None = None) -> Path:
    """Return the cached archive, downloading it unless the cached copy's hash matches.

    A download whose hash does not match is discarded and is an error; the
    cache is only ever written with verified content.
    """
    cached = cache_dir / archive.filename
    if cached.is_file() and sha256_file(cached) == archive.sha256:
        return cached
    try:
        url = archive_url(archive, index_url)
        data = _read_url(url)
    except MpylibError as exc:
        raise MpylibError(
            f"{archive.name} {archive.version}: {exc}. To work offline, put "
            f"{archive.filename} (sha256 {archive.sha256}) into {cache_dir}/"
        ) from exc
    got = hashlib.sha256(data).hexdigest()
    if got != archive.sha256:
        raise MpylibError(
            f"sha256 mismatch for {archive.filename} ({archive.name} {archive.version}) "
            f"from {url}: expected {archive.sha256}, got {got}. Nothing was unpacked."
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache_dir, prefix=".part-", delete=False) as tmp:
        tmp.write(data)
    os.replace(tmp.name, cached)
    return cached


def _read_members(path: Path, archive: Archive) -> dict[str, bytes]:
    """The listed members' bytes; only regular files, never links."""
    wanted = set(archive.extract)
    found: dict[str, bytes] = {}
    if archive.filename.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.name in wanted:
                    if not member.isfile():
                        raise MpylibError(f"{archive.filename}: {member.name} is not a regular file")
                    fh = tar.extractfile(member)
                    assert fh is not None
                    found[member.name] = fh.read()
    elif archive.filename.endswith((".zip", ".whl")):
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if name in wanted:
                    found[name] = zf.read(name)
    else:
        raise MpylibError(f"{archive.filename}: unknown archive type")
    missing = sorted(wanted - set(found))
    if missing:
        raise MpylibError(f"{archive.filename}: members not found: {', '.join(missing)}")
    return found


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.is_file() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def fetch(
    dest: str | os.PathLike[str] = paths.MPYLIB_DIR,
    cache: str | os.PathLike[str] = paths.CACHE_DIR,
    lock_path: str | os.PathLike[str] = paths.LOCK_FILE,
    index_url: str | None = None,
    log=None,
) -> list[Path]:
    """Fetch, verify and unpack everything in the lock file; return the files written.

    Every archive is downloaded and verified before any file is unpacked, so
    a bad hash leaves `dest` untouched.
    """
    dest, cache = Path(dest), Path(cache)
    lock = load_lock(lock_path)
    index_url = index_url if index_url is not None else default_index_url()
    members: list[tuple[Archive, dict[str, bytes]]] = []
    for archive in lock.archives:
        cached = ensure_cached(archive, cache, index_url)
        members.append((archive, _read_members(cached, archive)))
    written = []
    for archive, contents in members:
        for member, relpath in archive.extract.items():
            target = dest / relpath
            _write_if_changed(target, contents[member])
            written.append(target)
        if log:
            log(f"{archive.name} {archive.version}: {len(archive.extract)} file(s) -> {dest}")
    for relpath in lock.empty:
        target = dest / relpath
        if not target.exists():
            _write_if_changed(target, b"")
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kiosk_host.mpylibs",
        description="Fetch, verify and unpack the third-party MicroPython modules in mpylibs.lock.",
    )
    parser.add_argument("--dest", type=Path, default=paths.MPYLIB_DIR, help="unpack here (default: %(default)s)")
    parser.add_argument("--cache", type=Path, default=paths.CACHE_DIR, help="keep archives here (default: %(default)s)")
    parser.add_argument("--lock", type=Path, default=paths.LOCK_FILE, help="lock file (default: %(default)s)")
    parser.add_argument("--index-url", default=None, help="PEP 503 simple index to fetch from instead of PyPI's JSON API")
    args = parser.parse_args(argv)
    try:
        fetch(args.dest, args.cache, args.lock, args.index_url, log=print)
    except MpylibError as exc:
        print(f"mpylibs: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
