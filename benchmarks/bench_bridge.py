"""Bridge load: simulated kiosks against real `kiosk-bridge serve` processes.

    .venv/bin/python benchmarks/bench_bridge.py [--quick] [--kiosks 10000] [--conns 250]

One mosquitto, one SQLite store, the bridge as a real subprocess: first one
bridge process, then two sharing the work (`--share bench`, MQTT v5 shared
subscriptions, the same SQLite file). The kiosks are simulated in CPython
with paho-mqtt: --kiosks ids multiplexed over --conns MQTT connections
(kiosk i rides connection i mod conns; the connections are spread over
--workers processes). Each kiosk signs with its own key, publishes a
retained birth, telemetry every 10 s (QoS 0) and journal events (QoS 1, seq
`s` global per kiosk) following a pickup script of 8 records (motor, bolt,
door, pickup, door, bolt, op); it reads its signed acks on kiosk/<id>/ack
and, like the firmware's outbox, sends unacknowledged records again when no
ack comes for a while.

Phases, per bridge setup:
- births: every kiosk's birth stored (the bridge's messages_total{kind=state});
- steady: telemetry every 10 s from every kiosk and one pickup per
  --pickup-every seconds per kiosk;
- max: telemetry as before and the event rate raised stage by stage (x1.5)
  until the acks fall behind (under 90% of what was sent in the stage is
  acknowledged in it, or the backlog exceeds one second of sending);
- drain: sending stops; every kiosk's last seq must be acknowledged.

Prints (does not assert) from the kiosk side: events sent and acknowledged
per second, publish-to-ack latency p50/p99; from the bridge's /metrics:
events stored per second (kiosk_bridge_events_stored_total), the store
batch time p50/p99 (kiosk_bridge_store_seconds, bucket upper bounds), the
arrival-to-stored lag p99 and the largest ingest queue seen; CPU used by
each process. At the end the store is checked: per kiosk exactly the seqs
1..last that were sent (a primary key forbids duplicates), the acked prefix
at last, and the metrics against the kiosk-side counts. Any mismatch is
printed as LOST/MISMATCH and the script exits 1.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import multiprocessing as mp
import multiprocessing.connection
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import paho.mqtt.client as mqtt  # noqa: E402

from kiosk_host import protocol  # noqa: E402
from bridge_support import provision  # noqa: E402
from link_support import Mosquitto, free_port  # noqa: E402

TELE_PERIOD_S = 10.0
RETRY_S = 10.0           # no ack for this long: send the unacknowledged records again (doubling, as the firmware)
RETRY_MAX_S = 60.0
TICK_S = 0.02
BROKER_CONF = ["max_queued_messages 10000", "max_packet_size 65536", "set_tcp_nodelay true"]
REPORT_S = 0.5
PICKUP = [  # one pickup as the journal records it
    {"k": "motor", "ev": "start", "what": "carousel"},
    {"k": "motor", "ev": "done", "what": "carousel"},
    {"k": "door", "door": "pickup", "ev": "bolt_released"},
    {"k": "door", "door": "pickup", "ev": "door_opened"},
    {"k": "pickup"},
    {"k": "door", "door": "pickup", "ev": "door_closed"},
    {"k": "door", "door": "pickup", "ev": "bolt_engaged"},
    {"k": "op", "op": "pickup", "state": "succeeded", "opened": True},
]


def kiosk_id(i: int) -> str:
    return f"bk{i:05d}"


def kiosk_key(kid: str) -> bytes:
    return hashlib.sha256(b"bench-bridge-key/" + kid.encode()).digest()


def dumps(m: dict) -> str:
    return json.dumps(m, separators=(",", ":"))


# -- simulated kiosks (one worker process) ---------------------------------------

class Worker:
    """A share of the kiosks over a share of the connections. One scheduler
    thread publishes; paho's loop threads take the acks."""

    def __init__(self, port: int, conns: list[list[int]], pipe):
        self.port = port
        self.pipe = pipe
        self.ids: list[str] = []
        self.keys: list[bytes] = []
        self.client_of: list[int] = []
        self.clients: list[mqtt.Client] = []
        self.conn_kiosks: list[list[int]] = []
        self.local: dict[str, int] = {}
        for c, members in enumerate(conns):
            loc = []
            for i in members:
                kid = kiosk_id(i)
                self.local[kid] = len(self.ids)
                loc.append(len(self.ids))
                self.ids.append(kid)
                self.keys.append(kiosk_key(kid))
                self.client_of.append(c)
            self.conn_kiosks.append(loc)
        n = len(self.ids)
        self.lock = threading.Lock()
        self.seq = [0] * n
        self.acked = [0] * n
        self.pending = [collections.deque() for _ in range(n)]   # (seq, t_pub, unsigned msg)
        self.progress = [0.0] * n        # last ack progress (or first send after an idle spell)
        self.retry_wait = [RETRY_S] * n
        self.step = [random.randrange(len(PICKUP)) for _ in range(n)]
        self.pickups = [0] * n
        self.lat: list[float] = []
        self.count = collections.Counter()
        self.connected = 0
        self.rate = 0.0
        self.tele = False

    # paho callbacks (loop threads)
    def _on_connect(self, client, userdata, flags, rc, props=None):
        c = userdata
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe([(f"kiosk/{self.ids[k]}/ack", 0) for k in self.conn_kiosks[c]])
        for k in self.conn_kiosks[c]:
            self._birth(client, k)
        with self.lock:
            self.connected += 1

    def _on_message(self, client, userdata, m):
        now = time.monotonic()
        kid = m.topic.split("/")[1]
        k = self.local.get(kid)
        try:
            msg = json.loads(m.payload)
            ok = k is not None and protocol.verify(self.keys[k], msg) and isinstance(msg.get("upto"), int)
        except ValueError:
            ok = False
        if not ok:
            self.count["bad_ack"] += 1
            return
        upto = msg["upto"]
        with self.lock:
            self.count["acks"] += 1
            if upto > self.seq[k]:
                self.count["ack_ahead"] += 1
                return
            if upto <= self.acked[k]:
                return
            self.acked[k] = upto
            p = self.pending[k]
            while p and p[0][0] <= upto:
                _, t_pub, _ = p.popleft()
                self.lat.append(now - t_pub)
                self.count["acked"] += 1
            self.progress[k] = now
            self.retry_wait[k] = RETRY_S

    # publishing (scheduler thread)
    def _pub(self, k: int, kind: str, msg: dict, qos: int, retain: bool = False) -> None:
        protocol.sign(self.keys[k], msg)
        info = self.clients[self.client_of[k]].publish(f"kiosk/{self.ids[k]}/{kind}", dumps(msg), qos=qos,
                                                       retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.count[f"publish_error_{kind}"] += 1

    def _birth(self, client, k: int) -> None:
        msg = {"online": True, "fw": "bench", "board": "bench", "boot": 1, "t": int(time.time()),
               "snap": {"doors": {"pickup": {"door": "closed", "bolt": "engaged"}}, "bins": {}, "alarms": [],
                        "sensors": {"shelf_top": {"value_centi": 512, "status": "ok"}}},
               "journal": {"last": self.seq[k], "acked": self.acked[k]}, "v": 1, "kiosk": self.ids[k]}
        protocol.sign(self.keys[k], msg)
        client.publish(f"kiosk/{self.ids[k]}/state", dumps(msg), qos=1, retain=True)
        self.count["births"] += 1

    def _event(self, k: int, now: float) -> None:
        step = self.step[k]
        body = dict(PICKUP[step])
        if body["k"] in ("pickup", "op"):
            body.update(id=f"{self.ids[k]}-p{self.pickups[k]}", order=f"rx-{self.pickups[k]}", bin=1 + self.pickups[k] % 12)
        self.step[k] = (step + 1) % len(PICKUP)
        if self.step[k] == 0:
            self.pickups[k] += 1
        with self.lock:
            self.seq[k] += 1
            s = self.seq[k]
            msg = {"s": s, "b": 1, "t": int(time.time()), **body, "v": 1, "kiosk": self.ids[k]}
            if not self.pending[k]:
                self.progress[k] = now
            self.pending[k].append((s, now, dict(msg)))
            self.count["sent"] += 1
        self._pub(k, "evt", msg, 1)

    def _telemetry(self, k: int) -> None:
        msg = {"t": int(time.time()), "boot": 1,
               "temp_centi": {"shelf_top": 480 + random.randrange(60), "cabinet": 498}, "rh_centi": {"cabinet": 4510},
               "heap": 61344, "link": {"connected": True, "connects": 1, "drops": 0, "last_error": None,
                                       "max_stall_us": 1830, "inflight": 0, "sent": self.seq[k], "pubacks": self.seq[k],
                                       "acked": self.acked[k], "pending": self.seq[k] - self.acked[k], "rssi": -61,
                                       "clock_offset_s": 0},
               "v": 1, "kiosk": self.ids[k]}
        self._pub(k, "tele", msg, 0)
        self.count["tele"] += 1

    def _retry(self, now: float) -> None:
        again = []
        with self.lock:
            for k, p in enumerate(self.pending):
                if p and now - self.progress[k] >= self.retry_wait[k]:
                    self.progress[k] = now
                    self.retry_wait[k] = min(self.retry_wait[k] * 2, RETRY_MAX_S)
                    again += [(k, dict(m, replayed=True)) for _, _, m in p]
        for k, m in again:
            self._pub(k, "evt", m, 1)
            self.count["resent"] += 1

    def run(self) -> None:
        for c in range(len(self.conn_kiosks)):
            cl = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{os.getpid()}-{c}",
                             protocol=mqtt.MQTTv311, clean_session=True, userdata=c)
            cl.on_connect = self._on_connect
            cl.on_message = self._on_message
            cl.max_inflight_messages_set(0)
            cl.max_queued_messages_set(0)
            self.clients.append(cl)
        for cl in self.clients:
            cl.connect_async("127.0.0.1", self.port, keepalive=60)
            cl.loop_start()
        n = len(self.ids)
        tele_order = list(range(n))
        random.shuffle(tele_order)
        tele_pos = 0.0
        ev_due = 0.0
        last = time.monotonic()
        next_report = last + REPORT_S
        next_retry = last + 1
        running = True
        while running:
            now = time.monotonic()
            dt, last = now - last, now
            while self.pipe.poll():
                cmd = self.pipe.recv()
                if cmd[0] == "rate":
                    self.tele, self.rate = cmd[1], cmd[2]
                    ev_due = 0.0
                elif cmd[0] == "snap":
                    with self.lock:
                        lat, self.lat = self.lat, []
                        c = dict(self.count)
                        c["pending"] = sum(s - a for s, a in zip(self.seq, self.acked))
                    self.pipe.send(("snap", c, lat))
                elif cmd[0] == "final":
                    with self.lock:
                        self.pipe.send(("final", {self.ids[k]: self.seq[k] for k in range(n)},
                                        {self.ids[k]: self.acked[k] for k in range(n)}))
                elif cmd[0] == "quit":
                    running = False
            if self.tele and n:
                tele_pos += dt * n / TELE_PERIOD_S
                while tele_pos >= 1:
                    tele_pos -= 1
                    self._telemetry(tele_order[int(self.count["tele"]) % n])
            if self.rate and n:
                ev_due += dt * self.rate
                behind = ev_due > self.rate * 0.5 + 10      # more than half a second behind schedule
                if behind:
                    self.count["behind_s"] += dt
                while ev_due >= 1:
                    ev_due -= 1
                    self._event(random.randrange(n), now)
            if now >= next_retry:
                next_retry = now + 1
                self._retry(now)
            if now >= next_report:
                next_report = now + REPORT_S
                with self.lock:
                    lat, self.lat = self.lat, []
                    c = dict(self.count)
                    c["pending"] = sum(s - a for s, a in zip(self.seq, self.acked))
                    c["connected"] = self.connected
                self.pipe.send(("tick", c, lat))
            time.sleep(max(0.0, TICK_S - (time.monotonic() - now)))
        for cl in self.clients:
            cl.disconnect()
            cl.loop_stop()


