"""fieldlink soak: a long, seeded fault campaign against the real firmware on virtual boards.

One collector, one fault-injecting proxy (faultproxy.py) and N virtual boards (sim.SimBoard)
streaming through it. Faults are drawn from a seeded generator until the time is up: proxy
reset, blackhole, delay, garbage bytes/text, slow reader, collector restart (clean or
killed), board power cut (kill -9, restart from the same flash directory) and Wi-Fi down (the
virtual board's knob). Then sampling is stopped, everything drains, and the collector's store
is audited per board: every seq the board produced is stored exactly once or lies in a gap the
board declared, and the dropped count is exact. Exit status 1 when the audit fails.

    fieldlink soak --minutes 5 --seed 1 --boards 3
    fieldlink soak --tls --minutes 6 --seed 5 --boards 2 --heapsize 152k

With --tls the collector serves wss:// with a certificate from a CA made for the run (trustme,
no network), each board gets that CA as `ca_file` on its flash, and the proxy forwards the TLS
bytes untouched: its garbage lands inside TLS records, which the board must treat as a broken
connection (reconnect, nothing lost). The audit is the same.

The audit (`audit_device`) and the drain (`drain`) are used by host_tests/integration/
test_faults.py too, so the short campaign in `make test` checks exactly what this checks.
"""
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time

# The soak's boards carry only the simulated sensor (no bus, no register-level models): the
# link is what is under test, and the small board keeps many of them cheap to run.
SIM_ONLY = {"name": "virtual", "chip": "unix", "buses": {},
            "sensors": [{"name": "sim", "driver": "simulated", "seed": 7}]}

# Short link timings so faults are detected within seconds (the firmware defaults are for a
# field deployment: 20 s pings, 60 s backoff cap).
LINK = {"ping_interval_s": 1, "ping_timeout_s": 1, "backoff_base_s": 0.2, "backoff_max_s": 2,
        "stable_after_s": 5, "connect_timeout_s": 3, "health_interval_s": 5, "wdt_s": 0,
        "spill_after_s": 2}

# kind -> weight in the fault mix
FAULTS = {"reset": 3, "blackhole": 2, "delay": 2, "garbage": 2, "slow": 2,
          "collector_restart": 1, "power_cut": 2, "wifi_down": 2}

_NEXT = re.compile(r"INFO link: streaming to \S+ \(ack (\d+), next (\d+), held (\d+)\)")


# ---- the audit ---------------------------------------------------------------------------

class Audit:
    """What the store says about one device, against what the board says it produced."""

    FIELDS = ("produced", "stored", "duplicates", "dropped", "dropped_reported", "reboot_gap",
              "lost_server", "lost_undeclared", "ack")

    def __init__(self, device):
        self.device = device
        self.produced = None         # the board's own seq counter (next - 1), if known
        self.stored = 0              # distinct seqs in the store
        self.duplicates = 0          # rows for a seq already stored (must be 0)
        self.dropped = 0             # seqs in `gap dropped` (exact, declared by the board)
        self.dropped_reported = None  # the board's own cumulative dropped counter (health)
        self.reboot_gap = 0          # seqs in `gap reboot` not stored (declared upper bound)
        self.lost_server = 0         # seqs in server-side `lost` gaps (must be 0 here)
        self.lost_undeclared = 0     # neither stored nor declared (must be 0)
        self.ack = 0
        self.gaps = []               # the store's gaps for the device, as dicts
        self.problems = []

    @property
    def ok(self):
        return not self.problems

    def as_dict(self):
        return {k: getattr(self, k) for k in self.FIELDS}

    def __repr__(self):
        return "Audit(%s, %s, problems=%r)" % (self.device, self.as_dict(), self.problems)


