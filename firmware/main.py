# Runs at every boot. The boot selector (bootsel.py) picks the firmware
# slot, starts the kiosk from it and falls back to the previous firmware
# when an update fails its trial (docs/ota.md). Ctrl-C at the USB REPL stops
# the kiosk with locks de-energised and motors disabled, leaving the REPL.
import bootsel

bootsel.boot()
