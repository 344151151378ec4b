"""fieldlink demo (make demo): a local collector and one simulated board running the real
firmware; readings are printed as the collector stores them, until Ctrl-C."""
import os
import queue
from pathlib import Path

from . import paths, sim, upy
from .collector.process import CollectorProcess

DEV, TOKEN = "demo-1", "demo-token"


def add_arguments(p):
    p.add_argument("--interval", type=float, default=2.0,
                   help="sampling interval, seconds (default %(default)s)")
    p.add_argument("--board", default="virtual", help="board under boards/ (default virtual)")
    p.add_argument("--heapsize", default=sim.DEFAULT_HEAP,
                   help="board heap, -X heapsize (default %(default)s)")
    p.add_argument("--dir", default=str(paths.VAR / "demo"),
                   help="where the collector's database and the board's flash live "
                        "(default var/demo; kept between runs)")


def run(args):
    upy.find_micropython()   # before starting anything: a missing interpreter is one line
    work = Path(args.dir)
    os.makedirs(work, exist_ok=True)
    c = CollectorProcess(work / "collector.db", {DEV: TOKEN}, print_readings=True)
    c.start()
    print("fieldlink demo: collector at %s (dashboard %s, log in with the token in %s)"
          % (c.url, c.http_url, c.viewer_token_path), flush=True)
    cfg = sim.make_config(c.url, DEV, TOKEN, {"sample_interval_s": args.interval})
    b = sim.SimBoard(work / "flash", cfg, args.board, args.heapsize,
                     log_path=work / "board.log")
    b.start()
    print("fieldlink demo: board %s running the firmware (log %s); Ctrl-C to stop"
          % (DEV, b.log_path), flush=True)
    try:
        while True:
            try:
                line = c.lines.get(timeout=1)
            except queue.Empty:
                if not b.running:
                    print("fieldlink demo: the board stopped; log tail:\n" +
                          "\n".join(b.lines()[-20:]))
                    return 1
                continue
            print(line, flush=True)
    except KeyboardInterrupt:
        return 0
    finally:
        b.stop()
        c.stop()
