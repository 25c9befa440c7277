# The motion quiet window: while a carousel moves, the kiosk keeps its own
# stalls out of the way. The heap is collected before the move, and saving
# the host's ack pointer, sensor rounds (a 1-Wire read blocks the loop about
# 10 ms per sensor) and climate saves wait until it ends; what was put off
# happens right after. Under the board personalities every flash write
# stalls the CPU, so none may fall inside a move.
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
    c = ctl.carousels[0]
    name = ctl.sensors.names()[0]
    reads_in_moves = programs_in_moves = 0
    acked_in_moves = 0
    for k in range(12):
        seq = j.append("test", {"n": k})
        reads = ctl.sensors.state(name)["reads"]
        programs = port.stats["programs"]
        saved = j._saved
        task = asyncio.create_task(ctl.motor(c.move_to_bin(6 if k % 2 == 0 else 0), "test"))
        assert await kit.wait_for(ctl.moving, 1000, 1)
        j.ack(seq)                         # the host's ack comes in mid-move
        await task
        reads_in_moves += ctl.sensors.state(name)["reads"] - reads
        programs_in_moves += port.stats["programs"] - programs - 2   # the motion's start and done records
        acked_in_moves += j._saved != saved
        assert j._saved == seq, (j._saved, seq)                     # saved right after
        await asyncio.sleep_ms(150)
    await ctl.stop()
    assert reads_in_moves == 0, reads_in_moves
    assert acked_in_moves == 0, acked_in_moves
    if port.FLASH:
        assert programs_in_moves <= 0, port.stats
    assert ctl.sensors.state(name)["reads"] >= 2      # rounds still happen, between moves


def test_flash_writes_and_sensor_rounds_wait_for_the_move_to_end():
    asyncio.run(_moves())
