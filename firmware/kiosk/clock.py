# Wall-clock time for signed messages and command freshness: Unix seconds.
# Boards without a backed-up RTC wake up in the past, and some ports count
# from 2000 instead of 1970; both are handled here and nowhere else. The
# host's acknowledgements carry its time, and the link corrects this clock
# from them (only from signed acks that acknowledge something new, so an
# old ack replayed by someone else cannot wind the clock back).
import time
from kiosk.contract import K_CLOCK

# Seconds from 1970-01-01 to the port's epoch (2000-01-01 on some ports).
EPOCH = 946684800 if time.gmtime(0)[0] == 2000 else 0
TOLERANCE_S = 2

_off = [0]
_synced = [False]   # the host's time was taken in this boot


def now():
    """Unix time in whole seconds."""
    return int(time.time()) + EPOCH + _off[0]


def offset():
    return _off[0]


def synced():
    """True once a host's signed ack gave the time in this boot. Before
    that, now() is the board's own idea: 2000-01-01 on the ESP32,
    2021-01-01 on the RP2350, plus the uptime."""
    return _synced[0]


def adjust(host_t, event=None):
    """Follow the host's clock when it differs by more than TOLERANCE_S.
    Returns the step taken in seconds (0 if none); event(kind, fields)
    journals each step once."""
    d = host_t - now()
    _synced[0] = True
    if -TOLERANCE_S <= d <= TOLERANCE_S:
        return 0
    _off[0] += d
    if event:
        event(K_CLOCK, {"step_s": d, "host_t": host_t})
    return d
