"""Benchmark: readings per second the collector stores (and acks) for N fake devices, each
sending batches and waiting for the ack before the next (window = one batch), against a real
`fieldlink server` subprocess. Prints numbers; asserts nothing.

    python -m fieldlink_tools.bench_collector --devices 1 10 50 --readings 5000 --batch 20
"""
import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import connect

from .collector.process import CollectorProcess


def _batch(q0, n):
    return json.dumps({"t": "batch", "r": [
        {"q": q, "ts": None, "up": q * 100, "n": "env.temperature", "v": 20.0 + (q % 100) / 10,
         "u": "C"} for q in range(q0, q0 + n)]}, separators=(",", ":"))


async def _device(url, dev, token, total, batch):
    async with connect(url, subprotocols=["fieldlink.v1"], compression=None, additional_headers={
            "Authorization": "Bearer " + token, "X-Fieldlink-Device": dev}) as ws:
        await ws.send(json.dumps({"t": "hello", "v": 1, "dev": dev, "fw": "bench", "board": "b",
                                  "boot": 1, "next": 1, "first": 1, "held": 0, "dropped": 0,
                                  "synced": False}))
        json.loads(await ws.recv())
        q = 1
        while q <= total:
            n = min(batch, total - q + 1)
            await ws.send(_batch(q, n))
            m = json.loads(await ws.recv())
            assert m == {"t": "ack", "ack": q + n - 1}, m
            q += n


async def _run(url, tokens, total, batch):
    await asyncio.gather(*(_device(url, d, t, total, batch) for d, t in tokens.items()))


def bench(ndev, total, batch, sync, workdir):
    tokens = {"bench-%03d" % i: "t%d" % i for i in range(ndev)}
    db = Path(workdir) / ("bench-%d-%s.db" % (ndev, sync))
    with CollectorProcess(db, tokens, extra_args=["--sync", sync]) as c:
        t0 = time.perf_counter()
        asyncio.run(_run(c.url, tokens, total, batch))
        dt = time.perf_counter() - t0
        st = c.store()
        try:
            stored = sum(d["readings"] for d in st.devices())
        finally:
            st.close()
    return stored, dt


def main(argv=None):
    p = argparse.ArgumentParser(prog="fieldlink bench collector",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, nargs="+", default=[1, 10, 50],
                   help="device counts to run, one run each (1 10 50)")
    p.add_argument("--readings", type=int, default=3000, help="readings per device (3000)")
    p.add_argument("--batch", type=int, default=20, help="readings per batch (device default 20)")
    p.add_argument("--sync", nargs="+", default=["full", "normal"], choices=["full", "normal"],
                   help="SQLite synchronous modes to run (full normal)")
    args = p.parse_args(argv)
    print("collector benchmark: %d readings/device, batch %d, 1 batch in flight per device"
          % (args.readings, args.batch))
    print("%8s %7s %10s %8s %12s %12s" % ("devices", "sync", "stored", "secs", "readings/s",
                                          "batches/s"))
    with tempfile.TemporaryDirectory() as tmp:
        for sync in args.sync:
            for n in args.devices:
                stored, dt = bench(n, args.readings, args.batch, sync, tmp)
                assert stored == n * args.readings, (stored, n * args.readings)
                print("%8d %7s %10d %8.2f %12.0f %12.0f" % (
                    n, sync, stored, dt, stored / dt, stored / args.batch / dt), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
