"""The application: wires config, board, sampler, outbox, supervisor, commands and health,
then runs them on one asyncio loop. main.py calls `main()`; the boot steps (config, board,
watchdog) live in start.py, which is dropped again before streaming."""
import asyncio
import gc

import fieldlink
from fieldlink import log
from fieldlink.clock import ticks_diff, ticks_ms

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stubs' const is generic
        return x

# The rest (proto, outbox, supervisor, the WebSocket client, sampling) is imported by App,
# after the config is checked and its schema unloaded: the peak heap at boot stays lower.
_log = log.Logger("app")
_MEM_EVERY = const(1000)  # log heap numbers every this many readings (test_memory reads them)


def _mem():
    gc.collect()
    try:
        return gc.mem_alloc(), gc.mem_free()
    except AttributeError:  # CPython
        return 0, 0


class App:
    def __init__(self, cfg, board_name, sensors, wlan=None, wdt=None, reset=None):
        import random
        from fieldlink.backoff import Backoff
        from fieldlink.clock import Clock
        from fieldlink.outbox import DirStore, Outbox
        from fieldlink.sampling import Sampler
        from fieldlink.supervisor import Supervisor
        self.cfg = cfg
        # cfg.sampling: "*" already carries sample_interval_s (start.load_settings)
        self.sampler = Sampler(sensors, cfg.sampling, log=log.Logger("sampling"))
        store = DirStore(cfg.outbox_dir) if cfg.outbox_flash_bytes else None
        self.outbox = Outbox(cfg.outbox_ram_bytes, cfg.outbox_flash_bytes, store)
        if self.outbox.notice:
            _log.warn("outbox: %s", self.outbox.notice)
        self.clock = Clock()
        self.sup = Supervisor(
            cfg, self.outbox, self.clock,
            Backoff(cfg.backoff_base_s, cfg.backoff_max_s, cfg.stable_after_s, random.random),
            wlan=wlan, sampler=self.sampler, board=board_name, fw=fieldlink.__version__,
            reset=reset)
        from fieldlink import proto
        self._reading = proto.reading
        self.wdt = wdt
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
            # The reading got no seq, so nothing is lost from the protocol's view; say so.
            gc.collect()
            _log.warn("no memory for reading %s: skipped", name)
            return
        self.sup.kick()
        self.readings += 1
        if self.readings % _MEM_EVERY == 0:
            alloc, free = _mem()
            self.sup.note_heap()
            _log.info("mem readings=%d seq=%d alloc=%d free=%d min_free=%d held=%d",
                      self.readings, q, alloc, free, self.sup.heap_min, ob.held())

    async def _maintain(self):
        """Once a second: spill to flash when the link is down long, heap bookkeeping."""
        cfg = self.cfg
        spill_ms = int(cfg.spill_after_s * 1000)
        health_ms = int(cfg.health_interval_s * 1000)
        last_health = ticks_ms()
        while True:
            await asyncio.sleep(1)
            sup = self.sup
            down = sup.down_since
            if down is None:
                self._spilled = False
            elif ticks_diff(ticks_ms(), down) >= spill_ms:
                # first time: everything to flash; then only whole segments (few, big writes)
                try:
                    self.outbox.spill(self._spilled)
                except OSError as e:
                    # flash full or failing (e.g. the meta write): the readings stay in RAM
                    # (the oldest dropped and counted); maintenance and streaming go on
                    _log.warn("spill: %s", e)
                self._spilled = True
            free = _mem()[1]  # small heap: collect often, so the minimum below means live data
            sup.note_heap()
            if ticks_diff(ticks_ms(), last_health) >= health_ms:
                last_health = ticks_ms()
                ob = self.outbox
                _log.info("health state=%s heap_free=%d heap_min=%d held=%d dropped=%d "
                          "reconnects=%d next=%d", ("wifi", "connect", "hello", "stream",
                                                    "backoff")[sup.state], free,
                          sup.heap_min, ob.held(), ob.dropped, sup.reconnects, ob.next_seq)

    async def _feed_watchdog(self):
        """Feed the hardware watchdog only while the supervisor loop makes progress: a hung
        step or a blocked loop lets it bite."""
        c = self.cfg
        allowance = int((max(2 * c.connect_timeout_s + 1, c.wifi_timeout_s,
                             c.ping_interval_s + c.ping_timeout_s) + 5) * 1000)
        while True:
            if ticks_diff(ticks_ms(), self.sup.progress_ms) < allowance:
                self.wdt.feed()
            await asyncio.sleep(1)

    async def run(self):
        self._tasks = [asyncio.create_task(self.sup.run()),
                       asyncio.create_task(self._maintain())]
        if self.wdt is not None:
            self._tasks.append(asyncio.create_task(self._feed_watchdog()))
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
        asyncio.run(app.run())


def _boot(path):
    # its own frame: nothing of the boot module is left on main()'s value stack
    from fieldlink import start
    app = start.boot(path)
    start.unload("fieldlink.start")
    return app
