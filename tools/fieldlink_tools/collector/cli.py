"""Run the fieldlink collector: a WebSocket server for devices (app protocol v1, docs/protocol.md)
that stores each reading once (SQLite, or PostgreSQL with --db postgresql://...) and acks only
what is durable, plus a live dashboard.

Devices connect to ws://HOST:PORT/ws (wss:// with --cert/--key) with
`Authorization: Bearer TOKEN` and `X-Fieldlink-Device: ID`; unknown devices get 401, disabled
ones 403. The dashboard is at http://HOST:PORT/: it asks for the viewer (or admin) token and
trades it for a session cookie; /live, /api/* need the viewer token (Bearer or that cookie),
/admin the admin token. Failed tokens are limited per source address (429). Secrets come from
files or the environment, never the command line: --devices FILE, --viewer-token-file FILE or
$FIELDLINK_VIEWER_TOKEN, --admin-token-file FILE or $FIELDLINK_ADMIN_TOKEN (16+ characters).
See docs/collector.md.
"""
import argparse
import asyncio
import json
import logging
import os
import signal
import ssl
import sys

from .auth import MIN_TOKEN, Tokens
from .bus import PgBus
from .dburl import is_postgres, open_store, redact
from .limits import MAX_PENDING_PER_SOURCE
from .metrics import keep_gc_off_the_loop
from .server import (DEFAULT_MAX_ADMINS, DEFAULT_MAX_BATCH, DEFAULT_MAX_DEVICES,
                     DEFAULT_MAX_MESSAGE, DEFAULT_MAX_VIEWERS, Collector, Devices)
from .store import DEFAULT_KEEP_HEALTH, StoreError


def add_arguments(p):
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8765,
                   help="TCP port (default 8765; 0 picks a free one, printed on start)")
    p.add_argument("--db", default="var/collector.db",
                   help="SQLite database file, created if missing (default var/collector.db), "
                        "or a PostgreSQL URL postgresql://USER@HOST:PORT/DBNAME (no password "
                        "in it: see --db-password-file)")
    p.add_argument("--db-password-file", metavar="FILE",
                   help="PostgreSQL password, read from FILE (its first line); libpq's "
                        "PGPASSFILE (~/.pgpass) and PGPASSWORD work too")
    p.add_argument("--devices", metavar="FILE",
                   help='JSON file of allowed devices: {"ID": "TOKEN", '
                        '"ID2": {"token": "TOKEN", "disabled": true}}')
    p.add_argument("--device", metavar="ID=TOKEN", action="append", default=[],
                   help="refused: a token on the command line is readable by every local "
                        "user; put it in the --devices file")
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
                   help="full (default): every commit is on disk before its ack (SQLite "
                        "synchronous=FULL, PostgreSQL synchronous_commit=on); normal: SQLite "
                        "survives a crash but not a power cut, PostgreSQL may lose the last "
                        "commits of a server crash (synchronous_commit=off)")
    p.add_argument("--admin-token", metavar="TOKEN",
                   help="refused: use --admin-token-file or $FIELDLINK_ADMIN_TOKEN")
    p.add_argument("--admin-token-file", metavar="FILE",
                   help="the admin token (16+ characters): /admin (commands) and everything "
                        "a viewer may (default: $FIELDLINK_ADMIN_TOKEN; neither = no admin)")
    p.add_argument("--viewer-token-file", metavar="FILE",
                   help="the viewer token (16+ characters): the dashboard's data, /live, "
                        "/api/* (default: $FIELDLINK_VIEWER_TOKEN; neither = only the admin "
                        "token sees them)")
    p.add_argument("--allowed-host", metavar="NAME", action="append", default=[],
                   help="a name browsers may use for this server (Host header; repeatable). "
                        "localhost, IP addresses and --host are always allowed; others get "
                        "421 (DNS rebinding)")
    p.add_argument("--max-viewers", type=int, default=DEFAULT_MAX_VIEWERS, metavar="N",
                   help="most /live connections at once; more get 503 (default %(default)s)")
    p.add_argument("--max-admins", type=int, default=DEFAULT_MAX_ADMINS, metavar="N",
                   help="most /admin connections at once; more get 503 (default %(default)s)")
    p.add_argument("--max-handshakes-per-source", type=int, default=MAX_PENDING_PER_SOURCE,
                   metavar="N", help="connections from one address still in their opening "
                   "handshake; more are dropped (default %(default)s; raise it for many "
                   "devices behind one NAT)")
    p.add_argument("--keep-health", type=int, default=DEFAULT_KEEP_HEALTH, metavar="N",
                   help="health messages kept per device, the newest N (default %(default)s, "
                        "a week at one a minute; 0 keeps all); readings and gaps are all kept")
    p.add_argument("--drain-seconds", type=float, default=0, metavar="S",
                   help="on SIGTERM, answer /healthz with 503 and refuse new devices for S "
                        "seconds (so a load balancer's health check takes this collector "
                        "out), then close every device with 1001 (default 0; behind HAProxy "
                        "2-3 check intervals, docs/collector.md)")
    p.add_argument("--print-readings", action="store_true",
                   help="print one line per newly stored reading: DEV #SEQ NAME = VALUE UNIT")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug details")


