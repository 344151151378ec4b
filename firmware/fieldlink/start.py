"""Boot: check the config, build the board's sensors, make the watchdog and the App. Runs
once; app.main() drops this module (and config, board) before streaming starts, so none of
this code stays on the heap."""
import gc

TYPE_CHECKING = False
if TYPE_CHECKING:  # mypy only: MicroPython has no typing module
    from typing import Any

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
    duty = c.duty_cycle_s
    for k in config.KEYS:
        # battery mode's keys only in battery mode: an always-on board keeps no slot or
        # name of theirs (duty.py reads them)
        if duty or k not in config.DUTY_KEYS:
            setattr(s, k, getattr(c, k))
    if duty:
        setattr(s, "wake", None)  # hello's wake cause (duty.py): its slot made on a young heap
    c = None
    unload("fieldlink.config")
    gc.collect()
    return s


def build_sensors(path):
    """(board name, sensor drivers, outputs: board.outputs() or None when it has none); the
    board module is unloaded again. Its own function so that nothing of the board module
    outlives it: the VM does not clear the value-stack slots of a running frame, and a stale
    slot in a long-lived frame kept the Board, its class and the whole module alive after the
    unload."""
    from fieldlink import board
    b = board.load(path)
    out = b.name, b.build_sensors(), b.outputs() if b.data.get("outputs") else None
    b = None
    unload("fieldlink.board")
    if out[2]:  # the boot-time output code
        unload("fieldlink.drivers.output_boot")
        unload("fieldlink.control_rec")
    return out


def make_app(cfg, board_name, sensors, wlan=None, wdt=None, reset=None, outputs=None):
    """The App and its parts: sampler, outbox (RAM, spilling to flash), clock, supervisor;
    with outputs (board.outputs()), the control shell (loaded only then)."""
    import random
    from fieldlink.clock import Clock
    from fieldlink.outbox import DirStore, Outbox
    from fieldlink.sampling import Sampler
    # cfg.sampling: "*" already carries sample_interval_s (load_settings)
    sampler = Sampler(sensors, cfg.sampling, log=log.Logger("sampling"))  # type: Any
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
        wlan=wlan, sampler=sampler, board=board_name, fw=fw_version(), reset=reset)
    _trial(sup, cfg, clock)
    if outputs:
        # the app runs the control shell as its sampler: it feeds the rules each reading
        # and runs the failsafes' timer (App itself has no line for outputs)
        from fieldlink.control_io import Control
        sup.control = sampler = Control(outputs, cfg.failsafe_s, clock, sampler, sup)
    return App(cfg, sampler, outbox, clock, sup, wdt)


def fw_version():
    """The running firmware's version: the fw/VERSION directory boot.py took it from (an
    update over the link, docs/ota.md), else the package's own (deployed at the root)."""
    f = getattr(fieldlink, "__file__", "") or ""
    if f.startswith("fw/"):
        return f.split("/")[1]
    return fieldlink.__version__


def _trial(sup, cfg, clock):
    # A firmware on trial, or a rollback to report: only then is ota_flash loaded
    import os
    try:
        os.stat("fw")
    except OSError:
        return
    from fieldlink import lazy
    m = lazy.load("fieldlink.ota_flash")
    try:
        sup.trial = m.trial_of(sup.fw)
        sup.ota_notes = m.notes() is not None
        # confirmed before a power cut, the server not told yet: no deadline, it only tells
        told = sup.trial and m.current() == sup.fw
    finally:
        m = None
        lazy.drop("fieldlink.ota_flash")
        lazy.drop("fieldlink.ota")
    if sup.trial and not told:
        sup.trial_until = clock.uptime_ms() + int(cfg.ota_trial_s * 1000)
        _log.info("firmware %s on trial: confirmed by an ack within %s s", sup.fw,
                  cfg.ota_trial_s)


def boot(path):
    """An App ready to run, or None if the config is unusable (already logged). In battery
    mode (duty_cycle_s > 0) its run() is one wake that ends in deep sleep (duty.py)."""
    from fieldlink.clock import ticks_ms
    t0 = ticks_ms()
    cfg = load_settings(path)
    if cfg is None:
        return None
    import machine
    import network
    cause = machine.reset_cause() if hasattr(machine, "reset_cause") else None
    _log.info("fieldlink %s device %s reset_cause %s", fw_version(), cfg.device_id,
              cause)
    name, sensors, outputs = build_sensors(cfg.board_file)
    gc.collect()
    wlan = network.WLAN(network.STA_IF)
    wdt = machine.WDT(timeout=int(cfg.wdt_s * 1000)) if cfg.wdt_s and hasattr(machine, "WDT") \
        else None
    app = make_app(cfg, name, sensors, wlan=wlan, wdt=wdt, reset=getattr(machine, "reset", None),
                   outputs=outputs)
    ob = app.outbox
    _log.info("board %s, %d sensors, boot %d, epoch %s, next seq %d, held %d, heap free %d",
              name, len(sensors), ob.boot, ob.epoch, ob.next_seq, ob.held(), gc.mem_free())
    if getattr(cfg, "duty_cycle_s", 0):
        # battery mode: app.main runs one wake instead (this module unloaded by then); the
        # always-on app never loads duty.py
        from fieldlink import lazy
        app.t0 = t0
        app.run = lazy.load("fieldlink.duty").runner(app)
    return app
