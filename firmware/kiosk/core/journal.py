# Append-only event journal on flash: every door, lock, motor, temperature
# event and refused request, sequence-numbered, written and synced before it
# is reported to anyone. It is also the MQTT outbox: records stay until the
# host acknowledges them and are replayed in order after a reconnect or a
# reboot. See docs/journal.md for the format and the reasons behind it.
#
# One record per line:  {"s":SEQ,"b":BOOT,"t":TIME,"k":KIND,...}\tCRC32\n
# A line counts only if it ends in "\n" and its CRC matches, so a record torn
# by a power cut is skipped, never half-read.
#
# Not for interrupt handlers: append() allocates and writes flash.
import os
import json
import time
import binascii
from kiosk import files
from micropython import const
from kiosk.contract import K_JOURNAL_OVERFLOW, K_JOURNAL_LOST, K_STORAGE

_HDR = b"#KJ1 "  # segment header: "#KJ1 <first seq> <boot> <journal id>\n"
_LOST_MAX = const(16)  # lost ranges kept; beyond, the closest two are merged
RESERVE = const(2048)  # flash held back for the records a full flash still needs
_MARGIN = const(1024)  # room beyond the reserve before the flash counts as no longer full
ROOM_RETRY_MS = 10000  # while full, how often to look for room again
_ENOSPC = const(28)
_MIN_LINE = const(30)  # shortest possible record line
_TAIL = const(10)  # "\t" + 8 hex digits + "\n"
_MAX_LINE = const(512)  # longest record line: bounds RAM when reading
_REC = b'{"s":'

try:
    json.dumps(1, separators=(",", ":"))
    _SEP = (",", ":")
except TypeError:  # builds without separators: spaces, still valid JSON
    _SEP = None


def _dumps(obj):
    return json.dumps(obj, separators=_SEP) if _SEP else json.dumps(obj)


def _seq(line):
    """The sequence number of a valid record line, or -1 (torn, bad CRC,
    header or garbage)."""
    n = len(line)
    if n < _MIN_LINE or line[n - 1] != 10 or line[n - _TAIL] != 9 or line[:5] != _REC:
        return -1
    if b"%08x" % binascii.crc32(memoryview(line)[: n - _TAIL]) != line[n - 9 : n - 1]:
        return -1
    s = 0
    i = 5
    while i < n:
        c = line[i]
        if c == 44:  # ","
            break
        if c < 48 or c > 57:
            return -1
        s = s * 10 + c - 48
        i += 1
    return s if i > 5 else -1


def _header(line):
    """(first seq, boot, journal id or None) from a complete segment header
    line, else None. Headers written before journal ids have no id."""
    if line[:5] != _HDR or line[-1:] != b"\n":
        return None
    try:
        f = line[5:-1].split()
        if len(f) == 2:
            return int(f[0]), int(f[1]), None
        if len(f) == 3 and len(f[2]) == 16 and int(f[2], 16) >= 0:
            return int(f[0]), int(f[1]), f[2].decode()
    except ValueError:
        pass
    return None


