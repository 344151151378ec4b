"""`fieldlink provision` and `monitor`: checks, prompts that never echo secrets, and a
readable log from a (virtual) board."""
import json
import os
import pty
import select
import subprocess
import sys
import time

from deploy_harness import fieldlink
from fieldlink_tools.monitor import Formatter

# ---- monitor -------------------------------------------------------------------------------

def _fmt():
    return Formatter(colour=False, clock=lambda: 0.0)


def test_monitor_formats_levels_drops_reconnects_and_resets():
    f = _fmt()
    out = []
    for line in [
        "INFO app: fieldlink 0.1.0 device d1 reset_cause 1",
        "INFO link: streaming to ws://10.0.0.2:8765/ws (ack 0, next 1, held 0)",
        "WARN link: tcp: OSError: [Errno 104] ECONNRESET; retry in 1.7 s",
        "WARN link: handshake: TimeoutError: ; retry in 3.2 s",
        "INFO link: streaming to ws://10.0.0.2:8765/ws (ack 9, next 10, held 0)",
        "ERROR link: handshake: refused (401): check device_id and token; retry in 60 s",
        "rst:0x7 (TG0WDT_SYS_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
        "MPY: soft reboot",
        "Traceback (most recent call last):",
        '  File "main.py", line 9, in <module>',
        "OSError: [Errno 12] ENOMEM",
        "plain text",
    ]:
        out += [o.split(" ", 1)[1] for o in f.feed(line + "\r")]
    assert out[0].split() == ["INFO", "app:", "fieldlink", "0.1.0", "device", "d1",
                              "reset_cause", "1"]
    assert "link up: streaming to ws://10.0.0.2:8765/ws" in out[1]
    assert "link down #1 at tcp (OSError: [Errno 104] ECONNRESET) -> reconnect in 1.7 s" \
        in out[2]
    assert "link down #2 at handshake" in out[3]
    assert out[4].endswith("[after 2 drops]")
    assert out[5].startswith("ERROR") and "link refused at handshake: refused (401)" in out[5]
    assert "board reset #1: watchdog (rst:0x7)" in out[6]
    assert "soft reboot #2" in out[7]
    assert "exception on the board" in out[8]
    assert '| File "main.py", line 9' in out[9]
    assert out[10].startswith("ERROR") and "= OSError: [Errno 12] ENOMEM" in out[10]
    assert out[11].strip() == "plain text"
    assert f.drops == 2 and f.resets == 2


def test_monitor_reads_a_running_virtual_board(vboard):
    (vboard.flash / "main.py").write_text(
        "import time\n"
        "n = 0\n"
        "while True:\n"
        "    n += 1\n"
        "    print('WARN link: tcp: OSError: [Errno 113] EHOSTUNREACH; retry in 0.1 s')\n"
        "    print('INFO link: streaming to ws://127.0.0.1:9/ws (ack %d, next 1, held 0)' % n)\n"
        "    time.sleep(0.1)\n")
    import serial
    with serial.Serial(vboard.port, 115200) as s:
        s.write(b"\r\x03\r\x04")   # soft reboot into the new main.py
    vboard.wait_log(r"streaming to")
    r = fieldlink("monitor", "--port", vboard.port, "--until", "streaming to",
                  "--timeout", "60", "--colour", "never", timeout=90)
    assert r.returncode == 0, r.stderr
    assert "link up: streaming to ws://127.0.0.1:9/ws" in r.stdout
    assert "\x1b[" not in r.stdout


# ---- provision -----------------------------------------------------------------------------

