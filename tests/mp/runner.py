# Run one MicroPython test function under the unix port.
#
#   micropython tests/mp/runner.py MODULE FUNC
#
# Imports MODULE (from sys.path; tests/mp is on it) and calls FUNC(). An
# `async def` test is run with asyncio.run. Prints "PASS MODULE.FUNC" and
# exits 0, or prints the traceback and "FAIL MODULE.FUNC" and exits 1.
# tests/test_firmware_mp.py starts this once per test function and port
# personality (KIOSK_SIM_PORT).
import sys

# The port personality first (KIOSK_SIM_PORT): on a board personality it
# puts the flash under open() before any test writes a file.
import port  # noqa: F401


def main(argv):
    if len(argv) != 3:
        print("usage: micropython runner.py MODULE FUNC")
        sys.exit(2)
    name = argv[1] + "." + argv[2]
    try:
        module = __import__(argv[1])
        result = getattr(module, argv[2])()
        if type(result).__name__ in ("generator", "coroutine"):
            import asyncio

            asyncio.run(result)
    except Exception as exc:
        sys.print_exception(exc)
        print("FAIL", name)
        sys.exit(1)
    print("PASS", name)


main(sys.argv)
