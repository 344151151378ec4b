"""The application: wires config, board, sampler, outbox, supervisor, commands and health,
then runs them on one asyncio loop. main.py calls `main()`."""
import asyncio
import gc

from fieldlink.clock import ticks_diff, ticks_ms

import fieldlink
from fieldlink import log

# The rest (proto, outbox, supervisor, the WebSocket client, sampling) is imported by App,
# after the config is checked and its schema unloaded: the peak heap at boot stays lower.

_log = log.Logger("app")
_MEM_EVERY = 1000  # log heap numbers every this many readings (the memory test reads them)


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
        sampling = {}
        for k in cfg.sampling:
            sampling[k] = cfg.sampling[k]
        star = dict(sampling.get("*", {}))
        if "interval_s" not in star:
            star["interval_s"] = cfg.sample_interval_s
        sampling["*"] = star
        self.sampler = Sampler(sensors, sampling, log=log.Logger("sampling"))
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
                self.outbox.spill(self._spilled)
                self._spilled = True
            gc.collect()  # small heap: collect often, so the minimum below means live data
            sup.note_heap()
            if ticks_diff(ticks_ms(), last_health) >= health_ms:
                last_health = ticks_ms()
                ob = self.outbox
                _log.info("health state=%s heap_free=%d heap_min=%d held=%d dropped=%d "
                          "reconnects=%d next=%d", ("wifi", "connect", "hello", "stream",
                                                    "backoff")[sup.state], gc.mem_free(),
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
    """The checked config as plain attributes. config.py (the schema) is unloaded after boot
    to give its RAM back, so this class must not live there."""

    def __repr__(self):
        d = dict(self.__dict__)
        for k in ("token", "wifi_password"):
            if d.get(k):
                d[k] = "<secret>"
        return "Settings(%r)" % d


def _unload(name):
    """Forget a module only needed at boot so the garbage collector can free it."""
    import sys
    sys.modules.pop(name, None)
    pkg, _, leaf = name.rpartition(".")
    p = sys.modules.get(pkg)
    if p is not None and leaf in getattr(p, "__dict__", {}):
        delattr(p, leaf)


def load_settings(path):
    """config.json -> Settings, or None after printing what is wrong (ConfigError)."""
    from fieldlink import config
    try:
        c = config.load_file(path)
    except config.ConfigError as e:
        log.log(log.ERROR, "config", str(e))
        return None
    s = Settings()
    for k in config.KEYS:
        setattr(s, k, getattr(c, k))
    c = None
    _unload("fieldlink.config")
    gc.collect()
    return s


def _build_sensors(path):
    """(board name, sensor drivers). Its own function so that nothing of the board module
    outlives it: the VM does not clear the value-stack slots of a running frame, and a
    stale slot in main()'s frame kept the Board, its class and the whole module (8 KiB)
    alive after the unload."""
    from fieldlink import board
    b = board.load(path)
    return b.name, b.build_sensors()


def main(config_path="config.json"):
    """Boot the app. Returns only if the config is unusable (a broken config will not fix
    itself, so the board stays at the REPL instead of reset-looping)."""
    cfg = load_settings(config_path)
    if cfg is None:
        return
    log.set_level(cfg.log_level)
    import machine
    import network
    cause = machine.reset_cause() if hasattr(machine, "reset_cause") else None
    _log.info("fieldlink %s device %s reset_cause %s", fieldlink.__version__, cfg.device_id,
              cause)
    _log.debug("config %r", cfg)  # repr hides the secrets
    name, sensors = _build_sensors(cfg.board_file)
    _unload("fieldlink.board")
    gc.collect()
    wlan = network.WLAN(network.STA_IF)
    wdt = machine.WDT(timeout=int(cfg.wdt_s * 1000)) if cfg.wdt_s and hasattr(machine, "WDT") \
        else None
    app = App(cfg, name, sensors, wlan=wlan, wdt=wdt, reset=getattr(machine, "reset", None))
    _log.info("board %s, %d sensors, boot %d, epoch %s, next seq %d, held %d, heap free %d",
              name, len(sensors), app.outbox.boot, app.outbox.epoch, app.outbox.next_seq,
              app.outbox.held(), gc.mem_free())
    asyncio.run(app.run())
