# Runs at every boot, soft resets included, before main.py: puts the running
# firmware slot on the module path, so the REPL finds the kiosk package
# (`from kiosk.service import debug`) even when main.py does not run, as
# after mpremote's soft reset into the raw REPL. docs/ota.md
try:
    import bootsel

    bootsel.use()
except Exception as e:
    print("boot.py:", e)
