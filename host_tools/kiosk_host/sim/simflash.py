# The emulated board's flash has a size: the folder standing for it is a
# host directory with room to spare, so a write that would take the files
# under it past `size` bytes fails as it would on a full LittleFS partition,
# with OSError(ENOSPC). emuboot installs it before the firmware starts
# (files opened for writing on the flash are wrapped; reads are the real
# files); it has no size, and so checks nothing, until the control channel
# sets one ({"op": "flash", "size": N}).
import builtins
import os

ENOSPC = 28
_real_open = builtins.open
_state = {"size": None, "root": None}


def _used(path):
    """Bytes in the files under path (the flash in use)."""
    total = 0
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return 0
    for e in entries:
        p = path + "/" + e[0]
        if e[1] == 0x4000:
            total += _used(p)
        else:
            try:
                total += os.stat(p)[6]
            except OSError:
                pass
    return total


class _Limited:
    """A file opened for writing, which fails when the flash is full."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        size = _state["size"]
        if size is not None and _used(_state["root"]) + len(data) > size:
            raise OSError(ENOSPC)
        return self._f.write(data)

    def flush(self):
        return self._f.flush()

    def close(self):
        return self._f.close()

    def read(self, *a):
        return self._f.read(*a)

    def readline(self, *a):
        return self._f.readline(*a)

    def seek(self, *a):
        return self._f.seek(*a)

    def tell(self):
        return self._f.tell()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
        return False


def _on_flash(path):
    p = str(path)
    return not p.startswith("/") or p.startswith(_state["root"] + "/")


def _open(path, mode="r", *args):
    f = _real_open(path, mode, *args)
    if ("w" in mode or "a" in mode or "+" in mode) and _on_flash(path):
        return _Limited(f)
    return f


def install():
    """Wrap writes to the flash (the working directory) from now on."""
    if _state["root"] is None:
        _state["root"] = os.getcwd()
    builtins.open = _open


def set_size(size):
    """The flash holds `size` bytes from now on (None: as much as the host
    has). Returns what is in use and what is free."""
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise ValueError("flash size must be a number of bytes, or null")
    install()
    _state["size"] = size
    return state()


def state():
    used = _used(_state["root"] or os.getcwd())
    size = _state["size"]
    return {"size": size, "used": used, "free": None if size is None else max(0, size - used)}