def worker_main(port: int, conns: list[list[int]], pipe) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    random.seed(os.getpid())
    Worker(port, conns, pipe).run()


class Fleet:
    """The worker processes, seen from the benchmark's main process."""

    def __init__(self, port: int, kiosks: int, conns: int, workers: int):
        ctx = mp.get_context("spawn")
        per_conn = [[i for i in range(kiosks) if i % conns == c] for c in range(conns)]
        self.pipes, self.procs = [], []
        for w in range(workers):
            a, b = ctx.Pipe()
            p = ctx.Process(target=worker_main, args=(port, per_conn[w::workers], b), daemon=True)
            p.start()
            self.pipes.append(a)
            self.procs.append(p)
        self.counts = [dict() for _ in range(workers)]
        self.lat: list[float] = []

    def poll(self, timeout: float = 0.1) -> None:
        for r in mp.connection.wait(self.pipes, timeout):
            w = self.pipes.index(r)
            while r.poll():
                self._take(w, r.recv())

    def _take(self, w: int, msg) -> None:
        if msg[0] in ("tick", "snap"):
            self.counts[w] = msg[1]
            self.lat += msg[2]

    def snapshot(self) -> None:
        """Counts as of now (each worker answers within one tick)."""
        for p in self.pipes:
            p.send(("snap",))
        for w, p in enumerate(self.pipes):
            while True:
                msg = p.recv()
                self._take(w, msg)
                if msg[0] == "snap":
                    break

    def total(self, name: str) -> float:
        return sum(c.get(name, 0) for c in self.counts)

    def rate(self, tele: bool, events_per_s: float) -> None:
        for p in self.pipes:
            p.send(("rate", tele, events_per_s / len(self.pipes)))

    def final(self) -> tuple[dict[str, int], dict[str, int]]:
        last, acked = {}, {}
        for p in self.pipes:
            p.send(("final",))
        for p in self.pipes:
            while True:
                msg = p.recv()
                if msg[0] == "final":
                    last.update(msg[1])
                    acked.update(msg[2])
                    break
        return last, acked

    def stop(self) -> None:
        for p in self.pipes:
            try:
                p.send(("quit",))
            except OSError:
                pass
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs)


