"""The power-cut campaign over firmware updates (docs/ota.md "Never bricked"): update after
update is pushed to a streaming virtual board and the board is killed (kill -9, a power cut)
at a random point of each, seeded; it starts again from the same flash. Every run must end
on a complete firmware that boots and streams: the update confirmed (it resumes after the
cut) or, never expected here, rolled back to the previous one; the files of the version
fw/current names (or of the package at the root) hash as their manifest says. At the end the
readings audit of the fault campaign (soak.final_audit): every seq stored once or declared.

    python -m fieldlink_tools.ota_campaign [--runs 50] [--seed 1515] [--tls]

(The test suite runs a dozen points: host_tests/integration/test_ota.py.)
"""
import argparse
import hashlib
import os
import random
import sys
import tempfile
import time

FINAL = ("confirmed", "refused", "rolled_back")


class RunFailed(AssertionError):
    pass


def _state(collector, dev, oid):
    st = collector.store()
    try:
        rows = [r for r in st.ota_history(dev) if r["offer"] == oid]
    finally:
        st.close()
    return rows[-1] if rows else None


def wait_final(collector, dev, oid, timeout):
    deadline = time.monotonic() + timeout
    while True:
        r = _state(collector, dev, oid)
        if r is not None and r["state"] in FINAL:
            return r
        if time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def check_complete(flash, manifests):
    """The firmware boot.py would pick is complete: (its version, None) or (version, why)."""
    try:
        with open(os.path.join(flash, "fw", "trial")) as f:
            t = f.readline().split()
    except OSError:
        t = []
    if t:
        return t[0], "still on trial"
    try:
        with open(os.path.join(flash, "fw", "current")) as f:
            cur = f.readline().strip()
    except OSError:
        cur = ""
    if not cur:
        return "root", None if os.path.isfile(os.path.join(flash, "fieldlink", "app.mpy")) \
            else "no package at the root"
    man = manifests.get(cur)
    if man is None:
        return cur, "fw/current names a version never offered"
    for f in man["files"]:
        p = os.path.join(flash, "fw", cur, f["path"])
        try:
            with open(p, "rb") as fh:
                if hashlib.sha256(fh.read()).hexdigest() != f["sha256"]:
                    return cur, "%s differs" % f["path"]
        except OSError:
            return cur, "%s missing" % f["path"]
    return cur, None


def stored(collector, dev):
    st = collector.store()
    try:
        return len(st.readings(dev))
    finally:
        st.close()


def run(collector, board, files, key, runs, seed, dev="dev-1", ca=None, say=print,
        cut_window_s=None):
    """`runs` updates, each cut by a power cut at a seeded random point; raises RunFailed on
    the first run that does not end on a complete firmware that streams. Returns the list of
    (run, version, cut after s, final state)."""
    from . import ota as tool
    rnd = random.Random(seed)
    manifests = {}
    out = []
    window = cut_window_s
    for k in range(runs):
        ver = "ota-%d-%d" % (seed, k)
        man = tool.manifest(files, ver, key)
        manifests[ver] = man
        admin = tool.Admin(collector.http_url, collector.admin_token, ca=ca)
        try:
            t0 = time.monotonic()
            tool.push(admin, files, man, [dev])
        finally:
            admin.close()
        if window is None:
            # the first update runs uncut: how long one takes sets the window cuts fall in
            r = wait_final(collector, dev, man["id"], 180)
            window = (time.monotonic() - t0) * 1.2
            cut = at = None
        else:
            cut = rnd.uniform(0, window)
            time.sleep(cut)        # the cut's random point, not a wait for a condition
            at = _state(collector, dev, man["id"])
            board.power_cut()
            board.start()
            r = wait_final(collector, dev, man["id"], 180)
        if r is None or r["state"] != "confirmed":
            raise RunFailed("run %d (%s, cut at %s s): %r; board log tail:\n%s" % (
                k, ver, cut, r, "\n".join(board.lines()[-40:])))
        n = stored(collector, dev)
        collector.wait_seqs(dev, n + 5, timeout=90)   # boots and streams
        cur, why = check_complete(board.flash, manifests)
        if why:
            raise RunFailed("run %d: firmware %s incomplete: %s" % (k, cur, why))
        phase = at["state"] if at else "before the offer"
        out.append((k, ver, cut, r["state"], phase))
        say("run %d: %s cut at %s s (%s) -> %s, running %s" % (
            k, ver, "-" if cut is None else "%.2f" % cut, phase if cut is not None else "-",
            r["state"], cur))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--seed", type=int, default=1515)
    p.add_argument("--tls", action="store_true", help="over wss://")
    args = p.parse_args(argv)
    from . import ota as tool
    from .collector.process import CollectorProcess
    from .faultproxy import FaultProxy
    from .sim import SimBoard, make_config
    from .soak import TLSFiles, final_audit
    key = "campaign-ota-key-0123456789"
    with tempfile.TemporaryDirectory(prefix="fieldlink-ota-") as tmp:
        kw = {}
        tls = None
        if args.tls:
            tls = TLSFiles(os.path.join(tmp, "tls"))
            kw = {"cert": tls.cert, "key": tls.key}
        c = CollectorProcess(os.path.join(tmp, "c.db"), {"dev-1": "tok-1"},
                             workdir=tmp, **kw).start()
        fp = FaultProxy("127.0.0.1", c.port).start()
        flash = os.path.join(tmp, "flash")
        os.makedirs(flash)
        sets = {"sample_interval_s": 0.2, "ping_interval_s": 1, "ping_timeout_s": 1,
                "backoff_base_s": 0.2, "backoff_max_s": 1, "connect_timeout_s": 3,
                "wdt_s": 0, "ota_key": key}
        if tls:
            import shutil
            shutil.copyfile(tls.ca, os.path.join(flash, "ca.pem"))
            sets["ca_file"] = "ca.pem"
        cfg = make_config("%s://127.0.0.1:%d/ws" % ("wss" if tls else "ws", fp.port),
                          "dev-1", "tok-1", sets)
        b = SimBoard(flash, cfg, board_data={
            "name": "virtual", "chip": "unix", "buses": {},
            "sensors": [{"name": "sim", "driver": "simulated", "seed": 7}]},
            log_path=os.path.join(tmp, "board.log")).start()
        try:
            c.wait_seqs("dev-1", 5, timeout=60)
            files = tool.build_bundle(version="x")[1]
            res = run(c, b, files, key.encode(), args.runs, args.seed,
                      ca=tls.ca if tls else None)
            a = final_audit(c, fp, {"dev-1": b}, timeout=60)["dev-1"]
            print("audit: %r" % (a,))
            cuts = sum(1 for r in res if r[2] is not None)
            phases = {}
            for r in res[1:]:
                phases[r[4]] = phases.get(r[4], 0) + 1
            print("cuts by the last state the collector had recorded: %s" % ", ".join(
                "%s %d" % kv for kv in sorted(phases.items())))
            print("ota_campaign_runs=%d ota_campaign_cuts=%d audit_ok=%d"
                  % (len(res), cuts, int(a.ok)))
            return 0 if a.ok else 1
        except RunFailed as e:
            print("FAILED: %s" % e)
            return 1
        finally:
            b.stop()
            fp.stop()
            c.stop()


if __name__ == "__main__":
    sys.exit(main())
