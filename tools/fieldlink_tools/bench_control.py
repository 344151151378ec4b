"""fieldlink bench control: how long a change of an output takes from the API call
(PUT /api/devices/ID/outputs/NAME) until the device's report of it is stored (the /live
`reported` event, published after the commit), over the WebSocket link, p50/p99; and, in the
same run, the same change delivered the way devices without a push channel get it: polling
GET .../outputs every 1 s and every 5 s (the changes land at random moments between polls).
Also the bytes on the wire per device per hour while idle: the link's keepalive (the
collector's WebSocket ping every --ping-interval s and its pong) against one poll per period,
counted as application bytes (HTTP requests and responses, WebSocket frames) through a
counting relay; TCP/IP headers (and, for polling, a TCP handshake per poll) come on top.

The collector runs in its own process (SQLite, synchronous=FULL: every change and every
report is a durable commit); the device is a lightweight protocol device in this process
that applies each newer desired version and reports it. Beside it (--vboard N, default 100,
0 to skip) a virtual board running the real firmware on the MicroPython unix port, a digital
output `fan`: from the API call until the board's pin changes (vboard_pins.json in its flash,
read every millisecond) and until its report is stored.

Last line: control_p50_ms=A control_p99_ms=B poll_1s_p50_ms=C poll_5s_p50_ms=D
vboard_pin_p50_ms=E vboard_pin_p99_ms=F vboard_reported_p50_ms=G vboard_reported_p99_ms=H
"""
import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import connect

from .collector.process import CollectorProcess

DEV, DEV_TOKEN, OUT = "bench-1", "bench-device-token-0123", "relay"
VDEV, VDEV_TOKEN, VOUT, VPIN = "bench-vboard", "bench-vboard-token-0123", "fan", "26"
VBOARD = {"name": "virtual", "chip": "unix", "buses": {},
          "outputs": [{"name": VOUT, "type": "digital", "pin": int(VPIN), "safe": 0}],
          "sensors": [{"name": "sim", "driver": "simulated", "seed": 14}]}


class Relay:
    """A TCP relay on 127.0.0.1 that counts the bytes each way."""

    def __init__(self, port):
        self.port = port
        self.up = self.down = 0
        self.server = None

    async def start(self):
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _conn(self, r, w):
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            w.close()
            return

        async def pipe(src, dst, up):
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    if up:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()
        await asyncio.gather(pipe(r, uw, True), pipe(ur, w, False))

    def close(self):
        self.server.close()


async def http(port, method, path, token, body=None):
    """(status, body bytes, request bytes, response bytes) of one HTTP/1.1 request."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        data = b"" if body is None else json.dumps(body).encode()
        req = ("%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n"
               "Content-Length: %d\r\nContent-Type: application/json\r\n\r\n"
               % (method, path, port, token, len(data))).encode() + data
        w.write(req)
        await w.drain()
        resp = await asyncio.wait_for(r.read(), 30)     # the server closes after answering
        head, _, payload = resp.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), payload, len(req), len(resp)
    finally:
        w.close()


class Device:
    """Applies desired records newer than the last applied one and reports them."""

    def __init__(self, url):
        self.url = url
        self.applied = {}
        self.ws = None
        self.ready = asyncio.Event()
        self.push = True           # False: pushed desired is ignored (the polling runs)

    async def run(self):
        async with connect(self.url, subprotocols=["fieldlink.v1"], compression=None,
                           ping_interval=None, additional_headers={
                               "Authorization": "Bearer " + DEV_TOKEN,
                               "X-Fieldlink-Device": DEV}) as ws:
            self.ws = ws
            await ws.send(json.dumps({"t": "hello", "v": 1, "dev": DEV, "fw": "bench",
                                      "board": "bench", "boot": 1, "next": 1, "first": 1,
                                      "held": 0, "dropped": 0, "synced": True}))
            async for raw in ws:
                m = json.loads(raw)
                if m["t"] == "desired" and (self.push or m["full"]):
                    await self.apply(m["out"])
                    self.ready.set()

    async def apply(self, out):
        changed = {}
        for name, rec in out.items():
            if rec["ver"] > self.applied.get(name, (None, 0))[1]:
                self.applied[name] = (rec["v"], rec["ver"])
                changed[name] = {"v": rec["v"], "ver": rec["ver"], "why": "command"}
        if changed:
            await self.ws.send(json.dumps({"t": "reported", "out": changed}))


async def live_events(url, token, queues):
    """Each device's stored reports (their vers) into queues[dev]."""
    async with connect(url, additional_headers={"Authorization": "Bearer " + token},
                       max_size=2 ** 24) as ws:
        async for raw in ws:
            m = json.loads(raw)
            if m.get("t") == "reported" and m.get("dev") in queues:
                for rec in m["out"].values():
                    queues[m["dev"]].put_nowait(rec["ver"])