# -- the bridge processes and their metrics --------------------------------------

def cpu_seconds(pid: int) -> float:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class BridgeProc:
    def __init__(self, tmp: Path, broker_port: int, db: Path, keys: Path, name: str, share: str | None):
        self.http = free_port()
        self.log = tmp / f"{name}.log"
        cmd = [str(Path(sys.executable).parent / "kiosk-bridge"), "serve", "--broker", f"mqtt://127.0.0.1:{broker_port}",
               "--db", f"sqlite:///{db}", "--http", f"127.0.0.1:{self.http}", "--keys", str(keys)]
        if share:
            cmd += ["--share", share]
        self.token = provision(f"sqlite:///{db}")["viewer"]     # /metrics takes a viewer's token
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise SystemExit(f"the bridge exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"the bridge did not come up: {self.log.read_text()[-2000:]}")

    def metrics(self) -> dict[tuple[str, str], float]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.http}/metrics",
                                     headers={"authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$", line)
            if m:
                out[(m.group(1), m.group(2) or "")] = float(m.group(3))
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)


def msum(ms: list[dict], name: str, labels: str = "") -> float:
    return sum(m.get((name, labels), 0.0) for m in ms)


def hist(ms: list[dict], name: str) -> tuple[list[tuple[float, float]], float]:
    """Bucket (upper bound, cumulative count) summed over bridges, and the count."""
    bounds: dict[float, float] = collections.defaultdict(float)
    for m in ms:
        for (n, lab), v in m.items():
            if n == name + "_bucket":
                le = re.search(r'le="([^"]+)"', lab).group(1)
                bounds[float("inf") if le == "+Inf" else float(le)] += v
    return sorted(bounds.items()), msum(ms, name + "_count")


