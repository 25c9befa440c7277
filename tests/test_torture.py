"""Short torture runs inside `make test` (the long ones: `make torture`).
See tests/torture.py for what is checked after every cut and outage."""

from __future__ import annotations

import pytest

from torture import CUSTODY_FAULTS, Rig, custody_run, outage_run, power_cut_run


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


def test_custody_faults_lose_nothing_without_a_loss_record(rig):
    # One of each: an ack flood with the bridge down, a corrupt record, a
    # wiped journal on a re-provisioned board, a full flash, a cut during
    # the boot that closes a cut operation.
    out = custody_run(rig, rounds=len(CUSTODY_FAULTS), seed=5, log=lambda *a: None)
    assert all(out[f"custody_{f}"] == 1 for f in CUSTODY_FAULTS), out
    assert out["junk_acks"] == 600 and out["records_corrupted"] == 1 and out["journals_wiped"] == 1
    assert out["flash_filled"] == 1 and out["recovery_boots_cut"] == 1
    assert out["events_lost"] == 0 and out["events_duplicated"] == 0 and out["pickups_repeated"] == 0
    assert out["events_reported_lost"] >= 1 and out["events_checked"] > 30, out
    assert out.get("doors_left_unlocked", 0) == 0
