"""`fieldlink bench fleet`: a `fieldlink server` process pinned to one core, `fieldlink fleet`
devices on the other (this process), at several fleet sizes; prints devices, batches/s,
stored/s, ack p50/p99, the collector's CPU and RSS. Prints numbers; asserts nothing.

    fieldlink bench fleet                                  # 1k, 5k, 10k devices, 1 reading/10 s
    fieldlink bench fleet --devices 1000 --rate 5          # 5,000 batches/s
    fieldlink bench fleet --db postgresql --collectors 2   # a temporary PostgreSQL, HAProxy

With --db postgresql a throwaway PostgreSQL server is started (temp_postgres.py); with
--collectors N > 1 the collectors share it behind HAProxy (haproxy.py) and the figures are
their sums. Collectors are pinned to the first core, the devices to the second; PostgreSQL
and HAProxy are not pinned.

The last line is that of the last run:
`devices=N batches_per_s=B stored_per_s=S ack_p50_ms=A ack_p99_ms=P collector_cpu_pct=C`.
"""
import argparse
import asyncio
import os
import re
import resource
import tempfile
import time
import urllib.request
from pathlib import Path

from .collector.process import CollectorProcess
from .fleet import Fleet, make_tokens, raise_nofile


def _threads(pid):
    return [int(t) for t in os.listdir("/proc/%d/task" % pid)]


def pin(pid, cpu):
    """Every thread of `pid` to `cpu` (sched_setaffinity is per thread on Linux)."""
    for tid in _threads(pid):
        os.sched_setaffinity(tid, {cpu})


def cpu_seconds(pid):
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid):
    m = re.search(r"^VmRSS:\s+(\d+) kB", Path("/proc/%d/status" % pid).read_text(), re.M)
    return int(m.group(1)) / 1024


