"""Control (docs/protocol.md "Control"): desired and reported output state on the collector.

What arrives here is checked first (an admin's request and a device's `reported` alike):
output names, sizes, numbers JSON can carry. The server calls the hooks below; the HTTP
routes (`/api/devices/ID/outputs[/NAME]`, `/history`, `/health`) answer from here too.

A PUT with a JSON body: websockets' HTTP parser refuses any request with a body, so
`BodyConnection` takes the body off the stream before websockets sees the request (PUT only,
at most BODY_MAX bytes, within the open timeout every handshake has) and hands it to the
route as `conn.fl_body`.
"""
import json
import logging
import math
import re
import time
import urllib.parse

from . import auth as A
from . import messages as M
from .limits import BoundedConnection

log = logging.getLogger("fieldlink.collector")

OUTPUT = M.OUTPUT
VALUE_MAX = M.OUTPUT_VALUE_MAX
RULE_KEYS = {"n", "above", "below", "when_above", "when_below", "enabled"}
BODY_MAX = 4096           # bytes of a PUT body
HEAD_MAX = 16 * 1024      # bytes of request head looked through for a body
RANGES = {"hour": 3600, "day": 86400, "week": 7 * 86400}
BUCKETS = 240             # per chart: a week is 42-minute buckets
HEALTH_CHART = ("heap_free", "rssi", "reconnects")


class Invalid(ValueError):
    """What a request or a message holds is refused; the text says why."""


def _num(x, what):
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise Invalid("%s: expected a number" % what)
    if isinstance(x, float) and not math.isfinite(x):
        raise Invalid("%s: not a finite number" % what)
    if abs(x) > VALUE_MAX:
        raise Invalid("%s: out of range (|v| <= %g)" % (what, VALUE_MAX))
    return x


def check_rule(rule):
    if rule is None:
        return None
    if not isinstance(rule, dict):
        raise Invalid("rule: expected an object")
    extra = set(rule) - RULE_KEYS
    if extra:
        raise Invalid("rule: unknown field %s" % sorted(extra)[0][:32])
    missing = RULE_KEYS - set(rule)
    if missing:
        raise Invalid("rule: missing %s" % ", ".join(sorted(missing)))
    n = rule["n"]
    if not isinstance(n, str) or not M.NAME.match(n):
        raise Invalid("rule.n: a reading name of 1-64 chars of [A-Za-z0-9_.:/-]")
    out = {"n": n}
    for k in ("above", "below", "when_above", "when_below"):
        out[k] = _num(rule[k], "rule." + k)
    if out["above"] < out["below"]:
        raise Invalid("rule: above must be >= below (the band between them keeps the output)")
    if not isinstance(rule["enabled"], bool):
        raise Invalid("rule.enabled: expected true or false")
    out["enabled"] = rule["enabled"]
    return out


def check_change(body):
    """A set request's body -> the change for Store.set_desired ({"v"} and/or {"rule"})."""
    if not isinstance(body, dict):
        raise Invalid("expected a JSON object {\"v\": ...} or {\"rule\": {...}}")
    extra = set(body) - {"v", "rule"}
    if extra:
        raise Invalid("unknown field %s" % sorted(extra)[0][:32])
    if not body:
        raise Invalid("expected \"v\" or \"rule\"")
    change = {}
    if "v" in body:
        change["v"] = _num(body["v"], "v")
    if "rule" in body:
        change["rule"] = check_rule(body["rule"])
    return change


def check_output(name):
    if not isinstance(name, str) or not OUTPUT.match(name):
        raise Invalid("output name: 1-32 chars of [A-Za-z0-9_.-]")
    return name


def wire(record):
    """A stored desired record as the device gets it: ver, v, rule."""
    out = {"ver": record["ver"], "v": record["v"]}
    if record.get("rule") is not None:
        out["rule"] = record["rule"]
    return out


def desired_message(records, full):
    return M.dumps({"t": "desired", "out": {name: wire(r) for name, r in records.items()},
                    "full": full})


# -- the hooks the server calls ----------------------------------------------------------

async def after_welcome(collector, s):
    """The whole desired state, on every connection right after `welcome`."""
    records = await collector._db(collector.store.desired, s.dev)
    await s.ws.send(desired_message(records, True))