async def wait_ver(queue, ver, timeout=30):
    while True:
        got = await asyncio.wait_for(queue.get(), timeout)
        if got >= ver:
            return


async def push_run(port, admin, queue, n):
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        st, body, _, _ = await http(port, "PUT", "/api/devices/%s/outputs/%s" % (DEV, OUT),
                                    admin, {"v": i % 2})
        if st != 200:
            raise RuntimeError("PUT answered %d: %r" % (st, body[:200]))
        await wait_ver(queue, json.loads(body)["ver"])
        lat.append((time.perf_counter() - t0) * 1000)
    return lat


async def poll_run(port, admin, viewer, dev, queue, period, n, rng):
    """A polling device: GET .../outputs every `period` s, applies and reports over its
    socket what is newer (the report takes the same path as in the push run; what is pushed
    is ignored meanwhile). The latency is from the PUT to the report being stored."""
    dev.push = False
    seen = {"ver": max((v for _, v in dev.applied.values()), default=0)}
    stop = asyncio.Event()
    per_poll = []

    async def poller():
        while not stop.is_set():
            st, body, up, down = await http(port, "GET", "/api/devices/%s/outputs" % DEV,
                                            viewer)
            per_poll.append(up + down)
            rec = json.loads(body)["desired"].get(OUT)
            if rec and rec["ver"] > seen["ver"]:
                seen["ver"] = rec["ver"]
                await dev.apply({OUT: rec})
            try:
                await asyncio.wait_for(stop.wait(), period)
            except asyncio.TimeoutError:
                pass
    task = asyncio.ensure_future(poller())
    lat = []
    try:
        for i in range(n):
            await asyncio.sleep(rng.uniform(0, period))   # a change at any moment
            t0 = time.perf_counter()
            st, body, _, _ = await http(port, "PUT", "/api/devices/%s/outputs/%s"
                                        % (DEV, OUT), admin, {"v": i % 2})
            await wait_ver(queue, json.loads(body)["ver"], period * 3 + 30)
            lat.append((time.perf_counter() - t0) * 1000)
    finally:
        stop.set()
        await task
        dev.push = True
    return lat, statistics.median(per_poll)


def pin_level(path):
    """The fan pin's level in the board's vboard_pins.json (None: not there or mid-write)."""
    try:
        with open(path) as f:
            return json.load(f).get(VPIN, {}).get("v")
    except (OSError, ValueError):
        return None