def load_devices(args):
    return Devices.load(args.devices) if args.devices else Devices()


def load_token(path, env):
    """A token from a file (first line, surrounding whitespace dropped) or the environment."""
    if path:
        with open(path) as f:
            token = f.readline().strip()
        if not token:
            raise ValueError("%s is empty" % path)
        return token
    return os.environ.get(env) or None


def run(args):
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if not args.verbose:
        logging.getLogger("fieldlink.collector.ws").setLevel(logging.WARNING)
    for old, new in (("device", "the --devices FILE"),
                     ("admin_token", "--admin-token-file FILE or $FIELDLINK_ADMIN_TOKEN")):
        if getattr(args, old):
            print("fieldlink server: --%s is refused (a secret on the command line is readable "
                  "by every local user); use %s" % (old.replace("_", "-"), new), file=sys.stderr)
            return 2
    try:
        args.viewer_token = load_token(args.viewer_token_file, "FIELDLINK_VIEWER_TOKEN")
        args.admin_token = load_token(args.admin_token_file, "FIELDLINK_ADMIN_TOKEN")
        Tokens(viewer=args.viewer_token, admin=args.admin_token)   # strong enough, distinct
    except OSError as e:
        print("fieldlink server: token file %s: cannot read it (%s)" % (e.filename, e.strerror),
              file=sys.stderr)
        return 2
    except ValueError as e:
        print("fieldlink server: %s" % e, file=sys.stderr)
        return 2
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
        print("fieldlink server: warning: no devices allowed (use --devices FILE)",
              file=sys.stderr)
    short = sorted(d for d, t in devices.tokens.items() if len(t) < MIN_TOKEN)
    if short:
        # A short token is guessed in seconds by anyone who can reach the port: refused on
        # any interface other than loopback (where only this machine's users can try).
        names = ", ".join(short[:5]) + (", ..." if len(short) > 5 else "")
        if not _loopback(args.host):
            print("fieldlink server: %d device token(s) shorter than %d characters (%s): "
                  "refused when listening on %s; give them longer ones (e.g. `python3 -c "
                  "'import secrets; print(secrets.token_urlsafe(24))'`)"
                  % (len(short), MIN_TOKEN, names, args.host), file=sys.stderr)
            return 2
        print("fieldlink server: warning: %d device token(s) shorter than %d characters (%s):"
              " accepted on loopback only; give them longer ones" % (len(short), MIN_TOKEN,
                                                                     names), file=sys.stderr)
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
    password = None
    if args.db_password_file:
        if not is_postgres(args.db):
            print("fieldlink server: --db-password-file is for a postgresql:// --db",
                  file=sys.stderr)
            return 2
        try:
            with open(args.db_password_file) as f:
                password = f.readline().rstrip("\r\n")
        except OSError as e:
            print("fieldlink server: --db-password-file %s: cannot read it (%s)"
                  % (args.db_password_file, e.strerror or e), file=sys.stderr)
            return 2
    try:
        if not is_postgres(args.db):
            os.makedirs(os.path.dirname(os.path.abspath(args.db)), exist_ok=True)
        store = open_store(args.db, synchronous=args.sync.upper(),
                           keep_health=args.keep_health, password=password)
    except ValueError as e:         # a refused URL; the message is redacted
        print("fieldlink server: --db %s" % e, file=sys.stderr)
        return 2
    except (OSError, StoreError) as e:
        print("fieldlink server: --db %s: %s" % (redact(args.db), e), file=sys.stderr)
        return 2
    logging.getLogger("fieldlink.collector").info("store: %s", redact(args.db))
    return asyncio.run(_main(args, devices, ctx, store, password))


async def _main(args, devices, ctx, store, password=None):
    printer = None
    if args.print_readings:
        def printer(line):
            print(line, flush=True)
    collector = Collector(
        store, devices, host=args.host, port=args.port, ssl_context=ctx,
        max_message=args.max_message, max_batch=args.max_batch, max_devices=args.max_devices,
        admin_token=args.admin_token, viewer_token=args.viewer_token,
        allowed_hosts=args.allowed_host, max_viewers=args.max_viewers,
        max_admins=args.max_admins,
        max_handshakes_per_source=args.max_handshakes_per_source, ping_interval=args.ping_interval or None,
        ping_timeout=args.ping_timeout or None, print_readings=printer,
        # on PostgreSQL other collectors may share the database: they talk through it
        bus=PgBus(args.db, password=password) if is_postgres(args.db) else None)
    stop = asyncio.Event()
    drain = []
    loop = asyncio.get_running_loop()

    def on_term():
        drain.append(True)
        stop.set()
    loop.add_signal_handler(signal.SIGTERM, on_term)
    loop.add_signal_handler(signal.SIGINT, stop.set)
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
        if drain:
            await collector.drain(args.drain_seconds)
        else:
            await collector.stop()
        store.close()
    print("fieldlink server: stopped", flush=True)
    return 0


def _loopback(host):
    """True when `host` (what --host names) only listens on this machine."""
    import ipaddress
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False   # a name: it may resolve to any interface
