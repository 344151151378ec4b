"""Real-board mode (skipped unless `pytest --port /dev/ttyUSB0 --board esp32_devkitc`): deploy
to an ESP32 on a serial port, watch it reboot into the firmware, deploy again (nothing to copy).
With `--board-config my-config.json` (Wi-Fi, a collector URL the board can reach, device id,
token) the board must also reach `streaming`. See docs/deploy.md."""
import re
import time

import pytest

from deploy_harness import fieldlink

pytestmark = [pytest.mark.real_board, pytest.mark.timeout(900)]   # ampy-era boards are slow


@pytest.fixture
def target(request, tmp_path):
    return {"port": request.config.getoption("real_port"),
            "board": request.config.getoption("real_board"),
            "config": request.config.getoption("real_board_config"),
            "registry": str(tmp_path / "registry.json")}


def _reboot_and_read_until(port, patterns, timeout):
    """Soft-reboot the board (Ctrl-C, friendly REPL, Ctrl-D) while listening, so nothing it
    prints at boot is missed; wait for each regex in turn."""
    import serial
    seen = bytearray()
    deadline = time.monotonic() + timeout
    with serial.Serial(port, 115200, timeout=0.5) as s:
        s.write(b"\r\x03\x03\r\x02\r")
        if not _wait(s, re.compile(r">>> $"), deadline, seen):
            raise AssertionError("no REPL prompt from the board: %r" % bytes(seen[-300:]))
        s.write(b"\x04")
        for pattern in patterns:
            if _wait(s, re.compile(pattern), deadline, seen):
                continue
            raise AssertionError("no %r from the board in %ss; it said:\n%s"
                                 % (pattern, timeout, seen.decode("utf-8", "replace")[-2000:]))


def _wait(s, rx, deadline, seen):
    while time.monotonic() < deadline:
        seen += s.read(4096)
        if rx.search(seen.decode("utf-8", "replace")):
            return True
    return False


def _deploy(target, *extra):
    args = ["deploy", "--port", target["port"], "--board", target["board"], "--registry",
            target["registry"], *extra]
    if target["config"]:
        args += ["--config", target["config"], "--replace-device"]
    return fieldlink(*args, timeout=600)


def test_deploy_to_a_real_board_and_it_boots_the_firmware(target):
    r = _deploy(target, "--reset", "none")
    assert r.returncode == 0, r.stdout + r.stderr
    r = _deploy(target, "--reset", "none")
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^0 of \d+ files changed", r.stdout, re.M), r.stdout
    if target["config"]:
        patterns = [r"MPY: soft reboot", r"INFO app: fieldlink \S+ device", r"streaming to "]
    else:   # whatever config the board holds: the firmware runs and says something
        patterns = [r"MPY: soft reboot", r"(INFO|WARN|ERROR) \w+: "]
    _reboot_and_read_until(target["port"], patterns, 180)
