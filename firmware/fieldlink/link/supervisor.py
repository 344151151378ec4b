"""The link supervisor: the connection's whole life, one state at a time (state.py):
Wi-Fi, then DNS, TCP, TLS and the WebSocket handshake, then hello/welcome (the resume point),
then streaming; after any failure one backoff, then Wi-Fi again.

Each state's step returns its event or raises. Whatever it raises goes through _failed(), the
one failure path: the connection closed, the failure classified (backoff.classify), the delay
drawn from the backoff. While streaming, four tasks run (reader, sender, health, monitor); the
first to fail ends the connection and all of them are cancelled before the next attempt.

The steps run seldom are imported for one use and dropped again (_seldom), so their code takes
no heap while streaming: wifi.py (association, clock sync), hello.py (hello/welcome) and
commands.py (server commands).
"""
import asyncio
import gc

TYPE_CHECKING = False
if TYPE_CHECKING:  # mypy only: MicroPython has no typing module
    from typing import Any

from fieldlink.clock import ticks_diff, ticks_ms

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stubs' const is generic
        return x

# The pure core's names are read through the package (link.S_WIFI): one global here instead
# of one per name, each of which the board would keep in this module's globals too.
from fieldlink import lazy, link, log, proto
from fieldlink.ws import client as wsclient

_NTP_EVERY_MS = const(6 * 3600 * 1000)  # re-sync the clock this often (at a link start)
# Bytes per reading the batch buffer is sized for at boot (with its comma): a reading with a
# synced time stamp is ~85-90 B, and a buffer that has to grow mid-stream needs a block the
# heap may no longer have.
_SLOT = const(96)

_log = log.Logger("link")


def _heap_free():
    try:
        return gc.mem_free()
    except AttributeError:  # CPython
        return 0


def _seldom(name):
    """Module `name`, imported for one use: it is forgotten at once, and once the caller's
    frame ends (the step's own, never a long-running one: the VM does not clear a running
    frame's stale slots) nothing keeps its code on the heap."""
    try:
        return lazy.load(name)
    finally:
        lazy.drop(name)


