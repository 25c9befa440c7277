# Firmware updates over the air, the kiosk's side (docs/ota.md).
#
# A host offers a release with a signed "ota" command (through the gate:
# fresh, never replayed). Its files then come in signed chunks on
# kiosk/<id>/ota, pulled by the kiosk a window at a time, written to the
# slot that is not running and hashed as they arrive: RAM holds one chunk,
# never a file. Each file is checked against the slot manifest, whose own
# sha256 the offer carries. When every file is in, each is read back from
# flash and checked again, and only then does the slot get its manifest.txt
# (a complete firmware, bootsel.py). The kiosk restarts into it only while
# idle (Controller.idle), on trial; the new firmware confirms itself once
# healthy, or gives up, and the boot selector brings the previous one back.
# Each step is a K_OTA journal record.
#
# A chunk on the wire:  b"KOTA1 <sig> <release> <file> <offset>\n" + data
# where <sig> is the hex HMAC-SHA256, under the kiosk's key, of everything
# after "<sig> ". File 0 is the slot manifest, files 1..n its lines in order.
# The staging state lives in fw/stage.json, so a reset resumes where the
# flash says the transfer got to.
import asyncio
import binascii
import hashlib
import os
import time
from micropython import const
from kiosk import files
from kiosk.hw import hal
from kiosk.link import auth
from kiosk.contract import (K_OTA, LINK_OPS, OTA_TOPIC, OTA_STAGING, OTA_RESUMED, OTA_REFUSED,
                            OTA_STAGED, OTA_SWITCHING, OTA_TRIAL, OTA_CONFIRMED, OTA_TRIAL_FAILED,
                            OTA_ROLLED_BACK, OTA_ABORTED, OTA_CURRENT)

try:
    import bootsel
except ImportError:  # a board in the flat layout: no slots, so no updates
    bootsel = None

STAGE = "fw/stage.json"
_NEW = "manifest.new"          # the slot's manifest until every file is checked
_MAGIC = b"KOTA1 "
_SIG_END = const(70)           # len(_MAGIC) + 64 hex digits
_WINDOW = const(8)             # chunks asked for at a time
_RETRY_MS = const(3000)        # ask again when nothing came for this long (doubling)
_RETRY_MAX_MS = const(60000)
_QUIET_MS = const(5000)        # idle this long before the switch
_TICK_MS = const(200)
_SILENCE_MS = const(60000)     # the task beats at least this often (a long check yields)
_RESERVE = const(32768)        # flash left free for the journal and state files
_BLOCK = const(512)            # bytes read at a time when checking a file
_MAX_FILES = const(400)
_MAX_SIZE = const(4194304)
_SLOT_DIRS = ("kiosk/", "lib/")


def _name_ok(s, n, extra):
    if not isinstance(s, str) or not 0 < len(s) <= n or s[0] in ".-+_":
        return False
    for c in s:
        if not ("a" <= c <= "z" or "A" <= c <= "Z" or "0" <= c <= "9" or c in extra):
            return False
    return True


def _path_ok(p):
    """A manifest path the kiosk writes: inside kiosk/ or lib/, plain names."""
    if not _name_ok(p, 96, "._-/") or not p.startswith(_SLOT_DIRS) or p.endswith("/"):
        return False
    for part in p.split("/"):
        if not part or part[0] == "." or part.endswith(".part"):
            return False
    return True


def _hex(b):
    return binascii.hexlify(b).decode()


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def _walk(path):
    """Every file under path (depth first), as paths."""
    try:
        names = [e[0] for e in os.ilistdir(path)]
    except OSError:
        return
    for n in names:
        p = path + "/" + n
        if os.stat(p)[0] & 0x4000:
            yield from _walk(p)
        else:
            yield p


