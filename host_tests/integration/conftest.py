"""Integration fixtures: a real collector subprocess, the fault proxy, and virtual boards
running the real firmware on the MicroPython unix port."""
import pytest

from collector_fixtures import collector_proc, fake_device  # noqa: F401
from fieldlink_tools import sim
from fieldlink_tools.faultproxy import FaultProxy

# A board with only the simulated sensor (no bus): fast, and independent of the register-level
# device models. One test also runs the full boards/virtual board.
SIM_ONLY = {"name": "virtual", "chip": "unix", "buses": {},
            "sensors": [{"name": "sim", "driver": "simulated", "seed": 7}]}
HEAP = sim.DEFAULT_HEAP

# Quick link settings for tests: small intervals so faults are detected in seconds.
FAST = {"ping_interval_s": 1, "ping_timeout_s": 1, "backoff_base_s": 0.2, "backoff_max_s": 1,
        "stable_after_s": 5, "connect_timeout_s": 3, "health_interval_s": 5, "wdt_s": 0,
        "sample_interval_s": 0.1, "spill_after_s": 2}


@pytest.fixture
def sim_board(tmp_path, micropython):
    """Factory: sim_board(url, dev="dev-1", token="tok-1", board_data=SIM_ONLY, heapsize=HEAP,
    flash=None, start=True, rom=False, flash_bytes=None, **config)
    -> started SimBoard. All are stopped at teardown; a failed test shows their log tail."""
    made = []

    def make(url, dev="dev-1", token="tok-1", board_data=SIM_ONLY, heapsize=HEAP,
             flash=None, start=True, rom=False, flash_bytes=None, **cfg):
        sets = dict(FAST)
        sets.update(cfg)
        conf = sim.make_config(url, dev, token, sets)
        n = len(made)
        b = sim.SimBoard(flash or tmp_path / ("flash%d" % n), conf, heapsize=heapsize,
                         log_path=tmp_path / ("board%d.log" % n), board_data=board_data,
                         rom=rom, flash_bytes=flash_bytes)
        made.append(b)
        return b.start() if start else b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def fault_proxy():
    made = []

    def make(port):
        p = FaultProxy("127.0.0.1", port).start()
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()
