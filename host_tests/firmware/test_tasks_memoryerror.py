# dual: runs on CPython and on MicroPython
"""The app's long-running tasks on a heap with no block left: a MemoryError where they allocate
must not end them. Found with `fieldlink soak --rom --heapsize 96k` (a blackhole, then the
spill to flash on a fragmented heap):
- App._maintain died in its health line ('Task exception wasn't retrieved ... log.mpy, in log:
  MemoryError allocating 120 bytes'): no spill to flash and no health line again, and on a
  board the watchdog it feeds would have reset it;
- Sampler.run ended in _wait (wait_for's task, 200 bytes), and with it the app: 'ERROR main:
  crashed: MemoryError', a reset, the readings in RAM lost (declared as a reboot gap)."""
try:
    import asyncio
except ImportError:
    import uasyncio as asyncio
from fieldlink import app, log, sampling
from fieldlink.clock import Clock, ticks_ms
from task_support import FastAsyncio, until


# ---- App._maintain ----

class NoHeapForHealth:
    """held() is called for the health line: the first calls find no heap, as formatting the
    line did at 96k."""
    dropped = 0
    next_seq = 9

    def __init__(self, fails):
        self.fails = fails
        self.calls = 0

    def spill(self, full_only=True):
        pass

    def held(self):
        self.calls += 1
        if self.calls <= self.fails:
            raise MemoryError("memory allocation failed, allocating 120 bytes")
        return 3


class Sup:
    state = 3
    heap_min = 0
    skipped = 0
    reconnects = 0
    down_since = None
    trial_until = None  # no firmware on trial

    def __init__(self):
        self.progress_ms = ticks_ms()

    def note_heap(self):
        pass


class Cfg:
    spill_after_s = 0
    health_interval_s = 0  # a health line every round
    connect_timeout_s = 1
    wifi_timeout_s = 1
    ping_interval_s = 1
    ping_timeout_s = 1


class Watchdog:
    fed = 0

    def feed(self):
        self.fed += 1


def test_no_heap_for_the_health_line_does_not_end_maintenance():
    a = object.__new__(app.App)  # only what _maintain uses
    a.cfg = Cfg()
    a.clock = Clock()
    a.sup = Sup()
    a.outbox = NoHeapForHealth(2)
    a.wdt = Watchdog()
    a._spilled = False
    lines = []
    log.set_sink(lines.append)
    real = app.asyncio
    app.asyncio = FastAsyncio
    try:
        health = lambda: [x for x in lines if x.startswith("INFO app: health")]  # noqa: E731
        ended = until(a._maintain, lambda: len(health()) >= 2)
    finally:
        app.asyncio = real
        log.set_sink(print)
    assert not ended, "maintenance ended: %r" % (lines,)
    assert len(health()) >= 2 and "held=3" in health()[0], lines
    assert a.outbox.calls >= 4 and a.wdt.fed >= 4


# ---- Sampler.run ----

class Sensor:
    name = "s"
    channels = (("t", "C"),)

    def start(self):
        return 0

    def read(self):
        return (20.5,)


class NoHeapWaitFor:
    """Stands in for the asyncio module inside sampling: wait_for finds no heap for its task
    the first `fails` times, as at 96k."""
    Event = asyncio.Event
    TimeoutError = asyncio.TimeoutError

    @staticmethod
    def sleep(s):   # (CPython's _sleep_ms looks it up at each call)
        return asyncio.sleep(s)

    def __init__(self, fails):
        self.fails = fails
        self.calls = 0

    def wait_for(self, aw, timeout):
        self.calls += 1
        if self.calls <= self.fails:
            aw.close()  # (never awaited: no warning on CPython)
            raise MemoryError("memory allocation failed, allocating 200 bytes")
        return asyncio.wait_for(aw, timeout)


def test_no_heap_for_the_samplers_wait_does_not_end_it():
    # 0.2 s interval: waits over the 50 ms poke threshold go through wait_for
    s = sampling.Sampler([Sensor()], {"*": {"interval_s": 0.2}}, lambda line: None)
    got = []

    def emit(name, value, unit, err):
        got.append((name, value))
    fake = NoHeapWaitFor(3)
    real = sampling.asyncio
    sampling.asyncio = fake
    try:
        ended = until(lambda: s.run(emit), lambda: len(got) >= 4 and fake.calls > 4)
    finally:
        sampling.asyncio = real
    assert not ended, "the sampler ended (the app would crash)"
    assert len(got) >= 4 and got[0] == ("s.t", 20.5), got
