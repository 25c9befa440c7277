# The emulator's `rp2` under the rp2 personality: PIO state machines and
# DMA channels as the RP2350 has them (datasheet chapters "PIO" and "DMA";
# MicroPython's ports/rp2/rp2_pio.c, rp2_dma.c and modules/rp2.py for the
# API). What matters for a carousel is kept exact:
#   - a state machine runs its program cycle by cycle at its clock, on its
#     own: a CPU stall (a flash erase) does not slow it;
#   - its TX FIFO holds 4 words (8 with the RX FIFO joined to it); a `pull`
#     from an empty FIFO waits there, stretching that step;
#   - a DMA channel paced by the state machine's TX request refills the FIFO
#     the moment it has room, whatever the CPU is doing;
#   - `set(pins, ...)` drives the pin in the simulated world at the cycle it
#     runs, so the world sees each step at the time the hardware makes it.
# The hardware runs in the simulated machine's service thread (and catches
# up whenever the firmware looks at it), never in the firmware's.
#
# asm_pio records the program symbolically (its instructions and labels) and
# the state machine interprets that, fast-forwarding `jmp(x_dec)` wait loops.
import utime as time
import _thread
import simworld
import time as port_time   # the port's time module (sim/time.py): irq_ticks

_MASK = 0xFFFFFFFF


class PIO:
    OUT_LOW = 0
    OUT_HIGH = 1
    IN_LOW = 0
    IN_HIGH = 1
    SHIFT_LEFT = 0
    SHIFT_RIGHT = 1
    JOIN_NONE = 0
    JOIN_TX = 1
    JOIN_RX = 2
    IRQ_SM0 = 0x100

    def __init__(self, id):
        self.id = id


# -- the assembler -----------------------------------------------------------

class _Instr:
    """One instruction; `[n]` after it sets its delay cycles."""

    def __init__(self, prog, op, a=None, b=None):
        self.op = op
        self.a = a
        self.b = b
        self.delay = 0
        if prog is not None:
            prog.append(self)

    def __getitem__(self, delay):
        self.delay = delay
        return self

    def side(self, v):
        return self


class _Prog:
    def __init__(self, kw):
        self.instrs = []
        self.labels = {}
        self.wrap_target = 0
        self.wrap = None
        self.set_init = kw.get("set_init")
        self.out_shiftdir = kw.get("out_shiftdir", PIO.SHIFT_LEFT)
        self.fifo_join = kw.get("fifo_join", PIO.JOIN_NONE)


def asm_pio(**kw):
    def dec(f):
        prog = _Prog(kw)
        gl = f.__globals__
        old = gl.copy()
        names = {
            "pull": lambda a="block", b=None: _Instr(prog.instrs, "pull", a),
            "push": lambda a="block", b=None: _Instr(prog.instrs, "push", a),
            "out": lambda dest, n: _Instr(prog.instrs, "out", dest, n),
            "mov": lambda dest, src: _Instr(prog.instrs, "mov", dest, src),
            "jmp": lambda cond, label=None: _Instr(prog.instrs, "jmp", cond if label is not None else "always",
                                                  label if label is not None else cond),
            "set": lambda dest, v: _Instr(prog.instrs, "set", dest, v),
            "nop": lambda: _Instr(prog.instrs, "mov", "y", "y"),
            "label": lambda name: prog.labels.__setitem__(name, len(prog.instrs)),
            "wrap_target": lambda: setattr(prog, "wrap_target", len(prog.instrs)),
            "wrap": lambda: setattr(prog, "wrap", len(prog.instrs) - 1),
        }
        for w in ("x", "y", "osr", "isr", "pins", "null", "pindirs", "block", "noblock",
                  "x_dec", "y_dec", "not_x", "not_y", "x_not_y", "not_osre", "pc", "exec"):
            names[w] = w
        gl.clear()
        try:
            gl.update(names)
            f()
        finally:
            gl.clear()
            gl.update(old)
        if prog.wrap is None:
            prog.wrap = len(prog.instrs) - 1
        return prog
    return dec


# -- the hardware --------------------------------------------------------------

_lock = _thread.allocate_lock()
_owner = [None]
_machines = []
_channels = []


def _grab():
    """Take the hardware's lock, unless this thread holds it already (a hard
    IRQ raised by a step may call back into the hardware). Returns whether
    it took it: pass that to _drop(). No allocation, so the firmware's heap
    figures see nothing of the simulated hardware."""
    me = _thread.get_ident()
    if _owner[0] == me:
        return False
    _lock.acquire()
    _owner[0] = me
    return True


def _drop(took):
    if took:
        _owner[0] = None
        _lock.release()


_clock = [time.ticks_us(), 0]     # last raw ticks_us, microseconds since import


def _now():
    """The hardware's clock: microseconds that never wrap (the VM's
    ticks_us wraps every 18 minutes). Called with the hardware lock held."""
    raw = time.ticks_us()
    _clock[1] += time.ticks_diff(raw, _clock[0])
    _clock[0] = raw
    return _clock[1]


