# The event journal (kiosk.core.journal) on a plain folder standing for flash.
# Power cuts are simulated by dropping a Journal without close() and by
# cutting or corrupting the segment files before the next open.
import binascii
import gc
import json
import os
import time
from kiosk.core.journal import Journal

D = "journal"


def _segs():
    return sorted(n for n in os.listdir(D) if n.endswith(".log"))


def _read(name):
    with open(D + "/" + name, "rb") as f:
        return f.read()


def _write(name, data):
    with open(D + "/" + name, "wb") as f:
        f.write(data)


def _wipe():
    try:
        names = os.listdir(D)
    except OSError:
        return
    for n in names:
        os.remove(D + "/" + n)


def _firsts():
    """First seq of every segment, from the headers on flash."""
    out = []
    for n in _segs():
        line = _read(n).split(b"\n")[0]
        assert line.startswith(b"#KJ1 "), line
        out.append(int(line.split()[1]))
    return out


def _seqs(j, seq=1, limit=10000):
    return [s for s, _ in j.read_from(seq, limit)]


def _kinds(j):
    return [json.loads(js)["k"] for _, js in j.iter_lines()]


def test_record_line_is_json_tab_crc():
    j = Journal(clock=lambda: 1700000000.7)
    assert j.append("door", {"d": "pickup", "open": True}) == 1
    assert j.append("boot") == 2
    j.close()
    lines = _read(_segs()[0]).split(b"\n")
    assert lines[0].startswith(b"#KJ1 1 1"), lines[0]
    assert lines[-1] == b""
    for want_s, line in ((1, lines[1]), (2, lines[2])):
        js, crc = line.split(b"\t")
        assert crc == b"%08x" % binascii.crc32(js), line
        rec = json.loads(js)
        assert rec["s"] == want_s and rec["b"] == 1 and rec["t"] == 1700000000
        assert b" " not in js  # compact
    assert json.loads(lines[1].split(b"\t")[0]) == {
        "s": 1, "b": 1, "t": 1700000000, "k": "door", "d": "pickup", "open": True}
    assert json.loads(lines[2].split(b"\t")[0])["k"] == "boot"
    j = Journal()
    for bad in ({"s": 5}, {"why": "x" * 600}):
        try:
            j.append("door", bad)
        except ValueError:
            pass
        else:
            raise AssertionError("accepted %r" % bad)
    assert j.append("door", {"why": "x" * 400}) == 3
    # A caller's "t" (when a sample was taken) replaces the clock's.
    assert j.append("temp", {"t": 1699999940, "ev": "warning_start"}) == 4
    js = j.read_from(4, 1)[0][1]
    assert js.count(b'"t":') == 1
    assert json.loads(js)["t"] == 1699999940


def test_seq_continues_after_reopen():
    j = Journal()
    for i in range(5):
        assert j.append("lock", {"i": i}) == i + 1
    assert j.last_seq == 5
    j.close()
    j = Journal()
    assert j.last_seq == 5
    assert j.append("lock") == 6
    del j  # power cut: no close
    j = Journal()
    assert j.last_seq == 6
    assert _seqs(j) == [1, 2, 3, 4, 5, 6]


def test_boot_counter_increments_per_open():
    for want in (1, 2, 3):
        j = Journal()
        assert j.boot == want
        j.append("boot")
        j.close()
    j = Journal()
    assert [json.loads(js)["b"] for _, js in j.iter_lines()] == [1, 2, 3]
    assert j.stats()["boot"] == 4


def test_torn_last_line_is_skipped():
    j = Journal()
    for i in range(3):
        j.append("temp", {"c": 4.5})
    j.close()
    name = _segs()[-1]
    data = _read(name)
    _write(name, data[: len(data) - 7])  # cut inside record 3's CRC
    j = Journal()
    assert j.last_seq == 2
    assert j.stats()["torn_skipped"] == 1
    assert j.append("temp", {"c": 5.0}) == 3
    j.close()
    j = Journal()
    assert j.last_seq == 3
    assert _seqs(j) == [1, 2, 3]
    assert json.loads(j.read_from(3, 1)[0][1])["c"] == 5.0


