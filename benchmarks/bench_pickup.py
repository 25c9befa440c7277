"""Pickup latency over the physical motion time.

    .venv/bin/python benchmarks/bench_pickup.py [--reps 5] [--distances 0,1,6] [--hold 1.5] [--poll-ms 1] [--quick]

End to end through the real stack: a throwaway mosquitto, `kiosk-bridge
serve` as a process with its SQLite store, one emulated kiosk (the real
firmware under the unix MicroPython, on the simulated world). The pharmacy
back end's side is the bridge's HTTP API: POST /api/kiosks/{id}/pickups.

Before each pickup (not timed) a service session restocks the bin and jogs
the carousel so that the bin stands `distance` bins from the door (0: at the
door already, 1: the next bin, 6: half way round a 12-bin carousel); the
distances are interleaved, so drift on the machine hits each alike. Then,
per pickup:
- HTTP accept: the POST until its 202 response;
- motion: the simulated carousel's own steps, first to last. Journal events
  carry whole-second times ("t"), too coarse for a move of tens of ms, so a
  thread polls the simulated world through the emulator's control channel
  (a round trip of well under 1 ms, on its own thread beside the firmware)
  every --poll-ms and sees the step counter change; each instant is known to
  within the gap between two polls (printed). The planned time of the same
  move (the firmware's own trapezoidal ramp, kiosk/hw/ramp.py, for the board's
  max_speed and accel: what a board with hardware step timing takes) is
  printed beside it;
- request -> door unlocked: until the polls see the pickup lock's coil
  energised in the simulated world (the moment the patient can open it);
- overhead: that latency minus the motion, i.e. what the software adds on
  top of physics (it includes the driver's 1 ms wake-up before the first
  step and the 5 ms settle after the last, which a real mechanism needs too);
- request -> terminal state: the bridge's own record of when the command
  reached its terminal state (the first terminal entry in its history), with
  a simulated patient who opens the door as soon as it is unlocked, holds
  it --hold seconds (past the firmware's 1 s open debounce) and closes it;
  "door closed -> terminal" is the part after the patient is done (it holds
  the firmware's 250 ms close debounce, kiosk/hw/lock.py, and the door cycle's
  50 ms polling, kiosk/core/controller.py _POLL_MS).
A second table splits the time to unlock at the hops a watcher on the broker
sees (the command, the kiosk's "queued" reply), with the motion in the
middle. Figures are median and max; nothing is asserted. Exits non-zero only
when the run itself breaks (a pickup that does not succeed, a missing
observation).

Needs mosquitto and a built tree (make build).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import paho.mqtt.client as mqtt  # noqa: E402

from bridge_support import BridgeProc, new_order, scan_label, wait_until  # noqa: E402
from kiosk_host import paths  # noqa: E402
from kiosk_host.broker import LocalBroker  # noqa: E402
from kiosk_host.emulator.fleet import Fleet  # noqa: E402

KIOSK = "kiosk-001"
TERMINAL = ("succeeded", "failed", "timed_out", "rejected", "cancelled")


class Broken(Exception):
    """The run itself broke: no figures can be trusted."""


# -- the physics a board would have: the firmware's own ramp ----------------------
def ramp_intervals(steps: int, max_speed: int, accel: int) -> list[int]:
    """The waits (us) before each step of a move, as kiosk/hw/ramp.py plans them."""
    if "micropython" not in sys.modules:  # ramp.py needs only const()
        shim = types.ModuleType("micropython")
        shim.const = lambda x: x
        sys.modules["micropython"] = shim
    ns: dict = {}
    exec(compile((ROOT / "firmware" / "kiosk" / "hw" / "ramp.py").read_text(), "ramp.py", "exec"), ns)
    r = ns["Ramp"]()
    r.reset(steps, max_speed, accel)
    out = []
    while (d := r.next_interval()):
        out.append(d)
    return out


def planned_motion_s(steps: int, max_speed: int, accel: int) -> float:
    """First to last step (the wait before the first step is not motion)."""
    return sum(ramp_intervals(steps, max_speed, accel)[1:]) / 1e6


def hardware_waits(car: dict) -> dict[str, float]:
    """What kiosk/hw/stepper.py waits around a move for the driver and the
    mechanism: the driver's wake-up after enable, the ramp's first interval
    (from rest to the first step) and the settle after the last step."""
    src = (ROOT / "firmware" / "kiosk" / "hw" / "stepper.py").read_text()
    settle = re.search(r"_SETTLE_MS = const\((\d+)\)", src)
    wake = re.search(r'_WAKE_US = \{[^}]*"%s": (\d+)' % re.escape(car["driver"]), src)
    if not (settle and wake):   # a renamed constant must not print a silent zero
        raise Broken("kiosk/hw/stepper.py: _SETTLE_MS or _WAKE_US for driver %r not found" % car["driver"])
    return {"wake": int(wake.group(1)) / 1e6,
            "first": ramp_intervals(car["steps_per_bin"], car["max_speed"], car["accel"])[0] / 1e6,
            "settle": int(settle.group(1)) / 1e3}


# -- watchers ---------------------------------------------------------------------
class Sniffer:
    """Arrival time of every command, reply and event of the kiosk on the broker."""

    def __init__(self, port: int, kiosk: str):
        self.seen: list[tuple[float, str, dict]] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pickup-{os.getpid()}")
        self.c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe(
            [(f"kiosk/{kiosk}/{k}", 1) for k in ("cmd", "reply", "evt")])
        self.c.on_message = self._msg
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        wait_until(self.c.is_connected, 10, "the sniffer connected")
        time.sleep(0.3)  # the subscription is in place

    def _msg(self, cl, u, m):
        t = time.time()
        try:
            d = json.loads(m.payload)
        except ValueError:
            return
        with self.lock:
            self.seen.append((t, m.topic.rsplit("/", 1)[1], d))

    def since(self, t0: float) -> list[tuple[float, str, dict]]:
        with self.lock:
            return [x for x in self.seen if x[0] >= t0]

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


class Poller(threading.Thread):
    """Polls the simulated world until the pickup lock is energised:
    (poll midpoint, round trip, carousel steps moved, coil energised)."""

    def __init__(self, fleet: Fleet, kiosk: str, every_s: float, timeout_s: float = 30):
        super().__init__(daemon=True)
        self.fleet, self.kiosk, self.every, self.timeout = fleet, kiosk, every_s, timeout_s
        self.samples: list[tuple[float, float, int, bool]] = []
        self.unlocked = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        end = time.time() + self.timeout
        try:
            while time.time() < end:
                t0 = time.time()
                w = self.fleet.world(self.kiosk)["world"]
                t1 = time.time()
                moved = sum(c["moved_steps"] for c in w["carousels"].values())
                on = w["locks"]["pickup"]["energized"]
                self.samples.append(((t0 + t1) / 2, t1 - t0, moved, on))
                if on:
                    self.unlocked.set()
                    return
                left = self.every - (time.time() - t0)
                if left > 0:
                    time.sleep(left)
            self.error = "the pickup door was never unlocked"
        except Exception as e:  # reported by the caller
            self.error = f"polling the world failed: {e}"
        finally:
            self.unlocked.set()


def between(samples, i: int) -> float:
    """The instant a change first seen by poll i happened: the midpoint
    between poll i-1 and poll i."""
    return (samples[i - 1][0] + samples[i][0]) / 2 if i > 0 else samples[0][0]


# -- the site ---------------------------------------------------------------------
class Site:
    def __init__(self, root: Path):
        self.broker = LocalBroker(root / "mq", prefer="mosquitto").start()
        self.fleet = self.bridge = self.sniffer = None
        try:
            self.fleet = Fleet(self.broker.url, 1, root / "kiosks", root / "keys").start()
            self.bridge = BridgeProc(root / "bridge", self.broker.url, root / "keys").start()
            wait_until(lambda: self.bridge.kiosk(KIOSK)["online"], 30, f"{KIOSK} online at the bridge")
            self.sniffer = Sniffer(self.broker.port, KIOSK)
        except BaseException:
            self.close()
            raise

    def command(self, method: str, path: str, body=None, door: str | None = None, hold: float = 1.5,
                label: str | None = None) -> dict:
        status, r = self.bridge.request(method, f"/api/kiosks/{KIOSK}{path}", body)
        if status != 202:
            raise Broken(f"{method} {path}: {status} {r}")
        if label and not scan_label(self.bridge.command, lambda text: self.fleet.scan(KIOSK, text),
                                    r["command_id"], label):
            raise Broken(f"{method} {path}: the kiosk never asked for the package label")
        if door:
            wait_until(lambda: self.fleet.world(KIOSK)["world"]["locks"][door]["energized"], 30, f"{door} unlocked")
            self.fleet.door(KIOSK, door, "open")
            time.sleep(hold)
            self.fleet.door(KIOSK, door, "close")
        c = self.bridge.wait_command(r["command_id"], TERMINAL, 60)
        if c["state"] != "succeeded":
            raise Broken(f"{method} {path} {body}: {c['state']} ({c.get('reason')})")
        return c

    def close(self) -> None:
        for part in (self.sniffer, self.bridge, self.fleet):
            if part is not None:
                try:
                    part.close() if part is self.sniffer else part.stop()
                except Exception as e:
                    print(f"(stopping {type(part).__name__}: {e})", file=sys.stderr)
        self.broker.stop()


def prepare(site: Site, bin_no: int, distance: int, order: str, hold: float) -> None:
    """Stock the bin, then leave the carousel `distance` bins short of it."""
    status, r = site.bridge.request("POST", "/api/orders", new_order(order, KIOSK))
    if status != 201:
        raise Broken(f"POST /api/orders: {status} {r}")
    site.command("POST", "/service", {"session": "bench-tech"})
    site.command("POST", "/restocks", {"order_id": order, "bin": bin_no}, door="service", hold=hold, label=order)
    if distance:
        site.command("POST", "/commands", {"op": "jog", "args": {"bins": -distance}})
    site.command("DELETE", "/service")
    wait_until(lambda: site.bridge.get(f"/api/orders/{order}")["state"] == "stocked", 20, f"{order} stocked")
    status, r = site.bridge.request("POST", f"/api/orders/{order}/release", {"counselling": "not_required"})
    if status != 200:
        raise Broken(f"release {order}: {status} {r}")
    time.sleep(0.5)  # the link drains what the service session journaled


def pickup(site: Site, bin_no: int, order: str, hold: float, poll_s: float) -> dict:
    fleet, bridge = site.fleet, site.bridge
    poller = Poller(fleet, KIOSK, poll_s)
    poller.start()
    while not poller.samples and poller.is_alive():
        time.sleep(0.001)
    t_post = time.time()
    status, r = bridge.post(f"/api/kiosks/{KIOSK}/pickups", {"order_id": order, "bin": bin_no})
    t_accept = time.time()
    if status != 202:
        raise Broken(f"pickup of bin {bin_no}: {status} {r}")
    cid = r["command_id"]
    poller.unlocked.wait(35)
    if poller.error:
        raise Broken(f"pickup of bin {bin_no}: {poller.error}")
    # the patient
    fleet.door(KIOSK, "pickup", "open")
    time.sleep(hold)
    t0 = time.time()
    fleet.door(KIOSK, "pickup", "close")
    t_close = (t0 + time.time()) / 2
    c = bridge.wait_command(cid, TERMINAL, 60)
    if c["state"] != "succeeded":
        raise Broken(f"pickup of bin {bin_no}: {c['state']} ({c.get('reason')})")
    t_terminal = min(h["at"] for h in c["history"] if h["state"] in TERMINAL)

    s = poller.samples
    # the poll just before the POST, and every one after it
    first = max(i for i, x in enumerate(s) if x[0] < t_post) if s[0][0] < t_post else 0
    base = s[first][2]
    moving = [i for i in range(first, len(s)) if s[i][2] != base]
    i_unlock = len(s) - 1
    out = {"bin": bin_no, "accept": t_accept - t_post, "unlocked": between(s, i_unlock) - t_post,
           "terminal": t_terminal - t_post, "close_to_terminal": t_terminal - t_close,
           "steps": s[-1][2] - base,
           "gaps": [s[i][0] - s[i - 1][0] for i in range(first + 1, len(s))],
           "rtts": [x[1] for x in s[first:]]}
    if moving:
        last = s[-1][2]
        i_end = next(i for i in moving if s[i][2] == last)
        out["start"] = between(s, moving[0]) - t_post
        out["end"] = between(s, i_end) - t_post
        out["motion"] = out["end"] - out["start"]
        if i_end == moving[0]:  # the whole move fell between two polls
            out["motion"] = 0.0
    else:
        out["start"] = out["end"] = None
        out["motion"] = 0.0
    # the hops a watcher on the broker sees
    for t, kind, d in site.sniffer.since(t_post - 0.01):
        if kind == "cmd" and d.get("id") == cid:
            out.setdefault("cmd", t - t_post)
        elif kind == "reply" and d.get("id") == cid:
            out.setdefault("reply_" + d.get("state", "?"), t - t_post)
    return out


# -- figures ----------------------------------------------------------------------
def ms(v: float) -> str:
    return f"{1000 * v:7.1f} ms" if abs(v) < 1 else f"{v:8.3f} s"


def med_max(values: list[float]) -> str:
    return f"median {ms(statistics.median(values))}, max {ms(max(values))}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5, help="pickups per distance (default 5)")
    ap.add_argument("--distances", default="0,1,6",
                    help="bins between the door and the bin picked up, comma-separated (default 0,1,6)")
    ap.add_argument("--hold", type=float, default=1.5,
                    help="seconds the patient (and the technician) holds a door open; over the 1 s debounce")
    ap.add_argument("--poll-ms", type=float, default=1.0, help="how often the simulated world is polled")
    ap.add_argument("--quick", action="store_true", help="2 pickups each at distances 1 and 6")
    a = ap.parse_args()
    if a.quick:
        a.reps, a.distances = 2, "1,6"
    board = json.loads((paths.BOARDS_DIR / "emulator.json").read_text())
    car = board["carousels"][0]
    nbins = car["bins"]
    try:
        distances = [int(x) for x in a.distances.split(",") if x.strip()]
    except ValueError:
        ap.error("--distances takes whole numbers, e.g. 0,1,6")
    if not distances or any(not 0 <= d <= nbins // 2 for d in distances) or a.reps < 1:
        ap.error(f"--distances must be 0..{nbins // 2} (the carousel turns the shorter way) and --reps >= 1")
    if a.hold <= 1.1:
        ap.error("--hold must be over 1.1 s: the firmware sees a door open only after 1 s of debounce")

    results: dict[int, list[dict]] = {d: [] for d in distances}
    with tempfile.TemporaryDirectory(prefix="bench-pickup-") as tmp:
        try:
            site = Site(Path(tmp))
        except Exception as e:
            print(f"bench_pickup: the site did not start: {e}", file=sys.stderr)
            return 1
        try:
            n = 0
            for _ in range(a.reps):
                for d in distances:
                    bin_no = (n * 5) % nbins + 1       # a different bin each time, all round the ring
                    order = f"rx-bench-{n}"
                    prepare(site, bin_no, d, order, a.hold)
                    r = pickup(site, bin_no, order, a.hold, a.poll_ms / 1000)
                    if r["steps"] != d * car["steps_per_bin"]:
                        raise Broken(f"pickup of bin {bin_no}: the polls saw {r['steps']} steps, "
                                     f"not the {d * car['steps_per_bin']} of {d} bins")
                    results[d].append(r)
                    n += 1
        except (Broken, AssertionError) as e:
            print(f"bench_pickup: the run broke: {e}", file=sys.stderr)
            return 1
        finally:
            site.close()

    everything = [r for rs in results.values() for r in rs]
    print(f"1 emulated kiosk ({nbins} bins of {car['steps_per_bin']} steps, {car['max_speed']} steps/s, "
          f"{car['accel']} steps/s^2), {a.reps} pickups per distance, bins "
          f"{', '.join(str(r['bin']) for r in everything)}")
    gaps = [g for r in everything for g in r["gaps"]]
    rtts = [x for r in everything for x in r["rtts"]]
    print(f"world polled every {a.poll_ms:g} ms: gap between polls median {ms(statistics.median(gaps)).strip()}, "
          f"max {ms(max(gaps)).strip()}; a poll's round trip median {ms(statistics.median(rtts)).strip()}")
    print(f"HTTP accept (POST to 202):           {med_max([r['accept'] for r in everything])}")
    hw = hardware_waits(car)
    hw_s = hw["wake"] + hw["first"] + hw["settle"]
    for d in distances:
        rs = results[d]
        planned = planned_motion_s(d * car["steps_per_bin"], car["max_speed"], car["accel"])
        what = {0: "at the door", nbins // 2: "half way round"}.get(d, "adjacent" if d == 1 else "")
        print(f"\n{d} bin{'s' if d != 1 else ''} away{' (' + what + ')' if what else ''}, {len(rs)} pickups, "
              f"{d * car['steps_per_bin']} steps; the ramp plans {ms(planned).strip()} of motion")
        print(f"  motion (first to last step):       {med_max([r['motion'] for r in rs])}")
        print(f"  request -> door unlocked:          {med_max([r['unlocked'] for r in rs])}")
        print(f"  overhead (unlocked - motion):      {med_max([r['unlocked'] - r['motion'] for r in rs])}")
        if d:
            print(f"  overhead less the driver's waits:  "
                  f"{med_max([r['unlocked'] - r['motion'] - hw_s for r in rs])}  (software alone)")
        print(f"  request -> succeeded:              {med_max([r['terminal'] for r in rs])}  "
              f"(patient holds the door {a.hold:g} s)")
        print(f"  door closed -> succeeded:          {med_max([r['close_to_terminal'] for r in rs])}")

    # where the time to unlock goes, as a watcher on the broker and the polls see it
    hops = [("POST -> command on the broker", None, "cmd"),
            ("command -> kiosk's 'queued' reply", "cmd", "reply_queued"),
            ("'queued' reply -> door unlocked", "reply_queued", "unlocked"),
            ("  'queued' reply -> first step", "reply_queued", "start"),
            ("  first -> last step (motion)", "start", "end"),
            ("  last step -> door unlocked", "end", "unlocked")]
    heads = [f"{d} bin{'s' if d != 1 else ''}" for d in distances]
    print("\nwhere the time to unlock goes, ms, median (max) per hop:")
    print(f"  {'':<36}" + "".join(f"{h:>18}" for h in heads))
    for label, a0, a1 in hops:
        cells = []
        for d in distances:
            vals = [r[a1] - (r[a0] if a0 else 0.0) for r in results[d]
                    if r.get(a1) is not None and (a0 is None or r.get(a0) is not None)]
            cells.append(f"{1000 * statistics.median(vals):8.1f} ({1000 * max(vals):6.1f})" if vals else "-")
        print(f"  {label:<36}" + "".join(f"{c:>18}" for c in cells))
    print(f"  (the driver's waits around a move, which a real mechanism needs too: wake-up after enable "
          f"{1000 * hw['wake']:.0f} ms,\n   the first step's own interval {1000 * hw['first']:.1f} ms, "
          f"settle after the last step {1000 * hw['settle']:.0f} ms: {1000 * hw_s:.1f} ms in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
