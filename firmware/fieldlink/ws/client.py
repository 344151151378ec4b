"""asyncio WebSocket client: the thin I/O shell around the sans-I/O core (protocol.py).
connect() opens ws:// or wss://, runs the opening handshake, then one reader task (and one
keepalive task) drive the connection. See docs/websocket.md for the API and its limits."""

import asyncio
import os

from .errors import ConnectionClosed, LinkDead, ProtocolError, WSError
from .frames import Encoder
from .protocol import CLOSED, OPEN, Protocol

TYPE_CHECKING = False
if TYPE_CHECKING:  # mypy only: MicroPython has no typing module
    from typing import Any

try:  # MicroPython: drive the non-blocking socket through asyncio's own poller
    from asyncio import core as _core  # type: ignore[attr-defined]  # (not in the stubs)
    import micropython
    from micropython import const
except ImportError:  # CPython: asyncio streams
    _core = None
    const = lambda x: x  # noqa: E731

try:
    from time import ticks_diff, ticks_ms
except ImportError:
    import time

    def ticks_ms():
        return int(time.monotonic() * 1000)  # type: ignore[attr-defined]  # (CPython's time)

    def ticks_diff(a, b):
        return a - b

_READ_BUF = const(1024)  # bytes read from the socket at once (one preallocated buffer)
_CLOSE_WAIT_S = const(5)  # §7.1.1: how long we wait for the server's close frame / TCP close
_EOF = "eof"             # handed from recv() to the reader: the server closed TCP
_OP_CLOSE = const(0x8)   # frames.OP_CLOSE: events below it are messages (protocol.py)
_OP_PONG = const(0xA)    # frames.OP_PONG
_FAST_MAX = const(496)   # send()'s fast path (_viper_src.SEND): text up to this many bytes


if _core is None:  # CPython (not defined on MicroPython: no heap spent on it)
    class _Ready:
        """An awaitable that is already done: what send() returns when the frame went out in
        one write (on MicroPython, the exhausted iterator itself, which needs no new object)."""

        def __await__(self):
            return iter(())

    _READY = _Ready()  # type: Any
else:  # On MicroPython `await` takes the exhausted iterator itself: no method call at all.
    # (the viper send path returns its own one: _READY is rebound to it at the end)
    _READY = iter(range(0))


class _SocketIO:
    """MicroPython: the socket itself, non-blocking; waits go through asyncio's IOQueue. A
    write goes straight to the socket; only when the kernel takes less than all of it is the
    rest kept and awaited (the hot path costs one write() call and no allocation)."""

    direct = True  # WebSocket.send may write to .s itself while .idle

    def __init__(self):
        self.s = None  # type: Any  # the socket, once open() made it
        self.idle = True       # no backlog: a new frame may go straight to the socket
        self._backlog = None   # bytes a short write left, written before anything newer
        self._retry = 0        # length to pass on the retry (TLS wants the same length again)
        self.plain = True      # not TLS
        self.poll_first = False  # readinto() waits for data before reading
        self._wlock = asyncio.Lock()

    def write(self, buf, n):
        """Write buf[0:n]; returns an awaitable that completes once it is all written."""
        if self._backlog is None:
            w = self.s.write(buf, 0, n)
            if w == n:
                return _READY
            return self.keep(buf, w, n)
        self._backlog.extend(memoryview(buf)[:n])
        return self._drain()

    def keep(self, buf, w, n, off=0):
        # Of buf[off:off + n] the kernel took w bytes (None: none). Keep the rest; a TLS
        # socket must be offered the same length again after it would have blocked.
        if w is None:
            self._retry = n
            w = 0
        else:
            self._retry = n - w
        self._backlog = bytearray(memoryview(buf)[off + w:off + n])
        self.idle = False
        return self._drain()

    async def _drain(self):
        async with self._wlock:  # one task at a time waits for the socket to take more
            while self._backlog is not None:
                await _wait_writable(self.s)
                bl = self._backlog
                w = self.s.write(bl, 0, self._retry)
                if w is None:
                    continue
                if w >= len(bl):
                    self._backlog = None
                    self.idle = True
                else:
                    self._backlog = bl = bl[w:]
                    self._retry = len(bl)

    def readinto(self, buf):
        s = self.s
        if self.poll_first:
            # The last read did not fill buf: the kernel buffer is most likely empty, so wait
            # for data before reading (saves a read() that would fail with EAGAIN).
            yield _core._io_queue.queue_read(s)
        while True:
            n = s.readinto(buf)
            if n is not None:
                # Not with TLS: decrypted bytes may wait inside mbedTLS, where poll cannot see.
                self.poll_first = n < len(buf) and self.plain
                return n
            yield _core._io_queue.queue_read(s)

    def close(self):
        if self.s is not None:
            try:
                self.s.close()
            except OSError:
                pass


