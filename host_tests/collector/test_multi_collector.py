"""Several collectors on one PostgreSQL (collector/bus.py, PgBus): in one process, two
Collectors with a store and a bus each, as two machines would have. One live connection per
device across them (4000, even for a half-open old one), commands and dashboard events for a
device held by the other collector, and the drain. The HAProxy, firmware-board and kill -9
cases are in host_tests/integration/test_multi_collector.py."""
import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from collector_fixtures import hello, readings
from collector_inproc import run, until
from fieldlink_tools.collector import Collector, Devices
from fieldlink_tools.collector.bus import MAX_PAYLOAD, PgBus, summarise
from fieldlink_tools.collector.store_pg import PostgresStore
from fieldlink_tools.faultproxy import FaultProxy

TOKENS = {"dev-a": "token-a-0123456789abcdef", "dev-b": "token-b-0123456789abcdef"}
ADMIN = "admin-token-0123456789abcdef"


class Device:
    """A device over the real protocol (asyncio client)."""

    def __init__(self, url, dev):
        self.url, self.dev = url, dev
        self.ws = None

    async def open(self, next=1):
        self.ws = await connect(self.url, subprotocols=["fieldlink.v1"], open_timeout=10,
                                additional_headers={"Authorization": "Bearer " + TOKENS[self.dev],
                                                    "X-Fieldlink-Device": self.dev})
        await self.ws.send(json.dumps(hello(self.dev, next=next)))
        m = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
        assert m["t"] == "welcome", m
        return self

    async def recv(self, t=None):
        """The next message (of type `t`: others, such as desired state, are skipped)."""
        while True:
            m = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
            if t is None or m.get("t") == t:
                return m

    async def batch(self, seqs):
        await self.ws.send(json.dumps({"t": "batch", "r": readings(seqs)}))
        return (await self.recv("ack"))["ack"]

    async def answer_one(self):
        m = await self.recv("cmd")
        await self.ws.send(json.dumps({"t": "reply", "id": m["id"], "ok": True,
                                       "result": {"echo": m["args"]}}))
        return m


class Pair:
    """Two collectors sharing one database."""

    def __init__(self, dsn):
        self.dsn = dsn
        self.c = []
        self.stores = []

    async def __aenter__(self):
        for _ in range(2):
            st = PostgresStore(self.dsn)
            self.stores.append(st)
            c = Collector(st, Devices(TOKENS), port=0, admin_token=ADMIN,
                          bus=PgBus(self.dsn), ping_interval=None)
            await c.start()
            self.c.append(c)
        return self

    async def __aexit__(self, *exc):
        for c in self.c:
            await c.stop()
        for st in self.stores:
            st.close()

    def url(self, i):
        return self.c[i].url


def test_a_newer_connection_on_the_other_collector_supersedes_with_4000(pg_database):
    async def main():
        async with Pair(pg_database) as p:
            old = await Device(p.url(0), "dev-a").open()
            await until(lambda: p.c[0].holds("dev-a"), 10, "held by the first")
            await Device(p.url(1), "dev-a").open()
            with pytest.raises(ConnectionClosed):
                while True:
                    await old.recv()
            assert old.ws.close_code == 4000
            await until(lambda: not p.c[0].holds("dev-a"), 10, "the first let go")
            assert p.c[1].holds("dev-a")
    run(main(), 60)


def test_a_half_open_old_connection_on_the_other_collector_is_superseded(pg_database):
    async def main():
        async with Pair(pg_database) as p:
            with FaultProxy("127.0.0.1", p.c[0].port) as fp:
                old = await Device("ws://127.0.0.1:%d/ws" % fp.port, "dev-a").open()
                await until(lambda: p.c[0].holds("dev-a"), 10, "held by the first")
                session = p.c[0]._live["dev-a"]
                fp.set_mode("blackhole")      # the old path goes silent, its sockets stay open
                new = await Device(p.url(1), "dev-a").open()
                # the first collector dropped it as superseded (its close frame, 4000, is
                # swallowed by the blackhole: the socket goes after the close timeout)
                await until(lambda: "dev-a" not in p.c[0].connected(), 10, "the first let go")
                assert session.superseded
                assert await new.batch([1, 2]) == 2        # the new one is the live one
                old.ws.transport.abort()
    run(main(), 60)


