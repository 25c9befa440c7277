# The boot selector: picks which firmware slot runs, and falls back to the
# previous one when an update does not prove itself. It lives at the root of
# the flash beside main.py and is never replaced by an update, because it is
# what recovers from a bad one (docs/ota.md). Keep it small and keep its
# interface stable: firmware in either slot, old or new, calls it.
#
#   /main.py, /bootsel.mpy   this selector (installed by kioskctl deploy only)
#   /fw/boot.json            which slot is active, which one is on trial
#   /fw/a/, /fw/b/           two firmware trees: kiosk/, lib/, manifest.txt
#   /config.json, /boards/, /journal/, stock, keys ...  never touched by an update
#
# A boot runs the active slot, or the trial slot while it has tries left; a
# try is spent on flash before the trial starts, so a crash, a watchdog
# reset or a power cut during the trial ends on the active slot at the next
# boot. The trial firmware makes itself active (confirm) once it is healthy.
#
# Self-contained on purpose: it imports nothing from a slot, so neither a
# broken kiosk package nor a half-written slot can stop it.
import json
import os
import sys

DIR = "fw"
STATE = DIR + "/boot.json"
SLOTS = ("a", "b")
MANIFEST = "manifest.txt"   # in each slot: "kiosk-slot 1", "version V", "<sha256> <size> <path>"...
TRIAL_S = 120               # default deadline for a trial to prove itself


