"""A longer campaign for several collectors (the test suite runs a short one:
host_tests/integration/test_multi_collector.py): a temporary PostgreSQL, N collectors behind
HAProxy, a fleet of lightweight devices, and for --minutes a seeded sequence of faults (a
collector killed with -9 and restarted, a collector drained with SIGTERM and restarted,
PostgreSQL crashed and restarted); then every device's acked seqs are checked in the store:
stored once, or inside a declared gap. Prints counts; the last line is key=value.

    python -m fieldlink_tools.multi_soak --minutes 10 --devices 500 --collectors 2
"""
import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from .collector.dburl import open_store
from .collector.process import CollectorProcess
from .fleet import Fleet, make_tokens, raise_nofile
from .haproxy import HAProxyProcess
from .temp_postgres import TempPostgres


def check(store, fleet):
    """(stored, problems): every seq up to each device's ack stored once or in a gap."""
    stored, problems = 0, []
    for d in fleet.devices:
        eps = store.epochs(d.dev)
        off = eps[-1]["offset"] if eps else 0
        seqs = [r["dq"] for r in store.readings(d.dev) if r["epoch"] == d.epoch]
        if len(seqs) != len(set(seqs)):
            problems.append("%s: a seq stored twice" % d.dev)
        covered = set(seqs)
        for g in store.gaps(d.dev):
            covered.update(range(max(1, g["from"] - off), min(d.next, g["to"] - off + 1)))
        missing = [q for q in range(1, d.ack + 1) if q not in covered]
        if missing:
            problems.append("%s: acked but not stored: %s" % (d.dev, missing[:5]))
        stored += len(seqs)
    return stored, problems


async def campaign(cs, hp, pg, fleet, minutes, rng, log):
    loop = asyncio.get_running_loop()
    end = loop.time() + 60 * minutes
    faults = {"kill": 0, "drain": 0, "postgres": 0}
    while loop.time() < end:
        await asyncio.sleep(rng.uniform(5, 15))
        kind = rng.choice(["kill", "drain", "postgres"])
        faults[kind] += 1
        if kind == "postgres":
            log("fault: PostgreSQL crash and restart")
            # on this thread, not an executor's: the server dies with the thread that
            # started it (PR_SET_PDEATHSIG), and executor threads end with the loop
            pg.stop("immediate")
            await asyncio.sleep(rng.uniform(0.5, 3))
            pg.start()
        else:
            i = rng.randrange(len(cs))
            log("fault: collector %d %s" % (i + 1, "kill -9" if kind == "kill" else "drain"))
            await loop.run_in_executor(None, cs[i].kill if kind == "kill" else cs[i].stop)
            await asyncio.sleep(rng.uniform(0.5, 3))
            await loop.run_in_executor(None, cs[i].start)
        log("  %d of %d devices connected" % (fleet.connected(), len(fleet.devices)))
    return faults


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fieldlink_tools.multi_soak",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5)
    p.add_argument("--devices", type=int, default=200)
    p.add_argument("--collectors", type=int, default=2)
    p.add_argument("--rate", type=float, default=1.0, help="readings/s per device (1)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    raise_nofile(2 * args.devices + 1024)

    def log(msg):
        print("%s %s" % (time.strftime("%H:%M:%S"), msg), flush=True)

    tokens = make_tokens(args.devices, "soak")
    with tempfile.TemporaryDirectory() as tmp, TempPostgres() as pg:
        dsn = pg.dsn(pg.create_database("soak"))
        cs = []
        for i in range(args.collectors):
            c = CollectorProcess(dsn, tokens, workdir=tmp,
                                 log_path=Path(tmp) / ("collector%d.log" % i),
                                 extra_args=["--drain-seconds", "1", "--max-devices",
                                             str(args.devices + 100)])
            if cs:
                c.admin_token, c.viewer_token = cs[0].admin_token, cs[0].viewer_token
            cs.append(c.start())
        hp = HAProxyProcess(["127.0.0.1:%d" % c.port for c in cs], workdir=tmp).start()

        async def run():
            fleet = Fleet(hp.url, tokens, seed=args.seed, rate=args.rate, backoff_base=0.2,
                          backoff_cap=2.0, ramp=2.0).start()
            try:
                faults = await campaign(cs, hp, pg, fleet, args.minutes, rng, log)
                log("faults done; letting the devices catch up")
                await asyncio.sleep(10)
                return fleet, faults
            finally:
                await fleet.stop()

        try:
            fleet, faults = asyncio.run(run())
        finally:
            hp.stop()
            for c in cs:
                c.stop()
        st = open_store(dsn, readonly=True)
        try:
            stored, problems = check(st, fleet)
        finally:
            st.close()
    for line in problems[:20]:
        print("PROBLEM " + line)
    s = fleet.stats
    print("closes=%s refused=%s" % (s.closes, s.refused))
    print("devices=%d stored=%d faults_kill=%d faults_drain=%d faults_postgres=%d problems=%d"
          % (args.devices, stored, faults["kill"], faults["drain"], faults["postgres"],
             len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
