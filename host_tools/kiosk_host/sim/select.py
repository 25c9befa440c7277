# The emulator's `select`. On a board (ports/esp32, ports/rp2) a poll that
# waits keeps serving the scheduler (MICROPY_EVENT_POLL_HOOK), so a
# scheduled pin or timer callback runs at once even while asyncio sleeps;
# the unix port's poll() sleeps in the kernel and runs it only afterwards.
# Under a board personality a wait is therefore cut into 1 ms slices, between
# which the VM runs what was scheduled. Nothing is allocated unless events
# come.
from uselect import *  # noqa: F401,F403 (POLLIN, POLLOUT, ...)
import uselect as _s
import port as _port

if _port.BOARD:
    def _chain(first, rest):
        yield first
        for x in rest:
            yield x

    class poll:
        def __init__(self):
            self._p = _s.poll()

        def register(self, obj, mask=POLLIN | POLLOUT):  # noqa: F405
            self._p.register(obj, mask)

        def unregister(self, obj):
            self._p.unregister(obj)

        def modify(self, obj, mask):
            self._p.modify(obj, mask)

        def poll(self, timeout=-1):
            if timeout == 0:
                return self._p.poll(0)
            for x in self.ipoll(timeout):
                return [x] + self._p.poll(0)
            return []

        def ipoll(self, timeout=-1, flags=0):
            p = self._p
            if timeout == 0:
                return p.ipoll(0, flags)
            left = timeout
            while True:
                s = 1 if left < 0 or left > 1 else left
                for first in p.ipoll(s, flags):
                    return _chain(first, p)
                if left >= 0:
                    left -= s
                    if left <= 0:
                        return p.ipoll(0, flags)