def test_garbage_and_bad_crc_lines_are_skipped():
    j = Journal()
    j.append("door", {"o": 1})
    j.append("door", {"o": 0})
    j.close()
    name = _segs()[-1]
    data = _read(name)
    # A whole record with one JSON byte changed, then raw garbage.
    bad = data.split(b"\n")[-2].replace(b'"o":0', b'"o":1') + b"\n"
    _write(name, data + bad.replace(b'"s":2', b'"s":3') + b"\x00\xff#@!\n")
    j = Journal()
    assert j.last_seq == 2
    assert j.stats()["torn_skipped"] == 2
    assert j.append("door", {"o": 1}) == 3
    j.close()
    j = Journal()
    assert _seqs(j) == [1, 2, 3]
    # Garbage without a final newline must not swallow the next record.
    with open(D + "/" + _segs()[-1], "ab") as f:
        f.write(b"\x00\x00\x00")
    j = Journal()
    assert j.last_seq == 3
    assert j.append("door") == 4
    j.close()
    assert _seqs(Journal()) == [1, 2, 3, 4]


def test_power_cut_at_every_byte_of_last_record():
    j = Journal()
    j.append("motor", {"c": "A", "bin": 3})
    j.append("motor", {"c": "A", "bin": 7, "ok": True})
    j.close()
    name = _segs()[0]
    data = _read(name)
    start = data.rindex(b"\n", 0, len(data) - 1) + 1
    last = data[start:]
    assert last.startswith(b'{"s":2,')
    for cut in range(len(last)):
        _wipe()
        _write(name, data[:start] + last[:cut])
        j = Journal()
        assert j.last_seq == 1, cut
        assert _seqs(j) == [1], cut
        assert j.append("pickup", {"cut": cut}) == 2, cut
        j.close()
        j = Journal()
        assert j.last_seq == 2, cut
        recs = j.read_from(1, 10)
        assert [s for s, _ in recs] == [1, 2], cut
        assert json.loads(recs[1][1])["cut"] == cut
        j.close()


def test_rotation_keeps_max_segments_and_deletes_only_acked():
    j = Journal(segment_bytes=200, max_segments=4)
    for i in range(60):
        j.append("door", {"i": i})
        j.ack(j.last_seq - 5)  # host lags a few records behind
        assert len(_segs()) <= 4
        assert j.pending() == 5 or i < 5
    assert "journal_overflow" not in _kinds(j)
    assert _seqs(j, j.acked + 1) == list(range(56, 61))
    assert j.first_seq() > 1  # acked segments were rotated away
    assert _firsts()[0] == j.first_seq()
    st = j.stats()
    assert st["segments"] == 4 and st["last_seq"] == 60 and st["pending"] == 5
    j.close()
    j = Journal(segment_bytes=200, max_segments=4)
    assert j.last_seq == 60 and j.first_seq() == st["first_seq"]
    assert j.append("door") == 61


def test_overflow_one_record_per_segment():
    # segment_bytes=1: every append starts a new segment.
    j = Journal(segment_bytes=1, max_segments=3)
    assert [j.append("temp") for _ in range(3)] == [1, 2, 3]
    assert "journal_overflow" not in _kinds(j)
    assert j.append("temp") == 5  # 4 is the overflow record
    rec = json.loads(j.read_from(4, 1)[0][1])
    assert rec["k"] == "journal_overflow"
    assert (rec["lost_from"], rec["lost_to"]) == (1, 1)
    j.ack(2)
    assert j.append("temp") == 6  # dropped record 2 was acked: no loss
    assert j.append("temp") == 8
    rec = json.loads(j.read_from(7, 1)[0][1])
    assert (rec["k"], rec["lost_from"], rec["lost_to"]) == ("journal_overflow", 3, 3)
    assert len(_segs()) == 3
    assert _kinds(j).count("journal_overflow") == 2


def test_overflow_range_starts_after_acked():
    j = Journal(segment_bytes=150, max_segments=3)
    j.append("lock", {"i": 0})
    j.append("lock", {"i": 1})
    j.ack(2)
    acked = j.acked
    before = _firsts()
    assert before[0] == 1
    while True:
        seq = j.last_seq
        before = _firsts()
        got = j.append("lock", {"i": seq})
        if got != seq + 1:
            break
        assert seq < 100
    assert got == seq + 2
    rec = json.loads(j.read_from(seq + 1, 1)[0][1])
    assert rec["k"] == "journal_overflow"
    assert rec["lost_from"] == max(before[0], acked + 1) == acked + 1
    assert rec["lost_to"] == before[1] - 1
    assert j.first_seq() == before[1] == _seqs(j)[0]
    assert j.pending() == j.last_seq - rec["lost_to"]
    assert len(_segs()) == 3


