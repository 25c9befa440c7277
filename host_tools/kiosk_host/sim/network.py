# The emulator's `network`: one Wi-Fi station interface whose link is the
# simulated world's network flag (World.network_up), so firmware code that
# brings Wi-Fi up and watches it runs unchanged.
import simworld

STA_IF = 0
AP_IF = 1
STAT_IDLE = 0
STAT_CONNECTING = 1
STAT_GOT_IP = 3


class WLAN:
    def __init__(self, interface=STA_IF):
        self._if = interface
        self._active = False
        self._ssid = None

    def active(self, on=None):
        if on is None:
            return self._active
        self._active = bool(on)

    def connect(self, ssid=None, key=None, **kw):
        self._ssid = ssid

    def disconnect(self):
        self._ssid = None

    def isconnected(self):
        return self._active and simworld.world().network_up

    def status(self, param=None):
        if param is not None:
            return self.config(param)
        if self.isconnected():
            return STAT_GOT_IP
        return STAT_CONNECTING if self._active else STAT_IDLE

    def config(self, param=None, **kw):
        if param == "rssi":
            return getattr(simworld.world(), "rssi", -58)
        if param == "mac":
            return b"\x02\x00\x00\x00\x00\x01"
        if param in ("ssid", "essid"):
            return self._ssid
        if param is None:
            return None
        raise ValueError("unknown config param")

    def ifconfig(self, *args):
        return ("10.0.2.15", "255.255.255.0", "10.0.2.2", "10.0.2.3")
