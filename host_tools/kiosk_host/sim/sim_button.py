# A simulated push button: a switch to ground the firmware reads through
# its pull-up. A press holds it down long enough for the firmware's
# debounce and releases it; "stuck" holds it down until cleared.
import time
from simworld import SimPin

FAULTS = ("button_stuck",)
PRESS_MS = 150


class Button:
    FAULTS = FAULTS

    def __init__(self, world, cfg):
        self.world = world
        self.name = cfg["name"]
        self.pin = SimPin(world, cfg["pin"])
        self.faults = {k: False for k in FAULTS}
        self.presses = 0
        self.pin.set(0)

    def set_fault(self, kind, on):
        self.faults[kind] = on
        self.pin.set(1 if on else 0)

    def press(self, ms=PRESS_MS):
        if not isinstance(ms, int) or isinstance(ms, bool) or not 0 < ms <= 5000:
            raise ValueError("button: ms must be 1..5000")
        self.presses += 1
        self.pin.set(1)
        time.sleep_ms(ms)
        if not self.faults["button_stuck"]:
            self.pin.set(0)
        return self.state()

    def state(self):
        return {"presses": self.presses, "faults": [k for k, v in self.faults.items() if v]}
