"""An in-process Collector for tests that drive it with many lightweight devices
(fieldlink_tools.fleet): start/stop/restart on the same port, HTTP GETs, bounded waits.

    async with InProc(tmp_path / "c.db", tokens) as c:     # c.collector, c.store, c.url
        fleet = Fleet(c.url, tokens, backoff_cap=2).start()
        await until(lambda: fleet.connected() == len(tokens), 30, "all connected")
"""
import asyncio

from fieldlink_tools.collector import Collector, Devices, SQLiteStore


class InProc:
    def __init__(self, db, tokens, store=None, **kw):
        self.store = store or SQLiteStore(db)
        self.tokens = dict(tokens)
        self.kw = dict(kw)
        self.kw.setdefault("max_devices", max(1000, len(self.tokens)))
        self.collector = None
        self.port = 0

    async def start(self):
        self.collector = Collector(self.store, Devices(self.tokens), port=self.port, **self.kw)
        await self.collector.start()
        self.port = self.collector.port
        return self

    async def stop(self):
        if self.collector is not None:
            await self.collector.stop()
            self.collector = None

    async def restart(self):
        await self.stop()
        return await self.start()

    @property
    def url(self):
        return "ws://127.0.0.1:%d/ws" % self.port

    async def get(self, path, token=None, timeout=10):
        """(status, body text) of GET path."""
        r, w = await asyncio.open_connection("127.0.0.1", self.port)
        auth = "Authorization: Bearer %s\r\n" % token if token else ""
        w.write(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n" % (path, auth)).encode())
        await w.drain()
        data = await asyncio.wait_for(r.read(), timeout)
        w.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), body.decode()

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc):
        await self.stop()
        self.store.close()


async def until(cond, timeout, what, step=0.05):
    """Wait until cond() is true; AssertionError after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        await asyncio.sleep(step)


def run(coro, timeout=120):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


def audit(store, fleet):
    """Every seq a device sampled up to what it was acked is stored once or in a gap, and
    nothing is stored twice (the primary key) or above what it sampled. Returns the number
    of readings stored."""
    total = 0
    for d in fleet.devices:
        off = store.epochs(d.dev)[-1]["offset"] if store.epochs(d.dev) else 0
        stored = [r["dq"] for r in store.readings(d.dev) if r["epoch"] == d.epoch]
        assert len(stored) == len(set(stored)), d.dev
        covered = set(stored)
        for g in store.gaps(d.dev):
            covered.update(range(max(1, g["from"] - off), min(d.next, g["to"] - off + 1)))
        missing = [q for q in range(1, d.ack + 1) if q not in covered]
        assert not missing, (d.dev, missing[:10], d.ack)
        assert not stored or max(stored) < d.next, d.dev
        assert store.ack(d.dev) - off >= d.ack, (d.dev, store.ack(d.dev), d.ack)
        total += len(stored)
    return total
