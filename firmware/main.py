# Runs at every boot. The kiosk starts itself; Ctrl-C at the USB REPL stops
# it with locks de-energised and motors disabled, leaving the REPL.
import kiosk.app

kiosk.app.main()
