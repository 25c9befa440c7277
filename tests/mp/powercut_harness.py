# The kiosk's power is cut in the middle of a pickup; the same flash boots
# again. Driven by tests/test_power_cut.py, which cuts the power from
# outside (kill -9 the moment it reads a line) or asks for a cut at one
# exact instant inside the firmware.
#
#   powercut_harness.py prepare          provision the flash (cwd), restock
#                                        bin 3 with RX-3, stop cleanly
#   powercut_harness.py run DOORS [AT]   boot, pick up RX-3 from bin 3 as
#                                        operation "p" with a patient at the
#                                        door; AT: cut the power at that
#                                        exact instant (see _EXACT)
#   powercut_harness.py check DOORS      boot again, let the inputs settle,
#                                        print one REPORT line (JSON)
#   powercut_harness.py recover DOORS N  boot once more, and cut the power
#                                        right after the Nth write to flash
#                                        of the boot itself (the boot that
#                                        closes what a cut left); prints
#                                        WRITES n (how many it made) when
#                                        it gets through
#
# DOORS is a file outside the flash where the run keeps the doors' physical
# state (the simulated world starts with every door shut; a door a patient
# left open stays open through a power cut, so check opens it again before
# the firmware boots and the patient shuts it a little later).
#
# Lines the run prints, each as it happens (the host reads them live):
#   BOOT n                   the journal's boot counter
#   STATE p <state>          a reply for the pickup (queued, in_progress, ...)
#   STEP <step>              a step of the pickup begins (journal and op
#                            record on flash are written before this line)
#   COIL <door> on|off       a lock's coil is powered / unpowered
#   DOOR <door> open|closed  the patient moved the door
#   CUT <instant>            an exact cut happens now: when the pickup is
#                            queued, in_progress, the coil is powered, a
#                            second pickup was queued and cancelled during
#                            waiting_open, the pickup was journaled, op.json
#                            was removed
#   FINISHED <state>         the pickup ended (the kiosk then idles for
#                            10 s, as one does, unless its power is cut)
import asyncio
import json
import os
import sys
import simworld
import kit

POLICIES = {"door_open_timeout_s": 3, "door_held_open_s": 2, "relock_verify_s": 2,
            "sample_period_s": 5}
ORDER = "RX-3"
BIN = 3
OP = "p"
# Instants an exact cut can be asked for.
_EXACT = ("queued", "in_progress", "coil", "cancel_queued", "pickup_journaled", "op_cleared")


def say(*words):
    print(*words)
    flush = getattr(sys.stdout, "flush", None)
    if flush:
        flush()


def cut(where):
    say("CUT", where)
    simworld.hard_exit(1)   # the plug is pulled: no cleanup at all


