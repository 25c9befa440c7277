"""Short torture runs inside `make test` (the long ones: `make torture`).
See tests/torture.py for what is checked after every cut and outage."""

from __future__ import annotations

import pytest

from torture import Rig, outage_run, power_cut_run


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path, kiosks=2)
    yield r
    r.close()


def test_power_cuts_at_random_instants_lose_nothing_and_repeat_nothing(rig):
    out = power_cut_run(rig, cuts_per_kiosk=6, seed=7, log=lambda *a: None)
    assert out["power_cuts"] == 12 and out["boots_checked"] == 12
    assert out.get("doors_left_unlocked", 0) == 0 and out.get("pickups_repeated", 0) == 0
    assert out.get("events_lost", 0) == 0 and out["events_checked"] > 50
    assert out["restocks_requested"] > 0 and out["codes_scanned"] > 0, out
    assert out.get("orders_dispensed_twice", 0) == 0 and out.get("order_transitions_lost", 0) == 0
    assert out["orders_checked"] > 0 and out["webhooks_checked"] > 0


def test_broker_bridge_and_network_outages_lose_nothing(rig):
    out = outage_run(rig, outages=6, seed=11, log=lambda *a: None)
    assert out["outages"] == 6
    assert out.get("events_lost", 0) == 0 and out.get("pickups_repeated", 0) == 0
    assert out.get("doors_left_unlocked", 0) == 0
    assert out.get("orders_dispensed_twice", 0) == 0 and out.get("order_transitions_lost", 0) == 0
    assert out["orders_checked"] > 0 and out["webhooks_checked"] > 0
    assert out["max_link_stall_us"] >= 0, "the kiosks reported their longest control-loop stall"
