"""Host-side tools for the pickup-kiosk controller: build, deploy, bridge, emulator."""

__version__ = "0.1.0"
