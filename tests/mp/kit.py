# Shared set-up for tests that boot the whole kiosk on the simulated world:
# a flash folder (the test's working directory) provisioned with a board
# file and a config, the world installed from the same board, and small
# "people" (a patient, a technician) acting on the doors.
import asyncio
import json
import os
import simworld

REPO = os.getenv("KIOSK_REPO")
PORT = os.getenv("KIOSK_SIM_PORT") or "unix"
KEY_HEX = "5a" * 32


def on_port(b):
    """The emulator's board under a board personality is its wiring on that
    port: the firmware is told the port's mcu, and times its steps with the
    port's hardware (PIO on the RP2, RMT on the ESP32)."""
    if b["board"] == "emulator" and PORT != "unix":
        b["mcu"] = PORT
        b["step_timing"] = "pio" if PORT == "rp2" else "rmt"
    return b


def board(name="emulator"):
    with open(REPO + "/boards/%s.json" % name) as f:
        return on_port(json.load(f))


def provision(b=None, policies=None, kiosk_id="kiosk-1", **extra):
    b = b or board()
    try:
        os.mkdir("boards")
    except OSError:
        pass
    with open("boards/%s.json" % b["board"], "w") as f:
        json.dump(b, f)
    cfg = {"kiosk_id": kiosk_id, "board": b["board"], "key": KEY_HEX,
           "policies": policies or {}}
    cfg.update(extra)
    with open("config.json", "w") as f:
        json.dump(cfg, f)
    return b


def boot(b=None, policies=None):
    """Provision the flash, install the world and build the kiosk as
    main.py would; returns (app, world). The caller starts its tasks."""
    b = provision(b, policies)
    w = simworld.install(b)
    from kiosk.app import App
    return App(), w


async def wait_for(cond, ms=5000, step=20):
    while not cond():
        if ms <= 0:
            return False
        await asyncio.sleep_ms(step)
        ms -= step
    return True


async def person(world, door, open_after=100, hold=1500, action="open"):
    """Wait for the door to be unlocked, open it, hold it (longer than the
    1 s open debounce, as a person would), close it."""
    lk = world.locks[door]
    assert await wait_for(lk.energized, 20000), "door never unlocked"
    await asyncio.sleep_ms(open_after)
    r = world.handle({"op": "door", "door": door, "action": action})
    assert r["ok"], r
    await asyncio.sleep_ms(hold)
    world.handle({"op": "door", "door": door, "action": "close"})


async def technician(world, ctl, label=None, hold=1500):
    """A technician restocking: scans the package's label (the order, or
    `label`) once the restock is running, then opens and shuts the service
    door when it unlocks."""
    assert await wait_for(lambda: ctl.op is not None and ctl.op.kind == "restock" and ctl.op.state == "in_progress",
                          20000), "no restock ran"
    text = ctl.op.args["order"] if label is None else label
    assert world.handle({"op": "scan", "text": text})["sent"]
    if label is None:
        await person(world, "service", hold=hold)


def scan(world, text):
    """Someone holds a code under the scanner."""
    r = world.handle({"op": "scan", "text": text})
    assert r["sent"], r
    return r


def journal_kinds(journal, kind):
    out = []
    for _, line in journal.iter_lines():
        rec = json.loads(line)
        if rec["k"] == kind:
            out.append(rec)
    return out


class Replies:
    """Collects the controller's replies per operation id."""

    def __init__(self, ctl):
        self.seen = {}
        ctl.reply = self

    def __call__(self, op_id, state, info):
        self.seen.setdefault(op_id, []).append((state, info))

    def last(self, op_id):
        r = self.seen.get(op_id)
        return r[-1] if r else (None, None)

    def states(self, op_id):
        return [s for s, _ in self.seen.get(op_id, ())]

    async def final(self, op_id, ms=20000):
        await wait_for(lambda: self.last(op_id)[0] in ("succeeded", "failed", "timed_out", "rejected", "cancelled"), ms)
        return self.last(op_id)


async def flash_writer(stop, every_ms=120):
    """Flash writes until stop[0]: 4 KiB each, a new block each time (on a
    board personality each stalls the CPU: an erase, then the programs).
    Returns how many."""
    from kiosk import files
    n = 0
    while not stop[0]:
        files.replace("blob.bin", bytes(4096))
        n += 1
        await asyncio.sleep_ms(every_ms)
    return n