class Supervisor:
    # control_io.Control on a board with outputs (start.make_app sets it); a class attribute,
    # so a board without outputs has not even the slot in each instance
    control = None  # type: Any

    def __init__(self, cfg, outbox, clock, backoff, wlan=None, sampler=None, board="",
                 fw="", reset=None):
        self.cfg = cfg
        self.outbox = outbox
        self.clock = clock
        self.backoff = backoff
        self.wlan = wlan
        self.sampler = sampler
        self.board = board
        self.fw = fw
        self._reset = reset
        self.state = link.S_WIFI
        self.ws = None  # type: Any  # the WebSocket from _connect() until it is closed
        self.reconnects = 0     # connections lost after streaming
        self.connects = 0       # welcomes received
        self.heap_min = _heap_free()
        self.progress_ms = ticks_ms()   # last time the loop provably moved on
        # Spans that can last days (link down, link up, since the last NTP sync) are measured
        # on the clock's uptime: ticks_diff is only right within half the ticks period (~6
        # days on an ESP32), after that a week-long outage or stable link read as negative.
        self.down_since = clock.uptime_ms()  # type: int | None  # link lost; None: streaming
        self._delay = 0
        self._why = None  # type: Any  # what ended the stream: the first task to fail
        self._dead = None
        self._kick = asyncio.Event()
        self._tasks = []        # every task of the current connection, cancelled on failure
        self._stream_start = None
        self._sending = None    # ticks when a send started that has not finished
        # Batch messages are built here from the outbox's buffer (see _sender): allocated at
        # boot (_SLOT bytes a reading), grown once if a batch is bigger, then reused.
        self._bb = memoryview(bytearray(len(proto.BATCH_HEAD) + _SLOT * cfg.batch_max))
        self._bb[:len(proto.BATCH_HEAD)] = proto.BATCH_HEAD
        wsclient.reserve(len(self._bb))  # its frames' buffer too, while the heap is young
        self._batch_n = cfg.batch_max  # halved when a batch does not fit and _bb cannot grow
        self._ntp_at = None
        self._oom = 0           # attempts in a row that failed with MemoryError
        self.skipped = 0        # readings sampled but not kept for lack of heap (App.emit)
        # Firmware updates (docs/ota.md): the session while one runs (ota_flash.Session,
        # loaded for it only); the offer id while this firmware is on trial, and when the
        # trial must have confirmed itself (uptime ms); a rollback report to send.
        self.ota = None  # type: Any
        self.trial = None  # type: str | None
        self.trial_until = None  # type: int | None
        self.ota_notes = False

    # ---- the state machine ----

    def _go(self, ev):
        nxt = link.next_state(self.state, ev)
        if nxt is None:
            _log.error("no transition from %s on event %d", link.STATE_NAMES[self.state], ev)
            nxt = link.S_BACKOFF
        _log.debug("%s -> %s", link.STATE_NAMES[self.state], link.STATE_NAMES[nxt])
        self.state = nxt

    async def run(self):
        while True:
            self.mark()
            st = self.state
            try:
                if st == link.S_WIFI:
                    ev = await self._wifi()
                elif st == link.S_CONNECT:
                    ev = await self._connect()
                elif st == link.S_HELLO:
                    ev = await self._hello()
                elif st == link.S_STREAM:
                    ev = await self._stream()
                else:
                    ev = await self._backoff()
            except Exception as e:
                # Whatever a step raises, expected or not (e.g. a flash write in the outbox),
                # goes through the one failure path: this task must not end, or the board
                # would sample on without ever sending again.
                ev = link.E_TIMER if st == link.S_BACKOFF else await self._failed(e, st)
            self._go(ev)

    def mark(self):
        """The loop made progress (the watchdog is fed only while this keeps happening)."""
        self.progress_ms = ticks_ms()

    def kick(self):
        """Something to send (a new reading): wake the sender."""
        self._kick.set()

    # ---- the one failure path ----

    async def _failed(self, e, st):
        """Close the connection (if any), then what `e` means: the event, the delay set."""
        ws = self.ws
        self.ws = None
        try:
            await self._close(ws, getattr(e, "code", proto.CLOSE_GOING_AWAY), str(e))
            where = link.STATE_NAMES[st]
            up_for = None
            if self._stream_start is not None:
                up_for = (self.clock.uptime_ms() - self._stream_start) / 1000
                self._stream_start = None
                self.reconnects += 1
            if self.down_since is None:
                self.down_since = self.clock.uptime_ms()
            if isinstance(e, MemoryError):
                self._oom += 1
            b = self.backoff
            v = link.classify(e, up_for, b.stable_after, self._oom, self.connects)
            if v == link.REFUSED:
                self._delay = b.penalty()
                _log.error("%s: refused (%d): check device_id and token; retry in %d s",
                           where, e.status, self._delay)
                return link.E_REFUSED
            if v == link.RETRY:
                b.reset()
            self._delay = b.next_delay()
            _log.warn("%s: %s: %s; retry in %.1f s", where, type(e).__name__, e, self._delay)
            if v == link.REBOOT:
                _log.error("no heap for a connection %d times in a row: clean reboot", self._oom)
                self.reset_now()
            return link.E_FAIL
        except MemoryError:
            # Not even heap for the failure path (a coroutine for the close): this task must
            # not end for it. End the connection without a handshake, collect, back off at
            # least a second.
            if ws is not None:
                ws.abort()
            gc.collect()
            if self._delay < 1:
                self._delay = 1
            return link.E_FAIL

    # ---- states ----

    async def _wifi(self):
        w = self.wlan
        c = self.cfg
        at = self._ntp_at
        ntp_due = bool(c.ntp_host) and (at is None or self.clock.uptime_ms() - at >
                                        _NTP_EVERY_MS)
        up = w is None or w.isconnected()
        if up and not ntp_due:
            return link.E_OK
        m = _seldom("fieldlink.link.wifi")
        if not up:
            await m.associate(w, c.wifi_ssid, c.wifi_password, c.wifi_timeout_s)
        if ntp_due:
            self.mark()
            await m.sync_clock(self.clock, c.ntp_host)
            self._ntp_at = self.clock.uptime_ms()
        return link.E_OK

    async def _connect(self):
        c = self.cfg
        headers = {"Authorization": "Bearer " + c.token, "X-Fieldlink-Device": c.device_id}
        try:
            # the client bounds TCP connect and TLS+handshake; this outer deadline also
            # covers DNS on ports where getaddrinfo yields
            ws = await asyncio.wait_for(wsclient.connect(  # type: wsclient.WebSocket
                c.url, headers=headers, subprotocols=[proto.SUBPROTOCOL], ca_file=c.ca_file,
                connect_timeout_s=c.connect_timeout_s, handshake_timeout_s=c.connect_timeout_s,
                ping_interval_s=c.ping_interval_s, ping_timeout_s=c.ping_timeout_s,
                max_message=16384), 2 * c.connect_timeout_s + 1)
        except asyncio.TimeoutError:
            raise link.LinkFailure("connect: no answer")
        self.ws = ws
        if ws.subprotocol != proto.SUBPROTOCOL:
            raise proto.ProtoError(proto.CLOSE_PROTOCOL, "server selected subprotocol %r, "
                                   "need %s" % (ws.subprotocol, proto.SUBPROTOCOL))
        return link.E_OK

    async def _hello(self):
        await _seldom("fieldlink.link.hello").run(self.ws, self.cfg, self.outbox, self.clock,
                                                  self.fw, self.board, self.control)
        self.connects += 1
        if self.trial or self.ota_notes:
            await self.ota_step("welcome")
        return link.E_OK

    async def ota_step(self, what, arg=None):
        """Firmware updates (docs/ota.md): "offer" (the `ota` message), "chunk" (a binary
        message), "welcome" (report a trial or a rollback), "ack" (confirm the trial),
        "expired" (give the trial up). ota_flash.step does the work: loaded while an update
        runs, or for one step, then dropped. Binary with no update running is refused as
        before (1003)."""
        if self.ota is None:
            if what == "chunk":
                raise proto.ProtoError(proto.CLOSE_BINARY, "binary message")
            from fieldlink.app import _mem  # (resident)
            arg = (arg, _mem()[0])  # the live heap before the update's code is loaded
        try:
            await lazy.load("fieldlink.ota_flash").step(self, what, arg)
        finally:
            if self.ota is None:
                self.ota_drop()

    def ota_drop(self):
        self.ota = None
        lazy.drop("fieldlink.ota_flash")
        lazy.drop("fieldlink.ota")

    async def _stream(self):
        self._stream_start = self.clock.uptime_ms()
        self.down_since = None
        self._oom = 0
        self._why = None
        self._dead = asyncio.Event()
        self._kick.set()
        for f in (self._reader, self._sender, self._health_loop, self._monitor):
            self._tasks.append(asyncio.create_task(self._guard(f())))
        try:
            await self._dead.wait()
        finally:
            await self._teardown()
        raise self._why  # (set by the task that ended the connection)

    async def _teardown(self):
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except BaseException:  # CancelledError (a BaseException on both interpreters)
                pass
        self._tasks = []
        ws = self.ws
        self.ws = None
        self._sending = None
        if self.ota is not None:
            self.ota_drop()  # the server offers it again on the next connection: resumed
        if ws is not None:
            await self._close(ws, getattr(self._why, "code", proto.CLOSE_GOING_AWAY),
                              str(self._why))

    async def _close(self, ws, code, reason):
        if ws is None:
            return
        if not isinstance(code, int) or code < 1000 or code in (1005, 1006, 1015):
            code = proto.CLOSE_GOING_AWAY
        try:
            await asyncio.wait_for(ws.close(code, reason[:60]), 3)
        except Exception:
            pass
        ws.abort()  # a blackholed link can leave the closing handshake waiting

    async def _backoff(self):
        t0 = ticks_ms()
        limit = int(self._delay * 1000)
        while True:
            left = limit - ticks_diff(ticks_ms(), t0)
            if left <= 0:
                return link.E_TIMER
            self.mark()
            await asyncio.sleep(min(left, 1000) / 1000)

    # ---- streaming tasks ----

    async def _guard(self, coro):
        try:
            await coro
            self._end(link.LinkFailure("task ended"))
        except Exception as e:
            self._end(e)

    def _end(self, e):
        if self._why is None:
            self._why = e
        if self._dead is not None:
            self._dead.set()

    async def _send(self, text, n=-1):
        # n >= 0: text is UTF-8 bytes, of which the first n go (the batch buffer, uncut)
        self._sending = ticks_ms()
        await (self.ws.send_utf8(text, n) if n >= 0 else self.ws.send(text))
        self._sending = None
        self.mark()

    async def _reader(self):
        ws = self.ws
        ob = self.outbox
        while True:
            m = await ws.recv()
            self.mark()
            if not isinstance(m, str):
                await self.ota_step("chunk", m)
                continue
            ev = proto.parse_server(m)  # ProtoError: closed with its code in _teardown
            t = ev[0]
            if t == "ack":
                ob.ack(ev[1])
                self._kick.set()
                if self.trial:
                    await self.ota_step("ack")
            elif t == "cmd":
                await self._command(ev)
            elif t == "desired" and self.control is not None:  # (else: ignored)
                await self.control.desired(self, m)
            elif t == "ota":
                await self.ota_step("offer", ev[1])
            elif t == "error":
                _log.warn("server error %s: %s", ev[1], ev[2])
            elif t == "welcome":
                raise proto.ProtoError(proto.CLOSE_POLICY, "welcome twice")
            else:
                _log.debug("ignored message type %s", t)

    async def _sender(self):
        ob = self.outbox
        window = self.cfg.window
        while True:
            for g in ob.pending_gaps():
                _log.info("gap %d-%d %s", g[0], g[1], g[2])
                await self._send(proto.gap(g[0], g[1], g[2]))
            n = self._batch_n
            b = ob.next_batch_view(n, window)
            if not b:
                self._kick.clear()
                await self._kick.wait()
                continue
            # The message is built in _bb around the readings and framed from there: no
            # string per batch (strings the size of a batch, two per batch, fragment a small
            # heap until no block that big is left). From RAM the readings, already joined, are a view of
            # the outbox's buffer; from flash a list of them as read, each ending in a
            # separator byte that becomes the batch's "," (the last one is cut).
            k = len(proto.BATCH_HEAD)
            try:
                if isinstance(b, list):
                    for r in b:
                        k = self._put(k, r)
                        self._bb[k - 1] = 44  # ","
                    k -= 1
                else:
                    k = self._put(k, b)
                k = self._put(k, b"]}")
                b = None
                await self._send(self._bb, k)
            except MemoryError:
                # Longer readings than _bb and the frame buffer were sized for, and no block
                # to grow them into on a fragmented heap. The readings taken go again after
                # the reconnect this failure leads to; batches are half as long from now on,
                # until they fit (the same batch would fail after every reconnect, for good,
                # while the outbox filled and dropped).
                b = None
                if n > 1:
                    self._batch_n = n // 2
                    _log.warn("no memory for a batch of %d (%d B): %d from now on", n, k,
                              n // 2)
                raise

    def _put(self, k, data):
        """Copy data into _bb (a memoryview, kept: no new view per copy) at k, growing it
        once if needed; the end offset."""
        e = k + len(data)
        bb = self._bb
        if len(bb) < e + 1:
            bb = memoryview(bytearray(e + 128))
            bb[:k] = self._bb[:k]
            self._bb = bb
        bb[k:e] = data
        return e

    async def _health_loop(self):
        while True:
            await self.send_health()
            await asyncio.sleep(self.cfg.health_interval_s)

    async def send_health(self):
        ob = self.outbox
        self.note_heap()
        try:
            rssi = self.wlan.status("rssi")
        except Exception:  # no Wi-Fi object (tests), or a port without rssi
            rssi = None
        await self._send(proto.health(_heap_free(), self.heap_min, self.reconnects,
                                      ob.dropped, rssi, self.clock.uptime_ms() // 1000,
                                      ob.boot, ob.held(), self.skipped))

    async def _monitor(self):
        # Dead-link checks the WebSocket keepalive cannot see: Wi-Fi gone (on the board the
        # socket would hang until TCP gives up), and a send that cannot complete because the
        # peer stopped reading (the keepalive's own ping would be stuck behind it).
        stall = int((self.cfg.ping_interval_s + self.cfg.ping_timeout_s) * 1000)
        while True:
            await asyncio.sleep(1)
            if self.wlan is not None and not self.wlan.isconnected():
                raise link.LinkFailure("Wi-Fi lost")
            s = self._sending
            if s is not None and ticks_diff(ticks_ms(), s) > stall:
                raise link.LinkFailure("send stalled for %d s (peer not reading)" % (stall // 1000))
            self.note_heap()
            self.mark()

    def note_heap(self):
        f = _heap_free()
        if f < self.heap_min or not self.heap_min:
            self.heap_min = f

    async def _command(self, ev):
        reply, then = _seldom("fieldlink.link.commands").run(ev, self.sampler)
        if then == "health":
            await self.send_health()
        await self._send(reply)
        if then == "reboot":
            await self.reboot()

    async def reboot(self):
        """Clean reboot: close the link, everything to flash (no reboot gap), reset."""
        _log.info("rebooting")
        try:
            # self.ws stays: the sender may still be using it. Closing it can end the stream,
            # and then the teardown cancels this task mid-await: the finally still reboots.
            await self._close(self.ws, proto.CLOSE_NORMAL, "reboot")
        finally:
            self.reset_now()  # (a flash error does not cancel the reboot promised)

    def reset_now(self):
        """Everything to flash (no reboot gap), then reset. Resident: with no heap to connect
        there may be none to import a module for it either."""
        try:
            self.outbox.flush()
        except Exception as e:  # a flash error or no heap must not cancel the reset
            _log.error("reboot: flush failed: %s", e)  # (a reboot gap covers RAM)
        if self._reset is not None:
            self._reset()
        else:
            import machine
            machine.reset()
