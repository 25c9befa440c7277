# Boot of an emulated kiosk: what a board's ROM, wiring and USB REPL provide
# around main.py. The working directory is the kiosk's flash.
#
# 1. The simulated world is built from the board file config.json names,
#    with the emulator's own build of the firmware's board parser
#    ($KIOSK_SIM_FIRMWARE): the wiring is hardware and does not change with
#    the firmware on the flash, which an update may have replaced with a
#    broken one. Those modules are dropped again before main.py runs.
# 2. The control channel to the emulator's supervisor opens (simctl); the
#    supervisor replays the world's lasting state (doors, sensors, faults,
#    network) and says go.
# 3. boot.py runs, then main.py, as on a board, unless this boot follows a
#    soft reset from the raw REPL (a board runs only boot.py then).
# 4. The board's REPL on stdin/stdout: friendly (">>> ", line editing,
#    Ctrl-E paste mode) and raw (Ctrl-A; raw-paste with flow control), so
#    mpremote works against it as against a board.
#
# The supervisor sits between this process and the pty the user opens: it
# turns a Ctrl-C that arrives while code runs into SIGINT (KeyboardInterrupt
# here), as a board's USB stack does, and turns "\n" into "\r\n". To know
# when code runs it reads two marker lines on stderr: BUSY before any code
# runs, IDLE before the REPL waits for input. A soft reset ends the process
# with SOFT (restart, run main.py) or SOFT_RAW (restart into the raw REPL);
# the supervisor starts it again on the same flash and pty.
import sys
import os

_SIM_FW = os.getenv("KIOSK_SIM_FIRMWARE")
if _SIM_FW:
    sys.path.insert(0, _SIM_FW)
import simworld  # noqa: E402 (imports the firmware's pin parser)
import simctl  # noqa: E402
import simflash  # noqa: E402

SOFT = 20
SOFT_RAW = 21
_BUSY = "@@kiosk:busy\n"
_IDLE = "@@kiosk:idle\n"
_RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
_WINDOW = 256  # raw-paste flow-control window (bytes)

_write = sys.stdout.buffer.write
_read = sys.stdin.buffer.read
_mark = sys.stderr.write


def _world():
    import json
    from kiosk.hw import board
    try:
        with open("config.json") as f:
            name = json.load(f)["board"]
        return simworld.install(board.load("boards/%s.json" % name))
    except Exception as e:  # a broken flash still boots to the REPL, as a board does
        print("emuboot: no simulated hardware:", e)
        return simworld.world()
    finally:
        _forget_sim_firmware()


def _forget_sim_firmware():
    """The firmware main.py starts comes from the flash, not from the
    emulator's build the world was made with."""
    if _SIM_FW in sys.path:
        sys.path.remove(_SIM_FW)
    for m in list(sys.modules):
        if m == "kiosk" or m.startswith("kiosk."):
            del sys.modules[m]


def _getc():
    """One byte from the console; Ctrl-C as 3 even when it came as SIGINT."""
    while True:
        try:
            b = _read(1)
        except KeyboardInterrupt:
            return 3
        if not b:
            raise SystemExit(0)  # the supervisor is gone: the board lost power
        return b[0]


def _print_exc(e):
    """A traceback as a board prints it: without this shim's own frame."""
    import io
    buf = io.StringIO()
    sys.print_exception(e, buf)
    for line in buf.getvalue().split("\n"):
        if line and '"emuboot.py"' not in line:
            print(line)


def _reset(raw):
    _write(b"MPY: soft reboot\r\n")
    simworld.world().note_reset(5)  # SOFT_RESET
    raise SystemExit(SOFT_RAW if raw else SOFT)


def _run(code, g):
    """Run compiled code in the REPL's globals; returns the exception or None.
    SystemExit from user code soft-resets, as on a board."""
    try:
        # Inside the try: the supervisor sends a Ctrl-C that came during boot
        # as soon as it reads this mark, which can be before exec starts.
        _mark(_BUSY)
        exec(code, g)
        return None
    except BaseException as e:  # noqa: B902 (KeyboardInterrupt is a result here)
        return e
    finally:
        _mark(_IDLE)


# -- raw REPL -------------------------------------------------------------
def _exec_raw(src, g):
    try:
        code = compile(src, "<stdin>", "exec")
        err = None
    except Exception as e:
        code, err = None, e
    if code is not None:
        err = _run(code, g)
    if isinstance(err, SystemExit):
        _write(b"\x04\x04")
        return True
    _write(b"\x04")
    if err is not None:
        _print_exc(err)
    _write(b"\x04")
    return False


def _paste(g):
    """Raw-paste: announce the window, take data with flow control until
    Ctrl-D, acknowledge, then run it."""
    _write(b"R\x01")
    _write(bytes((_WINDOW & 0xFF, _WINDOW >> 8)))
    buf = bytearray()
    left = _WINDOW
    while True:
        c = _getc()
        if c == 4:
            _write(b"\x04")
            break
        if c == 3:  # the host gave up: tell it, drop the data
            _write(b"\x04")
            return False
        buf.append(c)
        left -= 1
        if left == 0:
            left = _WINDOW
            _write(b"\x01")
    return _exec_raw(bytes(buf), g)


