"""A fault-injecting TCP proxy for the fault campaign: sits between the (virtual) board and the
collector and does what field networks do. Runs its own asyncio loop in a thread so tests
drive it with plain calls:

    with FaultProxy("127.0.0.1", collector_port) as fp:
        board_url = "ws://127.0.0.1:%d/ws" % fp.port
        fp.reset()                 # RST every open connection
        fp.set_mode("blackhole")   # stop forwarding, keep the sockets open (half-open link)
        fp.set_mode("delay", delay_s=0.5)
        fp.set_mode("slow")        # read from the board a few bytes at a time (slow reader)
        fp.garbage(b"\\xff\\x00junk")   # bytes to the board, mid-stream
        fp.garbage_text("not json")  # a well-formed WebSocket text frame holding garbage
        fp.set_mode("pass")
        fp.retarget(port2)         # new connections go elsewhere (e.g. from a bad server to
                                   # the real collector); open ones are left alone

Counters: `accepted` (connections from boards), `accept_times` (time.monotonic() of each:
the server-side view of how often a board tries), `board_ends` ("eof" or "reset": how the
board closed each connection it closed itself), `bytes_up`, `bytes_down`.
"""
import asyncio
import socket
import struct
import threading
import time

MODES = ("pass", "blackhole", "delay", "slow")


class _Conn:
    def __init__(self, cr, cw, sr, sw):
        self.cr, self.cw, self.sr, self.sw = cr, cw, sr, sw
        self.tasks = []


class FaultProxy:
    def __init__(self, target_host, target_port, host="127.0.0.1", port=0):
        self.target = (target_host, target_port)
        self.host = host
        self.port = port
        self.mode = "pass"
        self.delay_s = 0.0
        self.slow_bytes = 64        # per slow read
        self.slow_interval_s = 0.2
        self.accepted = 0
        self.accept_times = []      # time.monotonic() of every accepted connection
        self.board_ends = []        # how each board connection ended: "eof" or "reset"
        self.bytes_up = 0           # board -> server, forwarded
        self.bytes_down = 0         # server -> board, forwarded
        self._conns = set()
        self._loop = None
        self._server = None
        self._thread = None
        self._ready = threading.Event()

    # ---- control (thread-safe) ----

    def start(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def stop(self):
        if self._loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        try:
            fut.result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def set_mode(self, mode, delay_s=None):
        if mode not in MODES:
            raise ValueError("mode: one of %s" % ", ".join(MODES))
        if delay_s is not None:
            self.delay_s = delay_s
        self.mode = mode

    def retarget(self, target_port, target_host=None):
        """Forward new connections to another server (open connections keep their peer)."""
        self.target = (target_host or self.target[0], target_port)

    def reset(self):
        """Abort every connection with a TCP RST (SO_LINGER 0)."""
        self._call(self._reset())

    def garbage(self, data):
        """Raw bytes to every connected board, in the middle of the stream."""
        self._call(self._to_boards(bytes(data)))

    def garbage_text(self, text):
        """A valid, unmasked WebSocket text frame (RFC 6455 section 5.2) with garbage in it:
        the WebSocket layer accepts it, the app protocol must refuse it."""
        payload = text.encode()
        n = len(payload)
        if n < 126:
            head = bytes([0x81, n])
        else:
            head = bytes([0x81, 126]) + struct.pack(">H", n)
        self._call(self._to_boards(head + payload))

    @property
    def connections(self):
        return len(self._conns)

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # ---- the loop ----

    def _run(self):
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # a small receive buffer (inherited by accepted sockets) lets "slow" back up the board
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._accept, sock=sock))
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _shutdown(self):
        self._server.close()
        await self._reset()

    async def _accept(self, cr, cw):
        self.accepted += 1
        self.accept_times.append(time.monotonic())
        try:
            sr, sw = await asyncio.open_connection(*self.target)
        except OSError:
            _abort(cw)
            return
        c = _Conn(cr, cw, sr, sw)
        self._conns.add(c)
        c.tasks = [asyncio.ensure_future(self._pump(c, cr, sw, True)),
                   asyncio.ensure_future(self._pump(c, sr, cw, False))]

    async def _pump(self, c, r, w, up):
        try:
            while True:
                if up and self.mode == "slow":
                    data = await r.read(self.slow_bytes)
                    await asyncio.sleep(self.slow_interval_s)
                else:
                    data = await r.read(65536)
                if not data:
                    if up:
                        self.board_ends.append("eof")
                    break
                if self.mode == "blackhole":
                    continue  # swallowed: the peer's TCP sees nothing wrong
                if self.mode == "delay" and self.delay_s:
                    await asyncio.sleep(self.delay_s)
                w.write(data)
                await w.drain()
                if up:
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
        except ConnectionResetError:
            if up:
                self.board_ends.append("reset")
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._drop(c)

    def _drop(self, c, hard=False):
        if c in self._conns:
            self._conns.discard(c)
            for t in c.tasks:
                t.cancel()
            for w in (c.cw, c.sw):
                _abort(w) if hard else _close(w)

    async def _reset(self):
        for c in list(self._conns):
            self._drop(c, hard=True)

    async def _to_boards(self, data):
        for c in list(self._conns):
            c.cw.write(data)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _close(w):
    try:
        w.close()
    except Exception:
        pass


def _abort(w):
    try:
        s = w.get_extra_info("socket")
        if s is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.transport.abort()
    except Exception:
        pass
