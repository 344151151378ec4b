"""Every connection class has a limit and a bounded buffer (docs/collector.md "Limits"): viewers
and admins have their own maximum, a viewer that does not read is closed without slowing the
devices, a ping flood that never reads its pongs is cut off, descriptors are kept for devices,
and a flood of refusals costs the log a few lines."""
import asyncio
import base64
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from collector_fixtures import readings
from collector.test_auth import upgrade_status
from collector.test_server import (AS_VIEWER, TOKENS, Server, T, dev_connect, do_batch,
                                   do_hello, recv, run)
from fieldlink_tools.collector import limits as L

def test_viewers_and_admins_have_their_own_limits(tmp_path):
    from collector.test_auth import AS_ADMIN

    async def main():
        async with Server(tmp_path / "c.db", max_viewers=2, max_admins=1, max_devices=1) as c:
            live = c.url[:-3] + "/live"
            admin = c.url[:-3] + "/admin"
            v1 = await connect(live, additional_headers=AS_VIEWER)
            v2 = await connect(live, additional_headers=AS_VIEWER)
            await recv(v1)
            await recv(v2)
            assert await upgrade_status(live, additional_headers=AS_VIEWER) == 503
            async with connect(admin, additional_headers=AS_ADMIN):
                assert await upgrade_status(admin, additional_headers=AS_ADMIN) == 503
                async with dev_connect(c.url) as ws:     # the devices' own limit is apart
                    await do_hello(ws)
            await v1.close()

            async def room():
                return await upgrade_status(live, additional_headers=AS_VIEWER) == 101
            deadline = time.monotonic() + T
            while not await room():
                assert time.monotonic() < deadline, "a closed viewer's place was not freed"
                await asyncio.sleep(0.05)
            await v2.close()
    run(main())


