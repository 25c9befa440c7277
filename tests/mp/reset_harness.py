# A kiosk whose power is cut in the middle of a pickup, and what it says
# after it boots again on the same flash.
#   reset_harness.py run STEP   restock bin 3 (once), start a pickup and cut
#                               the power (kill -9) the moment STEP begins
#   reset_harness.py run MS     the same, cutting MS ms after the pickup starts
#   reset_harness.py check ID   boot again, watch for 3 s, print a JSON report
import asyncio
import json
import os
import sys
import simworld
import kit

FAST = {"door_open_timeout_s": 4, "door_held_open_s": 3, "relock_verify_s": 2, "sample_period_s": 5}


def _boot():
    if "config.json" in os.listdir():
        b = kit.board()
        w = simworld.install(b)
        from kiosk.app import App
        return App(), w
    return kit.boot(policies=FAST)


async def run(where):
    app, w = _boot()
    r = kit.Replies(app.ctl)
    cut_at = where if not where.isdigit() else None
    seen = r.__call__

    def spy(op_id, state, info):
        seen(op_id, state, info)
        if op_id == "p" and info.get("step") == cut_at:
            print("CUT", cut_at)
            simworld.hard_exit(1)   # the plug is pulled: no cleanup at all
    app.ctl.reply = spy
    app.ctl.start()
    if "3" not in app.ctl.stock.bins:
        app.ctl.submit("s", "service_start", {"session": "tech"})
        tech = asyncio.create_task(kit.technician(w, app.ctl))
        app.ctl.submit("r", "restock", {"order": "RX-3", "bin": 3})
        assert (await r.final("r"))[0] == "succeeded"
        await tech
        app.ctl.submit("e", "service_end", {})
    asyncio.create_task(kit.person(w, "pickup"))
    app.ctl.submit("p", "pickup", {"order": "RX-3", "bin": 3})
    if cut_at is None:
        await asyncio.sleep_ms(int(where))
        print("CUT", where)
        simworld.hard_exit(1)
    await r.final("p", 30000)
    print("FINISHED", r.last("p"))


async def check(op_id):
    app, w = _boot()
    app.ctl.start()
    energized = False
    moves0 = w.carousels["A"].state()["moves"]
    for _ in range(150):
        await asyncio.sleep_ms(20)
        energized = energized or any(lk.energized() for lk in w.locks.values())
    seqs = []
    ops = []
    pickups = []
    for seq, line in app.journal.iter_lines():
        rec = json.loads(line)
        seqs.append(rec["s"])
        if rec["k"] == "op" and rec.get("id") == op_id:
            ops.append(rec)
        if rec["k"] == "pickup":
            pickups.append(rec)
    print(json.dumps({
        "boot": app.journal.boot,
        "seq_increasing": all(a < b for a, b in zip(seqs, seqs[1:])),
        "records": len(seqs),
        "ops": ops,
        "pickups": pickups,
        "energized": energized,
        "moved": w.carousels["A"].state()["moves"] - moves0,
        "doors_closed": all(lk.door_closed for lk in w.locks.values()),
        "stock": app.ctl.stock.bins,
        "unverified": app.ctl.stock.unverified,
    }))
    await app.stop()


mode, arg = sys.argv[1], sys.argv[2]
asyncio.run(run(arg) if mode == "run" else check(arg))
