"""The collectors' bus: what one collector says to the others, through the database only.

One collector on SQLite has nothing to tell anyone: `LocalBus` does everything in process.
Several collectors on one PostgreSQL use `PgBus`: LISTEN/NOTIFY on the channel
`fieldlink_events` over a connection of its own (the store's connection stays the store's),
and a `sessions` table (device -> connection generation, holder) for "one live connection per
device". There is no protocol between collectors: only rows and notifications. Interface
(docs/collector.md "Several collectors"):

    bus.publish(event)              a dashboard event (dict with `t`, `dev`) for the viewers of
                                    every collector; never waits; best effort (bounded queue)
    await bus.claim(dev)            a new connection of `dev` here: returns its generation; any
                                    older connection of it, here or on another collector, is
                                    closed with 4000
    await bus.release(dev, gen)     that connection ended
    await bus.deliver(dev, msg)     a protocol message (dict) to the device wherever it is
                                    held: True when a collector holding it took it
    await bus.command(dev, cmd, args, timeout)   a `cmd` to the device wherever it is held;
                                    its `reply` (raises DeviceNotConnected, TimeoutError)

Notifications: JSON text under 8000 bytes (PostgreSQL's limit), each {"from": instance,
"k": kind, ...}; several dashboard events go in one ("k": "ev", "e": [...]); a `readings`
event too big for one is summarised (its newest readings and the count).
"""
import asyncio
import itertools
import json
import logging
import os
import secrets
import socket
import time

log = logging.getLogger("fieldlink.collector.bus")

CHANNEL = "fieldlink_events"
MAX_PAYLOAD = 7900           # bytes of one NOTIFY payload (the server's limit is 8000)
QUEUE = 10000                # dashboard events waiting to be published; more are dropped
RECONNECT = (0.2, 5.0)       # s: first and longest wait between attempts to reach the database

SESSIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    device   TEXT PRIMARY KEY,
    gen      BIGINT NOT NULL,
    holder   TEXT,             -- the collector instance holding it; NULL when none
    since    DOUBLE PRECISION NOT NULL
)"""


class DeviceNotConnected(Exception):
    pass


def instance_name():
    """A name for this collector process, unique across restarts."""
    return "%s-%d-%s" % (socket.gethostname()[:20], os.getpid(), secrets.token_hex(3))


class LocalBus:
    """One collector: every device and viewer is in this process."""

    def __init__(self):
        self.collector = None
        self.instance = "local"
        self._gens = itertools.count(1)

    async def start(self, collector):
        self.collector = collector

    async def stop(self):
        pass

    def publish(self, event):
        pass            # the collector's own viewers already have it

    async def claim(self, dev):
        return next(self._gens)

    async def release(self, dev, gen):
        pass

    async def deliver(self, dev, message):
        return await self.collector.deliver_local(dev, message)

    async def command(self, dev, cmd, args=None, timeout=10.0):
        return await self.collector.command_local(dev, cmd, args, timeout)

    def holders(self):
        """Devices held by other collectors (none here)."""
        return set()


def summarise(event, limit=MAX_PAYLOAD - 200):
    """The event, or a smaller one saying the same to a dashboard, when its JSON is too big
    for a notification: the newest readings that fit and how many there were."""
    text = json.dumps(event, allow_nan=False, default=str)
    if len(text.encode()) <= limit:
        return event
    if event.get("t") == "readings" and isinstance(event.get("r"), list):
        rs = event["r"]
        keep = list(rs)
        while keep:
            keep = keep[len(keep) // 2 + 1:] if len(keep) > 1 else []
            small = dict(event, r=keep, n=len(rs), summarised=True)
            if len(json.dumps(small, allow_nan=False, default=str).encode()) <= limit:
                return small
        return dict(event, r=[], n=len(rs), summarised=True)
    return {"t": event.get("t"), "dev": event.get("dev"), "time": event.get("time"),
            "summarised": True}


class PgBus:
    """Several collectors on one PostgreSQL. `dsn`/`password` as for PostgresStore."""

    def __init__(self, dsn, password=None, instance=None, connect_timeout=5):
        self.dsn = dsn
        self.password = password
        self.instance = instance or instance_name()
        self.connect_timeout = connect_timeout
        self.collector = None
        self._listen = None          # the LISTEN connection (dedicated)
        self._talk = None            # claims, releases, NOTIFY
        self._talk_lock = asyncio.Lock()
        self._queue = None
        self._tasks = []
        self._waiting = {}           # request id -> Future of the answer
        self._ids = itertools.count(1)
        self._stopping = False
        self._remote = {}            # device -> the other collector holding it (its claims)
        self.connected = asyncio.Event()   # the LISTEN connection is up
        self.stats = {"published": 0, "dropped": 0, "received": 0, "notifies": 0}

    # -- life ----------------------------------------------------------------------------

    async def start(self, collector):
        self.collector = collector
        self._queue = asyncio.Queue(QUEUE)
        async with self._talk_lock:
            conn = await self._talk_conn()
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (0x73657373,))
                await conn.execute(SESSIONS_SCHEMA)
        self._tasks = [asyncio.ensure_future(self._listen_loop()),
                       asyncio.ensure_future(self._publish_loop())]
        try:
            await asyncio.wait_for(self.connected.wait(), self.connect_timeout * 2)
        except asyncio.TimeoutError:
            log.warning("bus: not listening yet; retrying in the background")
        return self

    async def stop(self):
        self._stopping = True
        # what is queued still goes out (a drain's last events), bounded
        try:
            await asyncio.wait_for(self._flush(), 2)
        except Exception:
            pass
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except BaseException:
                pass
        # under the lock: a claim or release still running must not have its connection
        # closed under it (libpq crashes on that)
        try:
            await asyncio.wait_for(self._talk_lock.acquire(), 7)
        except asyncio.TimeoutError:
            pass
        for conn in (self._listen, self._talk):
            if conn is not None:
                try:
                    await conn.close()
                except Exception:
                    pass
        self._talk = self._listen = None

    async def _connect(self):
        import psycopg
        kw = {"autocommit": True, "connect_timeout": self.connect_timeout,
              "application_name": "fieldlink-bus", "keepalives": 1, "keepalives_idle": 10,
              "keepalives_interval": 5, "keepalives_count": 3}
        if self.password is not None:
            kw["password"] = self.password
        conn = await asyncio.wait_for(psycopg.AsyncConnection.connect(self.dsn, **kw),
                                      self.connect_timeout + 1)
        await conn.execute("SET statement_timeout = 5000")
        return conn

    async def _talk_conn(self):
        if self._talk is None or self._talk.closed:
            self._talk = None
            self._talk = await self._connect()
        return self._talk

    async def _talk_do(self, sql, params=(), fetch=False):
        """One statement on the talking connection. A connection found broken (the server
        restarted since its last use) is replaced and the statement tried once more on the
        new one; a second failure is raised (and that connection dropped too)."""
        async with self._talk_lock:
            if self._stopping and self._talk is None:
                raise ConnectionError("bus stopped")
            for attempt in (1, 2):
                fresh = self._talk is None or self._talk.closed
                try:
                    conn = await self._talk_conn()
                    cur = await asyncio.wait_for(conn.execute(sql, params), 6)
                    return await cur.fetchone() if fetch else None
                except BaseException as e:
                    # cancelled mid-statement too: that connection is in an unknown state
                    if self._talk is not None:
                        try:
                            await self._talk.close()
                        except Exception:
                            pass
                        self._talk = None
                    if fresh or attempt == 2 or not isinstance(e, Exception):
                        raise

    # -- sending -------------------------------------------------------------------------

    def publish(self, event):
        try:
            self._queue.put_nowait(event)
        except (asyncio.QueueFull, AttributeError):
            self.stats["dropped"] += 1

    async def _notify(self, obj):
        text = json.dumps(dict(obj, **{"from": self.instance}), allow_nan=False, default=str)
        if len(text.encode()) > MAX_PAYLOAD:
            raise ValueError("notification of %d bytes: too big" % len(text.encode()))
        await self._talk_do("SELECT pg_notify(%s, %s)", (CHANNEL, text))
        self.stats["notifies"] += 1

    async def _publish_loop(self):
        while True:
            await self._send_batch(await self._queue.get())

    async def _flush(self):
        while self._queue is not None and not self._queue.empty():
            await self._send_batch(self._queue.get_nowait())

    async def _send_batch(self, first):
        batch, size = [summarise(first)], 0
        size = len(json.dumps(batch[0], default=str))
        while not self._queue.empty() and size < MAX_PAYLOAD - 400:
            ev = summarise(self._queue.get_nowait())
            n = len(json.dumps(ev, default=str)) + 2
            if size + n > MAX_PAYLOAD - 300:
                await self._send_events(batch)
                batch, size = [], 0
            batch.append(ev)
            size += n
        if batch:
            await self._send_events(batch)

    async def _send_events(self, batch):
        try:
            await self._notify({"k": "ev", "e": batch})
            self.stats["published"] += len(batch)
        except Exception as e:
            # Dashboard events are best effort: a viewer reconnecting gets a fresh snapshot.
            self.stats["dropped"] += len(batch)
            log.warning("bus: %d dashboard event(s) not published: %s", len(batch), e)
            await asyncio.sleep(RECONNECT[0])

    async def claim(self, dev):
        """This collector now holds `dev`: the next generation, told to every collector in
        the same transaction (NOTIFY is delivered at commit)."""
        sql = ("WITH c AS (INSERT INTO sessions (device, gen, holder, since)"
               " VALUES (%(d)s, 1, %(h)s, %(t)s) ON CONFLICT (device) DO UPDATE"
               " SET gen = sessions.gen + 1, holder = %(h)s, since = %(t)s RETURNING gen)"
               " SELECT gen, pg_notify(%(ch)s, json_build_object('k', 'claim', 'from', %(h)s,"
               " 'dev', %(d)s::text, 'gen', gen)::text) FROM c")
        row = await self._talk_do(sql, {"d": dev, "h": self.instance, "t": time.time(),
                                        "ch": CHANNEL}, fetch=True)
        self._remote.pop(dev, None)
        return row[0]

    async def release(self, dev, gen):
        try:
            await self._talk_do("UPDATE sessions SET holder = NULL WHERE device = %s"
                                " AND gen = %s AND holder = %s", (dev, gen, self.instance))
        except Exception as e:
            log.info("bus: release of %s not recorded: %s", dev, e)

    async def _holder(self, dev):
        row = await self._talk_do("SELECT holder FROM sessions WHERE device = %s", (dev,),
                                  fetch=True)
        return row[0] if row else None

    async def _ask(self, dev, kind, body, timeout):
        """A request to the collector holding `dev`; its answer (a dict)."""
        holder = await self._holder(dev)
        if holder is None:
            raise DeviceNotConnected(dev)
        rid = "%s/%d" % (self.instance, next(self._ids))
        fut = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        try:
            await self._notify(dict(body, k=kind, to=holder, dev=dev, id=rid))
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiting.pop(rid, None)

    async def deliver(self, dev, message):
        if self.collector.holds(dev):
            return await self.collector.deliver_local(dev, message)
        try:
            out = await self._ask(dev, "deliver", {"msg": message}, 5.0)
        except (DeviceNotConnected, asyncio.TimeoutError):
            return False
        return bool(out.get("ok"))

    async def command(self, dev, cmd, args=None, timeout=10.0):
        if self.collector.holds(dev):
            return await self.collector.command_local(dev, cmd, args, timeout)
        out = await self._ask(dev, "cmd", {"cmd": cmd, "args": args or {},
                                           "timeout": timeout}, timeout + 2)
        if out.get("ok"):
            return out["reply"]
        if out.get("error") == "not connected":
            raise DeviceNotConnected(dev)
        if out.get("error") == "timeout":
            raise asyncio.TimeoutError()
        raise ConnectionError(out.get("error") or "failed")

    def holders(self):
        """Devices another collector claimed last (as far as its notifications told)."""
        return set(self._remote)

    # -- receiving -----------------------------------------------------------------------

    async def _listen_loop(self):
        wait = RECONNECT[0]
        while not self._stopping:
            try:
                self._listen = await self._connect()
                await self._listen.execute("LISTEN " + CHANNEL)
                self.connected.set()
                wait = RECONNECT[0]
                log.info("bus: listening on %s as %s", CHANNEL, self.instance)
                # closed here, before its connection is: a generator left to the garbage
                # collector would touch a connection already freed (a crash in libpq)
                gen = self._listen.notifies()
                try:
                    async for n in gen:
                        self._received(n.payload)
                finally:
                    await gen.aclose()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("bus: listening connection lost (%s); again in %.1fs",
                            type(e).__name__, wait)
            self.connected.clear()
            if self._listen is not None:
                try:
                    await self._listen.close()
                except Exception:
                    pass
                self._listen = None
            await asyncio.sleep(wait)
            wait = min(RECONNECT[1], wait * 2)

    def _received(self, payload):
        # Another collector's notification: trusted no more than any input (a role with
        # NOTIFY rights could send anything); a malformed one is dropped.
        try:
            m = json.loads(payload)
            if not isinstance(m, dict) or m.get("from") == self.instance:
                return
            self.stats["received"] += 1
            k = m.get("k")
            if k == "ev":
                for ev in m.get("e") or ():
                    if isinstance(ev, dict) and isinstance(ev.get("t"), str):
                        if (ev["t"] == "disconnected" and not ev.get("superseded")
                                and self._remote.get(ev.get("dev")) == m.get("from")):
                            self._remote.pop(ev.get("dev"), None)
                        self.collector.publish_local(ev)
            elif k == "claim":
                dev, gen = str(m["dev"]), int(m["gen"])
                if dev in self.collector.devices.tokens:     # bounded by the known devices
                    self._remote[dev] = str(m.get("from"))
                self.collector.claimed_elsewhere(dev, gen)
            elif k in ("cmd", "deliver") and m.get("to") == self.instance:
                asyncio.ensure_future(self._serve(m))
            elif k == "answer" and m.get("to") == self.instance:
                fut = self._waiting.get(m.get("id"))
                if fut is not None and not fut.done() and isinstance(m.get("out"), dict):
                    fut.set_result(m["out"])
        except Exception as e:
            log.info("bus: dropped a malformed notification: %s", type(e).__name__)

    async def _serve(self, m):
        """A request from another collector for a device held here."""
        dev = str(m["dev"])
        try:
            if m["k"] == "cmd":
                reply = await self.collector.command_local(
                    dev, str(m["cmd"]), m.get("args") if isinstance(m.get("args"), dict) else {},
                    min(60.0, float(m.get("timeout", 10))))
                out = {"ok": True, "reply": reply}
            else:
                out = {"ok": await self.collector.deliver_local(dev, m.get("msg"))}
        except DeviceNotConnected:
            out = {"ok": False, "error": "not connected"}
        except asyncio.TimeoutError:
            out = {"ok": False, "error": "timeout"}
        except Exception as e:
            out = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
        answer = {"k": "answer", "to": m["from"], "id": m["id"], "out": out}
        try:
            try:
                await self._notify(answer)
            except ValueError:
                await self._notify(dict(answer, out={"ok": False, "error": "reply too big"}))
        except Exception as e:
            log.warning("bus: answer to %s not sent: %s", m.get("from"), e)