def _rm(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _new_id():
    return binascii.hexlify(os.urandom(8)).decode()


class Journal:
    def __init__(self, path="journal", segment_bytes=8192, max_segments=8,
                 ack_persist_ms=5000, ack_every=64, clock=None):
        if max_segments < 2 or segment_bytes < 1:
            raise ValueError("journal: need max_segments >= 2, segment_bytes >= 1")
        self._dir = path
        self._segb = segment_bytes
        self._maxs = max_segments
        self._ack_ms = ack_persist_ms
        self._ack_every = ack_every
        self._clock = clock or time.time
        self._osync = getattr(os, "sync", None)
        self.quiet = False  # a carousel moves: the ack pointer waits (flush() saves it)
        self._f = None
        self._torn = 0
        self._ser = []  # segment serial numbers, oldest first
        self._first = []  # first seq each segment holds (or would hold)
        self.full = False  # the flash filled up: the reserve is in use (storage_full)
        self.dropped = 0  # records that could not be written at all, since boot
        self._full_told = False
        self._room_t = 0
        try:
            os.mkdir(path)
        except OSError:
            pass
        self._open()

    # -- opening -------------------------------------------------------

    def _seg(self, ser):
        return "%s/%08d.log" % (self._dir, ser)

    def _scan(self, path, full):
        """Read a segment: (first seq, boot in header, last valid line, ends
        with a complete line, journal id in header). Stops at the first seq
        unless full."""
        first = None
        hboot = 0
        jid = None
        last = None
        clean = True
        with open(path, "rb") as f:
            while True:
                line = f.readline(_MAX_LINE)
                if not line:
                    break
                clean = line[-1] == 10
                s = _seq(line)
                if s > 0:
                    last = line
                    if first is None:
                        first = s
                elif first is None and _header(line):
                    first, hboot, jid = _header(line)
                elif full:
                    self._torn += 1
                if first is not None and not full:
                    break
        return first, hboot, last, clean, jid

    def _open(self):
        d = self._dir
        names = [n for n in os.listdir(d)
                 if len(n) == 12 and n[8:] == ".log" and n[:8].isdigit()]
        names.sort()
        for n in names:
            first = self._scan(d + "/" + n, False)[0]
            if first is None:
                # Zero-length, torn header, nothing valid: holds no record.
                os.remove(d + "/" + n)
                self._torn += 1
            else:
                self._ser.append(int(n[:8]))
                self._first.append(first)
        last = boot = 0
        clean = True
        jid = None
        if self._ser:
            _, boot, line, clean, jid = self._scan(self._seg(self._ser[-1]), True)
            last = self._first[-1] - 1
            if line:
                last = _seq(line)
                try:
                    boot = max(boot, json.loads(line[: -_TAIL])["b"])
                except (ValueError, KeyError):
                    pass
        acked = files.read_counter(d + "/ack")
        # Never reuse a seq, not even one below what the host acknowledged.
        self._last = max(last, acked)
        self._acked = self._saved = acked
        # The journal's identity: its seqs are unique under it, for ever. A
        # journal that starts again from seq 1 (wiped, a new board) gets a
        # new one, so a host never takes its records for the old ones.
        if self._last == 0:
            jid = None
        elif jid is None:
            try:
                with open(d + "/id") as f:
                    jid = f.read(17).strip()
                int(jid, 16)
                if len(jid) != 16:
                    jid = None
            except (OSError, ValueError):
                jid = None
        self.id = jid or _new_id()
        if jid is None:
            self._keep(files.replace, d + "/id", self.id + "\n")
        self._lost = []
        if jid is None:
            files.remove(d + "/lost")  # a new seq space: nothing of it lost yet
        else:
            for r in files.read_json(d + "/lost", []):
                if isinstance(r, list) and len(r) == 2 and isinstance(r[0], int) and isinstance(r[1], int):
                    self._lost.append(r)
            self._prune_lost()
        self._ack_n = 0
        self._ack_t = time.ticks_add(time.ticks_ms(), -self._ack_ms)
        self._boot = max(files.read_counter(d + "/boot"), boot) + 1
        self._keep(files.write_counter, d + "/boot", self._boot)
        self.full = self.full or not self._make_reserve()
        if self._ser and clean:
            path = self._seg(self._ser[-1])
            self._size = os.stat(path)[6]
            self._f = open(path, "ab")
        else:
            # A torn tail stays where it is; appending after it would glue
            # the next record to it, so start a fresh segment.
            self._size = self._segb
            try:
                self._new_segment()
            except OSError:  # a full flash: the first append makes room
                pass

    # -- writing -------------------------------------------------------

    def _new_segment(self):
        ser = self._ser[-1] + 1 if self._ser else 1
        if self._f:
            self._f.close()
            self._f = None
        self._size = self._segb  # until the header is on flash, the next append tries again
        path = self._seg(ser)
        f = open(path, "wb")
        hdr = b"#KJ1 %d %d %s\n" % (self._last + 1, self._boot, self.id)
        try:
            f.write(hdr)
            f.flush()
            if self._osync:
                self._osync()
        except OSError:
            f.close()
            os.remove(path)
            raise
        self._f = f
        self._size = len(hdr)
        self._ser.append(ser)
        self._first.append(self._last + 1)
        # Over budget: drop the oldest. Acked records go silently; unacked
        # ones only here, when the budget is full of them, and the loss is
        # recorded (before the delete, so a power cut cannot hide it).
        drop = len(self._ser) - self._maxs
        if drop <= 0:
            return
        lo = hi = 0
        for i in range(drop):
            a = max(self._first[i], self._acked + 1)
            b = self._first[i + 1] - 1
            if a <= b:
                if not lo:
                    lo = a
                hi = b
        if lo:
            self._add_lost(lo, hi)
            self._write(K_JOURNAL_OVERFLOW, {"lost_from": lo, "lost_to": hi})
        for i in range(drop):
            self._drop_oldest()

    def _write(self, kind, fields):
        seq = self._last + 1
        if fields and ("s" in fields or "b" in fields or "k" in fields):
            raise ValueError("journal: s, b, k are reserved")
        if fields and "t" in fields:
            # The caller knows when it happened (a sample's time): keep it.
            js = '{"s":%d,"b":%d,"k":%s' % (seq, self._boot, _dumps(kind))
        else:
            js = '{"s":%d,"b":%d,"t":%d,"k":%s' % (seq, self._boot, int(self._clock()), _dumps(kind))
        if fields:
            js = js + "," + _dumps(fields)[1:]
        else:
            js = js + "}"
        js = js.encode()
        if len(js) > _MAX_LINE - _TAIL:
            raise ValueError("journal: record too long")
        line = b"%s\t%08x\n" % (js, binascii.crc32(js))
        try:
            self._f.write(line)
            self._f.flush()
            if self._osync:
                self._osync()
        except OSError:
            # Maybe half written: the next record must not follow it.
            self._size = self._segb
            raise
        self._size += len(line)
        self._last = seq
        return seq

    def _append(self, kind, fields):
        if self._size >= self._segb:
            self._new_segment()
        return self._write(kind, fields)

    def append(self, kind, fields=None):
        """Write and sync one record; return its seq. Only report or
        acknowledge the event after this returns. When the flash is full,
        acknowledged segments are deleted first, then the reserve is given
        up (storage_full); a record that still cannot be written raises
        OSError and is counted in `dropped`."""
        self._room()
        for step in (None, self._free_acked, self._use_reserve):
            if step is not None and not step():
                continue
            try:
                seq = self._append(kind, fields)
            except OSError:
                continue
            if self.full and not self._full_told:
                self._full_told = True
                try:
                    self._append(K_STORAGE, {"ev": "full", "dropped": self.dropped})
                except OSError:
                    pass
            return seq
        self.dropped += 1
        raise OSError(_ENOSPC)

    # -- a full flash ----------------------------------------------------
    # The flash may fill up (other files, a firmware image on its way):
    # records must still be written, above all the alarms and the losses. So
    # the journal holds RESERVE bytes back in journal/reserve while the flash
    # has room, and gives them up to its own records when it has none
    # (storage_full, reported in births and telemetry outside the journal).

    def _make_reserve(self, margin=0):
        """True once the reserve is on flash (made if it is not) and, with
        a margin, that many bytes more would fit beside it (tried with a
        scratch file: the one free-space test every port has)."""
        path = self._dir + "/reserve"
        chunk = bytes(256)
        try:
            have = os.stat(path)[6] >= RESERVE
        except OSError:
            have = False
        for p, n in ((None, 0) if have else (path, RESERVE), (self._dir + "/room", margin)):
            if not n:
                continue
            try:
                with open(p, "wb") as f:
                    for _ in range(n // 256):
                        f.write(chunk)
            except OSError:
                _rm(p)
                return False
            if p != path:
                _rm(p)
        return True

    def _keep(self, write, path, value):
        """A small file the journal needs at open, even on a full flash
        (the reserve gives way for it); left unwritten if nothing can."""
        try:
            write(path, value)
        except OSError:
            self._use_reserve()
            try:
                write(path, value)
            except OSError:
                pass

    def _use_reserve(self):
        """Give the reserve up to the journal; False if it is gone already."""
        if self.full:
            return False
        self.full = True
        self._full_told = False
        self._room_t = time.ticks_ms()
        _rm(self._dir + "/reserve")
        return True

    def _free_acked(self):
        """Delete the oldest segments whose records the host has (the
        current one stays); True if any went."""
        n = 0
        while len(self._ser) > 1 and self._first[1] - 1 <= self._acked:
            self._drop_oldest()
            n += 1
        return n > 0

    def _drop_oldest(self):
        _rm(self._seg(self._ser[0]))
        self._ser.pop(0)
        self._first.pop(0)

    def _room(self):
        """While full, now and then: free what the host has, and if the
        reserve can be held back again, the flash is no longer full."""
        if not self.full or time.ticks_diff(time.ticks_ms(), self._room_t) < ROOM_RETRY_MS:
            return
        self._room_t = time.ticks_ms()
        self._free_acked()
        if not self._make_reserve(_MARGIN):
            return
        self.full = False
        try:
            self._append(K_STORAGE, {"ev": "ok", "dropped": self.dropped})
        except OSError:  # room for the reserve, none beyond it: still full
            self._use_reserve()
            self._full_told = True

    # -- outbox --------------------------------------------------------

    def ack(self, seq):
        """The host has stored everything up to seq. Persisted at most every
        ack_persist_ms or every ack_every acks, and at flush()."""
        if seq > self._last:
            seq = self._last
        if seq > self._acked:
            self._acked = seq
            self._ack_n += 1
            if not self.quiet and (self._ack_n >= self._ack_every
                                   or time.ticks_diff(time.ticks_ms(), self._ack_t) >= self._ack_ms):
                self._save_ack()
        return self._acked

    def _save_ack(self):
        try:
            files.write_counter(self._dir + "/ack", self._acked)
        except OSError:  # a full flash: kept in RAM, written when there is room
            self._ack_t = time.ticks_ms()
            self._room()
            return
        self._saved = self._acked
        self._ack_n = 0
        self._ack_t = time.ticks_ms()
        if self._prune_lost():
            self._save_lost()

    # -- loss accounting ---------------------------------------------------
    # Records the host never acknowledged and that can no longer be sent
    # (rotated away, unreadable on flash) are kept as lost ranges, from
    # acked + 1 on, until the host acknowledges past them: on flash in
    # journal/lost, in every birth, and as a record when found. So a loss
    # is never silent, even when the record that reported it is itself gone.

    def _prune_lost(self):
        """Drop what the host acknowledged; True if anything changed."""
        a = self._acked
        keep = []
        for r in self._lost:
            if r[1] > a:
                keep.append([max(r[0], a + 1), r[1]])
        changed = keep != self._lost
        self._lost = keep
        return changed

    def _save_lost(self):
        try:
            files.write_json(self._dir + "/lost", self._lost)
        except OSError:  # a full flash: the birth still carries them
            pass

    def _add_lost(self, a, b):
        """Record a..b as lost (clipped to what the host has not
        acknowledged); False if nothing in it was news."""
        a = max(a, self._acked + 1)
        if a > b:
            return False
        lost = self._lost
        for r in lost:
            if r[0] <= a and b <= r[1]:
                return False
        lost.append([a, b])
        lost.sort()
        merged = [lost[0]]
        for r in lost[1:]:
            m = merged[-1]
            if r[0] <= m[1] + 1:
                m[1] = max(m[1], r[1])
            else:
                merged.append(r)
        while len(merged) > _LOST_MAX:  # never forget one: over-report instead
            gaps = [merged[i + 1][0] - merged[i][1] for i in range(len(merged) - 1)]
            i = gaps.index(min(gaps))
            merged[i][1] = merged.pop(i + 1)[1]
        self._lost = merged
        self._save_lost()
        return True

    def _found(self, a, b):
        """Records a..b should be on flash and are not (a bad CRC, a
        segment gone): recorded as lost, once."""
        if self._add_lost(a, b):
            self.append(K_JOURNAL_LOST, {"lost_from": max(a, self._acked + 1), "lost_to": b,
                                         "why": "unreadable"})

    def lost(self):
        """[[from, to], ...]: the unacknowledged records that are gone."""
        return [list(r) for r in self._lost]

    def info(self):
        """What a birth tells the host about this journal."""
        return {"id": self.id, "last": self._last, "acked": self._acked,
                "first": self.first_seq(), "lost": self.lost()}

    def tick(self):
        """Call now and then (the link does, every few ms; it is cheap): the
        ack pointer is persisted once acks have paused for ack_persist_ms,
        and while the flash is full, room is looked for again."""
        if self._acked != self._saved and time.ticks_diff(time.ticks_ms(), self._ack_t) >= self._ack_ms:
            self._save_ack()
        self._room()

    def flush(self):
        """Persist the ack pointer now (call before a planned reset and from
        a slow loop)."""
        if self._acked != self._saved:
            self._save_ack()

    def close(self):
        self.flush()
        if self._f:
            self._f.close()
            self._f = None

    @property
    def acked(self):
        return self._acked

    @property
    def last_seq(self):
        return self._last

    @property
    def boot(self):
        return self._boot

    def first_seq(self):
        """The oldest seq still on flash (last_seq + 1 if none)."""
        return self._first[0] if self._first else self._last + 1

    def pending(self):
        """How many records on flash the host has not acknowledged."""
        return self._last - max(self._acked, self.first_seq() - 1)

    def _records(self, seq):
        # Start in the last segment whose first seq <= seq; move on by
        # serial so a rotation between two yields does not derail it.
        ser = self._ser[0] if self._ser else 0
        for i in range(len(self._first)):
            if self._first[i] <= seq:
                ser = self._ser[i]
        while ser:
            try:
                f = open(self._seg(ser), "rb")
            except OSError:  # rotated away meanwhile
                f = None
            if f:
                with f:
                    while True:
                        line = f.readline(_MAX_LINE)
                        if not line:
                            break
                        s = _seq(line)
                        if s >= seq:
                            seq = s + 1
                            yield s, line[: -_TAIL]
            nxt = 0
            for x in self._ser:
                if x > ser:
                    nxt = x
                    break
            ser = nxt

    def read_from(self, seq, limit=16, last=None):
        """Up to limit records [(seq, json_bytes)] from seq (or the oldest
        kept, if seq was rotated away) on, in order, up to last if given.
        For replay after (re)connect: read_from(acked + 1); for a resend of
        120..135: read_from(120, 16, 135)."""
        out = []
        if limit <= 0 or seq > self._last:
            return out
        g = self._records(seq)
        expect = seq
        gaps = []
        try:
            for rec in g:
                if last is not None and rec[0] > last:
                    break
                if rec[0] > expect:
                    gaps.append((expect, rec[0] - 1))
                expect = rec[0] + 1
                out.append(rec)
                if len(out) >= limit:
                    break
            else:  # read to the end: is anything missing at the tail?
                end = self._last if last is None else min(last, self._last)
                if expect <= end:
                    gaps.append((expect, end))
        finally:
            g.close()
        for a, b in gaps:
            self._found(a, b)
        return out

    def iter_lines(self, seq_from=None):
        """Generator of (seq, json_bytes) over the whole journal (or from
        seq_from), for the logs tool. Exhaust it or close() it."""
        return self._records(seq_from or 1)

    def stats(self):
        total = 0
        for ser in self._ser:
            try:
                total += os.stat(self._seg(ser))[6]
            except OSError:
                pass
        return {"segments": len(self._ser), "bytes": total, "first_seq": self.first_seq(),
                "last_seq": self._last, "acked": self._acked, "pending": self.pending(),
                "boot": self._boot, "torn_skipped": self._torn, "id": self.id, "lost": self.lost(),
                "full": self.full, "dropped": self.dropped}
