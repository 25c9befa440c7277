# Wi-Fi, as part of the hardware layer: the only firmware module that uses
# `network`. Boards with a WLAN interface join the configured network (the
# connect call returns at once; we only poll), boards or ports without one
# (the unix port, wired boards) count as always connected.
import time
from micropython import const

try:
    import network
except ImportError:
    network = None

_RETRY_MS = const(10000)

_wlan = [None]
_next = [0]


def _if():
    w = _wlan[0]
    if w is None and network is not None and hasattr(network, "WLAN"):
        w = network.WLAN(network.STA_IF)
        w.active(True)
        _wlan[0] = w
    return w


def ready(wifi=None):
    """True when the network can carry traffic. Starts (and every 10 s
    restarts) joining wifi {"ssid", "password"} while it cannot. Never
    blocks."""
    w = _if()
    if w is None:
        return True
    if w.isconnected():
        return True
    now = time.ticks_ms()
    if wifi and wifi.get("ssid") and time.ticks_diff(now, _next[0]) >= 0:
        _next[0] = time.ticks_add(now, _RETRY_MS)
        try:
            w.connect(wifi["ssid"], wifi.get("password") or "")
        except OSError:
            pass
    return False


def rssi():
    """Signal strength in dBm, or None (no Wi-Fi, or not known)."""
    w = _wlan[0]
    if w is None:
        return None
    for f in (w.status, w.config):
        try:
            v = f("rssi")
            if isinstance(v, int):
                return v
        except Exception:
            pass
    return None
