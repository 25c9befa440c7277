# The boot selector (firmware/bootsel.py): which slot a boot runs, how a
# trial spends its try before it starts, and how a trial that cannot start,
# stops or never confirms ends on the previous firmware with the reason.
# Slots here hold a small stand-in kiosk package whose main() does what
# each test needs; the working directory is the flash.
import json
import os
import sys
import bootsel


# Not kiosk.files.makedirs: importing the kiosk package here would cache it
# before the selector puts a slot first on sys.path, which is what is tested.
def _mkdirs(p):
    cur = ""
    for part in p.split("/"):
        cur = cur + "/" + part if cur else part
        try:
            os.mkdir(cur)
        except OSError:
            pass


def _slot(name, version, app_src):
    d = "fw/" + name
    _mkdirs(d + "/kiosk")
    with open(d + "/kiosk/__init__.py", "w") as f:
        f.write("")
    with open(d + "/kiosk/app.py", "w") as f:
        f.write(app_src)
    with open(d + "/manifest.txt", "w") as f:
        f.write("kiosk-slot 1\nversion %s\n" % version)


_GOOD = """
import bootsel
ran = bootsel.running()
class App:
    ended = "ctrl-c"
def main():
    with open("ran.txt", "w") as f:
        f.write(ran + " " + __file__)
    return App()
"""

_CONFIRMS = _GOOD.replace("def main():", "def main():\n    bootsel.confirm()")


def _ran():
    with open("ran.txt") as f:
        return f.read()


def _resets():
    n = []
    return n, lambda: n.append(1)


def test_a_normal_boot_runs_the_active_slot_from_its_own_tree():
    _slot("a", "1.0.0", _GOOD)
    _slot("b", "2.0.0", _GOOD)
    bootsel.save({"active": "b"})
    n, reset = _resets()
    k = bootsel.boot(reset)
    assert k is not None and not n
    assert _ran().startswith("b fw/b/kiosk/app.py"), _ran()
    assert sys.path[0] == "fw/b" and sys.path[1] == "fw/b/lib"
    assert "fw/a" not in sys.path
    assert bootsel.version("a") == "1.0.0" and bootsel.version("b") == "2.0.0"


def test_a_trial_spends_its_try_on_flash_before_it_starts():
    _slot("a", "1.0.0", _GOOD)
    _slot("b", "2.0.0", _GOOD.replace("def main():", "def main():\n    import json\n    json.dump(bootsel.state(), open('seen.json', 'w'))"))
    bootsel.save({"active": "a"})
    bootsel.arm("b", 90)
    st = bootsel.state()
    assert st["trial"] == "b" and st["tries"] == 1 and st["trial_s"] == 90 and bootsel.running() == "a"
    n, reset = _resets()
    bootsel.boot(reset)      # the stand-in returns as after Ctrl-C: no verdict
    seen = json.load(open("seen.json"))
    assert seen["trial"] == "b" and seen["tries"] == 0, seen
    assert _ran().startswith("b ") and not n
    # Nothing confirmed it: the next boot is back on a, with the reason.
    slot, trial = bootsel.choose(bootsel.state())
    assert (slot, trial) == ("a", False)
    rb = bootsel.state()["rolled_back"]
    assert rb["slot"] == "b" and rb["version"] == "2.0.0" and not rb["reported"]
    assert rb["why"].startswith("reset during the trial ("), rb
    assert bootsel.state()["trial"] is None and bootsel.running() == "a"
    bootsel.reported()
    assert bootsel.state()["rolled_back"]["reported"] is True


def test_a_trial_that_raises_at_boot_resets_to_the_previous_slot_with_the_reason():
    _slot("a", "1.0.0", _GOOD)
    _slot("b", "2.0.0", "raise RuntimeError('broken release')\n")
    bootsel.save({"active": "a"})
    bootsel.arm("b")
    n, reset = _resets()
    bootsel.boot(reset)
    assert n == [1]
    st = bootsel.state()
    assert st["tries"] == 0 and st["why"] == "raised at boot: RuntimeError: broken release", st
    n, reset = _resets()
    bootsel.boot(reset)          # the reset: the previous firmware runs
    assert not n and _ran().startswith("a "), _ran()
    rb = bootsel.state()["rolled_back"]
    assert rb == {"slot": "b", "version": "2.0.0", "why": "raised at boot: RuntimeError: broken release", "release": None,
                  "reported": False}, rb


def test_a_trial_that_does_not_start_or_stops_is_a_failed_trial():
    _slot("a", "1.0.0", _GOOD)
    _slot("b", "2.0.0", "def main():\n    return None\n")
    bootsel.save({"active": "a"})
    bootsel.arm("b")
    n, reset = _resets()
    bootsel.boot(reset)
    assert n == [1] and bootsel.state()["why"] == "did not start"
    _slot("b", "2.0.1", "class App:\n    ended = 'OSError: 28'\ndef main():\n    return App()\n")
    bootsel.save({"active": "a"})
    bootsel.arm("b")
    n, reset = _resets()
    bootsel.boot(reset)
    assert n == [1] and bootsel.state()["why"] == "stopped: OSError: 28", bootsel.state()


def test_a_trial_that_confirms_itself_becomes_the_active_slot():
    _slot("a", "1.0.0", _GOOD)
    _slot("b", "2.0.0", _CONFIRMS)
    bootsel.save({"active": "a"})
    bootsel.arm("b")
    n, reset = _resets()
    bootsel.boot(reset)
    assert not n
    st = bootsel.state()
    assert st["active"] == "b" and st["trial"] is None and "rolled_back" not in st, st
    bootsel.boot(reset)
    assert _ran().startswith("b ") and not n


def test_an_empty_or_damaged_active_slot_boots_the_other_one():
    _slot("a", "1.0.0", _GOOD)
    bootsel.save({"active": "b"})     # b was never written
    n, reset = _resets()
    bootsel.boot(reset)
    assert _ran().startswith("a ") or _ran().startswith("b "), _ran()
    assert "fw/a/kiosk/app.py" in _ran()


def test_a_slot_without_a_complete_manifest_is_not_bootable():
    _slot("a", "1.0.0", _GOOD)
    with open("fw/a/manifest.txt", "w") as f:
        f.write("kiosk-slot 1\n")        # cut while the manifest was written
    assert bootsel.version("a") is None and not bootsel.bootable("a")


def test_slots_without_a_state_file_start_with_a_and_the_flat_layout_has_no_slot():
    assert bootsel.state() is None and bootsel.running() == "" and bootsel.use() == ""
    _slot("a", "1.0.0", _GOOD)
    assert bootsel.state() == {"active": "a"} and bootsel.running() == "a"


def test_a_torn_state_file_falls_back_to_its_complete_temp_copy():
    _slot("a", "1.0.0", _GOOD)
    _slot("b", "2.0.0", _GOOD)
    bootsel.save({"active": "a"})
    with open(bootsel.STATE + ".tmp", "w") as f:
        f.write(json.dumps({"active": "b"}))
    with open(bootsel.STATE, "w") as f:
        f.write('{"active": "a", "tri')
    assert bootsel.state()["active"] == "b"
