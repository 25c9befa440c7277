# The kiosk controller: owns the hardware, enforces the interlocks and runs
# one physical operation at a time (pickup, restock, service actions) as an
# explicit state machine. Every fact is journaled before anyone is told;
# nothing here trusts the network for safety.
#
# What each operation does is in kiosk.core.operations, the stock book in
# kiosk.core.stock, operation records on flash in kiosk.core.jobs, the
# background tasks in kiosk.core.tasks; the operation table is the shared
# kiosk.contract.
import asyncio
import gc
import time
from micropython import const
from kiosk import contract
from kiosk.contract import (QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, TIMED_OUT, REJECTED, CANCELLED,
                            DOOR_CYCLE, IMMEDIATE, NEEDS_SERVICE, STOCK_MOVES, SCAN_REASONS, TEXT_MAX,
                            signable, K_FAULT, K_MOTOR, K_OP, K_REFUSED, K_SENSOR, K_SERVICE, K_STOCK, K_TEMP)
from kiosk.core import jobs, operations, tasks
from kiosk.core.jobs import Op, Refused, OpTimeout, OpFailed
from kiosk.core.scans import Scans
from kiosk.core.stock import Stock
from kiosk.core.supervisor import Supervisor

_POLL_MS = const(50)
_QUEUE_MAX = const(4)
_RECENT_MAX = const(16)
_HEALTHY_MS = const(2000)   # at most this stale a monitor heartbeat still counts as healthy
_RUNNER_SILENCE_MS = const(5000)
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false"}


def _check_arg(name, v, typ):
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)) \
            or (typ is str and not 0 < len(v) <= TEXT_MAX):
        raise Refused("bad_args", "%s must be %s" % (name, _TYPE_NAMES[typ]))


