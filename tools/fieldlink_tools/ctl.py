"""Set an output of a device: its desired state on the collector, which sends it to the device
now or when it next connects (docs/collector.md "Control").

    fieldlink ctl dev-1 relay 1 --server http://127.0.0.1:8080/
    fieldlink ctl dev-1 fan 0 --rule '{"n": "env.temperature", "above": 26, "below": 24,
        "when_above": 1, "when_below": 0, "enabled": true}' --server URL
    fieldlink ctl dev-1 relay --show --server URL

The admin token comes from --admin-token-file FILE or $FIELDLINK_ADMIN_TOKEN, never the
command line. Prints the new desired record (JSON); exit status 0, or 1 with the server's
reason (400 a bad value, 401/403 the token, 404 an unknown device).
"""
import json
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request

from .collector.cli import load_token


def add_arguments(p):
    p.add_argument("device")
    p.add_argument("output")
    p.add_argument("value", nargs="?", help="a number: 0/1 (or on/off) digital, 0.0-1.0 PWM duty, an angle")
    p.add_argument("--rule", metavar="JSON", help="the output's local rule (JSON object), or"
                   " 'none' to remove it")
    p.add_argument("--show", action="store_true",
                   help="print the device's desired and reported outputs instead")
    p.add_argument("--server", required=True, help="the collector's http(s):// URL")
    p.add_argument("--admin-token-file", metavar="FILE",
                   help="the admin token (default: $FIELDLINK_ADMIN_TOKEN)")
    p.add_argument("--cafile", help="CA to trust for an https:// collector")
    p.add_argument("--timeout", type=float, default=10.0)


_WORDS = {"on": 1, "off": 0, "true": 1, "false": 0}


def _number(text):
    if text.lower() in _WORDS:
        return _WORDS[text.lower()]
    try:
        return int(text)
    except ValueError:
        return float(text)


def request(server, method, path, token, body=None, cafile=None, timeout=10.0):
    """(status, parsed JSON or text) of one request to the collector."""
    url = urllib.parse.urljoin(server if server.endswith("/") else server + "/", path.lstrip("/"))
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": "Bearer " + token, "Content-Type": "application/json"})
    ctx = ssl.create_default_context(cafile=cafile) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace").strip()


def run(args):
    try:
        token = load_token(args.admin_token_file, "FIELDLINK_ADMIN_TOKEN")
    except (OSError, ValueError) as e:
        print("fieldlink ctl: admin token: %s" % e, file=sys.stderr)
        return 2
    if not token:
        print("fieldlink ctl: no admin token: --admin-token-file FILE or"
              " $FIELDLINK_ADMIN_TOKEN", file=sys.stderr)
        return 2
    dev = urllib.parse.quote(args.device, safe="")
    if args.show:
        status, got = request(args.server, "GET", "/api/devices/%s/outputs" % dev, token,
                              cafile=args.cafile, timeout=args.timeout)
    else:
        body = {}
        try:
            if args.value is not None:
                body["v"] = _number(args.value)
            if args.rule is not None:
                body["rule"] = None if args.rule.lower() == "none" else json.loads(args.rule)
        except ValueError as e:
            print("fieldlink ctl: %s" % e, file=sys.stderr)
            return 2
        if not body:
            print("fieldlink ctl: give a VALUE, --rule or --show", file=sys.stderr)
            return 2
        status, got = request(args.server, "PUT", "/api/devices/%s/outputs/%s" % (
            dev, urllib.parse.quote(args.output, safe="")), token, body, args.cafile,
            args.timeout)
    if status != 200:
        print("fieldlink ctl: %d %s" % (status, got), file=sys.stderr)
        return 1
    print(json.dumps(got, indent=1, sort_keys=True))
    return 0
