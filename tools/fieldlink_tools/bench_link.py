"""`fieldlink bench link`: the link end to end, the real firmware on the virtual board streaming
through the fault proxy to a real collector. Prints numbers, asserts nothing.

  1. readings/s one simulated board sustains end to end (sampling faster than the link);
  2. time from a collector restart to the first newly stored reading;
  3. dead-link detection time after a blackhole (keepalive: ping_interval_s + ping_timeout_s);
  4. the board's heap: live heap after gc and high-water mark (its own `mem`/`health` lines);
  5. the smallest `-X heapsize` (bisected in 8k steps) at which the board streams 10,000
     readings: all stored, no MemoryError in its log, no reboot.

The last line is key=value pairs. Takes a few minutes (the bisection is most of it).
"""
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

    def __init__(self, work, heap, board_data, rom=False, **cfg):
        self.c = CollectorProcess(os.path.join(work, "c.db"), {"bench-1": "tok"}).start()
        port = int(self.c.url.rsplit(":", 1)[1].split("/")[0])
        self.p = FaultProxy("127.0.0.1", port).start()
        sets = dict(LINK)
        sets.update(cfg)
        conf = sim.make_config("ws://127.0.0.1:%d/ws" % self.p.port, "bench-1", "tok", sets)
        self.b = sim.SimBoard(os.path.join(work, "flash"), conf, heapsize=heap,
                              log_path=os.path.join(work, "board.log"),
                              board_data=board_data, rom=rom).start()

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


def link_numbers(heap, board_data, seconds, rom=False):
    """Throughput, collector restart, blackhole, heap: one board run."""
    work = tempfile.mkdtemp(prefix="fl-bench-link-")
    rig = _Rig(work, heap, board_data, rom, sample_interval_s=0.002, window=64, batch_max=20)
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


def streams(heap, board_data, n=10000, interval=0.002, timeout=120, rom=False):
    """Does the board stream n readings at this heap size? (ok, why)"""
    work = tempfile.mkdtemp(prefix="fl-bench-heap-")
    rig = _Rig(work, heap, board_data, rom, sample_interval_s=interval)
    try:
        def done():
            if rig.b.lines("MemoryError"):
                return "MemoryError"
            if rig.b.boots > 1 or not rig.b.running:
                return "rebooted or ended"
            return "ok" if rig.stored()[0] >= n else None
        why = _wait(done, timeout, 0.2) or "timeout (%d stored)" % rig.stored()[0]
        if why == "ok":
            seqs = rig.c.seqs("bench-1")[:n]
            if seqs != list(range(1, n + 1)):
                why = "missing seqs"
            elif rig.b.lines("MemoryError"):
                why = "MemoryError"
        return why == "ok", why
    finally:
        rig.close()
        shutil.rmtree(work, ignore_errors=True)


def smallest_heap(board_data, lo_k, hi_k, step_k, n, say, rom=False):
    """Bisect on a grid of step_k: the smallest size that streams, or None."""
    lo = lo_k // step_k           # grid indices; lo might fail, hi must work
    hi = hi_k // step_k
    ok, why = streams("%dk" % (hi * step_k), board_data, n, rom=rom)
    say("  %4dk: %s" % (hi * step_k, why))
    if not ok:
        return None
    ok, why = streams("%dk" % (lo * step_k), board_data, n, rom=rom)
    say("  %4dk: %s" % (lo * step_k, why))
    if ok:
        return lo * step_k
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ok, why = streams("%dk" % (mid * step_k), board_data, n, rom=rom)
        say("  %4dk: %s" % (mid * step_k, why))
        if ok:
            hi = mid
        else:
            lo = mid
    return hi * step_k


def main(argv=None):
    ap = argparse.ArgumentParser(prog="fieldlink bench link", description=__doc__.split(
        "\n\n")[0])
    ap.add_argument("--heapsize", default="256k", help="heap for the link numbers (256k)")
    ap.add_argument("--board", choices=("sim", "full"), default="sim",
                    help="sim: one simulated sensor (the memory test's board); full: "
                         "boards/virtual with its register-level device models")
    ap.add_argument("--seconds", type=float, default=8, help="throughput window (8)")
    ap.add_argument("--readings", type=int, default=10000, help="per bisection run (10000)")
    ap.add_argument("--lo", default="64k", help="bisection range, low end (64k)")
    ap.add_argument("--hi", default="256k", help="bisection range, high end (256k)")
    ap.add_argument("--no-bisect", action="store_true", help="skip the heap bisection")
    ap.add_argument("--rom", action="store_true",
                    help="the link numbers with the firmware in ROM (fieldlink sim --rom); "
                         "the bisection always runs both ways")
    args = ap.parse_args(argv)
    upy.find_micropython()
    sim.compile_firmware()
    board_data = SIM_ONLY if args.board == "sim" else None
    say = lambda s: print(s, flush=True)  # noqa: E731
    say("fieldlink bench link: board %s, MicroPython unix port (64-bit objects), firmware as "
        "%s" % (args.board, "a ROMFS image (in place)" if args.rom else ".mpy files"))
    r = link_numbers(args.heapsize, board_data, args.seconds, args.rom)
    say("readings/s stored end to end (sampling every 2 ms):  %8.0f" % r["readings_per_s"])
    say("collector restart -> first new reading stored:       %8.2f s" %
        r["restart_to_stored_s"])
    say("blackhole -> link declared dead (%s):  %5.2f s  (ping %ss + timeout %ss)" % (
        r["dead_link_why"][:60], r["dead_link_detect_s"], LINK["ping_interval_s"],
        LINK["ping_timeout_s"]))
    say("heap at %s: live after gc (max of the board's mem lines) %d B; high-water %d B "
        "(heapsize - lowest gc.mem_free() the board reported; includes garbage not yet "
        "collected); MemoryErrors %d" % (args.heapsize, r["live_heap"], r["heap_high_water"],
                                         r["memory_errors"]))
    smallest = {"files": None, "rom": None}
    if not args.no_bisect:
        for where in ("files", "rom"):
            say("smallest -X heapsize streaming %d readings, firmware %s (8k steps, %s..%s):"
                % (args.readings, "as .mpy files in the flash" if where == "files" else
                   "in ROM", args.lo, args.hi))
            smallest[where] = smallest_heap(board_data, _k(args.lo) // 1024,
                                            _k(args.hi) // 1024, 8, args.readings, say,
                                            rom=where == "rom")
            say("  -> %s" % ("%dk" % smallest[where] if smallest[where] else "none in range"))
    say("readings_per_s=%.0f restart_to_stored_s=%.2f dead_link_s=%.2f live_heap_b=%d "
        "heap_high_water_b=%d min_heapsize_files_k=%s min_heapsize_rom_k=%s board=%s "
        "link_numbers_from=%s" % (
            r["readings_per_s"], r["restart_to_stored_s"], r["dead_link_detect_s"],
            r["live_heap"], r["heap_high_water"], smallest["files"] or "none",
            smallest["rom"] or "none", args.board, "rom" if args.rom else "files"))
    return 0
