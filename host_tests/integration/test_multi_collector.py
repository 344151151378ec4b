"""Two collector processes on one PostgreSQL behind HAProxy (docs/collector.md "Several
collectors"), with 2 virtual boards running the real firmware and 200 lightweight devices
(fieldlink_tools.fleet): one collector killed with -9 and restarted mid-stream, PostgreSQL
restarted under load, a graceful drain, a command and a dashboard event for a device held by
the other collector, and at the end the fault campaign's audit over the PostgreSQL store
(every seq stored once or declared) for the boards and the fleet alike. A device reconnecting
through the balancer while its old connection is half-open is superseded (4000)."""
import asyncio
import json
import threading
import time
import urllib.error
import urllib.request

import pytest
from websockets.sync.client import connect

from collector_fixtures import FakeDevice, hello, readings
from collector_inproc import audit
from fieldlink_tools.collector.process import CollectorProcess
from fieldlink_tools.faultproxy import FaultProxy
from fieldlink_tools.fleet import Fleet, make_tokens
from fieldlink_tools.haproxy import HAProxyProcess, find_haproxy
from fieldlink_tools.soak import final_audit

pytestmark = pytest.mark.skipif(find_haproxy() is None, reason="haproxy is not installed "
                                "(tools/ensure_system_deps.py installs it)")

BOARDS = {"board-1": "board-token-1-0123456789", "board-2": "board-token-2-0123456789"}
FAST_LINK = ["--ping-interval", "2", "--ping-timeout", "2", "--drain-seconds", "1",
             "--max-devices", "400"]


class FleetThread:
    """A Fleet on its own event loop in a thread (the test's own code is synchronous)."""

    def __init__(self, url, tokens):
        self.loop = asyncio.new_event_loop()
        self.fleet = None
        self._args = (url, tokens)
        self._t = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self):
        self._t.start()

        async def mk():
            return Fleet(*self._args, seed=13, rate=2, batch=10, window=32, backoff_base=0.2,
                         backoff_cap=1.0, ramp=1.0).start()
        self.fleet = asyncio.run_coroutine_threadsafe(mk(), self.loop).result(10)
        return self

    def connected(self):
        return self.fleet.connected()

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.fleet.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._t.join(10)


def wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(0.1)


def stored(c, devs):
    st = c.store()
    try:
        return sum(st.ack(d) or 0 for d in devs)
    except Exception:
        return None          # PostgreSQL restarting
    finally:
        st.close()


def progress(c, devs, more, timeout, what):
    start = wait(lambda: stored(c, devs), timeout, "the store (%s)" % what)
    wait(lambda: (stored(c, devs) or 0) >= start + more, timeout, what)


