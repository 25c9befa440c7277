"""Torture runs: emulated kiosks doing the pickup's work through a real
bridge (orders created and stocked with their label check, released,
their codes scanned at the kiosk and dispensed) and temperature logging,
while their power is cut at random instants (power-cut torture), or while
the broker and the bridge are killed and the kiosks' network drops (outage
torture). The custody torture (at the end of this file) forces doors
instead and hits one kiosk at a time with a custody fault. Seeded: the
same seed gives the same schedule of operations and cut instants.

Checked after every cut and at the end:
- doors locked after boot: no lock energised when the kiosk comes back;
- no pickup repeated: each pickup command has at most one `pickup` event
  and at most one terminal `op` event, and a command a reset cut short
  is never run again; no order leaves its bin twice;
- no order transition lost: each order the bridge holds agrees with the
  kiosk's journal (dispensed exactly when a pickup record names it, with
  that record's seq; stocked once per restock record), and every change
  in its history reached the pharmacy system's webhook;
- every journal event reaches the bridge's store exactly once: the store
  equals the flash journal, contiguous from seq 1, field for field;
- the journal stays readable: every kiosk boots again and journals on;
- the simulated world saw no safety violation (motion with a door open,
  a coil energised past its cap...).

`make torture` runs the long versions (benchmarks/torture.py);
tests/test_torture.py runs short ones inside `make test`.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bridge_support import (BridgeProc, WebhookReceiver, journal_records, new_order, scan_label, signed_fields,
                            wait_until)
from kiosk_host.emulator import EmulatorError
from kiosk_host.emulator.fleet import Fleet
from link_support import Mosquitto

POLICIES = {"door_open_timeout_s": 4, "telemetry_period_s": 5, "sample_period_s": 2, "door_held_open_s": 30,
            "scan_answer_s": 5, "scan_lockout_s": 5, "label_scan_timeout_s": 10}
TERMINAL = ("succeeded", "failed", "timed_out", "rejected", "cancelled")
BINS = 12


# What a call to a bridge that was just killed raises: refused, reset, or
# cut off in the middle of its answer.
NOT_THERE = (OSError, http.client.HTTPException)


class Problem(AssertionError):
    pass


class Rig:
    def __init__(self, root: Path, kiosks: int, keepalive_s: int = 2, board: str = "emulator"):
        self.root = Path(root)
        self.broker = Mosquitto(self.root / "mq").start()
        self.url = f"mqtt://127.0.0.1:{self.broker.port}"
        # The bridge first, so it hears the kiosks' first events (it reads
        # their keys as they appear); events published before it subscribes
        # would wait for the kiosks' ack timeout.
        (self.root / "keys").mkdir(parents=True, exist_ok=True)
        self.pharmacy = WebhookReceiver()
        self.bridge = BridgeProc(self.root / "bridge", self.url, self.root / "keys", ttl=30,
                                 extra=self.pharmacy.args(self.root)).start()
        self.fleet = Fleet(self.url, kiosks, self.root / "kiosks", self.root / "keys", policies=POLICIES,
                           keepalive_s=keepalive_s, board=board).start()
        self.counts: Counter = Counter()
        self.lock = threading.Lock()
        for kid in self.fleet.ids:
            self.wait_online(kid, 0, 60)

    def count(self, what: str, n: int = 1) -> None:
        with self.lock:
            self.counts[what] += n

    def close(self) -> None:
        self.bridge.stop()
        self.fleet.stop()
        self.broker.stop()
        self.pharmacy.close()

    # -- waiting ---------------------------------------------------------------
    def kiosk(self, kid: str) -> dict[str, Any] | None:
        try:
            status, k = self.bridge.request("GET", f"/api/kiosks/{kid}")
        except NOT_THERE:
            return None
        return k if status == 200 else None

    def wait_online(self, kid: str, after_boot: int, timeout: float = 60) -> dict[str, Any]:
        return wait_until(lambda: (lambda k: k if k and k["online"] and (k["boot"] or 0) > after_boot else None)(
            self.kiosk(kid)), timeout, f"{kid} online after boot {after_boot}", every=0.1)

    def settled(self, kid: str, timeout: float = 20) -> None:
        """Door inputs known (a debounce period after boot)."""
        wait_until(lambda: (lambda k: k and all(d.get("door") == "closed" and d.get("bolt") == "engaged"
                                                 for d in k["doors"].values()) and len(k["doors"]) == 2)(
            self.kiosk(kid)), timeout, f"{kid}'s doors settled")

    def shut_doors(self, kid: str) -> None:
        """A door someone held open when the power went is shut again."""
        for door in ("pickup", "service"):
            try:
                self.fleet.door(kid, door, "close")
            except EmulatorError:
                pass

    # -- checks ----------------------------------------------------------------
    def check_locked_after_boot(self, kid: str) -> None:
        w = self.fleet.world(kid)["world"]
        energised = [n for n, lk in w["locks"].items() if lk["energized"]]
        self.count("boots_checked")
        if energised:
            self.count("doors_left_unlocked", len(energised))
            raise Problem(f"{kid}: {energised} energised right after boot")

    def check_store(self, kid: str, timeout: float = 90) -> int:
        """The store holds the kiosk's flash journal exactly (returns the count)."""
        flash = self.fleet.kiosk(kid).flash
        wait_until(lambda: (lambda k: k and k["events_stored_upto"] >= max(journal_records(flash)))(self.kiosk(kid)),
                   timeout, f"{kid}'s journal in the store", every=0.2)
        recs = journal_records(flash)
        stored = {e["seq"]: e["body"] for e in self.bridge.events(kid)}
        if stored and max(stored) > max(recs):
            # The kiosk journaled (and sent) more between the two reads: compare
            # the store with the flash as it was when the store was read.
            recs = {s: r for s, r in journal_records(flash).items() if s <= max(stored)}
        missing = [s for s in range(1, max(recs) + 1) if s not in stored]
        if missing:
            self.count("events_lost", len(missing))
            raise Problem(f"{kid}: seqs {missing[:10]} missing from the store")
        differ = [s for s, r in recs.items() if signed_fields(stored[s]) != r]
        if differ:
            raise Problem(f"{kid}: stored events differ from flash at {differ[:10]}")
        # The kiosk may journal (and send) more meanwhile: what the store has
        # must be on flash by now, which is read after the store.
        last = max(journal_records(flash))
        extra = [s for s in stored if s > last]
        if extra:
            raise Problem(f"{kid}: the store has events the journal does not: {extra[:10]}")
        return len(stored)

    def check_no_repeats(self, kid: str) -> tuple[int, int]:
        evs = [e["body"] for e in self.bridge.events(kid)]
        pickups = Counter(e["id"] for e in evs if e["k"] == "pickup")
        ops = Counter(e["id"] for e in evs if e["k"] == "op")
        again = [i for i, n in pickups.items() if n > 1] + [i for i, n in ops.items() if n > 1]
        if again:
            self.count("pickups_repeated", len(again))
            raise Problem(f"{kid}: commands run twice: {again[:5]}")
        return sum(pickups.values()), sum(1 for e in evs if e["k"] == "op" and e.get("reason") == "reset")

    def check_orders(self, kid: str) -> int:
        """Every order agrees with the kiosk's journal; returns how many."""
        evs = [e["body"] for e in self.bridge.events(kid)]
        picked: dict[str, list[int]] = {}
        stocked = Counter(e["order"] for e in evs if e["k"] == "restock")
        for e in evs:
            if e["k"] == "pickup":
                picked.setdefault(e["order"], []).append(e["s"])
        twice = {o: s for o, s in picked.items() if len(s) > 1}
        if twice:
            self.count("orders_dispensed_twice", len(twice))
            raise Problem(f"{kid}: orders out of their bins twice: {twice}")
        orders = self.bridge.get(f"/api/orders?kiosk={kid}")
        for o in orders:
            o = self.bridge.get(f"/api/orders/{o['order_id']}")
            events = Counter(h["event"] for h in o["history"])
            seqs = picked.get(o["order_id"], [])
            ok = (o["state"] == "dispensed") == bool(seqs) and events["dispensed"] == len(seqs) \
                and (not seqs or o["dispensed"]["kiosk_seq"] == seqs[0]) \
                and events["stocked"] == stocked[o["order_id"]]
            if not ok:
                self.count("order_transitions_lost")
                raise Problem(f"{kid}: order {o['order_id']} ({o['state']}, {dict(events)}) disagrees with the "
                              f"journal: pickups at {seqs}, restocks {stocked[o['order_id']]}")
        return len(orders)

    def check_webhooks(self, timeout: float = 120) -> int:
        """Every change of every order reached the pharmacy system."""
        wait_until(lambda: self.bridge.metric("kiosk_bridge_webhooks_waiting") == 0, timeout,
                   "every webhook delivered", every=0.5)
        got = {d["id"] for d, _ in self.pharmacy.got}
        n = 0
        for kid in self.fleet.ids:
            for o in self.bridge.get(f"/api/orders?kiosk={kid}"):
                for h in self.bridge.get(f"/api/orders/{o['order_id']}")["history"]:
                    n += 1
                    if f"{o['order_id']}/{h['n']}" not in got:
                        self.count("webhooks_lost")
                        raise Problem(f"order {o['order_id']}'s change {h['n']} ({h['event']}) never delivered")
        if not all(ok for _, ok in self.pharmacy.got):
            raise Problem("a webhook's signature did not verify")
        return n

    def check_no_switch_mid_operation(self, kid: str) -> None:
        """A firmware switch restarts the kiosk only when it is idle: the
        boot after a `switching` record closes no operation cut short
        (read from the store: the flash may have rotated old records away)."""
        recs = [e["body"] for e in self.bridge.events(kid)]
        switched_from = {r["b"] for r in recs if r["k"] == "ota" and r.get("ev") == "switching"}
        for r in recs:
            # The boot that switched ended right after its `switching` record
            # (the restart, or at worst a cut in between): nothing ran then.
            if r["k"] == "op" and r.get("reason") == "reset" and r["b"] - 1 in switched_from:
                self.count("switches_mid_operation")
                raise Problem(f"{kid}: the switch of boot {r['b'] - 1} cut operation {r.get('id')} short")
        self.count("switches_checked", len(switched_from))

    def check_world(self, kid: str) -> None:
        w = self.fleet.world(kid)["world"]
        if w and w.get("violation_count"):
            self.count("violations", w["violation_count"])
            raise Problem(f"{kid}: the simulated world saw violations: {w.get('violations')}")

    def final_checks(self) -> dict[str, int]:
        out = Counter()
        for kid in self.fleet.ids:
            out["events_checked"] += self.check_store(kid)
            p, r = self.check_no_repeats(kid)
            out["pickups_released"] += p
            out["ops_cut_short"] += r
            out["orders_checked"] += self.check_orders(kid)
            self.check_world(kid)
            w = self.fleet.world(kid)["world"]
            if any(lk["energized"] for lk in w["locks"].values()):
                self.count("doors_left_unlocked")
                raise Problem(f"{kid}: a lock energised at the end")
        out["webhooks_checked"] += self.check_webhooks()
        return dict(out)