def _wait_writable(s):
    yield _core._io_queue.queue_write(s)


if _core is None:  # CPython only
    class _StreamIO:
        """CPython: asyncio streams (the TLS handshake happens inside open())."""

        direct = False

        def __init__(self):
            self.r = self.w = None  # type: Any  # the streams, once open() made them

        def write(self, buf, n):
            self.w.write(bytes(memoryview(buf)[:n]))
            return self.w.drain()

        async def readinto(self, buf):
            data = await self.r.read(len(buf))
            buf[:len(data)] = data
            return len(data)

        def close(self):
            if self.w is not None:
                self.w.close()

    _IO = _StreamIO  # type: Any
else:
    _IO = _SocketIO


_OPENING = ("opening", "handshake", "tls")  # modules loaded only while connect() runs

# The per-connection buffers of a finished connection, [read buffer (1 KiB), Encoder (frame
# buffer and key pool)], kept for the next connect(): after hours of streaming the heap is
# fragmented and may have plenty free but no 1 KiB block left, so a reconnect that had to
# allocate them failed with MemoryError. One set: connect() takes it (two open WebSockets
# never share a buffer); a WebSocket hands its own back once nothing of it can touch them
# again (WebSocket._release).
_spare = [None, None]  # type: list[Any]


def reserve(frame_bytes=512):
    """Allocate the next connect()'s buffers now: the read buffer and a frame encoder whose
    buffer holds a message of `frame_bytes` without growing. A board calls this at boot,
    while its heap is not yet fragmented, with the size of the messages it sends most;
    otherwise the encoder's buffer grows at the first bigger message, mid-stream, when a
    block of that size may no longer be free (seen at 128k: 750 B for a batch, MemoryError)."""
    if _spare[0] is None:
        _spare[1] = Encoder(os.urandom, frame_bytes + 14)  # (+ a frame header's most)
        _spare[0] = bytearray(_READ_BUF)


async def connect(url, headers=None, subprotocols=None, ca_file=None, connect_timeout_s=10,
                  handshake_timeout_s=10, ping_interval_s=20, ping_timeout_s=10,
                  max_message=16384):
    """Open a WebSocket connection; returns a WebSocket. Raises WSError subclasses only."""
    sp = _spare
    rbuf, enc = sp
    sp[0] = sp[1] = None
    if rbuf is None:
        # The first connection (or the spare set was dropped): allocated before the opening
        # code is loaded, so they do not land in the space it leaves behind.
        rbuf = bytearray(_READ_BUF)
        enc = Encoder(os.urandom)
    # The opening code (opening.py, handshake.py and for wss:// tls.py: ~7 KiB of heap on the
    # unix port) is loaded only while connecting and dropped after, unless something else
    # had loaded it.
    import sys
    pkg = __name__.rsplit(".", 1)[0]
    keep = []
    for n in _OPENING:
        if pkg + "." + n in sys.modules:
            keep.append(n)
    try:
        try:
            from . import opening
            io = _IO()
            sub, rest = await opening.open_ws(io, rbuf, url, headers, subprotocols, ca_file,
                                              connect_timeout_s, handshake_timeout_s)
        finally:
            for n in _OPENING:
                if n not in keep and sys.modules.pop(pkg + "." + n, None) is not None:
                    delattr(sys.modules[pkg], n)  # the import set it on the package too
        try:
            return WebSocket(io, rbuf, sub, rest, ping_interval_s, ping_timeout_s,
                             max_message, enc)
        except BaseException:  # a MemoryError on a small heap: do not leave the socket open
            io.close()
            raise
    except BaseException:
        # Nothing reads into rbuf any more (open_ws has returned or raised; a reader task
        # cancelled before it started never ran): the next attempt takes them again.
        _give_back(rbuf, enc)
        raise


