# dual: runs on CPython and on MicroPython
"""A sensor sampled once a week. On an ESP32 the ticks period is 2**30 ms: asyncio cannot
sleep 2**29 ms (~6.2 days) or more (time.ticks_add raises OverflowError, "ticks interval
overflow"), and ticks_diff between two reads that far apart is wrong. The sampler must wait in
shorter steps, reading its clock between them. Driven here on ticks that wrap and waits that
refuse what an ESP32's refuse, on a clock the test moves (no real waiting)."""
try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from fieldlink import sampling

_PERIOD = 1 << 30
_HALF = 1 << 29
DAY = 24 * 3600 * 1000
WEEK = 7 * DAY


class Time:
    """MicroPython's ticks on an ESP32 over a time only the waits below move."""

    def __init__(self):
        self.t = 12345
        self.longest = 0

    def ms(self):
        return self.t & (_PERIOD - 1)

    def diff(self, a, b):
        return ((a - b + _HALF) & (_PERIOD - 1)) - _HALF

    def _pass(self, ms):
        if not -_HALF < ms < _HALF:  # as time.ticks_add does on the ESP32
            raise OverflowError("ticks interval overflow")
        self.longest = max(self.longest, ms)
        self.t += ms

    async def sleep_ms(self, ms):
        self._pass(ms)
        await asyncio.sleep(0)

    async def wait_for(self, aw, timeout_s):
        close = getattr(aw, "close", None)
        if close is not None:
            close()  # (never awaited: the event is not set in this test)
        self._pass(int(timeout_s * 1000))
        await asyncio.sleep(0)
        raise asyncio.TimeoutError


class Shim:
    """What sampling uses of asyncio, the waits on the test's clock."""

    def __init__(self, tm):
        self.Event = asyncio.Event
        self.TimeoutError = asyncio.TimeoutError
        self.wait_for = tm.wait_for


class Weekly:
    name = "soil"
    channels = (("moisture", "%"),)

    def start(self):
        return 0

    def read(self):
        return (31.5,)


def test_weekly_sensor_is_read_every_week_without_overflow():
    tm = Time()
    saved = (sampling.ticks_ms, sampling.ticks_diff, sampling._sleep_ms, sampling.asyncio)
    sampling.ticks_ms = tm.ms
    sampling.ticks_diff = tm.diff
    sampling._sleep_ms = tm.sleep_ms
    sampling.asyncio = Shim(tm)
    got = []
    t0 = tm.t
    try:
        s = sampling.Sampler([Weekly()], {"*": {"interval_s": 7 * 24 * 3600}})

        def emit(name, value, unit, err):
            got.append(tm.t - t0)

        async def main():
            task = asyncio.create_task(s.run(emit))
            n = 0
            while len(got) < 4 and not task.done() and n < 100000:
                await asyncio.sleep(0)
                n += 1
            if task.done():
                await task  # raises what ended the sampler
            task.cancel()
        asyncio.run(main())
    finally:
        sampling.ticks_ms, sampling.ticks_diff, sampling._sleep_ms, sampling.asyncio = saved
    assert len(got) >= 4, got
    for k in range(4):  # on the week, to the millisecond: the cadence is kept
        assert got[k] == k * WEEK, (k, got)
    assert 0 < tm.longest < _HALF
