"""The collector: the server side of app protocol v1 (docs/protocol.md) on websockets' asyncio
API, plus the dashboard's HTTP routes and its read-only live feed. See docs/collector.md.

Routes (one port): `/ws` devices (token in the upgrade, subprotocol fieldlink.v1), `/live` the
dashboard's feed (viewer token), `/admin` commands (admin token), `/` and its static files,
`/api/devices` a JSON snapshot, `/metrics` Prometheus metrics (viewer token), and control
(control.py): `/api/devices/ID/outputs[/NAME]`, `/api/devices/ID/history`, `.../health`.
"""
import asyncio
import collections
import email.utils
import http
import hmac
import itertools
import json
import logging
import math
import re
import time
from pathlib import Path

from websockets.asyncio.server import serve
from websockets.datastructures import Headers, MultipleValuesError
from websockets.exceptions import ConnectionClosed, NegotiationError
from websockets.http11 import Response

from . import auth as A
from . import control as C
from . import limits as L
from . import messages as M
from . import ota as OTA
from .bus import DeviceNotConnected, LocalBus
from .committer import GroupCommitter
from .sleepers import QUEUED_PREFIX, DutyCycling, Sleepers
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE, CollectorMetrics
from .store import StoreDataError, StoreError

log = logging.getLogger("fieldlink.collector")

DASHBOARD = Path(__file__).resolve().parent / "dashboard"
_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/control.js": ("control.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}

DEFAULT_MAX_MESSAGE = 64 * 1024
DEFAULT_MAX_BATCH = 500
DEFAULT_MAX_DEVICES = 1000
DEFAULT_MAX_VIEWERS = 100
DEFAULT_MAX_ADMINS = 10

# path -> (methods, role needed, kind); the static files are GET, no role.
_ROUTES = {
    "/ws": ("GET", None, "device"),            # the device token, in _auth_device
    "/live": ("GET", A.VIEWER, "live"),
    "/admin": ("GET", A.ADMIN, "admin"),
    "/api/devices": ("GET", A.VIEWER, "devices"),
    "/api/session": ("GET POST DELETE", None, "session"),
    "/healthz": ("GET", None, "healthz"),
    "/metrics": ("GET", A.VIEWER, "metrics"),     # Prometheus: the viewer token or better
}
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
HEALTH_PROBE_EVERY = 2.0   # s: /healthz writes to the store at most this often
WRITE_LIMIT = 64 * 1024    # bytes buffered for sending before a send waits (per connection)
# received messages buffered before reading the socket pauses (TCP back-pressure): a device's
# window (64 readings in batches of 20) and its health fit; a hostile one buffers <= 8 x 64 KiB
MAX_QUEUE = 8
VIEWER_EVENTS = 2000       # events a viewer may fall behind, and
VIEWER_BYTES = 1 << 20     # bytes of them, before it is closed with 1013


class Devices:
    """Who may connect: device id -> token, and which devices are disabled (403)."""

    def __init__(self, tokens=None, disabled=()):
        self.tokens = dict(tokens or {})
        self.disabled = set(disabled)
        for dev in self.tokens:
            if not M.DEVICE_ID.match(dev):
                raise ValueError("bad device id %r: 1-32 chars of [A-Za-z0-9_.-]" % dev)

    @classmethod
    def load(cls, path):
        """A JSON file: {"dev-1": "token", "dev-2": {"token": "...", "disabled": true}}."""
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict):
            raise ValueError("%s: expected a JSON object {device_id: token}" % path)
        tokens, disabled = {}, set()
        for dev, spec in data.items():
            if isinstance(spec, str):
                tokens[dev] = spec
            elif isinstance(spec, dict) and isinstance(spec.get("token"), str):
                tokens[dev] = spec["token"]
                if spec.get("disabled"):
                    disabled.add(dev)
            else:
                raise ValueError("%s: device %r: expected a token string or"
                                 " {\"token\": ..., \"disabled\": bool}" % (path, dev))
        return cls(tokens, disabled)

    def check(self, dev, token):
        """HTTP status for this device and token: 200, 401 or 403."""
        want = self.tokens.get(dev)
        # compare_digest on every path so the timing says nothing about which part was wrong
        ok = hmac.compare_digest((want or "\0").encode(), (token or "").encode())
        if want is None or not ok:
            return 401
        if dev in self.disabled:
            return 403
        return 200


class Subscription:
    """An async iterator of collector events (dicts with a `t` field; JSON text for a `text`
    subscription, serialised once for every viewer). Bounded: a consumer that falls `maxsize`
    events (or `max_bytes` of text) behind is cut off (`overflowed` becomes True, `on_overflow`
    is called) rather than letting the collector's memory grow; the publisher never waits."""

    def __init__(self, collector, maxsize, text=False, max_bytes=None, on_overflow=None):
        self._collector = collector
        self._q = asyncio.Queue(maxsize)
        self.text = text
        self.max_bytes = max_bytes
        self.bytes = 0             # text queued, not yet taken
        self.on_overflow = on_overflow
        self.overflowed = False
        self.closed = False

    def _put(self, event):
        if self.max_bytes is not None:
            self.bytes += len(event)
            if self.bytes > self.max_bytes:
                return self._overflow()
        try:
            self._q.put_nowait(event)
        except asyncio.QueueFull:
            self._overflow()

    def _overflow(self):
        self.overflowed = True
        self.close()
        if self.on_overflow is not None:
            self.on_overflow()

    def close(self):
        if not self.closed:
            self.closed = True
            self._collector._subs.discard(self)
            self._collector._text_subs.discard(self)
            try:
                self._q.put_nowait(None)
            except asyncio.QueueFull:
                pass  # the consumer sees `closed` after draining

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.closed and self._q.empty():
            raise StopAsyncIteration
        event = await self._q.get()
        if event is None or (self.overflowed and self._q.empty()):
            raise StopAsyncIteration
        if self.max_bytes is not None:
            self.bytes -= len(event)
        return event

    async def get(self, timeout=None):
        """The next event, or raise TimeoutError / StopAsyncIteration."""
        return await asyncio.wait_for(self.__anext__(), timeout)


