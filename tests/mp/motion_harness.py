# A far move on a shipped board's carousel under its port personality,
# for benchmarks/bench_motion.py: home, then half a turn while the flash is
# written every `every_ms` (each write stalls the CPU: an erase is 45 ms
# with interrupts off), or with no writes (every_ms 0). Prints one JSON
# line: the move's worst_step_gap_ratio as the simulated carousel timed it,
# where it landed against where it should, any fault, and the stalls.
#   micropython motion_harness.py BOARD EVERY_MS
# Only firmware names every version since the port personalities has, so
# the benchmark can run it on an earlier commit's tree (kit is this one's).
import sys
import json
import asyncio
import kit
import port
import simworld
from kiosk.hw import stepper


async def main(name, every_ms):
    b = kit.board(name)
    cfg = b["carousels"][0]
    w = simworld.install(b)
    sim = w.carousels["A"]
    sim.set_position(0)
    car = stepper.from_board(b, cfg)
    out = {"board": name, "port": kit.PORT, "steps": 0, "fault": None}
    try:
        await car.home()
    except stepper.StepperFault as e:
        out["fault"] = "home: " + str(e)
        print(json.dumps(out))
        return
    target = cfg["bins"] // 2
    stop = [False]
    t = asyncio.create_task(kit.flash_writer(stop, every_ms)) if every_ms else None
    try:
        await car.move_to_bin(target)
    except stepper.StepperFault as e:
        out["fault"] = str(e)
    stop[0] = True
    out["writes"] = await t if t else 0
    st = sim.state()
    moves = [m for m in st["move_log"] if m["kind"] == "move"]
    if moves:
        out["steps"] = moves[-1]["steps"]
        out["worst_step_gap_ratio"] = moves[-1]["worst_step_gap_ratio"]
        out["worst_at"] = moves[-1]["worst_at"]
    out["off_by"] = st["position"] - target * cfg["steps_per_bin"]
    out["violations"] = w.violation_count
    out["erases"] = port.stats["erases"]
    out["longest_stall_us"] = port.stats["longest_stall_us"]
    print(json.dumps(out))


asyncio.run(main(sys.argv[1], int(sys.argv[2])))
