# The kiosk's link to its host: MQTT over a non-blocking socket, pumped by
# one asyncio task in short synchronous steps, so the control loop is never
# held up by the network, whether the broker is slow, dead or restarting.
# At rest the task wakes every tick_ms to read the socket and allocates
# nothing doing so: garbage made at rest is collected at a moment nobody
# chooses, the middle of a carousel move included.
# umqtt.simple encodes the packets (kiosk/mqttio.py), kiosk/conn.py moves
# the bytes; this module keeps the session alive (pings, reconnect with
# backoff and jitter, a will) and runs the protocol of docs/protocol.md:
# birth, the outbox of journal events, host acks, commands through the
# gate, replies and telemetry.
import asyncio
import binascii
import gc
import os
import time
from micropython import const
from kiosk import clock
from kiosk.hw import net
from kiosk.link import mqttio
from kiosk.link.conn import Conn
from kiosk.link.gate import Gate
from kiosk.link.mqttio import Wire, pub_size
from kiosk.link.outbox import Outbox
from kiosk.link.proto import Proto
from kiosk.link.refusals import Refusals
from kiosk.contract import K_REFUSED

_REPLIES = const(16)  # replies kept while they cannot be sent
_RESEND_MAX = const(1000)  # records one resend request may ask for
_BIRTH_SEQ = const(-1)
_BURST = const(8)  # packets handled per step
_SILENCE_MS = const(30000)  # the link task beats at least this often (see _run)
_NAP_MS = const(1000)  # longest sleep between beats while waiting to reconnect


class Drop(Exception):
    """End this connection; the argument says why."""


