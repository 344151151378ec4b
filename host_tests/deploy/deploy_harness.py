"""Helpers for the deploy end-to-end tests: a virtual board on a pseudo-terminal
(`python -m fieldlink_tools.vboard_pty`), the real mpremote/ampy/fieldlink commands, and a
snapshot of a flash directory to prove that a refused deploy wrote nothing."""
import hashlib
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


class VBoard:
    """A virtual board process; .port is its /dev/pts/N, .flash its flash directory."""

    def __init__(self, flash, log_path, board="virtual", heapsize=None, argv=None):
        self.argv = argv   # another command that serves the board (e.g. `fieldlink sim --pty`)
        self.flash = Path(flash)
        self.log_path = Path(log_path)
        self.board = board
        self.heapsize = heapsize
        self.proc = None
        self.port = None

    def start(self, timeout=30):
        self.flash.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "fieldlink_tools.vboard_pty", "--flash", str(self.flash),
               "--log", str(self.log_path)]
        if self.board:
            cmd += ["--board", self.board]
        if self.heapsize:
            cmd += ["--heapsize", self.heapsize]
        if self.argv is not None:
            cmd = [str(a) for a in self.argv]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        line = b""
        deadline = time.monotonic() + timeout
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            r, _, _ = select.select([self.proc.stdout], [], [], max(0, left))
            if not r:
                self.stop()
                raise RuntimeError("virtual board printed no pty within %ss" % timeout)
            c = os.read(self.proc.stdout.fileno(), 1)
            if not c:
                self.stop()
                raise RuntimeError("virtual board exited: %r" % line)
            line += c
        m = re.match(rb"fieldlink sim: pty (/dev/\S+)", line)
        assert m, line
        self.port = m.group(1).decode()
        return self

    def log(self):
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=60, start=0):
        """Wait until the board's output (from offset `start`) matches the regex; return the
        match. Fails with the log when the deadline passes."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.log(), start)
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError("board never printed %r within %ss; log:\n%s"
                                     % (pattern, timeout, self.log()[-3000:]))
            assert self.proc.poll() is None, "virtual board process died"
            time.sleep(0.05)

    def stop(self):
        stop_process(self.proc)
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()


def stop_process(proc, timeout=10):
    """Terminate a child process and reap it, killing it when it does not stop in time."""
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def run_tool(args, timeout=120, **kw):
    """Run a command to completion with a deadline; CompletedProcess (text)."""
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, **kw)


def fieldlink(*args, timeout=180):
    return run_tool([sys.executable, "-m", "fieldlink_tools.cli", *args], timeout=timeout)


def mpremote(port, *args, timeout=60):
    return run_tool([BIN / "mpremote", "connect", port, *args], timeout=timeout)


def ampy(port, *args, timeout=60):
    return run_tool([BIN / "ampy", "--port", port, *args], timeout=timeout)


def snapshot(directory):
    """{relative path: (size, mtime_ns, sha256)} of every file under directory."""
    out = {}
    base = Path(directory)
    for p in sorted(base.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[p.relative_to(base).as_posix()] = (
                st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out