class Controller:
    def __init__(self, board, cfg, journal, carousels, locks, sensors, climate, wdt=None, wdt_ms=8000,
                 scanner=None, buttons=None):
        self.board = board
        self.cfg = cfg
        self.policies = cfg.policies
        self.journal = journal
        self.carousels = carousels          # list of stepper.Carousel, in bin order
        self._bins = [c["bins"] for c in board["carousels"]]
        self.locks = locks                  # {"pickup": DoorLock, "service": DoorLock}
        self.sensors = sensors
        self.climate = climate
        self.scanner = scanner              # hw.scanner.Scanner, or None on a board without one
        self.buttons = buttons or {}        # {name: hw.button.Button}
        self.wdt = wdt
        # The watchdog is fed only while every supervised task beats; the
        # monitor (the loop that keeps the doors and the motor safe) must
        # beat well inside the watchdog's timeout.
        self.healthy_ms = min(_HEALTHY_MS, wdt_ms // 2)
        self.supervisor = Supervisor(self._task_died, self.healthy_ms)
        self.stock = Stock()
        self.op = None
        self.queue = []
        self.recent = []                    # (id, state, reason) of finished operations
        self.service = None                 # (session id, deadline ticks, by) while a session is open
        self.faults = {}                    # fault code -> detail, until cleared by a good action
        self.listeners = []                 # called with (seq) after each journaled event
        self.reply = None                   # reply(op_id, state, info) for the host link
        self._wake = asyncio.Event()
        self._calm = asyncio.Event()       # set when a motion ends (quiet())
        self._sampling = asyncio.Lock()
        self._motion = None
        self._runner_task = None
        self.stopped = False
        self.scans = Scans(self.policies, self.event)

    # -- journal first, then tell ----------------------------------------
    def event(self, kind, fields):
        try:
            seq = self.journal.append(kind, signable(fields))
        except OSError:
            # The flash is full past its reserve: the record is counted
            # (journal.dropped) and the kiosk reports storage_full in its
            # births and telemetry; it goes on, safe, and never stops
            # guarding its doors for want of a record.
            return None
        for cb in self.listeners:
            cb(seq)
        return seq

    def _tell(self, op, state, info=None):
        if self.reply:
            self.reply(op.id if isinstance(op, Op) else op, state, info or {})

    # -- bins ------------------------------------------------------------
    def bin_count(self):
        return sum(self._bins)

    def bins_of(self, i):
        """How many bins carousel i holds."""
        return self._bins[i]

    def locate(self, bin_no):
        """(carousel, its own bin index) for a bin number: bins are numbered
        from 1 across carousels, as labelled."""
        i = bin_no - 1
        for c, n in zip(self.carousels, self._bins):
            if 0 <= i < n:
                return c, i
            i -= n
        raise Refused("bad_bin", "bins are 1..%d" % self.bin_count())

    # -- interlocks (no command can override these) -----------------------
    def doors_secure(self):
        for lk in self.locks.values():
            if not lk.secure():
                return False
        return True

    def check_unlock(self, door):
        """Refuse an unlock of door unless every other door is secure and
        nothing moves: one door unlocked at a time, never while moving."""
        if door not in self.locks:
            raise Refused("bad_door")
        for name, lk in self.locks.items():
            if name != door and not lk.secure():
                raise Refused("other_door_open", "one door unlocked at a time")
        if self._motion is not None:
            raise Refused("carousel_moving")

    def idle(self):
        """No operation running or waiting, nothing moving, every door shut
        and locked, no service session, no patient's scan waiting for its
        answer: a moment the kiosk may restart (a firmware update's switch,
        kiosk.link.ota)."""
        return (self.op is None and not self.queue and self._motion is None and self.scans.pending is None
                and not self.in_service() and self.doors_secure())

    def settled(self):
        """Every door and bolt input has been read through its debounce."""
        for lk in self.locks.values():
            if lk.door() == "unknown" or lk.bolt() == "unknown":
                return False
        return True

    # -- requests ---------------------------------------------------------
    def submit(self, op_id, kind, args, by=None, console=False):
        """Accept or refuse one request. Refusals are journaled and answered;
        immediate requests finish here; physical ones are queued. by names
        the person who asked (the host's `by`): it goes into every record
        the request leaves. console: asked at the kiosk's own REPL, by
        someone with their hands on the board, who may work in any open
        service session (the records say `console`, not whose session)."""
        try:
            self._validate(op_id, kind, args)
            if kind in NEEDS_SERVICE:
                if not self.in_service():
                    raise Refused("no_service_session", "%s needs an authorised service session" % kind)
                if self.service[2] != by and not console:
                    raise Refused("not_session_owner", "the service session is %s's" % self.service[2])
            if kind in IMMEDIATE:
                info = self._immediate(op_id, kind, args, by)
                self._remember(op_id, SUCCEEDED, None)
                self._tell(op_id, SUCCEEDED, info)
                return SUCCEEDED
            if len(self.queue) >= _QUEUE_MAX:
                raise Refused("busy")
            if self.journal.full:
                raise Refused("storage_full", "the flash is full: nothing moves or unlocks until there is room")
            if "scan" in args:   # a pickup answering a scan: only while that scan waits
                self.scans.claim(args["scan"])
            op = Op(op_id, kind, args, self.journal.boot, by)
            self.queue.append(op)
            if kind in DOOR_CYCLE:   # on flash before the host hears "queued"
                try:
                    jobs.save_waiting(self.queue, self.journal.last_seq)
                except OSError:
                    self.queue.remove(op)
                    raise Refused("storage_full", "the operation could not be kept on flash")
            self._tell(op, QUEUED)
            self._wake.set()
            return QUEUED
        except Refused as r:
            self.refuse(op_id, kind, code=r.code, detail=r.detail, by=by)
            return REJECTED

    def refuse(self, op_id, kind, code, detail=None, by=None):
        f = {"id": op_id, "op": kind, "why": code}
        if detail:
            f["detail"] = detail
        if by:
            f["by"] = by
        self.event(K_REFUSED, f)
        self._remember(op_id, REJECTED, code)
        self._tell(op_id, REJECTED, {"reason": code, "detail": detail})

    def _validate(self, op_id, kind, args):
        """The request against the shared operation table: a known kind,
        exactly its arguments, each of its type; a fresh id; a real bin."""
        if not isinstance(op_id, str) or not op_id or len(op_id) > TEXT_MAX:
            raise Refused("bad_id")
        for rid, _, _ in self.recent:
            if rid == op_id:
                raise Refused("duplicate")
        if (self.op and self.op.id == op_id) or any(q.id == op_id for q in self.queue):
            raise Refused("duplicate")
        spec = contract.op_args(kind)
        if spec is None:
            raise Refused("unknown_op")
        if not isinstance(args, dict):
            raise Refused("bad_args")
        extra = contract.OPTIONAL.get(kind) or {}
        for name in args:
            if name not in spec and name not in extra:
                raise Refused("bad_args", "unexpected %s" % name)
        for name, typ in spec.items():
            _check_arg(name, args.get(name), typ)
        for name, typ in extra.items():
            if name in args:
                _check_arg(name, args[name], typ)
        if "bin" in spec:
            self.locate(args["bin"])

    def _remember(self, op_id, state, reason):
        self.recent.append((op_id, state, reason))
        if len(self.recent) > _RECENT_MAX:
            self.recent.pop(0)

    def in_service(self):
        s = self.service
        if s and time.ticks_diff(s[1], time.ticks_ms()) <= 0:
            self.service = None
            self._service_event("expired", s)
        return self.service is not None

    def _service_event(self, state, s, by=None):
        """A service session's record: its id, the technician it is bound to
        (`owner`) and, when someone else ends it, who did (`by`)."""
        f = {"state": state, "session": s[0]}
        if s[2]:
            f["owner"] = s[2]
        if by and by != s[2]:
            f["by"] = by
        self.event(K_SERVICE, f)

    def _immediate(self, op_id, kind, args, by):
        if kind == "service_start":
            # The session is bound to the technician who opened it: only
            # their requests run in it (NEEDS_SERVICE, not_session_owner).
            ms = self.policies["service_session_max_s"] * 1000
            if self.service and self.in_service():
                self._service_event("ended", self.service, by)
            self.service = (args["session"], time.ticks_add(time.ticks_ms(), ms), by)
            self._service_event("started", self.service)
            return {"expires_s": ms // 1000}
        if kind == "service_end":
            if self.service:
                self._service_event("ended", self.service, by)
            self.service = None
            return {}
        if kind == "clear_excursion":
            ev = self.climate.clear(args["excursion"])
            if not ev:   # only an ended excursion can be cleared
                raise Refused("excursion_ongoing" if self.climate.ongoing(args["excursion"]) else "unknown_excursion")
            if by:
                ev["by"] = by
            self.event(K_TEMP, ev)
            self.climate.save()
            return {}
        if kind == "cancel":
            return self._cancel(args["target"], by)
        if kind == "scan_refused":
            if args["why"] not in SCAN_REASONS:
                raise Refused("bad_args", "why must be one of the scan reasons")
            self.scans.refused(args["scan"], args["why"], time.ticks_ms())
            return {"scan": args["scan"]}
        if kind == "verify_bin":
            b, present = args["bin"], args["present"]
            self.stock.verify(b, present)
            f = {"bin": b, "ev": "verified", "present": present, "order": self.stock.order_in(b)}
            if by:
                f["by"] = by
            self.event(K_STOCK, f)
            return {"bin": b, "present": present}
        return {}

    def _cancel(self, target, by=None):
        for op in self.queue:
            if op.id == target:
                self.queue.remove(op)
                op.cancelled_by = by
                self._finish(op, CANCELLED, "cancelled")
                return {"cancelled": target}
        if self.op and self.op.id == target and self._runner_task is not None:
            self.op.cancelled_by = by
            self._runner_task.cancel()
            return {"cancelling": target}
        raise Refused("unknown_target")

    # -- running operations -------------------------------------------------
    async def runner(self, task):
        """Run the queued operations one at a time, beating while it waits
        for work and while it watches the running operation."""
        # After boot, door and bolt inputs need one debounce period before
        # they are known; until then nothing may move or unlock.
        await self.until(self.settled, 5000)
        if self.op is not None:
            # A runner that died mid-operation left it behind: end it.
            op, self.op = self.op, None
            if self._runner_task is not None:
                self._runner_task.cancel()
                self._runner_task = None
            await self._safe_stop()
            self._finish_left(op)
        while not self.stopped:
            task.beat()
            if not self.queue:
                self._wake.clear()
                try:
                    await asyncio.wait_for_ms(self._wake.wait(), _RUNNER_SILENCE_MS // 2)
                except asyncio.TimeoutError:
                    pass
                continue
            op = self.queue.pop(0)
            self.op = op
            op.state = IN_PROGRESS
            if op.kind in DOOR_CYCLE:   # op.json first, then out of the waiting list
                seq = self.journal.last_seq
                op.persist(seq)
                jobs.save_waiting(self.queue, seq)
            self._tell(op, IN_PROGRESS)
            running = self._runner_task = asyncio.create_task(self._run(op))
            while not running.done():
                task.beat()
                await asyncio.sleep_ms(_POLL_MS)
            try:
                await running
            except asyncio.CancelledError:
                await self._safe_stop()
                self._finish(op, CANCELLED, "cancelled")
            self._runner_task = None
            self.op = None

    def _finish_left(self, op):
        self._fault("runner_died", "operation %s ended by a fault" % op.id)
        self._finish(op, FAILED, "runner_died")

    async def _run(self, op):
        try:
            info = await operations.RUN[op.kind](self, op, op.args)
            self._finish(op, SUCCEEDED, None, info)
        except Refused as r:
            f = {"id": op.id, "op": op.kind, "why": r.code}
            if op.by:
                f["by"] = op.by
            self.event(K_REFUSED, f)
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
        if op.kind in STOCK_MOVES:
            f["order"] = op.args["order"]
            f["bin"] = op.args["bin"]
            f["opened"] = op.opened
        if op.by:
            f["by"] = op.by
        if op.cancelled_by:
            f["cancelled_by"] = op.cancelled_by
        recorded = self.event(K_OP, f) is not None
        if op.kind in DOOR_CYCLE and recorded:   # not on flash: the next boot closes it from op.json
            try:
                if op is self.op:
                    jobs.done()
                else:   # cancelled while waiting
                    jobs.save_waiting(self.queue, self.journal.last_seq)
            except OSError:   # a full flash: the next boot reads the journal and closes nothing twice
                pass
        self._remember(op.id, state, reason)
        out = dict(info or {})
        if reason:
            out["reason"] = reason
        self._tell(op, state, out)

    def step(self, op, step):
        """An operation reached a step: on flash (door cycles), then told."""
        op.step = step
        if op.kind in DOOR_CYCLE:
            try:
                op.persist(self.journal.last_seq)
            except OSError:
                # The flash is full. Before the door was seen open nothing
                # has left: stop, safe (a step that cannot be kept must not
                # be taken). After, the medicine may be out: go on, so its
                # pickup record is journaled (the journal's reserve).
                if not op.opened:
                    raise OpFailed("storage_full")
        self._tell(op, IN_PROGRESS, {"step": step})

    async def until(self, cond, ms):
        """Wait until cond() holds; False if ms pass first."""
        deadline = time.ticks_add(time.ticks_ms(), ms)
        while not cond():
            if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                return False
            await asyncio.sleep_ms(_POLL_MS)
        return True

    def _fault(self, code, detail, **more):
        self.faults[code] = detail
        more["code"] = code
        more["detail"] = detail
        self.event(K_FAULT, more)

    def _task_died(self, name, err, pause_ms):
        """The supervisor's report of a task that died: journaled as a fault
        (it is restarted after pause_ms)."""
        gc.collect()            # a MemoryError may be why it died
        self._fault("task_died", "%s: %s: %s" % (name, type(err).__name__, err), task=name,
                    restart_ms=pause_ms)

    async def _safe_stop(self):
        """Locks de-energised, motion stopped, motor disabled."""
        self.stop_motion()
        for c in self.carousels:
            c.disable()
        for lk in self.locks.values():
            if lk.energized():
                lk.lock()
        await asyncio.sleep_ms(0)

    # -- motion ---------------------------------------------------------
    def moving(self):
        return self._motion is not None

    def stop_motion(self):
        m = self._motion
        if m is not None:
            m.cancel()
            self._motion = None

    async def motor(self, coro, what):
        """Run one carousel motion as its own task, so the monitor can stop it
        the instant a door stops being secure."""
        if not self.doors_secure():
            raise Refused("door_not_secure", "the carousel never moves while a door is open or unlocked")
        self.event(K_MOTOR, {"ev": "start", "what": what})
        self._quiet(True)
        self._motion = asyncio.create_task(coro)
        try:
            await self._motion
        except asyncio.CancelledError:
            self._motion = None
            self._quiet(False)
            if not self.doors_secure():
                self.event(K_MOTOR, {"ev": "stopped", "why": "door_not_secure"})
                raise OpFailed("door_not_secure")
            raise
        except Exception as e:
            self._motion = None
            self._quiet(False)
            code = getattr(e, "code", "motor_fault")
            self._fault(code, what)
            raise OpFailed(code)
        self._motion = None
        self._quiet(False)
        self.event(K_MOTOR, {"ev": "done", "what": what})

    def _quiet(self, on):
        """The motion quiet window. A move is timed by hardware (PIO/DMA,
        RMT) or by this CPU (software stepping), but on every board the CPU
        must not stall at the wrong moment: a flash write stops it with
        interrupts off for up to tens of ms, a 1-Wire read blocks the loop,
        a GC pass takes a few ms. So the heap is collected before the move,
        and the ack pointer's save, sensor rounds (the sampler waits for
        quiet()) and climate saves wait until it ends; then what waited is
        done. Records of events that happen during a move are still
        journaled at once: the journal comes first."""
        self.journal.quiet = on
        if on:
            gc.collect()
        else:
            self.journal.flush()
            self._calm.set()

    async def quiet(self):
        """Wait until no carousel moves."""
        while self._motion is not None:
            self._calm.clear()
            await self._calm.wait()

    async def home_all(self):
        for c in self.carousels:
            await self.motor(c.home(), "home " + c.name)
        self.faults.pop("home_not_found", None)
        self.faults.pop("home_stuck", None)
        self.faults.pop("position_lost", None)

    # -- background tasks -----------------------------------------------------
    async def sample(self):
        """One round of sensor readings; the sampler and the self-test share
        the bus, one round at a time. The bus transactions, which block the
        loop, wait for the quiet window (a conversion runs on its own)."""
        await self.quiet()
        async with self._sampling:
            events = await self.sensors.sample(self.quiet)
        for ev in events:
            self.event(K_SENSOR, {"sensor": ev[1], "ev": ev[0], "code": ev[2]})
        return events

    def start(self, wdt=None):
        """Start the control tasks under the supervisor, which feeds wdt (the
        controller's own watchdog if None) while they all beat. Locks are
        already de-energised and motors disabled by the drivers'
        constructors."""
        s = self.supervisor
        if not s.tasks:
            s.add("monitor", lambda t: tasks.monitor(self, t), self.healthy_ms,
                  backoff_ms=(100, 1000), critical=True)
            s.add("runner", self.runner, _RUNNER_SILENCE_MS, backoff_ms=(100, 5000), critical=True)
            s.add("sampler", lambda t: tasks.sampler(self, t), tasks.sampler_silence_ms(self))
            s.add("desk", lambda t: tasks.desk(self, t), tasks.DESK_SILENCE_MS, backoff_ms=(100, 5000))
        s.start(wdt or self.wdt)

    async def stop(self):
        """Stop every task and leave the hardware safe (Ctrl-C, shutdown)."""
        self.stopped = True
        self.supervisor.stop()
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
            "stock": self.stock.bins,
            "unverified": self.stock.unverified,
            "op": None if self.op is None else {"id": self.op.id, "kind": self.op.kind, "step": self.op.step},
            "queue": [q.id for q in self.queue],
            "service": self.service is not None,
            "faults": self.faults,
            "scanner": self.scans.state(),
        }

    def _bin_at_door(self):
        base = 1
        for c, n in zip(self.carousels, self._bins):
            b = c.bin_at_door()
            if b is not None:
                return base + b
            base += n
        return None
