"""The virtual board's pseudo-terminal, driven by the real mpremote and ampy: raw REPL, file
transfer into the flash directory, Ctrl-C, soft and hard resets the way a board does them."""
import os
import sys
import time

import serial

from deploy_harness import ampy, mpremote

ASYNC_MAIN = """\
import asyncio
print("main: started")
async def tick():
    while True:
        await asyncio.sleep(0.05)
asyncio.run(tick())
"""


def test_mpremote_exec_reports_the_unix_port(vboard):
    r = mpremote(vboard.port, "exec", "import sys; print('impl', sys.implementation.name)")
    assert r.returncode == 0, r.stderr
    assert "impl micropython" in r.stdout


def test_mpremote_copies_files_into_the_flash_directory(vboard, tmp_path):
    src = tmp_path / "hello.py"
    src.write_text("GREETING = 'hi from flash'\n")
    r = mpremote(vboard.port, "fs", "mkdir", "lib", "+", "fs", "cp", src, ":lib/hello.py",
                 "+", "exec", "import hello; print(hello.GREETING)")
    assert r.returncode == 0, r.stderr
    assert (vboard.flash / "lib" / "hello.py").read_text() == src.read_text()
    # imported from <flash>/lib, which is on the board's sys.path as /lib is on an ESP32
    assert "hi from flash" in r.stdout
    ls = mpremote(vboard.port, "fs", "ls")
    assert "lib/" in ls.stdout


def test_ctrl_c_interrupts_running_firmware_and_soft_reset_runs_main_again(vboard):
    (vboard.flash / "boot.py").write_text("print('boot: ran')\n")
    (vboard.flash / "main.py").write_text(ASYNC_MAIN)
    # boot.py and main.py run only on a (re)boot: reboot the board into them from the
    # friendly REPL with Ctrl-D, as a user at a terminal does.
    with serial.Serial(vboard.port, 115200, timeout=1) as s:
        s.write(b"\r\x03\r\x04")
    m = vboard.wait_log(r"MPY: soft reboot\r\nboot: ran\r\nmain: started")
    # mpremote's Ctrl-C must stop the asyncio loop (KeyboardInterrupt), then it soft-resets
    # in the raw REPL, which runs boot.py but not main.py.
    r = mpremote(vboard.port, "exec", "print('after', 6 * 7)")
    assert r.returncode == 0, r.stderr
    assert "after 42" in r.stdout
    log = vboard.log()[m.end():]
    assert "KeyboardInterrupt" in log
    assert "raw REPL; CTRL-B to exit" in log
    assert log.count("main: started") == 0


def test_machine_reset_exit_75_reboots_like_power_on(vboard):
    (vboard.flash / "main.py").write_text("print('main: up')\n")
    r = mpremote(vboard.port, "exec", "--no-follow", "import sys; sys.exit(75)")
    assert r.returncode == 0, r.stderr
    vboard.wait_log(r"rst:0xc \(SW_CPU_RESET\).*\r\nmain: up")
    # and the board still answers afterwards
    r = mpremote(vboard.port, "exec", "print('still here')")
    assert "still here" in r.stdout, r.stderr


def test_watchdog_exit_76_from_main_py_reboots(vboard):
    # SystemExit(76) raised inside main.py (not at the REPL) takes the bootstrap's path.
    (vboard.flash / "main.py").write_text(
        "import os\n"
        "try:\n    os.stat('rebooted')\nexcept OSError:\n"
        "    open('rebooted', 'w').close()\n    import sys\n    sys.exit(76)\n"
        "print('main: second boot')\n")
    with serial.Serial(vboard.port, 115200, timeout=1) as s:
        s.write(b"\r\x03\r\x04")
    vboard.wait_log(r"rst:0x7 \(TG0WDT_SYS_RESET\).*\r\nmain: second boot")


def test_a_crashed_interpreter_is_restarted(vboard):
    (vboard.flash / "main.py").write_text("print('main: alive')\n")
    # Kill the interpreter from inside (SIGKILL, no clean exit): the board comes back.
    r = mpremote(vboard.port, "exec", "--no-follow", "import os; os.system('kill -9 $PPID')")
    assert r.returncode == 0, r.stderr
    vboard.wait_log(r"interpreter exited with status \d+; rebooting\r\nMPY: soft reboot\r\n"
                    r"main: alive")
    r = mpremote(vboard.port, "exec", "print('back')")
    assert "back" in r.stdout, r.stderr


def test_print_line_endings_are_crlf_like_a_board(vboard):
    with serial.Serial(vboard.port, 115200, timeout=1) as s:
        s.write(b"\r\x03")
        s.write(b"print('a'); print('b')\r")
        data = b""
        deadline = time.monotonic() + 30
        while b"b\r\n>>> " not in data and time.monotonic() < deadline:
            data += s.read(256)
    assert b"a\r\nb\r\n>>> " in data, data


def test_ampy_put_ls_and_run(vboard, tmp_path):
    src = tmp_path / "blink.py"
    src.write_text("print('ampy ran me')\n")
    r = ampy(vboard.port, "put", src, "blink.py")
    assert r.returncode == 0, r.stderr + r.stdout
    assert (vboard.flash / "blink.py").read_text() == src.read_text()
    r = ampy(vboard.port, "run", src)
    assert r.returncode == 0, r.stderr
    assert "ampy ran me" in r.stdout
    # (ampy makes every path absolute; on the virtual board "/" is the host's root, so
    # `ampy ls` is the one ampy command that differs from a board: docs/deploy.md)
    r = ampy(vboard.port, "get", "blink.py")
    assert r.stdout.strip() == "print('ampy ran me')", r.stderr


def test_fieldlink_sim_pty_serves_a_fresh_empty_board_without_a_url(tmp_path, micropython):
    # docs/deploy.md's first command: a board on a pty is a deploy target, so it needs no
    # collector URL; its flash is left as it is (empty when new: nothing written into it).
    from deploy_harness import VBoard
    flash = tmp_path / "vb1"
    b = VBoard(flash, tmp_path / "board.log", argv=[
        sys.executable, "-m", "fieldlink_tools.cli", "sim", "--pty", "--flash", flash])
    b.start()
    try:
        r = mpremote(b.port, "exec", "import os; print('files', sorted(os.listdir('')))")
        assert r.returncode == 0, r.stderr
        assert "files []" in r.stdout, r.stdout
    finally:
        b.stop()
    assert os.listdir(flash) == []
