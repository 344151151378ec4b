"""The firmware's watchdog on the virtual board: with wdt_s set, app's maintenance task feeds
machine.WDT while the supervisor makes progress, so a board that streams never bites (the
stand-in kills the interpreter and the sim restarts it with reset cause WDT_RESET)."""
import time

import pytest

from collector_fixtures import collector_proc  # noqa: F401
from fieldlink_tools import sim

pytestmark = pytest.mark.micropython

SIM_ONLY = {"name": "virtual", "chip": "unix", "buses": {},
            "sensors": [{"name": "sim", "driver": "simulated", "seed": 7}]}


def test_streaming_board_feeds_its_watchdog(tmp_path, collector_proc, micropython):  # noqa: F811
    c = collector_proc({"dev-1": "tok-1"})
    conf = sim.make_config(c.url, "dev-1", "tok-1",
                           {"wdt_s": 2, "sample_interval_s": 0.2, "health_interval_s": 1})
    b = sim.SimBoard(tmp_path / "flash", conf, board_data=SIM_ONLY,
                     log_path=tmp_path / "board.log")
    b.start()
    try:
        b.wait_for_line("INFO link: streaming", timeout=60)
        t0 = time.monotonic()
        # three watchdog periods of streaming, seen as health lines and stored readings
        b.wait_for_line("INFO app: health", count=4, timeout=60)
        while time.monotonic() - t0 < 6:
            time.sleep(0.2)
        n = len(c.seqs("dev-1"))
        c.wait_seqs("dev-1", n + 5, timeout=30)
        log = "\n".join(b.lines()[-40:])
        assert not b.lines("WDT timeout"), log
        assert len(b.lines("reset_cause")) == 1, log  # booted once: no watchdog reset
    finally:
        b.stop()