class _Session:
    """One live device connection."""

    def __init__(self, ws, dev):
        self.ws = ws
        self.dev = dev
        self.hello = None
        self.ack = 0               # the store's ack (store seq space)
        self.epoch = ""            # the device's epoch on this connection
        self.offset = 0            # store seq = device seq + offset (docs/protocol.md "Epochs")
        self.first = 1             # hello.first, in store seqs
        self.superseded = False
        self.welcomed = False      # desired changes go out only after `welcome`
        self.gen = None            # the connection generation (bus.claim), once known
        self.newer = 0             # the highest generation claimed elsewhere meanwhile
        self.received_at = 0.0     # perf_counter when the message in hand was read
        self.pending = {}          # command id -> Future of the reply
        self.connected_at = time.time()
        self.peer = ws.remote_address[0] if ws.remote_address else None


class Collector(DutyCycling):
    """The collector server. Use `await start()` / `await stop()` (or `async with`)."""

    def __init__(self, store, devices, host="127.0.0.1", port=0, ssl_context=None,
                 max_message=DEFAULT_MAX_MESSAGE, max_batch=DEFAULT_MAX_BATCH,
                 max_devices=DEFAULT_MAX_DEVICES, admin_token=None, viewer_token=None,
                 ping_interval=20, ping_timeout=20, print_readings=None, hello_timeout=30,
                 open_timeout=10, allowed_hosts=(), max_viewers=DEFAULT_MAX_VIEWERS,
                 max_admins=DEFAULT_MAX_ADMINS, session_ttl=12 * 3600,
                 failures=None, max_handshakes_per_source=L.MAX_PENDING_PER_SOURCE,
                 bus=None):
        self.store = store
        self.devices = devices if isinstance(devices, Devices) else Devices(devices)
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.max_message = max_message
        self.max_batch = max_batch
        self.max_devices = max_devices
        self.tokens = A.Tokens(viewer=viewer_token, admin=admin_token)   # ValueError if weak
        self.sessions = A.Sessions(ttl=session_ttl)
        self.failures = failures if failures is not None else A.FailureLimit()
        self.allowed_hosts = {"localhost"} | {h.lower() for h in allowed_hosts}
        if host not in ("", "0.0.0.0", "::", None):
            self.allowed_hosts.add(host.lower())
        self.max_viewers = max_viewers
        self.max_handshakes_per_source = max_handshakes_per_source
        self.max_admins = max_admins
        self._counts = {"live": 0, "admin": 0}
        self._probe = (-1e9, None)             # (when, problem) of the last /healthz write
        self.health_probe_every = HEALTH_PROBE_EVERY
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.print_readings = print_readings   # a callable(line) or None
        self.hello_timeout = hello_timeout     # s an authenticated device may stay silent
        self.open_timeout = open_timeout       # s for TLS + HTTP upgrade (slowloris bound)
        self._server = None
        self._live = {}                        # device -> _Session
        self._subs = set()
        self._text_subs = set()                # viewers: events as JSON text
        self._snap_next = None                 # the snapshot viewers wait for (not started)
        self._snap_lock = asyncio.Lock()
        self._tcp = 0                          # TCP connections open (descriptors)
        self._pending = collections.Counter()  # source -> handshakes in progress
        self._handshaking = collections.OrderedDict()   # those connections, oldest first
        self._evicting = 0                     # aborted for room, not yet gone
        self.fd_budget = None                  # connections this process can hold (start())
        self.viewer_bytes = VIEWER_BYTES
        self._cmd_ids = itertools.count(1)
        self.metrics = CollectorMetrics(connected=lambda: len(self._live))
        # Every store call on one store thread (SQLite blocks on fsync), the writes of all
        # devices grouped into one commit each (committer.py): the event loop keeps serving
        # while a commit is on its way to disk, and one fsync acks many devices' batches.
        self.committer = GroupCommitter(store, metrics=self.metrics,
                                        max_queue=max(1000, 4 * max_devices))
        self._lag_task = None
        self.sleepers = Sleepers()             # duty-cycled devices asleep, their commands
        self._close_watchers = set()
        self.stats = {"connections": 0, "rejected": 0, "readings": 0, "errors": 0}
        self.ota = OTA.Ota(self)               # firmware updates (collector/ota.py)
        # Other collectors on the same database (bus.py); LocalBus: this process is all.
        self.bus = bus if bus is not None else LocalBus()
        self.draining = False                  # drain(): /healthz 503, no new devices

    # -- life ----------------------------------------------------------------------------

    async def start(self):
        self.committer.start()
        self._lag_task = asyncio.ensure_future(self.metrics.probe_loop_lag())
        self._server = await serve(
            self._handler, self.host, self.port,
            ssl=self.ssl_context,
            process_request=self._process_request,
            select_subprotocol=self._select_subprotocol,
            max_size=self.max_message,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            open_timeout=self.open_timeout,
            # Devices are small: no permessage-deflate (inflating is costly and a decompression
            # bomb would slip past max_size accounting of the wire bytes).
            compression=None,
            server_header="fieldlink-collector",
            logger=WS_LOG,
            max_queue=MAX_QUEUE,
            write_limit=WRITE_LIMIT,
            create_connection=lambda *a, **kw: C.BodyConnection(self, *a, **kw),
        )
        self.fd_budget = L.fd_budget()
        want = self.max_devices + self.max_viewers + self.max_admins
        if self.fd_budget < want:
            log.warning("only %d file descriptors for connections (ulimit -n) but the limits add"
                        " up to %d: raise the limit; devices are kept %d of them",
                        self.fd_budget, want, min(self.max_devices, self.fd_budget))
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        await self.bus.start(self)
        log.info("listening on %s", self.url)
        return self

    @property
    def scheme(self):
        return "wss" if self.ssl_context else "ws"

    @property
    def url(self):
        """The URL devices connect to."""
        return "%s://%s:%d/ws" % (self.scheme, _host_for_url(self.host), self.port)

    @property
    def http_url(self):
        """The dashboard's URL."""
        return "%s://%s:%d/" % ("https" if self.ssl_context else "http",
                                _host_for_url(self.host), self.port)

    async def stop(self, code=M.GOING_AWAY):
        """Close every connection (1001 by default) and wait for the handlers to finish.
        The store is not closed: it belongs to whoever made it."""
        if self._server is not None:
            for sub in list(self._subs | self._text_subs):
                sub.close()
            self._server.close(code=code, reason="server shutting down")
            # What is queued commits (or, with the store failing, fails unacked) so that no
            # handler waits on the store while the server waits on the handlers.
            await self.committer.close()
            await self._server.wait_closed()
            self._server = None
        else:
            await self.committer.close()
        if self._lag_task is not None:
            self._lag_task.cancel()
            self._lag_task = None
        await self.bus.stop()

    async def drain(self, grace=0.0):
        """Graceful stop behind a load balancer: /healthz answers 503 and new devices are
        refused (503) for `grace` seconds, so the balancer's health check takes this collector
        out; then every device is closed with 1001 and comes back through the balancer to
        another collector. What was acked is stored; what was not, the devices resend."""
        self.draining = True
        log.info("draining: /healthz 503 for %.1fs, then closing every device with 1001", grace)
        if grace > 0:
            # the balancer's check interval, not a synchronisation: nothing here waits on it
            await asyncio.sleep(grace)
        await self.stop(M.GOING_AWAY)

    async def serve_forever(self):
        await self._server.wait_closed()

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc):
        await self.stop()

    # -- public API ----------------------------------------------------------------------

    def connected(self):
        """Device ids with a live connection."""
        return sorted(self._live)

    def subscribe(self, maxsize=10000):
        """An async iterator of events: `hello`, `readings` (newly stored only), `gap`, `ack`,
        `health`, `reply`, `connected`, `disconnected`. Close it with `.close()`."""
        sub = Subscription(self, maxsize)
        self._subs.add(sub)
        return sub

    async def command(self, dev, cmd, args=None, timeout=10.0):
        """Send a `cmd` to a connected device, on this collector or (through the bus) the one
        holding it; return its `reply` (a dict with id, ok, result/err). Raises
        DeviceNotConnected, TimeoutError, or ConnectionError when the device goes away before
        replying."""
        return await self.bus.command(dev, cmd, args, timeout)

    async def deliver(self, dev, message):
        """Send a protocol message (a dict) to `dev` wherever it is connected; True when a
        collector holding it sent it."""
        return await self.bus.deliver(dev, message)

    def holds(self, dev):
        """Whether `dev` has a live connection (past hello) on this collector."""
        s = self._live.get(dev)
        return s is not None and s.hello is not None

    async def deliver_local(self, dev, message):
        s = self._live.get(dev)
        if s is None or s.hello is None:
            return False
        try:
            await s.ws.send(M.dumps(message))
        except ConnectionClosed:
            return False
        return True

    def claimed_elsewhere(self, dev, gen):
        """Another collector took a newer connection of `dev` (bus.claim): ours is closed
        with 4000, even when it is half-open and would otherwise linger until its pings fail."""
        s = self._live.get(dev)
        if s is None:
            return
        if s.gen is None:
            s.newer = max(s.newer, gen)        # our own claim is on its way: compared then
        elif s.gen < gen:
            self._supersede(s, "a newer connection on another collector")

    def _supersede(self, s, why):
        if s.superseded:
            return
        s.superseded = True
        log.info("%s: %s supersedes this one", s.dev, why)
        if self._live.get(s.dev) is s:
            del self._live[s.dev]
        asyncio.ensure_future(_close_quietly(s.ws, M.SUPERSEDED, "superseded"))

    async def _claim(self, s):
        wait = 0.2
        while True:
            try:
                s.gen = await self.bus.claim(s.dev)
                break
            except Exception as e:
                # the database is down: this collector's own supersede holds meanwhile, and
                # the claim is made when it is back (commands find the device only then)
                log.warning("%s: connection not claimed on the bus yet: %s", s.dev, e)
            await asyncio.sleep(wait)
            wait = min(5.0, wait * 2)
            if s.superseded or self._live.get(s.dev) is not s:
                return
        if s.newer > s.gen:
            self._supersede(s, "a newer connection on another collector")

    async def command_local(self, dev, cmd, args=None, timeout=10.0):
        session = self._live.get(dev)
        if session is None or session.hello is None:
            raise DeviceNotConnected(dev)
        cid = "c%d" % next(self._cmd_ids)
        fut = asyncio.get_running_loop().create_future()
        session.pending[cid] = fut
        try:
            await session.ws.send(M.dumps({"t": "cmd", "id": cid, "cmd": cmd,
                                           "args": args or {}}))
            return await asyncio.wait_for(fut, timeout)
        except ConnectionClosed as e:
            raise ConnectionError("%s disconnected: %s" % (dev, e)) from None
        finally:
            session.pending.pop(cid, None)

    async def snapshot(self, latest=10):
        """Every device the store knows, with live status and its newest readings."""
        def read():
            out = self.store.devices()
            for d in out:
                d["latest"] = (self.store.latest(d["device"], latest)
                               if hasattr(self.store, "latest") else [])
            return out
        devs = await self._db(read)
        self._expire_queued()
        elsewhere = self.bus.holders()
        for d in devs:
            s = self._live.get(d["device"])
            d["connected"] = s is not None or d["device"] in elsewhere
            d["peer"] = s.peer if s else None
            d["state"] = self.sleepers.state(d["device"], s is not None)
            d["sleeping_until"] = None if s else self.sleepers.until(d["device"])
        return {"t": "snapshot", "time": time.time(), "devices": devs}

    async def _shared_snapshot(self):
        """snapshot() for viewers and /api/devices: computed once for everyone asking while the
        previous one runs, and always started after the call (a /live viewer subscribes first,
        so it misses nothing), so a crowd of viewers costs the store thread one snapshot at a
        time, not one each."""
        if self._snap_next is None:
            self._snap_next = asyncio.get_running_loop().create_future()
            asyncio.ensure_future(self._run_snapshot(self._snap_next))
        return await asyncio.shield(self._snap_next)

    async def _run_snapshot(self, fut):
        async with self._snap_lock:
            if self._snap_next is fut:
                self._snap_next = None          # who asks from now on gets the next one
            try:
                fut.set_result(await self.snapshot())
            except Exception as e:
                fut.set_exception(e)

    # -- internals -----------------------------------------------------------------------

    async def _db(self, fn, *args):
        """A read on the store thread (writes go through self.committer)."""
        return await self.committer.read(fn, *args)

    async def _count_close(self, ws):
        await ws.wait_closed()
        self.metrics.closes.labels(str(ws.close_code)).inc()

    def _print(self, line):
        if self.print_readings is not None:
            try:
                self.print_readings(M.printable(line))
            except Exception:   # a closed stdout must not cost a device its connection
                log.exception("print_readings failed; turning it off")
                self.print_readings = None

    def _publish(self, event):
        self.publish_local(event)
        self.bus.publish(event)

    def publish_local(self, event):
        """To this collector's subscribers and viewers only (events from the bus)."""
        for sub in list(self._subs):
            sub._put(event)
        if self._text_subs:
            text = json_text(event)
            for sub in list(self._text_subs):
                sub._put(text)

    # -- connections: descriptors and per-source handshakes -----------------------------

    def tcp_opened(self, conn, transport):
        """A TCP connection was accepted. One source may have only so many handshakes in
        progress; at the descriptor budget the oldest handshake in progress makes room (a
        device's takes milliseconds, an idle stranger's would last open_timeout); inside the
        descriptors kept for devices a connection may only become a device."""
        self._tcp += 1
        peer = transport.get_extra_info("peername")
        source = peer[0] if peer else "?"
        if self._pending[source] >= self.max_handshakes_per_source:
            log.warning("dropped a connection from %s: too many handshakes in progress from"
                        " there", source)
            transport.abort()
            return
        budget = self.fd_budget if self.fd_budget is not None else float("inf")
        if self._tcp - self._evicting > budget:
            if not self._handshaking:
                log.warning("dropped a connection from %s: no descriptor left", source)
                transport.abort()
                return
            old, _ = self._handshaking.popitem(last=False)
            log.warning("dropped a handshake from %s in progress: descriptors ran out",
                        old.fl_source)
            self._evicting += 1
            old.fl_evicted = True
            self._handshake_done(old)
            old.transport.abort()
        kept = max(0, min(self.max_devices, budget) - len(self._live))
        conn.fl_reserve_only = self._tcp > budget - kept
        conn.fl_source = source
        self._pending[source] += 1
        self._handshaking[conn] = None

    def _handshake_done(self, conn):
        source = getattr(conn, "fl_source", None)
        if source is not None:
            conn.fl_source = None
            self._handshaking.pop(conn, None)
            self._pending[source] -= 1
            if self._pending[source] <= 0:
                del self._pending[source]

    def tcp_closed(self, conn):
        self._tcp -= 1
        if getattr(conn, "fl_evicted", False):
            self._evicting -= 1
        self._handshake_done(conn)

    def reply_backlog(self, conn):
        log.warning("closing %s: it leaves its pongs unread (more than %d bytes)",
                    getattr(conn, "fl_device", None) or _peer(conn), L.MAX_REPLY_BACKLOG)

    async def store_problem(self):
        """None when the store takes writes, else why not (what /healthz answers): the last
        failure on the devices' path, or a real write made at most every few seconds."""
        if self.committer.failing is not None:
            return "failing, acks paused: %s" % self.committer.failing
        now = time.monotonic()
        if now - self._probe[0] >= self.health_probe_every:
            problem = None
            probe = getattr(self.store, "probe", None)
            if probe is not None:
                try:
                    await self._db(probe)
                except StoreError as e:
                    problem = str(e)
            self._probe = (now, problem)
        return self._probe[1]

    def _class_full(self, kind):
        """Why a viewer or admin connection is refused (503), or None."""
        if kind == "live" and self._counts["live"] >= self.max_viewers:
            return "too many viewers connected\n"
        if kind == "admin" and self._counts["admin"] >= self.max_admins:
            return "too many admin connections\n"
        return None

    def _select_subprotocol(self, conn, offered):
        if getattr(conn, "fl_route", None) == "device":
            if M.SUBPROTOCOL in offered:
                return M.SUBPROTOCOL
            raise NegotiationError("this endpoint requires subprotocol %s" % M.SUBPROTOCOL)
        return None

    # -- requests: routes, methods, Host, authentication -------------------------------

    def role_of(self, request):
        """The role a request's credentials grant: None, "viewer" or "admin". A bearer token
        (`Authorization: Bearer`, any client) is judged alone; without one, the session cookie
        the dashboard got from POST /api/session."""
        token = _bearer(request.headers)
        if token:
            return self.tokens.role(token)
        sid = A.cookie_value(request.headers)
        return self.sessions.role(sid) if sid else None

    def _authorize(self, conn, request, need):
        """None when the request may go on, else the HTTP answer: 429 for a source over its
        failed-token limit, 401 without (good) credentials, 403 for too low a role."""
        ip = _peer(conn)
        token = _bearer(request.headers)
        if token and self.failures.blocked(ip):
            return self._too_many(conn, ip)
        role = self.role_of(request)
        if A.RANK[role] >= A.RANK[need]:
            return None
        if role is None:
            if token:
                self.failures.failed(ip)
                self.stats["rejected"] += 1
                log.warning("refused a token from %s for %s", ip, _path(request))
            resp = _text(conn, 401, "%s token required\n" % need)
            resp.headers["WWW-Authenticate"] = 'Bearer realm="fieldlink"'
            return resp
        return _text(conn, 403, "this needs the %s token\n" % need)

    def _too_many(self, conn, ip):
        self.stats["rejected"] += 1
        log.warning("refused %s: too many failed tokens", ip)
        resp = _text(conn, 429, "too many failed tokens; try again later\n")
        resp.headers["Retry-After"] = str(max(1, round(1 / self.failures.rate)))
        return resp

    def _host_ok(self, request):
        """DNS rebinding: a page on another site whose name now resolves to this server must
        not reach it, so the Host a browser sends must be one of ours."""
        host = request.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.lower()
        return (name in self.allowed_hosts or _IPV4.match(name) is not None
                or (name.startswith("[") and name.endswith("]")))

    def _same_origin(self, request):
        """A browser always sends Origin on WebSocket upgrades and POSTs; it must be this
        server (cross-site WebSocket hijacking, login CSRF). Clients that are not browsers
        send none."""
        origin = request.headers.get("Origin")
        return origin is None or origin.split("://", 1)[-1] == request.headers.get("Host", "")

    async def _process_request(self, conn, request):
        """Routes, and authentication in the HTTP upgrade (before any data is accepted)."""
        self._handshake_done(conn)
        try:
            path = _path(request)
            route = _ROUTES.get(path) or C.route(path)
            if route is None and path in _STATIC:
                route = ("GET", None, "static")
            if route is None:
                return _text(conn, 404, "not found\n")
            methods, need, kind = route
            if request.method not in methods.split():
                resp = _text(conn, 405, "method not allowed\n")
                resp.headers["Allow"] = ", ".join(methods.split())
                return resp
            if kind == "device":
                # Devices are not browsers (no DNS rebinding, no cookies): they name the
                # collector however their config says.
                return self._auth_device(conn, request)
            if getattr(conn, "fl_reserve_only", False):
                return _text(conn, 503, "the remaining connections are kept for devices\n")
            if kind != "healthz" and not self._host_ok(request):
                return _text(conn, 421, "unknown Host; see --allowed-host\n")
            if kind in ("live", "admin", "session") and not self._same_origin(request):
                return _text(conn, 403, "cross-origin request refused\n")
            if kind == "session":
                return self._session(conn, request)
            if need is not None:
                refused = self._authorize(conn, request, need)
                if refused is not None:
                    return refused
            if kind in ("live", "admin"):
                full = self._class_full(kind)
                if full:
                    return _text(conn, 503, full)
                conn.fl_route = kind
                return None
            if kind == "static":
                name, ctype = _STATIC[path]
                return _body(200, (DASHBOARD / name).read_bytes(), ctype)
            if kind == "devices":
                snap = await self._shared_snapshot()
                return _body(200, json_text(snap).encode(), "application/json")
            if kind == "healthz":
                if self.draining:
                    return _text(conn, 503, "draining\n")
                problem = await self.store_problem()
                return _text(conn, 503 if problem else 200,
                             "store: %s\n" % problem if problem else "ok\n")
            if kind == "metrics":
                return _body(200, self.metrics.render(), METRICS_CONTENT_TYPE)
            if kind in ("outputs", "output_put", "history", "health"):
                return await C.http(self, conn, request, kind, path, _body, _text)
            return _text(conn, 404, "not found\n")
        except MultipleValuesError:
            return _text(conn, 400, "a header that must appear once appears twice\n")
        except Exception:
            log.exception("process_request failed for %s", _path(request))
            self.stats["errors"] += 1
            return _text(conn, 500, "internal error\n")

    def _session(self, conn, request):
        """POST with a bearer token: a session cookie for the browser (HttpOnly, SameSite=
        Strict, Secure over TLS) holding a random id, never the token. GET: the session's
        role. DELETE: log out."""
        secure = self.ssl_context is not None
        if request.method == "DELETE":
            sid = A.cookie_value(request.headers)
            if sid:
                self.sessions.delete(sid)
            resp = _body(200, b'{"role": null}', "application/json")
            resp.headers["Set-Cookie"] = A.clear_cookie(secure)
            return resp
        if request.method == "GET":
            refused = self._authorize(conn, request, A.VIEWER)
            if refused is not None:
                return refused
            return _body(200, json.dumps({"role": self.role_of(request)}).encode(),
                         "application/json")
        if not _bearer(request.headers):
            return _text(conn, 401, "POST /api/session with Authorization: Bearer TOKEN\n")
        refused = self._authorize(conn, request, A.VIEWER)
        if refused is not None:
            return refused
        role = self.role_of(request)
        sid = self.sessions.create(role)
        resp = _body(200, json.dumps({"role": role, "expires_in": self.sessions.ttl}).encode(),
                     "application/json")
        resp.headers["Set-Cookie"] = A.set_cookie(sid, self.sessions.ttl, secure)
        return resp

    def _auth_device(self, conn, request):
        ip = _peer(conn)
        if self.failures.blocked(ip):
            return self._too_many(conn, ip)
        dev = request.headers.get("X-Fieldlink-Device", "")
        token = _bearer(request.headers)
        status = self.devices.check(dev, token) if M.DEVICE_ID.match(dev) else 401
        if status != 200:
            self.stats["rejected"] += 1
            if status == 401:
                self.failures.failed(ip)
            self.metrics.refused.labels("unauthorized" if status == 401 else "disabled").inc()
            log.warning("refused device %r from %s: %d", M.printable(dev[:40]), ip, status)
            resp = _text(conn, status, "unknown device or wrong token\n" if status == 401
                         else "device disabled\n")
            if status == 401:
                resp.headers["WWW-Authenticate"] = 'Bearer realm="fieldlink"'
            return resp
        if self.draining:
            self.metrics.refused.labels("draining").inc()
            return _text(conn, 503, "collector draining; connect again\n")
        if dev not in self._live and len(self._live) >= self.max_devices:
            self.stats["rejected"] += 1
            self.metrics.refused.labels("limit").inc()
            return _text(conn, 503, "collector at its connection limit\n")
        conn.fl_route = "device"
        conn.fl_device = dev
        return None

    async def _handler(self, ws):
        route = getattr(ws, "fl_route", None)
        if route in self._counts:
            self._counts[route] += 1
        try:
            if route == "device":
                await self._device_session(ws)
            elif route == "live":
                await self._live_feed(ws)
            elif route == "admin":
                await self._admin(ws)
        except ConnectionClosed:
            pass
        except Exception:
            # Never crash: a failing handler ends its own connection, nothing else.
            self.stats["errors"] += 1
            log.exception("handler for %s failed", route)
            try:
                await ws.close(M.INTERNAL, "internal error")
            except Exception:
                pass
        finally:
            if route in self._counts:
                self._counts[route] -= 1

    async def _fail(self, ws, close_code, code, msg):
        """Send `error` then close (docs/protocol.md: the device can log why)."""
        log.warning("closing %s with %d: %s", getattr(ws, "fl_device", "?"), close_code, msg)
        try:
            await ws.send(M.dumps({"t": "error", "code": code, "msg": msg}))
        except ConnectionClosed:
            pass
        await ws.close(close_code, code)

    # -- devices -------------------------------------------------------------------------

    async def _device_session(self, ws):
        dev = ws.fl_device
        session = _Session(ws, dev)
        old = self._live.get(dev)
        self._live[dev] = session
        self.stats["connections"] += 1
        watcher = asyncio.ensure_future(self._count_close(ws))
        self._close_watchers.add(watcher)      # the loop keeps only weak references to tasks
        watcher.add_done_callback(self._close_watchers.discard)
        if old is not None:
            # One live connection per device; a half-open old socket must not lock it out.
            old.superseded = True
            log.info("%s: new connection supersedes the old one", dev)
            asyncio.ensure_future(_close_quietly(old.ws, M.SUPERSEDED, "superseded"))
        # ... and across collectors: the bus closes an older one held elsewhere
        asyncio.ensure_future(self._claim(session))
        self._publish({"t": "connected", "dev": dev, "peer": session.peer,
                       "time": session.connected_at})
        reason = "closed"
        try:
            reason = await self._device_loop(session)
        except ConnectionClosed as e:
            reason = "connection closed (%s)" % (e.rcvd.code if e.rcvd else "no close frame")
        finally:
            for fut in session.pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("%s disconnected" % dev))
            if self._live.get(dev) is session:
                del self._live[dev]
            if session.gen is not None and not session.superseded:
                asyncio.ensure_future(self.bus.release(dev, session.gen))
            self._publish({"t": "disconnected", "dev": dev, "why": reason,
                           "superseded": session.superseded, "time": time.time()})

    async def _device_loop(self, s):
        ws, dev = s.ws, s.dev
        while True:
            if s.hello is None:
                # A device that authenticates and then says nothing must not hold its slot.
                try:
                    raw = await asyncio.wait_for(ws.recv(), self.hello_timeout)
                except (TimeoutError, asyncio.TimeoutError):
                    await self._fail(ws, M.POLICY, "order", "no hello within %ss"
                                     % self.hello_timeout)
                    return "no hello"
            else:
                raw = await ws.recv()
            s.received_at = time.perf_counter()
            if isinstance(raw, bytes):
                await self._fail(ws, M.UNSUPPORTED_DATA, "binary",
                                 "binary messages are refused; send JSON text")
                return "binary message"
            try:
                m = M.decode(raw)
                t = m["t"]
                # Order first (1008), then the fields (1007): "batch before hello" is the
                # clearer diagnosis whatever the batch holds.
                if s.hello is None and t != "hello":
                    raise M.ProtocolError(M.POLICY, "order", "%s before hello" % t)
                if t == "hello" and s.hello is not None:
                    raise M.ProtocolError(M.POLICY, "order", "hello twice")
                M.check(m, self.max_batch)
                if t == "hello":
                    if m["dev"] != dev:
                        raise M.ProtocolError(M.POLICY, "identity",
                                              "hello.dev %r is not the authenticated device %r"
                                              % (m["dev"], dev))
            except M.ProtocolError as e:
                await self._fail(ws, e.close_code, e.code, e.msg)
                return e.code
            try:
                if t == "hello":
                    await self._on_hello(s, m)
                elif t == "batch":
                    await self._on_batch(s, m)
                elif t == "gap":
                    await self._on_gap(s, m)
                elif t == "health":
                    body = M.stored(m)
                    await self.committer.one("record_health", dev, body)
                    self._publish({"t": "health", "dev": dev, "health": body,
                                   "time": time.time()})
                elif t in ("ota_get", "ota_status"):
                    await self.ota.on_message(s, m)
                elif t == "reported":
                    await C.on_reported(self, s, m)
                elif t == "sleep":
                    self._on_sleep(s, m)
                elif t == "reply":
                    fut = s.pending.get(m["id"])
                    if fut is not None and not fut.done():
                        fut.set_result(m)
                    elif not m["id"].startswith(QUEUED_PREFIX):
                        log.info("%s: reply to unknown command %r", dev, m["id"])
                    self._publish({"t": "reply", "dev": dev, "reply": m})
                else:
                    # Forward compatibility (docs/protocol.md "Versioning").
                    log.info("%s: ignoring unknown message type %r", dev, M.printable(t[:32]))
            except StoreDataError as e:
                # This message's own data could not be stored (the others of its group
                # were): 1011, nothing of it acked; the device keeps it and resends.
                self.stats["errors"] += 1
                log.error("%s: store refused the data: %s", dev, e)
                await self._fail(ws, M.INTERNAL, "store", "the server could not store that")
                return "store failed"
            except StoreError as e:
                # Only when the collector stops (a failing store is retried by the committer
                # and keeps the device waiting, not closed): nothing of it was acked.
                log.info("%s: not stored, collector stopping: %s", dev, e)
                await _close_quietly(ws, M.GOING_AWAY, "server shutting down")
                return "collector stopping"

    def _dev_ack(self, s):
        """The ack in the device's numbering (docs/protocol.md "Epochs"): never below 0."""
        return max(0, s.ack - s.offset)

    async def _on_hello(self, s, m):
        dev = s.dev
        body = M.stored(m)
        # one group: both are in the same commit
        _, ep = _raise_errors(await self.committer.submit([
            ("record_hello", (dev, body)),
            ("enter_epoch", (dev, m.get("epoch", ""), m["next"]))]))
        s.epoch, s.offset, s.ack = ep["epoch"], ep["offset"], ep["ack"]
        s.first = m["first"] + s.offset
        s.hello = m
        now = time.time()
        if ep["started"]:
            log.info("%s: new epoch %s (was %s): device seq N is stored as N+%d",
                     dev, ep["epoch"], ep["previous"] or '""', s.offset)
            self._publish({"t": "epoch", "dev": dev, "epoch": ep["epoch"],
                           "previous": ep["previous"], "offset": s.offset, "time": now})
            if ep["lost"]:
                a, b = ep["lost"]
                log.warning("%s: seqs %d..%d of epoch %s were never delivered: gap 'lost'",
                            dev, a, b, ep["previous"] or '""')
                self._publish({"t": "gap", "dev": dev, "from": a, "to": b, "why": "lost",
                               "ack": s.ack, "time": now})
                self._print("%s gap %d..%d (lost)" % (dev, a, b))
        elif m["next"] + s.offset <= s.ack:
            # The device's counter went backwards (flash wiped?) and it sent no epoch that
            # would say so: it would take our ack as covering readings it has not sent yet.
            log.warning("%s: hello.next=%d is not above the stored ack %d (seq reset?"
                        " firmware without hello.epoch)", dev, m["next"], s.ack - s.offset)
        await s.ws.send(M.dumps({"t": "welcome", "v": M.VERSION, "ack": self._dev_ack(s),
                                 "time": now}))
        s.welcomed = True
        await C.after_welcome(self, s)
        # before any batch is read: a duty-cycled device has them before its readings' ack
        await self._deliver_queued(s)
        self._publish({"t": "hello", "dev": dev, "hello": body, "ack": s.ack,
                       "epoch": s.epoch, "offset": s.offset, "time": now})
        await self.ota.on_hello(s)

    async def _on_batch(self, s, m):
        dev, off = s.dev, s.offset
        first = s.first
        if first - 1 > s.ack:
            # The device no longer holds seqs ack+1..first-1 and we do not have them: our
            # store lost them (restored or wiped database). Its pending gaps came before this
            # batch (protocol order), so whatever is still open is lost: record it as such,
            # or the ack could never pass it and the device would stall.
            log.warning("%s: seqs %d..%d neither stored nor held: recording gap 'lost'",
                        dev, s.ack + 1, first - 1)
            await self._gap(s, s.ack + 1, first - 1, "lost",
                            "neither stored nor held by the device (hello.first %d)"
                            % (first - s.offset))
        good, rejected = M.split_batch(m)
        if off:
            good = [dict(r, q=r["q"] + off) for r in good]
        rejected = [(q + off, why) for q, why in rejected]
        ack, new = await self.committer.one("add_readings", dev, good, s.hello["boot"],
                                            s.epoch, tuple(rejected))
        s.ack = ack
        if rejected:
            # Refused readings become gaps `rejected` (stored in the same transaction): the
            # ack passes them, so the device forgets them instead of resending them forever.
            seqs = [q - off for q, _ in rejected]
            log.warning("%s: rejected %d reading(s), seqs %s: %s", dev, len(rejected),
                        seqs, "; ".join(why for _, why in rejected))
            for q, why in rejected:
                self._publish({"t": "gap", "dev": dev, "from": q, "to": q, "why": "rejected",
                               "reason": why, "ack": ack, "time": time.time()})
                self._print("%s gap %d..%d (rejected: %s)" % (dev, q, q, why))
            await s.ws.send(M.dumps({"t": "error", "code": "rejected",
                                     "msg": "; ".join(why for _, why in rejected)[:1000],
                                     "seqs": seqs}))
        # The ack goes out only now: the transaction above has committed.
        await s.ws.send(M.dumps({"t": "ack", "ack": self._dev_ack(s)}))
        self.metrics.ack_latency.observe(time.perf_counter() - s.received_at)
        self.metrics.batches.inc()
        self.metrics.readings.inc(len(new))
        self.stats["readings"] += len(new)
        if new:
            self._publish({"t": "readings", "dev": dev, "r": new, "ack": ack,
                           "time": time.time()})
            if self.print_readings is not None:   # not formatted for nobody
                for r in new:
                    self._print(format_reading(dev, r))
        else:
            self._publish({"t": "ack", "dev": dev, "ack": ack})

    async def _on_gap(self, s, m):
        await self._gap(s, m["from"] + s.offset, m["to"] + s.offset, m["why"])
        await s.ws.send(M.dumps({"t": "ack", "ack": self._dev_ack(s)}))

    async def _gap(self, s, a, b, why, reason=None):
        s.ack = await self.committer.one("add_gap", s.dev, a, b, why, reason)
        ev = {"t": "gap", "dev": s.dev, "from": a, "to": b, "why": why, "ack": s.ack,
              "time": time.time()}
        if why == "dropped":
            # the device's total from the store: a pending gap resent wider on a new
            # connection must not be counted again by the dashboard
            ev["dropped"] = await self._db(self.store.dropped, s.dev)
        self._publish(ev)
        self._print("%s gap %d..%d (%s)" % (s.dev, a, b, why))

    # -- dashboard and admin -------------------------------------------------------------

    async def _live_feed(self, ws):
        """Read-only feed for the dashboard: a snapshot, then events as they happen.
        Anything the browser sends is ignored."""
        # A viewer that does not keep up is closed (1013: reconnect for a fresh snapshot);
        # nothing waits for it. Its send buffer is bounded by write_limit, its queue here.
        sub = Subscription(self, VIEWER_EVENTS, text=True, max_bytes=self.viewer_bytes,
                           on_overflow=lambda: asyncio.ensure_future(
                               _close_quietly(ws, 1013, "fell behind; reconnect")))
        self._text_subs.add(sub)
        try:
            await ws.send(json_text(await self._shared_snapshot()))
            # When the browser goes away, end the subscription too (not at the next event).
            drain = asyncio.ensure_future(_discard_incoming(ws, sub.close))
            try:
                async for text in sub:
                    await ws.send(text)
            finally:
                drain.cancel()
            if sub.overflowed:
                # Too slow to keep up: start over with a fresh snapshot on reconnect.
                await ws.close(1013, "fell behind; reconnect")
        finally:
            sub.close()

    async def _admin(self, ws):
        """Admin requests, one JSON object per message:
        {"op": "cmd", "dev", "cmd", "args", "timeout"} -> {"ok": true, "reply": {...}}
        {"op": "connected"} -> {"ok": true, "devices": [...]}
        {"op": "ota_file", "id", "path", "data" (base64), "append"}, {"op": "ota", "manifest",
        "devices" | "all"}, {"op": "ota_state", "dev"}: firmware updates (collector/ota.py)
        {"t": "set", "dev", "out", "v"|"rule"} -> {"ok": true, "desired": {...}}"""
        async for raw in ws:
            try:
                req = json.loads(raw)
                op = req.get("op") or req.get("t")
                self._expire_queued()
                if op == "set":
                    out = await C.admin_set(self, req, _peer(ws))
                elif op == "cmd" and self.sleepers.until(req["dev"]) is not None and \
                        req["dev"] not in self._live:
                    out = self._queue_command(req)
                elif op == "cmd":
                    reply = await self.command(req["dev"], req["cmd"], req.get("args") or {},
                                               float(req.get("timeout", 10)))
                    out = {"ok": True, "reply": reply}
                elif op == "connected":
                    out = {"ok": True, "devices": self.connected()}
                elif op == "ota_file":
                    out = self.ota.upload(req.get("id"), req.get("path"), req.get("data"),
                                          bool(req.get("append")))
                elif op == "ota":
                    out = await self.ota.push(req.get("manifest"), req.get("devices"),
                                              bool(req.get("all")))
                elif op == "ota_state":
                    out = await self.ota.state(str(req.get("dev")))
                else:
                    out = {"ok": False, "error": "unknown op %r" % (op,)}
            except DeviceNotConnected as e:
                out = {"ok": False, "error": "not connected: %s" % e}
            except (TimeoutError, asyncio.TimeoutError):
                out = {"ok": False, "error": "timeout"}
            except Exception as e:
                out = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
            await ws.send(json.dumps(out))