def test_a_command_for_a_device_held_by_the_other_collector_arrives(pg_database):
    async def main():
        async with Pair(pg_database) as p:
            dev = await Device(p.url(1), "dev-b").open()
            await until(lambda: p.c[1].holds("dev-b"), 10, "held by the second")
            answering = asyncio.ensure_future(dev.answer_one())
            reply = await p.c[0].command("dev-b", "ping", {"x": 7}, timeout=10)
            assert reply["ok"] is True and reply["result"] == {"echo": {"x": 7}}
            assert (await answering)["cmd"] == "ping"
            # and a protocol message delivered through the bus
            assert await p.c[0].deliver("dev-b", {"t": "cmd", "id": "d1", "cmd": "noop",
                                                   "args": {}}) is True
            assert (await dev.recv("cmd"))["id"] == "d1"
            # nobody holds dev-a: refused, not waited for
            with pytest.raises(Exception) as e:
                await p.c[0].command("dev-a", "ping", {}, timeout=5)
            assert type(e.value).__name__ == "DeviceNotConnected"
    run(main(), 60)


def test_the_dashboard_of_one_collector_sees_the_devices_of_the_other(pg_database):
    async def main():
        async with Pair(pg_database) as p:
            sub = p.c[0].subscribe()
            dev = await Device(p.url(1), "dev-b").open()
            assert await dev.batch([1, 2, 3]) == 3
            seen = set()
            while not {"connected", "hello", "readings"} <= seen:
                ev = await sub.get(10)
                if ev.get("dev") == "dev-b":
                    seen.add(ev["t"])
                    if ev["t"] == "readings":
                        assert [r["q"] for r in ev["r"]] == [1, 2, 3]
            snap = await p.c[0].snapshot()
            assert {d["device"]: d["connected"] for d in snap["devices"]}["dev-b"] is True
    run(main(), 60)


def test_a_big_event_is_summarised_under_the_notify_limit():
    ev = {"t": "readings", "dev": "d", "r": readings(range(1, 501)), "ack": 500, "time": 1.0}
    small = summarise(ev)
    assert len(json.dumps(small).encode()) < MAX_PAYLOAD
    assert small["n"] == 500 and small["r"] and small["r"][-1]["q"] == 500
    assert summarise({"t": "ack", "dev": "d", "ack": 3}) == {"t": "ack", "dev": "d", "ack": 3}


def test_draining_answers_healthz_503_and_refuses_new_devices(pg_database):
    async def main():
        async with Pair(pg_database) as p:
            c = p.c[0]
            dev = await Device(c.url, "dev-a").open()
            c.draining = True
            r, w = await asyncio.open_connection("127.0.0.1", c.port)
            w.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = (await asyncio.wait_for(r.read(), 10)).split(b"\r\n")[0]
            w.close()
            assert b" 503 " in head
            with pytest.raises(Exception) as e:
                await Device(c.url, "dev-b").open()
            assert "503" in str(e.value)
            c.draining = False
            await c.drain(0)
            with pytest.raises(ConnectionClosed):
                while True:
                    await dev.recv()
            assert dev.ws.close_code == 1001
            p.c[0] = Collector(p.stores[0], Devices(TOKENS), port=0, bus=PgBus(p.dsn))
            await p.c[0].start()
    run(main(), 60)


def test_malformed_notifications_are_dropped():
    """A notification is input like any other (a role with NOTIFY rights could send anything):
    what does not parse or has the wrong shape is dropped, nothing reaches a viewer."""
    got = []

    class FakeCollector:
        devices = Devices(TOKENS)

        def publish_local(self, ev):
            got.append(ev)

        def claimed_elsewhere(self, dev, gen):
            got.append((dev, gen))

    bus = PgBus("postgresql:///none")
    bus.collector = FakeCollector()
    for payload in ("not json", "[1, 2]", '{"k": "ev", "e": [1, "x", {"no": "t"}]}',
                    '{"k": "claim", "dev": "dev-a", "gen": "x"}', '{"k": "claim"}',
                    '{"k": "answer", "to": "%s", "id": "nobody", "out": 5}' % bus.instance,
                    json.dumps({"k": "ev", "from": bus.instance, "e": [{"t": "hello"}]})):
        bus._received(payload)
    assert got == [] and bus.holders() == set()
    bus._received('{"k": "ev", "from": "other", "e": [{"t": "hello", "dev": "dev-a"}]}')
    assert got == [{"t": "hello", "dev": "dev-a"}]