def _write(path, text):
    """Replace path atomically (the same rule as kiosk/files.py, which this
    module may not import): a cut leaves the old or the new file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    try:
        os.rename(tmp, path)
    except OSError:  # FAT will not rename over an existing file
        os.remove(path)
        os.rename(tmp, path)
    sync = getattr(os, "sync", None)
    if sync:
        sync()


def state():
    """The selector's state, or None on a board in the flat layout (no
    slots: the firmware at the root of the flash)."""
    for p in (STATE, STATE + ".tmp"):
        try:
            with open(p) as f:
                st = json.load(f)
            if isinstance(st, dict):
                return st
        except (OSError, ValueError):
            pass
    try:
        os.stat(DIR + "/a/kiosk")
        return {"active": "a"}   # slots without a state file: the first one
    except OSError:
        return None


def save(st):
    try:
        os.mkdir(DIR)
    except OSError:
        pass
    _write(STATE, json.dumps(st))


def path(slot):
    return DIR + "/" + slot


def other(slot):
    return SLOTS[1] if slot == SLOTS[0] else SLOTS[0]


def running(st=None):
    """The slot this boot runs ("" in the flat layout): the trial slot once
    the selector has started it ("trying"; an armed trial waits for the next
    boot), else the active one."""
    st = state() if st is None else st
    if st is None:
        return ""
    if st.get("trial") and st.get("trying"):
        return st["trial"]
    return st.get("active") or SLOTS[0]


def version(slot):
    """The firmware version a slot holds (its manifest's second line), or
    None when the slot holds no complete firmware."""
    try:
        with open(path(slot) + "/" + MANIFEST) as f:
            if f.readline().strip() != "kiosk-slot 1":
                return None
            v = f.readline().strip()
    except OSError:
        return None
    return v[8:] if v.startswith("version ") else None


def bootable(slot):
    try:
        os.stat(path(slot) + "/kiosk")
        return version(slot) is not None
    except OSError:
        return False


def use(slot=None):
    """Put a slot's tree (default: the running one) first on the module
    path, ahead of the root and of any frozen firmware. The REPL tools call
    this too, so `from kiosk.service import debug` finds the running
    firmware after a soft reset."""
    if slot is None:
        slot = running()
    for s in SLOTS:   # only one slot's modules can ever be found
        for q in (path(s), path(s) + "/lib"):
            while q in sys.path:
                sys.path.remove(q)
    if not slot:
        return ""
    p = path(slot)
    sys.path.insert(0, p + "/lib")
    sys.path.insert(0, p)
    return p


def arm(slot, trial_s=TRIAL_S, release=None):
    """The running firmware staged a new one in slot: try it at the next
    boot, once. release names it in the records of the trial."""
    st = state() or {}
    st["active"] = running(st) or SLOTS[0]
    st["trial"] = slot
    st["trying"] = False
    st["tries"] = 1
    st["trial_s"] = trial_s
    st["release"] = release
    st["why"] = None
    save(st)


def confirm():
    """The trial slot this boot runs proved itself: it becomes the active
    one. Returns the slot it replaces (None when no trial runs)."""
    st = state() or {}
    if not (st.get("trial") and st.get("trying")):
        return None
    was = st.get("active")
    st["active"] = st["trial"]
    st["trial"] = None
    st["trying"] = False
    st["tries"] = 0
    st["why"] = None
    save(st)
    return was


def fail(why):
    """The trial firmware gives up: note why, for the report the previous
    firmware makes after the next boot."""
    st = state() or {}
    if st.get("trial"):
        st["tries"] = 0
        st["why"] = str(why)[:120]
        save(st)


def activate(slot):
    """Run slot from the next boot on, with no trial (kioskctl deploy, or a
    technician recovering a board by hand)."""
    st = state() or {}
    st["active"] = slot
    st["trial"] = None
    st["trying"] = False
    st["tries"] = 0
    st["why"] = None
    save(st)


def reported():
    """The firmware has journaled the last rollback."""
    st = state()
    if st and st.get("rolled_back"):
        st["rolled_back"]["reported"] = True
        save(st)


def _cause():
    try:
        import machine
        c = machine.reset_cause()
        for name, what in (("WDT_RESET", "watchdog"), ("PWRON_RESET", "power_on"), ("SOFT_RESET", "soft")):
            if c == getattr(machine, name, -1):
                return what
        return "hard"
    except Exception:
        return "unknown"


def choose(st):
    """(slot, on trial) for this boot; spends a trial's try, or falls back
    from a trial that has none left, on flash before returning."""
    active = st.get("active")
    if active not in SLOTS:
        active = SLOTS[0]
    trial = st.get("trial")
    if trial in SLOTS and trial != active:
        if (st.get("tries") or 0) > 0:
            st["tries"] = st["tries"] - 1
            st["trying"] = True
            save(st)
            return trial, True
        # The trial boot ended without proving itself: back to the active slot.
        st["rolled_back"] = {"slot": trial, "version": version(trial), "release": st.get("release"),
                             "reported": False, "why": st.get("why") or "reset during the trial (%s)" % _cause()}
        st["trial"] = None
        st["trying"] = False
        st["tries"] = 0
        st["why"] = None
        save(st)
    if not bootable(active) and bootable(other(active)):
        active = other(active)   # an empty or damaged slot: the other one, untouched
    return active, False


def _forget_firmware():
    """Drop firmware modules anything imported before (the emulator's world
    does): the slot's own must load."""
    for m in list(sys.modules):
        if m == "kiosk" or m.startswith("kiosk.") or m == "umqtt" or m.startswith("umqtt."):
            del sys.modules[m]


def boot(reset=None):
    """main.py's whole job: choose a slot, start its firmware, and fall back
    when a trial cannot even start. reset() restarts the board (default
    machine.reset)."""
    st = state()
    slot, trial = choose(st) if st is not None else ("", False)
    use(slot)
    _forget_firmware()
    why = None
    k = None
    try:
        import kiosk.app
        k = kiosk.app.main()
    except Exception as e:
        if not trial:
            raise
        why = "raised at boot: %s: %s" % (type(e).__name__, e)
    if not trial or state().get("trial") != slot:
        return k     # not a trial, or it confirmed itself before it stopped
    ended = getattr(k, "ended", None)
    if k is not None and ended == "ctrl-c":
        return k     # a technician stopped it: the trial waits for the next boot
    fail(why or ("did not start" if k is None else "stopped: %s" % (ended or "unknown")))
    print("bootsel: trial of slot %s failed (%s); restarting on slot %s" % (slot, state().get("why"), other(slot)))
    if reset is None:
        import machine
        reset = machine.reset
    reset()
    return k