def _tiny_socket(port):
    """A client socket with the smallest receive buffer: a peer that does not read soon
    stops the server's writes from going anywhere."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    s.connect(("127.0.0.1", port))
    return s


def test_viewers_that_never_read_are_closed_and_do_not_slow_devices(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db", max_message=1 << 20) as c:
            c.viewer_bytes = 64 * 1024
            live = c.url[:-3] + "/live"
            stuck = []
            for _ in range(5):
                ws = await connect(live, sock=_tiny_socket(c.port), max_queue=1,
                                   additional_headers=AS_VIEWER, ping_interval=None)
                stuck.append(ws)
            biggest = 0
            async with dev_connect(c.url) as d:
                await do_hello(d)
                for k in range(60):       # ~2.5 MB of readings events for every viewer
                    seqs = range(1 + k * 500, 501 + k * 500)
                    assert await do_batch(d, seqs) == seqs[-1]   # every ack arrives
                    biggest = max([biggest] + [s.bytes for s in c._text_subs])
            # what waited for each stuck viewer stayed within its bound, and each was cut off
            assert biggest <= c.viewer_bytes
            deadline = time.monotonic() + 3 * T
            while c._counts["live"]:
                assert time.monotonic() < deadline, "%d stuck viewers still served" % (
                    c._counts["live"])
                await asyncio.sleep(0.1)
            for ws in stuck:
                ws.transport.abort()
    run(main(), timeout=120)


def _upgrade(port, path, headers):
    s = _tiny_socket(port)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1:%d" % port, "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: " + key, "Sec-WebSocket-Version: 13"]
    lines += ["%s: %s" % kv for kv in headers.items()]
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def _ping_flood(s, count):
    """Masked 125-byte pings, never reading: True when the server cut the connection."""
    mask = b"\x01\x02\x03\x04"
    payload = bytes(125)
    frame = b"\x89\xfd" + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    chunk = frame * 1000
    s.settimeout(T)
    try:
        for _ in range(count // 1000):
            s.sendall(chunk)
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


@pytest.mark.parametrize("route", ["/ws", "/live"])
def test_a_ping_flood_that_never_reads_its_pongs_is_cut_off(tmp_path, route):
    async def main():
        async with Server(tmp_path / "c.db", ping_interval=None) as c:
            headers = dict(AS_VIEWER)
            if route == "/ws":
                headers = {"Authorization": "Bearer " + TOKENS["dev-1"],
                           "X-Fieldlink-Device": "dev-1",
                           "Sec-WebSocket-Protocol": "fieldlink.v1"}
            loop = asyncio.get_running_loop()
            s = await loop.run_in_executor(None, _upgrade, c.port, route, headers)
            try:
                # 160,000 pings: 20 MB of pongs, far beyond any socket buffer
                cut = await loop.run_in_executor(None, _ping_flood, s, 160000)
            finally:
                s.close()
            assert cut, "the server kept answering pings nobody reads"
            async with dev_connect(c.url) as ws:               # everyone else is fine
                await do_hello(ws)
    run(main(), timeout=120)


def test_descriptors_are_kept_for_devices_and_the_log_stays_small(tmp_path):
    """A collector with 200 descriptors: strangers opening connections get refused (or
    dropped) while a device still connects, and the log does not grow with the flood."""
    devfile = tmp_path / "devices.json"
    devfile.write_text(json.dumps({"dev-1": "tok-1"}))
    vfile = tmp_path / "viewer"
    vfile.write_text("viewer-token-0123456789\n")
    logf = open(tmp_path / "log", "wb")

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fieldlink_tools.cli", "server", "--port", "0", "-v",
         "--db", str(tmp_path / "c.db"), "--devices", str(devfile), "--max-devices", "50",
         "--viewer-token-file", str(vfile)],
        stdout=subprocess.PIPE, stderr=logf, text=True, preexec_fn=low_limit)
    held = []
    try:
        line = proc.stdout.readline()
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        for k in range(400):   # twice the descriptors: idle strangers from 8 addresses
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=T,
                                             source_address=("127.0.0.%d" % (2 + k % 8), 0))
                held.append(s)
            except OSError:
                break
        assert len(held) == 400

        async def device():
            url = "ws://127.0.0.1:%d/ws" % port
            async with dev_connect(url) as ws:
                await do_hello(ws)
                return await do_batch(ws, [1, 2, 3])
        assert run(device()) == 3
    finally:
        for s in held:
            s.close()
        proc.terminate()
        proc.wait(30)
        logf.close()
    size = os.path.getsize(tmp_path / "log")
    assert size < 200_000, size


def test_repeated_log_lines_are_counted_not_written():
    now = [0.0]
    f = L.RepeatFilter(window=10, burst=3, clock=lambda: now[0])

    def rec(msg, *args):
        return logging.LogRecord("x", logging.WARNING, __file__, 1, msg, args, None)
    passed = [f.filter(rec("refused %s", i)) for i in range(10)]
    assert passed == [True] * 3 + [False] * 7
    assert f.filter(rec("another %s", 1))
    now[0] = 10.0
    r = rec("refused %s", 99)
    assert f.filter(r) and r.getMessage() == (
        "refused 99 (and 7 similar lines left out in 10 s)")


def test_handshakes_in_progress_are_bounded_per_source(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db", max_handshakes_per_source=3) as c:
            loop = asyncio.get_running_loop()

            def idle_strangers():
                socks = [socket.create_connection(("127.0.0.1", c.port), timeout=T)
                         for _ in range(5)]
                dropped = []
                for s in socks[3:]:
                    try:
                        dropped.append(s.recv(1) == b"")
                    except ConnectionResetError:
                        dropped.append(True)
                return socks, dropped
            socks, dropped = await loop.run_in_executor(None, idle_strangers)
            try:
                assert dropped == [True, True]
                assert c._pending["127.0.0.1"] == 3
                for s in socks[:3]:
                    s.close()
                deadline = time.monotonic() + T
                while c._pending:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
                async with dev_connect(c.url) as ws:
                    await do_hello(ws)
            finally:
                for s in socks:
                    s.close()
    run(main())


async def _get_status(port, path, headers):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n" % (path, port, "".join(
        "%s: %s\r\n" % kv for kv in headers.items()))).encode())
    await w.drain()
    status = int((await asyncio.wait_for(r.readline(), T)).split()[1])
    await asyncio.wait_for(r.read(), T)
    w.close()
    return status


def test_a_crowd_of_viewers_costs_the_store_one_snapshot_at_a_time(tmp_path):
    calls = []

    async def main():
        async with Server(tmp_path / "c.db") as c:
            real = c.store.devices

            def slow_devices():
                calls.append(1)
                time.sleep(0.2)       # a big fleet: the store thread is busy meanwhile
                return real()
            c.store.devices = slow_devices
            got = await asyncio.gather(*[_get_status(c.port, "/api/devices", AS_VIEWER)
                                         for _ in range(20)])
            assert got == [200] * 20
            async with connect(c.url[:-3] + "/live", additional_headers=AS_VIEWER) as ws:
                assert (await recv(ws))["t"] == "snapshot"
    run(main())
    assert len(calls) <= 4, len(calls)      # was one per request: 21
