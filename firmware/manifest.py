# Freezes the kiosk firmware into a board's MicroPython image, so its
# bytecode runs from flash and the heap is left for data (the emulator
# counts the code apart from the board's heap budget for this reason).
# Build a board image from a MicroPython checkout:
#   make -C ports/rp2 BOARD=RPI_PICO2_W FROZEN_MANIFEST=<repo>/firmware/manifest.py
#   make -C ports/esp32 BOARD=ESP32_GENERIC_S3 BOARD_VARIANT=SPIRAM_OCT FROZEN_MANIFEST=<repo>/firmware/manifest.py
# main.py, config.json and boards/ stay on the filesystem (kioskctl deploy).
#
# umqtt comes from micropython-lib through require(), never as a copy: the
# ESP32 port's own board manifest already requires umqtt.simple, and two
# umqtt/simple.py in one image would shadow each other. The link's adapter
# (kiosk/link/mqttio.py) works with this current release and with the 1.3.4
# that mpylibs.lock pins for the emulator and the filesystem install.
include("$(PORT_DIR)/boards/manifest.py")
require("umqtt.simple")
package("kiosk")
