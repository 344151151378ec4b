"""`fieldlink flash` end to end: the real esptool erasing, writing and verifying, against
esp32-mock-bootloader (a mock of the ESP32 ROM bootloader's SLIP protocol, chips taken from
esptool's own definitions) on a 127.0.0.1 socket:// URL or a pseudo-terminal. The flash is read
back with esptool to prove where the bytes landed; the errors a user meets (a port that is not a
bootloader, an image too big for the flash, the wrong chip) are clear and not tracebacks."""
import json
import os
import random
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from deploy_harness import BIN, ROOT, fieldlink, run_tool, stop_process

CHIP_BOARDS = sorted(
    (json.loads(p.read_text()) for p in (ROOT / "boards").glob("*/board.json")),
    key=lambda b: b["name"])
CHIP_BOARDS = [b for b in CHIP_BOARDS if b["chip"] != "unix"]
BOARD = {b["name"]: b for b in CHIP_BOARDS}
MARK_AT = 0x300000   # far past any image used here: shows whether the whole flash was erased


class MockBootloader:
    """One esp32-mock-bootloader process; .port is the URL or pty path to give esptool."""

    def __init__(self, chip, workdir, pty=False):
        self.chip, self.workdir, self.pty = chip, Path(workdir), pty
        self.proc, self.port = None, None

    def start(self, timeout=30):
        self.workdir.mkdir(parents=True, exist_ok=True)
        port_file = self.workdir / "mock.port"
        cmd = [BIN / "esp32-mock-bootloader", "run", "--chip", self.chip, "--port-file",
               port_file]
        cmd += ["--pty"] if self.pty else ["--bind", "127.0.0.1", "--port", "0"]
        # TMPDIR: the mock's instance registry stays inside this test's directory
        with open(self.workdir / "mock.log", "wb") as log:
            self.proc = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         env=dict(os.environ, TMPDIR=str(self.workdir)))
        deadline = time.monotonic() + timeout
        while True:
            text = port_file.read_text().strip() if port_file.exists() else ""
            if self.pty and text.startswith("/dev/"):
                self.port = text
                break
            if not self.pty and text.isdigit():
                self.port = "socket://127.0.0.1:%s" % text
                break
            assert self.proc.poll() is None, "mock bootloader exited: %s" % self.log()
            assert time.monotonic() < deadline, "mock bootloader never listened: %s" % self.log()
            time.sleep(0.05)
        return self

    def log(self):
        try:
            return (self.workdir / "mock.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def esptool(self, *args, timeout=120):
        return run_tool([BIN / "python", "-m", "esptool", "--chip", self.chip, "--port",
                         self.port, *args], timeout=timeout)

    def write(self, offset, data, tmp):
        p = Path(tmp) / ("w%x.bin" % offset)
        p.write_bytes(data)
        r = self.esptool("write-flash", hex(offset), p)
        assert r.returncode == 0, r.stdout + r.stderr

    def read(self, offset, size, tmp):
        p = Path(tmp) / ("r%x.bin" % offset)
        # the ROM's read command: the mock's stub read stream drops reads under ~48 KB
        r = self.esptool("--no-stub", "read-flash", hex(offset), str(size), p)
        assert r.returncode == 0, r.stdout + r.stderr
        return p.read_bytes()

    def stop(self):
        stop_process(self.proc)


@pytest.fixture
def mock_boot(tmp_path):
    started = []

    def start(chip, pty=False):
        m = MockBootloader(chip, tmp_path / ("mock-%s-%d" % (chip, len(started))), pty)
        started.append(m)
        return m.start()
    yield start
    for m in started:
        m.stop()


def image(tmp_path, size, seed=11, name="mp.bin"):
    """A seeded image that starts like an ESP32 image (0xE9) and does not compress."""
    rnd = random.Random(seed)
    p = tmp_path / name
    p.write_bytes(b"\xe9" + rnd.randbytes(size - 1))
    return p


def no_traceback(r):
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.parametrize("board", sorted(BOARD))
def test_flash_erases_writes_at_the_board_offset_and_verifies(board, mock_boot, tmp_path):
    chip = BOARD[board]["chip"]
    offset = int(BOARD[board]["micropython"]["flash_offset"], 16)
    mock = mock_boot(chip)
    mark = b"old filesystem" * 100
    mock.write(MARK_AT, mark, tmp_path)
    img = image(tmp_path, 48 * 1024)

    r = fieldlink("flash", "--port", mock.port, "--board", board, "--image", img)
    assert r.returncode == 0, r.stdout + r.stderr
    no_traceback(r)
    out = r.stdout
    assert "Writing at 0x" in out and "100.0%" in out   # esptool's progress
    assert re.search(r"Wrote \d+ bytes .*at 0x%08x" % offset, out), out
    assert "Hash of data verified" in out
    assert "Verification successful (digest matched)" in out
    assert "flashed MicroPython onto %s and verified it" % mock.port in out
    data = img.read_bytes()
    assert mock.read(offset, len(data), tmp_path) == data
    assert mock.read(MARK_AT, len(mark), tmp_path) == b"\xff" * len(mark)   # erased


def test_flash_no_erase_keeps_the_rest_of_the_flash(mock_boot, tmp_path):
    mock = mock_boot("esp32")
    mark = b"old filesystem" * 100
    mock.write(MARK_AT, mark, tmp_path)
    img = image(tmp_path, 16 * 1024)
    r = fieldlink("flash", "--port", mock.port, "--board", "esp32_devkitc", "--image", img,
                  "--no-erase")
    assert r.returncode == 0, r.stdout + r.stderr
    assert mock.read(0x1000, 16 * 1024, tmp_path) == img.read_bytes()
    assert mock.read(MARK_AT, len(mark), tmp_path) == mark


def test_flash_through_a_pseudo_terminal(mock_boot, tmp_path):
    # a device path, as a USB serial adapter gives: fieldlink's own port checks pass it
    mock = mock_boot("esp32c3", pty=True)
    img = image(tmp_path, 16 * 1024)
    r = fieldlink("flash", "--port", mock.port, "--board", "esp32c3_supermini", "--image", img)
    assert r.returncode == 0, r.stdout + r.stderr
    # the mock keeps one session on a pty, so the stub fieldlink loaded stays and the ROM read
    # is refused: the mock's own digest of its flash is the check here
    assert mock.esptool("verify-flash", "0x0", img).returncode == 0
    other = image(tmp_path, 16 * 1024, seed=99, name="other.bin")
    assert mock.esptool("verify-flash", "0x0", other).returncode != 0


def test_an_image_bigger_than_the_flash_is_refused_before_anything_is_erased(mock_boot,
                                                                             tmp_path):
    mock = mock_boot("esp32")
    good = image(tmp_path, 16 * 1024)
    r = fieldlink("flash", "--port", mock.port, "--board", "esp32_devkitc", "--image", good)
    assert r.returncode == 0, r.stdout + r.stderr
    big = image(tmp_path, 4 * 1024 * 1024, seed=12, name="big.bin")   # the mock has 4 MB

    r = fieldlink("flash", "--port", mock.port, "--board", "esp32_devkitc", "--image", big)
    assert r.returncode == 1
    no_traceback(r)
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("fieldlink flash: error: ")
    assert "big.bin (4194304 bytes) at 0x1000 does not fit" in err
    assert "4 MB flash" in err
    assert "nothing was erased" in err
    assert mock.read(0x1000, 16 * 1024, tmp_path) == good.read_bytes()


def test_the_wrong_chip_for_the_board_is_named(mock_boot, tmp_path):
    mock = mock_boot("esp32s3")
    r = fieldlink("flash", "--port", mock.port, "--board", "esp32_devkitc", "--image",
                  image(tmp_path, 4096))
    assert r.returncode == 1
    no_traceback(r)
    err = r.stderr.strip().splitlines()[-1]
    assert "the chip on %s is an ESP32-S3" % mock.port in err
    assert "esp32_devkitc" in err and "esp32" in err


class FakeRepl:
    """A TCP port that answers like a board running MicroPython, not its bootloader."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = "socket://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(0.2)
            with conn:
                while not self.stopping.is_set():
                    try:
                        if not conn.recv(4096):
                            break
                        conn.sendall(b"\r\nMicroPython v1.29.0\r\n>>> ")
                    except socket.timeout:
                        continue
                    except OSError:
                        break

    def close(self):
        self.stopping.set()
        self.thread.join(timeout=10)
        self.sock.close()


def test_a_port_that_is_not_a_bootloader_gives_a_clear_error(tmp_path):
    repl = FakeRepl()
    try:
        r = fieldlink("flash", "--port", repl.port, "--board", "esp32_devkitc", "--image",
                      image(tmp_path, 4096))
    finally:
        repl.close()
    assert r.returncode == 1
    no_traceback(r)
    err = r.stderr.strip().splitlines()[-1]
    assert "no ESP32 bootloader answered on %s" % repl.port in err
    assert "hold BOOT" in err


def test_a_port_nobody_listens_on_gives_a_clear_error(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as s:
        free = s.getsockname()[1]   # closed again before flash runs: nothing listens there
    port = "socket://127.0.0.1:%d" % free
    r = fieldlink("flash", "--port", port, "--board", "esp32_devkitc", "--image",
                  image(tmp_path, 4096))
    assert r.returncode == 1
    no_traceback(r)
    assert "cannot open %s" % port in r.stderr.strip().splitlines()[-1]


def test_an_image_for_another_chip_is_named(mock_boot, tmp_path):
    mock = mock_boot("esp32s3")
    img = tmp_path / "esp32.bin"
    img.write_bytes(b"\xe9" + bytes(4095))   # header chip id 0: an ESP32 image
    r = fieldlink("flash", "--port", mock.port, "--board", "esp32s3_devkitc1", "--image", img)
    assert r.returncode == 1
    no_traceback(r)
    err = r.stderr.strip().splitlines()[-1]
    assert "esp32.bin is not an image for the ESP32-S3 of board esp32s3_devkitc1" in err
    assert BOARD["esp32s3_devkitc1"]["micropython"]["url"] in err


# ---- before esptool runs --------------------------------------------------------------------

def test_flash_dry_run_writes_at_the_chips_offset_then_verifies(tmp_path):
    img = tmp_path / "mp.bin"
    img.write_bytes(b"\xe9" + bytes(100))
    r = fieldlink("flash", "--port", "/dev/ttyUSB7", "--board", "esp32_devkitc", "--image",
                  img, "--dry-run")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines == [
        "esptool --chip esp32 --port /dev/ttyUSB7 --baud 460800 --after no-reset write-flash "
        "--erase-all --compress 0x1000 %s" % img,
        "esptool --chip esp32 --port /dev/ttyUSB7 verify-flash 0x1000 %s" % img]
    r = fieldlink("flash", "--port", "/dev/ttyUSB7", "--board", "esp32s3_devkitc1", "--image",
                  img, "--dry-run", "--no-erase")
    assert "write-flash --compress 0x0 " in r.stdout and "--erase-all" not in r.stdout


def test_flash_without_the_image_says_where_to_download_it(tmp_path):
    r = fieldlink("flash", "--port", "/dev/null", "--board", "esp32_devkitc")
    board = BOARD["esp32_devkitc"]
    if (ROOT / "var" / "images" / board["micropython"]["image"]).exists():
        pytest.skip("the board's image was downloaded on this machine: no message to show")
    assert r.returncode == 2
    assert board["micropython"]["image"] in r.stderr
    assert board["micropython"]["url"] in r.stderr
    assert "--image FILE" in r.stderr


def test_flash_refuses_what_is_not_a_serial_port_or_an_image(tmp_path):
    img = tmp_path / "mp.bin"
    img.write_bytes(b"\xe9" + bytes(100))
    r = fieldlink("flash", "--port", "/dev/null", "--board", "esp32_devkitc", "--image", img)
    assert r.returncode == 2 and "/dev/null is not a serial device" in r.stderr
    html = tmp_path / "page.bin"
    html.write_bytes(b"<html>404</html>")
    r = fieldlink("flash", "--port", "/dev/null", "--board", "esp32_devkitc", "--image", html)
    assert r.returncode == 2 and "not an ESP32 firmware image" in r.stderr
    r = fieldlink("flash", "--port", "/dev/null", "--board", "virtual", "--image", img)
    assert r.returncode == 2 and "virtual board: nothing to flash" in r.stderr
