# Small state files on flash (current operation, bin stock, counters, seen
# command ids, config): replaced atomically (write a temp file, then rename,
# which LittleFS does atomically) so a power cut leaves the old or the new
# file, never half of one.
import json
import os

_sync = getattr(os, "sync", None)


def replace(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    try:
        os.rename(tmp, path)
    except OSError:  # FAT will not rename over an existing file
        os.remove(path)
        os.rename(tmp, path)
    if _sync:
        _sync()


def write_json(path, obj):
    replace(path, json.dumps(obj))


def read_json(path, default=None):
    """The file's object, or default when it is absent or torn (a torn file
    can only be a leftover temp file's victim; the caller decides what an
    absent record means)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def remove(path):
    try:
        os.remove(path)
    except OSError:
        pass
