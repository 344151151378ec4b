"""WebSocket.abort(): the connection ends at once, without a closing handshake (what an owner
needs when a closing handshake cannot be afforded or cannot complete: no heap for it, or a
blackholed link). The server sees the TCP connection end with no close frame before it; the
client's recv() raises ConnectionClosed 1006; on MicroPython and CPython."""
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ws_support import run_code, websockets_server  # noqa: E402

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


@pytest.mark.parametrize("interp", ["micropython", "cpython"])
def test_abort_ends_the_connection_without_a_close_frame(interp):
    ended = []
    done = threading.Event()

    async def handler(ws):
        try:
            await ws.wait_closed()  # reads until the connection ends, answering nothing
        finally:
            ended.append((ws.protocol.close_rcvd, ws.close_code))
            done.set()

    with websockets_server(handler, ping_interval=None) as srv:
        r = run_code(CLIENT % ("ws://127.0.0.1:%d/ws" % srv.port), interp, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        lines = r.stdout.split("\n")
        assert "END ConnectionClosed 1006 True" in lines and "CLOSED" in lines, r.stdout
        assert done.wait(20), "the server never saw the connection end"
    # no close frame came before TCP ended: websockets reports 1006 (abnormal closure)
    assert ended == [(None, 1006)], ended
