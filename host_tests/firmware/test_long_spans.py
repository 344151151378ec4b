# dual: runs on CPython and on MicroPython
"""Spans of days. MicroPython's ticks wrap (at 2**30 ms on the ESP32; the 64-bit unix port's
at 2**62, so the wrap is simulated here), and ticks_diff is right only within half of the
period, ~6.2 days on the board. A link that stayed up for a week must
still count as stable when it drops (the backoff starts over), and a week-long outage must
still spill RAM to flash (what a power cut would otherwise take). Both are measured on the
clock's accumulated uptime; on ticks_diff they read as negative after 6.2 days. Tested with
ticks that wrap as MicroPython's do, on both interpreters."""
import asyncio

from fieldlink import app, clock
from fieldlink.clock import Clock
from fieldlink.outbox import Outbox
from fieldlink.link import S_STREAM, supervisor
from fieldlink.link.supervisor import Supervisor

_PERIOD = 1 << 30
_HALF = 1 << 29
HOUR = 3600 * 1000
WEEK = 7 * 24 * HOUR


class Ticks:
    """MicroPython's ticks_ms/ticks_diff over a time the test moves."""

    def __init__(self):
        self.t = 12345

    def ms(self):
        return self.t & (_PERIOD - 1)

    def diff(self, a, b):
        return ((a - b + _HALF) & (_PERIOD - 1)) - _HALF

    def live(self, clk, span):
        """Let `span` ms pass, the clock read every hour (the sampler reads it far more often)."""
        end = self.t + span
        while self.t < end:
            self.t = min(self.t + HOUR, end)
            clk.uptime_ms()


def with_ticks(t, fn):
    saved = [(m, n, getattr(m, n)) for m in (clock, supervisor, app)
             for n in ("ticks_ms", "ticks_diff")]
    for m in (clock, supervisor, app):
        m.ticks_ms = t.ms
        m.ticks_diff = t.diff
    try:
        return fn()
    finally:
        for m, n, v in saved:
            setattr(m, n, v)


class Backoff:
    """Counts the starts over (reset: classify said the link had been stable)."""
    stable_after = WEEK / 1000

    def __init__(self):
        self.resets = 0

    def reset(self):
        self.resets += 1

    def next_delay(self):
        return 0.5

    def penalty(self):
        return 1


class Cfg:
    batch_max = 4
    window = 8
    ntp_host = ""
    health_interval_s = 3600
    ping_interval_s = 3600
    ping_timeout_s = 3600
    spill_after_s = 60
    connect_timeout_s = 1
    wifi_timeout_s = 1


class Closed(Exception):
    pass


class FakeWS:
    """Open until drop(): then recv raises, as a closed connection's does."""

    def __init__(self):
        self.gone = asyncio.Event()
        self.sent = 0

    async def recv(self):
        await self.gone.wait()
        raise Closed("dropped")

    async def send(self, text):
        self.sent += 1

    async def send_utf8(self, data):
        self.sent += 1

    async def close(self, code=1000, reason=""):
        pass

    def abort(self):
        pass


def test_a_link_up_for_a_week_counts_as_stable_when_it_drops():
    t = Ticks()

    async def main():
        clk = Clock()
        b = Backoff()
        sup = Supervisor(Cfg(), Outbox(1024), clk, b)
        ws = FakeWS()
        sup.ws = ws
        task = asyncio.create_task(sup._stream())
        await asyncio.sleep(0.05)  # the streaming tasks start
        t.live(clk, WEEK)
        ws.gone.set()
        try:
            await asyncio.wait_for(task, 10)
        except Closed as e:  # the step raises what ended the stream: the failure path takes it
            await sup._failed(e, S_STREAM)
        return b.resets, sup.reconnects

    # stable_after is a week: a link up a week and a bit starts the backoff over (on ticks
    # that wrapped, ticks_diff would make its time up negative)
    resets, reconnects = with_ticks(t, lambda: asyncio.run(main()))
    assert reconnects == 1 and resets == 1, (reconnects, resets)


class Outbox1:
    dropped = 0
    next_seq = 1

    def __init__(self):
        self.spills = 0

    def spill(self, full_only=True):
        self.spills += 1

    def held(self):
        return 0


class FastAsyncio:
    """Stands in for the asyncio module inside app: a maintenance round takes 10 ms."""

    @staticmethod
    async def sleep(s):
        await asyncio.sleep(0.01)


def test_a_week_long_outage_still_spills_to_flash():
    t = Ticks()

    async def main():
        clk = Clock()
        sup = Supervisor(Cfg(), Outbox(1024), clk, Backoff())  # down since boot
        a = object.__new__(app.App)  # only what _maintain uses
        a.cfg = Cfg()
        a.clock = clk
        a.sup = sup
        a.outbox = Outbox1()
        a.wdt = None
        a._spilled = False
        t.live(clk, WEEK)  # no Wi-Fi for a week
        task = asyncio.create_task(a._maintain())
        for _ in range(300):
            if a.outbox.spills >= 3:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        try:
            await task
        except BaseException:  # the cancel
            pass
        return a.outbox.spills

    real = app.asyncio
    app.asyncio = FastAsyncio
    try:
        spills = with_ticks(t, lambda: asyncio.run(main()))
    finally:
        app.asyncio = real
    assert spills >= 3, spills