class Worker:
    """One kiosk's day under torture: its own seeded schedule."""

    def __init__(self, rig: Rig, kid: str, seed: int):
        self.rig, self.kid = rig, kid
        self.rng = random.Random(f"{seed}:{kid}")
        self.stock: dict[int, str] = {}
        self.codes: dict[str, str] = {}      # released orders -> the patient's code
        self.n = 0

    def api(self, method: str, path: str, body=None) -> tuple[int, Any]:
        try:
            return self.rig.bridge.request(method, f"/api/kiosks/{self.kid}{path}", body)
        except NOT_THERE as e:
            return 0, {"detail": str(e)}

    def cmd(self, path: str, body=None, method: str = "POST") -> str | None:
        status, r = self.api(method, path, body)
        return r["command_id"] if status == 202 else None

    def wait_cmd(self, cid: str | None, timeout: float = 30) -> str | None:
        if cid is None:
            return None
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.powered():
            try:
                status, c = self.rig.bridge.request("GET", f"/api/commands/{cid}")
            except NOT_THERE:
                status, c = 0, None
            if status == 200 and c["state"] in TERMINAL:
                return c["state"]
            time.sleep(0.1)
        return None

    def powered(self) -> bool:
        return self.rig.fleet.kiosk(self.kid).want_power

    def door_cycle(self, door: str, deadline: float) -> None:
        """A person at the door: opens it once unlocked, holds it, closes it."""
        while time.monotonic() < deadline and self.powered():
            try:
                w = self.rig.fleet.world(self.kid)["world"]
                if w and w["locks"][door]["energized"]:
                    time.sleep(self.rng.uniform(0.1, 0.6))
                    self.rig.fleet.door(self.kid, door, "open")
                    time.sleep(1.6)
                    self.rig.fleet.door(self.kid, door, "close")
                    return
            except EmulatorError:
                return
            time.sleep(0.1)

    def label(self, cid: str, order: str) -> None:
        """The technician scans the package's label when the kiosk asks."""
        try:
            scan_label(self.rig.bridge.command, lambda text: self.rig.fleet.scan(self.kid, text), cid, order, 15)
        except (EmulatorError, AssertionError, *NOT_THERE):
            pass   # the kiosk or the bridge went away meanwhile: the restock ends without it

    def sync_stock(self) -> None:
        k = self.rig.kiosk(self.kid)
        if k:
            self.stock = {int(b): o for b, o in k["status"]["stock"].items()}
            self.unverified = list(k["status"].get("unverified") or [])

    def bridge_call(self, method: str, path: str, body=None) -> tuple[int, Any]:
        try:
            return self.rig.bridge.request(method, path, body)
        except NOT_THERE as e:
            return 0, {"detail": str(e)}

    def new_order(self) -> str | None:
        """The pharmacy system sends an order for this kiosk."""
        order = f"{self.kid}-o{self.n}"
        status, _ = self.bridge_call("POST", "/api/orders", new_order(order, self.kid, days=2))
        if status != 201:
            return None
        self.rig.count("orders_created")
        return order

    def release(self, order: str) -> None:
        """The pharmacist releases it; the pharmacy system asks for its code."""
        if self.bridge_call("POST", f"/api/orders/{order}/release", {"counselling": "not_required"})[0] == 200:
            status, r = self.bridge_call("POST", f"/api/orders/{order}/pickup-code", {})
            if status == 201:
                self.codes[order] = r["code"]

    def ready(self) -> list[str]:
        """Released orders the kiosk holds."""
        held = set(self.stock.values())
        return sorted(o for o in self.codes if o in held)

    def settle(self, order: str, timeout: float = 20) -> None:
        """Until a scan's pickup of the order has ended one way or another."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.powered():
            status, o = self.bridge_call("GET", f"/api/orders/{order}")
            if status == 200 and (o["state"] == "dispensed" or o["history"][-1]["event"] != "dispensing"):
                if o["state"] != "stocked" or o["codes"][-1]["state"] != "active":
                    self.codes.pop(order, None)   # dispensed, or its code spent: done with it
                return
            time.sleep(0.2)

    def one_operation(self) -> None:
        """Something the kiosk does in a day, chosen by the schedule."""
        self.n += 1
        self.sync_stock()
        r = self.rng.random()
        unverified = getattr(self, "unverified", [])
        if unverified or (r < 0.4 and len(self.stock) < BINS):
            # A service visit: verify what a reset left unknown, stock an order.
            if self.wait_cmd(self.cmd("/service", {"session": f"svc-{self.n}"})) != "succeeded":
                return
            for b in unverified:
                self.wait_cmd(self.cmd("/commands", {"op": "verify_bin", "args": {"bin": b, "present": False}}))
            order = self.new_order()
            if order:
                status, r = self.api("POST", "/restocks", {"order_id": order})
                if status == 202:
                    self.rig.count("restocks_requested")
                    self.label(r["command_id"], order)
                    self.door_cycle("service", time.monotonic() + 15)
                    self.wait_cmd(r["command_id"])
            self.wait_cmd(self.cmd("/service", method="DELETE"))
            if order:
                self.release(order)
        elif r < 0.85 and self.ready():
            # A patient scans their code and (mostly) takes the medicine.
            order = self.rng.choice(self.ready())
            try:
                self.rig.fleet.scan(self.kid, self.codes[order])
            except EmulatorError:
                return
            self.rig.count("codes_scanned")
            if self.rng.random() < 0.85:
                self.door_cycle("pickup", time.monotonic() + 10)
            self.settle(order)
        else:
            try:
                self.rig.fleet.sensor(self.kid, self.rng.choice(["cabinet", "shelf_top"]),
                                      celsius=round(self.rng.uniform(17.0, 32.0), 1))
                self.rig.count("temperature_changes")
            except EmulatorError:
                pass
            time.sleep(self.rng.uniform(0.5, 2.0))


def power_cut_run(rig: Rig, cuts_per_kiosk: int, seed: int, log=print) -> dict[str, int]:
    """Each kiosk works while a cutter pulls its plug at random instants."""
    errors: list[BaseException] = []

    def kiosk_loop(kid: str) -> None:
        w = Worker(rig, kid, seed)
        cut_rng = random.Random(f"{seed}:{kid}:cuts")
        try:
            for i in range(cuts_per_kiosk):
                k = rig.wait_online(kid, 0)
                rig.settled(kid)
                boot = k["boot"]
                at = cut_rng.uniform(0.05, 9.0)       # the instant, seconds into the work
                cutter = threading.Timer(at, lambda: _cut(rig, kid))
                cutter.start()
                t0 = time.monotonic()
                while cutter.is_alive() and time.monotonic() - t0 < at + 1:
                    w.one_operation()
                cutter.join()
                rig.count("power_cuts")
                rig.fleet.power(kid, True)
                rig.wait_online(kid, boot)
                rig.check_locked_after_boot(kid)
                rig.shut_doors(kid)
                if (i + 1) % 10 == 0:
                    log(f"{kid}: {i + 1} cuts")
        except BaseException as e:  # reported by the caller
            errors.append(e)

    threads = [threading.Thread(target=kiosk_loop, args=(kid,), daemon=True) for kid in rig.fleet.ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    for kid in rig.fleet.ids:
        rig.settled(kid)
    out = rig.final_checks()
    out.update(rig.counts)
    return out


def _cut(rig: Rig, kid: str) -> None:
    try:
        rig.fleet.power(kid, False)
    except EmulatorError:
        pass


def outage_run(rig: Rig, outages: int, seed: int, log=print) -> dict[str, int]:
    """Broker and bridge killed and restarted, kiosks' network dropped, at
    random, while the kiosks keep working."""
    rng = random.Random(f"{seed}:outages")
    stop = threading.Event()
    errors: list[BaseException] = []

    def work(kid: str) -> None:
        w = Worker(rig, kid, seed + 1)
        try:
            while not stop.is_set():
                w.one_operation()
                time.sleep(0.2)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(kid,), daemon=True) for kid in rig.fleet.ids]
    for t in threads:
        t.start()
    try:
        for i in range(outages):
            time.sleep(rng.uniform(0.5, 3.0))
            what = rng.choice(["broker", "bridge", "network", "broker_and_bridge"])
            down = rng.uniform(0.5, 4.0)
            if what in ("broker", "broker_and_bridge"):
                rig.broker.stop()                       # SIGKILL
            if what in ("bridge", "broker_and_bridge"):
                rig.bridge.stop(kill=True)
            if what == "network":
                kid = rng.choice(rig.fleet.ids)
                rig.fleet.network(kid, False)
            time.sleep(down)
            if what in ("broker", "broker_and_bridge"):
                rig.broker.start()
            if what in ("bridge", "broker_and_bridge"):
                rig.bridge.start()
            if what == "network":
                rig.fleet.network(kid, True)
            rig.count(f"outages_{what}")
            rig.count("outages")
            if (i + 1) % 10 == 0:
                log(f"{i + 1} outages")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    if errors:
        raise errors[0]
    for kid in rig.fleet.ids:
        rig.wait_online(kid, 0, 90)
        for door in ("pickup", "service"):
            rig.fleet.door(kid, door, "close")
    out = rig.final_checks()
    out.update(rig.counts)
    stalls = []
    for kid in rig.fleet.ids:
        k = rig.kiosk(kid)
        link = ((k or {}).get("telemetry") or {}).get("link") or {}
        if isinstance(link.get("max_stall_us"), int):
            stalls.append(link["max_stall_us"])
    out["max_link_stall_us"] = max(stalls) if stalls else -1
    return out


# -- custody torture ------------------------------------------------------------
# Faults aimed at the chain of custody (docs/security.md, "Custody under
# attack"), one at a time on a random kiosk, while doors are forced so that
# every fault meets records the host does not have yet:
#   ack_flood      the bridge down, junk on kiosk/<id>/ack
#   corrupt        one record the host lacks damaged on the flash (bad CRC)
#   wipe           the board re-provisioned with its id and key, flash wiped
#   full_flash     the flash full while a door is forced
#   recovery_cut   an operation cut short, then the boot that closes it cut
# Counted at the end, per journal the kiosk ever had: a record on flash
# that the store lacks and no loss record covers is `events_lost`; a seq
# stored twice or stored unlike the flash is `events_duplicated`; a command
# with two outcomes is `pickups_repeated`. Losses the kiosk reported (and
# the bridge shows as custody gaps) are counted apart, as `events_reported_lost`.
CUSTODY_FAULTS = ("ack_flood", "corrupt", "wipe", "full_flash", "recovery_cut")
JUNK_ACKS = [b"", b"{", b"[]", b'{"v":1}', b'{"v":1,"upto":1000000000,"t":1,"sig":"' + b"0" * 64 + b'"}']


class Custody:
    """The custody faults on one rig, and what each kiosk's journals held."""

    def __init__(self, rig: Rig, seed: int):
        self.rig = rig
        self.rng = random.Random(f"{seed}:custody")
        self.old: dict[str, list[tuple[str, dict[int, dict[str, Any]]]]] = {k: [] for k in rig.fleet.ids}

    def flash(self, kid: str) -> Path:
        return self.rig.fleet.kiosk(kid).flash

    def key(self, kid: str) -> str:
        return (self.rig.root / "keys" / f"{kid}.key").read_text().strip()

    def forced(self, kid: str, n: int = 1) -> None:
        for _ in range(n):
            self.rig.fleet.door(kid, "service", "force")
            time.sleep(1.2)
            self.rig.fleet.door(kid, "service", "close")
            time.sleep(1.2)

    def stored(self, kid: str, timeout: float = 60) -> dict[str, Any]:
        """The kiosk online at the bridge with its whole journal stored."""
        return wait_until(lambda: (lambda k: k if k and k["online"] and k["events_stored_upto"] >= max(
            journal_records(self.flash(kid)), default=0) else None)(self.rig.kiosk(kid)),
            timeout, f"{kid}'s journal in the store", every=0.2)

    def reboot(self, kid: str) -> None:
        boot = (self.rig.kiosk(kid) or {}).get("boot") or 0
        self.rig.fleet.power(kid, True)
        wait_until(lambda: (lambda k: k and k["online"] and k["boot"] != boot)(self.rig.kiosk(kid)), 60,
                   f"{kid} back after its reboot", every=0.2)
        self.rig.check_locked_after_boot(kid)

    # -- the faults -----------------------------------------------------------
    def ack_flood(self, kid: str) -> None:
        import paho.mqtt.client as mqtt
        self.rig.bridge.stop()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"flood-{kid}-{time.monotonic_ns()}")
        c.max_inflight_messages_set(100)
        c.connect("127.0.0.1", self.rig.broker.port)
        c.loop_start()
        try:
            self.forced(kid)
            sent = [c.publish(f"kiosk/{kid}/ack", JUNK_ACKS[i % len(JUNK_ACKS)] + b" " * (i % 7), qos=1)
                    for i in range(600)]
            for m in sent:
                m.wait_for_publish(20)
            self.rig.count("junk_acks", len(sent))
            self.forced(kid)
        finally:
            c.loop_stop()
            c.disconnect()
            self.rig.bridge.start()

    def corrupt(self, kid: str) -> None:
        had = self.stored(kid)["events_stored_upto"]
        self.rig.bridge.stop()
        try:
            self.forced(kid, 2)
            self.rig.fleet.power(kid, False)
            new = sorted(s for s in journal_records(self.flash(kid)) if s > had)
            victim = new[len(new) // 2]
            for seg in (self.flash(kid) / "journal").glob("*.log"):
                data = seg.read_bytes()
                at = data.find(b'{"s":%d,' % victim)
                if at >= 0:
                    seg.write_bytes(data[:at + 12] + bytes([data[at + 12] ^ 1]) + data[at + 13:])
                    self.rig.count("records_corrupted")
        finally:
            self.rig.bridge.start()
        self.reboot(kid)

    def wipe(self, kid: str) -> None:
        # The field guide's replacement: the old board's records are in the
        # store first (it reported them), then a new board takes its id and key.
        import shutil
        k = self.stored(kid)
        self.old[kid].append((k["journal"], journal_records(self.flash(kid))))
        self.rig.fleet.power(kid, False)
        shutil.rmtree(self.flash(kid))
        self.rig.fleet.kiosk(kid).provision(self.key(kid))
        self.rig.fleet.power(kid, True)
        wait_until(lambda: (lambda x: x and x["online"] and x["journal"] != k["journal"])(self.rig.kiosk(kid)),
                   60, f"{kid}'s new board online", every=0.2)
        self.rig.check_locked_after_boot(kid)
        self.rig.count("journals_wiped")

    def full_flash(self, kid: str) -> None:
        # The flash shrunk to what it holds, with the bridge away: the
        # journal first frees what the host already has (acknowledged
        # segments; with the host there that goes on as long as it acks),
        # then gives up its reserve and says it is full. The bridge, back,
        # must show it.
        full = lambda: (lambda x: x and x["custody"]["storage_full"])(self.rig.kiosk(kid))  # noqa: E731
        self.rig.bridge.stop()
        try:
            for _ in range(3):
                used = self.rig.fleet.flash(kid, None)["used"]
                self.rig.fleet.flash(kid, used + 64)
                self.forced(kid)
            self.rig.bridge.start()
            try:
                wait_until(full, 30, f"{kid}'s full flash at the bridge", every=0.2)
            except AssertionError:
                raise Problem(f"{kid}: a full flash never reached the bridge as storage_full") from None
            self.rig.count("flash_filled")
        finally:
            if self.rig.bridge.proc is None:
                self.rig.bridge.start()
            self.rig.fleet.flash(kid, None)

    def recovery_cut(self, kid: str) -> None:
        status, r = self.rig.bridge.request("POST", f"/api/kiosks/{kid}/commands", {"op": "home", "args": {}})
        time.sleep(self.rng.uniform(0.05, 1.0))
        _cut(self.rig, kid)
        self.rig.fleet.power(kid, True)
        time.sleep(self.rng.uniform(0.02, 1.2))    # into the boot that closes the operation
        _cut(self.rig, kid)
        self.rig.count("recovery_boots_cut")
        self.reboot(kid)

    # -- the accounting ---------------------------------------------------------
    def events_of(self, kid: str, journal: str) -> list[dict[str, Any]]:
        out, after = [], 0
        while True:
            page = self.rig.bridge.get(f"/api/kiosks/{kid}/events?after={after}&limit=1000&journal={journal}")
            out += page["events"]
            if not page["next"]:
                return out
            after = page["next"]["after"]

    def account(self, kid: str) -> Counter:
        out: Counter = Counter()
        k = self.stored(kid, 120)
        journals = self.old[kid] + [(k["journal"], journal_records(self.flash(kid)))]
        ids: Counter = Counter()
        for journal, recs in journals:
            gaps = [(g["from"], g["to"]) for g in k["custody"]["gaps"] if g["journal"] == journal]
            events = self.events_of(kid, journal)
            seqs = Counter(e["seq"] for e in events)
            stored = {e["seq"]: e["body"] for e in events}
            out["events_duplicated"] += sum(n - 1 for n in seqs.values() if n > 1)
            out["events_duplicated"] += sum(1 for s, r in recs.items() if s in stored and signed_fields(stored[s]) != r)
            top = max(list(stored) + list(recs), default=0)
            covered = {s for a, z in gaps for s in range(a, z + 1)}
            silent = [s for s in range(1, top + 1) if s not in stored and s not in covered]
            out["events_lost"] += len(silent)
            out["events_reported_lost"] += len(covered - set(stored))
            out["events_checked"] += len(stored)
            ids.update(e["body"]["id"] for e in events if e["body"]["k"] in ("op", "pickup"))
            if silent:
                raise Problem(f"{kid}: journal {journal} seqs {silent[:10]} lost with no loss record")
        again = [i for i, n in ids.items() if n > 1]
        out["pickups_repeated"] += len(again)
        if again:
            raise Problem(f"{kid}: commands with two outcomes: {again[:5]}")
        if k["custody"]["gaps"] and not any(a.startswith("custody gap") for a in k["alarms"]):
            raise Problem(f"{kid}: custody gaps without an alarm: {k['custody']['gaps'][:3]}")
        return out


def custody_run(rig: Rig, rounds: int, seed: int, log=print) -> dict[str, int]:
    """rounds faults, each of CUSTODY_FAULTS in turn, on a random kiosk."""
    c = Custody(rig, seed)
    for kid in rig.fleet.ids:
        rig.settled(kid)
    for i in range(rounds):
        fault = CUSTODY_FAULTS[i % len(CUSTODY_FAULTS)]
        kid = c.rng.choice(rig.fleet.ids)
        getattr(c, fault)(kid)
        rig.count(f"custody_{fault}")
        rig.settled(kid, 30)
        if (i + 1) % 10 == 0:
            log(f"{i + 1} custody faults")
    out: Counter = Counter()
    for kid in rig.fleet.ids:
        rig.settled(kid, 30)
        out.update(c.account(kid))
        rig.check_world(kid)
        w = rig.fleet.world(kid)["world"]
        if any(lk["energized"] for lk in w["locks"].values()):
            rig.count("doors_left_unlocked")
            raise Problem(f"{kid}: a lock energised at the end")
    out.update(rig.counts)
    for k in ("doors_left_unlocked", "violations"):
        out.setdefault(k, 0)
    return dict(out)


# -- firmware updates under power cuts (docs/ota.md) ------------------------------
OTA_PHASES = ("transfer", "switch", "trial")


def build_releases(root: Path, versions: tuple[str, ...]) -> dict[str, bytes]:
    """A release (.tar.gz of `python -m kiosk_host.build --version V`) per version."""
    import io
    import subprocess
    import sys
    import tarfile

    out = {}
    for v in versions:
        tree = root / f"release-{v}"
        r = subprocess.run([sys.executable, "-m", "kiosk_host.build", "--out", str(tree), "--version", v],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as t:
            t.add(str(tree), arcname=".")
        out[v] = buf.getvalue()
    return out


def _boot_state(flash: Path) -> dict[str, Any]:
    """The boot selector's state on a kiosk's flash (firmware/bootsel.py)."""
    for name in ("boot.json", "boot.json.tmp"):
        try:
            return json.loads((flash / "fw" / name).read_text())
        except (OSError, ValueError):
            pass
    return {}


def _journal(flash: Path) -> dict[int, dict[str, Any]]:
    for _ in range(5):
        try:
            return journal_records(flash)
        except (OSError, ValueError):   # a segment rotated away while read: again
            time.sleep(0.05)
    return {}


def _ota_records(flash: Path, release: str, after: int = 0) -> list[str]:
    """The `ev` of the kiosk's update records for release journaled after
    seq `after`, in order."""
    recs = _journal(flash)
    return [recs[s]["ev"] for s in sorted(recs)
            if s > after and recs[s]["k"] == "ota" and recs[s].get("release") == release]


def cut_phase(flash: Path, release: str, after: int) -> str:
    """Where the update to release stood when the power went, from what the
    flash holds (the kiosk is off, so it holds still): `transfer` (offered,
    files arriving or being checked), `switch` (staged and waiting for idle,
    `switching` written, or the trial armed but not started), `trial` (the
    selector started the new firmware, not yet confirmed), or `before`/
    `after` when the cut missed the update altogether. Only the records
    after seq `after` count: the same release may have come before."""
    evs = _ota_records(flash, release, after)
    st = _boot_state(flash)
    if "confirmed" in evs or "current" in evs:
        return "after"
    if st.get("trial") and st.get("trying") and st.get("release") == release:
        return "trial"
    if "trial" in evs or "trial_failed" in evs or "rolled_back" in evs:
        return "after" if not st.get("trial") else "trial"
    if st.get("trial") or "staged" in evs or "switching" in evs:
        return "switch"
    if "staging" in evs or "resumed" in evs:
        return "transfer"
    return "before"


def ota_cut_run(rig: Rig, cuts_per_kiosk: int, seed: int, log=print) -> dict[str, int]:
    """Each kiosk works (pickups, restocks, temperatures) while releases are
    rolled out to it, one after the other, and its power is cut at a random
    instant of the transfer, around the switch, or during the trial boot.
    After every cut the kiosk runs the old or the new firmware, never
    neither: it comes back online, its birth, its journal and its flash
    agree on which, and the rollout ends confirmed (the update survived the
    cut) or rolled back (the trial did not), never failed. At the end, on
    top of the power-cut checks: no switch ever cut an operation short."""
    from bridge_support import http

    releases = build_releases(rig.root, ("1.0.1", "1.0.2"))
    ids: dict[str, str] = {}
    for v, data in releases.items():
        status, r = http("POST", rig.bridge.url + "/api/releases", raw=data, token=rig.bridge.tokens["admin"],
                         headers={"content-type": "application/octet-stream"})
        if status != 201:
            raise Problem(f"release {v} refused: {r}")
        ids[v] = r["release_id"]
    errors: list[BaseException] = []
    stop = threading.Event()

    def work(kid: str) -> None:
        w = Worker(rig, kid, seed + 2)
        try:
            while not stop.is_set():
                if w.powered():
                    w.one_operation()
                time.sleep(w.rng.uniform(0.5, 3.0))   # idle moments: the kiosk may switch then
        except BaseException as e:
            errors.append(e)

    def rollout_state(rid: str) -> dict[str, Any] | None:
        try:
            status, ro = rig.bridge.request("GET", f"/api/rollouts/{rid}")
        except NOT_THERE:
            return None
        return ro if status == 200 else None

    def wait_for(pred, timeout: float, every: float = 0.1) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return True
            time.sleep(every)
        return False

    def locked_after_boot(kid: str) -> None:
        """The locks are off once the kiosk is back; a kiosk that restarts
        into its staged firmware right away is checked after that boot."""
        for _ in range(60):
            try:
                return rig.check_locked_after_boot(kid)
            except EmulatorError:
                time.sleep(0.5)
        raise Problem(f"{kid}: its world could not be read for 30 s after it came back")

    def kiosk_loop(kid: str) -> None:
        rng = random.Random(f"{seed}:{kid}:ota")
        try:
            for i in range(cuts_per_kiosk):
                if stop.is_set():
                    return      # another kiosk failed: end now
                t0 = time.monotonic()
                k = rig.wait_online(kid, 0)
                old = k["fw"]
                new = "1.0.2" if old == "1.0.1" else "1.0.1"
                flash = rig.fleet.kiosk(kid).flash
                seq0 = max(_journal(flash), default=0)     # what came before this update
                status, r = rig.bridge.request("POST", "/api/rollouts", {"release_id": ids[new], "kiosks": [kid],
                                                                       "canary": 0}, who="admin")
                if status != 202:
                    raise Problem(f"{kid}: rollout of {new} refused: {r}")
                rid = r["rollout_id"]
                phase = OTA_PHASES[i % len(OTA_PHASES)]

                def at(*states):
                    return lambda: (lambda ro: ro is not None and ro["kiosks"][kid] in states)(rollout_state(rid))
                if phase == "transfer":
                    wait_for(at("transferring", "staged", "rebooting", "confirmed"), 60)
                    time.sleep(rng.uniform(0.0, 2.0))
                elif phase == "switch":
                    wait_for(at("staged", "rebooting", "confirmed"), 60)
                    time.sleep(rng.uniform(3.0, 8.0))        # the switch comes after 5 s of idle
                else:
                    # The selector has spent the try and started the new
                    # firmware, which confirms itself a few tenths of a
                    # second later in the emulator: cut before it can.
                    wait_for(lambda: (lambda st: st.get("trying") and st.get("release") == ids[new])(
                        _boot_state(flash)), 120, every=0.005)
                    time.sleep(rng.uniform(0.0, 0.15))
                _cut(rig, kid)
                rig.count("power_cuts")
                where = cut_phase(flash, ids[new], seq0)
                rig.count(f"ota_cuts_{where}")
                if where == "switch" and "switching" in _ota_records(flash, ids[new], seq0):
                    rig.count("ota_cuts_switch_after_switching")   # the restart under way
                boot = (rig.kiosk(kid) or {}).get("boot") or 0
                rig.fleet.power(kid, True)
                rig.wait_online(kid, boot, 90)
                locked_after_boot(kid)
                rig.shut_doors(kid)    # held open by someone when the power went: it would block the switch
                # A kiosk doing pickup after pickup takes its time (it takes
                # chunks between operations and switches only when idle).
                if not wait_for(lambda: stop.is_set() or (rollout_state(rid) or {}).get("state") in (
                        "completed", "halted"), 900):
                    raise Problem(f"{kid}: the rollout of {new} never ended: {rollout_state(rid)}")
                if stop.is_set():
                    return
                ro = rollout_state(rid)
                end = ro["kiosks"][kid]
                if end not in ("confirmed", "rolled_back"):
                    rig.count("ota_failed")
                    raise Problem(f"{kid}: the update to {new} ended {end}: {ro['detail'][kid]}")
                rig.count(f"ota_{end}")
                rig.count(f"ota_{where}_{end}")
                want = new if end == "confirmed" else old
                wait_until(lambda: (lambda k: k and k["online"] and k["fw"] == want)(rig.kiosk(kid)), 60,
                           f"{kid} online on {want}")
                st = _boot_state(rig.fleet.kiosk(kid).flash)
                manifest = (rig.fleet.kiosk(kid).flash / "fw" / st.get("active", "?") / "manifest.txt")
                head = manifest.read_text().split("\n")[:2] if manifest.exists() else []
                if st.get("trial") or head != ["kiosk-slot 1", f"version {want}"]:
                    rig.count("ota_neither")
                    raise Problem(f"{kid}: the flash says {st} / {head}, the kiosk runs {want}")
                rig.count("ota_old_or_new")
                rig.shut_doors(kid)
                log(f"{kid}: update cut {i + 1}: {old} -> {new}, cut aimed at the {phase}, came {where}, "
                    f"ended {end} ({time.monotonic() - t0:.0f} s)")
        except BaseException as e:
            log(f"{kid}: {e!r}")
            errors.append(e)
            stop.set()

    workers = [threading.Thread(target=work, args=(kid,), daemon=True) for kid in rig.fleet.ids]
    loops = [threading.Thread(target=kiosk_loop, args=(kid,), daemon=True) for kid in rig.fleet.ids]
    for t in workers + loops:
        t.start()
    for t in loops:
        t.join()
    stop.set()
    for t in workers:
        t.join(60)
    if errors:
        raise errors[0]
    for kid in rig.fleet.ids:
        rig.settled(kid)
        rig.check_no_switch_mid_operation(kid)
    out = rig.final_checks()
    out.update(rig.counts)
    return out
