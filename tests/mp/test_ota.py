# Firmware updates on the kiosk (kiosk/link/ota.py) with the whole kiosk on
# the simulated world: the offer through the real command gate, chunks
# through the link's topic handler, the real controller deciding when the
# kiosk is idle, and bootsel's state on the flash (the working directory).
# Only the board's reset is replaced: it would end this process.
import asyncio
import binascii
import gc
import hashlib
import json
import os
import time
import kit
import bootsel
from kiosk import clock, files
from kiosk.hw import hal
from kiosk.link import auth, ota

KEY = binascii.unhexlify(kit.KEY_HEX)
FAST = {"door_open_timeout_s": 3, "sample_period_s": 5}


def _sha(b):
    return binascii.hexlify(hashlib.sha256(b).digest()).decode()


def _running_slot(version="1.0.0"):
    """The firmware this test runs, installed as slot a (its manifest is
    what the updater reads of it)."""
    files.makedirs("fw/a/kiosk")
    with open("fw/a/manifest.txt", "w") as f:
        f.write("kiosk-slot 1\nversion %s\n%s 1 kiosk/app.mpy\n" % (version, "0" * 64))
    bootsel.save({"active": "a"})


def release(files, version="2.0.0"):
    """(slot manifest, [manifest, file 1, ...]) as the bridge sends them."""
    names = sorted(files)
    lines = ["kiosk-slot 1", "version " + version] + ["%s %d %s" % (_sha(files[p]), len(files[p]), p) for p in names]
    man = ("\n".join(lines) + "\n").encode()
    return man, [man] + [files[p] for p in names]


def chunk(rid, f, o, data, key=KEY):
    body = b"%s %d %d\n" % (rid.encode(), f, o) + data
    return b"KOTA1 " + binascii.hexlify(auth.hmac_sha256(key, body)) + b" " + body


def command(op, args, cid):
    now = clock.now()
    return json.dumps(auth.sign(KEY, {"v": 1, "id": cid, "op": op, "iat": now, "exp": now + 60, "args": args}))


def offer(rid, man, parts, version="2.0.0", trial_s=60):
    return {"release": rid, "version": version, "manifest": _sha(man), "msize": len(man),
            "size": sum(len(p) for p in parts), "trial_s": trial_s}


class Replies:
    def __init__(self, link):
        self.seen = []
        link.reply = self

    def __call__(self, cid, state, info):
        self.seen.append((cid, state, info))

    def of(self, cid):
        return [(s, i) for c, s, i in self.seen if c == cid]


class Host:
    """The bridge's part: answers each request for chunks with a window of
    them, from the file and offset the kiosk names."""

    def __init__(self, app, rid, parts, replies, cid, corrupt=None, size=1024, budget=None):
        self.app, self.rid, self.parts, self.r, self.cid = app, rid, parts, replies, cid
        self.corrupt = corrupt     # (file, offset) to flip a byte at, as a bad host store would
        self.size = size
        self.budget = budget       # chunks to send in all (then the line goes quiet)
        self.served = 0
        self.sent = 0

    def pump(self):
        wants = [i for s, i in self.r.of(self.cid) if i.get("step") == "transferring"]
        while self.served < len(wants):
            w = wants[self.served]
            self.served += 1
            f, o = w["file"], w["offset"]
            for _ in range(w["window"]):
                if f >= len(self.parts) or self.sent == self.budget:
                    break
                data = self.parts[f][o:o + self.size]
                if self.corrupt and self.corrupt[0] == f and o <= self.corrupt[1] < o + len(data):
                    b = bytearray(data)
                    b[self.corrupt[1] - o] ^= 0xFF
                    data = bytes(b)
                self.app.link._on_msg(self.app.link.p.prefix + b"ota", chunk(self.rid, f, o, data))
                self.sent += 1
                o += len(data)
                if o >= len(self.parts[f]):
                    f, o = f + 1, 0

    async def until(self, cond, ms=20000):
        while not cond():
            self.pump()
            if ms <= 0:
                return False
            await asyncio.sleep_ms(20)
            ms -= 20
        return True


