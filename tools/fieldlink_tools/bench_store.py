"""Benchmark: batches per second a store takes (SQLite, and PostgreSQL on a throwaway local
server or the database --db names), one batch per transaction and in `apply()` groups. No
network, no server: the store alone, durable commits (SQLite FULL, synchronous_commit on).
Prints numbers; asserts nothing. The last line is key=value pairs.

    fieldlink bench store --devices 200 --batches 2000 --readings 1 --group 50
"""
import argparse
import os
import tempfile
import time

from .collector.dburl import open_store


def _ops(devices, batches, per):
    nxt, ops = {}, []
    for i in range(batches):
        dev = "dev-%d" % (i % devices)
        q = nxt.get(dev, 0)
        nxt[dev] = q + per
        ops.append(("add_readings", (dev, [
            {"q": s, "ts": None, "up": s * 100, "n": "env.temperature", "v": 20.0 + s % 100 / 10,
             "u": "C"} for s in range(q + 1, q + per + 1)])))
    return ops


def _rate(store, ops, group):
    t = time.perf_counter()
    if group <= 1:
        for _, args in ops:
            store.add_readings(*args)
    else:
        for k in range(0, len(ops), group):
            for out in store.apply(ops[k:k + group]):
                if isinstance(out, BaseException):
                    raise out
    return len(ops) / (time.perf_counter() - t)


def main(argv=None):
    p = argparse.ArgumentParser(prog="fieldlink bench store", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=200)
    p.add_argument("--batches", type=int, default=2000)
    p.add_argument("--readings", type=int, default=1, help="readings per batch (1)")
    p.add_argument("--group", type=int, default=50, help="batches per apply() group (50)")
    p.add_argument("--db", metavar="URL",
                   help="a PostgreSQL database to use (empty; default: a throwaway local "
                        "server, Debian's postgresql)")
    args = p.parse_args(argv)
    ops = _ops(args.devices, args.batches, args.readings)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        kinds = [("sqlite", os.path.join(tmp, "s%d.db"))]
        pg = None
        if args.db:
            kinds.append(("postgres", args.db))
        else:
            from .temp_postgres import PostgresUnavailable, TempPostgres
            try:
                pg = TempPostgres().start()
                kinds.append(("postgres", None))
            except PostgresUnavailable as e:
                print("postgres: skipped (%s)" % str(e).splitlines()[0])
        try:
            for kind, where in kinds:
                for group in (1, args.group):
                    if kind == "sqlite":
                        db = where % group
                    elif pg is not None:
                        db = pg.dsn(pg.create_database("bench_g%d" % group))
                    else:
                        db = where
                    s = open_store(db)
                    if kind == "postgres" and pg is None and group > 1:
                        # one database given: the second run writes other devices
                        ops_run = [(n, ("g-" + a[0],) + a[1:]) for n, a in ops]
                    else:
                        ops_run = ops
                    try:
                        if group > 1 and not hasattr(s, "apply"):
                            print("%s: no apply() (group commit) yet" % kind)
                            continue
                        rate = _rate(s, ops_run, group)
                    finally:
                        s.close()
                    key = "%s_%s" % (kind, "single" if group <= 1 else "group")
                    results[key] = rate
                    print("%-8s %-6s devices=%d batches=%d readings/batch=%d group=%d: "
                          "%.0f batches/s" % (kind, "single" if group <= 1 else "group",
                                              args.devices, args.batches, args.readings,
                                              max(group, 1), rate), flush=True)
        finally:
            if pg is not None:
                pg.remove()
    print(" ".join("%s_batches_per_s=%.0f" % kv for kv in results.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
