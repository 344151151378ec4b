"""machine.deepsleep on the virtual board: the process ends (exit 77) and the sim starts it
again after the (scaled) time with reset cause DEEPSLEEP_RESET and wake reason TIMER_WAKE;
RTC memory survives deep sleep and is cleared by a power-on; SimBoard(sleeps=N) leaves the
board asleep after N."""
import pytest

from fieldlink_tools import sim

pytestmark = pytest.mark.micropython

SIM_ONLY = {"name": "virtual", "chip": "unix", "buses": {}, "sensors": []}

MAIN = """import machine
m = machine.RTC().memory()
print("WAKE", machine.reset_cause(), machine.wake_reason(), repr(m))
n = int(m or b"0") + 1
machine.RTC().memory(b"%d" % n)
machine.deepsleep(40)
"""


def test_deepsleep_restarts_the_board_with_its_rtc_memory(tmp_path, micropython):
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(MAIN)   # the flash's main.py comes first on the path
    conf = sim.make_config("ws://127.0.0.1:9/ws")
    b = sim.SimBoard(flash, conf, board_data=SIM_ONLY, log_path=tmp_path / "b.log",
                     sleep_scale=0.5, sleeps=3)
    b.start()
    try:
        assert b.wait() == sim.EXIT_DEEPSLEEP
        assert b.lines("WAKE") == ["WAKE 1 0 b''", "WAKE 4 4 b'1'", "WAKE 4 4 b'2'"]
        assert b.exits == [77, 77, 77] and len(b.awake) == 3
        assert len(b.lines("vboard: deepsleep 40 ms")) == 3
        b.sleeps = 4
        b.start()   # power on again: RTC memory is gone
        b.wait()
        assert b.lines("WAKE")[3] == "WAKE 1 0 b''"
    finally:
        b.stop()
