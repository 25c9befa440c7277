# A simulated code scanner (GM65 class) on the board's UART: what a test
# or the demo "scans" arrives on the firmware's RX line as the scanner
# sends it, the text and a CR. The firmware's UART (machine.UART) reads
# the same line through simworld.UartLine. Unplugged, it sends nothing.
from simworld import SimPin

FAULTS = ("scanner_unplugged",)
_MAX_TEXT = 512


class Scanner:
    FAULTS = FAULTS

    def __init__(self, world, cfg):
        self.world = world
        self.name = "scanner"
        self.rx = SimPin(world, cfg["rx_pin"]).num   # the firmware's RX: the scanner's TX
        self.line = world.uart_line(self.rx)
        self.faults = {k: False for k in FAULTS}
        self.scans = 0

    def set_fault(self, kind, on):
        self.faults[kind] = on

    def scan(self, text, end="\r"):
        """Read one code: its text and the line end go out on the wire."""
        if not isinstance(text, str) or not isinstance(end, str) or len(text) > _MAX_TEXT:
            raise ValueError("scan: text must be a string of at most %d characters" % _MAX_TEXT)
        if self.faults["scanner_unplugged"]:
            return {"sent": 0, "scans": self.scans, "unplugged": True}
        data = (text + end).encode()
        self.line.feed(data)
        self.scans += 1
        return {"sent": len(data), "scans": self.scans}

    def state(self):
        return {"scans": self.scans, "waiting": self.line.any(), "dropped": self.line.dropped,
                "faults": [k for k, v in self.faults.items() if v]}