async def deliver(collector, dev, records):
    """Send changed desired records to the device's live session, if it has one past
    `welcome` (otherwise it gets them with the full state when it comes back). The one door
    a change takes to a device: a collector bus can route it to whichever collector holds
    the device. True when sent."""
    s = collector._live.get(dev)
    if s is None or not getattr(s, "welcomed", False):
        return False
    try:
        await s.ws.send(desired_message(records, False))
        return True
    except Exception as e:      # the device went away: it gets the state after reconnecting
        log.info("%s: desired not sent now (%s); it is sent after the next welcome", dev,
                 type(e).__name__)
        return False


async def on_reported(collector, s, m):
    """A checked `reported` (messages.check): stored unless older than what is stored."""
    out = m["out"]
    kept = await collector.committer.one("record_reported", s.dev, out)
    if kept:
        collector._publish({"t": "reported", "dev": s.dev, "out": kept, "time": time.time()})


async def set_output(collector, dev, output, body, who):
    """Check, store (a new version and its audit row), publish, deliver. Returns the new
    record; Invalid for a bad request, KeyError for an unknown device."""
    check_output(output)
    change = check_change(body)
    if dev not in collector.devices.tokens:
        raise KeyError(dev)
    # the whole desired state goes to the device in one message after every welcome: its
    # size stays bounded (64 records of at most ~200 bytes, within the device's 16 KiB)
    have = await collector._db(collector.store.desired, dev)
    if output not in have and len(have) >= M.MAX_OUTPUTS:
        raise Invalid("this device has %d outputs set already (the limit)" % M.MAX_OUTPUTS)
    rec = await collector.committer.one("set_desired", dev, output, change, who[:100])
    log.info("%s: %s set to ver %d by %s", dev, output, rec["ver"], M.printable(who[:100]))
    collector._publish({"t": "desired", "dev": dev, "out": {output: rec},
                        "time": time.time()})
    await deliver(collector, dev, {output: rec})
    return rec


async def admin_set(collector, req, peer):
    """The /admin socket's {"t": "set", "dev", "out", "v"|"rule"}."""
    body = {k: req[k] for k in ("v", "rule") if k in req}
    try:
        rec = await set_output(collector, req.get("dev"), req.get("out"), body,
                               "admin socket %s" % peer)
    except Invalid as e:
        return {"ok": False, "error": str(e)}
    except KeyError:
        return {"ok": False, "error": "unknown device"}
    return {"ok": True, "desired": rec}


# -- HTTP ----------------------------------------------------------------------------------

_DEV_PATH = re.compile(r"^/api/devices/([A-Za-z0-9_.-]{1,32})/(outputs|history|health)"
                       r"(?:/([^/]{1,64}))?$")


def route(path):
    """(methods, role, kind) for a control path, or None."""
    m = _DEV_PATH.match(path)
    if m is None:
        return None
    if m.group(2) == "outputs":
        return ("PUT", A.ADMIN, "output_put") if m.group(3) else ("GET", A.VIEWER, "outputs")
    if m.group(3):
        return None
    return ("GET", A.VIEWER, m.group(2))


