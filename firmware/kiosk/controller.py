# The kiosk controller: owns the hardware, enforces the interlocks and runs
# one physical operation at a time (pickup, restock, service actions) as an
# explicit state machine. Every fact is journaled before anyone is told;
# nothing here trusts the network for safety.
import asyncio
import time
from micropython import const
from kiosk import ops, store
from kiosk.lock import LockRefused
from kiosk.auth import signable
from kiosk.ops import Op, QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, TIMED_OUT, REJECTED, CANCELLED

STOCK = "stock.json"
_MONITOR_MS = const(20)
_POLL_MS = const(50)
_QUEUE_MAX = const(4)
_RECENT_MAX = const(16)
_HEALTHY_MS = const(2000)   # at most this stale a heartbeat still counts as healthy

# Operation kinds and the argument each needs (name: type).
PHYSICAL = {
    "pickup": {"order": str, "bin": int},
    "restock": {"order": str, "bin": int},
    "home": {},
    "jog": {"bins": int},
    "selftest": {},
    "unlock": {"door": str},
}
IMMEDIATE = {
    "service_start": {"session": str},
    "service_end": {},
    "clear_excursion": {"excursion": str},
    "cancel": {"target": str},
    "verify_bin": {"bin": int, "present": bool},
}
_NEEDS_SERVICE = ("restock", "jog", "selftest", "unlock", "verify_bin")


class Refused(Exception):
    """A request the interlocks or the rules refuse; code says why."""

    def __init__(self, code, detail=None):
        super().__init__(code)
        self.code = code
        self.detail = detail


