# Freezes the kiosk firmware into a board's MicroPython image, so its
# bytecode runs from flash and the heap is left for data (the emulator
# counts the code apart from the board's heap budget for this reason).
# Build a board image from a MicroPython checkout, after `make mpylibs`:
#   make -C ports/rp2 BOARD=RPI_PICO2_W FROZEN_MANIFEST=<repo>/firmware/manifest.py
#   make -C ports/esp32 BOARD=ESP32_GENERIC_S3 BOARD_VARIANT=SPIRAM_OCT FROZEN_MANIFEST=<repo>/firmware/manifest.py
# main.py, config.json and boards/ stay on the filesystem (kioskctl deploy).
include("$(PORT_DIR)/boards/manifest.py")
package("kiosk")
package("umqtt", base_path="../build/mpylib")