def test_read_from_across_segments():
    j = Journal(segment_bytes=150, max_segments=50)
    for i in range(1, 41):
        j.append("refused", {"i": i, "why": "pin"})
    assert len(_segs()) > 10
    for jj in (j, Journal(segment_bytes=150, max_segments=50)):
        recs = jj.read_from(7, 10)
        assert [s for s, _ in recs] == list(range(7, 17))
        for s, js in recs:
            assert json.loads(js)["i"] == s
        assert _seqs(jj, 7) == list(range(7, 41))
        assert [s for s, _ in jj.read_from(20, 100, 25)] == list(range(20, 26))
        assert _seqs(jj, 39) == [39, 40]
        assert jj.read_from(41, 10) == []
        assert jj.read_from(5, 0) == []
        assert [s for s, _ in jj.iter_lines(38)] == [38, 39, 40]


def test_read_from_opens_only_the_segments_needed():
    import kiosk.core.journal as kj
    j = Journal(segment_bytes=150, max_segments=50)
    for i in range(40):
        j.append("temp", {"c": i})
    firsts = _firsts()
    opened = []

    def spy(path, mode="r"):
        opened.append(path)
        return open(path, mode)

    kj.open = spy
    try:
        for k in range(3, 8):
            del opened[:]
            recs = j.read_from(firsts[k], 2)
            assert [s for s, _ in recs] == [firsts[k], firsts[k] + 1]
            assert opened == ["%s/%s" % (D, _segs()[k])], opened
            del opened[:]
            j.read_from(firsts[k] - 1, 2)  # last of one, first of the next
            assert opened == ["%s/%s" % (D, n) for n in _segs()[k - 1 : k + 1]], opened
    finally:
        del kj.open


def test_ack_persistence_survives_reopen():
    j = Journal(ack_every=3, ack_persist_ms=1000000)
    for _ in range(10):
        j.append("pickup")
    assert j.pending() == 10
    assert j.ack(2) == 2  # first ack after a quiet spell: persisted
    j.ack(3)
    j.ack(4)
    assert j.ack(1) == 4  # never goes back
    del j  # power cut: 3 and 4 were not persisted yet
    j = Journal(ack_every=3, ack_persist_ms=1000000)
    assert j.acked == 2 and j.pending() == 8
    j.ack(3)
    j.ack(5)
    j.ack(6)
    j.ack(7)  # third since the last write: persisted
    del j
    j = Journal(ack_every=3, ack_persist_ms=1000000)
    assert j.acked == 7
    assert j.ack(999) == 10  # clamped to what exists
    j.flush()
    del j
    j = Journal(ack_every=1000, ack_persist_ms=50)
    assert j.acked == 10 and j.pending() == 0
    j.append("pickup")
    j.append("pickup")
    j.ack(11)
    j.ack(12)  # too soon after 11: not persisted
    del j
    j = Journal(ack_every=1000, ack_persist_ms=50)
    assert j.acked == 11
    j.ack(12)
    j.append("pickup")
    time.sleep_ms(60)
    j.ack(13)  # 50 ms later: persisted
    del j
    assert Journal().acked == 13


def test_zero_length_segment_and_torn_header_do_not_crash():
    j = Journal()
    for _ in range(5):
        j.append("door")
    j.close()
    _write("00000000.log", b"")  # older, empty
    _write("00000098.log", b"#KJ1 6")  # header torn
    _write("00000099.log", b"")  # newest, empty
    j = Journal()
    assert j.last_seq == 5
    assert j.stats()["torn_skipped"] == 3
    assert j.append("door") == 6
    assert "00000099.log" not in _segs() and "00000000.log" not in _segs()
    j.close()
    assert _seqs(Journal()) == [1, 2, 3, 4, 5, 6]
    # Only empty files on flash: a fresh journal, seq from the ack pointer.
    _wipe()
    _write("00000001.log", b"")
    _write("ack", b"6\n")
    j = Journal()
    assert j.last_seq == 6 and j.append("door") == 7