class Controller:
    def __init__(self, board, cfg, journal, carousels, locks, sensors, climate, wdt=None, wdt_ms=8000,
                 recovered=None):
        self.board = board
        self.cfg = cfg
        self.policies = cfg.policies
        self.journal = journal
        self.carousels = carousels          # list of stepper.Carousel, in bin order
        self._bins = [c["bins"] for c in board["carousels"]]
        self.locks = locks                  # {"pickup": DoorLock, "service": DoorLock}
        self.sensors = sensors
        self.climate = climate
        self.wdt = wdt
        # The watchdog is fed only while the monitor (the loop that keeps the
        # doors and the motor safe) is seen running well inside its timeout.
        self._healthy_ms = min(_HEALTHY_MS, wdt_ms // 2)
        saved = store.read_json(STOCK, {})
        self.stock = saved.get("bins", {})            # bin (str) -> order id
        self.unverified = saved.get("unverified", [])  # bins a reset left uncertain
        self.op = None
        self.queue = []
        self.recent = []                    # (id, state, reason) of finished operations
        self.service = None                 # (session id, deadline ticks) while a session is open
        self.faults = {}                    # fault code -> detail, until cleared by a good action
        self.listeners = []                 # called with (seq) after each journaled event
        self.reply = None                   # reply(op_id, state, info) for the host link
        self.heartbeat = time.ticks_ms()
        self._wake = asyncio.Event()
        self._sampling = asyncio.Lock()
        self._motion = None
        self._tasks = []
        self._runner_task = None
        self.stopped = False
        self._recover(recovered)

    # -- journal first, then tell ----------------------------------------
    def event(self, kind, fields):
        seq = self.journal.append(kind, signable(fields))
        for cb in self.listeners:
            cb(seq)
        return seq

    def _tell(self, op, state, info=None):
        if self.reply:
            self.reply(op.id if isinstance(op, Op) else op, state, info or {})

    # -- bins ------------------------------------------------------------
    def bin_count(self):
        return sum(self._bins)

    def _locate(self, bin_no):
        """Bins are numbered from 1 across carousels, as labelled."""
        i = bin_no - 1
        for c, n in zip(self.carousels, self._bins):
            if 0 <= i < n:
                return c, i
            i -= n
        raise Refused("bad_bin", "bins are 1..%d" % self.bin_count())

    def stocked_bins(self):
        return sorted(int(b) for b in self.stock)

    # -- interlocks (no command can override these) -----------------------
    def doors_secure(self):
        for lk in self.locks.values():
            if not lk.secure():
                return False
        return True

    def _check_motion(self):
        if not self.doors_secure():
            raise Refused("door_not_secure", "the carousel never moves while a door is open or unlocked")

    def _check_unlock(self, door):
        if door not in self.locks:
            raise Refused("bad_door")
        for name, lk in self.locks.items():
            if name != door and not lk.secure():
                raise Refused("other_door_open", "one door unlocked at a time")
        if self._motion is not None:
            raise Refused("carousel_moving")

    # -- requests ---------------------------------------------------------
    def submit(self, op_id, kind, args):
        """Accept or refuse one request. Refusals are journaled and answered;
        immediate requests finish here; physical ones are queued."""
        try:
            self._validate(op_id, kind, args)
            if kind in _NEEDS_SERVICE and not self.in_service():
                raise Refused("no_service_session", "%s needs an authorised service session" % kind)
            if kind in IMMEDIATE:
                info = self._immediate(kind, args)
                self._remember(op_id, SUCCEEDED, None)
                self._tell(op_id, SUCCEEDED, info)
                return SUCCEEDED
            if len(self.queue) >= _QUEUE_MAX:
                raise Refused("busy")
            op = Op(op_id, kind, args, self.journal.boot)
            self.queue.append(op)
            if kind in ops.DOOR_CYCLE:   # on flash before the host hears "queued"
                ops.save_waiting(self.queue, self.journal.last_seq)
            self._tell(op, QUEUED)
            self._wake.set()
            return QUEUED
        except Refused as r:
            self.refuse(op_id, kind, r.code, r.detail)
            return REJECTED

    def refuse(self, op_id, kind, code, detail=None):
        f = {"id": op_id, "op": kind, "why": code}
        if detail:
            f["detail"] = detail
        self.event("refused", f)
        self._remember(op_id, REJECTED, code)
        self._tell(op_id, REJECTED, {"reason": code, "detail": detail})

    def _validate(self, op_id, kind, args):
        if not isinstance(op_id, str) or not op_id or len(op_id) > 64:
            raise Refused("bad_id")
        for rid, _, _ in self.recent:
            if rid == op_id:
                raise Refused("duplicate")
        if (self.op and self.op.id == op_id) or any(q.id == op_id for q in self.queue):
            raise Refused("duplicate")
        spec = PHYSICAL[kind] if kind in PHYSICAL else IMMEDIATE.get(kind)
        if spec is None:
            raise Refused("unknown_op")
        if not isinstance(args, dict):
            raise Refused("bad_args")
        for name in args:
            if name not in spec:
                raise Refused("bad_args", "unexpected %s" % name)
        for name, typ in spec.items():
            v = args.get(name)
            if not isinstance(v, typ) or (typ is int and isinstance(v, bool)) or (typ is str and not 0 < len(v) <= 64):
                raise Refused("bad_args", "%s must be %s" % (name, {str: "a string", int: "an integer", bool: "true or false"}[typ]))
        if "bin" in spec:
            self._locate(args["bin"])

    def _remember(self, op_id, state, reason):
        self.recent.append((op_id, state, reason))
        if len(self.recent) > _RECENT_MAX:
            self.recent.pop(0)

    def in_service(self):
        s = self.service
        if s and time.ticks_diff(s[1], time.ticks_ms()) <= 0:
            self.service = None
            self.event("service", {"state": "expired", "session": s[0]})
        return self.service is not None

    def _immediate(self, kind, args):
        if kind == "service_start":
            ms = self.policies["service_session_max_s"] * 1000
            self.service = (args["session"], time.ticks_add(time.ticks_ms(), ms))
            self.event("service", {"state": "started", "session": args["session"]})
            return {"expires_s": ms // 1000}
        if kind == "service_end":
            if self.service:
                self.event("service", {"state": "ended", "session": self.service[0]})
            self.service = None
            return {}
        if kind == "clear_excursion":
            ev = self.climate.clear(args["excursion"])
            if not ev:
                raise Refused("unknown_excursion")
            self.event("temp", ev)
            self.climate.save()
            return {}
        if kind == "cancel":
            return self._cancel(args["target"])
        if kind == "verify_bin":
            return self._verify_bin(args["bin"], args["present"])
        return {}

    # -- stock and what a reset leaves uncertain ----------------------------
    def _save_stock(self):
        store.write_json(STOCK, {"bins": self.stock, "unverified": self.unverified})

    def _verify_bin(self, b, present):
        """A technician looked into a bin a reset left uncertain (or any bin)
        and says whether the order is still there."""
        key = str(b)
        if not present and key in self.stock:
            del self.stock[key]
        if b in self.unverified:
            self.unverified.remove(b)
        self._save_stock()
        self.event("stock", {"bin": b, "ev": "verified", "present": present, "order": self.stock.get(key)})
        return {"bin": b, "present": present}

    def _recover(self, gone):
        """Settle the stock after a reset cut operations short: released
        medicine left its bin; an unknown outcome leaves the bin refused for
        pickup until a technician verifies it. Never re-run an operation.
        One whose pickup or restock record was journaled already changed
        the stock."""
        for g in gone or ():
            self._recover_one(g)

    def _recover_one(self, gone):
        if gone.get("kind") not in ("pickup", "restock") or gone.get("recorded"):
            return
        b = gone.get("args", {}).get("bin")
        if not isinstance(b, int):
            return
        out = gone.get("outcome")
        if gone["kind"] == "pickup" and out == "released":
            self.stock.pop(str(b), None)
            self.event("pickup", {"id": gone["id"], "order": gone["args"].get("order"), "bin": b, "recovered": True})
        elif out != "not_released" and b not in self.unverified:
            self.unverified.append(b)
            self.event("stock", {"bin": b, "ev": "unverified", "after": gone["id"]})
        self._save_stock()

    def _cancel(self, target):
        for op in self.queue:
            if op.id == target:
                self.queue.remove(op)
                self._finish(op, CANCELLED, "cancelled")
                return {"cancelled": target}
        if self.op and self.op.id == target and self._runner_task is not None:
            self._runner_task.cancel()
            return {"cancelling": target}
        raise Refused("unknown_target")

    # -- running operations -------------------------------------------------
    def _settled(self):
        for lk in self.locks.values():
            if lk.door() == "unknown" or lk.bolt() == "unknown":
                return False
        return True

    async def runner(self):
        # After boot, door and bolt inputs need one debounce period before
        # they are known; until then nothing may move or unlock.
        await self._until(self._settled, 5000)
        while not self.stopped:
            if not self.queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            op = self.queue.pop(0)
            self.op = op
            op.state = IN_PROGRESS
            if op.kind in ops.DOOR_CYCLE:   # op.json first, then out of the waiting list
                seq = self.journal.last_seq
                op.persist(seq)
                ops.save_waiting(self.queue, seq)
            self._tell(op, IN_PROGRESS)
            self._runner_task = asyncio.create_task(self._run(op))
            try:
                await self._runner_task
            except asyncio.CancelledError:
                await self._safe_stop()
                self._finish(op, CANCELLED, "cancelled")
            self._runner_task = None
            self.op = None

    async def _run(self, op):
        try:
            info = await getattr(self, "_op_" + op.kind)(op, op.args)
            self._finish(op, SUCCEEDED, None, info)
        except Refused as r:
            self.event("refused", {"id": op.id, "op": op.kind, "why": r.code})
            self._finish(op, REJECTED, r.code)
        except OpTimeout as t:
            self._finish(op, TIMED_OUT, t.args[0])
        except OpFailed as f:
            self._finish(op, FAILED, f.args[0])
        except Exception as e:  # a driver fault: safe state, honest report
            code = getattr(e, "code", None) or "error"
            self._fault(code, str(e))
            await self._safe_stop()
            self._finish(op, FAILED, code)

    def _finish(self, op, state, reason, info=None):
        """The terminal record is journaled before the operation leaves
        flash: a reset in between closes it once, from the journal."""
        op.finish(state, reason)
        f = {"id": op.id, "op": op.kind, "state": state}
        if reason:
            f["reason"] = reason
        if op.kind in ("pickup", "restock"):
            f["order"] = op.args["order"]
            f["bin"] = op.args["bin"]
            f["opened"] = op.opened
        self.event("op", f)
        if op.kind in ops.DOOR_CYCLE:
            if op is self.op:
                ops.done()
            else:   # cancelled while waiting
                ops.save_waiting(self.queue, self.journal.last_seq)
        self._remember(op.id, state, reason)
        out = dict(info or {})
        if reason:
            out["reason"] = reason
        self._tell(op, state, out)

    def _step(self, op, step):
        op.step = step
        if op.kind in ops.DOOR_CYCLE:
            op.persist(self.journal.last_seq)
        self._tell(op, IN_PROGRESS, {"step": step})

    def _fault(self, code, detail):
        self.faults[code] = detail
        self.event("fault", {"code": code, "detail": detail})

    async def _safe_stop(self):
        """Locks de-energised, motion stopped, motor disabled."""
        m = self._motion
        if m is not None:
            m.cancel()
            self._motion = None
        for c in self.carousels:
            c.disable()
        for lk in self.locks.values():
            if lk.energized():
                lk.lock()
        await asyncio.sleep_ms(0)

    # -- motion ---------------------------------------------------------
    async def _motor(self, coro, what):
        """Run one carousel motion as its own task, so the monitor can stop it
        the instant a door stops being secure."""
        self._check_motion()
        self.event("motor", {"ev": "start", "what": what})
        self._motion = asyncio.create_task(coro)
        try:
            await self._motion
        except asyncio.CancelledError:
            self._motion = None
            if not self.doors_secure():
                self.event("motor", {"ev": "stopped", "why": "door_not_secure"})
                raise OpFailed("door_not_secure")
            raise
        except Exception as e:
            self._motion = None
            code = getattr(e, "code", "motor_fault")
            self._fault(code, what)
            raise OpFailed(code)
        self._motion = None
        self.event("motor", {"ev": "done", "what": what})

    async def _home_all(self):
        for c in self.carousels:
            await self._motor(c.home(), "home " + c.name)
        self.faults.pop("home_not_found", None)
        self.faults.pop("home_stuck", None)
        self.faults.pop("position_lost", None)

    async def _bring(self, op, bin_no):
        c, local = self._locate(bin_no)
        if not c.homed:
            self._step(op, "homing")
            await self._home_all()
        self._step(op, "moving")
        await self._motor(c.move_to_bin(local), "bin %d" % bin_no)

    # -- the door cycle shared by pickup, restock and service unlock --------
    async def _door_cycle(self, op, door):
        self._check_unlock(door)
        lk = self.locks[door]
        pol = self.policies
        self._step(op, "unlocking")
        try:
            ms = lk.unlock(pol["door_open_timeout_s"] * 1000)
        except LockRefused as e:
            raise Refused("lock_" + e.code)
        self._step(op, "waiting_open")
        if not await self._until(lambda: lk.door() == "open", ms):
            lk.lock()
            raise OpTimeout("door_not_opened")
        op.opened = True
        lk.lock()   # de-energise at once: the latch bolt catches when the door shuts
        self._step(op, "waiting_close")
        limit = pol["door_held_open_s"] * 1000 * 5
        if not await self._until(lambda: lk.door() == "closed", limit):
            raise OpFailed("door_left_open")
        self._step(op, "verifying")
        if not await self._until(lambda: lk.bolt() == "engaged", pol["relock_verify_s"] * 1000):
            raise OpFailed("bolt_not_engaged")

    async def _until(self, cond, ms):
        deadline = time.ticks_add(time.ticks_ms(), ms)
        while not cond():
            if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                return False
            await asyncio.sleep_ms(_POLL_MS)
        return True

    # -- operations ---------------------------------------------------------
    async def _op_pickup(self, op, a):
        b = a["bin"]
        held = self.policies["hold_pickups_on_excursion"] and self.climate.pickups_held()
        if held:
            raise Refused("excursion_hold")
        if self.in_service():
            raise Refused("service_in_progress")
        have = self.stock.get(str(b))
        if have is None:
            raise Refused("bin_empty")
        if have != a["order"]:
            raise Refused("bin_mismatch")
        if b in self.unverified:
            raise Refused("bin_unverified", "a reset left this bin uncertain; a technician must verify it")
        await self._bring(op, b)
        await self._door_cycle(op, "pickup")
        del self.stock[str(b)]
        self._save_stock()
        self.event("pickup", {"id": op.id, "order": a["order"], "bin": b})
        return {"bin": b}

    async def _op_restock(self, op, a):
        b = a["bin"]
        if str(b) in self.stock:
            raise Refused("bin_full")
        await self._bring(op, b)
        await self._door_cycle(op, "service")
        self.stock[str(b)] = a["order"]
        if b in self.unverified:
            self.unverified.remove(b)
        self._save_stock()
        self.event("restock", {"id": op.id, "order": a["order"], "bin": b})
        return {"bin": b}

    async def _op_unlock(self, op, a):
        await self._door_cycle(op, a["door"])
        return {}

    async def _op_home(self, op, a):
        self._step(op, "homing")
        await self._home_all()
        return {}

    async def _op_jog(self, op, a):
        c = self.carousels[0]
        if not c.homed:
            raise Refused("not_homed")
        n = self._bins[0]
        target = (c.bin_at_door() + a["bins"]) % n
        self._step(op, "moving")
        await self._motor(c.move_to_bin(target), "jog %d" % a["bins"])
        return {"bin": target + 1}

    async def _op_selftest(self, op, a):
        from kiosk import selftest
        return await selftest.run(self, op)

    # -- background tasks -----------------------------------------------------
    async def monitor(self):
        """Every few ms: debounce the door and lock inputs, journal what they
        report, stop the carousel if a door stops being secure, and prove the
        loop is alive (the watchdog is fed only from fresh heartbeats)."""
        while not self.stopped:
            now = time.ticks_ms()
            for name, lk in self.locks.items():
                ev = lk.update(now)
                while ev is not None:
                    self.event("door", {"door": name, "ev": ev})
                    ev = lk.next_event()
            if self._motion is not None and not self.doors_secure():
                self._motion.cancel()
            self.heartbeat = now
            await asyncio.sleep_ms(_MONITOR_MS)

    async def sampler(self):
        """Sample every sensor on a fixed period; climate state is saved to
        flash every ten minutes and whenever an alarm changes."""
        period = self.policies["sample_period_s"] * 1000
        saved = time.ticks_ms()
        while not self.stopped:
            t0 = time.ticks_ms()
            await self.sample()
            now_s = int(time.time())
            changed = False
            for name, val in self.sensors.values().items():
                for ev in self.climate.add(name, val[0], val[1], now_s, self.stocked_bins):
                    self.event("temp", ev)
                    changed = True
            if changed or time.ticks_diff(time.ticks_ms(), saved) > 600000:
                self.climate.save()
                saved = time.ticks_ms()
            left = period - time.ticks_diff(time.ticks_ms(), t0)
            await asyncio.sleep_ms(left if left > 0 else 0)

    async def sample(self):
        """One round of sensor readings; the sampler and the self-test share
        the bus, one round at a time."""
        async with self._sampling:
            events = await self.sensors.sample()
        for ev in events:
            self.event("sensor", {"sensor": ev[1], "ev": ev[0], "code": ev[2]})
        return events

    async def watchdog_feeder(self):
        period = self._healthy_ms // 2
        while not self.stopped:
            if self.wdt and time.ticks_diff(time.ticks_ms(), self.heartbeat) < self._healthy_ms:
                self.wdt.feed()
            await asyncio.sleep_ms(period)

    def start(self):
        """Start the control tasks. Locks are already de-energised and motors
        disabled by the drivers' constructors."""
        for coro in (self.monitor(), self.runner(), self.sampler(), self.watchdog_feeder()):
            self._tasks.append(asyncio.create_task(coro))

    async def stop(self):
        """Stop every task and leave the hardware safe (Ctrl-C, shutdown)."""
        self.stopped = True
        for t in self._tasks:
            t.cancel()
        await self._safe_stop()

    # -- what the host and the REPL see -----------------------------------------
    def snapshot(self):
        return {
            "homed": all(c.homed for c in self.carousels),
            "bin_at_door": self._bin_at_door(),
            "doors": {n: lk.state() for n, lk in self.locks.items()},
            "carousels": [c.state() for c in self.carousels],
            "sensors": self.sensors.state(),
            "climate": self.climate.summary(),
            "stock": self.stock,
            "unverified": self.unverified,
            "op": None if self.op is None else {"id": self.op.id, "kind": self.op.kind, "step": self.op.step},
            "queue": [q.id for q in self.queue],
            "service": self.service is not None,
            "faults": self.faults,
        }

    def _bin_at_door(self):
        base = 1
        for c, n in zip(self.carousels, self._bins):
            b = c.bin_at_door()
            if b is not None:
                return base + b
            base += n
        return None


class OpTimeout(Exception):
    pass


class OpFailed(Exception):
    pass