def _rmtree(path):
    for p in list(_walk(path)):
        os.remove(p)
    dirs = []
    stack = [path]
    while stack:
        d = stack.pop()
        dirs.append(d)
        try:
            stack.extend(d + "/" + e[0] for e in os.ilistdir(d))
        except OSError:
            pass
    for d in reversed(dirs):
        try:
            os.rmdir(d)
        except OSError:
            pass


class Updater:
    def __init__(self, link, ctl, journal, fw):
        """link: the kiosk.link.session.Link (its gate, replies, an extra
        topic); ctl: the controller (idle(), op, moving(), supervisor);
        fw: the running firmware's version."""
        self.link = link
        self.ctl = ctl
        self.j = journal
        self.fw = fw
        self.key = link.gate.key
        self.stage = None       # fw/stage.json: the release being staged
        self.slot = ""          # the slot this boot runs ("" without slots)
        self.entry = None       # (path on flash, sha256, size) of the file being received
        self.f = self.o = 0     # its index (0: the manifest) and how much of it is in
        self.n = 0              # files in the manifest
        self.h = None
        self.out = None
        self.done = 0           # bytes of the release received and checked
        self.got = 0            # chunks since the last request
        self.asked = None       # ticks of the last request
        self.retry = _RETRY_MS
        self.quiet = None       # ticks since when the kiosk has been idle
        self.trial = False
        self.release = None     # the release on trial
        self.need = 0           # the trial's record the host must acknowledge
        self.deadline = 0
        self.chunks = self.dropped = 0
        self.quiet_ms = _QUIET_MS
        link.subscribe(OTA_TOPIC, self.chunk)
        link.gate.local["ota"] = self.offer
        link.gate.local["ota_abort"] = self.abort
        self._boot()

    def start(self, supervisor):
        supervisor.add("ota", self.run, _SILENCE_MS, backoff_ms=(1000, 30000))

    def _event(self, ev, fields):
        fields["ev"] = ev
        return self.link.event(K_OTA, fields)

    # -- at boot ---------------------------------------------------------------
    def _boot(self):
        if bootsel is None:
            return
        st = bootsel.state()
        if st is None:
            return
        self.slot = bootsel.running(st)
        rb = st.get("rolled_back")
        if rb and not rb.get("reported"):
            # The previous boot tried a firmware that did not prove itself.
            self._event(OTA_ROLLED_BACK, {"release": rb.get("release"), "version": rb.get("version"),
                                          "slot": rb.get("slot"), "why": rb.get("why"), "running": self.fw})
            bootsel.reported()
            files.remove(STAGE)
        if st.get("trying") and st.get("trial") == self.slot:
            self.trial = True
            self.release = st.get("release")
            active = st.get("active")
            self.need = self._event(OTA_TRIAL, {"release": self.release, "version": self.fw,
                                                "from": bootsel.version(active) if active else None,
                                                "slot": self.slot, "deadline_s": st.get("trial_s") or bootsel.TRIAL_S})
            self.deadline = time.ticks_add(time.ticks_ms(), (st.get("trial_s") or bootsel.TRIAL_S) * 1000)
        stage = files.read_json(STAGE)
        if not isinstance(stage, dict) or stage.get("slot") == self.slot or stage.get("slot") not in bootsel.SLOTS:
            files.remove(STAGE)   # switched to already (or not ours to read)
            return
        self.stage = stage
        if stage.get("state") != "staged":
            self._event(OTA_RESUMED, {"release": stage.get("release"), "version": stage.get("version"),
                                      "state": stage.get("state")})

    # -- the host's requests ------------------------------------------------------
    def _check(self, args):
        spec = LINK_OPS["ota"]
        for k in args:
            if k not in spec:
                return "bad_args"
        for k, typ in spec.items():
            v = args.get(k)
            if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
                return "bad_args"
        m = args["manifest"]
        if (not _name_ok(args["release"], 64, "._-") or not _name_ok(args["version"], 32, "._+-")
                or len(m) != 64 or any(c not in "0123456789abcdef" for c in m)
                or not 0 < args["msize"] <= 65536 or not args["msize"] < args["size"] <= _MAX_SIZE
                or not 10 <= args["trial_s"] <= 3600):
            return "bad_args"
        if bootsel is None or not self.slot:
            return "not_slotted"      # deploy the slot layout first (kioskctl deploy)
        if self.trial:
            return "on_trial"
        return None

    def _refuse(self, cid, release, why, **more):
        more["release"] = release
        more["why"] = why
        self._event(OTA_REFUSED, more)
        self.link.reply(cid, "rejected", {"reason": why})
        return "rejected"

    def offer(self, cid, args):
        """Gate handler for "ota": stage a release (or resume one)."""
        why = self._check(args)
        if why == "bad_args":
            return None
        rel = args["release"]
        if why:
            return self._refuse(cid, rel, why)
        if self._digest(bootsel.path(self.slot) + "/" + bootsel.MANIFEST) == args["manifest"]:
            self._event(OTA_CURRENT, {"release": rel, "version": self.fw})
            self.link.reply(cid, "succeeded", {"step": "current", "version": self.fw})
            return "succeeded"
        st = self.stage
        if st and st["release"] == rel and st["manifest"] == args["manifest"]:
            st["cid"] = cid
            st["trial_s"] = args["trial_s"]
            self._save()
            if st["state"] == "staged":
                self.link.reply(cid, "succeeded", {"step": "staged", "version": st["version"]})
                return "succeeded"
            self.asked = None           # ask for the next chunks at once
            self.retry = _RETRY_MS
            self.link.reply(cid, "in_progress", {"step": st["state"]})
            return "in_progress"
        if st:
            self._drop("replaced")
        free = self._space()
        if free is not None and free < args["size"] + _RESERVE:
            return self._refuse(cid, rel, "no_space", need=args["size"] + _RESERVE, free=free)
        self.stage = {"release": rel, "version": args["version"], "cid": cid, "manifest": args["manifest"],
                      "msize": args["msize"], "size": args["size"], "trial_s": args["trial_s"],
                      "slot": bootsel.other(self.slot), "state": "clearing"}
        self._save()
        self._event(OTA_STAGING, {"release": rel, "version": args["version"], "size": args["size"],
                                  "from": self.fw, "slot": self.stage["slot"]})
        self.link.reply(cid, "in_progress", {"step": "clearing"})
        return "in_progress"

    def abort(self, cid, args):
        """Gate handler for "ota_abort": drop the release being staged."""
        rel = args.get("release")
        if len(args) != 1 or not _name_ok(rel, 64, "._-"):
            return None
        st = self.stage
        if st is not None and st["release"] == rel:
            self._drop("host")
        self.link.reply(cid, "succeeded", {})
        return "succeeded"

    def _drop(self, why):
        st = self.stage
        self._close()
        self.stage = None
        files.remove(STAGE)
        self._event(OTA_ABORTED, {"release": st["release"], "version": st["version"], "why": why})

    def _fail(self, why, **more):
        """The release cannot be staged: refused, before any switch."""
        st = self.stage
        self._close()
        self.stage = None
        files.remove(STAGE)
        more["release"] = st["release"]
        more["why"] = why
        self._event(OTA_REFUSED, more)
        self.link.reply(st["cid"], "failed", {"reason": why})

    def _save(self):
        files.write_json(STAGE, self.stage)

    def _space(self):
        """Bytes the release may use: free flash plus what the idle slot
        holds now (it is cleared first); None where the port cannot say."""
        try:
            s = os.statvfs(".")
        except (OSError, AttributeError):
            return None
        have = s[0] * s[3]
        for p in _walk(bootsel.path(bootsel.other(self.slot))):
            have += max(0, _size(p))
        return have

    def _digest(self, path, size=None):
        """sha256 (hex) of a file read in small blocks, or None."""
        try:
            f = open(path, "rb")
        except OSError:
            return None
        h = hashlib.sha256()
        buf = bytearray(_BLOCK)
        mv = memoryview(buf)
        n = 0
        with f:
            while True:
                k = f.readinto(buf)
                if not k:
                    break
                h.update(mv[:k])
                n += k
        return _hex(h.digest()) if size is None or n == size else None

    # -- the chunks ---------------------------------------------------------------
    def _busy(self):
        """An operation runs or the carousel moves: nothing competes with it
        for the flash (a write stalls the CPU on some boards)."""
        return self.ctl.op is not None or self.ctl.moving()

    def _want(self):
        st = self.stage
        self.got = 0
        self.asked = time.ticks_ms()
        self.link.reply(st["cid"], "in_progress", {"step": "transferring", "file": self.f, "offset": self.o,
                                                  "window": _WINDOW, "done": self.done, "size": st["size"]})

    def chunk(self, msg):
        """Handler for kiosk/<id>/ota: one chunk, taken only if it is the
        next one wanted and correctly signed."""
        st = self.stage
        e = self.entry
        nl = msg.find(b"\n", _SIG_END) if len(msg) > _SIG_END + 8 else -1
        if st is None or e is None or st["state"] != "receiving" or msg[:6] != _MAGIC or nl < 0:
            self.dropped += 1
            return
        head = msg[_SIG_END + 1:nl].split(b" ")
        if len(head) != 3 or head[0] != st["release"].encode() or not head[1].isdigit() or not head[2].isdigit():
            self.dropped += 1
            return
        f = int(head[1])
        o = int(head[2])
        after = f == self.f + 1 and o == 0      # the host has no more of this file
        if not (f == self.f and o == self.o) and not after:
            self.dropped += 1      # not the one expected: the next request says where we are
            return
        mv = memoryview(msg)
        want = binascii.hexlify(auth.hmac_sha256(self.key, mv[_SIG_END + 1:]))
        diff = 0
        for i in range(64):
            diff |= want[i] ^ msg[6 + i]
        data = mv[nl + 1:]
        if diff or not data or self.o + len(data) > e[2]:
            self.dropped += 1
            return
        if after:      # signed by the host, yet the file it moved on from is short
            return self._fail("bad_file", file=self._rel(e[0]) if self.f else _NEW,
                              detail="shorter than the manifest says")
        self.out.write(data)
        self.h.update(data)
        self.o += len(data)
        self.chunks += 1
        self.got += 1
        self.asked = time.ticks_ms()   # progress: the retry clock starts over
        self.retry = _RETRY_MS
        if self.o == e[2]:
            self._file_done()
        if self.entry is not None and self.got >= _WINDOW and not self._busy():
            self._want()

    def _file_done(self):
        path, sha, size = self.entry
        self.out.close()
        self.out = None
        got = _hex(self.h.digest())
        self.h = None
        if got != sha:
            return self._fail("bad_file", file=self._rel(path), detail="sha256 differs from the manifest")
        os.rename(path + ".part", path)
        self.done += size
        if self.f == 0:
            why = self._read_manifest()
            if why:
                return self._fail("bad_manifest", detail=why)
        self._open(self.f + 1)

    def _rel(self, path):
        return path[len(bootsel.path(self.stage["slot"])) + 1:]

    def _read_manifest(self):
        """Check the slot manifest just received; count its files."""
        n = 0
        last = ""
        with open(self._new()) as f:
            if f.readline() != "kiosk-slot 1\n" or f.readline() != "version %s\n" % self.stage["version"]:
                return "not a slot manifest for version %s" % self.stage["version"]
            while True:
                line = f.readline()
                if not line:
                    break
                parts = line[:-1].split(" ")
                if (len(parts) != 3 or len(parts[0]) != 64 or not parts[1].isdigit()
                        or not _path_ok(parts[2]) or parts[2] <= last or line[-1] != "\n"):
                    return "bad line %d" % (n + 3)
                last = parts[2]
                n += 1
        if not 0 < n <= _MAX_FILES:
            return "%d files" % n
        self.n = n
        return None

    def _new(self):
        return bootsel.path(self.stage["slot"]) + "/" + _NEW

    def _line(self, i):
        """(path on flash, sha256, size) of manifest file i (1..n)."""
        with open(self._new()) as f:
            f.readline()
            f.readline()
            for _ in range(i):
                line = f.readline()
        sha, size, rel = line[:-1].split(" ")
        return bootsel.path(self.stage["slot"]) + "/" + rel, sha, int(size)

    def _open(self, i, offset=0, h=None):
        """Start receiving file i (0: the manifest) at offset."""
        st = self.stage
        self.f = i
        self.o = offset
        if i > self.n and i > 0:
            self.entry = None
            st["state"] = "verifying"
            self._save()
            return
        self.entry = (self._new(), st["manifest"], st["msize"]) if i == 0 else self._line(i)
        path = self.entry[0]
        files.makedirs(path[:path.rfind("/")])
        self.out = open(path + ".part", "ab" if offset else "wb")
        self.h = h or hashlib.sha256()

    def _close(self):
        if self.out is not None:
            self.out.close()
            self.out = None
        self.entry = None
        self.h = None

    # -- the task -------------------------------------------------------------------
    async def run(self, task):
        while True:
            task.beat()
            if self.trial:
                self._watch_trial()
            st = self.stage
            if st is not None:
                await self._step(st, task)
            await asyncio.sleep_ms(_TICK_MS)

    async def _step(self, st, task):
        s = st["state"]
        if s == "staged":
            self._maybe_switch(st)
            return
        if self._busy():
            return
        if s == "clearing":
            _rmtree(bootsel.path(st["slot"]))
            files.makedirs(bootsel.path(st["slot"]))
            st["state"] = "receiving"
            self._save()
            self.n = self.done = 0
            self._open(0)
            self._want()
        elif s == "receiving":
            if self.entry is None:
                await self._resume(st, task)
                if st["state"] == "receiving":
                    self._want()
            elif self.got >= _WINDOW:
                self._want()      # the window came in while busy: the next one now
            elif self.asked is None or time.ticks_diff(time.ticks_ms(), self.asked) >= self.retry:
                if self.asked is not None:
                    self.retry = min(self.retry * 2, _RETRY_MAX_MS)
                self._want()
        elif s == "verifying":
            await self._verify(st, task)

    async def _resume(self, st, task):
        """After a reset: the flash says how far the transfer got. Whole
        files kept their final names only once checked; a part file is
        hashed again up to where it ends, and continued."""
        slot = bootsel.path(st["slot"])
        new = self._new()
        self.done = 0
        self.n = 0
        if self._digest(new, st["msize"]) == st["manifest"]:
            why = self._read_manifest()
            if why:
                return self._fail("bad_manifest", detail=why)
            self.done = st["msize"]
            start = 1
        else:
            files.remove(new)
            start = 0
        for i in range(start, self.n + 1):
            path, sha, size = (new, st["manifest"], st["msize"]) if i == 0 else self._line(i)
            if i and _size(path) == size:
                self.done += size
                continue
            part = path + ".part"
            have = _size(part)
            h = hashlib.sha256()
            if 0 < have <= size:
                buf = bytearray(_BLOCK)
                mv = memoryview(buf)
                with open(part, "rb") as f:
                    while True:
                        k = f.readinto(buf)
                        if not k:
                            break
                        h.update(mv[:k])
                        task.beat()
                await asyncio.sleep_ms(0)
            else:
                have = 0
            self._open(i, have, h)
            self.done += have
            if have == size:
                self._file_done()
            return
        self._open(self.n + 1)

    async def _verify(self, st, task):
        """Every file read back from flash against the manifest, then the
        slot is complete: its manifest.txt appears last."""
        slot = bootsel.path(st["slot"])
        for i in range(1, self.n + 1):
            path, sha, size = self._line(i)
            if self._digest(path, size) != sha:
                return self._fail("bad_file", file=self._rel(path), detail="the file on flash does not match")
            task.beat()
            await asyncio.sleep_ms(0)
            if self.stage is not st:
                return
        os.rename(self._new(), slot + "/" + bootsel.MANIFEST)
        st["state"] = "staged"
        self._save()
        self._event(OTA_STAGED, {"release": st["release"], "version": st["version"], "slot": st["slot"],
                                 "files": self.n})
        self.link.reply(st["cid"], "succeeded", {"step": "staged", "version": st["version"]})

    def _maybe_switch(self, st):
        """Restart into the staged firmware once the kiosk has been idle a
        while: no operation running or waiting, nothing moving, doors shut
        and locked, no service session, no patient's scan waiting; and while
        the link is up, since the trial needs the host to confirm it. The
        check and the restart happen in one step, so nothing can start
        between."""
        if not self.ctl.idle() or not self.link.up:
            self.quiet = None
            return
        now = time.ticks_ms()
        if self.quiet is None:
            self.quiet = now
        if time.ticks_diff(now, self.quiet) < self.quiet_ms:
            return
        self._event(OTA_SWITCHING, {"release": st["release"], "version": st["version"], "from": self.fw,
                                    "slot": st["slot"]})
        bootsel.arm(st["slot"], st["trial_s"], st["release"])
        files.remove(STAGE)
        self._restart("updating")

    def _restart(self, why):
        self.j.flush()
        self.link.stop(why)
        for c in self.ctl.carousels:
            c.disable()
        hal.reset()

    def _watch_trial(self):
        """On trial: confirm once the controller's tasks all beat, the link
        is up and the host has acknowledged the trial's own record (it got
        through, was verified and stored); give up at the deadline."""
        healthy = self.ctl.supervisor.healthy()
        if healthy and self.link.up and self.j.acked >= self.need:
            was = bootsel.confirm()
            self.trial = False
            self._event(OTA_CONFIRMED, {"release": self.release, "version": self.fw, "slot": self.slot,
                                        "from": bootsel.version(was) if was else None})
            return
        if time.ticks_diff(time.ticks_ms(), self.deadline) < 0:
            return
        if not healthy:
            why = "tasks not beating: %s" % ",".join(self.ctl.supervisor.stale())
        elif not self.link.up:
            why = "link down: %s" % self.link.last_error
        else:
            why = "the host did not acknowledge the trial"
        self._event(OTA_TRIAL_FAILED, {"release": self.release, "version": self.fw, "why": why})
        bootsel.fail(why)
        self._restart("trial_failed")

    def stats(self):
        st = self.stage
        return {"slot": self.slot, "trial": self.trial, "stage": None if st is None else st["state"],
                "file": self.f, "offset": self.o, "done": self.done, "chunks": self.chunks,
                "dropped": self.dropped}


def describe():
    """The firmware slots as the flash has them, for the field team
    (kioskctl status): no App needed."""
    from kiosk.version import VERSION
    out = {"running_version": VERSION}
    if bootsel is None or bootsel.state() is None:
        out["layout"] = "flat"
        return out
    st = bootsel.state()
    out["layout"] = "slots"
    out["running"] = bootsel.running(st)
    out["active"] = st.get("active")
    out["slots"] = {s: bootsel.version(s) for s in bootsel.SLOTS}
    if st.get("trial"):
        out["trial"] = {"slot": st["trial"], "version": bootsel.version(st["trial"]),
                        "started": bool(st.get("trying"))}
    stage = files.read_json(STAGE)
    if isinstance(stage, dict) and stage.get("slot") != out["running"]:
        out["staged"] = {"release": stage.get("release"), "version": stage.get("version"),
                         "state": stage.get("state"), "slot": stage.get("slot")}
    rb = st.get("rolled_back")
    if rb:
        out["rolled_back"] = {"version": rb.get("version"), "why": rb.get("why")}
    return out