async def http(collector, conn, request, kind, path, body_fn, text_fn):
    """Answer a control route (its role already checked). body_fn(status, bytes, ctype) and
    text_fn(conn, status, text) make the responses."""
    m = _DEV_PATH.match(path)
    dev = m.group(1)

    def js(status, obj):
        return body_fn(status, json.dumps(obj, allow_nan=False).encode(), "application/json")

    known = dev in collector.devices.tokens
    if kind == "output_put":
        if not _bearer_used(request) and not _origin_matches(request):
            # a cookie rides along on any request the browser makes: a state change with it
            # must come from this server's own page
            return text_fn(conn, 403, "cross-origin request refused\n")
        err = getattr(conn, "fl_body_error", None)
        if err:
            return text_fn(conn, 400, err + "\n")
        try:
            body = json.loads((getattr(conn, "fl_body", None) or b"").decode("utf-8"),
                              parse_constant=M._reject_constant)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return text_fn(conn, 400, "the body must be JSON: {\"v\": ...} or {\"rule\": {...}}\n")
        role = collector.role_of(request)
        who = "%s %s via %s" % (role, _peer_of(conn),
                                "token" if _bearer_used(request) else "dashboard")
        try:
            rec = await set_output(collector, dev, urllib.parse.unquote(m.group(3)), body, who)
        except Invalid as e:
            return text_fn(conn, 400, "%s\n" % e)
        except KeyError:
            return text_fn(conn, 404, "unknown device\n")
        return js(200, rec)
    if not known:
        return text_fn(conn, 404, "unknown device\n")
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query)
    if kind == "outputs":
        try:
            n_audit = max(0, min(1000, int((q.get("audit") or ["0"])[0])))
        except ValueError:
            return text_fn(conn, 400, "audit: a number of changes\n")

        def read():
            return (collector.store.desired(dev), collector.store.reported(dev),
                    collector.store.audit(dev, n_audit) if n_audit else None)
        desired, reported, audit = await collector._db(read)
        pending = sorted(o for o, r in desired.items()
                         if r["ver"] > reported.get(o, {}).get("ver", 0))
        out = {"dev": dev, "desired": desired, "reported": reported, "pending": pending}
        if audit is not None:
            out["audit"] = audit
        return js(200, out)
    rng = (q.get("range") or ["hour"])[0]
    if rng not in RANGES:
        return text_fn(conn, 400, "range: hour, day or week\n")
    end = time.time()
    start = end - RANGES[rng]
    if kind == "history":
        name = (q.get("n") or [""])[0]
        if not M.NAME.match(name):
            return text_fn(conn, 400, "n: a reading name\n")
        rows = await collector._db(collector.store.history, dev, name, start, end, BUCKETS)
        return js(200, {"dev": dev, "n": name, "range": rng, "start": start, "end": end,
                        "width": (end - start) / BUCKETS, "buckets": rows})

    def read_health():
        return {k: collector.store.health_series(dev, k, start, end, BUCKETS)
                for k in HEALTH_CHART}
    series = await collector._db(read_health)
    return js(200, {"dev": dev, "range": rng, "start": start, "end": end,
                    "width": (end - start) / BUCKETS, "series": series})


def _bearer_used(request):
    return request.headers.get("Authorization", "")[:7].lower() == "bearer "


def _origin_matches(request):
    origin = request.headers.get("Origin")
    return origin is not None and origin.split("://", 1)[-1] == request.headers.get("Host", "")


def _peer_of(conn):
    return conn.remote_address[0] if conn.remote_address else "?"


class BodyConnection(BoundedConnection):
    """BoundedConnection that takes a PUT's body (Content-Length, at most BODY_MAX bytes) off
    the stream before websockets parses the request, which it would refuse for having one.
    Everything else passes through untouched; the open timeout bounds the wait for it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._fl_buf = bytearray()
        self._fl_through = False
        self.fl_body = None
        self.fl_body_error = None

    def data_received(self, data):
        if self._fl_through:
            return super().data_received(data)
        self._fl_buf += data
        buf = self._fl_buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > HEAD_MAX or not b"PUT ".startswith(bytes(buf[:4])):
                self._pass(bytes(buf))     # not a PUT (or too long): websockets judges it
            return
        head, rest = bytes(buf[:end + 4]), bytes(buf[end + 4:])
        if not head.startswith(b"PUT "):
            return self._pass(head + rest)
        lines = head[:-4].split(b"\r\n")
        keep, length, expect = [lines[0]], None, False
        for line in lines[1:]:
            name = line.split(b":", 1)[0].strip().lower()
            if name == b"content-length":
                value = line.split(b":", 1)[1].strip() if b":" in line else b""
                if length is not None or not value.isdigit():
                    self.fl_body_error = "a bad or repeated Content-Length"
                    length = 0
                else:
                    length = int(value)
                continue
            if name == b"transfer-encoding":
                self.fl_body_error = "send the body with a Content-Length, not chunked"
                return self._refuse()
            if name == b"expect":
                expect = b"100-continue" in line.lower()
                continue
            keep.append(line)
        length = length or 0
        if length > BODY_MAX:
            return self._refuse()
        if len(rest) < length:
            if expect and not getattr(self, "_fl_continued", False):
                self._fl_continued = True
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        self.fl_body = rest[:length]
        self._pass(b"\r\n".join(keep) + b"\r\n\r\n" + rest[length:])

    def _pass(self, data):
        self._fl_through = True
        self._fl_buf = None
        super().data_received(data)

    def _refuse(self):
        self._fl_through = True
        self._fl_buf = None
        msg = b"a body of at most %d bytes, with a Content-Length\n" % BODY_MAX
        self.transport.write(b"HTTP/1.1 413 Content Too Large\r\nConnection: close\r\n"
                             b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(msg), msg))
        self.transport.close()
