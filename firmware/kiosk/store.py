# Small state files on flash (current operation, bin stock, counters):
# replaced atomically (write a temp file, then rename, which LittleFS does
# atomically) so a power cut leaves the old or the new file, never half.
import json
import os


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.rename(tmp, path)


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