async def _up(policies=FAST):
    app, w = kit.boot(policies=policies)
    resets = []
    hal.reset = lambda: resets.append(time.ticks_ms())
    r = Replies(app.link)
    app.ota.quiet_ms = 500
    app.link.up = True      # connected (no broker here): a switch needs the host for the trial
    app.ctl.start()
    app.ota.start(app.ctl.supervisor)
    assert await kit.wait_for(app.ctl.settled, 5000)
    return app, w, r, resets


def _ota_records(app, ev=None):
    return [x for x in kit.journal_kinds(app.journal, "ota") if ev is None or x["ev"] == ev]


def _files():
    return {"kiosk/app.mpy": os.urandom(2600), "kiosk/core/x.mpy": os.urandom(90),
            "lib/umqtt/simple.mpy": bytes(range(256)) * 9}


def _staged(app):
    return app.ota.stage is not None and app.ota.stage["state"] == "staged"


async def _stage_then_switch():
    _running_slot()
    app, w, r, resets = await _up()
    files = _files()
    man, parts = release(files)
    assert app.link.gate.handle(command("ota", offer("rel-1", man, parts), "c1")) == "in_progress"
    host = Host(app, "rel-1", parts, r, "c1")
    assert await host.until(lambda: _staged(app) or resets), r.of("c1")[-3:]
    for p, data in files.items():
        with open("fw/b/" + p, "rb") as f:
            assert f.read() == data, p
    with open("fw/b/manifest.txt", "rb") as f:
        assert f.read() == man
    assert not [p for p in ota._walk("fw/b") if p.endswith(".part") or p.endswith(".new")]
    assert r.of("c1")[-1] == ("succeeded", {"step": "staged", "version": "2.0.0"}), r.of("c1")[-1]
    assert host.sent == 1 + 3 + 1 + 3, host.sent   # each chunk once: the manifest, then 2600, 90 and 2304 bytes
    st = _ota_records(app, "staging")[0]
    assert st["release"] == "rel-1" and st["version"] == "2.0.0" and st["from"] == "0.1.0" and st["slot"] == "b"
    assert _ota_records(app, "staged")[0]["files"] == 3
    # Idle (doors shut, nothing running): after the quiet time, the switch.
    assert await kit.wait_for(lambda: resets, 3000)
    sw = _ota_records(app, "switching")
    assert len(sw) == 1 and sw[0]["version"] == "2.0.0" and sw[0]["from"] == "0.1.0"
    s = bootsel.state()
    assert s["active"] == "a" and s["trial"] == "b" and s["tries"] == 1 and s["trial_s"] == 60 and not s["trying"]
    assert bootsel.running() == "a" and bootsel.bootable("b")
    assert not files_exist(ota.STAGE)
    assert not any(lk["energized"] for lk in w.state()["locks"].values())
    await app.stop()


