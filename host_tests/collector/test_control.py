"""Control on the collector (docs/protocol.md "Control", docs/collector.md "Control"):
desired state set over HTTP and the /admin socket, delivered after welcome and on change,
`reported` stored (never rolled back by an older ver), the admin role required and checked
before anything changes, history buckets over HTTP."""
import asyncio
import http.client
import json
import socket
import time

from websockets.asyncio.client import connect

from collector.test_server import (ADMIN, AS_VIEWER, Server, T, dev_connect, do_batch,
                                   do_hello, expect_close, recv, run, send)

AS_ADMIN = {"Authorization": "Bearer " + ADMIN}


async def request(c, method, path, headers=None, body=None):
    """(status, body bytes) of one HTTP request, with a body when given."""
    def go():
        conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=T)
        try:
            data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
            h = {"Host": "127.0.0.1:%d" % c.port}
            h.update(headers or {})
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()
    return await asyncio.get_running_loop().run_in_executor(None, go)


async def session_cookie(c, token):
    def go():
        conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=T)
        try:
            conn.request("POST", "/api/session", headers={
                "Host": "127.0.0.1:%d" % c.port, "Authorization": "Bearer " + token})
            r = conn.getresponse()
            r.read()
            return r.getheader("Set-Cookie").split(";", 1)[0]
        finally:
            conn.close()
    return await asyncio.get_running_loop().run_in_executor(None, go)


async def expect_type(ws, t):
    while True:
        m = await recv(ws)
        if m["t"] == t:
            return m


