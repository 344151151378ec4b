"""fieldlink sim's board runner: resets and the watchdog reboot the interpreter like a board."""
import time

from fieldlink_tools import sim

# Stands in for the firmware's main.py (the flash directory comes first on the path, as on a
# board): starve the watchdog on the first boot, report the reset cause on the second.
STARVE_THEN_REPORT = """\
import machine, time
if machine.reset_cause() == machine.WDT_RESET:
    print("boot after watchdog")
else:
    wdt = machine.WDT(timeout=300)
    print("starving the watchdog")
    while True:
        time.sleep_ms(10)
"""


def wait_until(pred, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_watchdog_timeout_reboots_the_virtual_board(tmp_path, micropython):
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(STARVE_THEN_REPORT)
    cfg = sim.make_config("ws://127.0.0.1:9/ws")
    board = sim.SimBoard(flash, cfg, log_path=tmp_path / "board.log").start()
    try:
        assert wait_until(lambda: board.lines("boot after watchdog")), board.text()
        assert board.boots == 2
        assert board.lines("vboard: WDT timeout")
    finally:
        board.stop()
