"""Duty-cycled devices at the collector: `sleep` marks a device "sleeping until T" (not offline)
in /api/devices, a command sent while it sleeps waits in its bounded queue and goes out right
after its next welcome (before its readings' ack), one that waits too long expires with a
clear reply, and a hostile `sleep` or hello.wake is refused."""
import json
import urllib.request

import pytest

from collector_fixtures import collector_proc, fake_device  # noqa: F401
from fieldlink_tools.collector import messages as M
from fieldlink_tools.collector.sleepers import Sleepers, QueueFull

TOK = "tok-1-long-enough-token"


def devices(c):
    req = urllib.request.Request(c.http_url + "api/devices",
                                 headers={"Authorization": "Bearer " + c.viewer_token})
    with urllib.request.urlopen(req, timeout=10) as r:
        return {d["device"]: d for d in json.loads(r.read())["devices"]}


def test_sleeping_device_is_shown_sleeping_and_gets_its_queued_command(collector_proc,
                                                                         fake_device):
    c = collector_proc({"dev-1": TOK})
    d = fake_device(c.url, "dev-1", TOK)
    d.hello(next=1, wake="power")
    d.batch([1])
    d.send({"t": "sleep", "wake_s": 120})
    d.close()
    c.wait_for(lambda st: devices(c)["dev-1"]["state"] == "sleeping" or None, 10,
               what="dev-1 sleeping")
    info = devices(c)["dev-1"]
    assert not info["connected"] and info["sleeping_until"] > 0
    out = c._admin({"op": "cmd", "dev": "dev-1", "cmd": "health", "args": {}}, 10, 10)
    assert out["ok"] and out["queued"]["id"].startswith("q"), out
    d2 = fake_device(c.url, "dev-1", TOK)
    d2.send({"t": "hello", "v": 1, "dev": "dev-1", "fw": "t", "board": "t", "boot": 2,
             "next": 2, "first": 2, "held": 0, "dropped": 0, "synced": False, "wake": "timer"})
    assert d2.recv()["t"] == "welcome"
    assert d2.recv()["t"] == "desired"   # the desired state follows every welcome
    m = d2.recv()   # then the queued command, before anything else
    assert m["t"] == "cmd" and m["cmd"] == "health" and m["id"] == out["queued"]["id"]
    d2.send({"t": "reply", "id": m["id"], "ok": True, "result": None})
    assert devices(c)["dev-1"]["state"] == "online"
    assert "delivering queued command" in c.log()
    assert "reply to unknown command" not in c.log()


def test_command_to_an_offline_device_is_still_refused(collector_proc):
    c = collector_proc({"dev-1": TOK})
    out = c._admin({"op": "cmd", "dev": "dev-1", "cmd": "health", "args": {}}, 10, 10)
    assert not out["ok"] and "not connected" in out["error"]


@pytest.mark.parametrize("wake_s", [-1, "5", None, True, 1e12, [1]])
def test_hostile_sleep_is_refused(collector_proc, fake_device, wake_s):
    c = collector_proc({"dev-1": TOK})
    d = fake_device(c.url, "dev-1", TOK)
    d.hello(next=1)
    d.send({"t": "sleep", "wake_s": wake_s})
    m = d.recv()
    assert m["t"] == "error" and "sleep.wake_s" in m["msg"]


@pytest.mark.parametrize("wake", ["", "x" * 17, "Timer", 4, None, "a b"])
def test_hostile_hello_wake_is_refused(wake):
    m = {"t": "hello", "v": 1, "dev": "d", "fw": "f", "board": "b", "boot": 1, "next": 1,
         "first": 1, "held": 0, "dropped": 0, "synced": False, "wake": wake}
    with pytest.raises(M.ProtocolError):
        M.check(m)


def test_queue_is_bounded_and_commands_expire():
    now = [1000.0]
    s = Sleepers(clock=lambda: now[0], max_queued=2)
    s.asleep("d", 60)
    assert s.state("d", False) == "sleeping"
    s.queue("d", "q1", "health", {}, ttl=10)
    s.queue("d", "q2", "sample_now", {}, ttl=100)
    with pytest.raises(QueueFull):
        s.queue("d", "q3", "health", {})
    now[0] += 50
    assert s.expire() == [("d", "q1", "health")]
    due, expired = s.take("d")
    assert [x[0] for x in due] == ["q2"] and expired == []
    now[0] += 200
    assert s.state("d", False) == "overdue"
    s.awake("d")
    assert s.state("d", False) == "offline" and s.state("d", True) == "online"


def test_sleeping_marks_are_bounded():
    s = Sleepers(max_sleeping=3)
    for i in range(10):
        s.asleep("d%d" % i, 60)
    assert [s.until("d%d" % i) is not None for i in range(10)] == [False] * 7 + [True] * 3


def test_a_queued_command_that_outlives_its_ttl_expires_with_a_reply(tmp_path):
    import asyncio

    from websockets.asyncio.client import connect

    from collector_inproc import InProc, run, until

    now = [1000.0]
    admin = "admin-token-0123456789abcdef"

    async def main():
        async with InProc(tmp_path / "c.db", {"dev-1": TOK}, admin_token=admin) as c:
            col = c.collector
            col.sleepers = Sleepers(clock=lambda: now[0])
            sub = col.subscribe()
            hdr = {"Authorization": "Bearer " + TOK, "X-Fieldlink-Device": "dev-1"}
            async with connect(c.url, subprotocols=["fieldlink.v1"],
                               additional_headers=hdr) as ws:
                await ws.send(json.dumps({"t": "hello", "v": 1, "dev": "dev-1", "fw": "t",
                                          "board": "t", "boot": 1, "next": 1, "first": 1,
                                          "held": 0, "dropped": 0, "synced": False}))
                assert json.loads(await ws.recv())["t"] == "welcome"
                await ws.send(json.dumps({"t": "sleep", "wake_s": 60}))
                await until(lambda: col.sleepers.until("dev-1") is not None, 10, "sleeping")
            async with connect(c.url[:-3] + "/admin",
                               additional_headers={"Authorization": "Bearer " + admin}) as a:
                await a.send(json.dumps({"op": "cmd", "dev": "dev-1", "cmd": "health",
                                         "ttl": 30}))
                out = json.loads(await a.recv())
                assert out["ok"] and out["queued"]["expires"] == now[0] + 30
                now[0] += 31
                await a.send(json.dumps({"op": "connected"}))   # the collector looks again
                assert json.loads(await a.recv())["ok"]
            while True:
                ev = await asyncio.wait_for(sub.get(), 10)
                if ev["t"] == "reply":
                    break
            assert ev["reply"] == {"id": out["queued"]["id"], "ok": False,
                                   "err": "expired: the device did not wake in time"}
            assert col.sleepers.queued("dev-1") == []
            sub.close()

    run(main())
