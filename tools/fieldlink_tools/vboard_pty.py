"""The virtual board as a serial port: a pseudo-terminal that speaks MicroPython's REPL.

`run_pty(flash_dir, ...)` prints the path of a fresh `/dev/pts/N` and bridges it to a MicroPython
unix-port child running in `flash_dir` (the board's flash), so that the real `mpremote connect
/dev/pts/N ...` and `ampy --port /dev/pts/N ...` work against it.

What the unix port already does by itself (checked against v1.29): the friendly REPL, the raw
REPL (Ctrl-A / Ctrl-B, Ctrl-C clears the line, Ctrl-D executes) and raw-paste mode (Ctrl-E A
Ctrl-A). What a board does that the unix port does not, and this bridge adds:

- soft reset: on a board Ctrl-D (friendly REPL, empty line; or raw REPL, empty buffer) reboots
  the interpreter; the unix port exits with status 0 instead. The bridge treats the child's exit
  as the reboot: prints `MPY: soft reboot`, starts a new child that runs boot.py (and main.py in
  friendly mode, as ESP32's main.c does) and, if the reset came from the raw REPL, puts the new
  child back in the raw REPL and shows only what a board would print there.
- hard reset: exit status 75 (`machine.reset()` on the virtual board) or 76 (its watchdog)
  restarts the board the way power-on does (boot.py, main.py, friendly REPL), after a
  `rst:` line in the style of the ESP32 ROM. Any other exit also restarts: a board does not die.
- Ctrl-C while code runs: a board's UART driver raises KeyboardInterrupt; the child's terminal
  is kept in raw mode (no ISIG, so a Ctrl-C can never kill the interpreter between runs), and
  the bridge sends SIGINT itself exactly when the child has its SIGINT handler installed,
  i.e. while it executes Python code and has not turned Ctrl-C off (`micropython.kbd_intr(-1)`
  on the unix port restores SIGINT's default action), at a point where it cannot break the
  interpreter (ctrl_c.py).
- line endings: output processing is off on the child's terminal (so REPL strings keep their
  single `\\r\\n`) and the bridge turns a lone `\\n` from print() into `\\r\\n`, as a board's
  stdout does.
"""
import argparse
import errno
import fcntl
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time
import tty

from . import ctrl_c, paths, upy

# Exit statuses the virtual board's machine module uses for resets (tools/vboard/machine.py).
EXIT_MACHINE_RESET = 75
EXIT_WATCHDOG = 76
EXIT_DEEPSLEEP = 77   # machine.deepsleep: here the board wakes at once (fieldlink sim waits)
# What machine.reset_cause() reports after each kind of restart (names in tools/vboard/
# machine.py, read from $FIELDLINK_VBOARD_RESET_CAUSE; the same choices as fieldlink sim).
# A soft reboot keeps the cause of the last hard one, as on an ESP32.
_CAUSES = {EXIT_MACHINE_RESET: "HARD_RESET", EXIT_WATCHDOG: "WDT_RESET",
           EXIT_DEEPSLEEP: "DEEPSLEEP_RESET"}
# Heap of the full firmware on the virtual board: see fieldlink_tools.sim.DEFAULT_HEAP (the
# unix port's 64-bit objects need more than an ESP32's ~100 KiB).
DEFAULT_HEAP = "256k"

SOFT_REBOOT = b"MPY: soft reboot\r\n"
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
FRIENDLY_BANNER = b'Type "help()" for more information.'
# ESP32 ROM reset-reason lines, so a log shows why the board restarted.
_RESET_LINES = {
    EXIT_MACHINE_RESET: b"rst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n",
    EXIT_WATCHDOG: b"rst:0x7 (TG0WDT_SYS_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n",
    EXIT_DEEPSLEEP: b"rst:0x5 (DEEPSLEEP_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n",
}
# The bootstrap talks to the bridge with APC escape sequences (ESC _ ... ESC \), which never
# reach the serial port.
_SENT_START = b"\x1b_fl:"
_SENT_END = b"\x1b\\"
# Output kept for a reader that is slow or absent; beyond it the oldest bytes are dropped, as a
# UART with nobody listening drops them.
_MAX_BACKLOG = 256 * 1024
_CTRL_C = 0x03