def audit_device(store, device, produced=None, dropped_reported=None):
    """Check one device's readings in `store` (a collector Store, e.g. open_readonly()).

    produced: the board's seq counter (highest seq it assigned); without it the audit covers
    1..ack. dropped_reported: the board's cumulative dropped counter, which must equal the
    seqs declared by `gap dropped`."""
    a = Audit(device)
    seqs = [r["q"] for r in store.readings(device)]
    gaps = store.gaps(device)
    a.ack = store.ack(device) or 0
    stored = set(seqs)
    a.stored = len(stored)
    a.duplicates = len(seqs) - len(stored)
    a.produced = produced
    a.dropped_reported = dropped_reported
    a.gaps = gaps
    declared = set()
    for g in gaps:
        span = set(range(g["from"], g["to"] + 1))
        if g["why"] == "dropped":
            a.dropped += len(span)
            both = span & stored
            if both:
                a.problems.append("declared dropped but stored: %s" % _ranges(both))
        elif g["why"] == "reboot":
            a.reboot_gap += len(span - stored)
        elif g["why"] == "lost":
            a.lost_server += len(span - stored)
        declared |= span
    top = produced if produced is not None else a.ack
    missing = [q for q in range(1, top + 1) if q not in stored and q not in declared]
    a.lost_undeclared = len(missing)
    if a.duplicates:
        a.problems.append("stored twice: %d rows" % a.duplicates)
    if missing:
        a.problems.append("lost without a gap: %s" % _ranges(missing))
    if a.lost_server:
        a.problems.append("in server-side lost gaps: %d seqs" % a.lost_server)
    if produced is not None:
        beyond = [q for q in stored if q > produced]
        if beyond:
            a.problems.append("stored seqs the board never produced: %s" % _ranges(beyond))
        if a.ack < produced:
            a.problems.append("not drained: ack %d < produced %d" % (a.ack, produced))
    if dropped_reported is not None and dropped_reported != a.dropped:
        a.problems.append("board says %d dropped, gaps declare %d"
                          % (dropped_reported, a.dropped))
    return a


def _ranges(seqs, limit=8):
    """[1,2,3,7] -> '1-3, 7' (the first few runs)."""
    out = []
    for q in sorted(seqs):
        if out and out[-1][1] == q - 1:
            out[-1][1] = q
        else:
            out.append([q, q])
    txt = ", ".join("%d" % a if a == b else "%d-%d" % (a, b) for a, b in out[:limit])
    return txt + (" ..." if len(out) > limit else "")


# ---- watching a board's log --------------------------------------------------------------

class LineWatch:
    """Tails a board's log file in a thread and stamps each new line with time.monotonic()
    when it appeared (the firmware's log lines carry no time). Good to ~20 ms."""

    def __init__(self, path, poll_s=0.02):
        self.path = str(path)
        self.poll_s = poll_s
        self.stamped = []            # (t, line)
        self._pos = 0
        self._part = b""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.poll_s)

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self._pos)
                data = f.read()
        except OSError:
            return
        if not data:
            return
        now = time.monotonic()
        with self._lock:
            self._pos += len(data)
            data = self._part + data
            *done, self._part = data.split(b"\n")
            for ln in done:
                self.stamped.append((now, ln.decode("utf-8", "replace").rstrip("\r")))

    def since(self, t0, contains=None):
        """[(t, line)] that appeared at or after t0 (and contain `contains`)."""
        with self._lock:
            return [(t, ln) for t, ln in self.stamped
                    if t >= t0 and (contains is None or contains in ln)]

    def wait(self, contains, t0=0.0, timeout=30, count=1):
        """Wait for `count` lines containing `contains` that appeared after t0; returns them
        [(t, line)]. Raises TimeoutError with the log's tail."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.since(t0, contains)
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                with self._lock:
                    tail = [ln for _, ln in self.stamped[-30:]]
                raise TimeoutError("no %r in the board log within %ss; tail:\n%s"
                                   % (contains, timeout, "\n".join(tail)))
            time.sleep(0.02)

    def close(self):
        self._stop.set()
        self._thread.join(2)


# ---- draining and the board's counter -----------------------------------------------------

def _retry_command(collector, dev, cmd, args=None, timeout=60):
    """A command to a device that may be reconnecting right now: retry until it connects."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return collector.command(dev, cmd, args, timeout=5)
        except Exception as e:   # not connected yet, or the link dropped mid-command
            if time.monotonic() > deadline:
                raise TimeoutError("command %s to %s: %s" % (cmd, dev, e))
            time.sleep(0.3)


