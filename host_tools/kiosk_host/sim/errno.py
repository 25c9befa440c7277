# The emulator's `errno`: the port's numbering. The unix and rp2 ports use
# Linux's (MICROPY_USE_INTERNAL_ERRNO); the ESP32 port uses newlib's, where
# EINPROGRESS is 119 and 115 is ENETDOWN. Firmware that compares errors
# against `from errno import X` is right on every port; a bare number is
# right on one. (An attribute `errno.X` in firmware is no better: the
# compiler folds it into the build host's number.)
from uerrno import *  # noqa: F401,F403
import uerrno as _u
import port as _port

if _port.NAME == "esp32":
    EAGAIN = 11
    EWOULDBLOCK = 11
    ECONNRESET = 104
    ENOBUFS = 105
    ECONNREFUSED = 111
    EADDRINUSE = 112
    ECONNABORTED = 113
    ENETUNREACH = 114
    ENETDOWN = 115
    ETIMEDOUT = 116
    EHOSTUNREACH = 118
    EINPROGRESS = 119
    EALREADY = 120
    EISCONN = 127
    ENOTCONN = 128
    errorcode = {}
    for _k, _v in globals().items():
        if _k[0] == "E" and isinstance(_v, int):
            errorcode[_v] = _k
    errorcode[11] = "EAGAIN"
    del _k, _v