def files_exist(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def test_a_release_is_staged_in_the_idle_slot_checked_and_switched_to_on_trial():
    asyncio.run(_stage_then_switch())


async def _waits_for_idle():
    _running_slot()
    app, w, r, resets = await _up()
    ctl = app.ctl
    man, parts = release(_files())
    ctl.submit("svc", "service_start", {"session": "tech-1"})
    assert app.link.gate.handle(command("ota", offer("rel-2", man, parts), "c2")) == "in_progress"
    host = Host(app, "rel-2", parts, r, "c2")
    assert await host.until(lambda: _staged(app))
    # A service session is open: the kiosk is not idle, so it does not switch.
    await asyncio.sleep_ms(1500)
    assert not resets and not _ota_records(app, "switching")
    ctl.submit("svc-end", "service_end", {})
    # Idle, but the link is down: no switch either (the trial could not confirm).
    app.link.up = False
    await asyncio.sleep_ms(1500)
    assert not resets
    app.link.up = True
    assert await kit.wait_for(lambda: resets, 3000)
    # A patient's door open: not idle either (checked on the controller itself).
    w.handle({"op": "door", "door": "pickup", "action": "force"})
    assert await kit.wait_for(lambda: not ctl.doors_secure(), 3000)
    assert not ctl.idle()
    await app.stop()


def test_the_switch_waits_until_the_kiosk_is_idle_and_connected():
    asyncio.run(_waits_for_idle())


def _hold_carousel(ctl, moving):
    """The carousel turning for as long as the test says (moving[0])."""
    real = ctl.moving
    ctl.moving = lambda: moving[0] or real()
    return moving


async def _transfer_pauses_while_an_operation_runs():
    _running_slot()
    app, w, r, resets = await _up()
    man, parts = release(_files())
    moving = _hold_carousel(app.ctl, [True])
    assert app.link.gate.handle(command("ota", offer("rel-3", man, parts), "c3")) == "in_progress"
    await asyncio.sleep_ms(1500)
    # The offer is taken, but nothing touches the flash while the carousel moves.
    assert [i.get("step") for s, i in r.of("c3")] == ["clearing"], r.of("c3")
    assert app.ota.stage["state"] == "clearing" and not files_exist("fw/b")
    moving[0] = False
    host = Host(app, "rel-3", parts, r, "c3")
    assert await host.until(lambda: _staged(app) or resets)
    await app.stop()


def test_the_transfer_waits_while_the_carousel_moves():
    asyncio.run(_transfer_pauses_while_an_operation_runs())


async def _next_window_once_the_carousel_stops():
    _running_slot()
    app, w, r, resets = await _up()
    man, parts = release(_files())
    moving = _hold_carousel(app.ctl, [False])

    def wants():
        return [i for s, i in r.of("c3b") if i.get("step") == "transferring"]
    assert app.link.gate.handle(command("ota", offer("rel-3b", man, parts), "c3b")) == "in_progress"
    assert await kit.wait_for(lambda: wants(), 3000)
    # A window arrives while the carousel turns: it goes to flash, and the
    # next is not asked for while the move lasts.
    moving[0] = True
    host = Host(app, "rel-3b", parts, r, "c3b", size=200)
    host.pump()
    assert host.sent == 8 and app.ota.got == 8
    await asyncio.sleep_ms(400)
    assert len(wants()) == 1
    # The move ends: the next window is asked for then, not when the line
    # would have been quiet for the retry time (3 s).
    moving[0] = False
    t0 = time.ticks_ms()
    assert await kit.wait_for(lambda: len(wants()) == 2, 2500), wants()
    assert time.ticks_diff(time.ticks_ms(), t0) < 1000
    assert 200 < len(man) <= 400     # the manifest took 2 chunks, kiosk/app.mpy the 6 others
    assert (wants()[1]["file"], wants()[1]["offset"]) == (1, 6 * 200), wants()
    assert await host.until(lambda: _staged(app) or resets)
    await app.stop()


def test_the_next_window_is_asked_for_as_soon_as_the_carousel_stops():
    asyncio.run(_next_window_once_the_carousel_stops())


async def _resume():
    _running_slot()
    app, w, r, resets = await _up()
    files = _files()
    man, parts = release(files)
    app.ota.quiet_ms = 60000
    assert app.link.gate.handle(command("ota", offer("rel-4", man, parts), "c4")) == "in_progress"
    host = Host(app, "rel-4", parts, r, "c4", size=700, budget=3)
    # Cut while file 1 (kiosk/app.mpy, 2600 bytes) is half in: the manifest
    # and two chunks of it are on flash.
    assert await host.until(lambda: app.ota.f == 1 and app.ota.o == 1400)
    old = app.ota
    old.out.close()
    assert files_exist("fw/b/kiosk/app.mpy.part") and not files_exist("fw/b/kiosk/app.mpy")
    # The next boot: a new updater on the same flash (and the same link, as
    # the new process would build it); nothing but the flash carries over.
    from kiosk.link.ota import Updater
    for t in app.ctl.supervisor.tasks:
        if t.name == "ota":
            t.handle.cancel()       # the old process is gone, its task with it
    app.ctl.supervisor.tasks = [t for t in app.ctl.supervisor.tasks if t.name != "ota"]
    u = Updater(app.link, app.ctl, app.journal, "0.1.0")
    u.start(app.ctl.supervisor)
    assert _ota_records(app, "resumed")[-1]["release"] == "rel-4"
    assert await kit.wait_for(lambda: [i for s, i in r.of("c4") if i.get("step") == "transferring"
                                       and i["file"] == 1 and i["offset"] >= 1400], 3000)
    want = [i for s, i in r.of("c4") if i.get("step") == "transferring"][-1]
    assert want["offset"] == old.o and want["done"] == len(man) + old.o, (want, old.o)
    host.served = len([1 for s, i in r.of("c4") if i.get("step") == "transferring"]) - 1
    host.budget = None
    assert await host.until(lambda: u.stage is not None and u.stage["state"] == "staged")
    for p, data in files.items():
        with open("fw/b/" + p, "rb") as f:
            assert f.read() == data, p
    await app.stop()


def test_a_transfer_cut_by_a_reset_resumes_where_the_flash_says():
    asyncio.run(_resume())


async def _corrupt_in_transit():
    _running_slot()
    app, w, r, resets = await _up()
    man, parts = release(_files())
    assert app.link.gate.handle(command("ota", offer("rel-5", man, parts), "c5")) == "in_progress"
    host = Host(app, "rel-5", parts, r, "c5", corrupt=(1, 2000))
    assert await host.until(lambda: app.ota.stage is None)
    (ref,) = _ota_records(app, "refused")
    assert ref["why"] == "bad_file" and ref["file"] == "kiosk/app.mpy" and ref["release"] == "rel-5", ref
    assert r.of("c5")[-1] == ("failed", {"reason": "bad_file"})
    assert not files_exist("fw/b/manifest.txt") and not files_exist(ota.STAGE)
    assert bootsel.state().get("trial") is None
    await asyncio.sleep_ms(800)
    assert not resets
    await app.stop()


def test_a_file_that_does_not_match_the_manifest_is_refused_before_any_switch():
    asyncio.run(_corrupt_in_transit())


async def _corrupt_on_flash():
    _running_slot()
    app, w, r, resets = await _up()
    files = _files()
    man, parts = release(files)
    ctl = app.ctl
    real = ctl.moving
    moving = [False]
    ctl.moving = lambda: moving[0] or real()
    assert app.link.gate.handle(command("ota", offer("rel-6", man, parts), "c6")) == "in_progress"
    host = Host(app, "rel-6", parts, r, "c6", budget=7)
    # All but the last chunk in; then the carousel turns, the last chunk
    # comes, and the final check waits for the carousel: meanwhile the
    # flash goes bad.
    assert await host.until(lambda: app.ota.f == 3 and app.ota.o == 2048)
    moving[0] = True
    app.link._on_msg(app.link.p.prefix + b"ota", chunk("rel-6", 3, 2048, parts[3][2048:]))
    assert app.ota.stage["state"] == "verifying"
    await asyncio.sleep_ms(500)
    assert app.ota.stage["state"] == "verifying"
    with open("fw/b/kiosk/core/x.mpy", "r+b") as f:
        f.write(b"\x00")
    moving[0] = False
    assert await kit.wait_for(lambda: app.ota.stage is None, 3000)
    (ref,) = _ota_records(app, "refused")
    assert ref["why"] == "bad_file" and ref["file"] == "kiosk/core/x.mpy", ref
    assert not files_exist("fw/b/manifest.txt") and bootsel.state().get("trial") is None and not resets
    await app.stop()


def test_a_file_damaged_on_flash_before_the_switch_is_found_by_the_final_check():
    asyncio.run(_corrupt_on_flash())


async def _bad_chunks():
    _running_slot()
    app, w, r, resets = await _up()
    man, parts = release(_files())
    assert app.link.gate.handle(command("ota", offer("rel-7", man, parts), "c7")) == "in_progress"
    assert await kit.wait_for(lambda: app.ota.entry is not None, 3000)
    t = app.link.p.prefix + b"ota"
    for bad in (chunk("rel-7", 0, 0, man, key=b"\x01" * 32),    # another key
                chunk("rel-7", 0, 10, man[10:]),                    # not where the kiosk is
                chunk("rel-8", 0, 0, man),                          # another release
                chunk("rel-7", 0, 0, man)[:-1] + b"X",              # altered after signing
                b"KOTA1 garbage", b"", b"\xff" * 1100):
        app.link._on_msg(t, bad)
    assert app.ota.dropped == 7 and app.ota.o == 0 and app.ota.chunks == 0, (app.ota.dropped, app.ota.o, app.ota.chunks)
    with open("fw/b/manifest.new.part", "rb") as f:
        assert f.read() == b""
    app.link._on_msg(t, chunk("rel-7", 0, 0, man))
    assert app.ota.chunks == 1 and app.ota.f == 1, "the manifest, whole and signed, is taken"
    await app.stop()


def test_chunks_from_anyone_but_the_host_or_out_of_place_are_dropped():
    asyncio.run(_bad_chunks())


async def _offers():
    _running_slot()
    app, w, r, resets = await _up()
    man, parts = release(_files())
    good = offer("rel-9", man, parts)
    for k, v in (("trial_s", 5), ("manifest", "x" * 64), ("release", "../x"), ("size", True), ("extra", 1)):
        bad = dict(good)
        bad[k] = v
        assert app.link.gate.handle(command("ota", bad, "bad-" + k)) == "bad_args", k
    app.ota._space = lambda: 1000   # a full flash
    assert app.link.gate.handle(command("ota", good, "c9")) == "rejected"
    ref = _ota_records(app, "refused")[-1]
    assert ref["why"] == "no_space" and ref["free"] == 1000 and ref["need"] > ref["free"], ref
    assert r.of("c9") == [("rejected", {"reason": "no_space"})]
    del app.ota._space
    # The release the kiosk already runs: nothing to do.
    with open("fw/a/manifest.txt", "wb") as f:
        f.write(man)
    assert app.link.gate.handle(command("ota", good, "c10")) == "succeeded"
    assert _ota_records(app, "current")[-1]["release"] == "rel-9" and app.ota.stage is None
    await app.stop()


def test_offers_are_checked_and_a_full_flash_or_the_running_release_refused():
    asyncio.run(_offers())


async def _flat():
    app, w, r, resets = await _up()     # no fw/: the flat layout
    man, parts = release(_files())
    assert app.link.gate.handle(command("ota", offer("rel-10", man, parts), "c11")) == "rejected"
    assert _ota_records(app, "refused")[-1]["why"] == "not_slotted"
    await app.stop()


def test_a_board_without_slots_refuses_updates():
    asyncio.run(_flat())


async def _abort():
    _running_slot()
    app, w, r, resets = await _up()
    man, parts = release(_files())
    assert app.link.gate.handle(command("ota", offer("rel-11", man, parts), "c12")) == "in_progress"
    assert await kit.wait_for(lambda: app.ota.entry is not None, 3000)
    assert app.link.gate.handle(command("ota_abort", {"release": "rel-11"}, "c13")) == "succeeded"
    assert app.ota.stage is None and not files_exist(ota.STAGE)
    ab = _ota_records(app, "aborted")[-1]
    assert ab["release"] == "rel-11" and ab["why"] == "host"
    await app.stop()


def test_the_host_can_drop_a_release_being_staged():
    asyncio.run(_abort())


def _as_trial(trial_s=60):
    """The flash as the selector leaves it when it starts a trial of b."""
    _running_slot("1.0.0")
    files.makedirs("fw/b/kiosk")
    with open("fw/b/manifest.txt", "w") as f:
        f.write("kiosk-slot 1\nversion 0.1.0\n")
    bootsel.arm("b", trial_s)
    assert bootsel.choose(bootsel.state()) == ("b", True)


async def _trial_confirms():
    _as_trial()
    app, w, r, resets = await _up()
    app.link.up = False
    (tr,) = _ota_records(app, "trial")
    assert tr["version"] == "0.1.0" and tr["from"] == "1.0.0" and tr["slot"] == "b" and tr["deadline_s"] == 60
    await asyncio.sleep_ms(600)
    assert bootsel.state()["trial"] == "b", "not healthy yet: no link, nothing acknowledged"
    app.link.up = True
    await asyncio.sleep_ms(600)
    assert bootsel.state()["trial"] == "b", "the host has not acknowledged the trial's record"
    app.journal.ack(tr["s"])
    assert await kit.wait_for(lambda: bootsel.state()["trial"] is None, 3000)
    assert bootsel.state()["active"] == "b" and bootsel.running() == "b"
    (c,) = _ota_records(app, "confirmed")
    assert c["version"] == "0.1.0" and c["from"] == "1.0.0"
    assert not resets
    await app.stop()


def test_a_trial_confirms_itself_once_healthy_and_acknowledged():
    asyncio.run(_trial_confirms())


async def _trial_deadline():
    _as_trial(trial_s=1)
    app, w, r, resets = await _up()
    app.link.up = False
    assert await kit.wait_for(lambda: resets, 4000)
    (f,) = _ota_records(app, "trial_failed")
    assert f["why"].startswith("link down"), f
    st = bootsel.state()
    assert st["why"] == f["why"] and st["tries"] == 0 and st["trial"] == "b"
    # The next boot: the selector falls back, the previous firmware reports it, once.
    assert bootsel.choose(st) == ("a", False)
    await app.stop()
    app = w = r = None
    await asyncio.sleep_ms(50)
    gc.collect()
    app, w, r, resets = await _up()
    (rb,) = _ota_records(app, "rolled_back")
    assert rb["version"] == "0.1.0" and rb["why"] == f["why"] and rb["slot"] == "b", rb
    assert rb["running"] == "0.1.0" and bootsel.state()["rolled_back"]["reported"]
    from kiosk.link.ota import Updater
    Updater(app.link, app.ctl, app.journal, "0.1.0")    # the boot after: nothing more to report
    assert len(_ota_records(app, "rolled_back")) == 1
    await app.stop()


def test_a_trial_not_healthy_by_its_deadline_gives_up_and_the_rollback_is_reported_once():
    asyncio.run(_trial_deadline())


async def _short():
    _running_slot()
    app, w, r, resets = await _up()
    man, parts = release(_files())
    assert app.link.gate.handle(command("ota", offer("rel-12", man, parts), "c14")) == "in_progress"
    assert await kit.wait_for(lambda: app.ota.entry is not None, 3000)
    t = app.link.p.prefix + b"ota"
    app.link._on_msg(t, chunk("rel-12", 0, 0, man))
    app.link._on_msg(t, chunk("rel-12", 1, 0, parts[1][:1000]))
    assert app.ota.f == 1 and app.ota.o == 1000
    # The host moves on to the next file: what it has of this one is short.
    app.link._on_msg(t, chunk("rel-12", 2, 0, parts[2]))
    (ref,) = _ota_records(app, "refused")
    assert ref["why"] == "bad_file" and ref["file"] == "kiosk/app.mpy" and "shorter" in ref["detail"], ref
    assert app.ota.stage is None
    await app.stop()


def test_a_file_the_host_has_less_of_than_the_manifest_says_is_refused():
    asyncio.run(_short())