def _api_now():
    """Now as the firmware's call sees it: inside a hard IRQ raised at an
    edge, the edge's time (the chip would be there within microseconds)."""
    t = _now()
    v = port_time.irq_ticks[0]
    if v is not None:
        t -= time.ticks_diff(_clock[0], v)
    return t


def ticks_at(t_us):
    """The VM's ticks_us value for hardware time t_us (in the past)."""
    return time.ticks_add(_clock[0], t_us - _clock[1])


def tick():
    """Run every state machine and DMA channel up to now (the service
    thread calls this every millisecond)."""
    if not _machines:
        return
    took = _grab()
    try:
        now = _now()
        for sm in _machines:
            sm._advance(now)
    finally:
        _drop(took)


class StateMachine:
    def __init__(self, id, prog=None, freq=125000000, set_base=None, **kw):
        self.id = id
        self._prog = None
        self._freq = freq
        self._ns = 1000000000 // freq      # nanoseconds per cycle
        self._on = False
        self._fifo = [0] * 8                # a ring: _head, _n words
        self._head = 0
        self._n = 0
        self._depth = 4
        self._pin = None
        self._t_ns = 0                      # the machine's own clock, ns on the ticks_us scale
        self._waiting = False               # stalled at a pull with the FIFO empty
        self.stalled_ns = 0                 # time spent waiting for words while active
        self._dma = None
        self._inside = False
        if prog is not None:
            self.init(prog, freq=freq, set_base=set_base, **kw)
        if self not in _machines:
            _machines.append(self)
        import machine
        machine.add_hardware(tick)

    def init(self, prog, freq=None, set_base=None, **kw):
        took = _grab()
        try:
            self._prog = prog
            if freq:
                self._freq = freq
                self._ns = 1000000000 // freq
            self._depth = 8 if prog.fifo_join == PIO.JOIN_TX else 4
            if set_base is not None:
                self._pin = getattr(set_base, "_id", set_base)
            self._reset()
        finally:
            _drop(took)

    def _reset(self):
        self._pc = self._prog.wrap_target if self._prog else 0
        self._x = self._y = self._osr = self._isr = 0
        self._osr_n = 32
        self._head = self._n = 0
        self._waiting = False

    # -- the program ------------------------------------------------------------
    def _level(self, v):
        """Drive the pin at the machine's time. A hard IRQ the edge raises
        reads that time from ticks_us(), as it would within microseconds of
        the edge on the chip (time.py)."""
        if self._pin is not None:
            simworld.world().write_at(self._pin, v, ticks_at(self._t_ns // 1000))

    def _feed(self):
        """The DMA channel paced by this machine's TX request tops the FIFO
        up as soon as there is room (at the machine's time: the channel runs
        all along)."""
        d = self._dma
        while d is not None and d._on and d._left > 0 and self._n < self._depth:
            self._push(d._next())
            if self._waiting:
                self._arrived(self._t_ns // 1000)

    def _advance(self, now_us):
        """Run the program up to now: each instruction at its cycle, a pull
        from an empty FIFO waiting until a word comes."""
        if not self._on or self._prog is None or self._inside:
            return                  # (a call from an IRQ this machine's own step raised)
        self._inside = True
        try:
            self._run_to(now_us * 1000)
        finally:
            self._inside = False

    def _run_to(self, end):
        ins = self._prog.instrs
        labels = self._prog.labels
        budget = 100000
        while budget > 0 and self._t_ns <= end and self._on:
            budget -= 1
            self._feed()
            i = ins[self._pc]
            op = i.op
            nxt = self._pc + 1
            cycles = 1 + i.delay
            if op == "pull":
                if not self._n:
                    if i.a != "noblock":
                        if not self._waiting:
                            self._waiting = True
                            self._wait_from = self._t_ns
                        return          # the word's arrival sets the clock on
                    self._osr = self._x
                else:
                    self._osr = self._pop()
                self._osr_n = 0
            elif op == "out":
                n = i.b
                if self._prog.out_shiftdir == PIO.SHIFT_RIGHT:
                    v = self._osr & ((1 << n) - 1)
                    self._osr = self._osr >> n
                else:
                    v = (self._osr >> (32 - n)) & ((1 << n) - 1)
                    self._osr = (self._osr << n) & _MASK
                self._osr_n += n
                self._put(i.a, v)
            elif op == "mov":
                self._put(i.a, self._get(i.b))
            elif op == "set":
                if i.a == "pins":
                    self._level(i.b & 1)
                else:
                    self._put(i.a, i.b)
            elif op == "jmp":
                cond = i.a
                target = labels[i.b] if isinstance(i.b, str) else i.b
                if cond == "x_dec" and target == self._pc:
                    # a wait loop: x + 1 turns, x ends at -1
                    cycles = (self._x + 1) * (1 + i.delay)
                    self._x = _MASK
                else:
                    take = cond == "always"
                    if cond == "x_dec":
                        take = self._x != 0
                        self._x = (self._x - 1) & _MASK
                    elif cond == "y_dec":
                        take = self._y != 0
                        self._y = (self._y - 1) & _MASK
                    elif cond == "not_x":
                        take = self._x == 0
                    elif cond == "not_y":
                        take = self._y == 0
                    elif cond == "not_osre":
                        take = self._osr_n < 32
                    if take:
                        nxt = target
            self._t_ns += cycles * self._ns
            if nxt > self._prog.wrap:
                nxt = self._prog.wrap_target
            self._pc = nxt

    def _push(self, w):
        self._fifo[(self._head + self._n) & 7] = w
        self._n += 1

    def _pop(self):
        w = self._fifo[self._head]
        self._head = (self._head + 1) & 7
        self._n -= 1
        return w

    def _arrived(self, now_us):
        """A word came at now: a machine waiting at its pull goes on from then."""
        if self._waiting:
            t = now_us * 1000
            if t > self._t_ns:
                self.stalled_ns += t - self._wait_from
                self._t_ns = t
            else:
                self.stalled_ns += self._t_ns - self._wait_from
            self._waiting = False

    def _get(self, src):
        if src == "x":
            return self._x
        if src == "y":
            return self._y
        if src == "osr":
            return self._osr
        if src == "isr":
            return self._isr
        if src == "null":
            return 0
        raise ValueError("mov from %r is not simulated" % (src,))

    def _put(self, dest, v):
        v &= _MASK
        if dest == "x":
            self._x = v
        elif dest == "y":
            self._y = v
        elif dest == "isr":
            self._isr = v
        elif dest == "osr":
            self._osr = v
        elif dest != "null":
            raise ValueError("to %r is not simulated" % (dest,))

    # -- the API ----------------------------------------------------------------
    def active(self, v=None):
        took = _grab()
        try:
            now = _api_now()
            self._advance(now)
            if v is None:
                return 1 if self._on else 0
            if v and not self._on:
                self._t_ns = now * 1000
                self._on = True
                self._waiting = False
                self._advance(now)
            elif not v:
                self._on = False
            return None
        finally:
            _drop(took)

    def restart(self):
        took = _grab()
        try:
            self._advance(_api_now())
            self._reset()
        finally:
            _drop(took)

    def put(self, value, shift=0):
        """A word from the CPU; waits (as the port's put() does) while the
        FIFO is full."""
        while True:
            took = _grab()
            try:
                now = _api_now()
                self._advance(now)
                if self._n < self._depth or not self._on:
                    self._push((value << shift) & _MASK)
                    self._arrived(now)
                    self._advance(now)
                    return
            finally:
                _drop(took)
            time.sleep_us(20)

    def tx_fifo(self):
        took = _grab()
        try:
            self._advance(_api_now())
            return self._n
        finally:
            _drop(took)

    def rx_fifo(self):
        return 0

    def exec(self, instr):
        took = _grab()
        try:
            if instr == "pull(noblock)":
                if self._n:
                    self._pop()
            elif instr == "set(pins, 0)":
                self._t_ns = _api_now() * 1000
                self._level(0)
            else:
                raise ValueError("exec %r is not simulated" % instr)
        finally:
            _drop(took)

    def irq(self, handler=None, trigger=0, hard=False):
        pass


# -- DMA -----------------------------------------------------------------------

class DMA:
    def __init__(self):
        self._on = False
        self._src = None
        self._pos = 0
        self._left = 0
        self._sm = None
        _channels.append(self)

    def pack_ctrl(self, default=None, **kw):
        return dict(kw)

    def config(self, read=None, write=None, count=None, ctrl=None, trigger=False):
        took = _grab()
        try:
            if read is not None:
                self._src = read
                self._pos = 0
            if write is not None:
                if not isinstance(write, StateMachine):
                    raise ValueError("the simulated DMA writes to a state machine's TX FIFO only")
                if self._sm is not None and self._sm._dma is self:
                    self._sm._dma = None
                self._sm = write
                write._dma = self
            if count is not None:
                self._left = count
            if trigger:
                self._start()
        finally:
            _drop(took)

    def _start(self):
        sm = self._sm
        now = _api_now()
        if sm is not None:
            sm._advance(now)
        self._on = True
        if sm is not None:
            if sm._waiting:         # waiting since before this channel started
                sm._arrived(now)
            sm._advance(now)

    def _next(self):
        v = self._src[self._pos] & _MASK
        self._pos += 1
        self._left -= 1
        if self._left <= 0:
            self._on = False
        return v

    def active(self, v=None):
        took = _grab()
        try:
            if self._sm is not None:
                self._sm._advance(_api_now())
            if v is None:
                return 1 if self._on else 0
            if v and not self._on and self._left > 0:
                self._start()
            elif not v:
                self._on = False
            return None
        finally:
            _drop(took)

    @property
    def count(self):
        took = _grab()
        try:
            if self._sm is not None:
                self._sm._advance(_api_now())
            return self._left
        finally:
            _drop(took)

    def close(self):
        self._on = False
        if self._sm is not None and self._sm._dma is self:
            self._sm._dma = None
