# Small state files on flash (current operation, waiting operations, bin
# stock, counters, seen command ids, climate, config): the one place that
# knows how to replace them so a power cut leaves the old or the new file,
# never half of one, and how to read back what a cut may have left.
#
# A replacement writes <path>.tmp, syncs it, then renames it over <path>.
# LittleFS renames atomically. FAT will not rename over an existing file,
# so there the old file is removed first: a cut in between leaves only the
# complete <path>.tmp, which every reader here takes in its place.
import json
import os

_sync = getattr(os, "sync", None)


class Corrupt(Exception):
    """The file is there but neither it nor a temp copy reads back."""


def _commit(path):
    tmp = path + ".tmp"
    try:
        os.rename(tmp, path)
    except OSError:  # FAT will not rename over an existing file
        os.remove(path)
        os.rename(tmp, path)
    if _sync:
        _sync()


def replace(path, text):
    """Replace path's content with text (str or bytes) atomically."""
    with open(path + ".tmp", "wb" if isinstance(text, (bytes, bytearray)) else "w") as f:
        f.write(text)
    _commit(path)


class atomic:
    """Write a larger file in pieces, atomically: `with atomic(p) as f:
    f.write(...)`. Nothing replaces p unless the block ends without an
    exception."""

    def __init__(self, path):
        self.path = path
        self.f = None

    def __enter__(self):
        self.f = open(self.path + ".tmp", "wb")
        return self.f

    def __exit__(self, kind, value, tb):
        self.f.close()
        if kind is None:
            _commit(self.path)
        return False


def open_latest(path):
    """An open binary file of path, or of the temp copy a cut between the
    two steps of a FAT replacement left; None if neither exists. The caller
    checks the content (a torn temp file is possible)."""
    for p in (path, path + ".tmp"):
        try:
            return open(p, "rb")
        except OSError:
            pass
    return None


def load_json(path):
    """The object in path (or in its complete temp copy); None when neither
    exists; raises Corrupt when something is there but none of it parses.
    For files whose loss must not pass silently (replay memory)."""
    present = False
    for p in (path, path + ".tmp"):
        try:
            f = open(p)
        except OSError:
            continue
        present = True
        try:
            with f:
                return json.load(f)
        except ValueError:  # torn or damaged: try the other copy
            pass
    if present:
        raise Corrupt(path)
    return None


def read_json(path, default=None):
    """The object in path (or in its complete temp copy), or default when
    neither is there or readable: the caller decides what an absent record
    means."""
    try:
        v = load_json(path)
    except Corrupt:
        return default
    return default if v is None else v


def write_json(path, obj):
    replace(path, json.dumps(obj))


def read_counter(path):
    """A counter file's value ("123\\n"): the larger of the file and a
    complete temp file a power cut left before its rename; 0 if neither
    is readable (absent or torn). Counters only ever grow."""
    v = 0
    for p in (path, path + ".tmp"):
        try:
            with open(p, "rb") as f:  # binary: garbage must not raise
                s = f.read(24)
        except OSError:
            continue
        if len(s) > 1 and s[-1] == 10 and s[:-1].isdigit():
            v = max(v, int(s[:-1]))
    return v


def write_counter(path, n):
    replace(path, "%d\n" % n)


def remove(path):
    """Remove path and any temp copy of it."""
    for p in (path, path + ".tmp"):
        try:
            os.remove(p)
        except OSError:
            pass


def makedirs(path):
    """Make path and the folders above it; those already there are fine."""
    cur = ""
    for part in path.split("/"):
        cur = cur + "/" + part if cur else part
        try:
            os.mkdir(cur)
        except OSError:
            pass
