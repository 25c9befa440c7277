"""The bridge's MQTT side: verify what kiosks sign, store every event once
before acknowledging it, ask for gaps, keep fleet state, and sign commands.

Threads: paho's network loop only queues messages; one ingest thread takes
them in batches (one store transaction for all the batch's events, then the
acks);
a housekeeping thread times out commands no kiosk took and asks kiosks to
resend gaps. Several bridge processes can share the work through MQTT v5
shared subscriptions (`share=` group) against one store: the store hands
each newly contiguous run of a kiosk's events to exactly one of them, in
order (see store.add_events).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import sys
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt

from .. import contract, protocol
from .config import Keys, broker_settings
from .metrics import Counter, Gauge, Histogram, Registry
from .orders import Orders
from .rollouts import Rollouts
from .store import TERMINAL, Store

log = logging.getLogger("kiosk_bridge")

MAX_PAYLOAD = 64 * 1024
BATCH_MAX = 2000
GAP_GRACE_S = 2.0        # a hole may only be a message still on its way (or at the other bridge)
RESEND_EVERY_S = 5.0
RESEND_MAX = 1000        # the kiosk's limit for one resend range
STALE_GRACE_S = 5.0      # a command no kiosk answered by exp + this is timed out
RECONNECT_MAX_S = 10     # the longest wait between two attempts to reach the broker
TRANSIENT_KEEP_S = 30.0  # a scanned code's text is held this long for its event to join the prefix
UNSENT_MAX_AGE_S = 10.0  # a command left in the outbox longer (the bridge stopped) is not sent late
ORDER_SWEEP_S = 2.0      # how often orders past their deadline are looked for

# What the bridge lets a client ask of a kiosk, with the argument types the
# firmware's controller checks: the shared operation table
# (firmware/kiosk/contract.py). Bad requests are refused here and never
# reach a kiosk.
OPS: dict[str, dict[str, type]] = contract.OPS


class BridgeError(Exception):
    """A request the bridge refuses; status is the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class BrokerLink:
    """The broker session as people should see it: up or down, since when,
    how many attempts have failed since it was last up, and the last
    error. Changed from paho's thread, read by the API's."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connected = False
        self.since = time.time()
        self.attempts = 0
        self.error: str | None = None
        self.ever_connected = False

    def up(self) -> int:
        with self.lock:
            failed, self.attempts = self.attempts, 0
            self.connected, self.since, self.error, self.ever_connected = True, time.time(), None, True
            return failed

    def down(self, why: str) -> None:
        with self.lock:
            if self.connected:
                self.since = time.time()
            self.connected, self.error = False, why

    def failed(self, why: str) -> tuple[int, bool]:
        """Count a failed attempt: (attempts so far, whether the error changed)."""
        with self.lock:
            if self.connected:
                self.since = time.time()
            changed = why != self.error
            self.connected, self.error = False, why
            self.attempts += 1
            return self.attempts, changed

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {"connected": self.connected, "since": self.since, "failed_attempts": self.attempts,
                    "error": self.error, "ever_connected": self.ever_connected}


class Bridge:
    def __init__(self, broker_url: str, store: Store, keys: Keys, share: str | None = None,
                 credentials_file: str | None = None, command_ttl_s: int = 60, client_id: str | None = None,
                 webhook_url: str | None = None, webhook_secret: bytes | None = None):
        self.broker = broker_settings(broker_url, credentials_file)
        self.broker_url = broker_url
        self.store = store
        self.keys = keys
        self.share = share
        self.command_ttl_s = command_ttl_s
        self.client_id = client_id or f"kiosk-bridge-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.inbox: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self.connected = threading.Event()
        self.link = BrokerLink()                   # the broker session as the dashboard's header shows it
        self.client: mqtt.Client | None = None
        self._threads: list[threading.Thread] = []
        self._gaps: dict[str, float] = {}          # kiosk -> when the hole after acked was first seen
        self._resent: dict[str, float] = {}
        self._ack_sent: dict[str, int] = {}
        self._last: dict[str, tuple[str, int]] = {}    # kiosk -> (journal, newest seq) from its birth or telemetry
        self._sent_at: dict[str, float] = {}        # command id -> monotonic time it was published
        self._online: dict[str, bool] = {k["id"]: k["online"] for k in store.kiosks()}
        self._transient: dict[tuple[str, int], tuple[dict[str, Any], float]] = {}
        self.listeners: list = []                  # called with (kind, kiosk) after a change is stored
        self.alerter = None                        # alerts.Alerter, when run.py runs alerts beside it
        self.orders = Orders(store)                # the pickup: orders, codes, scans, consults
        self.webhooks = None
        if webhook_url:
            from .webhooks import Webhooks
            self.webhooks = Webhooks(self.orders, webhook_url, webhook_secret or b"")
        self._expired_at = 0.0
        self.rollouts = Rollouts(self)             # firmware updates (docs/ota.md)
        self._metrics()

    # -- metrics -------------------------------------------------------------
    def _metrics(self) -> None:
        r = self.registry = Registry()
        r.add(Gauge("kiosk_bridge_kiosks_online", "Kiosks whose last state message says online.",
                    fn=lambda: {(): sum(1 for v in self._online.values() if v)}))
        r.add(Gauge("kiosk_bridge_kiosks_known", "Kiosks with a key in the keys folder.",
                    fn=lambda: {(): len(self.keys.ids())}))
        self.m_stored = r.add(Counter("kiosk_bridge_events_stored_total", "Kiosk events stored (each exactly once)."))
        self.m_dupes = r.add(Counter("kiosk_bridge_events_duplicate_total",
                                     "Kiosk events received again and ignored (already stored)."))
        self.m_msgs = r.add(Counter("kiosk_bridge_messages_total", "MQTT messages taken in, by topic kind.", ("kind",)))
        self.m_rejected = r.add(Counter("kiosk_bridge_messages_rejected_total",
                                        "MQTT messages dropped, by reason.", ("reason",)))
        self.m_acks = r.add(Counter("kiosk_bridge_acks_sent_total", "Acknowledgements published to kiosks."))
        self.m_resends = r.add(Counter("kiosk_bridge_resend_requests_total", "Gap resend requests sent to kiosks."))
        self.m_commands = r.add(Counter("kiosk_bridge_commands_total", "Commands that reached a terminal state.",
                                        ("op", "state")))
        self.m_cmd_latency = r.add(Histogram("kiosk_bridge_command_latency_seconds",
                                             "From the request to the command's terminal state.", ("op",)))
        self.m_store = r.add(Histogram("kiosk_bridge_store_seconds",
                                       "Time to store one ingest batch of events, every kiosk's in it in one "
                                       "transaction (commit included)."))
        self.m_lag = r.add(Histogram("kiosk_bridge_ingest_lag_seconds",
                                     "From a message's arrival at the bridge to its being stored."))
        r.add(Gauge("kiosk_bridge_ingest_queue", "Messages received and not yet processed.",
                    fn=lambda: {(): self.inbox.qsize()}))
        self.m_excursions = r.add(Counter("kiosk_bridge_excursions_total", "Temperature excursions reported."))
        r.add(Gauge("kiosk_bridge_excursions_open", "Excursions not yet cleared, across the fleet.",
                    fn=self._open_excursions))
        r.add(Gauge("kiosk_bridge_broker_connected", "1 while the bridge holds a broker session.",
                    fn=lambda: {(): 1 if self.connected.is_set() else 0}))
        r.add(Gauge("kiosk_bridge_webhooks_waiting", "Order changes not yet delivered to the pharmacy system.",
                    fn=lambda: {(): self.orders.webhook_backlog()}))

    def _open_excursions(self) -> dict[tuple, float]:
        return {(): self.store.open_excursions()}

    # -- life cycle ----------------------------------------------------------
    def start(self) -> "Bridge":
        b = self.broker
        v5 = self.share is not None
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                        **({} if v5 else {"clean_session": True}))
        if b["user"]:
            c.username_pw_set(b["user"], b["password"])
        if b["tls"]:
            c.tls_set(ca_certs=b["ca"])
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.reconnect_delay_set(0.5, RECONNECT_MAX_S)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        self.client = c
        c.connect_async(b["host"], b["port"], keepalive=30)
        log.info("connecting to the broker at %s:%s", b["host"], b["port"])
        c.loop_start()
        for target, name in ((self._ingest, "bridge-ingest"), (self._housekeeping, "bridge-housekeeping")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        if self.webhooks:
            self.webhooks.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self.webhooks:
            self.webhooks.stop()
        for t in self._threads:
            t.join(10)
        if self.client:
            self.client.disconnect()
            self.client.loop_stop()

    def wait_connected(self, timeout: float = 10) -> bool:
        return self.connected.wait(timeout)

    def _topic(self, kind: str) -> str:
        t = f"kiosk/+/{kind}"
        return f"$share/{self.share}/{t}" if self.share else t

    def _on_connect(self, client, userdata, flags, rc, props=None):
        if getattr(rc, "is_failure", False):
            self._failed(f"the broker refused the session: {rc}")
            return
        try:   # acks are small packets sent one by one: no Nagle delay behind the previous one
            client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (AttributeError, OSError):
            pass
        client.subscribe([(self._topic(k), 1) for k in ("state", "evt", "reply", "tele")])
        self.connected.set()
        was = self.link.up()
        if was:
            log.warning("connected to the broker at %s:%s after %d failed attempts", self.broker["host"],
                        self.broker["port"], was)
        else:
            log.info("connected to the broker at %s:%s", self.broker["host"], self.broker["port"])

    def _on_connect_fail(self, client, userdata):
        # paho calls this inside its `except OSError`: the error is at hand.
        e = sys.exc_info()[1]
        self._failed(f"cannot reach the broker: {e.strerror or e}" if isinstance(e, OSError) and e.strerror
                     else f"cannot reach the broker: {e or 'connection failed'}")

    def _failed(self, why: str) -> None:
        """A connection attempt failed: always logged (not only with -v),
        first at once, then at growing intervals while it keeps failing."""
        n, changed = self.link.failed(why)
        if changed or n & (n - 1) == 0 or n % 100 == 0:
            log.warning("%s:%s: %s (attempt %d; retrying every %d s at most)", self.broker["host"],
                        self.broker["port"], why, n, RECONNECT_MAX_S)

    def _on_disconnect(self, client, userdata, flags, rc, props=None):
        self.connected.clear()
        if not self.stopping.is_set():
            self.link.down(f"connection lost: {rc}")
            log.warning("broker connection lost (%s); reconnecting", rc)

    def _on_message(self, client, userdata, m):
        self.inbox.put((m.topic, m.payload, time.monotonic()))

    # -- ingest --------------------------------------------------------------
    def _ingest(self) -> None:
        while not self.stopping.is_set():
            try:
                first = self.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < BATCH_MAX:
                try:
                    batch.append(self.inbox.get_nowait())
                except queue.Empty:
                    break
            try:
                self._process(batch)
            except Exception:   # the store failed: nothing was acked; the kiosks will send again
                log.exception("could not process %d messages; kiosks will resend what was not acknowledged", len(batch))
                time.sleep(1)

    def verify(self, topic: str, payload: bytes) -> tuple[str, str, dict[str, Any]] | None:
        """(kiosk, kind, message) for a correctly signed message from the kiosk
        its topic names, else None (counted by reason)."""
        parts = topic.split("/")
        if len(parts) != 3 or parts[0] != "kiosk":
            return self._reject("bad_topic")
        kiosk, kind = parts[1], parts[2]
        if kind not in ("state", "evt", "reply", "tele"):
            return self._reject("bad_topic")
        if not payload and kind == "state":
            return None            # a cleared retained state
        if len(payload) > MAX_PAYLOAD:
            return self._reject("oversized")
        key = self.keys.get(kiosk)
        if key is None:
            return self._reject("unknown_kiosk")
        try:
            msg = json.loads(payload)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return self._reject("bad_json")
        if not isinstance(msg, dict):
            return self._reject("bad_json")
        try:
            ok = protocol.verify(key, msg)
        except Exception:
            ok = False
        if not ok:
            return self._reject("bad_signature")
        if msg.get("v") != protocol.VERSION:
            return self._reject("bad_version")
        if msg.get("kiosk") != kiosk:
            return self._reject("wrong_kiosk")
        return kiosk, kind, msg

    def _reject(self, reason: str) -> None:
        self.m_rejected.inc(1, reason)
        return None

    def _process(self, batch: list[tuple[str, bytes, float]]) -> None:
        evts: dict[tuple[str, str], list[dict[str, Any]]] = {}   # (kiosk, journal) -> its events
        arrived: dict[tuple[str, str], float] = {}
        tele: list[tuple[str, dict[str, Any]]] = []
        for topic, payload, t_in in batch:
            got = self.verify(topic, payload)
            if got is None:
                continue
            kiosk, kind, msg = got
            self.m_msgs.inc(1, kind)
            if kind == "evt":
                j = msg.get("j", "")     # kiosks older than journal ids send none
                if (not isinstance(msg.get("s"), int) or msg["s"] < 1 or not isinstance(msg.get("k"), str)
                        or not isinstance(j, str) or len(j) > 64):
                    self._reject("bad_event")
                    continue
                self._keep_transient(kiosk, msg)
                evts.setdefault((kiosk, j), []).append(msg)
                arrived.setdefault((kiosk, j), t_in)
            elif kind == "tele":
                tele.append((kiosk, msg))
                self._newest(kiosk, msg.get("journal"))
            elif kind == "state":
                self._state(kiosk, msg)
            elif kind == "reply":
                self._reply(kiosk, msg)
        if tele:
            self.store.set_tele(tele)
            for kiosk, _ in tele:
                self._tell("tele", kiosk)
        if evts:
            self._events(evts, arrived)
            self.flush_commands()

    def _keep_transient(self, kiosk: str, msg: dict[str, Any]) -> None:
        """A scanned code's text is verified with its event and never stored:
        taken out here, held briefly for the event hooks (the event may join
        the contiguous prefix only once a gap before it is filled)."""
        if "text" not in msg:
            return
        text = msg.pop("text")
        if msg.get("k") != contract.K_SCAN or not isinstance(text, str):
            return
        now = time.monotonic()
        for key in [k for k, (_, t) in self._transient.items() if now - t > TRANSIENT_KEEP_S]:
            del self._transient[key]
        self._transient[(kiosk, msg["s"])] = ({"text": text}, now)

    def _events(self, evts: dict[tuple[str, str], list[dict[str, Any]]],
                arrived: dict[tuple[str, str], float]) -> None:
        """Store every kiosk's events of this batch in one transaction (one
        commit), then acknowledge each kiosk journal's stored prefix."""
        batches = []
        for (kiosk, j), events in evts.items():
            lost = []
            for e in events:
                if (e.get("k") in (contract.K_JOURNAL_OVERFLOW, contract.K_JOURNAL_LOST)
                        and isinstance(e.get("lost_from"), int) and isinstance(e.get("lost_to"), int)):
                    why = "rotated" if e["k"] == contract.K_JOURNAL_OVERFLOW else str(e.get("why") or "unreadable")
                    lost.append((e["lost_from"], e["lost_to"], why))
                if e.get("k") == contract.K_TEMP and e.get("ev") == "excursion_start" and not e.get("replayed"):
                    self.m_excursions.inc()
            batches.append((kiosk, j, events, lost))
        t0 = time.monotonic()
        transient = {k: v[0] for k, v in self._transient.items()}
        try:
            results = self.store.add_batches(batches, transient)
        except Exception:
            if len(batches) == 1:
                raise
            # One kiosk's events must not hold back the others': store them
            # kiosk by kiosk, as one transaction each.
            log.exception("could not store %d kiosks' events together; storing them one kiosk at a time", len(batches))
            results = {}
            for b in batches:
                try:
                    results.update(self.store.add_batches([b], transient))
                except Exception:
                    log.exception("%s: could not store %d events; the kiosk will send them again", b[0], len(b[2]))
            if not results:
                raise
        t1 = time.monotonic()
        self.m_store.observe(t1 - t0)
        for (kiosk, j), (new, acked, done) in results.items():
            self._stored(kiosk, j, evts[(kiosk, j)], new, acked, done, t1 - arrived[(kiosk, j)])

    def _stored(self, kiosk: str, j: str, events: list[dict[str, Any]], new: int, acked: int,
                done: list[dict[str, Any]], lag: float) -> None:
        self.m_lag.observe(lag)
        self.m_stored.inc(new)
        self.m_dupes.inc(len(events) - new)
        for cmd in done:
            self._finished(cmd)
        # Ack what is stored, also when nothing new arrived: a kiosk that sends
        # again has not heard the last ack.
        if acked:
            self._ack(kiosk, acked, j)
        if max(e["s"] for e in events) > acked:
            self._gaps.setdefault(kiosk, time.monotonic())
        else:
            self._gaps.pop(kiosk, None)
        self._tell("evt", kiosk)

    def _ack(self, kiosk: str, upto: int, j: str) -> None:
        """Acknowledge a journal's prefix. The ack names the journal, so it can
        never acknowledge another journal's records (a board wiped or replaced
        starts again at seq 1 under a new id)."""
        key = self.keys.get(kiosk)
        if key is None or self.client is None:
            return
        msg = protocol.sign(key, {"v": protocol.VERSION, "upto": upto, "j": j, "t": int(time.time())})
        self.client.publish(f"kiosk/{kiosk}/ack", json.dumps(msg, separators=(",", ":"), ensure_ascii=False), qos=1)
        self._ack_sent[kiosk] = upto
        self.m_acks.inc()

    def _newest(self, kiosk: str, journal: Any) -> None:
        """A birth or telemetry says how far the kiosk's journal goes. Past
        what was acknowledged, records were sent while no bridge listened
        (a restart, an outage): ask for them now rather than wait for the
        kiosk's own resend, whose wait grows to ten minutes."""
        if not isinstance(journal, dict) or not isinstance(journal.get("last"), int):
            return
        j = journal.get("id") if isinstance(journal.get("id"), str) else ""
        self._last[kiosk] = (j, journal["last"])
        if journal["last"] > self._ack_sent.get(kiosk, 0):
            self._gaps.setdefault(kiosk, time.monotonic())

    def _state(self, kiosk: str, msg: dict[str, Any]) -> None:
        self._newest(kiosk, msg.get("journal") if msg.get("online") else None)
        online, done = self.store.set_state(kiosk, msg)
        self._online[kiosk] = online
        for cmd in done:
            self._finished(cmd)
        if online and msg.get("online"):
            j, ours = self.store.current(kiosk)
            if ours:
                self._ack(kiosk, ours, j)     # also sets the kiosk's clock
        self._tell("state", kiosk)

    def _reply(self, kiosk: str, msg: dict[str, Any]) -> None:
        cid, state = msg.get("id"), msg.get("state")
        if not isinstance(cid, str) or not isinstance(state, str):
            self._reject("bad_reply")
            return
        if self.rollouts.reply(kiosk, msg):
            return
        info = msg.get("info") if isinstance(msg.get("info"), dict) else {}
        if state == "succeeded" and isinstance(info.get("lost"), list) and isinstance(info.get("j"), str):
            self._lost(kiosk, info["j"], info["lost"])        # the answer to a resend
            return
        if state == "rejected" and info.get("reason") in contract.COPY_REFUSALS:
            # A forged or replayed copy of the command was refused: that says
            # nothing about how the command itself is doing.
            if self.store.note_copy(cid, str(info["reason"]), kiosk):
                self._tell("command", kiosk)
            return
        r = self.store.update_command(cid, state, info.get("reason"), info, "reply", kiosk)
        if r and r[1]:
            self._finished(r[0])
        if r:
            self._tell("command", kiosk)

    def _lost(self, kiosk: str, j: str, ranges: list[Any]) -> None:
        """The kiosk says these records are gone (a resend could not find
        them): custody gaps; the prefix moves past them."""
        ranges = [r for r in ranges if isinstance(r, list) and len(r) == 2
                  and all(isinstance(x, int) and not isinstance(x, bool) for x in r)]
        if not ranges:
            return
        log.warning("%s: records %s of journal %s are gone from the kiosk", kiosk, ranges, j or "-")
        acked, done = self.store.mark_lost(kiosk, j, ranges)
        for cmd in done:
            self._finished(cmd)
        if acked:
            self._ack(kiosk, acked, j)
        self._tell("evt", kiosk)

    def _finished(self, cmd: dict[str, Any]) -> None:
        self.m_commands.inc(1, cmd["op"], cmd["state"])
        self.m_cmd_latency.observe(max(0.0, cmd["updated"] - cmd["created"]), cmd["op"])
        self._sent_at.pop(cmd["command_id"], None)
        self._tell("command", cmd["kiosk"])

    def _tell(self, kind: str, kiosk: str) -> None:
        if self.webhooks:
            self.webhooks.poke()
        for cb in self.listeners:
            try:
                cb(kind, kiosk)
            except Exception:
                log.exception("listener failed")

    # -- housekeeping --------------------------------------------------------
    def _housekeeping(self) -> None:
        while not self.stopping.wait(1.0):
            try:
                self._expire_commands()
                self._ask_for_gaps()
                self.flush_commands()
                self._expire_orders()
                self.rollouts.tick()
            except Exception:
                log.exception("housekeeping failed")

    def _expire_commands(self) -> None:
        for cmd in self.store.stale_commands(time.time() - STALE_GRACE_S):
            if any(h.get("by") not in ("bridge", "copy") for h in cmd["history"]):
                continue         # the kiosk has it (queued behind another operation)
            r = self.store.update_command(cmd["command_id"], "timed_out", "no_answer",
                                          {"detail": "the kiosk did not take the command before it expired"}, "bridge")
            if r and r[1]:
                self._finished(r[0])

    def _expire_orders(self) -> None:
        """Orders past their pickup deadline become return-to-stock tasks."""
        now = time.monotonic()
        if now - self._expired_at < ORDER_SWEEP_S:
            return
        self._expired_at = now
        for oid in self.orders.expire_due():
            log.info("order %s expired", oid)
            self._tell("order", "")

    def _ask_for_gaps(self) -> None:
        now = time.monotonic()
        for kiosk, since in list(self._gaps.items()):
            j, acked = self.store.current(kiosk)
            nxt = self.store.first_after(kiosk, acked, j)
            if nxt is None:
                hint = self._last.get(kiosk)
                if not hint or hint[0] != j or hint[1] <= acked:
                    self._gaps.pop(kiosk, None)
                    continue
                # Nothing stored past the hole, but the kiosk's birth or
                # telemetry says its journal goes further: ask for all it
                # holds from there (it sends what it has; that newest seq is
                # only where its journal stood when it said so).
                nxt = acked + RESEND_MAX + 1
            if now - since < GAP_GRACE_S or now - self._resent.get(kiosk, 0) < RESEND_EVERY_S:
                continue
            self._resent[kiosk] = now
            try:
                self.send(kiosk, "resend", {"from": acked + 1, "to": min(nxt - 1, acked + RESEND_MAX)}, record=False)
                self.m_resends.inc()
            except BridgeError as e:
                log.warning("%s: could not ask for a gap: %s", kiosk, e)

    # -- commands ------------------------------------------------------------
    def check(self, op: str, args: Any) -> None:
        """Refuse, with a clear message, what the kiosk would refuse."""
        spec = OPS.get(op)
        if spec is None:
            raise BridgeError(422, f"unknown operation {op!r}; one of: {', '.join(sorted(OPS))}")
        if not isinstance(args, dict):
            raise BridgeError(422, "args must be an object")
        for name in args:
            if name not in spec:
                raise BridgeError(422, f"{op} takes no argument {name!r}")
        for name, typ in spec.items():
            v = args.get(name)
            if name not in args:
                raise BridgeError(422, f"{op} needs {name!r}")
            if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
                raise BridgeError(422, f"{name} must be {typ.__name__}")
            if typ is str and not 0 < len(v) <= 64:
                raise BridgeError(422, f"{name} must be 1 to 64 characters")
            if typ is str and not protocol.clean_text(v):
                raise BridgeError(422, f"{name} must be printable Unicode text")
            if typ is int and name in ("bin",) and v < 1:
                raise BridgeError(422, "bin numbers start at 1")

    def send(self, kiosk: str, op: str, args: dict[str, Any], record: bool = True, actor: str | None = None,
             note: str | None = None) -> dict[str, Any] | None:
        """Sign and publish one command. Recorded commands are followed to
        their terminal state; `resend` (the bridge's own) is not. actor is
        the user who asked: the signed command carries it as `by`, so the
        kiosk journals the person too; note (why they asked) stays here."""
        key = self.keys.get(kiosk)
        if key is None:
            raise BridgeError(404, f"unknown kiosk {kiosk!r} (no key in {self.keys.dir})")
        if record:
            self.check(op, args)
        if not self.connected.is_set() or self.client is None:
            raise BridgeError(503, "the bridge has no broker session: no command can reach a kiosk until it "
                                   "reconnects (see the bridge's log)")
        if record:
            k = self.store.kiosk(kiosk)
            if k is None or not k["online"]:
                why = f" ({k['why']})" if k and k.get("why") else ""
                raise BridgeError(409, f"kiosk {kiosk} is offline{why}: the command could not reach it. Check the "
                                       "kiosk's power and network; it is back when the dashboard shows it online")
            if "bin" in args:
                bins = bin_count(k)
                if bins and args["bin"] > bins:
                    raise BridgeError(422, f"kiosk {kiosk} has bins 1 to {bins}")
        cid = uuid.uuid4().hex
        iat = int(time.time())
        exp = iat + self.command_ttl_s
        out = self.store.add_command(cid, kiosk, op, args, exp, actor, note) if record else None
        rc = self._publish(kiosk, key, cid, op, args, iat, exp, actor)
        if rc != mqtt.MQTT_ERR_SUCCESS and record:
            self.store.update_command(cid, "failed", "not_sent", {"detail": mqtt.error_string(rc)}, "bridge")
            raise BridgeError(503, f"could not publish the command: {mqtt.error_string(rc)}")
        if record:
            self._sent_at[cid] = time.monotonic()
            self._tell("command", kiosk)
        return out if record else {"command_id": cid}

    def _publish(self, kiosk: str, key: bytes, cid: str, op: str, args: dict[str, Any], iat: int, exp: int,
                 actor: str | None) -> int:
        cmd = {"v": protocol.VERSION, "id": cid, "op": op, "iat": iat, "exp": exp, "args": args}
        if actor:
            cmd["by"] = actor
        cmd = protocol.sign(key, cmd)
        info = self.client.publish(f"kiosk/{kiosk}/cmd", json.dumps(cmd, separators=(",", ":"), ensure_ascii=False),
                                   qos=1, retain=False)
        return info.rc

    def flush_commands(self) -> list[dict[str, Any]]:
        """Publish the commands made inside store transactions (the command
        outbox), once each; returns them. A command that cannot go out ends
        failed (not_sent), so what waited on it (a code's claim, a bin held
        for a restock) is let go."""
        if self.client is None:
            return []
        sent = []
        for c in self.store.take_unsent(UNSENT_MAX_AGE_S):
            key = self.keys.get(c["kiosk"])
            rc = mqtt.MQTT_ERR_NO_CONN if key is None or not self.connected.is_set() else \
                self._publish(c["kiosk"], key, c["command_id"], c["op"], c["args"], c["iat"], c["exp"], c["actor"])
            if rc != mqtt.MQTT_ERR_SUCCESS:
                r = self.store.update_command(c["command_id"], "failed", "not_sent",
                                              {"detail": mqtt.error_string(rc)}, "bridge")
                if r and r[1]:
                    self._finished(r[0])
                continue
            self._sent_at[c["command_id"]] = time.monotonic()
            self._tell("command", c["kiosk"])
            sent.append(c)
        return sent


def bin_count(k: dict[str, Any]) -> int | None:
    snap = (k.get("birth") or {}).get("snap") or {}
    total = 0
    for c in snap.get("carousels") or []:
        if isinstance(c, dict) and isinstance(c.get("bins"), int):
            total += c["bins"]
        else:
            return None
    return total or None
