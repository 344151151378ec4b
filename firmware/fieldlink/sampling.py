"""The sampling loop: reads each sensor on its own interval, runs each channel's filters and
hands readings to emit(name, value, unit, err). A failed read is emitted as missing
(value None, err set) and logged; it never stops the loop. Intervals change at run time."""
import asyncio
import gc
import sys

from fieldlink.clock import ticks_diff, ticks_ms

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stubs' const is generic
        return x

# fieldlink.filters is imported only when a config names filters (heap otherwise), the config
# check (sampling_check.py) only while checking.

_DEFAULT_INTERVAL_MS = const(5000)
# The longest error text a missing reading carries: the collector keeps "e" to 64 chars, and
# drivers' messages (with ROM codes, CRC bytes) run longer. The log line keeps the full text.
ERR_MAX = const(64)

# a wait shorter than this is a plain sleep (a set_interval/sample_now waits for it to end)
_POKE_MS = const(50)
# the longest single wait: a longer interval (a sensor read weekly) is waited in steps. On an
# ESP32 asyncio cannot sleep 2**29 ms (~6.2 days; ticks_add raises OverflowError), and _clock
# must be read within that, or ticks_diff is wrong.
_WAIT_MAX_MS = const(3600 * 1000)


# MicroPython's sleep_ms takes no float and allocates nothing (a singleton generator)
if hasattr(asyncio, "sleep_ms"):
    _sleep_ms = asyncio.sleep_ms
else:  # CPython
    def _sleep_ms(ms):
        return asyncio.sleep(ms / 1000)


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_config(cfg):
    """Validate the config's "sampling" object; raise ValueError naming the key.

    {"*": {"interval_s": 5, "filters": [...]},          default for every sensor
     "env": {"interval_s": 10},                          one sensor (all its channels)
     "env.temperature": {"filters": [{"type": "median", "window": 5}]}}   one channel

    The checking code is in sampling_check.py, imported for this call and dropped again
    (boot only: a streaming board holds none of it).
    """
    from fieldlink import lazy
    name = "fieldlink.sampling_check"
    try:
        lazy.load(name).check_config(cfg)
    finally:
        lazy.drop(name)


class _Slot:
    """One sensor's schedule, channel names, filter chains and error state."""

    def __init__(self, sensor, cfg):
        self.sensor = sensor
        self.names = []
        self.units = []
        self.chains = []
        own = cfg.get(sensor.name, {})
        star = cfg.get("*", {})
        for q, unit in sensor.channels:
            name = sensor.name + "." + q
            specs = cfg.get(name, {}).get("filters")
            if specs is None:
                specs = own.get("filters", star.get("filters", ()))
            self.names.append(name)
            self.units.append(unit)
            chain = None  # no filters: the value goes out as read
            if specs:
                from fieldlink import filters
                chain = filters.Chain(specs)
            self.chains.append(chain)
        self.interval_ms = 0
        self.due = 0          # sampler time (ms) of the next read
        self.last = None      # sampler time of the last read
        self.error = None     # kind of the last error, to log changes only
        self.force = False