# Runs in the child before its REPL: boot.py, then main.py (friendly mode only), the way
# ports/esp32/main.c does: a failing boot.py skips main.py; an exception is printed and the REPL
# follows. SystemExit here would land in the REPL (micropython -i), so its status is reported to
# the bridge with a sentinel and the child waits to be replaced.
_BOOTSTRAP = r"""
import sys
def _fl_boot(files):
    for f in files:
        try:
            open(f).close()
        except OSError:
            continue
        try:
            execfile(f)
        except SystemExit as e:
            c = e.args[0] if e.args else 0
            sys.stdout.write('\x1b_fl:exit=%d\x1b\\' % (c if isinstance(c, int) else 1))
            import time
            while True:
                time.sleep(1)
        except BaseException as e:
            sys.print_exception(e)
            return
try:
    _fl_boot(FILES)
except KeyboardInterrupt:
    pass
sys.stdout.write('\x1b_fl:booted\x1b\\')
del _fl_boot
"""


def child_env(flash_dir, board=None, extra_path=()):
    """Environment of the interpreter: the board's sys.path and which board it is."""
    flash = os.path.abspath(flash_dir)
    dirs = [flash, os.path.join(flash, "lib"), *extra_path, str(paths.VBOARD_MP)]
    extra = {"FIELDLINK_FLASH": flash}
    if board:
        extra["FIELDLINK_BOARD"] = str(board)
    return upy.env_for(dirs, extra)


