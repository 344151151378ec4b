# dual: runs on CPython and on MicroPython
"""App._maintain, the once-a-second maintenance task: a flash write that fails while spilling
(OSError from the outbox's segment or meta write, e.g. a full filesystem) is logged and the
task goes on (it used to end: no more spills, no more health lines); the watchdog is fed
only while the supervisor makes progress."""
from fieldlink import app, log
from fieldlink.clock import Clock, ticks_ms
from task_support import FastAsyncio, until


class FailingFlashOutbox:
    dropped = 3
    next_seq = 42

    def __init__(self):
        self.spills = []

    def spill(self, full_only=True):
        self.spills.append(full_only)
        raise OSError(28)  # ENOSPC, as store.save_meta raises it on a full filesystem

    def held(self):
        return 7


class NoHeapOutbox(FailingFlashOutbox):
    def spill(self, full_only=True):
        self.spills.append(full_only)
        raise MemoryError("memory allocation failed, allocating 1024 bytes")


class LinkDown:
    state = 4  # backoff
    heap_min = 0
    skipped = 0
    reconnects = 1
    trial_until = None  # no firmware on trial

    def __init__(self, clock):
        self.down_since = clock.uptime_ms()
        self.progress_ms = ticks_ms()
        self.noted = 0

    def note_heap(self):
        self.noted += 1


class Cfg:
    spill_after_s = 0
    health_interval_s = 0  # a health line every round
    connect_timeout_s = 1
    wifi_timeout_s = 1
    ping_interval_s = 1
    ping_timeout_s = 1   # allowance: max(2 * 1 + 1, 1, 1 + 1) + 5 = 8 s


class Watchdog:
    def __init__(self):
        self.fed = 0

    def feed(self):
        self.fed += 1


def _app(outbox, wdt=None):
    a = object.__new__(app.App)  # only what _maintain uses, set below
    a.cfg = Cfg()
    a.clock = Clock()
    a.sup = LinkDown(a.clock)
    a.outbox = outbox
    a.wdt = wdt
    a._spilled = False
    return a


def _maintain_until(a, done, limit_s=20):
    real = app.asyncio
    app.asyncio = FastAsyncio
    try:
        return until(a._maintain, done, limit_s)
    finally:
        app.asyncio = real


def test_spill_oserror_does_not_end_maintenance():
    a = _app(FailingFlashOutbox())
    lines = []
    log.set_sink(lines.append)
    try:
        ended = _maintain_until(
            a, lambda: len(a.outbox.spills) >= 3
            and len([x for x in lines if x.startswith("INFO app: health")]) >= 3)
    finally:
        log.set_sink(print)
    assert not ended, lines
    # the first spill writes everything, later ones only whole segments
    assert a.outbox.spills[:3] == [False, True, True], a.outbox.spills
    warns = [x for x in lines if x.startswith("WARN app: spill:")]
    assert len(warns) >= 3 and "OSError" in warns[0] and "28" in warns[0], lines
    health = [x for x in lines if x.startswith("INFO app: health")]
    assert "state=backoff" in health[0] and "dropped=3" in health[0] and "next=42" in health[0]
    assert a.sup.noted >= 3


def test_watchdog_fed_only_while_the_supervisor_makes_progress():
    wdt = Watchdog()
    a = _app(FailingFlashOutbox(), wdt)
    log.set_sink(lambda line: None)
    try:
        assert not _maintain_until(a, lambda: wdt.fed >= 3)
        a.sup.progress_ms = ticks_ms() - 9000  # the supervisor is stuck: past the allowance
        fed = wdt.fed
        rounds = len(a.outbox.spills)
        assert not _maintain_until(a, lambda: len(a.outbox.spills) >= rounds + 3)
        assert wdt.fed == fed
    finally:
        log.set_sink(print)


def test_spill_memoryerror_does_not_end_maintenance():
    # A small heap: importing the flash code or reading a segment finds no memory. The task
    # must go on (it also feeds the watchdog: ending it would reset the board).
    a = _app(NoHeapOutbox(), Watchdog())
    lines = []
    log.set_sink(lines.append)
    try:
        ended = _maintain_until(a, lambda: len(a.outbox.spills) >= 3)
    finally:
        log.set_sink(print)
    assert not ended, lines
    warns = [x for x in lines if x.startswith("WARN app: spill: MemoryError")]
    assert len(warns) >= 3, lines
    assert a.wdt.fed >= 3


class NoHeapForReadings(FailingFlashOutbox):
    def push(self, seq, text):
        raise MemoryError("memory allocation failed, allocating 96 bytes")


def test_a_reading_with_no_heap_is_skipped_and_counted():
    # No seq is given, so none is lost; the health message's `skipped` (and the health line)
    # count it, so a sampled reading never vanishes without a trace.
    a = _app(NoHeapForReadings())
    a._reading = lambda *args: "{}"
    a.readings = 0
    lines = []
    log.set_sink(lines.append)
    try:
        a.emit("env.t", 21.5, "C", None)
        a.emit("env.h", 40.0, "%", None)
        _maintain_until(a, lambda: [x for x in lines if x.startswith("INFO app: health")])
    finally:
        log.set_sink(print)
    assert a.sup.skipped == 2 and a.readings == 0
    assert [x for x in lines if x.startswith("WARN app: no memory for reading env.")] == [
        "WARN app: no memory for reading env.t: skipped",
        "WARN app: no memory for reading env.h: skipped"], lines
    assert "skipped=2" in [x for x in lines if x.startswith("INFO app: health")][0], lines