def test_set_needs_the_admin_role_and_refusals_change_nothing(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            path = "/api/devices/dev-1/outputs/relay"
            viewer_cookie = await session_cookie(c, AS_VIEWER["Authorization"][7:])
            admin_cookie = await session_cookie(c, ADMIN)
            origin = {"Origin": "http://127.0.0.1:%d" % c.port}
            for headers, want in (({}, 401), ({"Authorization": "Bearer " + "x" * 24}, 401),
                                  (AS_VIEWER, 403), ({"Cookie": viewer_cookie}, 403),
                                  (dict(origin, Cookie=viewer_cookie), 403),
                                  # a cookie without this server's Origin: CSRF
                                  ({"Cookie": admin_cookie}, 403),
                                  ({"Cookie": admin_cookie,
                                    "Origin": "http://evil.example"}, 403)):
                st, _ = await request(c, "PUT", path, headers, {"v": 1})
                assert st == want, (headers, st)
            assert c.store.desired("dev-1") == {} and c.store.audit("dev-1") == []
            st, body = await request(c, "PUT", path, dict(origin, Cookie=admin_cookie),
                                     {"v": 1})
            assert st == 200 and json.loads(body)["ver"] == 1
            st, body = await request(c, "PUT", path, AS_ADMIN, {"v": 0})
            assert st == 200 and json.loads(body)["ver"] == 2
            assert [a["ver"] for a in c.store.audit("dev-1")] == [2, 1]
            assert "dashboard" in c.store.audit("dev-1")[1]["who"]
    run(main())


def test_bad_requests_are_refused_with_a_reason(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            base = "/api/devices/dev-1/outputs/"
            for body, why in ((b"not json", b"JSON"), ({"v": "on"}, b"number"),
                              (b'{"v": NaN}', b"JSON"), ({"v": 1e300}, b"range"),
                              ({"x": 1}, b"unknown"), ({}, b"expected"),
                              ({"rule": {"n": "t", "above": 1, "below": 2, "when_above": 1,
                                         "when_below": 0, "enabled": True}}, b"above"),
                              ({"rule": {"n": "t"}}, b"missing")):
                st, text = await request(c, "PUT", base + "relay", AS_ADMIN, body)
                assert st == 400 and why in text, (body, st, text)
            st, text = await request(c, "PUT", base + "bad%20name", AS_ADMIN, {"v": 1})
            assert st == 400 and b"output name" in text
            st, _ = await request(c, "PUT", "/api/devices/nobody/outputs/relay", AS_ADMIN,
                                  {"v": 1})
            assert st == 404
            st, _ = await request(c, "PUT", base + "relay", AS_ADMIN,
                                  {"v": 1, "pad": "x" * 10000})
            assert st == 413
            st, _ = await request(c, "GET", "/api/devices/nobody/outputs", AS_VIEWER)
            assert st == 404
            assert c.store.desired("dev-1") == {}
            # outputs per device are bounded (the full state is one message to the device)
            for i in range(64):
                c.store.set_desired("dev-2", "o%d" % i, {"v": 0}, "t")
            st, text = await request(c, "PUT", "/api/devices/dev-2/outputs/o64", AS_ADMIN,
                                     {"v": 1})
            assert st == 400 and b"limit" in text
            st, _ = await request(c, "PUT", "/api/devices/dev-2/outputs/o63", AS_ADMIN,
                                  {"v": 1})
            assert st == 200
            # the server still serves (the connection class passed everything else through)
            st, _ = await request(c, "GET", "/api/devices", AS_VIEWER)
            assert st == 200
    run(main())


def test_a_change_reaches_the_live_device_and_its_report_is_stored(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            sub = c.subscribe()
            async with dev_connect(c.url) as ws:
                await do_hello(ws)
                st, body = await request(c, "PUT", "/api/devices/dev-1/outputs/relay",
                                         AS_ADMIN, {"v": 1})
                assert st == 200
                m = await recv(ws)
                assert m == {"t": "desired", "out": {"relay": {"ver": 1, "v": 1}},
                             "full": False}
                st, body = await request(c, "GET", "/api/devices/dev-1/outputs", AS_VIEWER)
                assert json.loads(body)["pending"] == ["relay"]
                await send(ws, {"t": "reported", "out": {"relay": {"v": 1, "ver": 1,
                                                                   "why": "command"}}})
                ev = await sub.get(T)
                while ev["t"] != "reported":
                    ev = await sub.get(T)
                assert ev["out"]["relay"]["v"] == 1
                st, body = await request(c, "GET", "/api/devices/dev-1/outputs", AS_VIEWER)
                got = json.loads(body)
                assert got["pending"] == [] and got["reported"]["relay"]["ver"] == 1
                assert "audit" not in got
                st, body = await request(c, "GET", "/api/devices/dev-1/outputs?audit=5",
                                         AS_VIEWER)
                assert [a["ver"] for a in json.loads(body)["audit"]] == [1]
                # an older ver (a late message) does not roll the reported state back
                await request(c, "PUT", "/api/devices/dev-1/outputs/relay", AS_ADMIN,
                              {"v": 0})
                assert (await recv(ws))["out"]["relay"]["ver"] == 2
                await send(ws, {"t": "reported", "out": {"relay": {"v": 0, "ver": 2,
                                                                   "why": "command"}}})
                await send(ws, {"t": "reported", "out": {"relay": {"v": 1, "ver": 1,
                                                                   "why": "command"}}})
                assert await do_batch(ws, [1]) == 1     # both reports handled before this
                assert c.store.reported("dev-1")["relay"] == dict(
                    c.store.reported("dev-1")["relay"], v=0, ver=2)
            sub.close()
    run(main())


def test_a_change_while_offline_is_delivered_after_reconnect(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            async with dev_connect(c.url) as ws:
                await do_hello(ws)
            st, _ = await request(c, "PUT", "/api/devices/dev-1/outputs/fan", AS_ADMIN,
                                  {"v": 0.5})
            assert st == 200
            rule = {"n": "env.temperature", "above": 26, "below": 24, "when_above": 1,
                    "when_below": 0, "enabled": True}
            # the /admin socket sets too
            async with connect(c.url[:-3] + "/admin", additional_headers=AS_ADMIN) as adm:
                await adm.send(json.dumps({"t": "set", "dev": "dev-1", "out": "fan",
                                           "rule": rule}))
                got = json.loads(await asyncio.wait_for(adm.recv(), T))
                assert got["ok"] and got["desired"]["ver"] == 2
                await adm.send(json.dumps({"t": "set", "dev": "dev-1", "out": "fan",
                                           "v": "x"}))
                assert not json.loads(await asyncio.wait_for(adm.recv(), T))["ok"]
            async with dev_connect(c.url) as ws:
                await send(ws, {"t": "hello", "v": 1, "dev": "dev-1", "fw": "t", "board": "b",
                                "boot": 1, "next": 1, "first": 1, "held": 0, "dropped": 0,
                                "synced": False})
                assert (await recv(ws))["t"] == "welcome"
                m = await recv(ws)
                assert m == {"t": "desired", "full": True,
                             "out": {"fan": {"ver": 2, "v": 0.5, "rule": rule}}}
    run(main())


def test_a_hostile_reported_is_refused(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            for bad in ({"out": {"bad name": {"v": 1, "ver": 1, "why": "command"}}},
                        {"out": {"relay": {"v": 1, "ver": -1, "why": "command"}}},
                        {"out": {"relay": {"v": 1, "ver": 1, "why": "magic"}}},
                        {"out": {"relay": {"v": True, "ver": 1, "why": "command"}}},
                        {"out": {"o%d" % i: {"v": 1, "ver": 1, "why": "boot"}
                                 for i in range(65)}},
                        {"out": []}):
                async with dev_connect(c.url) as ws:
                    await do_hello(ws)
                    await send(ws, dict(bad, t="reported"))
                    big = len(bad["out"]) > 64
                    await expect_close(ws, 1009 if big else 1007,
                                       "too_big" if big else "bad_message")
            assert c.store.reported("dev-1") == {}
    run(main())


def test_history_over_http_is_bucketed(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            now = time.time()
            c.store.add_readings("dev-1", [
                {"q": i + 1, "ts": now - 100 + i, "up": i, "n": "env.temperature",
                 "v": float(i), "u": "C"} for i in range(10)])
            st, body = await request(c, "GET", "/api/devices/dev-1/history?n=env.temperature"
                                     "&range=hour", AS_VIEWER)
            got = json.loads(body)
            assert st == 200 and sum(b[4] for b in got["buckets"]) == 10
            assert min(b[1] for b in got["buckets"]) == 0.0
            assert max(b[3] for b in got["buckets"]) == 9.0
            assert len(got["buckets"]) <= 240
            st, _ = await request(c, "GET", "/api/devices/dev-1/history?n=x&range=year",
                                  AS_VIEWER)
            assert st == 400
            st, _ = await request(c, "GET", "/api/devices/dev-1/history?n=env.temperature")
            assert st == 401
            st, body = await request(c, "GET", "/api/devices/dev-1/health?range=day",
                                     AS_VIEWER)
            assert st == 200 and set(json.loads(body)["series"]) == {"heap_free", "rssi",
                                                                     "reconnects"}
    run(main())


def test_fieldlink_ctl_sets_with_the_token_from_a_file_or_the_environment(tmp_path):
    import os
    import subprocess
    import sys
    tok = tmp_path / "admin"
    tok.write_text(ADMIN + "\n")

    async def main():
        async with Server(tmp_path / "c.db") as c:
            def ctl(*argv, env=None):
                return subprocess.run([sys.executable, "-m", "fieldlink_tools.cli", "ctl",
                                       *argv, "--server", c.http_url], capture_output=True,
                                      text=True, timeout=60,
                                      env=dict(os.environ, **(env or {})))
            loop = asyncio.get_running_loop()
            r = await loop.run_in_executor(None, lambda: ctl("dev-1", "relay", "1",
                                                             "--admin-token-file", str(tok)))
            assert r.returncode == 0 and json.loads(r.stdout)["ver"] == 1, r.stderr
            r = await loop.run_in_executor(None, lambda: ctl(
                "dev-1", "relay", "0.5", env={"FIELDLINK_ADMIN_TOKEN": ADMIN}))
            assert r.returncode == 0 and json.loads(r.stdout)["v"] == 0.5
            r = await loop.run_in_executor(None, lambda: ctl(
                "dev-1", "relay", "off", "--admin-token-file", str(tok)))
            assert r.returncode == 0 and json.loads(r.stdout)["v"] == 0
            r = await loop.run_in_executor(None, lambda: ctl(
                "dev-1", "relay", "1", env={"FIELDLINK_ADMIN_TOKEN": "w" * 20}))
            assert r.returncode == 1 and "401" in r.stderr
            assert c.store.desired("dev-1")["relay"]["ver"] == 3
    run(main())


def test_a_put_body_in_pieces_with_expect_and_one_that_never_comes(tmp_path):
    """The body path (control.BodyConnection): the head and the body in separate packets,
    Expect: 100-continue answered, and a body that never arrives is closed by the open
    timeout without changing anything."""
    async def main():
        async with Server(tmp_path / "c.db", open_timeout=1) as c:
            body = json.dumps({"v": 1}).encode()
            head = ("PUT /api/devices/dev-1/outputs/relay HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                    "Authorization: Bearer %s\r\nContent-Length: %d\r\n"
                    "Expect: 100-continue\r\n\r\n" % (c.port, ADMIN, len(body))).encode()

            def go():
                with socket.create_connection(("127.0.0.1", c.port), timeout=T) as s:
                    s.sendall(head[:20])
                    s.sendall(head[20:])
                    got = s.recv(100)
                    s.sendall(body)
                    rest = b""
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        rest += chunk
                    return got, rest

            def stall():
                with socket.create_connection(("127.0.0.1", c.port), timeout=T) as s:
                    s.sendall(head.replace(b"Expect: 100-continue\r\n", b""))
                    return s.recv(65536)      # b"" when closed
            loop = asyncio.get_running_loop()
            got, rest = await loop.run_in_executor(None, go)
            assert got.startswith(b"HTTP/1.1 100 Continue")
            assert rest.startswith(b"HTTP/1.1 200") and b'"ver": 1' in rest, rest
            closed = await loop.run_in_executor(None, stall)
            assert not closed.startswith(b"HTTP/1.1 200"), closed
            assert c.store.desired("dev-1")["relay"]["ver"] == 1    # the stalled one: nothing
    run(main())


def test_desired_state_survives_a_collector_restart_on_every_store(tmp_path, stores):
    async def main():
        async with Server(tmp_path / "c.db", store=stores.open()) as c:
            st, _ = await request(c, "PUT", "/api/devices/dev-1/outputs/relay", AS_ADMIN,
                                  {"v": 1})
            assert st == 200
            async with dev_connect(c.url) as ws:
                await do_hello(ws)
                await send(ws, {"t": "reported", "out": {"relay": {"v": 1, "ver": 1,
                                                                   "why": "command"}}})
                assert await do_batch(ws, [1]) == 1
        async with Server(tmp_path / "c.db", store=stores.open()) as c:
            async with dev_connect(c.url) as ws:
                await send(ws, {"t": "hello", "v": 1, "dev": "dev-1", "fw": "t", "board": "b",
                                "boot": 2, "next": 2, "first": 2, "held": 0, "dropped": 0,
                                "synced": False})
                assert (await recv(ws))["t"] == "welcome"
                assert (await recv(ws))["out"] == {"relay": {"ver": 1, "v": 1}}
            st, body = await request(c, "GET", "/api/devices/dev-1/outputs?audit=10",
                                     AS_VIEWER)
            got = json.loads(body)
            assert got["reported"]["relay"]["ver"] == 1 and got["pending"] == []
            assert len(got["audit"]) == 1
            st, body = await request(c, "PUT", "/api/devices/dev-1/outputs/relay", AS_ADMIN,
                                     {"v": 0})
            assert json.loads(body)["ver"] == 2
    run(main())
