# The emulated kiosk's control channel: a thread that connects to the
# emulator's supervisor, announces the kiosk, then applies each JSON command
# line to the simulated world and answers with one JSON line. It runs beside
# the firmware like the physical world does: a door opened from here raises
# the firmware's pin interrupts in this thread, as hardware would.
#
# Besides World.handle's verbs, {"op": "go"} ends the boot handshake: the
# supervisor first replays what outlasts a reset (open doors, set points,
# faults, the network), then says go, and only then does main.py run.
import json
import time
import _thread
import usocket as socket  # the real one: a simulated network drop must not cut this

_go = [False]


def _send(s, data):
    mv = memoryview(data)
    while mv:
        mv = mv[s.send(mv):]


def _serve(world, host, port, kiosk_id, token):
    try:
        s = socket.socket()
        s.connect(socket.getaddrinfo(host, port)[0][-1])
        _send(s, json.dumps({"hello": kiosk_id, "token": token}).encode() + b"\n")
    except Exception as e:  # no supervisor: run without a channel
        print("simctl: no control channel:", e)
        _go[0] = True
        return
    buf = b""
    while True:
        try:
            chunk = s.recv(512)
        except OSError:
            chunk = b""
        if not chunk:
            _go[0] = True
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                cmd = json.loads(line)
                if cmd.get("op") == "go":
                    _go[0] = True
                    reply = {"ok": True, "result": None}
                else:
                    reply = {"ok": True, "result": world.handle(cmd)}
            except Exception as e:  # a bad command is answered, never fatal
                reply = {"ok": False, "error": str(e) or type(e).__name__}
            _send(s, json.dumps(reply).encode() + b"\n")


def start(world, address, kiosk_id, wait_ms=10000, token=None):
    """address: "host:port" of the supervisor, or None for no channel;
    token: this boot's, from the supervisor (it refuses a channel without
    it). Returns once the supervisor said go (or after wait_ms)."""
    if not address:
        return
    host, port = address.rsplit(":", 1)
    _thread.start_new_thread(_serve, (world, host, int(port), kiosk_id, token))
    t0 = time.ticks_ms()
    while not _go[0] and time.ticks_diff(time.ticks_ms(), t0) < wait_ms:
        time.sleep_ms(5)