def raw(g):
    """Returns when Ctrl-B asks for the friendly REPL; soft-resets itself."""
    _write(_RAW_BANNER)
    while True:
        _write(b">")
        buf = bytearray()
        while True:
            c = _getc()
            if c == 1:  # Ctrl-A: raw-paste request (after Ctrl-E "A") or restart
                if len(buf) == 2 and buf[0] == 5 and buf[1] == 65:
                    if _paste(g):
                        _reset(True)
                else:
                    _write(_RAW_BANNER)
                break
            if c == 2:
                _write(b"\r\n")
                return
            if c == 3:
                buf = bytearray()
            elif c == 4:
                _write(b"OK")
                if not buf:
                    _write(b"\r\n")
                    _reset(True)
                if _exec_raw(bytes(buf), g):
                    _reset(True)
                break
            else:
                buf.append(c)


# -- friendly REPL --------------------------------------------------------
def _banner():
    v = sys.implementation.version
    _write(b"MicroPython v%d.%d.%d on %s; kiosk emulator %s\r\n" % (
        v[0], v[1], v[2], sys.platform.encode(), (os.getenv("KIOSK_SIM_ID") or "?").encode()))
    _write(b'Type "help()" for more information.\r\n')


def _readline(prompt, indent=0):
    """A line (str) or a control byte (int): 1, 2, 3, 4 (on an empty
    line) or 5. Echoes as a board does; backspace edits; escape sequences
    (arrow keys) are swallowed; indent spaces are typed in already (the
    board's auto-indent)."""
    _write(prompt)
    line = bytearray(b" " * indent)
    _write(bytes(line))
    while True:
        c = _getc()
        if c == 13:
            _write(b"\r\n")
            return line.decode()
        if c in (1, 2, 5) or (c == 4 and not line):
            return c
        if c == 3:
            _write(b"\r\n")
            return 3
        if c in (8, 127):
            if line:
                line = line[:-1]
                _write(b"\x08 \x08")
        elif c == 27:
            c = _getc()
            if c == 91:  # ESC [ params final
                while not 64 <= _getc() <= 126:
                    pass
        elif c == 9:  # tab: indent
            line.extend(b"    ")
            _write(b"    ")
        elif c >= 32:
            line.append(c)
            _write(bytes((c,)))


def _incomplete(src):
    """More lines wanted: an open bracket or triple quote, a trailing
    backslash or colon, or a block being typed (ended by an empty line)."""
    depth = 0
    for ch in src:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
    last = src.rstrip("\n").split("\n")[-1]
    if depth > 0 or src.count('"""') % 2 or src.count("'''") % 2 or last.endswith("\\"):
        return True
    if "\n" in src.rstrip("\n"):  # a block: until an empty line
        return not src.endswith("\n\n")
    return last.rstrip().endswith(":")


def _indent(src):
    """Auto-indent for the next line: the last line's, one level deeper
    after a colon."""
    last = src.rstrip("\n").split("\n")[-1]
    n = len(last) - len(last.lstrip(" "))
    return n + 4 if last.rstrip().endswith(":") else n


def _exec_friendly(src, mode, g):
    try:
        code = compile(src, "<stdin>", mode)
    except Exception as e:
        _print_exc(e)
        return
    err = _run(code, g)
    if isinstance(err, SystemExit):
        _reset(False)
    if err is not None:
        _print_exc(err)


def _paste_mode(g):
    _write(b"\r\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== ")
    buf = bytearray()
    while True:
        c = _getc()
        if c == 3:
            _write(b"\r\n")
            return
        if c == 4:
            _write(b"\r\n")
            break
        if c == 13:
            buf.append(10)
            _write(b"\r\n=== ")
        elif c != 10:
            buf.append(c)
            _write(bytes((c,)))
    _exec_friendly(bytes(buf).decode(), "exec", g)


def friendly(g):
    _banner()
    while True:
        r = _readline(b">>> ")
        if r == 1:
            raw(g)
            _banner()
        elif r == 2:
            _write(b"\r\n")
            _banner()
        elif r == 4:
            _write(b"\r\n")
            _reset(False)
        elif r == 5:
            _paste_mode(g)
        elif isinstance(r, str) and r.strip():
            src = r + "\n"
            while _incomplete(src):
                more = _readline(b"... ", _indent(src))
                if not isinstance(more, str):
                    src = None
                    break
                src += (more if more.strip() else "") + "\n"
            if src is not None:
                _exec_friendly(src, "single", g)


def _run_file(name, g, marked=True):
    """Run boot.py or main.py from the flash, as a board's pyexec does.
    boot.py runs unmarked: the console still counts it as booting, and
    holds a Ctrl-C for main.py."""
    try:
        with open(name) as f:
            src = f.read()
    except OSError:
        return
    try:
        code = compile(src, name, "exec")
    except Exception as e:
        _print_exc(e)
        return
    if marked:
        err = _run(code, g)
    else:
        try:
            exec(code, g)
            err = None
        except BaseException as e:  # noqa: B902
            err = e
    if isinstance(err, SystemExit):
        _reset(False)
    if err is not None:
        _print_exc(err)


def main():
    w = _world()
    simflash.install()   # the flash has a size once the control channel gives it one
    simctl.start(w, os.getenv("KIOSK_SIM_CONTROL"), os.getenv("KIOSK_SIM_ID") or "kiosk",
                 token=os.getenv("KIOSK_SIM_TOKEN"))
    g = {"__name__": "__main__"}
    _run_file("boot.py", g, False)
    if os.getenv("KIOSK_EMU_RAW") != "1":
        _run_file("main.py", g)
        _mark(_IDLE)
        friendly(g)
    else:
        _mark(_IDLE)
    while True:  # raw mode after a soft reset from the raw REPL
        raw(g)
        friendly(g)


main()
