"""WebSocket.abort(): the connection ends at once, without a closing handshake (what an owner
needs when a closing handshake cannot be afforded or cannot complete: no heap for it, or a
blackholed link). The server sees the TCP connection end with no close frame before it; the
client's recv() raises ConnectionClosed 1006; on MicroPython and CPython."""
import asyncio
import base64
import hashlib
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ws_support import GUID, LoopThread, parse_client_frames, run_code  # noqa: E402

pytestmark = pytest.mark.micropython

CLIENT = """
import asyncio
from fieldlink.ws import client
async def main():
    ws = await client.connect(%r, ping_interval_s=0)
    ws.abort()
    try:
        m = await asyncio.wait_for(ws.recv(), 10)
        print("RECV", m)
    except Exception as e:
        print("END", type(e).__name__, getattr(e, "code", None), ws.closed)
    await ws.close()  # a no-op now: never raises, never waits
    print("CLOSED")
asyncio.run(main())
"""


class Silent:
    """A server that completes the upgrade, then only reads: it records what the client sent
    and that the client ended TCP (`ended` is set at EOF or a reset)."""

    def __init__(self):
        self.got = bytearray()
        self.ended = threading.Event()
        self.lt = LoopThread(self._serve)

    async def _serve(self, lt):
        server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        async with server:
            lt.ready(server.sockets[0].getsockname()[1])
            await lt.wait_stop()

    async def _conn(self, reader, writer):
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            key = [l.split(":", 1)[1].strip() for l in head.split("\r\n")
                   if l.lower().startswith("sec-websocket-key:")][0]
            accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
            writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n"
                          % accept).encode())
            await writer.drain()
            while True:
                chunk = await asyncio.wait_for(reader.read(4096), 30)
                if not chunk:
                    break
                self.got.extend(chunk)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass
        finally:
            self.ended.set()
            writer.close()


@pytest.mark.parametrize("interp", ["micropython", "cpython"])
def test_abort_ends_the_connection_without_a_close_frame(interp):
    srv = Silent()
    with srv.lt:
        r = run_code(CLIENT % ("ws://127.0.0.1:%d/ws" % srv.lt.port), interp, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        lines = r.stdout.split("\n")
        assert "END ConnectionClosed 1006 True" in lines and "CLOSED" in lines, r.stdout
        assert srv.ended.wait(20), "the server never saw the connection end"
    assert not any(op == 8 for op, _ in parse_client_frames(bytes(srv.got))), bytes(srv.got)
