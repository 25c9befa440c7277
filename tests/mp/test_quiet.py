# The motion quiet window: while a carousel moves, the kiosk keeps its own
# stalls out of the way. The heap is collected before the move, and saving
# the host's ack pointer, sensor reads (a 1-Wire read blocks the loop about
# 10 ms per sensor) and climate saves wait until it ends; what was put off
# happens right after. Under the board personalities every flash write
# stalls the CPU (sim/port.py), so none may fall inside a move.
import asyncio
import kit
import port


async def _moves():
    app, w = kit.boot(policies={"sample_period_s": 1})
    ctl = app.ctl
    j = app.journal
    ctl.start()
    assert await kit.wait_for(ctl.settled, 5000)
    await ctl.home_all()
    assert await kit.wait_for(lambda: all(s.dev for s in ctl.sensors._slots), 5000)
    in_move = {"reads": 0, "stalls": 0, "reads_out": 0}
    for s in ctl.sensors._slots:      # every bus read, and whether a move was on
        def read(orig=s.dev.read):
            in_move["reads" if ctl.moving() else "reads_out"] += 1
            return orig()
        s.dev.read = read
    real_stall = port.stall

    def stall(us):
        if ctl.moving() and us > 0:
            in_move["stalls"] += 1
        real_stall(us)
    port.stall = stall
    c = ctl.carousels[0]
    try:
        for k in range(12):
            seq = j.append("test", {"n": k})
            saved = j._saved
            task = asyncio.create_task(ctl.motor(c.move_to_bin(6 if k % 2 == 0 else 0), "test"))
            assert await kit.wait_for(ctl.moving, 1000, 1)
            j.ack(seq)                     # the host's ack comes in mid-move
            assert j._saved == saved       # ... and waits
            await task
            assert j._saved == seq, (j._saved, seq)   # saved once the move ended
            await asyncio.sleep_ms(150)
    finally:
        port.stall = real_stall
        await ctl.stop()
    assert in_move["reads"] == 0 and in_move["stalls"] == 0, in_move
    assert in_move["reads_out"] >= 2, in_move         # rounds still happen, between moves


def test_flash_writes_and_sensor_reads_wait_for_the_move_to_end():
    asyncio.run(_moves())