def _give_back(rbuf, enc):
    enc.out = enc.buf  # (not a big frame's one-off buffer)
    if _spare[0] is None and len(rbuf) == _READ_BUF:  # (a test's WebSocket may have another)
        _spare[0], _spare[1] = rbuf, enc


class WebSocket:
    """An open connection. send()/recv()/close()/abort(); `subprotocol`, `closed`."""

    def __init__(self, io, rbuf, subprotocol, early, ping_interval_s, ping_timeout_s,
                 max_message, enc=None):
        self.subprotocol = subprotocol
        self._io = io
        # (23 attributes at most: an instance's attribute table grows 17 -> 23 -> 29 slots,
        # 16 bytes each, and each growth is a new allocation while connecting)
        self._p = Protocol(max_message, enc=enc)
        self._rbuf = rbuf  # type: Any  # with enc, the next connect()'s once this one ended
        self._msgs = []          # messages received and not yet taken by recv()
        self._waiting = 0        # recv() calls waiting for a message
        self._rmv = memoryview(rbuf)  # type: Any
        self._rd_busy = True     # the reader task waits on the socket (or has not started)
        self._here = False       # a recv() reads the socket itself (_read_here)
        self._turn = asyncio.Event()  # set when that recv() is done: the reader reads again
        # what ended that recv()'s reading: _EOF or an exception
        self._handoff = None  # type: Any
        self._queued = 0         # their size; the reader pauses once it reaches max_message
        # why the connection ended, raised once the queue is empty
        self._exc = None  # type: WSError | None
        self._got = asyncio.Event()    # a message arrived or the connection ended
        self._room = asyncio.Event()   # recv() took a message
        self._done = asyncio.Event()   # the reader finished and closed the socket
        self._pings = {}         # payload -> Event, for ping()
        self._last_rx = ticks_ms()
        self._sock = io.s if io.direct else None  # type: Any
        # the Encoder's key pool while send() may take its fast path, and its buffer, where
        # the fast path builds frames
        self._fast = self._fbuf = None  # type: Any
        self._update_fast()
        self._keeper = None
        # The tasks come last: a MemoryError above must not leave a reader task running on a
        # half-built object (it met an AttributeError for _keeper on a 144k heap once).
        self._reader = asyncio.create_task(self._read_loop(early))
        if ping_interval_s:
            try:
                self._keeper = asyncio.create_task(
                    self._keepalive(ping_interval_s, ping_timeout_s))
            except BaseException:
                self._reader.cancel()
                raise

    @property
    def closed(self):
        """True once the closing handshake started or the connection is gone."""
        return self._exc is not None or self._p.state != OPEN

    # --- public API ----------------------------------------------------------------------
    def send(self, data):
        """str -> text frame, bytes-like -> binary frame. Use as `await ws.send(data)`.
        The frame is built in a reused buffer and written with one write; the await only
        waits when the socket could not take it all. On MicroPython, short text takes the
        viper fast path (_viper_src.SEND), which becomes WebSocket.send at the end of this
        file; this method is then WebSocket._send, where the fast path hands over
        everything else: binary, big frames, closed, a backlog."""
        return self._out(data, False)

    def send_utf8(self, buf, n=-1):
        """A text frame from a bytes-like of UTF-8 the caller vouches for (not re-checked),
        without a str: the app sends batches built in a reused buffer this way, so a message
        costs no allocation (on a small heap those fragmented it). n >= 0: the first n bytes
        of buf (no view to cut). The frame is built before this returns: the buffer may
        change after. `await ws.send_utf8(b)`."""
        return self._out(buf, True, n)

    def _out(self, data, text, n=-1):
        if self._exc is not None:
            raise self._exc
        p = self._p
        try:
            n = p.send_message(data, text, n)  # raises once closing/closed
            aw = self._io.write(p.enc.out, n)
        except OSError:
            raise self._lost("send failed")
        if aw is _READY:
            self._update_fast()
            return aw
        self._fast = None
        return self._wait_sent(aw)

    def _short(self, buf, w, off, n):
        self._fast = None
        return self._wait_sent(self._io.keep(buf, w, n, off))

    async def _wait_sent(self, aw):
        try:
            await aw
        except OSError:
            raise self._lost("send failed")
        self._update_fast()

    def _update_fast(self):
        # The fast path may run only while nothing it skips could matter.
        e = self._p.enc
        ok = (self._sock is not None and self._exc is None and self._p.state == OPEN
              and self._io.idle and len(e.buf) >= _FAST_MAX + 16)
        self._fbuf = e.buf
        self._fast = e._pool if ok else None

    async def recv(self):
        """The next message (str or bytes). Raises ConnectionClosed (or ProtocolError /
        LinkDead) once the connection has ended and every received message was taken."""
        while True:
            if self._msgs:
                m = self._msgs.pop(0)
                self._queued -= len(m)
                self._room.set()
                return m
            if self._exc is not None:
                raise self._exc
            if not (self._rd_busy or self._here) and self._handoff is None \
                    and self._p.state == OPEN:
                m = await self._read_here()
                if m is not None:
                    return m
                continue
            self._got.clear()
            self._waiting += 1
            try:
                await self._got.wait()
            finally:
                self._waiting -= 1

    async def _read_here(self):
        # The reader task is not waiting on the socket (it is between reads): read it here
        # instead, so a message reaches this recv() without a round through the scheduler.
        # The reader waits for its turn meanwhile; what ends the connection here (EOF, a
        # socket error, a protocol error) is handed to it to handle as if it had read it.
        # Returns a message that arrived alone in one read (straight to the caller, never
        # queued), or None when what was read went the usual way (see _msgs).
        self._here = True
        p = self._p
        try:
            while not self._msgs and self._exc is None and p.state == OPEN:
                n = await self._io.readinto(self._rbuf)
                if not n:
                    self._handoff = _EOF
                    return None
                self._last_rx = ticks_ms()
                try:
                    m = p.receive_message(self._rmv[:n])
                finally:
                    self._deliver()
                    if p.state != OPEN:
                        self._fast = None  # a close frame or a failure ends it
                if m is not None:
                    return m
                out = p.data_to_send()
                if out:
                    await self._write_out(out)
        except (ProtocolError, OSError) as e:
            self._handoff = e
        finally:
            self._here = False
            self._turn.set()
            self._release()  # (if the reader finished meanwhile)
        return None

    async def ping(self, payload=b""):
        """Send a ping and wait for its pong (wrap in asyncio.wait_for to bound it)."""
        payload = bytes(payload)
        ev = self._pings.get(payload)
        if ev is None:
            ev = self._pings[payload] = asyncio.Event()
        await self._send_control(self._p.send_ping, payload)
        await ev.wait()
        exc = self._exc
        if exc is not None and self._pings.get(payload) is ev:
            raise exc  # woken by the end of the connection, not a pong

    async def close(self, code=1000, reason=""):
        """Closing handshake (§7.1.2): send our close frame, wait (at most 5 s) for the
        server's and for it to close TCP. Never raises for a connection already gone."""
        if self._done.is_set():
            return
        if self._p.state == OPEN:
            try:
                await self._send_control(self._p.send_close, code, reason)
            except WSError:
                pass
        try:
            await asyncio.wait_for(self._done.wait(), _CLOSE_WAIT_S)
        except asyncio.TimeoutError:
            self._reader.cancel()
            await self._done.wait()

    def abort(self):
        """End the connection now, without a closing handshake: for when one cannot be
        afforded (no heap for it) or cannot complete (a blackholed link). Stops the reader and
        closes the socket; recv() then raises ConnectionClosed 1006, close() returns at once.
        The reader's own ending would do the rest, but a reader cancelled before it first
        ran never runs its cleanup."""
        self._fast = None
        self._reader.cancel()  # first: the cancel takes its socket off the poller
        self._io.close()
        if self._exc is None:
            self._exc = ConnectionClosed(1006, "aborted")
        self._wake()
        self._done.set()

    # --- internals -----------------------------------------------------------------------
    async def _send_control(self, queue_it, *args):
        # queue_it(*args): the protocol's send_ping or send_close
        if self._exc is not None:
            raise self._exc
        queue_it(*args)
        self._update_fast()  # a close frame ends the fast path
        out = self._p.data_to_send()
        if out:
            try:
                await self._write_out(out)
            except OSError as e:
                raise self._lost(e)

    async def _write_out(self, out):
        # control frames go through the same ordered path as messages
        aw = self._io.write(out, len(out))
        if aw is not _READY:
            self._fast = None  # bytes are queued: send() must queue behind them
            await aw
            self._update_fast()

    def _lost(self, e):
        self._fast = None
        if self._exc is None:
            self._exc = ConnectionClosed(1006, "connection lost: %s" % (e,))
            self._reader.cancel()
        return self._exc

    def _deliver(self):
        for op, x in self._p.events_received():
            if op < _OP_CLOSE:  # a message (text or binary)
                self._msgs.append(x)
                self._queued += len(x)
                self._got.set()
            elif op == _OP_PONG:
                w = self._pings.pop(x, None)
                if w is not None:
                    w.set()

    async def _read_loop(self, early):
        p = self._p
        io = self._io
        rbuf = self._rbuf
        mv = self._rmv
        exc = None  # type: WSError | None
        try:
            data = early
            while True:
                h = self._handoff
                if h is not None:  # what a recv() reading the socket ran into
                    self._handoff = None
                    if h is _EOF:
                        break
                    raise h
                if data:
                    woke = self._waiting and not self._msgs
                    try:
                        p.receive_data(data)
                    finally:
                        self._deliver()
                        if p.state != OPEN:
                            self._fast = None  # a close frame or a failure ends it
                    out = p.data_to_send()  # pongs, our close frame
                    data = None
                    self._rd_busy = False  # (the early bytes too: a recv() may read next)
                    if out:
                        await self._write_out(out)
                    if woke and self._msgs:
                        # A recv() was waiting and now has its message: let it run first (the
                        # app's reply goes out sooner; its next recv() may read the socket
                        # itself); we read again after it.
                        await asyncio.sleep(0)
                    continue
                if p.state != OPEN and p.close_code is not None:
                    # The server's close frame arrived (and ours went out): §7.1.1 says the
                    # server closes TCP first; give it a moment, then close ourselves.
                    try:
                        while await asyncio.wait_for(io.readinto(rbuf), _CLOSE_WAIT_S):
                            pass
                    except asyncio.TimeoutError:
                        pass
                    break
                while self._queued >= self._p.max_message:
                    self._room.clear()  # backpressure: the app has not taken its messages
                    await self._room.wait()
                if self._here:  # a recv() is reading the socket: wait until it is done
                    self._turn.clear()
                    await self._turn.wait()
                    continue
                self._rd_busy = True
                n = await io.readinto(rbuf)
                self._rd_busy = False
                if not n:
                    break
                self._last_rx = ticks_ms()
                data = mv[:n]
        except ProtocolError as e:
            exc = e
            out = p.data_to_send()  # §7.1.7: our close frame with the failure code
            try:
                aw = io.write(out, len(out)) if out else _READY  # (out at once, usually)
            except OSError:
                aw = None  # the socket is gone: nothing to wait for
            if self._exc is None:
                self._exc = e
            self._wake()  # recv()/ping()/send() see the failure now, not after the wait below
            if aw is not None:
                try:
                    await asyncio.wait_for(self._drain_rest(aw), _CLOSE_WAIT_S)
                except (OSError, ValueError, asyncio.TimeoutError):
                    pass  # reset, TLS error or deadline: close now
        except OSError as e:
            if p.close_code is None or p.failure is not None:
                exc = ConnectionClosed(1006, "connection lost: %s" % (e,))
            # else the server's close frame arrived, so a reset after it (sent instead of a
            # FIN by Autobahn's server and load balancers) loses nothing: §7.1.5, the close
            # code is the one in that frame (set below)
        except MemoryError:
            # A small, fragmented heap: the connection ends like a lost one (the owner
            # reconnects) instead of this task dying with an exception nobody awaits.
            exc = ConnectionClosed(1006, "connection lost: no memory")
        finally:
            self._fast = None
            io.close()
            if self._exc is None:
                if exc is not None:
                    self._exc = exc
                elif p.close_code is not None:
                    self._exc = p.closed_error()  # the server's close code and reason
                else:
                    self._exc = ConnectionClosed(1006, "connection lost")
            self._wake()
            self._done.set()
            if self._keeper is not None:
                self._keeper.cancel()
            self._release()

    def _release(self):
        # Hand rbuf and the Encoder to the next connect() once nothing here can use them: the
        # reader has finished (socket closed, _exc set: send(), ping() and recv() raise
        # before framing or reading) and no recv() is reading into rbuf (_read_here).
        rbuf = self._rbuf
        if rbuf is None or self._here or not self._done.is_set():
            return
        p = self._p
        p.state = CLOSED  # the Protocol frames nothing more: its Encoder is no longer its own
        self._rbuf = self._rmv = self._fbuf = self._fast = None
        _give_back(rbuf, p.enc)

    def _wake(self):
        for ev in self._pings.values():
            ev.set()  # wake ping() callers; they see their payload still unanswered
        self._got.set()

    async def _drain_rest(self, aw):
        # After failing the connection: wait until our close frame is written (aw), then
        # §7.1.1: the server closes TCP first, so read until its EOF (the caller bounds the
        # time), dropping what arrives into the one read buffer (nothing kept, whatever it
        # sends). Closing at once would leave unread data (the rest of an oversized message)
        # and the kernel would send RST, which may destroy our close frame at the server.
        if aw is not _READY:  # the socket was backed up
            await aw
        io = self._io
        rbuf = self._rbuf
        while await io.readinto(rbuf):
            pass

    async def _keepalive(self, interval_s, timeout_s):
        iv = int(interval_s * 1000)
        to = int(timeout_s * 1000) if timeout_s else 0
        while self._exc is None:
            idle = ticks_diff(ticks_ms(), self._last_rx)
            if idle < iv:
                await asyncio.sleep((iv - idle) / 1000)
                continue
            if self._queued >= self._p.max_message:
                self._last_rx = ticks_ms()  # paused by backpressure: nothing to judge
                continue
            sent_at = ticks_ms()
            try:
                await self._send_control(self._p.send_ping, b"ka")  # keepalive ping
            except WSError:
                return
            except MemoryError:
                # No heap for the ping: try again shortly (this task must not end, or a
                # half-open link would go unnoticed); silent for interval + timeout with no
                # ping out is dead all the same, within the promised bound.
                if to and idle >= iv + to:
                    self._dead(timeout_s)
                    return
                await asyncio.sleep(0.1)
                continue
            if not to:
                self._last_rx = sent_at  # no deadline: just ping again after the interval
                continue
            await asyncio.sleep(to / 1000)
            if ticks_diff(self._last_rx, sent_at) < 0 and self._exc is None:
                # Nothing at all (pong or data) since the ping: the link is dead.
                self._dead(timeout_s)
                return

    def _dead(self, timeout_s):
        self._fast = None
        self._exc = LinkDead("no pong or data within %s s of a ping" % timeout_s)
        self._reader.cancel()


# MicroPython: send() becomes the viper fast path for short text (_viper.send, compiled on
# the board at import from _viper_src.SEND); where it could not be compiled, the general
# send() above serves.
try:
    from ._viper import READY as _READY, send as _fast_send  # noqa: F811
    if _fast_send is not None:
        WebSocket._send = WebSocket.send  # type: ignore[attr-defined]  # its fallback
        WebSocket.send = _fast_send  # type: ignore[method-assign]
    del _fast_send
except ImportError:  # CPython, or no viper emitter
    pass
