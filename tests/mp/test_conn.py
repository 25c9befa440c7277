# The link's socket (kiosk/link/conn.py) on each port's errno: a
# non-blocking connect to a broker on loopback completes and carries bytes
# both ways, and reads with nothing to read return 0, never an error.
# Under the esp32 personality connect() reports EINPROGRESS as newlib's 119.
# DNS (which holds the whole VM on a board) is asked once per name, again
# only when the link gives up on the address, and never for a literal IP.
import asyncio
import os
import usocket     # the VM's own sockets: the broker's side of the test
from kiosk.link.conn import Conn


def _listener():
    """A listening socket on loopback and its port."""
    r = os.urandom(2)
    base = 20000 + ((r[0] << 8 | r[1]) % 30000)
    for port in range(base, base + 200):
        s = usocket.socket()
        s.setsockopt(usocket.SOL_SOCKET, usocket.SO_REUSEADDR, 1)
        try:
            s.bind(usocket.getaddrinfo("127.0.0.1", port)[0][-1])
        except OSError:
            s.close()
            continue
        s.listen(1)
        return s, port
    raise OSError("no free port")


async def _connect(conn, ms=3000):
    for _ in range(ms // 5):
        if conn.connected():
            return True
        await asyncio.sleep_ms(5)
    return False


async def _round_trip():
    srv, port = _listener()
    conn = Conn("127.0.0.1", port)
    conn.open()                      # returns at once: the connect goes on
    assert await _connect(conn), "never connected"
    peer, _ = srv.accept()
    buf = bytearray(16)
    assert conn.recv_into(memoryview(buf)) == 0      # nothing yet: 0, no error
    assert conn.send(memoryview(b"\x10\x02hi")) == 4
    assert peer.recv(16) == b"\x10\x02hi"
    peer.send(b"\x20\x02\x00\x00")
    n = 0
    for _ in range(200):
        n = conn.recv_into(memoryview(buf))
        if n:
            break
        await asyncio.sleep_ms(5)
    assert bytes(buf[:n]) == b"\x20\x02\x00\x00", buf[:n]
    conn.close()
    peer.close()
    srv.close()


def test_a_non_blocking_connect_completes_and_moves_bytes():
    asyncio.run(_round_trip())


def test_the_broker_is_looked_up_once_and_a_literal_address_never_again():
    import socket
    real = socket.getaddrinfo
    asked = []

    def counting(host, port, *a):
        asked.append(host)
        return real(host, port, *a)

    srv, port = _listener()
    socket.getaddrinfo = counting
    try:
        for host in ("localhost", "127.0.0.1"):
            conn = Conn(host, port)
            for _ in range(3):       # reconnects reuse the answer
                conn.open()
                conn.close()
            conn.forget()            # the link gave up on the address
            conn.open()
            conn.close()
    finally:
        socket.getaddrinfo = real
        srv.close()
    assert asked == ["localhost", "localhost", "127.0.0.1"], asked
