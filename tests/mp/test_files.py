# kiosk.files: what a power cut leaves of a state file is read back. On FAT
# the replacement removes the old file before renaming the temp copy, so a
# cut in between leaves only <path>.tmp (finding 11: read_json skipped it,
# and the stock book read back empty).
import os
from kiosk import files


def _clean(p):
    for q in (p, p + ".tmp"):
        try:
            os.remove(q)
        except OSError:
            pass


def test_a_cut_between_remove_and_rename_leaves_the_temp_copy_that_is_read():
    p = "state_fat.json"
    _clean(p)
    files.write_json(p, {"bins": {"3": "rx-1"}})
    # The FAT path's two steps, cut after the first: the new copy written,
    # the old file removed, no rename.
    with open(p + ".tmp", "w") as f:
        f.write('{"bins": {"3": "rx-1", "4": "rx-2"}}')
    os.remove(p)
    assert files.read_json(p) == {"bins": {"3": "rx-1", "4": "rx-2"}}
    assert files.load_json(p) == {"bins": {"3": "rx-1", "4": "rx-2"}}
    with files.open_latest(p) as f:
        assert b"rx-2" in f.read()
    # The next replacement finishes the job: one file, no temp copy.
    files.write_json(p, {"bins": {}})
    assert files.read_json(p) == {"bins": {}}
    assert p + ".tmp" not in os.listdir()
    _clean(p)


def test_a_torn_file_falls_back_to_a_whole_temp_copy_and_both_torn_is_corrupt():
    p = "state_torn.json"
    _clean(p)
    with open(p, "w") as f:
        f.write('{"bins": {"3"')
    with open(p + ".tmp", "w") as f:
        f.write('{"bins": {"5": "rx-5"}}')
    assert files.read_json(p) == {"bins": {"5": "rx-5"}}
    with open(p + ".tmp", "w") as f:
        f.write('{"bi')
    assert files.read_json(p, "fallback") == "fallback"
    try:
        files.load_json(p)
        raise AssertionError("both copies torn must be Corrupt, never an empty state")
    except files.Corrupt:
        pass
    _clean(p)
    assert files.load_json(p) is None and files.read_json(p, 7) == 7