def metrics(c):
    req = urllib.request.Request(c.http_url + "metrics",
                                 headers={"Authorization": "Bearer " + c.admin_token})
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read().decode()
    out = {}
    for name in ("fieldlink_readings_total", "fieldlink_batches_total",
                 "fieldlink_store_group_ops_sum", "fieldlink_store_group_ops_count",
                 "fieldlink_loop_lag_seconds_sum", "fieldlink_loop_lag_seconds_count",
                 "fieldlink_store_commit_seconds_sum", "fieldlink_store_queue_wait_seconds_sum",
                 "fieldlink_store_queue_wait_seconds_count",
                 "fieldlink_devices_connected"):
        m = re.search(r"^%s (\S+)$" % name, text, re.M)
        out[name] = float(m.group(1)) if m else 0.0
    out["ack_buckets"] = [(float(le), float(n)) for le, n in re.findall(
        r'^fieldlink_ack_latency_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M)]
    return out


def bucket_quantile(b0, b1, q):
    """The upper bound (ms) of the histogram bucket holding quantile q of what was observed
    between two scrapes (cumulative buckets)."""
    d = [(le, n1 - n0) for (le, n1), (_, n0) in zip(b1, b0)]
    if not d or d[-1][1] <= 0:
        return float("nan")
    for le, n in d:
        if n >= q * d[-1][1]:
            return 1000 * le
    return float("inf")


def _summed(ms):
    """Several collectors' scrapes as one: counters and histograms added."""
    out = {k: sum(m[k] for m in ms) for k in ms[0] if k != "ack_buckets"}
    out["ack_buckets"] = [(le, sum(m["ack_buckets"][i][1] for m in ms))
                          for i, (le, _) in enumerate(ms[0]["ack_buckets"])]
    return out


def _scrape(cs):
    return _summed([metrics(c) for c in cs])


def _cpu(cs):
    return sum(cpu_seconds(c.proc.pid) for c in cs)


def _pg_wal(dsn):
    """(WAL position in bytes, readings stored, bytes of the readings table + its index)."""
    import psycopg
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as con:
        return con.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0'),"
                           " (SELECT COUNT(*) FROM readings),"
                           " pg_total_relation_size('readings')").fetchone()


async def _load(cs, url, n, rate, batch, window, warmup, seconds, ramp, pg_dsn=None):
    tokens = cs[0].devices
    fleet = Fleet(url, tokens, seed=1, rate=rate, batch=batch, window=window,
                  backoff_base=1.0, backoff_cap=10.0, ramp=ramp).start()
    loop = asyncio.get_running_loop()
    try:
        end = loop.time() + ramp + 120
        while fleet.connected() < n and loop.time() < end:
            await asyncio.sleep(0.5)
        connected = fleet.connected()
        await asyncio.sleep(warmup)
        s = fleet.stats
        s.latencies.clear()
        w0 = pg_dsn and await loop.run_in_executor(None, _pg_wal, pg_dsn)
        m0 = await loop.run_in_executor(None, _scrape, cs)
        cpu0, t0, b0 = _cpu(cs), time.monotonic(), s.batches
        own0 = _own_cpu()
        await asyncio.sleep(seconds)
        m1 = await loop.run_in_executor(None, _scrape, cs)
        w1 = pg_dsn and await loop.run_in_executor(None, _pg_wal, pg_dsn)
        cpu1, t1, b1 = _cpu(cs), time.monotonic(), s.batches
        own1 = _own_cpu()
        dt = t1 - t0
        groups = m1["fieldlink_store_group_ops_count"] - m0["fieldlink_store_group_ops_count"]
        lagn = m1["fieldlink_loop_lag_seconds_count"] - m0["fieldlink_loop_lag_seconds_count"]
        return {
            "devices": connected,
            "batches_per_s": (m1["fieldlink_batches_total"] - m0["fieldlink_batches_total"]) / dt,
            "sent_per_s": (b1 - b0) / dt,
            "stored_per_s": (m1["fieldlink_readings_total"] - m0["fieldlink_readings_total"]) / dt,
            "ack_p50_ms": s.latency_ms(0.5), "ack_p99_ms": s.latency_ms(0.99),
            "server_p99_ms": bucket_quantile(m0["ack_buckets"], m1["ack_buckets"], 0.99),
            "collector_cpu_pct": 100 * (cpu1 - cpu0) / dt,
            "rss_mb": sum(rss_mb(c.proc.pid) for c in cs),
            "fleet_cpu_pct": 100 * (own1 - own0) / dt,
            "server_p50_ms": bucket_quantile(m0["ack_buckets"], m1["ack_buckets"], 0.5),
            "commits_per_s": groups / dt,
            "ops_per_commit": (m1["fieldlink_store_group_ops_sum"]
                               - m0["fieldlink_store_group_ops_sum"]) / max(1, groups),
            "commit_ms": 1000 * (m1["fieldlink_store_commit_seconds_sum"]
                                 - m0["fieldlink_store_commit_seconds_sum"]) / max(1, groups),
            "wait_ms": 1000 * (m1["fieldlink_store_queue_wait_seconds_sum"]
                               - m0["fieldlink_store_queue_wait_seconds_sum"]) / max(
                1, m1["fieldlink_store_queue_wait_seconds_count"]
                - m0["fieldlink_store_queue_wait_seconds_count"]),
            "loop_lag_ms": 1000 * (m1["fieldlink_loop_lag_seconds_sum"]
                                   - m0["fieldlink_loop_lag_seconds_sum"]) / max(1, lagn),
            "closes": dict(s.closes), "refused": dict(s.refused),
            # PostgreSQL: WAL written per reading stored in the window, the table's bytes/row
            "wal_per_reading": (float(w1[0] - w0[0]) / max(1, w1[1] - w0[1])) if w0 else None,
            "wal_per_s": float(w1[0] - w0[0]) / dt if w0 else None,
            "table_per_row": (w1[2] / max(1, w1[1])) if w0 else None,
        }
    finally:
        await fleet.stop()


def _own_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def bench(n, rate, batch, window, sync, warmup, seconds, workdir, db="sqlite", collectors=1):
    tokens = make_tokens(n, "bench")
    pg_dsn = None
    raise_nofile(2 * n + 1024)         # the collectors inherit it
    pg = hp = None
    cs = []
    try:
        if db == "postgresql":
            from .temp_postgres import TempPostgres
            pg = TempPostgres().start()
            target = pg_dsn = pg.dsn(pg.create_database("fleet%d" % n))
        else:
            target = Path(workdir) / ("fleet-%d-%g.db" % (n, rate))
        for i in range(collectors):
            c = CollectorProcess(target, tokens, workdir=workdir,
                                 log_path=Path(workdir) / ("collector%d.log" % i),
                                 extra_args=["--sync", sync, "--max-devices", str(n + 100)])
            if cs:
                c.admin_token, c.viewer_token = cs[0].admin_token, cs[0].viewer_token
            cs.append(c.start())
        url = cs[0].url
        if collectors > 1:
            from .haproxy import HAProxyProcess
            hp = HAProxyProcess(["127.0.0.1:%d" % c.port for c in cs], workdir=workdir).start()
            for i in range(collectors):
                hp.wait_status("c%d" % (i + 1), "UP")
            url = hp.url
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2:
            for c in cs:
                pin(c.proc.pid, cpus[0])
            os.sched_setaffinity(0, {cpus[1]})
        try:
            return asyncio.run(_load(cs, url, n, rate, batch, window, warmup, seconds,
                                     ramp=max(1.0, n / 1000), pg_dsn=pg_dsn))
        finally:
            os.sched_setaffinity(0, set(cpus))
    finally:
        if hp is not None:
            hp.stop()
        for c in cs:
            c.stop()
        if pg is not None:
            pg.remove()


def main(argv=None):
    p = argparse.ArgumentParser(prog="fieldlink bench fleet",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, nargs="+", default=[1000, 5000, 10000],
                   help="fleet sizes, one run each (1000 5000 10000)")
    p.add_argument("--rate", type=float, default=0.1,
                   help="readings/s per device (0.1: one every 10 s)")
    p.add_argument("--batch", type=int, default=20, help="most readings per batch (20)")
    p.add_argument("--window", type=int, default=64, help="most readings unacked (64)")
    p.add_argument("--sync", choices=["full", "normal"], default="full",
                   help="the collector's SQLite synchronous mode (full)")
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite",
                   help="the store: a SQLite file, or a temporary PostgreSQL server (sqlite)")
    p.add_argument("--collectors", type=int, default=1,
                   help="collector processes; more than one: on PostgreSQL behind HAProxy (1)")
    p.add_argument("--warmup", type=float, default=15, help="s after all connected (15)")
    p.add_argument("--seconds", type=float, default=30, help="s measured (30)")
    args = p.parse_args(argv)
    if args.collectors > 1 and args.db != "postgresql":
        p.error("--collectors %d needs --db postgresql (SQLite is one machine's store)"
                % args.collectors)
    load = os.getloadavg()
    print("fleet benchmark: %d collector(s) on %s, on one core, devices on the other; %g"
          " readings/s per device, batch <= %d, window %d, sync %s; load average before %.2f"
          % (args.collectors, args.db, args.rate, args.batch, args.window, args.sync,
             load[0]), flush=True)
    print("%7s %9s %9s %9s %8s %8s %6s %7s %8s %7s %9s %7s %7s" % (
        "devices", "batches/s", "sent/s", "stored/s", "p50 ms", "p99 ms", "cpu %", "rss MB",
        "commit/s", "ops/cmt", "commit ms", "wait ms", "lag ms"), flush=True)
    print("  (p50/p99: the fleet's, batch sent -> ack received; srv p99: the collector's"
          " ack-latency histogram, bucket upper bound)", flush=True)
    last = None
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.devices:
            r = bench(n, args.rate, args.batch, args.window, args.sync, args.warmup,
                      args.seconds, tmp, db=args.db, collectors=args.collectors)
            print("%7d %9.0f %9.0f %9.0f %8.1f %8.1f %6.0f %7.0f %8.0f %7.1f %9.1f %7.1f %7.1f"
                  % (r["devices"], r["batches_per_s"], r["sent_per_s"], r["stored_per_s"],
                     r["ack_p50_ms"], r["ack_p99_ms"], r["collector_cpu_pct"], r["rss_mb"],
                     r["commits_per_s"], r["ops_per_commit"], r["commit_ms"], r["wait_ms"],
                     r["loop_lag_ms"]), flush=True)
            print("  srv p50 <= %.0f ms, srv p99 <= %.0f ms; the fleet's own CPU %.0f %%"
                  % (r["server_p50_ms"], r["server_p99_ms"], r["fleet_cpu_pct"]), flush=True)
            if r["wal_per_reading"] is not None:
                print("  PostgreSQL: WAL %.0f bytes per reading stored (%.2f MB/s), readings"
                      " table with its index %.0f bytes per row"
                      % (r["wal_per_reading"], r["wal_per_s"] / 1e6, r["table_per_row"]),
                      flush=True)
            if r["closes"] or r["refused"]:
                print("  closes %s refused %s" % (r["closes"], r["refused"]), flush=True)
            last = r
    print("load average after %.2f" % os.getloadavg()[0])
    print("devices=%d batches_per_s=%.0f stored_per_s=%.0f ack_p50_ms=%.1f ack_p99_ms=%.1f"
          " collector_cpu_pct=%.0f" % (last["devices"], last["batches_per_s"],
                                       last["stored_per_s"], last["ack_p50_ms"],
                                       last["ack_p99_ms"], last["collector_cpu_pct"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
