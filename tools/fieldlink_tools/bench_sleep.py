"""`fieldlink bench sleep`: awake milliseconds per duty cycle, the energy proxy of battery
mode: the real firmware on the virtual board (deep sleep time-compressed) against a real
collector, over ws:// and wss://.

  one         every wake connects and sends its one reading (connect_every 1)
  catchup100  a wake that connects after 99 sampling-only wakes: 100 readings from flash

Per scenario: the median of the firmware's own "awake N ms" (from main.py's start to
machine.deepsleep: sampling, Wi-Fi (the virtual board's association takes 300 ms), TCP,
TLS, hello, batches, ack, sleep, close, flush) and of the host's view of the process
(awake_proc_*: the interpreter's own start and imports too). A sampling-only wake for
comparison. Last line: `awake_ms_one=A awake_ms_catchup100=B` (ws://) and the wss:// and
process figures as extra keys."""
import argparse
import os
import re
import shutil
import statistics
import tempfile
import time

from . import sim, upy
from .collector.process import CollectorProcess

DEV, TOK = "bench-sleep", "bench-sleep-token-0123456789"
BOARD = {"name": "virtual", "chip": "unix", "buses": {},
         "sensors": [{"name": "sim", "driver": "simulated", "seed": 7,
                      "quantities": ["temperature"]}]}
_AWAKE = re.compile(r"INFO duty: awake (\d+) ms \(([a-z ]+)\), held (\d+)")


def _run(url, flash, log, every, wakes, ca=None):
    """Run `wakes` wakes; [(firmware ms, kind, held after, process s)] per wake."""
    sets = {"duty_cycle_s": 1, "connect_every": every, "awake_max_s": 20, "wdt_s": 0,
            "connect_timeout_s": 5}
    if ca:
        sets["ca_file"] = "ca.pem"
        os.makedirs(flash, exist_ok=True)
        shutil.copyfile(ca, os.path.join(flash, "ca.pem"))
    b = sim.SimBoard(flash, sim.make_config(url, DEV, TOK, sets), board_data=BOARD,
                     log_path=log, sleep_scale=0.01, sleeps=wakes)
    b.start()
    try:
        b.wait()
    finally:
        b.stop()
    got = _AWAKE.findall(b.text())
    return [(int(ms), kind, int(held), b.awake[i][1] * 1000) for i, (ms, kind, held)
            in enumerate(got) if i < len(b.awake)]


def measure(scheme, work, rounds):
    tls = None
    kw = {}
    if scheme == "wss":
        from .soak import TLSFiles
        tls = TLSFiles(os.path.join(work, "tls"))
        kw = {"cert": tls.cert, "key": tls.key}
    c = CollectorProcess(os.path.join(work, "%s.db" % scheme), {DEV: TOK}, **kw).start()
    try:
        ca = tls.ca if tls else None
        one = _run(c.url, os.path.join(work, scheme + "-one"), os.path.join(work, scheme +
                   "-one.log"), 1, rounds + 1, ca)[1:]   # the first: a power-on
        one = [w for w in one if w[1] == "acked"]
        cu = []
        samp = []
        for r in range(max(1, rounds // 4)):
            w = _run(c.url, os.path.join(work, "%s-cu%d" % (scheme, r)),
                     os.path.join(work, "%s-cu%d.log" % (scheme, r)), 100, 101, ca)
            cu += [x for x in w[100:] if x[1] == "acked"]
            samp += [x for x in w[1:100] if x[1] == "sampled"]
    finally:
        c.stop()

    def med(ws, k):
        return round(statistics.median(x[k] for x in ws)) if ws else -1
    return {"one": med(one, 0), "one_proc": med(one, 3), "catchup100": med(cu, 0),
            "catchup100_proc": med(cu, 3), "sampled": med(samp, 0),
            "sampled_proc": med(samp, 3), "n_one": len(one), "n_cu": len(cu)}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="fieldlink bench sleep",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=8,
                    help="connecting wakes per 'one' run (medians; catchup100: rounds/4 runs)")
    ap.add_argument("--schemes", default="ws,wss", help="ws, wss or both (default ws,wss)")
    a = ap.parse_args(argv)
    upy.find_micropython()
    work = tempfile.mkdtemp(prefix="fieldlink-bench-sleep-")
    res = {}
    try:
        for scheme in a.schemes.split(","):
            t = time.monotonic()
            r = res[scheme] = measure(scheme, work, a.rounds)
            print("%-3s one reading: awake %d ms (process %d ms, %d wakes); catching up 100: "
                  "%d ms (process %d ms, %d wakes); sampling only: %d ms (process %d ms) "
                  "[%.0f s]" % (scheme, r["one"], r["one_proc"], r["n_one"], r["catchup100"],
                                r["catchup100_proc"], r["n_cu"], r["sampled"],
                                r["sampled_proc"], time.monotonic() - t), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    keys = []
    if "ws" in res:
        keys += ["awake_ms_one=%d" % res["ws"]["one"],
                 "awake_ms_catchup100=%d" % res["ws"]["catchup100"]]
    if "wss" in res:
        keys += ["awake_ms_one_wss=%d" % res["wss"]["one"],
                 "awake_ms_catchup100_wss=%d" % res["wss"]["catchup100"]]
    for s in res:
        sfx = "" if s == "ws" else "_wss"
        keys += ["awake_proc_ms_one%s=%d" % (sfx, res[s]["one_proc"]),
                 "awake_proc_ms_catchup100%s=%d" % (sfx, res[s]["catchup100_proc"]),
                 "awake_ms_sampling%s=%d" % (sfx, res[s]["sampled"])]
    print(" ".join(keys))
    return 0
