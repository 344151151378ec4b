"""A server that answers garbage: the firmware on the virtual board meets, one connection
after another, HTTP servers that answer the upgrade wrongly, then a `websockets` server that
sends bad JSON, an ill-typed field, a binary message, an unknown message type and an invalid
frame (an oversized message has its own test: the board must read the rest of it after
failing the connection, or its close frame may be lost to an RST).
Each time the board closes with the code docs/protocol.md names (observed on the server side),
backs off and reconnects; in the end the fault proxy points it at the real collector and it
streams. The board process never dies."""
import asyncio
import json
import sys
import threading
import time
from pathlib import Path

from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ws_support as S  # noqa: E402

DEV, TOK = "dev-1", "tok-1"

BAD_HTTP = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"garbage garbage\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: bm90IHRoZSByaWdodCBrZXk=\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nX-Pad: " + b"x" * 6000 + b"\r\n\r\n",
]

# scenario -> the close code the board must send (None: must be ignored, streaming goes on)
EXPECT = {
    "garbage_instead_of_welcome": 1007,
    "bad_json": 1007,
    "ill_typed_ack": 1007,
    "binary": 1003,
    "unknown_type": None,
    "invalid_frame": 1002,
}


class BadHTTP:
    """Raw TCP: reads the upgrade request, answers BAD_HTTP[n % len], closes."""

    def __init__(self):
        self.conns = 0
        self.lt = S.LoopThread(self._serve)

    async def _serve(self, lt):
        server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        async with server:
            lt.ready(server.sockets[0].getsockname()[1])
            await lt.wait_stop()

    async def _conn(self, reader, writer):
        n = self.conns
        self.conns += 1
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.write(BAD_HTTP[n % len(BAD_HTTP)])
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()


class BadWS:
    """A `websockets` server playing one EXPECT scenario per connection, in order; records
    the close code the board sent (or "ignored" when it kept streaming)."""

    def __init__(self, order=None):
        self.order = list(order or EXPECT)
        self.results = {}
        self.hellos = []
        self.lock = threading.Lock()
        self.n = 0

    async def handler(self, ws):
        with self.lock:
            i = self.n
            self.n += 1
        if i >= len(self.order):
            await ws.close(1013, "done")
            return
        kind = self.order[i]
        self.hellos.append(json.loads(await ws.recv()))
        if kind == "garbage_instead_of_welcome":
            await ws.send("<html>not the collector</html>")
        else:
            await ws.send(json.dumps({"t": "welcome", "v": 1, "ack": 0, "time": time.time()}))
            if kind == "bad_json":
                await ws.send('{"t": "ack", "ack": ')
            elif kind == "ill_typed_ack":
                await ws.send('{"t": "ack", "ack": "lots"}')
            elif kind == "binary":
                await ws.send(b"\x01\x02\x03")
            elif kind == "unknown_type":
                await ws.send('{"t": "weather", "sky": "blue"}')
            elif kind == "invalid_frame":
                ws.transport.write(b"\x83\x00")   # reserved opcode 3 (RFC 6455 section 5.2)
        if kind == "oversized":   # not in EXPECT: see test_oversized_message_close_is_orderly
            await ws.send(json.dumps({"t": "ack", "ack": 0, "pad": "x" * 60000}))
        got_batch = False
        try:
            async with asyncio.timeout(20):
                async for m in ws:   # keep reading so the board's close frame gets through
                    if kind == "unknown_type" and '"t":"batch"' in m.replace(" ", ""):
                        got_batch = True
                        await ws.close(1001, "next scenario")
        except (ConnectionClosed, TimeoutError):
            pass
        self.results[kind] = "ignored" if got_batch else ws.close_code


def wait_until(pred, timeout, what, board):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s\nboard log tail:\n%s"
                                 % (what, "\n".join(board.lines()[-30:])))
        time.sleep(0.05)


def test_board_survives_servers_that_answer_garbage(collector_proc, sim_board, fault_proxy):
    c = collector_proc({DEV: TOK})
    bad_http = BadHTTP()
    bad_ws = BadWS()
    with bad_http.lt, S.websockets_server(bad_ws.handler, subprotocols=["fieldlink.v1"]) as ws:
        fp = fault_proxy(bad_http.lt.port)
        b = sim_board("ws://127.0.0.1:%d/ws" % fp.port, backoff_base_s=0.1, backoff_max_s=0.5,
                      sample_interval_s=0.2)

        # 1. bad answers to the HTTP upgrade: refused, retried through the backoff
        wait_until(lambda: bad_http.conns >= 2 * len(BAD_HTTP), 60, "bad HTTP retries", b)
        fails = b.lines("WARN link: connect: HandshakeError")
        assert len(fails) >= len(BAD_HTTP), "\n".join(b.lines()[-20:])
        assert b.running

        # 2. a WebSocket server that talks garbage, one scenario per connection
        fp.retarget(ws.port)
        wait_until(lambda: len(bad_ws.results) == len(EXPECT), 120, "the bad server scenarios",
                   b)
        expect = {k: ("ignored" if v is None else v) for k, v in EXPECT.items()}
        assert bad_ws.results == expect, "\n".join(b.lines()[-40:])
        assert all(h["t"] == "hello" and h["dev"] == DEV for h in bad_ws.hellos)
        assert b.running

        # 3. then the real collector: it streams, from seq 1 (nothing was acked by the others)
        fp.retarget(c.port)
        fp.reset()
        try:
            seqs = c.wait_seqs(DEV, 20, timeout=60)
        except TimeoutError:
            raise AssertionError("no readings after the bad servers:\n"
                                 + "\n".join(b.lines()[-30:]))
        assert seqs == list(range(1, len(seqs) + 1))
    assert b.running and not b.lines("Traceback")
    assert b.boots == 1      # never crashed, never reset


def test_oversized_message_close_is_orderly(sim_board, fault_proxy):
    bad_ws = BadWS(["oversized"])
    with S.websockets_server(bad_ws.handler, subprotocols=["fieldlink.v1"]) as ws:
        fp = fault_proxy(ws.port)
        b = sim_board("ws://127.0.0.1:%d/ws" % fp.port, backoff_base_s=0.1, backoff_max_s=0.5)
        # until the board has reconnected: its first connection is over on both sides
        wait_until(lambda: "oversized" in bad_ws.results and fp.accepted >= 2, 60,
                   "the oversized scenario", b)
    assert b.lines("protocol error 1009: message over 16384 bytes")   # the board did fail it
    assert b.running and not b.lines("Traceback")
    # §7.1.1: after its 1009 close frame the board read (and dropped) the rest of the message
    # until the server closed TCP, so it never reset the connection (closing with unread data
    # sends RST, which may destroy the close frame before the server reads it)
    assert "reset" not in fp.board_ends, (fp.board_ends, bad_ws.results)
    assert bad_ws.results["oversized"] == 1009
