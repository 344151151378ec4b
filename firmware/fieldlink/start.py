"""Boot: check the config, build the board's sensors, make the watchdog and the App. Runs
once; app.main() drops this module (and config, board) before streaming starts, so none of
this code stays on the heap."""
import gc

import fieldlink
from fieldlink import log
from fieldlink.app import App, Settings
from fieldlink.lazy import drop as unload  # boot's modules are dropped after use

_log = log.Logger("app")


def load_settings(path):
    """config.json -> Settings (log level set), or None after logging what is wrong."""
    from fieldlink import config
    try:
        c = config.load_file(path)
    except config.ConfigError as e:
        log.log(log.ERROR, "config", str(e))
        return None
    log.set_level(c.log_level)
    _log.debug("config %r", c)  # Config's repr hides the secrets
    # every sensor samples at sample_interval_s unless its "*" or own entry says otherwise
    star = dict(c.sampling.get("*", {}))
    if "interval_s" not in star:
        star["interval_s"] = c.sample_interval_s
    c.sampling["*"] = star
    s = Settings()
    for k in config.KEYS:
        setattr(s, k, getattr(c, k))
    c = None
    unload("fieldlink.config")
    gc.collect()
    return s


def build_sensors(path):
    """(board name, sensor drivers); the board module is unloaded again. Its own function so
    that nothing of the board module outlives it: the VM does not clear the value-stack slots
    of a running frame, and a stale slot in a long-lived frame kept the Board, its class and
    the whole module alive after the unload."""
    from fieldlink import board
    b = board.load(path)
    out = b.name, b.build_sensors()
    b = None
    unload("fieldlink.board")
    return out


def make_app(cfg, board_name, sensors, wlan=None, wdt=None, reset=None):
    """The App and its parts: sampler, outbox (RAM, spilling to flash), clock, supervisor."""
    import random
    from fieldlink.clock import Clock
    from fieldlink.outbox import DirStore, Outbox
    from fieldlink.sampling import Sampler
    # cfg.sampling: "*" already carries sample_interval_s (load_settings)
    sampler = Sampler(sensors, cfg.sampling, log=log.Logger("sampling"))
    store = DirStore(cfg.outbox_dir) if cfg.outbox_flash_bytes else None
    # Boot recovery (the flash side and outbox.boot, loaded for it) runs before the link's
    # and the WebSocket client's code is loaded: on a small heap with a big backlog it has
    # that heap too.
    outbox = Outbox(cfg.outbox_ram_bytes, cfg.outbox_flash_bytes, store)
    if outbox.notice:
        _log.warn("outbox: %s", outbox.notice)
    from fieldlink.link import Backoff
    from fieldlink.link.supervisor import Supervisor
    clock = Clock()
    sup = Supervisor(
        cfg, outbox, clock,
        Backoff(cfg.backoff_base_s, cfg.backoff_max_s, cfg.stable_after_s, random.random),
        wlan=wlan, sampler=sampler, board=board_name, fw=fieldlink.__version__, reset=reset)
    return App(cfg, sampler, outbox, clock, sup, wdt)


def boot(path):
    """An App ready to run, or None if the config is unusable (already logged)."""
    cfg = load_settings(path)
    if cfg is None:
        return None
    import machine
    import network
    cause = machine.reset_cause() if hasattr(machine, "reset_cause") else None
    _log.info("fieldlink %s device %s reset_cause %s", fieldlink.__version__, cfg.device_id,
              cause)
    name, sensors = build_sensors(cfg.board_file)
    gc.collect()
    wlan = network.WLAN(network.STA_IF)
    wdt = machine.WDT(timeout=int(cfg.wdt_s * 1000)) if cfg.wdt_s and hasattr(machine, "WDT") \
        else None
    app = make_app(cfg, name, sensors, wlan=wlan, wdt=wdt, reset=getattr(machine, "reset", None))
    ob = app.outbox
    _log.info("board %s, %d sensors, boot %d, epoch %s, next seq %d, held %d, heap free %d",
              name, len(sensors), ob.boot, ob.epoch, ob.next_seq, ob.held(), gc.mem_free())
    return app
