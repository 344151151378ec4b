"""Ctrl-C in a terminal stops `fieldlink demo`, `sim` and `soak` without losing a reading.

Each tool runs as the foreground process group of a real pseudo-terminal, as a shell starts
it, and gets the terminal's SIGINT: the whole foreground group is signalled (os.killpg). The
board's process is the tool's to stop, so it is stopped exactly once and its last flush is
whole: the next run, from the same flash and database, declares no reboot gap and every seq
is stored."""
import fcntl
import json
import os
import signal
import subprocess
import sys
import termios
import threading
from pathlib import Path

from fieldlink_tools import sim, soak
from fieldlink_tools.collector.process import CollectorProcess

INTERVAL = 0.05   # readings in flight at any moment: a flush cut short loses some


class Terminal:
    """argv as the only job of a new pseudo-terminal: session leader, the pty its controlling
    terminal, its process group the foreground one. Its output is collected in .out."""

    def __init__(self, argv, cwd=None):
        self.master, slave = os.openpty()

        def controlling_tty():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen([str(a) for a in argv], stdin=slave, stdout=slave,
                                     stderr=slave, cwd=cwd, preexec_fn=controlling_tty,
                                     close_fds=True)
        os.close(slave)
        self.out = bytearray()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:   # EIO: every slave fd is closed (the job and its children ended)
                return
            if not data:
                return
            self.out += data

    def text(self):
        return self.out.decode("utf-8", "replace")

    def ctrl_c(self):
        """What the terminal does on Ctrl-C: SIGINT to its foreground process group."""
        fg = os.tcgetpgrp(self.master)
        assert fg == self.proc.pid, (fg, self.proc.pid)
        os.killpg(fg, signal.SIGINT)

    def wait(self, timeout=60):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("still running %ss after Ctrl-C; output:\n%s"
                                 % (timeout, self.text()[-3000:]))

    def close(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._t.join(5)
        os.close(self.master)


def store_of(db):
    """The database a tool's collector writes, read the way the tests read a collector's
    (CollectorProcess.wait_for copes with a database still being created)."""
    return CollectorProcess(db, {})


def fieldlink(*args):
    return [sys.executable, "-m", "fieldlink_tools.cli", *args]


def stop_with_ctrl_c(term, db, dev, board_log, n=40):
    """Let dev store n readings through the tool in the terminal, then Ctrl-C it."""
    try:
        try:
            store_of(db).wait_seqs(dev, n, timeout=90)
        except TimeoutError as e:
            raise AssertionError("%s; the terminal:\n%s" % (e, term.text()[-2000:]))
        term.ctrl_c()
        term.wait()
    finally:
        term.close()
    log = Path(board_log).read_text(errors="replace")
    print("--- the terminal (exit status %s) ---\n%s" % (term.proc.returncode, term.text()))
    # the flush ran to its end (the KeyboardInterrupt that stopped the board follows)
    assert "INFO app: stopped:" in log, log[-3000:]


def assert_next_run_loses_nothing(db, devices, dev, flash, board_data=None, log=None):
    """The next run from the same flash (its config, with the new collector's URL) and
    database: every seq stored, no reboot gap."""
    before = store_of(db).seqs(dev)
    with open(Path(flash) / "config.json") as f:
        cfg = json.load(f)
    c = CollectorProcess(db, devices)
    c.start()
    b = None
    try:
        cfg["url"] = c.url
        kw = {"board_data": board_data} if board_data is not None else {}
        b = sim.SimBoard(flash, cfg, log_path=log, **kw)
        b.start()
        seqs = c.wait_seqs(dev, len(before) + 30, timeout=90)
        assert seqs == list(range(1, len(seqs) + 1)), seqs   # in order, none missing
        st = c.store()
        try:
            assert st.gaps(dev) == []
        finally:
            st.close()
        assert not b.lines("INFO link: gap"), b.lines("INFO link: gap")
    finally:
        if b is not None:
            b.stop()
        c.stop()


def test_ctrl_c_in_a_terminal_stops_the_demo_without_losing_a_reading(tmp_path, micropython):
    work = tmp_path / "demo"
    term = Terminal(fieldlink("demo", "--dir", work, "--interval", INTERVAL))
    stop_with_ctrl_c(term, work / "collector.db", "demo-1", work / "board.log")
    assert_next_run_loses_nothing(work / "collector.db", {"demo-1": "demo-token"}, "demo-1",
                                  work / "flash", log=tmp_path / "next.log")


def test_ctrl_c_in_a_terminal_stops_fieldlink_sim_without_losing_a_reading(tmp_path,
                                                                          micropython):
    db, flash = tmp_path / "collector.db", tmp_path / "flash"
    devices = {"sim-1": "sim-token"}
    c = CollectorProcess(db, devices)
    c.start()
    try:
        term = Terminal(fieldlink("sim", "--url", c.url, "--flash", flash, "--set",
                                  "sample_interval_s=%s" % INTERVAL))
        # `fieldlink sim` logs the board where its flash is: FLASH/../flash.log
        stop_with_ctrl_c(term, db, "sim-1", tmp_path / "flash.log")
    finally:
        c.stop()
    assert_next_run_loses_nothing(db, devices, "sim-1", flash, log=tmp_path / "next.log")


def test_ctrl_c_in_a_terminal_stops_the_soak_without_losing_a_reading(tmp_path, micropython):
    work = tmp_path / "soak"
    # only delays: no fault of the campaign declares a gap of its own
    term = Terminal(fieldlink("soak", "--dir", work, "--minutes", 5, "--seed", 1,
                              "--faults", "delay=1"))
    dev = "soak-00"
    stop_with_ctrl_c(term, work / "collector.db", dev, work / (dev + ".log"))
    with open(work / dev / "config.json") as f:
        token = json.load(f)["token"]   # (the soak's tokens depend on its seed)
    assert_next_run_loses_nothing(work / "collector.db", {dev: token}, dev, work / dev,
                                  board_data=soak.SIM_ONLY, log=tmp_path / "next.log")
