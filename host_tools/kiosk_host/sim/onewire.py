# The emulator's `onewire`: found on sys.path before any built-in, with the
# API of MicroPython's onewire module (OneWire, OneWireError, crc8, scan,
# select_rom...). Under it is no pin timing but a bit-level conversation
# with the device models the world put on this pin (world.onewire_bus(n)):
# reset and presence, ROM commands (MATCH, SKIP, SEARCH), then the function
# commands the models answer (CONVERT T, READ and WRITE SCRATCHPAD; others,
# such as COPY SCRATCHPAD, end the transaction with no effect).
# Several devices answering at once collide as on the wire: the open-drain
# line is a wired AND, so any device sending 0 wins.
#
# scan() runs the real ROM search over that conversation (read bit, read
# complement, write direction), as the board's module does, so a search
# finds exactly the devices that answer. Kept compact: it is compiled from
# source inside the emulated board's heap.
import simworld

# Transaction states.
_IDLE = 0       # no reset yet or transaction over: the line stays high
_ROM = 1        # after reset: waiting for a ROM command
_MATCH = 2      # collecting 8 ROM bytes after MATCH ROM
_FUNC = 3       # device(s) selected: waiting for a function command
_SEND = 4       # device(s) sending the scratchpad
_WRITE = 5      # collecting WRITE SCRATCHPAD bytes
_BUSY = 6       # after CONVERT T: read slots show 0 while converting
_SEARCH = 7     # SEARCH ROM: bit, complement, direction, 64 times


class OneWireError(Exception):
    pass


def _crc8(data):
    """Dallas/Maxim CRC-8 (x^8+x^5+x^4+1, reflected 0x8C, init 0)."""
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            if crc & 1:
                crc = (crc >> 1) ^ 0x8C
            else:
                crc >>= 1
    return crc


class OneWire:
    SEARCH_ROM = 0xF0
    MATCH_ROM = 0x55
    SKIP_ROM = 0xCC

    def __init__(self, pin):
        self.pin = pin
        pin.init(pin.OPEN_DRAIN, pin.PULL_UP)
        self._devs = simworld.world().onewire_bus(getattr(pin, "_id", pin))
        self._state = _IDLE
        self._sel = []
        self._acc = 0       # byte being written, bit by bit
        self._nbits = 0
        self._rx = bytearray(8)
        self._nrx = 0
        self._out = b""
        self._opos = 0      # bit position in _out
        self._sbit = 0      # search: bit index
        self._sphase = 0    # search: 0 bit, 1 complement, 2 direction

    # -- the module's API ----------------------------------------------------
    def reset(self, required=False):
        present = [d for d in self._devs if d.present()]
        self._sel = present     # who heard the reset
        self._state = _ROM if present else _IDLE
        self._acc = self._nbits = self._nrx = 0
        if required and not present:
            raise OneWireError
        return bool(present)

    def readbit(self):
        st = self._state
        if st == _SEND:
            i = self._opos
            if i >= len(self._out) * 8:
                return 1
            self._opos = i + 1
            return (self._out[i >> 3] >> (i & 7)) & 1
        if st == _BUSY:
            for d in self._sel:
                if d.converting():
                    return 0
            return 1
        if st == _SEARCH:
            if self._sphase > 1:
                return 1
            want = 1 - self._sphase     # phase 0: the bit; 1: its complement
            self._sphase += 1
            for d in self._sel:
                if _rom_bit(d.rom, self._sbit) != want:
                    return 0            # one device sending 0 pulls the line low
            return 1
        return 1

    def readbyte(self):
        b = 0
        for i in range(8):
            b |= self.readbit() << i
        return b

    def readinto(self, buf):
        for i in range(len(buf)):
            buf[i] = self.readbyte()

    def writebit(self, value):
        value = 1 if value else 0
        if self._state == _SEARCH:
            if self._sphase == 2:
                i = self._sbit
                self._sel = [d for d in self._sel if _rom_bit(d.rom, i) == value]
                self._sbit = i + 1
                self._sphase = 0
                if self._sbit == 64:
                    self._state = _IDLE
            return
        self._acc |= value << self._nbits
        self._nbits += 1
        if self._nbits == 8:
            b = self._acc
            self._acc = self._nbits = 0
            self._byte(b)

    def writebyte(self, value):
        for i in range(8):
            self.writebit((value >> i) & 1)

    def write(self, buf):
        for b in buf:
            self.writebyte(b)

    def select_rom(self, rom):
        self.reset()
        self.writebyte(self.MATCH_ROM)
        self.write(rom)

    def crc8(self, data):
        return _crc8(data)

    def scan(self):
        """Every ROM on the bus, by the ROM search: at each bit where the
        devices disagree, take 0 first and 1 on a later pass."""
        roms = []
        rom = bytearray(8)
        last = -1           # bit where the previous pass took 0 at a fork
        while True:
            if not self.reset():
                return roms
            self.writebyte(self.SEARCH_ROM)
            fork = -1
            for i in range(64):
                b = self.readbit()
                nb = self.readbit()
                if b and nb:
                    return roms     # nobody left answering
                if b != nb:
                    d = b
                elif i < last:
                    d = _rom_bit(rom, i)
                else:
                    d = 1 if i == last else 0
                if b == nb and d == 0:
                    fork = i
                if d:
                    rom[i >> 3] |= 1 << (i & 7)
                else:
                    rom[i >> 3] &= ~(1 << (i & 7))
                self.writebit(d)
            roms.append(bytearray(rom))
            if fork < 0:
                return roms
            last = fork

    # -- the devices' side of the conversation -----------------------------
    def _byte(self, b):
        st = self._state
        if st == _ROM:
            if b == 0x55:
                self._state = _MATCH
                self._nrx = 0
            elif b == 0xCC:
                self._state = _FUNC
            elif b == 0xF0:
                self._state = _SEARCH
                self._sbit = 0
                self._sphase = 0
            else:
                self._state = _IDLE
        elif st == _MATCH:
            self._rx[self._nrx] = b
            self._nrx += 1
            if self._nrx == 8:
                rom = bytes(self._rx)
                self._sel = [d for d in self._sel if d.rom == rom]
                self._state = _FUNC if self._sel else _IDLE
        elif st == _FUNC:
            sel = self._sel
            if b == 0x44:
                for d in sel:
                    d.convert()
                self._state = _BUSY
            elif b == 0xBE:
                self._send([d.scratchpad() for d in sel])
            elif b == 0x4E:
                self._state = _WRITE
                self._nrx = 0
            else:
                self._state = _IDLE
        elif st == _WRITE:
            self._rx[self._nrx] = b
            self._nrx += 1
            if self._nrx == 3:
                for d in self._sel:
                    d.write_scratchpad(self._rx[0], self._rx[1], self._rx[2])
                self._state = _IDLE

    def _send(self, datas):
        """Devices send at once: the line carries the AND of their bits."""
        out = bytearray(datas[0]) if datas else bytearray()
        for data in datas[1:]:
            for i in range(len(out)):
                out[i] &= data[i]
        self._out = out
        self._opos = 0
        self._state = _SEND


def _rom_bit(rom, i):
    return (rom[i >> 3] >> (i & 7)) & 1
