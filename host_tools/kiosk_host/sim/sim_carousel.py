# The simulated bin carousel: a stepper driver and motor turning a ring of
# bins, with the home switch and the optional index sensor it trips. It reads
# the firmware's STEP/DIR/EN lines and drives the switch lines back, so the
# firmware's step counting, homing and missed-step checks meet a real
# counterpart. Faults make the mechanics lie the way hardware does.
import time
from array import array
from simworld import SimPin

_WAKE_US = 1000   # A4988/DRV8825: 1 ms from enable to the first step
_MOVES_KEPT = 8   # moves whose timing state() reports, newest last


class Carousel:
    # stall: steps do not move the carousel (motor stalled, belt off)
    # slip: one step in `slip_every` is lost (partial stall, missed steps)
    # home_broken / home_stuck: home switch never / always active
    # index_broken: index sensor never active
    FAULTS = ("stall", "slip", "home_broken", "home_stuck", "index_broken")

    def __init__(self, world, cfg):
        self.world = world
        self.name = cfg["name"]
        self.spb = cfg["steps_per_bin"]
        self.bins = cfg["bins"]
        self.total = self.spb * self.bins
        self.window = cfg.get("home_window", 1)
        self.slow_driver = cfg["driver"] in ("a4988", "drv8825")
        self.slip_every = 10
        self.position = 0
        self.faults = {}
        for k in self.FAULTS:
            self.faults[k] = False
        self._stall_after = -1       # stall starts after this many more moving steps
        self.steps = 0               # step pulses seen
        self.moved_steps = 0         # steps that turned the carousel
        self.dropped_steps = 0       # steps lost to stall/slip while enabled
        self.steps_while_disabled = 0
        self.early_steps = 0         # steps sooner than the driver's wake time
        self.short_pulses = 0        # step pulses under 2 us
        self.moves = 0               # enable periods in which the carousel moved
        self._slip_n = 0
        self._rise_us = 0
        self._enabled_us = 0
        self._first_step = False
        self._moved = False
        self._violated = False
        self._home_level = None
        self._index_level = None
        self._diag_level = None
        self._step = SimPin(world, cfg["step_pin"])
        self._dir = SimPin(world, cfg["dir_pin"])
        self._en = SimPin(world, cfg["enable_pin"])
        self._home = SimPin(world, cfg["home_pin"])
        self._index = SimPin(world, cfg["index_pin"]) if "index_pin" in cfg else None
        self._diag = SimPin(world, cfg["diag_pin"]) if "diag_pin" in cfg else None
        self._fwd = self._dir.get()
        self.enabled = self._en.get()
        # Each move's step timing: the gaps between its steps as they
        # happened (us, up to 65.5 ms), judged against what the ramp planned
        # by a thread of the simulated bench, not the firmware's: two
        # buffers, one filling while the other is judged, and a fixed ring
        # of results, so the firmware's heap sees nothing of it.
        n = self.total // 2 + 8
        self._bufs = (array("H", bytes(2 * n)), array("H", bytes(2 * n)))
        self._buf = 0
        self._n_gaps = 0
        self._last_step_us = 0
        self._run_fwd = None
        self._runs = 0
        self._move_from = 0
        self._judging = None        # (buffer index, from, to, runs, gaps) handed to the judge
        self._log = [[0, 0, 0, 0, -1, 0] for _ in range(_MOVES_KEPT)]  # from, to, steps, runs, ratio*1000, at
        self._logged = 0
        self.max_speed = cfg["max_speed"]
        self.accel = cfg["accel"]
        self._judge_ramp = None
        # How late the firmware's scheduled callbacks (every pin IRQ on the
        # ESP32) ran after the home-switch edges that raised them, worst
        # since it was last zeroed: on a loaded host the VM process waits
        # for a CPU while the simulated motor keeps stepping, which a
        # board's CPU never does (machine._Scheduled). Tests use it to tell
        # that delay from the firmware's own.
        self.home_irq_late_us = 0
        # The stall flag's last rise, in steps pulsed: at the flag, when the
        # first callback after it started, when that callback returned (-1:
        # not yet), with how late it started and how long it took; so a
        # test can see the firmware stop the pulses in the flag's own
        # callback, however late the host let it run.
        self.diag_irq = {"flag": -1, "start": -1, "end": -1, "late_us": -1, "took_us": -1}
        self._step.watch(self._on_step)
        self._dir.watch(self._on_dir)
        self._en.watch(self._on_enable)
        world.watch_irq(self._home.num, self._on_home_irq)
        if self._diag is not None:
            world.watch_irq(self._diag.num, self._on_diag_irq)
        self._set_diag(False)
        self._update()

    # -- the firmware's outputs -------------------------------------------
    def _on_dir(self, active):
        self._fwd = active

    def _on_enable(self, active):
        self.enabled = active
        if active:
            self._enabled_us = time.ticks_us()
            self._first_step = True
            self._moved = False
            self._violated = False
            self._n_gaps = 0
            self._runs = 0
            self._run_fwd = None
            self._move_from = self.position
        else:
            self._set_diag(False)
            if self._runs:
                self._hand_over()

    def _on_step(self, active):
        now = self.world.now_us()
        if not active:
            if self.slow_driver and time.ticks_diff(now, self._rise_us) < 2:
                self.short_pulses += 1
            return
        self._rise_us = now
        self.steps += 1
        if not self.enabled:
            self.steps_while_disabled += 1
            return
        if self._run_fwd != self._fwd:
            self._run_fwd = self._fwd
            self._runs += 1
            self._n_gaps = 0
        else:
            g = self._bufs[self._buf]
            if self._n_gaps < len(g):
                d = time.ticks_diff(now, self._last_step_us)
                g[self._n_gaps] = d if d < 65535 else 65535
                self._n_gaps += 1
        self._last_step_us = now
        if self._first_step:
            self._first_step = False
            if self.slow_driver and time.ticks_diff(self._rise_us, self._enabled_us) < _WAKE_US:
                self.early_steps += 1
        if self._stall_after >= 0:
            if self._stall_after == 0:
                self._stall_after = -1
                self.faults["stall"] = True
            else:
                self._stall_after -= 1
        if self.faults["stall"]:
            self.dropped_steps += 1
            self._set_diag(True)
            return
        if self.faults["slip"]:
            self._slip_n += 1
            if self._slip_n >= self.slip_every:
                self._slip_n = 0
                self.dropped_steps += 1
                return
        self._set_diag(False)
        w = self.world
        if not self._violated and w.locks and not w.doors_secure():
            self._violated = True
            w.violation("carousel moved while a door was open or unlocked")
        if not self._moved:
            self._moved = True
            self.moves += 1
        self.moved_steps += 1
        p = self.position + (1 if self._fwd else -1)
        if p < 0:
            p += self.total
        elif p >= self.total:
            p -= self.total
        self.position = p
        self._update()

    # -- the firmware's scheduled callbacks for the lines it reads ----------
    def _on_home_irq(self, late_us, took_us):
        if late_us > self.home_irq_late_us:
            self.home_irq_late_us = late_us

    def _on_diag_irq(self, late_us, took_us):
        d = self.diag_irq
        if d["flag"] < 0:
            return
        if took_us < 0 and d["start"] < 0:
            d["start"] = self.steps
            d["late_us"] = late_us
        elif took_us >= 0 and d["end"] < 0 and d["start"] >= 0:
            d["end"] = self.steps
            d["took_us"] = took_us

    # -- the lines the firmware reads ---------------------------------------
    def _near(self, r, period):
        return r <= self.window or r >= period - self.window

    def _update(self):
        f = self.faults
        p = self.position
        home = not f["home_broken"] and (f["home_stuck"] or self._near(p, self.total))
        if home != self._home_level:
            self._home_level = home
            self._home.set(home)
        if self._index is not None:
            idx = not f["index_broken"] and self._near(p % self.spb, self.spb)
            if idx != self._index_level:
                self._index_level = idx
                self._index.set(idx)

    def _set_diag(self, on):
        if self._diag is not None and on != self._diag_level:
            self._diag_level = on
            if on:
                d = self.diag_irq
                d["flag"] = self.steps
                d["start"] = d["end"] = d["late_us"] = d["took_us"] = -1
            self._diag.set(on)

    # -- model interface ----------------------------------------------------
    def set_position(self, steps):
        """Put the carousel somewhere (a test's power-on position)."""
        self.position = steps % self.total
        self._update()

    def set_fault(self, kind, on, after=0):
        """Switch a fault on or off; a stall can be armed to start after
        `after` more moving steps (a jam partway through a move)."""
        if kind not in self.FAULTS:
            raise ValueError("carousel %s has no fault %r" % (self.name, kind))
        if kind == "stall" and on and after > 0:
            self._stall_after = after
            return
        if kind == "stall":
            self._stall_after = -1
        self.faults[kind] = bool(on)
        if not on and kind == "stall":
            self._set_diag(False)
        self._update()

    def _hand_over(self):
        """A move ended: its gaps go to the judge, the other buffer fills next."""
        slot = self._log[self._logged % _MOVES_KEPT]
        slot[0] = self._move_from
        slot[1] = self.position
        slot[2] = self._n_gaps + 1
        slot[3] = self._runs
        slot[4] = -1                 # not judged (yet)
        slot[5] = 0
        self._logged += 1
        self._runs = 0
        if self._judging is None and slot[3] == 1:
            self._judging = (self._buf, slot, self._n_gaps)
            self._buf = 1 - self._buf
            if self._judge_ramp is None:
                import _thread
                from kiosk.hw.ramp import Ramp
                self._judge_ramp = Ramp()
                _thread.start_new_thread(self._judge_loop, ())

    def _judge_loop(self):
        """The largest gap between two steps of a move over the gap the ramp
        planned there (the firmware's own Ramp, for a move of that many
        steps at the board's max_speed and accel), in thousandths."""
        while True:
            j = self._judging
            if j is None:
                time.sleep_ms(20)
                continue
            buf, slot, n = j
            gaps = self._bufs[buf]
            r = self._judge_ramp
            r.reset(n + 1, self.max_speed, self.accel, 0)
            r.next_interval()               # the wait before the first step: no gap
            worst = 0
            at = 0
            for i in range(n):
                planned = r.next_interval()
                if planned <= 0:
                    break
                q = gaps[i] * 1000 // planned
                if q > worst:
                    worst = q
                    at = i + 1
            slot[5] = at
            slot[4] = worst
            self._judging = None

    def move_log(self):
        """The last moves, oldest first: from, to, steps, kind ("move" or
        "home": a homing run is several ramps at several speeds and is not
        judged), worst_step_gap_ratio (None until judged or for a homing
        run), worst_at (the step)."""
        for _ in range(50):             # a move just ended is judged within a few ms
            if self._judging is None:
                break
            time.sleep_ms(10)
        out = []
        k = max(0, self._logged - _MOVES_KEPT)
        while k < self._logged:
            s = self._log[k % _MOVES_KEPT]
            out.append({"from": s[0], "to": s[1], "steps": s[2], "kind": "move" if s[3] == 1 else "home",
                        "worst_step_gap_ratio": s[4] / 1000 if s[4] >= 0 else None,
                        "worst_at": s[5] if s[4] >= 0 else None})
            k += 1
        return out

    def state(self):
        log = self.move_log()
        last = None
        for m in log:
            if m["kind"] == "move":
                last = m
        return {
            "position": self.position,
            "bin": self.position / self.spb,
            "enabled": bool(self.enabled),
            "home": bool(self._home_level),
            "index": bool(self._index_level),
            "moves": self.moves,
            "steps": self.steps,
            "moved_steps": self.moved_steps,
            "dropped_steps": self.dropped_steps,
            "steps_while_disabled": self.steps_while_disabled,
            "early_steps": self.early_steps,
            "short_pulses": self.short_pulses,
            "faults": [k for k in self.FAULTS if self.faults[k]],
            "worst_step_gap_ratio": last["worst_step_gap_ratio"] if last else None,
            "move_log": log,
        }