class Sampler:
    def __init__(self, sensors, cfg=None, log=None):
        cfg = cfg or {}
        check_config(cfg)
        self._cfg = cfg
        self._log = log or print
        self._overrides = {}
        self._now = 0                 # ms since start, never wraps (see _clock)
        self._t0 = None
        self._wake = None
        # (loops, not comprehensions, here and below: each comprehension is one more
        # function's code held on the board's heap)
        self._slots = []
        names = []
        for s in sensors:
            sl = _Slot(s, cfg)
            sl.interval_ms = self._interval_ms(s.name)
            self._slots.append(sl)
            names.append(s.name)
        for key in cfg:
            base = key.split(".", 1)[0]
            if key != "*" and base not in names:
                self._log("sampling: config names unknown sensor %r" % key)

    # -- configuration at run time ---------------------------------------------------------
    def _interval_ms(self, name):
        for key in (name, "*"):
            if key in self._overrides:
                return int(self._overrides[key] * 1000)
            v = self._cfg.get(key, {}).get("interval_s")
            if v is not None:
                return int(v * 1000)
        return _DEFAULT_INTERVAL_MS

    def interval_s(self, name):
        return self._interval_ms(name) / 1000

    def set_interval(self, name_or_star, seconds):
        """Change a sensor's interval (or the default, "*") now; returns the new interval.
        A sensor-specific interval set earlier keeps priority over a new "*" default."""
        if not _is_num(seconds) or seconds <= 0:
            raise ValueError("interval_s: expected a number > 0, got %r" % (seconds,))
        known = []
        for sl in self._slots:
            known.append(sl.sensor.name)
        if name_or_star != "*" and name_or_star not in known:
            raise ValueError("sensor: unknown %r (have %s)" % (name_or_star, ", ".join(known)))
        self._overrides[name_or_star] = seconds
        for sl in self._slots:
            new = self._interval_ms(sl.sensor.name)
            if new != sl.interval_ms:
                sl.interval_ms = new
                base = sl.last if sl.last is not None else self._now
                sl.due = max(self._now, base + new)
        self._poke()
        return seconds

    def sample_now(self):
        """Read every sensor at once; delta/throttle filters let these readings through."""
        for sl in self._slots:
            sl.due = self._now
            sl.force = True
        self._poke()

    def _poke(self):
        if self._wake is not None:
            self._wake.set()

    # -- the sans-clock core: tests drive it with explicit times ----------------------------
    def next_due(self):
        """Sampler time (ms) at which the next sensor is due."""
        due = None
        for sl in self._slots:
            if due is None or sl.due < due:
                due = sl.due
        return self._now + 60000 if due is None else due

    def due_slots(self, now_ms):
        self._now = now_ms
        out = []
        for sl in self._slots:
            if sl.due <= now_ms:
                out.append(sl)
        return out

    def start_slots(self, slots):
        """start() each sensor's measurement; returns (ms to wait, errors by slot)."""
        wait = 0
        errs = {}
        for sl in slots:
            try:
                w = sl.sensor.start()
                if w and w > wait:
                    wait = w
            except Exception as e:
                errs[sl] = e
        return wait, errs

    def finish_slots(self, slots, errs, now_ms, emit):
        """read() each sensor (unless start failed), filter and emit; schedule the next."""
        self._now = now_ms
        out = []
        for sl in slots:
            e = errs.get(sl)
            values = ()
            if e is None:
                try:
                    values = sl.sensor.read()
                except Exception as ex:
                    e = ex
            force = sl.force
            sl.force = False
            # keep the cadence (due + interval) unless late by a whole interval or forced
            if force or sl.due + sl.interval_ms <= now_ms:
                sl.last = now_ms
            else:
                sl.last = sl.due
            sl.due = sl.last + sl.interval_ms
            if e is not None:
                kind = type(e).__name__
                msg = "%s: %s" % (kind, e)
                if kind != sl.error:  # log changes, not every read (CRCs differ each time)
                    self._log("sampling: %s missing: %s" % (sl.sensor.name, msg))
                sl.error = kind
                if len(msg) > ERR_MAX:
                    msg = msg[:ERR_MAX - 3] + "..."
                for i in range(len(sl.names)):
                    out.append(emit(sl.names[i], None, sl.units[i], msg))
                continue
            if sl.error is not None:
                self._log("sampling: %s reading again" % sl.sensor.name)
                sl.error = None
            for i in range(len(sl.names)):
                c = sl.chains[i]
                v = values[i] if c is None else c.push(values[i], now_ms, force)
                if v is not None:
                    out.append(emit(sl.names[i], v, sl.units[i], None))
        return out

    def tick(self, now_ms, emit):
        """Synchronous step for tests and simple loops: start, read and emit every sensor
        due at now_ms without waiting for conversions (fakes need none)."""
        slots = self.due_slots(now_ms)
        _, errs = self.start_slots(slots)
        self.finish_slots(slots, errs, now_ms, emit)
        return self.next_due()

    # -- the asyncio shell ---------------------------------------------------------------
    def _clock(self):
        """ms since run() began, accumulated with ticks_diff so it survives the wrap of
        ticks_ms (every ~12.4 days on the ESP32)."""
        t = ticks_ms()
        self._now += ticks_diff(t, self._t0)
        self._t0 = t
        return self._now

    async def _wait(self, delay):
        """Until the next sensor is due, or sooner when poked. Short waits are a plain sleep:
        wait_for() makes a task per call, garbage a fast sampler must not make every ms."""
        w = self._wake
        if delay <= _POKE_MS or w is None:
            await _sleep_ms(delay)
            return
        w.clear()
        try:
            await asyncio.wait_for(w.wait(), delay / 1000)
        except asyncio.TimeoutError:
            pass

    async def run(self, emit):
        """Sample forever. emit may be a plain function or a coroutine function."""
        self._wake = asyncio.Event()
        self._t0 = ticks_ms()
        while True:
            try:
                now = self._clock()
                delay = self.next_due() - now
                if delay > 0:
                    await self._wait(delay if delay < _WAIT_MAX_MS else _WAIT_MAX_MS)
                    continue
                slots = self.due_slots(now)
                wait, errs = self.start_slots(slots)
                if wait:
                    await _sleep_ms(wait)
                for r in self.finish_slots(slots, errs, self._clock(), emit):
                    if r is not None and hasattr(r, "send"):
                        await r
            except MemoryError:
                # A fragmented heap (96k: wait_for's task, 200 B) ended the sampler, and so
                # the app (a crash and reset: RAM's readings lost). A round that found no
                # heap is tried again shortly; readings not taken got no seq (none lost).
                gc.collect()
                await _sleep_ms(_POKE_MS)
                continue
            # Always give the loop a turn before the next round. A sampler that is behind
            # (reading and emitting take longer than the interval) finds the next sensor due
            # at once and would never reach an await: the link's tasks (keepalive, sender,
            # monitor) would starve and a dead link would never be declared.
            await _sleep_ms(0)