def _doors_read(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _doors_write(path, doors):
    with open(path, "w") as f:
        json.dump(doors, f)


async def prepare():
    app, w = kit.boot(policies=POLICIES)
    r = kit.Replies(app.ctl)
    app.ctl.start()
    app.ctl.submit("s", "service_start", {"session": "tech"})
    tech = asyncio.create_task(kit.technician(w, app.ctl))
    app.ctl.submit("r", "restock", {"order": ORDER, "bin": BIN})
    state, info = await r.final("r")
    await tech
    app.ctl.submit("e", "service_end", {})
    await app.stop()
    assert state == "succeeded", (state, info)
    say("READY", json.dumps(app.ctl.stock.bins))


async def patient(w, doors_path, doors):
    lk = w.locks["pickup"]
    assert await kit.wait_for(lk.energized, 30000), "the pickup door was never unlocked"
    await asyncio.sleep_ms(100)
    assert w.handle({"op": "door", "door": "pickup", "action": "open"})["ok"]
    doors["pickup"] = "open"
    _doors_write(doors_path, doors)
    say("DOOR pickup open")
    await asyncio.sleep_ms(1500)
    w.handle({"op": "door", "door": "pickup", "action": "close"})
    doors["pickup"] = "closed"
    _doors_write(doors_path, doors)
    say("DOOR pickup closed")


async def run(doors_path, at):
    if at and at not in _EXACT:
        raise SystemExit("unknown cut instant %r (have %s)" % (at, ", ".join(_EXACT)))
    b = kit.board()
    w = simworld.install(b)
    for cfg in b["locks"]:
        def coil(active, name=cfg["name"]):
            say("COIL", name, "on" if active else "off")
            if active and name == "pickup" and at == "coil":
                cut(at)
        simworld.SimPin(w, cfg["drive_pin"]).watch(coil)
    from kiosk.app import App
    from kiosk import files as store
    app = App()
    ctl = app.ctl
    say("BOOT", app.journal.boot)

    def reply(op_id, state, info):
        if op_id != OP:
            return
        say("STATE", op_id, state)
        if state == "in_progress" and info.get("step"):
            say("STEP", info["step"])
        if state == at:
            cut(at)
        if at == "cancel_queued" and info.get("step") == "waiting_open":
            # The host queues another pickup and cancels it again while
            # this one waits for its door; then the power goes.
            ctl.submit("q", "pickup", {"order": ORDER, "bin": BIN})
            ctl.submit("c", "cancel", {"target": "q"})
            cut(at)
    ctl.reply = reply

    if at == "pickup_journaled":
        append = app.journal.append

        def journal_then_cut(kind, fields=None):
            seq = append(kind, fields)
            if kind == "pickup" and fields and fields.get("id") == OP:
                cut(at)
            return seq
        app.journal.append = journal_then_cut
    if at == "op_cleared":
        remove = store.remove

        def remove_then_cut(path):
            remove(path)
            if path == "op.json":
                cut(at)
        store.remove = remove_then_cut

    doors = {"pickup": "closed", "service": "closed"}
    _doors_write(doors_path, doors)
    ctl.start()
    who = asyncio.create_task(patient(w, doors_path, doors))
    ctl.submit(OP, "pickup", {"order": ORDER, "bin": BIN})
    end = 40000
    while end > 0 and (ctl.op is not None or ctl.queue or who is not None and not who.done()):
        await asyncio.sleep_ms(20)
        end -= 20
    state = "none"
    for rid, st, _ in ctl.recent:
        if rid == OP:
            state = st
    say("FINISHED", state)
    await asyncio.sleep_ms(10000)
    await app.stop()


async def check(doors_path):
    b = kit.board()
    w = simworld.install(b)
    left_open = [d for d, s in _doors_read(doors_path).items() if s == "open"]
    for d in left_open:
        w.handle({"op": "door", "door": d, "action": "force"})   # still open since the cut
    energised = []
    for cfg in b["locks"]:
        def coil(active, name=cfg["name"]):
            if active:
                energised.append(name)
        simworld.SimPin(w, cfg["drive_pin"]).watch(coil)
    had_op_file = "op.json" in os.listdir()
    from kiosk.app import App
    from kiosk import files as store
    app = App()
    ctl = app.ctl
    replies = []
    ctl.reply = lambda op_id, state, info: replies.append([op_id, state])
    moves0 = w.carousels["A"].state()["moves"]
    ctl.start()
    await asyncio.sleep_ms(1200)
    for d in left_open:   # the patient walks away, shutting the door
        w.handle({"op": "door", "door": d, "action": "close"})
    settled = await kit.wait_for(lambda: all(lk.secure() for lk in app.locks.values()), 6000)
    await asyncio.sleep_ms(300)

    seqs = []
    boots = []
    ops = []
    pickups = []
    later = []            # records for OP journaled by this boot besides the reset's op record
    for _, line in app.journal.iter_lines():
        rec = json.loads(line)
        seqs.append(rec["s"])
        if not boots or boots[-1] != rec["b"]:
            boots.append(rec["b"])
        if rec.get("id") != OP:
            continue
        if rec["k"] == "op":
            ops.append(rec)
        elif rec["k"] == "pickup":
            pickups.append(rec)
        if rec["b"] == app.journal.boot and not (rec["k"] == "op" and rec.get("reason") == "reset") \
                and not (rec["k"] == "pickup" and rec.get("recovered")):
            later.append(rec)
    stats = app.journal.stats()
    report = {
        "boot": app.journal.boot,
        "boots": boots,
        "records": len(seqs),
        "first_seq": seqs[0] if seqs else None,
        "last_seq": seqs[-1] if seqs else None,
        "seq_increasing": all(a < b for a, b in zip(seqs, seqs[1:])),
        "journal_last_seq": app.journal.last_seq,
        "torn_skipped": stats["torn_skipped"],
        "had_op_file": had_op_file,
        "op_file_left": "op.json" in os.listdir() or "queue.json" in os.listdir(),
        "ops": ops,
        "pickups": pickups,
        "later": later,
        "replies": replies,
        "energised": energised,
        "moved": w.carousels["A"].state()["moves"] - moves0,
        "settled": settled,
        "left_open": left_open,
        "doors_closed": all(lk.door_closed for lk in w.locks.values()),
        "bolts_engaged": all(lk.bolt_engaged() for lk in w.locks.values()),
        "coils_off": not any(lk.energized() for lk in w.locks.values()),
        "secure": {n: lk.secure() for n, lk in app.locks.items()},
        "stock_file": store.read_json("stock.json"),
        "stock": ctl.stock.bins,
        "unverified": ctl.stock.unverified,
        "violations": w.violations,
    }
    await app.stop()
    say("REPORT", json.dumps(report))


async def recover(doors_path, n):
    """Boot on a flash a cut left with an operation to close, and cut the
    power again right after the boot's nth write to flash: a journal
    record, a file replaced, a file removed."""
    b = kit.board()
    w = simworld.install(b)
    for d, st in _doors_read(doors_path).items():
        if st == "open":
            w.handle({"op": "door", "door": d, "action": "force"})
    from kiosk import files
    from kiosk.core.journal import Journal
    writes = [0]

    def counted(fn):
        def write(*args, **kw):
            r = fn(*args, **kw)
            writes[0] += 1
            say("WRITE", writes[0], fn.__name__, args[0] if args and isinstance(args[0], str) else "")
            if writes[0] == n:
                cut("recover-%d" % n)
            return r
        return write

    files.replace = counted(files.replace)
    files.remove = counted(files.remove)
    Journal.append = counted(Journal.append)
    from kiosk.app import App
    app = App()
    say("WRITES", writes[0])
    await app.stop()


def main(argv):
    mode = argv[1] if len(argv) > 1 else ""
    if mode == "prepare":
        asyncio.run(prepare())
    elif mode == "run" and len(argv) in (3, 4):
        asyncio.run(run(argv[2], argv[3] if len(argv) == 4 else None))
    elif mode == "check" and len(argv) == 3:
        asyncio.run(check(argv[2]))
    elif mode == "recover" and len(argv) == 4:
        asyncio.run(recover(argv[2], int(argv[3])))
    else:
        raise SystemExit("usage: powercut_harness.py prepare | run DOORS [AT] | check DOORS | recover DOORS N")


main(sys.argv)
