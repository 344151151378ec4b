"""`fieldlink bench TARGET`: benchmarks that print numbers (they never assert).

  fieldlink bench ws         the firmware's WebSocket client on the MicroPython unix port
                             against pre-built frames written straight to a socket
  fieldlink bench link       the link end to end on the virtual board (its own options)
  fieldlink bench heap       the board's heap per boot step and firmware module
  fieldlink bench march      the viper code compiled ahead of time vs on the board: heap
  fieldlink bench collector  the collector's ingest rate (its own options follow)
  fieldlink bench store      batches/s of the stores alone, SQLite and PostgreSQL
  fieldlink bench fleet      1k-10k lightweight devices against one collector on one core
  fieldlink bench ota        a firmware update over the link: time, bytes, peak heap
  fieldlink bench sleep      battery mode: awake ms per duty cycle, one reading / catching up 100

A target is either a function here taking the parsed args, or a module with main(argv) that
parses its own options (add one line to TARGETS).
"""
import argparse
import asyncio
import importlib
import json
import statistics
import sys
import threading

from . import paths, upy

# name -> (help, where): where is a local function name, or a module with main(argv)
TARGETS = {
    "ws": ("WebSocket client: msgs/s vs raw socket, echo RTT, heap bytes/msg", "bench_ws"),
    "link": ("link end to end: readings/s, restart/dead-link times, heap, smallest heapsize",
             "fieldlink_tools.bench_link"),
    "heap": ("where the board's heap goes: live heap per boot step and module",
             "fieldlink_tools.bench_heap"),
    "march": ("viper code compiled ahead of time (mpy-cross -march) vs at import: heap",
              "fieldlink_tools.bench_march"),
    "collector": ("collector ingest rate (options: see --help of the module)",
                  "fieldlink_tools.bench_collector"),
    "store": ("batches/s a store takes, SQLite and PostgreSQL, single and grouped",
              "fieldlink_tools.bench_store"),
    "control": ("an output change from the API to the stored report: push over WebSocket vs"
                " HTTP polling every 1 s / 5 s; idle bytes per hour", "fieldlink_tools.bench_control"),
    "fleet": ("collector on one core, N fleet devices on the other: batches/s, ack p50/p99,"
              " CPU, RSS", "fieldlink_tools.bench_fleet"),
    "ota": ("a whole-firmware update over ws:// and wss://: time, bytes, the board's peak heap",
            "fieldlink_tools.bench_ota"),
    "sleep": ("battery mode: awake ms per duty cycle (one reading, catching up 100), ws/wss",
              "fieldlink_tools.bench_sleep"),
}

BENCH_CLIENT = paths.TOOLS / "bench" / "ws_client.py"


def add_arguments(parser):
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, (help_, where) in TARGETS.items():
        if where != "bench_ws":
            # its own options pass through untouched ("+" so argparse claims none of them)
            p = sub.add_parser(name, help=help_, description=help_, prefix_chars="+",
                               add_help=False)
            p.add_argument("rest", nargs=argparse.REMAINDER, help="the target's own options")
            continue
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--messages", type=int, default=10000,
                       help="text messages of 100 bytes per throughput run (10000)")
        p.add_argument("--echo", type=int, default=500, help="echo round trips per run (500)")
        # 5, not 3: under load the send loop is bimodal, and a median of 3 could land on the
        # slow mode of one client only (docs/websocket.md, Performance)
        p.add_argument("--rounds", type=int, default=5,
                       help="runs of each measurement; medians are reported (5)")
        p.add_argument("--heapsize", default=upy.DEFAULT_HEAP,
                       help="MicroPython heap (-X heapsize), default %s" % upy.DEFAULT_HEAP)


def run(args):
    where = TARGETS[args.target][1]
    if where == "bench_ws":
        return bench_ws(args)
    return importlib.import_module(where).main(args.rest) or 0


# --- ws ------------------------------------------------------------------------------------
class _Server:
    """A `websockets` server in a background thread: /sink counts text messages and answers
    "DONE" with the count; /echo echoes every message."""

    def __init__(self):
        self.port = None
        self._ready = threading.Event()
        self._loop = None
        self._stop = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def __enter__(self):
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("bench server did not start")
        return self

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(10)

    def _main(self):
        asyncio.run(self._serve())

    async def _serve(self):
        from websockets.asyncio.server import serve

        async def handler(ws):
            if ws.request.path == "/echo":
                async for m in ws:
                    await ws.send(m)
                return
            n = 0
            async for m in ws:
                if m == "DONE":
                    await ws.send(str(n))
                    n = 0
                else:
                    n += 1

        self._loop = asyncio.get_running_loop()
        self._stop = self._loop.create_future()
        async with serve(handler, "127.0.0.1", 0, compression=None, max_size=2 ** 20,
                         ping_interval=None) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop


def _median(xs):
    return statistics.median(xs) if xs else float("nan")


def bench_ws(args):
    upy.find_micropython()
    with _Server() as srv:
        r = upy.run(script=BENCH_CLIENT, path=(paths.FIRMWARE,), heapsize=args.heapsize,
                    args=["127.0.0.1", srv.port, args.messages, args.echo, args.rounds],
                    timeout=600)
    rows = []
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            rows.append(json.loads(line))
    if r.returncode != 0 or not rows:
        sys.stderr.write(r.stdout[-3000:] + r.stderr[-3000:])
        print("bench ws: the MicroPython client failed (exit %d)" % r.returncode)
        return 1

    def pick(what, client, key):
        return [x[key] for x in rows if x["what"] == what and x["client"] == client]

    n = args.messages
    send = {c: _median(pick("sink", c, "send_us")) for c in ("raw", "fieldlink")}
    total = {c: _median(pick("sink", c, "total_us")) for c in ("raw", "fieldlink")}
    counts = {c: pick("sink", c, "count") for c in ("raw", "fieldlink")}
    echo = {c: _median(pick("echo", c, "median_us")) for c in ("raw", "fieldlink")}
    heap = pick("heap", "fieldlink", "bytes_per_msg")
    heap = heap[0] if heap else float("nan")
    rate = {c: n / (send[c] / 1e6) for c in send}
    rate_e2e = {c: n / (total[c] / 1e6) for c in total}
    ratio = rate["fieldlink"] / rate["raw"]
    echo_ratio = echo["fieldlink"] / echo["raw"]

    print("fieldlink bench ws: MicroPython unix port (%s), heap %s, %d text messages of 100 B,"
          " %d echoes, median of %d rounds" % (upy.find_micropython(), args.heapsize, n,
                                               args.echo, args.rounds))
    print("%-34s %14s %14s %8s" % ("", "fieldlink", "raw socket", "ratio"))
    print("%-34s %14.0f %14.0f %8.2f" % ("send loop, msgs/s", rate["fieldlink"], rate["raw"],
                                         ratio))
    print("%-34s %14.0f %14.0f %8.2f" % ("until the sink confirmed, msgs/s",
                                         rate_e2e["fieldlink"], rate_e2e["raw"],
                                         rate_e2e["fieldlink"] / rate_e2e["raw"]))
    print("%-34s %14.0f %14.0f %8.2f" % ("echo round trip median, us", echo["fieldlink"],
                                         echo["raw"], echo_ratio))
    print("%-34s %14.1f %14s" % ("heap bytes per message sent", heap, "-"))
    print("sink counted: fieldlink %s, raw %s (expected %d each)"
          % (counts["fieldlink"], counts["raw"], n))
    print("ratio_to_raw_socket=%.2f heap_bytes_per_msg=%.1f echo_ratio=%.2f"
          % (ratio, heap, echo_ratio))
    return 0