def _child_termios(fd):
    """Raw, no output processing, no signals: the bridge does what a UART driver would."""
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[1] &= ~termios.OPOST
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def _own_session():
    """In the child: a session of its own whose controlling terminal is the board's pty, so that
    if the bridge dies (even by SIGKILL) the kernel hangs up the terminal and SIGHUP ends the
    interpreter instead of leaving it running unattended."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class _Board:
    """One virtual board: the host-side pty, the child's pty and the current interpreter."""

    def __init__(self, flash_dir, board, heapsize, extra_path, log, micropython):
        self.flash_dir = os.path.abspath(flash_dir)
        self.heapsize = heapsize
        self.env = child_env(flash_dir, board, extra_path)
        self.log = log
        self.micropython = micropython
        # Host side: mpremote opens the slave by path. The bridge keeps the slave open too, so
        # the master never reports EIO between clients.
        self.host_master, self.host_slave = pty.openpty()
        tty.setraw(self.host_slave)
        os.set_blocking(self.host_master, False)
        self.path = os.ttyname(self.host_slave)
        # Child side: one pty for the whole life of the board, so bytes sent while the
        # interpreter restarts wait in order for the next one.
        self.child_master, self.child_slave = pty.openpty()
        self.proc = None
        self.pidfd = None
        self.mode = "friendly"          # which REPL the child last announced
        self.hiding = False             # raw-mode reboot: hide the friendly banner
        self.carry = b""                # partial sentinel held between reads
        self.carry_banner = b""         # hidden output that may start the raw REPL banner
        self.tail = b""                 # last output bytes, for banners split across reads
        self.last_cr = False            # for \n -> \r\n
        self.backlog = bytearray()      # output waiting for the host side
        self.pending_in = bytearray()   # host input while no child runs
        self.exit_status = None         # from the bootstrap's sentinel
        self.started = 0.0
        self.cause = "PWRON_RESET"

    # -- child lifecycle -------------------------------------------------------------------
    def start(self, mode):
        """Start an interpreter: boot.py (+ main.py in friendly mode), then the REPL."""
        files = ("boot.py", "main.py") if mode == "friendly" else ("boot.py",)
        _child_termios(self.child_slave)
        termios.tcflush(self.child_slave, termios.TCIFLUSH)   # a reset empties the UART FIFO
        code = _BOOTSTRAP.replace("FILES", repr(files))
        cmd = upy.command(code=code, heapsize=self.heapsize)
        cmd.insert(1, "-i")
        env = dict(self.env, FIELDLINK_VBOARD_RESET_CAUSE=self.cause)
        self.proc = subprocess.Popen(
            cmd, stdin=self.child_slave, stdout=self.child_slave, stderr=self.child_slave,
            cwd=self.flash_dir, env=env, preexec_fn=_own_session, close_fds=True)
        try:
            self.pidfd = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):
            self.pidfd = None
        self.started = time.monotonic()
        self.mode = mode
        self.hiding = mode == "raw"
        self.exit_status = None
        if mode == "raw":
            # The REPL starts friendly; Ctrl-A takes it to the raw REPL before it reads anything
            # the host sent (those bytes are written after this one).
            os.write(self.child_master, b"\x01")
        if self.pending_in:
            self._to_child(bytes(self.pending_in))
            self.pending_in.clear()

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        self.proc = None

    def reboot(self, status):
        """The child is gone (or asked to go): restart it the way a board restarts."""
        self._drain_child()
        lived = time.monotonic() - self.started
        self.stop()
        if status in _RESET_LINES:
            self.emit(b"\r\n" + _RESET_LINES[status])
            self.cause = _CAUSES[status]
            mode = "friendly"
        elif status == 0:
            self.emit(SOFT_REBOOT)
            mode = self.mode
        else:
            self.emit(b"\r\nvboard: interpreter exited with status %d; rebooting\r\n" % status)
            self.emit(SOFT_REBOOT)
            self.cause = "HARD_RESET"
            mode = "friendly"
        if lived < 0.5:
            time.sleep(0.2)   # a boot loop should not eat a CPU
        self.start(mode)

    # -- data paths ------------------------------------------------------------------------
    def emit(self, data):
        """Bytes to the host side (and the log), as the board's UART would send them."""
        if not data:
            return
        if self.log is not None:
            self.log.write(data)
            self.log.flush()
        self.backlog += data
        if len(self.backlog) > _MAX_BACKLOG:
            del self.backlog[:len(self.backlog) - _MAX_BACKLOG]
        self.flush_host()

    def flush_host(self):
        while self.backlog:
            try:
                n = os.write(self.host_master, self.backlog[:4096])
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in (errno.EIO, errno.EAGAIN):
                    return
                raise
            del self.backlog[:n]

    def _to_child(self, data):
        if self.proc is None:
            self.pending_in += data
            return
        out = bytearray()
        for b in data:
            # A board's UART driver turns Ctrl-C into KeyboardInterrupt while code runs and
            # does not pass it on; at a prompt it is an ordinary key.
            if b == _CTRL_C and ctrl_c.sigint_caught(self.proc.pid):
                if out:
                    os.write(self.child_master, bytes(out))
                    out.clear()
                try:
                    # where it cannot break the interpreter; not sent if Ctrl-C went off
                    # meanwhile: then it is an ordinary key, as on a board
                    if ctrl_c.interrupt(self.proc.pid) is None:
                        out.append(b)
                except ProcessLookupError:
                    pass
            else:
                out.append(b)
        if out:
            os.write(self.child_master, bytes(out))

    def from_host(self):
        data = _read_ready(self.host_master)
        if data:
            self._to_child(data)

    def from_child(self):
        data = _read_ready(self.child_master)
        if data is not None:
            self._process_output(data)

    def _drain_child(self):
        while True:
            r, _, _ = select.select([self.child_master], [], [], 0)
            if not r:
                break
            try:
                data = os.read(self.child_master, 4096)
            except OSError:
                break
            if not data:
                break
            self._process_output(data)
        if self.carry and not self.hiding:
            self._pass_on(self.carry)
        self.carry = b""

    def _process_output(self, data):
        data = self.carry + data
        self.carry = b""
        while data:
            i = data.find(_SENT_START)
            if i < 0:
                # Hold back a possible start of a sentinel split across reads.
                j = data.rfind(b"\x1b", max(0, len(data) - len(_SENT_START)))
                if j >= 0 and _SENT_START.startswith(data[j:]):
                    self.carry = data[j:]
                    data = data[:j]
                self._pass_on(data)
                return
            self._pass_on(data[:i])
            k = data.find(_SENT_END, i)
            if k < 0:
                self.carry = data[i:]
                return
            self._sentinel(data[i + len(_SENT_START):k])
            data = data[k + len(_SENT_END):]

    def _sentinel(self, body):
        if body.startswith(b"exit="):
            try:
                self.exit_status = int(body[5:])
            except ValueError:
                self.exit_status = 1
        elif body == b"booted" and self.hiding:
            self.hiding = "banner"   # from here until the raw REPL banner: hidden

    def _pass_on(self, data):
        if not data:
            return
        if self.hiding == "banner":
            buf = self.carry_banner + data
            i = buf.find(RAW_BANNER)
            if i < 0:
                self.carry_banner = buf[-len(RAW_BANNER):]
                return
            self.carry_banner = b""
            self.hiding = False
            data = buf[i:]
        self._track_mode(data)
        self.emit(self._crlf(data))

    def _track_mode(self, data):
        seen = self.tail + data
        raw_at = seen.rfind(RAW_BANNER)
        friendly_at = seen.rfind(FRIENDLY_BANNER)
        if raw_at > friendly_at:
            self.mode = "raw"
        elif friendly_at > raw_at:
            self.mode = "friendly"
        self.tail = seen[-64:]

    def _crlf(self, data):
        out = bytearray()
        prev_cr = self.last_cr
        for b in data:
            if b == 0x0A and not prev_cr:
                out += b"\r\n"
            else:
                out.append(b)
            prev_cr = b == 0x0D
        self.last_cr = prev_cr
        return bytes(out)

    # -- main loop -------------------------------------------------------------------------
    def serve(self, stop=None):
        self.start("friendly")
        while stop is None or not stop():
            rlist = [self.host_master, self.child_master]
            if self.pidfd is not None:
                rlist.append(self.pidfd)
            wlist = [self.host_master] if self.backlog else []
            r, w, _ = select.select(rlist, wlist, [], 0.1)
            if self.child_master in r:
                self.from_child()
            if self.host_master in r:
                self.from_host()
            if w:
                self.flush_host()
            if self.exit_status is not None:
                self.reboot(self.exit_status)
            elif self.proc.poll() is not None:
                self.reboot(self.proc.returncode if self.proc.returncode >= 0 else 1)

    def close(self):
        self.stop()
        for fd in (self.host_master, self.host_slave, self.child_master, self.child_slave):
            try:
                os.close(fd)
            except OSError:
                pass


