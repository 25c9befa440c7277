# Push buttons at the kiosk (the patient's "call a pharmacist"): a switch
# to ground on an input with a pull-up, debounced by polling, reported once
# per press. Pins come from kiosk.hw.hal; names from the board file.
import time
from micropython import const
from kiosk.hw.debounce import Debounced

_DEBOUNCE_MS = const(30)


class Button:
    def __init__(self, name, pin_in, debounce_ms=_DEBOUNCE_MS):
        self.name = name
        self._in = pin_in
        self._ms = debounce_ms
        self._sw = Debounced(time.ticks_ms())
        self.presses = 0

    def update(self, now):
        """Poll every few tens of ms: True once for each press, when it has
        read pressed for the debounce time. Allocation-free."""
        sw = self._sw
        if sw.sample(self._in.active(), now, self._ms, self._ms) == 2 and sw.stable == 1:
            self.presses += 1
            return True
        return False

    def pressed(self):
        return self._sw.stable == 1


def from_board(board):
    """The board's buttons, by name."""
    from kiosk.hw import hal
    return {c["name"]: Button(c["name"], hal.In(c["pin"])) for c in board.get("buttons") or []}
