# Wall-clock time for signed messages and command freshness: Unix seconds.
# Boards without a backed-up RTC wake up in the past, and some ports count
# from 2000 instead of 1970; both are handled here and nowhere else. The
# host's acknowledgements carry its time, and the link corrects this clock
# from them (only from signed acks that acknowledge something new, so an
# old ack replayed by someone else cannot wind the clock back).
#
# An ack's time is when the host sent it: one that waited in a queue says
# the host is earlier than it is. So a step forward is taken at once, but a
# step back only when every ack over BACK_WINDOW_MS (BACK_ACKS of them at
# least) says the kiosk runs ahead, and then only by the least of them: one
# late ack never moves the clock back.
import time
from kiosk.contract import K_CLOCK

# Seconds from 1970-01-01 to the port's epoch (2000-01-01 on some ports).
EPOCH = 946684800 if time.gmtime(0)[0] == 2000 else 0
TOLERANCE_S = 2
BACK_ACKS = 3             # acks that must agree before a step back
BACK_WINDOW_MS = 20000    # ... over at least this long

_off = [0]
_synced = [False]   # the host's time was taken in this boot
_back = [0, 0, 0]  # acks saying "ahead" in a row, the smallest lead, ticks of the first


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


def _step(d, host_t, event):
    _off[0] += d
    _back[0] = 0
    if event:
        event(K_CLOCK, {"step_s": d, "host_t": host_t})
    return d


def adjust(host_t, event=None):
    """Follow the host's clock when it differs by more than TOLERANCE_S.
    Returns the step taken in seconds (0 if none); event(kind, fields)
    journals each step once."""
    d = host_t - now()
    first = not _synced[0]
    _synced[0] = True
    if d > TOLERANCE_S or (first and d < -TOLERANCE_S):
        return _step(d, host_t, event)
    if d >= -TOLERANCE_S:
        _back[0] = 0  # an ack in time: we are not ahead
        return 0
    b = _back
    t = time.ticks_ms()
    if b[0] == 0:
        b[0], b[1], b[2] = 1, d, t
        return 0
    b[0] += 1
    if d > b[1]:
        b[1] = d
    if b[0] >= BACK_ACKS and time.ticks_diff(t, b[2]) >= BACK_WINDOW_MS:
        return _step(b[1], host_t, event)
    return 0