def hist_delta_quantile(before: list[dict], after: list[dict], name: str, q: float) -> float | None:
    b0, _ = hist(before, name)
    b1, n1 = hist(after, name)
    d0 = dict(b0)
    rows = [(le, c - d0.get(le, 0.0)) for le, c in b1]
    total = rows[-1][1] if rows else 0
    if not total:
        return None
    for le, c in rows:
        if c >= q * total:
            return le
    return float("inf")


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def ms(v: float | None) -> str:
    if v is None or v != v:
        return "   n/a"
    if v == float("inf"):
        return "  >120 s"
    return f"{1000 * v:6.1f} ms" if v < 10 else f"{v:6.1f} s "


# -- one run: N bridges ----------------------------------------------------------

class Run:
    def __init__(self, a, tmp: Path, keys: Path, bridges: int):
        self.a, self.tmp, self.keys, self.n_bridges = a, tmp, keys, bridges
        tag = f"b{bridges}"
        # the deployed broker's limits (deploy/mosquitto/mosquitto.conf) and TCP_NODELAY
        # (docs/bridge-scaling.md: without it acks wait ~40 ms behind Nagle's algorithm)
        self.broker = Mosquitto(tmp / f"mq-{tag}", extra=BROKER_CONF).start()
        self.db = tmp / f"store-{tag}.sqlite3"
        share = "bench" if bridges > 1 else None
        self.bridges = [BridgeProc(tmp, self.broker.port, self.db, keys, f"bridge-{tag}-{i}", share)
                        for i in range(bridges)]
        for b in self.bridges:
            b.wait_ready()
        self.fleet = Fleet(self.broker.port, a.kiosks, a.conns, a.workers)
        self.failures: list[str] = []

    def scrape(self) -> list[dict]:
        return [b.metrics() for b in self.bridges]

    def cpu(self) -> dict[str, float]:
        return {"bridge": sum(b.cpu() for b in self.bridges), "broker": cpu_seconds(self.broker.proc.pid),
                "kiosks": self.fleet.cpu()}

    def wait(self, cond, timeout: float, every: float = 0.2) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            t = time.monotonic() + every
            while time.monotonic() < t:
                self.fleet.poll(0.1)
            if cond():
                return True
        return False

    def window(self, seconds: float, events_per_s: float, tele: bool = True, queue_every: float = 2.0) -> dict:
        """Send at this rate for this long; what the kiosks and the bridges saw."""
        f = self.fleet
        f.rate(tele, events_per_s)
        f.snapshot()
        t0 = time.monotonic()
        m0, c0 = self.scrape(), self.cpu()
        sent0, acked0, tele0, behind0 = f.total("sent"), f.total("acked"), f.total("tele"), f.total("behind_s")
        f.lat = []
        end = t0 + seconds
        qmax = 0.0
        next_q = t0 + queue_every
        while time.monotonic() < end:
            f.poll(0.1)
            if time.monotonic() >= next_q:
                next_q += queue_every
                qmax = max(qmax, max(self.queue_depths()))
        f.snapshot()
        dt = time.monotonic() - t0
        m1, c1 = self.scrape(), self.cpu()
        qmax = max(qmax, max(self.queue_depths(m1)))
        r = {
            "dt": dt, "target": events_per_s,
            "sent": f.total("sent") - sent0, "acked": f.total("acked") - acked0, "tele": f.total("tele") - tele0,
            "backlog": f.total("pending"), "behind": f.total("behind_s") - behind0,
            "lat50": pct(f.lat, 0.5), "lat99": pct(f.lat, 0.99),
            "stored": msum(m1, "kiosk_bridge_events_stored_total") - msum(m0, "kiosk_bridge_events_stored_total"),
            "msgs": sum(msum(m1, "kiosk_bridge_messages_total", f'{{kind="{k}"}}')
                        - msum(m0, "kiosk_bridge_messages_total", f'{{kind="{k}"}}') for k in ("evt", "tele", "state")),
            "batches": msum(m1, "kiosk_bridge_store_seconds_count") - msum(m0, "kiosk_bridge_store_seconds_count"),
            "store50": hist_delta_quantile(m0, m1, "kiosk_bridge_store_seconds", 0.5),
            "store99": hist_delta_quantile(m0, m1, "kiosk_bridge_store_seconds", 0.99),
            "lag99": hist_delta_quantile(m0, m1, "kiosk_bridge_ingest_lag_seconds", 0.99),
            "queue": qmax,
            "cpu": {k: (c1[k] - c0[k]) / dt for k in c1},
        }
        return r

    def queue_depths(self, ms_: list[dict] | None = None) -> list[float]:
        return [m.get(("kiosk_bridge_ingest_queue", ""), 0.0) for m in (ms_ or self.scrape())]

    def report(self, label: str, r: dict) -> None:
        dt = r["dt"]
        cpu = r["cpu"]
        print(f"  {label:<24} sent {r['sent'] / dt:7.0f} evt/s, acked {r['acked'] / dt:7.0f} evt/s, "
              f"stored {r['stored'] / dt:7.0f} evt/s (+{r['tele'] / dt:.0f} tele/s; bridge took "
              f"{r['msgs'] / dt:.0f} msg/s in)")
        print(f"  {'':<24} publish->ack p50 {ms(r['lat50'])}, p99 {ms(r['lat99'])}; store batch p50 <= "
              f"{ms(r['store50'])}, p99 <= {ms(r['store99'])} ({r['batches'] / dt:.0f} batches/s); "
              f"arrival->stored p99 <= {ms(r['lag99'])}; ingest queue max {r['queue']:.0f}; backlog at end "
              f"{r['backlog']:.0f}")
        print(f"  {'':<24} CPU: bridge{'s' if self.n_bridges > 1 else ''} {100 * cpu['bridge']:.0f}%, broker "
              f"{100 * cpu['broker']:.0f}%, simulated kiosks {100 * cpu['kiosks']:.0f}% (of one core)"
              + (f"; kiosks behind schedule {r['behind']:.1f} s" if r["behind"] > 0.5 else ""), flush=True)

    def go(self) -> dict:
        a, f = self.a, self.fleet
        title = "one bridge process" if self.n_bridges == 1 else f"{self.n_bridges} bridge processes (--share bench)"
        print(f"{title}, SQLite store, {a.kiosks} kiosks over {a.conns} connections:", flush=True)
        t0 = time.monotonic()
        if not self.wait(lambda: f.total("connected") >= a.conns, 120):
            raise SystemExit(f"only {f.total('connected'):.0f} of {a.conns} connections came up")
        births_ok = self.wait(lambda: msum(self.scrape(), "kiosk_bridge_messages_total", '{kind="state"}')
                              >= a.kiosks, 300, every=1.0)
        dt = time.monotonic() - t0
        print(f"  {'births stored':<24} {a.kiosks} in {dt:.1f} s ({a.kiosks / dt:.0f}/s, connections included)"
              + ("" if births_ok else "  MISMATCH: not all births were taken in"), flush=True)
        if not births_ok:
            self.failures.append("births")
        steady_rate = a.kiosks * len(PICKUP) / a.pickup_every
        r = self.window(a.steady, steady_rate)
        self.report(f"steady ({steady_rate:.0f} evt/s)", r)
        out = {"steady": r, "ceiling": None}
        rate = max(2 * steady_rate, 400.0)
        best = None
        for _ in range(a.max_stages):
            r = self.window(a.stage, rate)
            keeps_up = r["acked"] >= 0.9 * r["sent"] and r["backlog"] <= max(r["sent"] / r["dt"], 200)
            gen_limited = r["sent"] < 0.9 * rate * r["dt"]
            self.report(f"max: {rate:.0f} evt/s" + (" (kept up)" if keeps_up else " (fell behind)"), r)
            if keeps_up:
                best = r
            if not keeps_up or gen_limited:
                if gen_limited:
                    print(f"  {'':<24} the simulated kiosks could not send faster than "
                          f"{r['sent'] / r['dt']:.0f} evt/s on this machine", flush=True)
                out["saturated"] = r if not keeps_up else None
                break
            rate *= 1.5
        out["ceiling"] = best
        # drain
        f.rate(False, 0)
        t0 = time.monotonic()
        drained = self.wait(lambda: f.total("pending") == 0, a.drain)
        print(f"  {'drain':<24} " + (f"every event acknowledged {time.monotonic() - t0:.1f} s after sending stopped"
                                      if drained else f"MISMATCH: {f.total('pending'):.0f} events still "
                                                      f"unacknowledged after {a.drain:.0f} s"), flush=True)
        if not drained:
            self.failures.append("drain")
        self.verify()
        return out

    def verify(self) -> None:
        f = self.fleet
        last, k_acked = f.final()
        f.snapshot()
        m = self.scrape()
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        rows = {k: (n, lo, hi) for k, n, lo, hi in
                db.execute("SELECT kiosk, COUNT(*), MIN(seq), MAX(seq) FROM events GROUP BY kiosk")}
        acked = dict(db.execute("SELECT id, acked FROM kiosks"))
        total = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        db.close()
        sent = sum(last.values())
        bad = []
        for kid, n in last.items():
            got = rows.get(kid, (0, None, None))
            want = (n, 1, n) if n else (0, None, None)
            if got != want:
                bad.append(f"{kid}: sent 1..{n}, store holds {got[0]} ({got[1]}..{got[2]})")
            if acked.get(kid, 0) != n:
                bad.append(f"{kid}: sent 1..{n}, store acked {acked.get(kid, 0)}")
            if k_acked.get(kid, 0) != n:
                bad.append(f"{kid}: sent 1..{n}, kiosk heard an ack up to {k_acked.get(kid, 0)}")
        extra = set(rows) - set(last)
        bad += [f"{kid}: events in the store from no simulated kiosk" for kid in sorted(extra)]
        stored = msum(m, "kiosk_bridge_events_stored_total")
        dupes = msum(m, "kiosk_bridge_events_duplicate_total")
        evt_in = msum(m, "kiosk_bridge_messages_total", '{kind="evt"}')
        tele_in = msum(m, "kiosk_bridge_messages_total", '{kind="tele"}')
        rejected = sum(v for (n, _), v in ((k, v) for mm in m for k, v in mm.items())
                       if n == "kiosk_bridge_messages_rejected_total")
        resent = f.total("resent")
        if stored != total:
            bad.append(f"metrics: kiosk_bridge_events_stored_total {stored:.0f} but the store holds {total}")
        if stored + dupes != evt_in:
            bad.append(f"metrics: stored {stored:.0f} + duplicate {dupes:.0f} != evt messages taken in {evt_in:.0f}")
        if evt_in > sent + resent:
            bad.append(f"metrics: the bridge took in {evt_in:.0f} evt messages, the kiosks sent {sent + resent:.0f}")
        if rejected:
            bad.append(f"metrics: {rejected:.0f} messages rejected")
        if f.total("bad_ack") or f.total("ack_ahead"):
            bad.append(f"kiosks: {f.total('bad_ack'):.0f} bad acks, {f.total('ack_ahead'):.0f} acks ahead of the seq")
        lost_at_broker = sent + resent - evt_in
        print(f"  {'store check':<24} {total} events for {len(rows)} kiosks = the {sent} sent, each once, "
              f"seqs 1..last, acked to the end" if not bad else f"  {'store check':<24} LOST/MISMATCH:")
        for b in bad[:20]:
            print(f"    {b}")
        if len(bad) > 20:
            print(f"    ... {len(bad) - 20} more")
        print(f"  {'metrics check':<24} events_stored_total {stored:.0f} = rows; duplicates {dupes:.0f} "
              f"(resent by kiosks {resent:.0f}, of which the broker dropped {lost_at_broker:.0f}); "
              f"tele taken in {tele_in:.0f} of {f.total('tele'):.0f} sent (QoS 0)", flush=True)
        if bad:
            self.failures.append("store")

    def close(self) -> None:
        self.fleet.stop()
        for b in self.bridges:
            b.stop()
        self.broker.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run (under a minute): 2000 kiosks, short phases")
    ap.add_argument("--kiosks", type=int)
    ap.add_argument("--conns", type=int)
    ap.add_argument("--workers", type=int, default=2, help="processes simulating kiosks (default 2)")
    ap.add_argument("--pickup-every", type=float, default=240.0, help="seconds between pickups per kiosk (default 240)")
    ap.add_argument("--steady", type=float, help="seconds of steady load")
    ap.add_argument("--stage", type=float, help="seconds per stage of the max phase")
    ap.add_argument("--max-stages", type=int, default=8)
    ap.add_argument("--drain", type=float, default=90.0, help="seconds allowed for the acks to catch up at the end")
    ap.add_argument("--bridges", default="1,2", help="bridge process counts to run (default 1,2)")
    a = ap.parse_args()
    a.kiosks = a.kiosks or (2000 if a.quick else 10000)
    a.conns = min(a.conns or (50 if a.quick else 250), a.kiosks)
    a.steady = a.steady or (8.0 if a.quick else 40.0)
    a.stage = a.stage or (3.0 if a.quick else 6.0)
    if a.quick:
        a.max_stages = min(a.max_stages, 4)
    print(f"{a.kiosks} simulated kiosks, kiosk i on connection i mod {a.conns} ({a.kiosks / a.conns:.0f} kiosks per "
          f"MQTT connection), {a.workers} sending processes; telemetry every {TELE_PERIOD_S:.0f} s, QoS 0; "
          f"one pickup ({len(PICKUP)} events, QoS 1) per kiosk every {a.pickup_every:.0f} s; no ack for "
          f"{RETRY_S:.0f} s: sent again; mosquitto with {', '.join(BROKER_CONF)}")
    failures = []
    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as t:
        tmp = Path(t)
        keys = tmp / "keys"
        keys.mkdir()
        for i in range(a.kiosks):
            kid = kiosk_id(i)
            (keys / f"{kid}.key").write_text(kiosk_key(kid).hex() + "\n")
        results = {}
        for n in [int(x) for x in a.bridges.split(",")]:
            run = None
            try:
                run = Run(a, tmp, keys, n)
                results[n] = run.go()
                failures += [f"{n} bridge(s): {x}" for x in run.failures]
            finally:
                if run:
                    run.close()
        print("summary:")
        for n, out in results.items():
            st, ce, sat = out["steady"], out["ceiling"], out.get("saturated")
            line = (f"  {n} bridge process{'es' if n > 1 else ''}: steady {st['acked'] / st['dt']:.0f} evt/s + "
                    f"{st['tele'] / st['dt']:.0f} tele/s stored and acked, publish->ack p99 {ms(st['lat99']).strip()}, "
                    f"store p99 <= {ms(st['store99']).strip()}")
            if ce:
                line += f"; kept up with {ce['acked'] / ce['dt']:.0f} evt/s (+ telemetry)"
            if sat:
                line += f", overloaded it stored {sat['stored'] / sat['dt']:.0f} evt/s"
            print(line)
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