def run_pty(flash_dir, board=None, heapsize=DEFAULT_HEAP, *, extra_path=(), log=None,
            announce=None, stop=None):
    """Serve a virtual board on a new pseudo-terminal until interrupted; return an exit code.

    flash_dir: the board's flash (created if missing; the interpreter's working directory).
    board: board name, given to the virtual board's modules as $FIELDLINK_BOARD.
    heapsize: MicroPython `-X heapsize=` value, e.g. "96k".
    extra_path: more directories for the board's sys.path (after the flash, before tools/vboard).
    log: a binary file that receives everything the board prints.
    announce: called with the pty path once it exists; default prints
        `fieldlink sim: pty /dev/pts/N` on stdout (one flushed line).
    stop: a callable polled about ten times a second; serving ends when it returns True.
    """
    os.makedirs(flash_dir, exist_ok=True)
    mp = upy.find_micropython()
    board_obj = _Board(flash_dir, board, heapsize, extra_path, log, mp)
    if announce is None:
        print("fieldlink sim: pty %s" % board_obj.path, flush=True)
    else:
        announce(board_obj.path)
    stopping = []

    def on_term(signum, frame):
        stopping.append(signum)

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        board_obj.serve(lambda: bool(stopping) or (stop is not None and stop()))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
        board_obj.close()
    return 0


def add_arguments(parser):
    parser.add_argument("--flash", default=str(paths.VAR / "vboard-flash"),
                        help="directory that is the board's flash (default: var/vboard-flash)")
    parser.add_argument("--board", default=None, help="board name (boards/NAME)")
    parser.add_argument("--heapsize", default=DEFAULT_HEAP,
                        help="MicroPython heap size (default %s)" % DEFAULT_HEAP)
    parser.add_argument("--log", default=None, help="also append everything the board prints "
                        "to this file")


def run(args):
    log = open(args.log, "ab") if args.log else None
    try:
        return run_pty(args.flash, args.board, args.heapsize, log=log)
    finally:
        if log:
            log.close()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fieldlink_tools.vboard_pty",
                                     description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def _read_ready(fd):
    """Read what a pty master has; None when nothing is there or the other side is gone
    (EIO is how Linux reports a pty whose slave end is closed)."""
    try:
        return os.read(fd, 4096)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError as e:
        if e.errno == errno.EIO:
            return None
        raise


if __name__ == "__main__":
    sys.exit(main())