def test_seq_never_reused_after_rotation_deleted_records():
    j = Journal(segment_bytes=1, max_segments=2)
    for _ in range(5):
        j.append("lock")
        j.ack(j.last_seq)
    j.close()
    # Power cut right after a rotation wrote a new header: the only other
    # segment is gone, the new one holds no record yet.
    for n in _segs():
        os.remove(D + "/" + n)
    os.remove(D + "/ack")
    _write("00000042.log", b"#KJ1 6 1\n")
    j = Journal(segment_bytes=1, max_segments=2)
    assert j.last_seq == 5 and j.pending() == 0
    assert j.append("lock") == 6


def test_torn_boot_counter_file_falls_back_to_journal():
    for _ in range(3):
        Journal().close()
    j = Journal()
    assert j.boot == 4
    j.append("boot")
    j.close()
    for torn in (b"", b"5", b"\x00\xff\n", b"12x\n"):
        _write("boot", torn)
        assert Journal().boot == 5, torn  # max boot in the journal + 1
    os.remove(D + "/boot")
    assert Journal().boot == 5
    _write("boot", b"1\n")  # stale: the journal knows better
    assert Journal().boot == 5
    _write("boot", b"9\n")
    _write("boot.tmp", b"11\n")  # a complete temp left before its rename
    assert Journal().boot == 12


def test_append_2000_records_does_not_leak():
    j = Journal(segment_bytes=2048, max_segments=3, ack_every=16)
    f = {"d": "pickup", "open": True, "ms": 0}
    for i in range(100):
        f["ms"] = i
        j.append("door", f)
        j.ack(j.last_seq)
    gc.collect()
    before = gc.mem_alloc()
    for i in range(2000):
        f["ms"] = i
        j.append("door", f)
        if i % 4 == 3:
            j.ack(j.last_seq)
    gc.collect()
    after = gc.mem_alloc()
    assert after - before < 512, (before, after)
    assert j.last_seq == 2100 and len(_segs()) <= 3
    assert "journal_overflow" not in _kinds(j)


# -- identity and loss accounting ----------------------------------------------

def _hdr_id(name):
    return _read(name).split(b"\n")[0].split()[3].decode()


def test_a_journal_has_an_id_that_a_wipe_changes():
    j = Journal()
    jid = j.id
    assert len(jid) == 16 and int(jid, 16) >= 0
    j.append("boot")
    j.close()
    assert _hdr_id(_segs()[0]) == jid
    with open(D + "/id") as f:
        assert f.read().strip() == jid
    assert Journal().id == jid                     # reopened: the same journal
    # The segments gone but the ack pointer kept: seqs go on, same journal.
    j = Journal()
    j.append("door")
    j.ack(j.last_seq)
    j.close()
    for n in _segs():
        os.remove(D + "/" + n)
    j = Journal()
    assert j.id == jid and j.append("door") > 1
    j.close()
    # Wiped (a new board, or the folder deleted): seqs start at 1 again
    # under a new id, even if an id file was left behind.
    _wipe()
    with open(D + "/id", "w") as f:
        f.write(jid + "\n")
    j = Journal()
    assert j.append("boot") == 1 and j.id != jid
    j.close()
    # A journal from before ids (headers without one) gets one and keeps it.
    _wipe()
    _write("00000001.log", b"#KJ1 1 1\n")
    line = b'{"s":1,"b":1,"t":1,"k":"boot"}'
    with open(D + "/00000001.log", "ab") as f:
        f.write(b"%s\t%08x\n" % (line, binascii.crc32(line)))
    j = Journal()
    assert j.last_seq == 1 and len(j.id) == 16
    legacy = j.id
    j.append("door")
    j.close()
    assert Journal().id == legacy


def test_lost_ranges_outlive_the_overflow_record_and_go_when_acknowledged():
    # The host away for longer than the budget: unacknowledged records
    # rotate away, and so, later, does the overflow record that said so. The
    # lost range stays (on flash, in info() for every birth) until the host
    # acknowledges past it.
    j = Journal(segment_bytes=120, max_segments=3)
    for i in range(60):
        j.append("door", {"i": i})
    lost = j.lost()
    assert lost and lost[0][0] == 1, lost
    overflows = [json.loads(x) for _, x in j.iter_lines() if json.loads(x)["k"] == "journal_overflow"]
    assert not [r for r in overflows if r["lost_from"] == 1], "the first overflow record rotated away too"
    assert all(s > lost[-1][1] for s in _seqs(j)), "everything before the oldest kept is counted lost"
    info = j.info()
    assert info["id"] == j.id and info["lost"] == lost and info["first"] == j.first_seq()
    j.close()
    j = Journal(segment_bytes=120, max_segments=3)   # a power cut later: still known
    assert j.lost() == lost
    j.ack(lost[0][1] - 3)
    j.flush()
    assert j.lost()[0][0] == lost[0][1] - 2
    j.ack(j.last_seq)
    j.flush()
    assert j.lost() == []
    j.close()
    assert Journal(segment_bytes=120, max_segments=3).lost() == []