def format_reading(dev, r):
    """One line per reading for `--print-readings`: `DEV #SEQ NAME = VALUE UNIT`."""
    if r.get("v") is None:
        value = "-- (%s)" % r.get("e", "missing")
    else:
        v = r["v"]
        # display only (the store keeps the exact value): 7 significant digits is finer than
        # any sensor here resolves, and keeps float noise like 21.031891355764103 off the screen
        value = "%s %s" % ("%.7g" % v if isinstance(v, float) else v, r.get("u") or "")
    ts = r.get("ts")
    when = (time.strftime("%H:%M:%S", time.gmtime(ts)) + "Z") if ts else "up %dms" % r["up"]
    return "%s #%d %s = %s [%s]" % (dev, r["q"], r["n"], value.strip(), when)


async def _close_quietly(ws, code, reason):
    try:
        await ws.close(code, reason)
    except Exception:
        pass


async def _discard_incoming(ws, then):
    try:
        async for _ in ws:
            pass
    except ConnectionClosed:
        pass
    finally:
        then()


def json_text(obj):
    """Strict JSON (RFC 8259) for browsers and scripts: what a database written before numbers
    were checked may still hold as infinity or NaN goes out as null."""
    try:
        return json.dumps(obj, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(obj), allow_nan=False)


def _finite(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _path(request):
    # never the query: a client may have put a secret there, and it must not reach the log
    return request.path.split("?", 1)[0][:100]


class _Redact(logging.Filter):
    """websockets logs every request and response header at debug level: credentials
    (tokens, session ids) are replaced before any handler sees them."""
    SECRET = {"authorization", "proxy-authorization", "cookie", "set-cookie"}

    def filter(self, record):
        args = record.args
        if (isinstance(args, tuple) and len(args) == 2 and isinstance(args[0], str)
                and args[0].lower() in self.SECRET):
            record.args = (args[0], "[redacted]")
        return True


WS_LOG = logging.getLogger("fieldlink.collector.ws")
WS_LOG.addFilter(_Redact())
for _name in ("fieldlink.collector", "fieldlink.collector.ws", "asyncio"):
    logging.getLogger(_name).addFilter(L.RepeatFilter())


def _peer(conn):
    return conn.remote_address[0] if conn.remote_address else "?"


def _raise_errors(results):
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


def _bearer(headers):
    auth = headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return ""


def _text(conn, status, text):
    return conn.respond(status, text)


def _body(status, body, ctype):
    headers = Headers([
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Connection", "close"),
        ("Content-Length", str(len(body))),
        ("Content-Type", ctype),
        ("Cache-Control", "no-store"),
        # The dashboard loads nothing from elsewhere; say so to the browser too.
        # connect-src 'self' covers ws(s):// to this host in current browsers (CSP level 3)
        ("Content-Security-Policy", "default-src 'self'; connect-src 'self'; "
                                    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
    ])
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def _host_for_url(host):
    if host in ("", "0.0.0.0", "::", None):
        return "127.0.0.1"
    return "[%s]" % host if ":" in host else host