def test_provision_from_options_writes_a_private_checked_file(tmp_path):
    cfg = tmp_path / "config.json"
    env = dict(os.environ, FIELDLINK_TOKEN="tok-from-env-123")
    r = subprocess.run(
        [sys.executable, "-m", "fieldlink_tools.cli", "provision", "--config", str(cfg),
         "--wifi-ssid", "barn", "--wifi-password", "hunter2-pw", "--url",
         "ws://192.168.1.5:8765/ws", "--device-id", "barn-1"],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    data = json.loads(cfg.read_text())
    assert data["token"] == "tok-from-env-123" and data["wifi_password"] == "hunter2-pw"
    assert data["device_id"] == "barn-1"
    assert oct(cfg.stat().st_mode & 0o777) == "0o600"
    assert "hunter2-pw" not in r.stdout + r.stderr
    assert "tok-from-env-123" not in r.stdout + r.stderr
    assert "<secret, 10 characters>" in r.stdout


def test_provision_without_a_terminal_names_what_is_missing(tmp_path):
    r = fieldlink("provision", "--config", tmp_path / "c.json", "--wifi-ssid", "x")
    assert r.returncode == 2
    assert "wifi_password is missing" in r.stderr and "FIELDLINK_WIFI_PASSWORD" in r.stderr
    assert not (tmp_path / "c.json").exists()


def test_provision_rejects_a_config_the_firmware_would_refuse(tmp_path):
    r = fieldlink("provision", "--config", tmp_path / "c.json", "--wifi-ssid", "x",
                  "--wifi-password", "", "--url", "http://not-ws/", "--device-id", "d",
                  "--token", "t")
    assert r.returncode == 2 and "config.url" in r.stderr
    assert not (tmp_path / "c.json").exists()


def _converse(argv, answers, timeout=60):
    """Run argv on a pseudo-terminal, answering each prompt; return the whole transcript."""
    pid, fd = pty.fork()
    if pid == 0:   # child
        os.execv(argv[0], argv)
    transcript = b""
    pending = list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.2)
            if not r:
                continue
            try:
                chunk = os.read(fd, 1024)
            except OSError:
                break
            if not chunk:
                break
            transcript += chunk
            while pending and transcript.rstrip().endswith(pending[0][0].encode()):
                os.write(fd, pending.pop(0)[1].encode() + b"\r")
                transcript += b"\n<answered>\n"
        else:
            raise AssertionError("provision did not finish: %r" % transcript)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return transcript.decode("utf-8", "replace"), os.waitstatus_to_exitcode(status)


def test_provision_asks_on_a_terminal_and_never_echoes_secrets(tmp_path):
    cfg = tmp_path / "config.json"
    transcript, code = _converse(
        [sys.executable, "-m", "fieldlink_tools.cli", "provision", "--config", str(cfg)],
        [("Wi-Fi network name:", "shed"), ("Wi-Fi password:", "s3cret-wifi-pw"),
         ("wss://...):", "ws://10.1.1.1:8765/ws"), ("device id:", "shed-7"),
         ("device token:", "s3cret-token")])
    assert code == 0, transcript
    assert "s3cret-wifi-pw" not in transcript and "s3cret-token" not in transcript
    data = json.loads(cfg.read_text())
    assert data["wifi_password"] == "s3cret-wifi-pw" and data["token"] == "s3cret-token"
    assert data["wifi_ssid"] == "shed" and data["device_id"] == "shed-7"


def test_provision_onto_a_virtual_board(vboard, tmp_path):
    r = fieldlink("provision", "--port", vboard.port, "--wifi-ssid", "sim", "--wifi-password",
                  "pw-pw-pw", "--url", "ws://127.0.0.1:9/ws", "--device-id", "vb-1",
                  "--token", "tok-vb")
    assert r.returncode == 0, r.stderr
    data = json.loads((vboard.flash / "config.json").read_text())
    assert data["device_id"] == "vb-1" and data["token"] == "tok-vb"
    # the board is now vb-1: a different id needs --replace-device
    r = fieldlink("provision", "--port", vboard.port, "--device-id", "vb-2")
    assert r.returncode == 2 and "--replace-device" in r.stderr
    assert json.loads((vboard.flash / "config.json").read_text())["device_id"] == "vb-1"
