"""Whole kiosks on the shipped boards, under their port personalities
(`kiosk-bridge emulate --board pico2w|esp32s3`): the real firmware with the
board's own geometry and step timing (PIO fed by DMA on the Pico 2 W, RMT
on the ESP32-S3), the port's errno, interrupts, clock and flash stalls,
through a real broker and the bridge: a restock, a pickup from a far bin,
and a power cut in the middle of a restock, after which nothing is lost,
repeated or left unlocked.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any

import uvicorn
from fastapi import FastAPI

from bridge_support import wait_until
from kiosk_host.emulator.routes import sim_router
from link_support import free_port
from torture import Rig, Worker, _cut


def _sim_world_over_http(rig: Rig, kid: str) -> dict[str, Any]:
    """GET /api/sim/{kid} from the control routes as `emulate --control`
    serves them, over loopback HTTP."""
    app = FastAPI()
    app.include_router(sim_router(rig.fleet))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 20, "the control routes up")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/sim/{kid}", timeout=15) as r:
            assert r.status == 200
            return json.loads(r.read())
    finally:
        server.should_exit = True
        thread.join(10)


def _carousel(rig: Rig, kid: str) -> dict[str, Any]:
    b = json.loads((rig.fleet.kiosk(kid).flash / "boards" / f"{rig.fleet.board}.json").read_text())
    return b["carousels"][0]


def _far_bin(rig: Rig, kid: str) -> int:
    return _carousel(rig, kid)["bins"] // 2 + 1


def _spb(rig: Rig, kid: str) -> int:
    return _carousel(rig, kid)["steps_per_bin"]


def _restock(w: Worker, b: int, order: str, cut_at: str | None = None) -> str | None:
    assert w.wait_cmd(w.cmd("/service", {"session": f"svc-{order}"})) == "succeeded"
    cid = w.cmd("/restocks", {"order_id": order, "bin": b})
    assert cid
    if cut_at:
        wait_until(lambda: any(h.get("step") == cut_at for h in w.rig.bridge.command(cid).get("history", ())),
                   90, f"restock at {cut_at}", every=0.02)
        _cut(w.rig, w.kid)
        return None
    w.label(cid, order)
    w.door_cycle("service", time.monotonic() + 90)
    state = w.wait_cmd(cid, 90)
    w.wait_cmd(w.cmd("/service", method="DELETE"))
    return state


def _run(tmp_path, board: str) -> None:
    rig = Rig(tmp_path, kiosks=1, board=board)
    try:
        kid = rig.fleet.ids[0]
        assert rig.fleet.port == ("rp2" if board == "pico2w" else "esp32")
        rig.settled(kid, 60)
        w = Worker(rig, kid, 1)
        far = _far_bin(rig, kid)
        assert _restock(w, far, "rx-far") == "succeeded"
        cid = w.cmd("/pickups", {"order_id": "rx-far", "bin": far})
        w.door_cycle("pickup", time.monotonic() + 90)
        assert w.wait_cmd(cid, 90) == "succeeded"
        world = _sim_world_over_http(rig, kid)["world"]
        car = world["carousels"]["A"]
        move = [m for m in car["move_log"] if m["kind"] == "move"][-1]
        assert move["steps"] >= 2 * _spb(rig, kid), car["move_log"]    # the far bin: a long move
        assert move["worst_step_gap_ratio"] is not None and car["worst_step_gap_ratio"] == move["worst_step_gap_ratio"]
        assert world["violations"] == [], world["violations"]
        # A power cut while the carousel brings a bin for a restock.
        boot = rig.kiosk(kid)["boot"]
        _restock(w, 2, "rx-cut", cut_at="moving")
        rig.fleet.power(kid, True)
        rig.wait_online(kid, boot, 90)
        rig.check_locked_after_boot(kid)
        assert rig.check_store(kid) > 10
        assert rig.counts.get("doors_left_unlocked", 0) == 0
    finally:
        rig.close()


class TestPico2W:
    def test_restock_pickup_and_a_power_cut(self, tmp_path):
        _run(tmp_path, "pico2w")


class TestEsp32S3:
    def test_restock_pickup_and_a_power_cut(self, tmp_path):
        _run(tmp_path, "esp32s3")
