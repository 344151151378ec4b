"""Run the fieldlink collector: a WebSocket server for devices (app protocol v1, docs/protocol.md)
that stores each reading once in SQLite and acks only what is on disk, plus a live dashboard.

Devices connect to ws://HOST:PORT/ws (wss:// with --cert/--key) with
`Authorization: Bearer TOKEN` and `X-Fieldlink-Device: ID`; unknown devices get 401, disabled
ones 403. The dashboard is at http://HOST:PORT/ (its live feed /live is read-only and needs no
token: bind to 127.0.0.1 or a trusted network). See docs/collector.md.
"""
import argparse
import asyncio
import json
import logging
import os
import signal
import ssl
import sys

from .metrics import keep_gc_off_the_loop
from .server import DEFAULT_MAX_BATCH, DEFAULT_MAX_DEVICES, DEFAULT_MAX_MESSAGE, Collector, Devices
from .store import DEFAULT_KEEP_HEALTH, SQLiteStore, StoreError


def add_arguments(p):
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8765,
                   help="TCP port (default 8765; 0 picks a free one, printed on start)")
    p.add_argument("--db", default="var/collector.db",
                   help="SQLite database file, created if missing (default var/collector.db)")
    p.add_argument("--devices", metavar="FILE",
                   help='JSON file of allowed devices: {"ID": "TOKEN", '
                        '"ID2": {"token": "TOKEN", "disabled": true}}')
    p.add_argument("--device", metavar="ID=TOKEN", action="append", default=[],
                   help="allow one device (repeatable; adds to --devices)")
    p.add_argument("--cert", metavar="FILE", help="TLS certificate chain (PEM): serve wss://")
    p.add_argument("--key", metavar="FILE", help="TLS private key (PEM), with --cert")
    p.add_argument("--max-message", type=int, default=DEFAULT_MAX_MESSAGE, metavar="BYTES",
                   help="largest message accepted; bigger ones are closed with 1009 "
                        "(default %(default)s)")
    p.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, metavar="N",
                   help="most readings in one batch (default %(default)s)")
    p.add_argument("--max-devices", type=int, default=DEFAULT_MAX_DEVICES, metavar="N",
                   help="most devices connected at once; more get 503 (default %(default)s)")
    p.add_argument("--ping-interval", type=float, default=20, metavar="S",
                   help="WebSocket ping every S seconds (default 20; 0 disables)")
    p.add_argument("--ping-timeout", type=float, default=20, metavar="S",
                   help="close a connection whose pong is S seconds late (default 20)")
    p.add_argument("--sync", choices=["full", "normal"], default="full",
                   help="SQLite synchronous mode: full (default) fsyncs every commit before "
                        "the ack; normal survives a crash but not a power cut")
    p.add_argument("--admin-token", metavar="TOKEN", default=os.environ.get(
                   "FIELDLINK_ADMIN_TOKEN"),
                   help="enable /admin (send commands to devices) with this bearer token "
                        "(default: $FIELDLINK_ADMIN_TOKEN; unset = /admin disabled)")
    p.add_argument("--keep-health", type=int, default=DEFAULT_KEEP_HEALTH, metavar="N",
                   help="health messages kept per device, the newest N (default %(default)s, "
                        "a week at one a minute; 0 keeps all); readings and gaps are all kept")
    p.add_argument("--print-readings", action="store_true",
                   help="print one line per newly stored reading: DEV #SEQ NAME = VALUE UNIT")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug details")


def load_devices(args):
    tokens, disabled = {}, set()
    if args.devices:
        d = Devices.load(args.devices)
        tokens.update(d.tokens)
        disabled |= d.disabled
    for spec in args.device:
        dev, sep, token = spec.partition("=")
        if not sep or not dev or not token:
            raise SystemExit("fieldlink server: --device expects ID=TOKEN, got %r" % spec)
        tokens[dev] = token
    return Devices(tokens, disabled)


def run(args):
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if not args.verbose:
        logging.getLogger("fieldlink.collector.ws").setLevel(logging.WARNING)
    try:
        devices = load_devices(args)
    except OSError as e:
        print("fieldlink server: devices file %s: cannot read it (%s)"
              % (args.devices, e.strerror or e), file=sys.stderr)
        return 2
    except json.JSONDecodeError as e:   # a ValueError: before the generic one below
        print("fieldlink server: devices file %s: not valid JSON (%s)" % (args.devices, e),
              file=sys.stderr)
        return 2
    except ValueError as e:
        print("fieldlink server: %s" % e, file=sys.stderr)
        return 2
    if not devices.tokens:
        print("fieldlink server: warning: no devices allowed (use --devices or --device)",
              file=sys.stderr)
    ctx = None
    if args.cert or args.key:
        if not (args.cert and args.key):
            print("fieldlink server: --cert and --key go together", file=sys.stderr)
            return 2
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(args.cert, args.key)
        except (OSError, ssl.SSLError) as e:
            print("fieldlink server: cannot load --cert %s / --key %s: %s"
                  % (args.cert, args.key, e.strerror or e), file=sys.stderr)
            return 2
    if args.keep_health < 0:
        print("fieldlink server: --keep-health: 0 or more, got %d" % args.keep_health,
              file=sys.stderr)
        return 2
    try:
        os.makedirs(os.path.dirname(os.path.abspath(args.db)), exist_ok=True)
        store = SQLiteStore(args.db, synchronous=args.sync.upper(), keep_health=args.keep_health)
    except (OSError, StoreError) as e:
        print("fieldlink server: --db %s: %s" % (args.db, e), file=sys.stderr)
        return 2
    return asyncio.run(_main(args, devices, ctx, store))


async def _main(args, devices, ctx, store):
    printer = None
    if args.print_readings:
        def printer(line):
            print(line, flush=True)
    collector = Collector(
        store, devices, host=args.host, port=args.port, ssl_context=ctx,
        max_message=args.max_message, max_batch=args.max_batch, max_devices=args.max_devices,
        admin_token=args.admin_token, ping_interval=args.ping_interval or None,
        ping_timeout=args.ping_timeout or None, print_readings=printer)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await collector.start()
    except OSError as e:
        print("fieldlink server: cannot listen on %s:%s: %s" % (args.host, args.port, e),
              file=sys.stderr)
        store.close()
        return 1
    # This process is the collector's own: its GC passes are measured and kept small
    # (metrics.keep_gc_off_the_loop), which a library must not do to its host process.
    collector.metrics.watch_gc()
    gc_task = asyncio.ensure_future(keep_gc_off_the_loop())
    # Tests and `fieldlink demo` parse this first line for the URL.
    print("fieldlink server: listening on %s" % collector.url, flush=True)
    print("fieldlink server: dashboard at %s" % collector.http_url, flush=True)
    try:
        await stop.wait()
    finally:
        # Clean shutdown: every device gets close 1001 (going away) and reconnects later.
        gc_task.cancel()
        await collector.stop()
        store.close()
    print("fieldlink server: stopped", flush=True)
    return 0