def drain(collector, devices, timeout=60):
    """Stop sampling on every device and wait until each one's ack covers its newest stored
    seq and has stopped moving (the outbox is empty, as far as the store can tell)."""
    for dev in devices:
        _retry_command(collector, dev, "set_interval", {"sensor": "*", "interval_s": 3600},
                       timeout)
    deadline = time.monotonic() + timeout
    last = None
    while True:
        now = _acks(collector, devices)
        if now == last and all(a >= top for a, top in now):
            return
        last = now
        if time.monotonic() > deadline:
            raise TimeoutError("did not drain within %ss: (ack, newest) %r" % (timeout, now))
        time.sleep(1)


def _acks(collector, devices):
    """[(ack, newest stored seq)] per device."""
    st = collector.store()
    try:
        out = []
        for dev in devices:
            rows = st.latest(dev, 1)
            out.append((st.ack(dev) or 0, rows[0]["q"] if rows else 0))
        return out
    finally:
        st.close()


def board_counters(boards, proxy, timeout=30):
    """Each board's own seq counter: make them reconnect (proxy reset) and read `next` from
    the 'streaming to' line each logs on its new connection. {dev: next - 1}."""
    before = {dev: len(b.lines("INFO link: streaming to")) for dev, b in boards.items()}
    proxy.reset()
    out = {}
    for dev, b in boards.items():
        got = b.wait_for_line("INFO link: streaming to", timeout=timeout,
                              count=before[dev] + 1)
        m = _NEXT.search(got[-1])
        if not m:
            raise ValueError("cannot read next from %r" % got[-1])
        out[dev] = int(m.group(2)) - 1
    return out


def final_audit(collector, proxy, boards, timeout=60):
    """Drain, read each board's seq counter and its dropped count, audit the store.
    boards: {device id: SimBoard}. Returns {dev: Audit}."""
    devs = list(boards)
    drain(collector, devs, timeout)
    produced = board_counters(boards, proxy, timeout)
    deadline = time.monotonic() + timeout
    while True:   # the reconnect may resend what was in flight: wait for the ack to cover it
        if all(a >= produced[d] for d, (a, _) in zip(devs, _acks(collector, devs))):
            break
        if time.monotonic() > deadline:
            break   # the audit reports "not drained"
        time.sleep(0.3)
    reported = {}
    for dev in devs:
        _retry_command(collector, dev, "health", None, timeout)  # its dropped counter, now
    st = collector.store()
    try:
        for dev in devs:
            h = st.health_history(dev, limit=1)
            reported[dev] = h[0]["dropped"] if h else None
        return {dev: audit_device(st, dev, produced[dev], reported[dev]) for dev in devs}
    finally:
        st.close()


# ---- TLS -------------------------------------------------------------------------------

class TLSFiles:
    """A CA made for one run and a certificate it signed for 127.0.0.1 and localhost, as PEM
    files in `directory`: `.ca` (the boards' ca_file), `.cert` and `.key` (the collector's
    --cert/--key). trustme (requirements-dev.txt) makes them offline."""

    def __init__(self, directory):
        try:
            import trustme
        except ImportError:
            raise SystemExit("fieldlink soak --tls needs trustme (requirements-dev.txt)")
        os.makedirs(directory, exist_ok=True)
        ca = trustme.CA()   # ECDSA, as test_tls_link's: the board's mbedTLS verifies it
        issued = ca.issue_cert("127.0.0.1", "localhost")
        self.ca = os.path.join(directory, "ca.pem")
        self.cert = os.path.join(directory, "server-cert.pem")
        self.key = os.path.join(directory, "server-key.pem")
        ca.cert_pem.write_to_path(self.ca)
        issued.cert_chain_pems[0].write_to_path(self.cert)
        for extra in issued.cert_chain_pems[1:]:
            extra.write_to_path(self.cert, append=True)
        issued.private_key_pem.write_to_path(self.key)