def healthz(c):
    try:
        with urllib.request.urlopen(c.http_url + "healthz", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def holder(cs, dev):
    for i, c in enumerate(cs):
        try:
            if dev in c.connected():
                return i
        except Exception:
            pass
    return None


def live_events(c, dev, want, timeout=20):
    """Read c's /live feed until an event of type `want` for `dev` arrives."""
    with connect(c.http_url.replace("http://", "ws://") + "live", open_timeout=10,
                 additional_headers={"Authorization": "Bearer " + c.viewer_token}) as ws:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ev = json.loads(ws.recv(timeout))
            if ev.get("t") == want and ev.get("dev") == dev:
                return ev
    raise AssertionError("no %s event for %s on %s" % (want, dev, c.url))


@pytest.fixture
def cluster(pg_server, pg_database, tmp_path):
    """Two collectors on one database, HAProxy in front: (collectors, haproxy)."""
    tokens = dict(BOARDS, **make_tokens(200, "fl"))
    cs = []
    for i in range(2):
        c = CollectorProcess(pg_database, tokens, extra_args=FAST_LINK,
                             workdir=tmp_path, log_path=tmp_path / ("collector%d.log" % i))
        if cs:    # one admin and viewer token for the whole deployment
            c.admin_token, c.viewer_token = cs[0].admin_token, cs[0].viewer_token
        cs.append(c.start())
    hp = HAProxyProcess(["127.0.0.1:%d" % c.port for c in cs], workdir=str(tmp_path)).start()
    try:
        for name in ("c1", "c2"):
            hp.wait_status(name, "UP")
        yield cs, hp, tokens
    finally:
        hp.stop()
        for c in cs:
            c.kill()


def test_two_collectors_behind_haproxy_lose_nothing(cluster, pg_server, sim_board):
    cs, hp, tokens = cluster
    fleet_tokens = {d: t for d, t in tokens.items() if d.startswith("fl-")}
    # the boards reach HAProxy through a fault proxy: the audit resets it to read their counters
    fp = FaultProxy("127.0.0.1", hp.port).start()
    boards = {d: sim_board("ws://127.0.0.1:%d/ws" % fp.port, dev=d, token=t,
                           sample_interval_s=0.05) for d, t in BOARDS.items()}
    fleet = FleetThread(hp.url, fleet_tokens).start()
    try:
        wait(lambda: fleet.connected() == 200, 60, "200 fleet devices connected")
        progress(cs[0], BOARDS, 40, 45, "the boards' first readings")
        counts = [len(c.connected()) for c in cs]
        assert min(counts) > 0, counts             # leastconn spread them

        # 1. kill -9 one collector mid-stream, restart it on the same port
        cs[0].kill()
        progress(cs[1], list(BOARDS) + list(fleet_tokens)[:20], 40, 45,
                 "progress on the other collector")
        cs[0].start()
        hp.wait_status("c1", "UP")

        # 2. a command and a dashboard event for a device held by the other collector
        dev = "board-1"
        h = wait(lambda: holder(cs, dev) is not None and holder(cs, dev) + 1, 30,
                 "board-1 held") - 1
        other = cs[1 - h]
        reply = other.command(dev, "health", timeout=10)
        assert reply["ok"] is True, reply
        ev = live_events(other, dev, "readings")
        assert ev["r"], ev

        # 3. PostgreSQL restarted under load: acks pause, then the devices resume
        pg_server.stop(mode="immediate")            # a crash: recovery from the WAL next
        wait(lambda: healthz(cs[0]) == 503, 20, "/healthz 503 while the store is down")
        pg_server.start()
        progress(cs[0], list(BOARDS) + list(fleet_tokens)[:20], 40, 60,
                 "progress after the PostgreSQL restart")

        # 4. graceful drain of one collector: its devices come back through the balancer
        held = set(cs[1].connected())
        cs[1].stop()
        hp.wait_status("c2", "DOWN")
        wait(lambda: held & set(fleet_tokens) <= set(cs[0].connected()), 60,
             "the drained collector's devices on the other")
        cs[1].start()
        hp.wait_status("c2", "UP")

        # the fault campaign's audit, over the PostgreSQL store, through either collector
        audits = final_audit(cs[1], fp, boards, timeout=60)
        for d, a in audits.items():
            assert a.ok, (d, a, "\n".join(boards[d].lines()[-30:]))
            assert a.duplicates == 0 and a.lost_undeclared == 0 and a.stored > 50
    finally:
        fleet.stop()
        fp.stop()
    st = cs[0].store()
    try:
        assert audit(st, fleet.fleet) > 200        # the fleet: every acked seq stored once
    finally:
        st.close()
    for b in boards.values():
        assert not b.lines("Traceback")


def test_a_device_reconnecting_through_the_balancer_supersedes_its_half_open_one(cluster):
    cs, hp, tokens = cluster
    dev, tok = "board-1", BOARDS["board-1"]
    with FaultProxy("127.0.0.1", hp.port) as fp:
        old = FakeDevice("ws://127.0.0.1:%d/ws" % fp.port, dev, tok)
        old.hello()
        first = wait(lambda: holder(cs, dev) is not None and holder(cs, dev) + 1, 20,
                     "held") - 1
        fp.set_mode("blackhole")        # the old path goes silent; its sockets stay open
        # leastconn sends the new connection to the collector that holds nothing
        new = FakeDevice(hp.url, dev, tok)
        new.send(hello(dev))
        while new.recv()["t"] != "welcome":    # (desired state may come first on some versions)
            pass
        wait(lambda: holder(cs, dev) == 1 - first, 20, "the other collector holds it")
        wait(lambda: dev not in cs[first].connected(), 20,
             "the first collector let the half-open one go")
        assert "supersedes this one" in cs[first].log()
        new.send({"t": "batch", "r": readings([1, 2, 3])})
        while True:                      # the ack; anything else the collector sends, skipped
            m = new.recv()
            if m["t"] == "ack":
                break
        assert m["ack"] == 3
        new.close()
        old.ws.socket.close()
