"""The application: wires config, board, sampler, outbox, supervisor, commands and health,
then runs them on one asyncio loop. main.py calls `main()`; the boot steps (config, board,
watchdog) live in start.py, which is dropped again before streaming."""
import asyncio
import gc

from fieldlink import log
from fieldlink.clock import ticks_diff, ticks_ms

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stubs' const is generic
        return x

# The rest (proto, outbox, supervisor, the WebSocket client, sampling) is imported by
# start.make_app, after the config is checked and its schema unloaded: a lower peak at boot.
_log = log.Logger("app")
_MEM_EVERY = const(1000)  # log heap numbers every this many readings (test_memory reads them)
# Collect after this many bytes were allocated, not only when an allocation fails: the
# allocator takes the lowest free blocks, so frequent collections keep the objects that live
# on (coroutine frames, control-frame buffers, event lists) packed low instead of scattered
# between dead temporaries over the whole heap. Virtual board, 10,000 readings at 5 ms:
# 144k fails without (0/3), works with 2048 (3/3); 136k 2/3.
_GC_EVERY = const(2048)


def _mem():
    gc.collect()
    try:
        return gc.mem_alloc(), gc.mem_free()
    except AttributeError:  # CPython
        return 0, 0


class App:
    """The running firmware: the sampler's readings go into the outbox, the supervisor
    streams them, a maintenance task looks after flash, heap, watchdog and health lines.
    start.make_app() builds the parts at boot."""

    def __init__(self, cfg, sampler, outbox, clock, sup, wdt=None):
        from fieldlink import proto
        self.cfg = cfg
        self.sampler = sampler
        self.outbox = outbox
        self.clock = clock
        self.sup = sup
        self.wdt = wdt
        self._reading = proto.reading
        self.readings = 0
        self._spilled = False
        self._tasks = []

    def emit(self, name, value, unit, err):
        """Sampler callback: one reading into the outbox, wake the sender."""
        ob = self.outbox
        q = ob.next_seq
        try:
            ob.push(q, self._reading(q, self.clock.unix_ms(), self.clock.uptime_ms(), name,
                                     value, unit, err))
        except MemoryError:
            # The reading got no seq, so no seq is lost; it is counted (health `skipped`) and
            # said, so a sampled reading never vanishes without a trace.
            gc.collect()
            self.sup.skipped += 1
            _log.warn("no memory for reading %s: skipped", name)
            return
        self.sup.kick()
        self.readings += 1
        if self.readings % _MEM_EVERY == 0:
            alloc, free = _mem()
            self.sup.note_heap()
            h = ob.held()
            # flash: readings on flash (the flash side is loaded while there are any)
            _log.info("mem readings=%d seq=%d alloc=%d free=%d min_free=%d held=%d flash=%d",
                      self.readings, q, alloc, free, self.sup.heap_min, h, h - ob.ring.n)

    async def _maintain(self):
        """Once a second: feed the watchdog, spill to flash when the link is down long, heap
        bookkeeping, health lines."""
        cfg = self.cfg
        spill_ms = int(cfg.spill_after_s * 1000)
        health_ms = int(cfg.health_interval_s * 1000)
        # The watchdog is fed only while the supervisor loop makes progress (a hung step or a
        # blocked loop lets it bite) and while this task runs; the longest step is allowed.
        allowance = int((max(2 * cfg.connect_timeout_s + 1, cfg.wifi_timeout_s,
                             cfg.ping_interval_s + cfg.ping_timeout_s) + 5) * 1000)
        last_health = ticks_ms()
        from fieldlink.link import STATE_NAMES
        while True:
            sup = self.sup
            if self.wdt is not None and ticks_diff(ticks_ms(), sup.progress_ms) < allowance:
                self.wdt.feed()
            await asyncio.sleep(1)
            try:
                self._spill_check(sup, spill_ms)
                if sup.trial_until is not None and self.clock.uptime_ms() > sup.trial_until:
                    await sup.ota_step("expired")  # a new firmware out of time: rolled back
                free = _mem()[1]  # small heap: collect often, so the minimum is live data
                sup.note_heap()
                if ticks_diff(ticks_ms(), last_health) >= health_ms:
                    last_health = ticks_ms()
                    ob = self.outbox
                    _log.info("health state=%s heap_free=%d heap_min=%d held=%d dropped=%d "
                              "skipped=%d reconnects=%d next=%d",
                              STATE_NAMES[sup.state],
                              free, sup.heap_min, ob.held(), ob.dropped, sup.skipped,
                              sup.reconnects, ob.next_seq)
            except MemoryError:
                # No heap for a log line's text (the health line at 96k: 120 B): this task
                # must not end for it, it feeds the watchdog and spills (before: 'Task
                # exception wasn't retrieved', no spill or health line again).
                gc.collect()

    def _spill_check(self, sup, spill_ms):
        down = sup.down_since
        if down is None:
            self._spilled = False
        elif self.clock.uptime_ms() - down >= spill_ms:  # (days: not ticks, see Supervisor)
            # first time: everything to flash; then only whole segments (few, big writes)
            try:
                self.outbox.spill(self._spilled)
            except (OSError, MemoryError) as e:
                # flash full or failing (e.g. the meta write), or no heap for the flash
                # code: the readings stay in RAM (the oldest dropped and counted);
                # maintenance and streaming go on, and the spill is tried again
                gc.collect()
                _log.warn("spill: %s: %s", type(e).__name__, e)
            self._spilled = True

    async def run(self):
        try:
            gc.threshold(_GC_EVERY)
        except AttributeError:  # CPython
            pass
        self._tasks = [asyncio.create_task(self.sup.run()),
                       asyncio.create_task(self._maintain())]
        # The sampler runs here: if it ever ends with an exception, so does the app (main.py
        # logs it and resets the board).
        await self.sampler.run(self.emit)


class Settings:
    """The checked config as plain attributes (start.py copies them from config.py, whose
    schema is unloaded after boot). No repr of its own: nothing secret can reach a log."""


def main(config_path="config.json"):
    """Boot the app and run it. Returns only if the config is unusable (a broken config will
    not fix itself, so the board stays at the REPL instead of reset-looping)."""
    app = _boot(config_path)
    if app is not None:
        try:
            asyncio.run(app.run())
        except KeyboardInterrupt:
            _keep(app.outbox)
            raise


def _keep(outbox):
    # Ctrl-C (someone at the REPL, `fieldlink sim` or the demo stopping the board): an
    # intended stop, so nothing is lost to it. Everything goes to flash with the seq mark, and
    # the next boot sends it on with no reboot gap. Ctrl-C is off meanwhile: a second one must
    # not cut the flush half-way. (On the unix port kbd_intr(-1) restores SIGINT's default
    # action, so the virtual board's tools send none then: fieldlink_tools/ctrl_c.py.)
    try:
        from micropython import kbd_intr
    except ImportError:  # CPython
        kbd_intr = _no_kbd_intr
    kbd_intr(-1)
    try:
        outbox.flush()
        _log.info("stopped: %d readings kept on flash", outbox.held())
    except Exception as e:  # a failing flash: the next boot declares a reboot gap
        _log.error("stopped: flush failed: %s", e)
    finally:
        kbd_intr(3)


def _no_kbd_intr(chr: int) -> None:  # CPython: no Ctrl-C character to turn off
    pass


def _boot(path):
    # its own frame: nothing of the boot module is left on main()'s value stack
    from fieldlink import start
    app = start.boot(path)
    start.unload("fieldlink.start")
    return app
