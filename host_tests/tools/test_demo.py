"""`fieldlink demo` (make demo): readings appear, and SIGTERM (a CI timeout, kill) or SIGHUP
(the terminal closed) stops the collector and the board it started instead of orphaning them."""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest


def _procs_under(d):
    """PIDs whose command line or working directory mentions d (collector, board)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().decode("utf-8", "replace")
            cwd = os.readlink("/proc/%s/cwd" % pid)
        except OSError:
            continue
        if d in cmd or cwd.startswith(d):
            found.append(pid)
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_demo_shows_readings_and_sigterm_stops_everything(tmp_path, micropython, sig):
    # SIGHUP: the terminal closed. The board runs in a session of its own (a terminal's
    # Ctrl-C must reach only the tool), so no hangup reaches it but through the tool.
    work = str(tmp_path / "demo")
    p = subprocess.Popen([sys.executable, "-m", "fieldlink_tools.cli", "demo", "--dir", work,
                          "--interval", "0.2"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    lines, seen = [], threading.Event()

    def read():
        for ln in p.stdout:
            lines.append(ln)
            if ln.startswith("demo-1 #"):
                seen.set()
    t = threading.Thread(target=read, daemon=True)
    t.start()
    try:
        assert seen.wait(60), "no reading printed in 60 s:\n" + "".join(lines)
        assert _procs_under(work), "collector and board should be running"
        p.send_signal(sig)
        assert p.wait(30) == 0, "".join(lines)   # unwound like Ctrl-C, not killed (-15, -1)
        deadline = time.monotonic() + 10
        while _procs_under(work):
            assert time.monotonic() < deadline, "left running: %s" % _procs_under(work)
            time.sleep(0.05)
        t.join(5)
        assert not [ln for ln in lines if "Traceback" in ln], "".join(lines)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for pid in _procs_under(work):
            os.kill(int(pid), signal.SIGKILL)


def test_missing_micropython_is_one_line(tmp_path, monkeypatch, capsys):
    from fieldlink_tools import cli
    monkeypatch.setenv("MICROPYTHON", str(tmp_path / "no-such-micropython"))
    for argv in (["demo", "--dir", str(tmp_path / "d")],
                 ["sim", "--url", "ws://127.0.0.1:9/ws", "--flash", str(tmp_path / "f")]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.strip() == "fieldlink %s: $MICROPYTHON=%s does not exist" % (
            argv[0], tmp_path / "no-such-micropython"), err
    assert not (tmp_path / "d").exists()     # nothing started, nothing written
