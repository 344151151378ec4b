"""`fieldlink fleet`: many lightweight protocol-v1 devices in one CPython asyncio process, a
load generator for the collector (docs/protocol.md; docs/collector.md "Performance").

Each device behaves like the firmware on the wire: hello (next, first, held, dropped, epoch),
its pending gaps, then batches of what it holds with at most `window` readings unacked, drops
what it holds up to each ack, a full outbox drops its oldest readings as a gap `dropped`,
answers commands, and reconnects with full-jitter exponential backoff.

    fieldlink fleet --url ws://127.0.0.1:8765/ws --devices 1000 --tokens fleet.json --rate 5

`--tokens FILE` ({id: token}) is made with fresh tokens when missing: start the collector with
`fieldlink server --devices FILE --max-devices N`. Prints counts; the last line is key=value.
"""
import argparse
import asyncio
import json
import os
import random
import resource
import secrets
import time
from collections import deque
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

SUBPROTOCOL = "fieldlink.v1"


def raise_nofile(want):
    """Raise RLIMIT_NOFILE's soft limit towards `want` (up to the hard limit); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if new > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        return new
    return soft


def make_tokens(n, prefix="fleet"):
    return {"%s-%05d" % (prefix, i): secrets.token_urlsafe(18) for i in range(n)}


def load_tokens(path, n, prefix="fleet"):
    """The first n devices of FILE, made (and written, mode 0600) when FILE is missing."""
    p = Path(path)
    if p.exists():
        tokens = json.loads(p.read_text())
    else:
        tokens = make_tokens(n, prefix)
        fd = os.open(str(p), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(tokens, f)
    items = sorted(tokens.items())[:n]
    if len(items) < n:
        raise SystemExit("fieldlink fleet: %s holds %d devices, %d asked" % (path, len(items), n))
    return dict(items)


class Stats:
    """What a fleet saw, summed over its devices."""

    def __init__(self):
        self.connects = 0
        self.refused = {}           # HTTP status -> count
        self.closes = {}            # close code -> count
        self.batches = 0
        self.readings_sent = 0
        self.acked = 0              # readings the collector acked (each once)
        self.dropped = 0            # readings dropped from full outboxes
        self.full_window = 0        # times a device had `window` readings unacked
        self.latencies = []         # s from a batch sent to the ack covering it
        self.errors = {}            # `error` codes received

    def latency_ms(self, q):
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return 1000 * xs[min(len(xs) - 1, int(q * len(xs)))]


class FleetDevice:
    """One device. `rate` readings/s (each sampled on its own, like a sensor), `batch` the most
    per batch message, `window` the most readings unacked, `outbox` the most it holds."""

    def __init__(self, url, dev, token, stats, rate=0.1, batch=20, window=64, outbox=1000,
                 backoff_base=1.0, backoff_cap=60.0, stable_after=30.0, rng=None, ssl=None,
                 open_timeout=30.0, epoch=None, boot=1, ramp=0.0):
        self.url, self.dev, self.token, self.stats = url, dev, token, stats
        self.rate, self.batch, self.window, self.outbox_max = rate, batch, window, outbox
        self.backoff_base, self.backoff_cap, self.stable_after = (backoff_base, backoff_cap,
                                                                  stable_after)
        self.rng = rng or random.Random(dev)
        self.ssl = ssl
        self.open_timeout = open_timeout
        # a fresh epoch per run, as a device whose flash was wiped: numbering starts at 1
        self.epoch = epoch or secrets.token_hex(4)
        self.boot = boot
        self.ramp = ramp            # the first connect within [0, ramp) s: a fleet powering up
        self.next = 1               # the next seq to sample
        self.held = deque()         # (seq, up_ms, value) not yet acked, oldest first
        self.sent_to = 0            # highest seq sent on this connection
        self.ack = 0                # the collector's ack (device numbering)
        self.gaps = []              # [from, to] pending, oldest first
        self.inflight = deque()     # (last seq, time sent) per batch on this connection
        self.connected = False
        self.ws = None
        self.acked_since_connect = 0
        self._kick = asyncio.Event()
        self._t0 = time.monotonic()

    # -- sampling ------------------------------------------------------------------------

    def sample(self):
        q = self.next
        self.next += 1
        up = int((time.monotonic() - self._t0) * 1000)
        self.held.append((q, up, round(20 + (q % 100) / 10, 1)))
        if len(self.held) > self.outbox_max:
            old = self.held.popleft()[0]
            self.stats.dropped += 1
            if self.gaps and self.gaps[-1][1] == old - 1:
                self.gaps[-1][1] = old
            else:
                self.gaps.append([old, old])
        self._kick.set()

    async def sampler(self, stop):
        if self.rate <= 0:
            return
        period = 1.0 / self.rate
        # devices start spread over one period, not in lock-step
        await asyncio.sleep(self.rng.random() * period)
        nxt = time.monotonic()
        while not stop.is_set():
            self.sample()
            nxt += period
            delay = nxt - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    # -- the link ------------------------------------------------------------------------

    def _hello(self):
        first = self.held[0][0] if self.held else self.next
        return {"t": "hello", "v": 1, "dev": self.dev, "fw": "fleet", "board": "fleet",
                "boot": self.boot, "next": self.next, "first": first, "held": len(self.held),
                "dropped": self.stats_dropped_here(), "synced": False, "epoch": self.epoch}

    def stats_dropped_here(self):
        return sum(b - a + 1 for a, b in self.gaps)

    def _on_ack(self, ack):
        if ack <= self.ack:
            return
        now = time.monotonic()
        while self.held and self.held[0][0] <= ack:
            self.held.popleft()
            self.stats.acked += 1
            self.acked_since_connect += 1
        while self.inflight and self.inflight[0][0] <= ack:
            self.stats.latencies.append(now - self.inflight.popleft()[1])
        self.gaps = [g for g in self.gaps if g[1] > ack]
        self.ack = ack
        self._kick.set()

    async def _receive(self, ws):
        async for raw in ws:
            m = json.loads(raw)
            t = m.get("t")
            if t == "ack":
                self._on_ack(m["ack"])
            elif t == "cmd":
                await ws.send(json.dumps({"t": "reply", "id": m["id"], "ok": True,
                                          "result": None}))
            elif t == "error":
                code = m.get("code")
                self.stats.errors[code] = self.stats.errors.get(code, 0) + 1

    async def _send(self, ws):
        gap_sent_to = 0
        while True:
            # a gap goes before the batches after it (protocol order): the pending ones at
            # the start of a connection, a drop while connected before the next batch
            for a, b in list(self.gaps):
                if b > gap_sent_to:
                    await ws.send(json.dumps({"t": "gap", "from": a, "to": b,
                                              "why": "dropped"}))
                    gap_sent_to = b
            unacked = self.sent_to - self.ack
            if self.held and self.held[-1][0] > self.sent_to and unacked < self.window:
                room = min(self.batch, self.window - unacked)
                start = max(self.sent_to, self.ack) + 1
                rs = []
                for q, up, v in self.held:
                    if q >= start:
                        rs.append({"q": q, "ts": None, "up": up, "n": "env.temperature",
                                   "v": v, "u": "C"})
                        if len(rs) >= room:
                            break
                if rs:
                    self.sent_to = rs[-1]["q"]
                    self.inflight.append((self.sent_to, time.monotonic()))
                    await ws.send(json.dumps({"t": "batch", "r": rs}, separators=(",", ":")))
                    self.stats.batches += 1
                    self.stats.readings_sent += len(rs)
                    if self.sent_to - self.ack >= self.window:
                        self.stats.full_window += 1
                    continue
            self._kick.clear()
            await self._kick.wait()

    async def _connection(self):
        headers = {"Authorization": "Bearer " + self.token, "X-Fieldlink-Device": self.dev}
        async with connect(self.url, subprotocols=[SUBPROTOCOL], additional_headers=headers,
                           compression=None, ssl=self.ssl, open_timeout=self.open_timeout,
                           ping_interval=None, max_queue=64) as ws:
            self.ws = ws
            self.stats.connects += 1
            await ws.send(json.dumps(self._hello()))
            m = json.loads(await asyncio.wait_for(ws.recv(), self.open_timeout))
            if m.get("t") != "welcome":
                self.stats.errors[m.get("code")] = self.stats.errors.get(m.get("code"), 0) + 1
                raise ConnectionError("no welcome: %r" % (m,))
            self.sent_to = self.ack = 0
            self.inflight.clear()
            self._on_ack(m["ack"])
            self.sent_to = max(self.sent_to, self.ack)
            self.connected = True
            self.acked_since_connect = 0
            sender = asyncio.ensure_future(self._send(ws))
            try:
                await self._receive(ws)
            finally:
                self.connected = False
                self.ws = None
                sender.cancel()
                try:
                    await sender
                except (asyncio.CancelledError, ConnectionClosed):
                    pass
            code = ws.close_code
            self.stats.closes[code] = self.stats.closes.get(code, 0) + 1

    async def run(self, stop):
        sampler = asyncio.ensure_future(self.sampler(stop))
        attempt = 0
        try:
            if self.ramp:
                try:
                    await asyncio.wait_for(stop.wait(), self.rng.random() * self.ramp)
                except (asyncio.TimeoutError, TimeoutError):
                    pass
            while not stop.is_set():
                up_since = time.monotonic()
                try:
                    await self._connection()
                except InvalidStatus as e:
                    st = e.response.status_code
                    self.stats.refused[st] = self.stats.refused.get(st, 0) + 1
                except ConnectionClosed as e:
                    code = e.rcvd.code if e.rcvd else None
                    self.stats.closes[code] = self.stats.closes.get(code, 0) + 1
                except (OSError, asyncio.TimeoutError, TimeoutError, ConnectionError,
                        ValueError):
                    pass
                self.connected = False
                if stop.is_set():
                    break
                if time.monotonic() - up_since >= self.stable_after:
                    attempt = 0
                bound = min(self.backoff_cap, self.backoff_base * 2 ** min(attempt, 30))
                attempt += 1
                try:   # full jitter: a fleet coming back after a restart spreads out
                    await asyncio.wait_for(stop.wait(), self.rng.random() * bound)
                except (asyncio.TimeoutError, TimeoutError):
                    pass
        finally:
            sampler.cancel()


class Fleet:
    """N FleetDevices in this event loop. `start()`, `await stop()`."""

    def __init__(self, url, tokens, seed=1, **device_kw):
        self.stats = Stats()
        rng = random.Random(seed)
        self.devices = [FleetDevice(url, d, t, self.stats, rng=random.Random(rng.random()),
                                    **device_kw) for d, t in sorted(tokens.items())]
        self._stop = asyncio.Event()
        self._tasks = []

    def start(self):
        raise_nofile(len(self.devices) + 256)
        self._tasks = [asyncio.ensure_future(d.run(self._stop)) for d in self.devices]
        return self

    def connected(self):
        return sum(1 for d in self.devices if d.connected)

    async def stop(self):
        """Every device says goodbye (1001, going away), then stops."""
        self._stop.set()
        await asyncio.gather(*(d.ws.close(1001, "fleet stopping") for d in self.devices
                               if d.ws is not None), return_exceptions=True)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def add_arguments(p):
    p.add_argument("--url", default="ws://127.0.0.1:8765/ws", help="the collector's /ws URL")
    p.add_argument("--devices", type=int, default=100, help="devices to play (100)")
    p.add_argument("--tokens", required=True, metavar="FILE",
                   help="JSON {id: token}; made with fresh tokens (mode 0600) when missing")
    p.add_argument("--rate", type=float, default=0.1,
                   help="readings per second per device (0.1: one every 10 s)")
    p.add_argument("--batch", type=int, default=20, help="most readings per batch (20)")
    p.add_argument("--window", type=int, default=64, help="most readings unacked (64)")
    p.add_argument("--duration", type=float, default=60, help="seconds to run (60)")
    p.add_argument("--backoff-cap", type=float, default=60, help="reconnect delay cap, s (60)")
    p.add_argument("--seed", type=int, default=1, help="jitter seed (1)")


def run(args):
    tokens = load_tokens(args.tokens, args.devices)
    return asyncio.run(_main(args, tokens))


async def _main(args, tokens):
    fleet = Fleet(args.url, tokens, seed=args.seed, rate=args.rate, batch=args.batch,
                  window=args.window, backoff_cap=args.backoff_cap).start()
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < args.duration:
            await asyncio.sleep(min(5, args.duration))
            s = fleet.stats
            print("t=%.0fs connected=%d batches=%d acked=%d" % (
                time.monotonic() - t0, fleet.connected(), s.batches, s.acked), flush=True)
    finally:
        await fleet.stop()
    s = fleet.stats
    dt = time.monotonic() - t0
    print("refused=%s closes=%s errors=%s dropped=%d" % (s.refused, s.closes, s.errors,
                                                          s.dropped))
    print("devices=%d batches_per_s=%.0f acked_per_s=%.0f ack_p50_ms=%.1f ack_p99_ms=%.1f"
          % (len(fleet.devices), s.batches / dt, s.acked / dt, s.latency_ms(0.5),
             s.latency_ms(0.99)))
    return 0