def test_an_unreadable_record_is_recorded_lost_once():
    j = Journal(segment_bytes=400, max_segments=8)
    for i in range(20):
        j.append("door", {"i": i})
    j.ack(3)
    j.close()
    # Flip a byte inside record 7 (in an older segment): its CRC fails.
    for n in _segs():
        data = _read(n)
        at = data.find(b'{"s":7,')
        if at >= 0:
            _write(n, data[:at + 20] + bytes([data[at + 20] ^ 1]) + data[at + 21:])
            break
    else:
        raise AssertionError("record 7 not found")
    j = Journal(segment_bytes=400, max_segments=8)
    got = [s for s, _ in j.read_from(4, 100)]
    assert 7 not in got and got[:3] == [4, 5, 6] and got[3] == 8
    assert j.lost() == [[7, 7]]
    rec = json.loads(j.read_from(j.last_seq, 1)[0][1])
    assert (rec["k"], rec["lost_from"], rec["lost_to"], rec["why"]) == ("journal_lost", 7, 7, "unreadable")
    n = len(_kinds(j))
    j.read_from(4, 100)                              # read again: no second record
    assert len(_kinds(j)) == n
    # A bad record the host already has is no loss.
    j.ack(j.last_seq)
    j.close()
    assert Journal(segment_bytes=400, max_segments=8).lost() == []


# -- a full flash ----------------------------------------------------------------

def test_a_full_flash_keeps_its_reserve_for_the_records_and_says_so():
    import simflash
    import kiosk.core.journal as jm
    simflash.install()
    j = Journal(segment_bytes=300, max_segments=8)
    for i in range(4):
        j.append("door", {"i": i})
    assert not j.full and os.stat(D + "/reserve")[6] == jm.RESERVE
    size = simflash.state()["used"] + 50
    simflash.set_size(size)   # nothing left but the reserve
    try:
        # Something else takes what was left: the next record uses the reserve.
        with open("other.bin", "wb") as f:
            try:
                f.write(b"x" * 600)
            except OSError:
                pass
        forced = j.append("door", {"door": "service", "ev": "door_forced"})
        assert j.full and forced
        recs = [json.loads(x) for _, x in j.iter_lines()]
        assert recs[-2]["ev"] == "door_forced" and recs[-1]["k"] == "storage" and recs[-1]["ev"] == "full"
        # The reserve lasts a while, then a record that cannot be written
        # is counted, never silent, and nothing raises but OSError.
        n = 0
        while True:
            try:
                j.append("door", {"i": n, "pad": "p" * 40})
            except OSError:
                break
            n += 1
            assert n < 200
        assert n >= 10, n
        assert j.dropped == 1 and j.stats()["full"] and j.stats()["dropped"] == 1
        # The host acknowledges: old segments go, but the reserve and the
        # next records do not both fit: still full.
        jm.ROOM_RETRY_MS = 0
        j.ack(j.last_seq)
        j.append("door", {"acked": True})
        assert j.full
        # Room comes back (a big file deleted): the reserve is held back
        # again and the journal says so.
        simflash.set_size(size + 4096)
        seq = j.append("door", {"after": True})
        assert not j.full, j.stats()
        kinds = [json.loads(x) for _, x in j.iter_lines(seq - 1)]
        assert kinds[0]["k"] == "storage" and kinds[0]["ev"] == "ok" and kinds[0]["dropped"] == 1
        assert os.stat(D + "/reserve")[6] == jm.RESERVE
    finally:
        simflash.set_size(None)
        jm.ROOM_RETRY_MS = 10000


def test_a_journal_opens_on_a_full_flash():
    import simflash
    simflash.install()
    j = Journal(segment_bytes=300)
    j.append("boot")
    j.close()
    simflash.set_size(simflash.state()["used"])       # not a byte left
    try:
        j = Journal(segment_bytes=300)                # the boot counter takes the reserve's place
        assert j.full and j.boot == 2
        assert j.append("boot") == 2
    finally:
        simflash.set_size(None)