class Link:
    def __init__(self, cfg, journal, ctl, fw="", board="", readings=None, window=8,
                 rx_size=1536, tx_size=2048, seen_path="seen.json", tick_ms=10,
                 backoff_ms=(1000, 60000), connect_timeout_ms=10000,
                 ack_timeout_ms=30000):
        """cfg: kiosk.config.Config; ctl: the controller (submit, snapshot,
        listeners, reply, event); readings() -> {sensor: (celsius, rh)} for
        telemetry (default ctl.sensors.values())."""
        b = cfg.broker
        tls = b.get("tls", False)
        self.conn = Conn(b.get("host"), b.get("port") or (8883 if tls else 1883), tls, b.get("ca"))
        self.ka = b.get("keepalive_s") or 30
        self.wifi = cfg.wifi
        self.tele_ms = cfg.policies.get("telemetry_period_s", 60) * 1000
        key = cfg.key_bytes()
        self.j = journal
        self.ctl = ctl
        self.p = Proto(cfg.kiosk_id, key, fw, board, journal.id)
        self.wire = Wire(cfg.kiosk_id.encode(), self.ka, b.get("user"), b.get("password"),
                         rx_size, tx_size)
        self.wire.set_callback(self._on_msg)
        self.ms = self.wire.sock
        self.box = Outbox(journal, window, ack_timeout_ms)
        self.refusals = Refusals(self.event, journal)  # journals refusals within a budget
        self.gate = Gate(key, cfg.policies["command_max_age_s"], self.refusals, ctl.submit,
                         self.reply, {"resend": self._resend}, seen_path)
        self.readings = readings
        # attach(seq) -> fields sent with record seq's first publish and
        # never journaled (a scanned code's text), or None.
        self.attach = None
        self.handlers = {}  # extra topic (bytes) -> handler(payload)
        self.replies = []
        self.tick_ms = tick_ms
        self._bo = backoff_ms
        self._conn_ms = connect_timeout_ms
        self._due = False  # work arrived (a record, a reply): no idle sleep
        self._tasks = []
        self._task = None  # the supervisor's record of _run, for its beats
        self._stopping = False
        self._birth = False
        self.conn_id = ("", 0)  # this connection's nonce and number this boot: in its birth and its will
        self.up = False
        self.connects = self.drops = 0
        self.last_error = None
        self.max_stall_us = 0
        self.replies_dropped = 0
        self.rx_msgs = 0
        self.retained_dropped = 0  # retained messages on cmd/ack, never acted on

    # -- what the rest of the firmware calls --------------------------------
    def start(self, supervisor=None):
        """Start the link's tasks, under the app's supervisor when given
        (kiosk.core.supervisor: restarted if they die, the watchdog fed
        only while they beat)."""
        self.ctl.reply = self.reply
        self.ctl.listeners.append(self.notify)
        if not self.conn.host:
            self.last_error = "no_broker"  # config.json has no broker: stay offline
            return
        if supervisor is not None:
            supervisor.add("link", self._run, _SILENCE_MS)
            return
        self._tasks = [asyncio.create_task(self._run())]

    def stop(self, why="stopped"):
        """Say goodbye (retained death, DISCONNECT) if connected, then end."""
        self._stopping = True
        if self.up:
            try:
                self.ms.reset()
                self.wire.publish(self.p.t_state, self.p.death(self.j.boot, self.conn_id, why),
                                  self.box.pid(), 1, True)
                self.wire.disconnect()
                self.conn.send(self.ms.txmv[:self.ms.tn])
            except Exception:
                pass
        self.up = False
        self.conn.close()
        for t in self._tasks:
            t.cancel()

    def notify(self, seq):
        """Controller listener: a record was journaled; send it now."""
        self._due = True

    def event(self, kind, fields):
        """Journal an event of the link's own (refusals, clock steps)."""
        ev = getattr(self.ctl, "event", None)
        if ev:
            return ev(kind, fields)
        seq = self.j.append(kind, fields)
        self._due = True
        return seq

    def reply(self, op_id, state, info):
        """Controller and gate: tell the host how a command is doing.
        Best effort: the journal has the outcome for certain."""
        try:
            r = self.p.reply(op_id, state, info)
        except Exception:
            return
        if len(self.replies) >= _REPLIES:
            self.replies.pop(0)
            self.replies_dropped += 1
        self.replies.append(r)
        self._due = True

    def subscribe(self, suffix, handler):
        """Also take messages on kiosk/<id>/<suffix> (QoS 0). Call before
        start()."""
        self.handlers[self.p.prefix + suffix.encode()] = handler

    def stats(self):
        return {"connected": self.up, "connects": self.connects, "drops": self.drops,
                "last_error": self.last_error, "max_stall_us": self.max_stall_us,
                "inflight": self.box.n, "sent": self.box.sent, "pubacks": self.box.pubacks,
                "acked": self.j.acked, "pending": self.box.unacked(),
                "rssi": net.rssi(), "clock_offset_s": clock.offset(),
                "refusals_coalesced": self.refusals.coalesced,
                "retained_dropped": self.retained_dropped}

    # -- the tasks ---------------------------------------------------------------
    def _stall(self, t0):
        d = time.ticks_diff(time.ticks_us(), t0)
        if d > self.max_stall_us:
            self.max_stall_us = d

    def _fail(self, e):
        if isinstance(e, OSError):
            self.last_error = "os_error %s" % (e.args[0] if e.args else "")
        elif e.args and isinstance(e.args[0], str):
            self.last_error = e.args[0]
        else:
            self.last_error = type(e).__name__
        if self.up:
            self.drops += 1
        self.up = False

    async def _run(self, task=None):
        delay = self._bo[0]
        fails = 0
        self.conn.close()           # a restart after a death starts clean
        self._task = task
        while not self._stopping:
            self._beat()
            self._chores()
            t0 = time.ticks_us()
            ok = net.ready(self.wifi)
            if ok:
                try:
                    self.conn.open()
                except Exception as e:
                    self._fail(e)
                    ok = None
            else:
                self.last_error = "wifi_down"
            self._stall(t0)
            if ok is False:
                await asyncio.sleep_ms(500)
                continue
            if ok and await self._session():
                delay = self._bo[0]
                fails = 0
            else:
                fails += 1
                if fails % 4 == 0:
                    self.conn.forget()  # look the broker up again
            self.up = False
            self.conn.close()
            if self._stopping:
                break
            r = os.urandom(2)
            wait = delay // 2 + (r[0] << 8 | r[1]) % (delay // 2 + 1)
            delay = min(delay * 2, self._bo[1])
            while wait > 0 and not self._stopping:
                self._beat()
                self._chores()
                await asyncio.sleep_ms(min(wait, _NAP_MS))
                wait -= _NAP_MS

    def _beat(self):
        if self._task:
            self._task.beat()

    def _chores(self):
        """Now and then, connected or not (allocation-free at rest):
        coalesced refusals to the journal, the journal's own upkeep."""
        self.refusals.tick()
        self.j.tick()

    async def _session(self):
        """One connection, until it fails. True if it got as far as CONNACK."""
        got = False
        try:
            self._t_open = time.ticks_ms()
            while True:
                self._beat()
                t0 = time.ticks_us()
                ok = self.conn.connected()
                self._stall(t0)
                if ok:
                    break
                if time.ticks_diff(time.ticks_ms(), self._t_open) > self._conn_ms:
                    raise Drop("connect_timeout")
                await asyncio.sleep_ms(self.tick_ms)
            t0 = time.ticks_us()
            # A fresh nonce ties this connection's birth to its will: an old
            # will replayed later names another connection and is ignored.
            self.conn_id = (binascii.hexlify(os.urandom(8)).decode(), self.conn_id[1] + 1)
            self.wire.connect(self.p.t_state, self.p.death(self.j.boot, self.conn_id))
            self._rx_t = self._tx_t = time.ticks_ms()
            self._tele_t = time.ticks_add(self._rx_t, -self.tele_ms)
            self._stall(t0)
            while not self._stopping:
                self._beat()
                self._chores()
                t0 = time.ticks_us()
                busy = self._pump()
                self._stall(t0)
                got = got or self.up
                # asyncio.sleep_ms allocates nothing (an Event's wait()
                # would, every tick)
                if busy:
                    await asyncio.sleep_ms(0)
                elif self.box.n or self.ms.tn or self._due:  # PUBACKs, socket room, new work
                    self._due = False
                    await asyncio.sleep_ms(1)
                else:
                    await asyncio.sleep_ms(self.tick_ms)
        except Exception as e:
            self._fail(e)
        return got

    # -- one step ---------------------------------------------------------------
    def _pump(self):
        """Move bytes, handle what came in, send what is due. Returns True
        while there is more to do at once (not while the socket is full)."""
        ms = self.ms
        now = time.ticks_ms()
        if not net.ready(self.wifi):
            raise Drop("wifi_down")
        if ms.tn:
            self._out()
        ms.compact()
        if ms.rn < len(ms.rx):
            # A slice makes a new memoryview: only when a packet is half in.
            n = self.conn.recv_into(ms.rxmv if ms.rn == 0 else ms.rxmv[ms.rn:])
            if n:
                ms.rn += n
                self._rx_t = now
        n = 0
        while n < _BURST and self._packet():
            n += 1
        if self.up:
            self._send(now)
            if time.ticks_diff(now, self._tx_t) >= self.ka * 500 and ms.room() >= 2:
                self.wire.ping()
                self._tx_t = now
        elif time.ticks_diff(now, self._t_open) > self._conn_ms:
            raise Drop("connack_timeout")
        if time.ticks_diff(now, self._rx_t) > self.ka * 1500:
            raise Drop("keepalive_timeout")
        moved = 0
        if ms.tn:
            moved = self._out()
        return n == _BURST or (ms.tn > 0 and moved > 0)

    def _out(self):
        ms = self.ms
        n = self.conn.send(ms.txmv[:ms.tn])
        if n:
            ms.sent(n)
            self._tx_t = time.ticks_ms()
        return n

    def _packet(self):
        w = self.wire
        k = w.next()
        if k == mqttio.NOTHING:
            return False
        if k == mqttio.PUBACK:
            self.box.puback(w.arg)
        elif k == mqttio.MESSAGE:
            self.rx_msgs += 1
        elif k == mqttio.CONNACK:
            if w.arg:
                raise Drop("connack_refused %d" % w.arg)
            self.up = True
            self.connects += 1
            self.last_error = None
            self.box.restart()
            self._birth = True
        elif k == mqttio.SUBACK:
            if w.arg == 0x80:
                raise Drop("subscribe_refused")
        elif k == mqttio.OVERSIZED:
            if w.retained and w.arg in (self.p.t_cmd, self.p.t_ack):
                self.retained_dropped += 1
            elif w.arg == self.p.t_cmd:
                self.gate.refuse("oversized")
            elif w.arg == self.p.t_ack and not w.retained:
                self.refusals(K_REFUSED, {"why": "oversized", "topic": "ack"})
        return True

    def _make(self, fn, *args):
        """Build a payload, or None when the heap is short just now (it is
        retried at the next step; nothing half-built reaches the wire)."""
        try:
            return fn(*args)
        except MemoryError:
            gc.collect()
            self.last_error = "no_memory"
            return None

    def _fits(self, topic, payload, extra=0):
        try:
            return self.ms.reserve(pub_size(topic, payload) + extra)
        except MemoryError:  # no room for a one-off buffer: later
            gc.collect()
            return False

    def _send(self, now):
        ms = self.ms
        p = self.p
        box = self.box
        w = self.wire
        if self._birth:
            if box.n >= box.window:
                return
            b = self._make(self._birth_msg)
            if b is None:  # the snapshot does not fit the heap: say so instead
                b = self._make(p.birth, self.j.boot, self.conn_id, {"error": "no_memory"},
                               self._journal_info(), self.alarms())
            if b is None or not self._fits(p.t_state, b, 96):
                return
            pid = box.pid()
            w.publish(p.t_state, b, pid, 1, True)
            box.track(pid, _BIRTH_SEQ)
            w.subscribe(p.t_cmd, 1, box.pid())
            w.subscribe(p.t_ack, 0, box.pid())
            for t in self.handlers:
                if ms.room() > len(t) + 8:
                    w.subscribe(t, 0, box.pid())
            self._birth = False
        while self.replies and self._fits(p.t_reply, self.replies[0]):
            w.publish(p.t_reply, self.replies.pop(0), box.pid(), 1)
        box.check_ack_timeout(now)
        while box.n < box.window:
            rec = box.peek()
            if rec is None or ms.room() < len(rec[1]) + 160 + len(p.id):
                break
            extra = None if rec[2] or self.attach is None else self.attach(rec[0])
            payload = self._make(p.event, rec[1], rec[2], extra)
            if payload is None or not self._fits(p.t_evt, payload):
                break
            box.pop()
            pid = box.pid()
            w.publish(p.t_evt, payload, pid, 1)
            box.track(pid, rec[0])
            box.sent += 1
        if time.ticks_diff(now, self._tele_t) >= self.tele_ms and ms.room() > 700:
            self._tele_t = now
            t = self._make(p.tele, self.j.boot, self._readings(), gc.mem_free(), self.stats(),
                           self.alarms(), {"full": self.j.full, "dropped": self.j.dropped},
                           {"id": self.j.id, "last": self.j.last_seq})
            if t is not None and self._fits(p.t_tele, t):
                w.publish(p.t_tele, t)

    def _birth_msg(self):
        try:
            snap = self.ctl.snapshot()
        except MemoryError:
            raise
        except Exception as e:
            snap = {"error": type(e).__name__}
        return self.p.birth(self.j.boot, self.conn_id, snap, self._journal_info(), self.alarms())

    def _journal_info(self):
        return self.j.info()

    def alarms(self):
        """Conditions the kiosk reports in every birth and telemetry, since
        its journal may not be able to carry them."""
        out = []
        if self.j.full:
            out.append("storage_full")
        if self.gate.closed():
            out.append("replay_memory_lost")
        return out

    def _readings(self):
        try:
            if self.readings:
                return self.readings()
            return self.ctl.sensors.values()
        except Exception:
            return {}

    # -- what comes in -------------------------------------------------------------
    def _on_msg(self, topic, msg):
        """umqtt's callback, for each whole PUBLISH received."""
        try:
            if self.wire.retained and (topic == self.p.t_cmd or topic == self.p.t_ack):
                # Commands and acks are never retained: a retained one is
                # junk someone left on the broker, delivered again at every
                # subscribe. Ignored (counted), never journaled again and again.
                self.retained_dropped += 1
            elif topic == self.p.t_cmd:
                self.gate.handle(msg)
            elif topic == self.p.t_ack:
                self._on_ack(msg)
            else:
                h = self.handlers.get(topic)
                if h:
                    h(msg)
        except Exception as e:
            self.last_error = "handler %s" % type(e).__name__

    def _on_ack(self, msg):
        r = self.p.check_ack(msg)
        if not isinstance(r, tuple) or r[0] > self.j.last_seq:
            self.refusals(K_REFUSED, {"why": r if isinstance(r, str) else "bad_ack",
                                      "topic": "ack"})
            return
        if self.box.host_ack(r[0]):
            clock.adjust(r[1], self.event)

    def _resend(self, cid, args):
        """Command op "resend" {"from": a, "to": b}: the host's gap request."""
        a = args.get("from")
        b = args.get("to")
        if (len(args) != 2 or not isinstance(a, int) or not isinstance(b, int)
                or isinstance(a, bool) or isinstance(b, bool)
                or a < 1 or b < a or b - a >= _RESEND_MAX):
            return None
        if not self.box.resend(a, b):
            return self.gate.refuse("busy", cid, "resend")
        # Say which of these records are gone for good, so the host stops
        # asking for them (they are in every birth too).
        lost = [[max(r[0], a), min(r[1], b)] for r in self.j.lost() if r[0] <= b and r[1] >= a]
        self.reply(cid, "succeeded", {"from": a, "to": b, "j": self.j.id, "lost": lost})
        self._due = True
        return "succeeded"