async def wait_pin(path, level, timeout=30):
    """Read the pins file every millisecond until the pin is at `level`; the time it was seen
    there (perf_counter). Read each time, not on an mtime change: a rewrite of the same size
    within the file system's timestamp tick leaves the stat unchanged."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if pin_level(path) == level:
            return time.perf_counter()
        await asyncio.sleep(0.001)
    raise RuntimeError("the virtual board's pin %s did not go to %r in %g s" % (VPIN, level,
                                                                               timeout))


async def vboard_run(port, admin, queue, pins, n):
    """(API call -> pin, API call -> report stored) latencies of n changes, ms."""
    to_pin, to_rep = [], []
    for i in range(n):
        level = (i + 1) % 2                     # the board boots at 0 (safe)
        t0 = time.perf_counter()
        st, body, _, _ = await http(port, "PUT", "/api/devices/%s/outputs/%s" % (VDEV, VOUT),
                                    admin, {"v": level})
        if st != 200:
            raise RuntimeError("PUT answered %d: %r" % (st, body[:200]))
        ver = json.loads(body)["ver"]

        async def reported():
            await wait_ver(queue, ver)
            return time.perf_counter()
        t_pin, t_rep = await asyncio.gather(wait_pin(pins, level), reported())
        to_pin.append((t_pin - t0) * 1000)
        to_rep.append((t_rep - t0) * 1000)
    return to_pin, to_rep


def start_vboard(work, url):
    from . import sim
    conf = sim.make_config(url, VDEV, VDEV_TOKEN, {
        "sample_interval_s": 1, "failsafe_s": 60, "health_interval_s": 30, "wdt_s": 0,
        "backoff_base_s": 0.2, "backoff_max_s": 1})
    return sim.SimBoard(work / "vboard-flash", conf, log_path=work / "vboard.log",
                        board_data=VBOARD).start()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def idle_ws_bytes(port, seconds):
    """Application bytes each way on an idle device link through the relay (pings, pongs)."""
    relay = Relay(port)
    rport = await relay.start()
    async with connect("ws://127.0.0.1:%d/ws" % rport, subprotocols=["fieldlink.v1"],
                       compression=None, ping_interval=None, additional_headers={
                           "Authorization": "Bearer " + DEV_TOKEN,
                           "X-Fieldlink-Device": DEV}) as ws:
        await ws.send(json.dumps({"t": "hello", "v": 1, "dev": DEV, "fw": "bench",
                                  "board": "bench", "boot": 1, "next": 1, "first": 1,
                                  "held": 0, "dropped": 0, "synced": True}))
        await ws.recv()
        await ws.recv()
        base = relay.up + relay.down
        await asyncio.sleep(seconds)       # idle on purpose: the keepalive's bytes are measured
        idle = relay.up + relay.down - base
    relay.close()
    return idle


async def main_async(args):
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="fieldlink-bench-control-"))
    tokens = {DEV: DEV_TOKEN}
    if args.vboard:
        tokens[VDEV] = VDEV_TOKEN
    proc = CollectorProcess(work / "c.db", tokens,
                            extra_args=["--ping-interval", str(args.ping_interval)])
    proc.start()
    board = None
    vb = None
    try:
        port = proc.port
        admin, viewer = proc.admin_token, proc.viewer_token
        events, vevents = asyncio.Queue(), asyncio.Queue()
        live = asyncio.ensure_future(live_events("ws://127.0.0.1:%d/live" % port, viewer,
                                                 {DEV: events, VDEV: vevents}))
        dev = Device(proc.url)
        dtask = asyncio.ensure_future(dev.run())
        await asyncio.wait_for(dev.ready.wait(), 30)
        await asyncio.sleep(0.2)     # the /live subscription is in place (its snapshot came)
        push = await push_run(port, admin, events, args.changes)
        poll = {}
        for period, n in ((1.0, args.poll_1s), (5.0, args.poll_5s)):
            lat, per = await poll_run(port, admin, viewer, dev, events, period, n, rng)
            poll[period] = (lat, per)
        if args.vboard:
            board = start_vboard(work, proc.url)
            pins = os.path.join(board.flash, "vboard_pins.json")
            # up: its boot report stored (the whole state after the welcome), pin at safe
            await asyncio.wait_for(vevents.get(), 60)
            await wait_pin(pins, 0)
            vb = await vboard_run(port, admin, vevents, pins, args.vboard)
            board.stop()
            board = None
        live.cancel()
        dtask.cancel()
        idle = await idle_ws_bytes(port, args.idle_s)
    finally:
        if board is not None:
            board.stop()
        proc.stop()
    ws_hour = idle / args.idle_s * 3600
    print("push over the WebSocket link: %d changes, p50 %.2f ms, p99 %.2f ms, max %.2f ms"
          % (len(push), pct(push, 50), pct(push, 99), max(push)))
    for period, (lat, per) in poll.items():
        print("polling every %g s: %d changes, p50 %.0f ms, p99 %.0f ms; %d bytes per poll ="
              " %.0f bytes/hour idle" % (period, len(lat), pct(lat, 50), pct(lat, 99), per,
                                         per * 3600 / period))
    print("WebSocket idle (ping every %g s + pong): %.0f bytes/hour (measured over %g s)"
          % (args.ping_interval, ws_hour, args.idle_s))
    last = ("control_p50_ms=%.2f control_p99_ms=%.2f poll_1s_p50_ms=%.0f poll_5s_p50_ms=%.0f"
            % (pct(push, 50), pct(push, 99), pct(poll[1.0][0], 50), pct(poll[5.0][0], 50)))
    if vb:
        to_pin, to_rep = vb
        print("virtual board (real firmware, MicroPython unix port): %d changes; API call ->"
              " pin p50 %.2f ms, p99 %.2f ms, max %.2f ms; -> report stored p50 %.2f ms,"
              " p99 %.2f ms, max %.2f ms" % (len(to_pin), pct(to_pin, 50), pct(to_pin, 99),
                                            max(to_pin), pct(to_rep, 50), pct(to_rep, 99),
                                            max(to_rep)))
        last += (" vboard_pin_p50_ms=%.2f vboard_pin_p99_ms=%.2f vboard_reported_p50_ms=%.2f"
                 " vboard_reported_p99_ms=%.2f" % (pct(to_pin, 50), pct(to_pin, 99),
                                                   pct(to_rep, 50), pct(to_rep, 99)))
    print(last)
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="fieldlink bench control", description=__doc__)
    p.add_argument("--changes", type=int, default=1000, help="changes pushed (1000)")
    p.add_argument("--poll-1s", type=int, default=30, help="changes by 1 s polling (30)")
    p.add_argument("--poll-5s", type=int, default=12, help="changes by 5 s polling (12)")
    p.add_argument("--ping-interval", type=float, default=20,
                   help="the collector's keepalive ping (20 s, its default)")
    p.add_argument("--idle-s", type=float, default=61,
                   help="seconds of idle link measured (61: 3 pings at 20 s)")
    p.add_argument("--vboard", type=int, default=100, metavar="N",
                   help="changes to the virtual board running the real firmware (100; 0: none)")
    p.add_argument("--seed", type=int, default=14)
    return asyncio.run(main_async(p.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