# ---- the campaign ------------------------------------------------------------------------

class Campaign:
    """The long seeded fault campaign: see the module docstring."""

    def __init__(self, workdir, seed=1, boards=1, minutes=5.0, sample_interval_s=0.1,
                 outbox_ram_bytes=8192, outbox_flash_bytes=32768, heapsize=None,
                 report_every_s=15.0, out=sys.stdout, faults=None, tls=False, rom=False):
        self.workdir = str(workdir)
        self.rng = random.Random(seed)
        self.seed = seed
        self.n_boards = boards
        self.seconds = minutes * 60
        self.sample_interval_s = sample_interval_s
        self.outbox = {"outbox_ram_bytes": outbox_ram_bytes,
                       "outbox_flash_bytes": outbox_flash_bytes}
        self.heapsize = heapsize
        self.tls = tls
        self.rom = rom            # the boards run the firmware from ROM (sim --rom)
        self.report_every_s = report_every_s
        self.out = out
        self.mix = dict(faults or FAULTS)
        self.injected = {k: 0 for k in self.mix}
        self.stalls = []          # (fault, seconds into the run, what)
        self.detect_s = []        # blackhole -> the board declared the link dead
        self.collector = None
        self.proxy = None
        self.boards = {}          # dev -> SimBoard
        self.watch = {}           # dev -> LineWatch
        self._t0 = None
        self._stop = threading.Event()

    def say(self, msg):
        self.out.write("[%5.0fs] %s\n" % (time.monotonic() - self._t0, msg))
        self.out.flush()

    # ---- setting up ----

    def start(self):
        from . import sim
        from .collector.process import CollectorProcess
        from .faultproxy import FaultProxy
        self._t0 = time.monotonic()
        os.makedirs(self.workdir, exist_ok=True)
        devs = {"soak-%02d" % i: "tok-%02d-%d" % (i, self.seed) for i in range(self.n_boards)}
        tls = TLSFiles(os.path.join(self.workdir, "tls")) if self.tls else None
        self.collector = CollectorProcess(os.path.join(self.workdir, "collector.db"), devs,
                                          cert=tls and tls.cert, key=tls and tls.key)
        self.collector.start()
        self.proxy = FaultProxy("127.0.0.1", self.collector.port).start()
        url = "%s://127.0.0.1:%d/ws" % ("wss" if tls else "ws", self.proxy.port)
        for i, (dev, tok) in enumerate(sorted(devs.items())):
            sets = dict(LINK, sample_interval_s=self.sample_interval_s, **self.outbox)
            if tls:   # the CA on the board's flash, where a deploy would put it
                os.makedirs(os.path.join(self.workdir, dev), exist_ok=True)
                shutil.copyfile(tls.ca, os.path.join(self.workdir, dev, "ca.pem"))
                sets["ca_file"] = "ca.pem"
            board = dict(SIM_ONLY, sensors=[dict(SIM_ONLY["sensors"][0], seed=self.seed + i)])
            b = sim.SimBoard(os.path.join(self.workdir, dev), sim.make_config(url, dev, tok, sets),
                             heapsize=self.heapsize or sim.DEFAULT_HEAP,
                             log_path=os.path.join(self.workdir, dev + ".log"), board_data=board,
                             rom=self.rom)
            self.boards[dev] = b
            self.watch[dev] = LineWatch(b.log_path)
            b.start()
        self.say("collector %s, proxy :%d, %d board(s), seed %d, work dir %s"
                 % (self.collector.url, self.proxy.port, self.n_boards, self.seed, self.workdir))

    def stop(self):
        self._stop.set()
        for w in self.watch.values():
            w.close()
        for b in self.boards.values():
            try:
                b.stop()
            except Exception:
                pass
        if self.proxy is not None:
            self.proxy.stop()
        if self.collector is not None:
            try:
                self.collector.stop()
            except Exception:
                self.collector.kill()

    # ---- counting ----

    def stored(self):
        """{dev: distinct seqs stored}."""
        st = self.collector.store()
        try:
            n = {d["device"]: d["readings"] for d in st.devices()}
        finally:
            st.close()
        return {d: n.get(d) or 0 for d in self.boards}

    def counts(self):
        try:
            stored = sum(self.stored().values())
        except Exception:   # the database may be mid-restart
            stored = -1
        conns = sum(len(b.lines("INFO link: streaming to")) for b in self.boards.values())
        fails = sum(len(b.lines("WARN link:")) for b in self.boards.values())
        return stored, max(0, conns - len(self.boards)), fails

    def _reporter(self):
        while not self._stop.wait(self.report_every_s):
            stored, reconnects, fails = self.counts()
            kinds = " ".join("%s=%d" % kv for kv in self.injected.items() if kv[1])
            self.say("stored %d, reconnects %d, link failures %d; faults %s"
                     % (stored, reconnects, fails, kinds or "-"))

    # ---- faults ----

    def wait_progress(self, what, more=10, timeout=60):
        """Every board stores `more` new readings within `timeout` (the link works again)."""
        try:
            base = self.stored()
        except Exception:
            base = {d: 0 for d in self.boards}
        deadline = time.monotonic() + timeout
        while True:
            try:
                now = self.stored()
            except Exception:
                now = base
            slow = [d for d in self.boards if now[d] < base[d] + more]
            if not slow:
                return True
            if time.monotonic() > deadline:
                t = time.monotonic() - self._t0
                for d in slow:
                    self.stalls.append((what, round(t), d))
                    self.say("STALL: %s made no progress within %ds after %s; log tail:\n  %s"
                             % (d, timeout, what, "\n  ".join(self.boards[d].lines()[-15:])))
                return False
            time.sleep(0.2)

    def inject(self, kind):
        rng = self.rng
        fp = self.proxy
        self.injected[kind] += 1
        if kind == "reset":
            fp.reset()
        elif kind == "blackhole":
            t0 = time.monotonic()
            fp.set_mode("blackhole")
            dead = LINK["ping_interval_s"] + LINK["ping_timeout_s"] + 1
            # long enough for the keepalive to notice, up to a few seconds more
            hold = rng.uniform(dead, dead + 4)
            try:
                got = [w.wait("WARN link: stream:", t0, timeout=hold) for w in
                       self.watch.values()]
                self.detect_s.extend(g[0][0] - t0 for g in got)
            except TimeoutError:
                pass
            left = hold - (time.monotonic() - t0)
            if left > 0:
                time.sleep(left)
            fp.set_mode("pass")
        elif kind == "delay":
            fp.set_mode("delay", delay_s=rng.uniform(0.05, 0.6))
            time.sleep(rng.uniform(1, 5))
            fp.set_mode("pass")
        elif kind == "garbage":
            if rng.random() < 0.5:
                fp.garbage(bytes(rng.randrange(256) for _ in range(rng.randint(1, 40))))
            else:
                fp.garbage_text(rng.choice(["not json {", "[1,2,3]", '{"t": 5}', '{"t":"ack"}',
                                            '{"t":"ack","ack":"x"}', "\"str\""]))
        elif kind == "slow":
            fp.set_mode("slow")
            time.sleep(rng.uniform(1, 4))
            fp.set_mode("pass")
        elif kind == "collector_restart":
            c = self.collector
            c.kill() if rng.random() < 0.5 else c.stop()
            time.sleep(rng.uniform(0, 3))
            c.start()
        elif kind == "power_cut":
            b = self.boards[rng.choice(sorted(self.boards))]
            b.power_cut()
            time.sleep(rng.uniform(0, 2))
            b.start()
        elif kind == "wifi_down":
            b = self.boards[rng.choice(sorted(self.boards))]
            b.set_knobs(wifi="down")
            time.sleep(rng.uniform(1, 10))
            b.set_knobs(wifi="up")
        else:
            raise ValueError(kind)

    def run(self):
        """Faults until the time is up, then the audit. Returns {dev: Audit}."""
        rep = threading.Thread(target=self._reporter, daemon=True)
        rep.start()
        self.wait_progress("start", more=20, timeout=90)
        kinds = sorted(self.mix)
        weights = [self.mix[k] for k in kinds]
        end = self._t0 + self.seconds
        while time.monotonic() < end:
            kind = self.rng.choices(kinds, weights)[0]
            self.inject(kind)
            self.wait_progress(kind)
            time.sleep(self.rng.uniform(0.5, 3))   # a quiet spell: the fault's spacing
        self._stop.set()
        self.say("time is up; draining and auditing")
        return final_audit(self.collector, self.proxy, self.boards, timeout=90)

    def report(self, audits):
        """Print the final counts; returns True when everything passed."""
        ok = not self.stalls
        stored, reconnects, fails = self.counts()
        w = self.out.write
        w("\nfieldlink soak: seed %d, %d board(s), %.1f min%s\n"
          % (self.seed, self.n_boards, (time.monotonic() - self._t0) / 60,
             (", wss://" if self.tls else "") + (", firmware in ROM" if self.rom else "")))
        hdr = ("device", "produced", "stored", "dups", "dropped", "reboot-gap", "lost-undecl",
               "ack", "result")
        w("%-8s %9s %8s %5s %8s %10s %11s %8s  %s\n" % hdr)
        tot = {k: 0 for k in ("produced", "stored", "duplicates", "dropped", "reboot_gap",
                              "lost_undeclared")}
        for dev, a in sorted(audits.items()):
            w("%-8s %9s %8d %5d %8d %10d %11d %8d  %s\n" % (
                dev, a.produced, a.stored, a.duplicates, a.dropped, a.reboot_gap,
                a.lost_undeclared, a.ack, "ok" if a.ok else "FAIL: " + "; ".join(a.problems)))
            for k in tot:
                tot[k] += getattr(a, k) or 0
            ok = ok and a.ok
        w("%-8s %9d %8d %5d %8d %10d %11d\n" % (
            "total", tot["produced"], tot["stored"], tot["duplicates"], tot["dropped"],
            tot["reboot_gap"], tot["lost_undeclared"]))
        w("reconnects %d, link failures seen by the boards %d, boots %d\n"
          % (reconnects, fails, sum(b.boots for b in self.boards.values())))
        w("faults injected: %s (total %d)\n" % (", ".join(
            "%s %d" % kv for kv in sorted(self.injected.items())), sum(self.injected.values())))
        if self.detect_s:
            d = sorted(self.detect_s)
            w("blackhole -> link declared dead: median %.2f s, max %.2f s (n=%d; bound "
              "ping_interval + ping_timeout + 1 = %d s)\n"
              % (d[len(d) // 2], d[-1], len(d),
                 LINK["ping_interval_s"] + LINK["ping_timeout_s"] + 1))
        tracebacks = sum(len(b.lines("Traceback")) for b in self.boards.values())
        if tracebacks:
            ok = False
            w("board tracebacks: %d (see the logs in %s)\n" % (tracebacks, self.workdir))
        # a MemoryError the firmware caught and logged is still a heap too small for the run
        oom = sum(len(b.lines("MemoryError")) for b in self.boards.values())
        if oom:
            ok = False
            w("board MemoryErrors: %d (see the logs in %s)\n" % (oom, self.workdir))
        # readings sampled but not kept for lack of heap: no seq, so outside the audit above
        skipped = sum(len(b.lines("no memory for reading")) for b in self.boards.values())
        if skipped:
            ok = False
            w("readings skipped for lack of heap (no seq, health `skipped`): %d\n" % skipped)
        if self.stalls:
            w("stalls (no progress within 60 s after a fault): %r\n" % self.stalls)
        w("audit: %s\n" % ("PASS" if ok else "FAIL"))
        self.out.flush()
        return ok


def add_arguments(p):
    p.add_argument("--minutes", type=float, default=5.0, help="how long to inject faults "
                   "(default 5), then drain and audit")
    p.add_argument("--seed", type=int, default=1, help="seed of the fault sequence (default 1)")
    p.add_argument("--boards", type=int, default=1, help="virtual boards at once (default 1)")
    p.add_argument("--sample-interval", type=float, default=0.1, metavar="S",
                   help="each board samples every S seconds (3 readings each; default 0.1)")
    p.add_argument("--outbox-ram", type=int, default=8192, metavar="BYTES",
                   help="outbox_ram_bytes on the boards (default 8192)")
    p.add_argument("--outbox-flash", type=int, default=32768, metavar="BYTES",
                   help="outbox_flash_bytes on the boards (default 32768; small values make "
                        "long outages drop readings, which must then be declared)")
    p.add_argument("--faults", default=None, metavar="KIND=W,...",
                   help="fault mix as kind=weight (kinds: %s); default %s" % (
                       ", ".join(FAULTS), ",".join("%s=%d" % kv for kv in FAULTS.items())))
    p.add_argument("--report-every", type=float, default=15.0, metavar="S",
                   help="print running counts every S seconds (default 15)")
    p.add_argument("--dir", default=None, help="work directory (collector db, flash dirs, "
                   "logs); default a temporary one, removed when the audit passes")
    p.add_argument("--tls", action="store_true", help="wss://: the collector serves TLS with "
                   "a certificate from a CA made for the run, the boards verify it (ca_file); "
                   "the proxy's faults hit the TLS stream")
    p.add_argument("--rom", action="store_true", help="the boards run the firmware from ROM "
                   "(fieldlink sim --rom: as frozen or ROMFS, the code takes no heap)")
    from . import sim
    p.add_argument("--heapsize", default=None,
                   help="board heap, -X heapsize (default %s, the full virtual board's)"
                   % sim.DEFAULT_HEAP)


def parse_faults(text):
    if not text:
        return None
    mix = {}
    for item in text.split(","):
        k, _, w = item.partition("=")
        k = k.strip()
        if k not in FAULTS:
            raise SystemExit("fieldlink soak: unknown fault %r (kinds: %s)"
                             % (k, ", ".join(FAULTS)))
        mix[k] = int(w or 1)
    return mix


def run(args):
    from . import upy
    upy.find_micropython()
    workdir = args.dir or tempfile.mkdtemp(prefix="fieldlink-soak-")
    camp = Campaign(workdir, seed=args.seed, boards=args.boards, minutes=args.minutes,
                    sample_interval_s=args.sample_interval, outbox_ram_bytes=args.outbox_ram,
                    outbox_flash_bytes=args.outbox_flash, heapsize=args.heapsize,
                    report_every_s=args.report_every, faults=parse_faults(args.faults),
                    tls=args.tls, rom=args.rom)
    ok = False
    try:
        camp.start()
        audits = camp.run()
        ok = camp.report(audits)
    except KeyboardInterrupt:
        print("fieldlink soak: interrupted; work dir kept: %s" % workdir)
        return 130
    except Exception as e:
        print("fieldlink soak: FAILED: %s: %s" % (type(e).__name__, e))
    finally:
        camp.stop()
    if ok and not args.dir:
        shutil.rmtree(workdir, ignore_errors=True)
    elif not ok:
        print("fieldlink soak: logs and database kept in %s" % workdir)
    return 0 if ok else 1
