"""Parsing and checking of app-protocol v1 messages from devices (docs/protocol.md), without I/O.

`parse(text)` returns the message as a dict or raises `ProtocolError` carrying the WebSocket
close code the server must use and the `error` code/message it sends first.
"""
import json
import math
import re

VERSION = 1
SUBPROTOCOL = "fieldlink.v1"
DEVICE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
EPOCH = re.compile(r"^[0-9a-f]{1,16}$")   # hello.epoch: the device's persistent-state id
NAME_MAX = 64             # a reading's `n`
UNIT_MAX = 16             # a reading's `u`
E_MAX = 64                # a reading's `e` (why it is missing) is stored cut to this length
INT_MAX = 2 ** 63 - 1     # JSON integers are unbounded; SQLite's INTEGER is 64-bit signed
# Seqs (q, gap from/to, hello first) are below 2**53, hello.next at most 2**53: the store adds an
# epoch offset to each, which must not overflow 64 bits, and JavaScript (the dashboard) numbers
# are exact only up to 2**53.
SEQ_LIMIT = 2 ** 53
NAME = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")   # a reading's `n`: no spaces, no control chars
TS_MAX = 2 ** 32          # a reading's `ts`: Unix seconds in [0, 2**32), up to the year 2106
MAX_DEPTH = 8             # nesting of objects and lists in a message (a batch is 3 deep)
OUTPUT = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")   # an output's name (board file)
MAX_OUTPUTS = 64          # outputs in one `reported`
ERR_MAX = 200             # a reported `err` is kept cut to this length
OUTPUT_VALUE_MAX = 1e6    # |v| of an output: a duty, a level or an angle
REPORTED_WHY = ("command", "rule", "failsafe", "boot", "refused")
EXTRAS_MAX = 2048         # bytes of JSON stored of a hello or health (beyond: known fields only)

# Close codes (docs/protocol.md "Errors and close codes"; RFC 6455 §7.4.1).
NORMAL = 1000
GOING_AWAY = 1001
UNSUPPORTED_DATA = 1003   # binary message
INVALID_DATA = 1007       # malformed JSON / ill-typed message
POLICY = 1008             # protocol order violated
TOO_BIG = 1009
INTERNAL = 1011
SUPERSEDED = 4000


class ProtocolError(Exception):
    def __init__(self, close_code, code, msg):
        super().__init__(msg)
        self.close_code = close_code
        self.code = code
        self.msg = msg


def _bad(msg):
    return ProtocolError(INVALID_DATA, "bad_message", msg)


def _is_int(x):
    """An integer the store can hold (a bigger one made sqlite3 raise OverflowError)."""
    return isinstance(x, int) and not isinstance(x, bool) and -INT_MAX - 1 <= x <= INT_MAX


def _is_num(x):
    return _is_int(x) or (isinstance(x, float) and math.isfinite(x))


def _is_text(x):
    """A string that can be stored and shown on one line: no lone surrogates (not UTF-8, the
    store refuses them), no control characters (a newline would forge printed lines)."""
    return isinstance(x, str) and x.isprintable()


def printable(s):
    """s with anything not printable (control characters, lone surrogates) escaped."""
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else ("\\u%04x" % ord(c) if ord(c) < 0x10000
                                               else "\\U%08x" % ord(c)) for c in s)


def _reject_constant(name):
    # json accepts NaN/Infinity by default; RFC 8259 JSON does not, and SQLite would store
    # them as NULL or inf. Refuse them as malformed.
    raise ValueError("non-standard JSON constant %s" % name)


def _int(m, key, lo=None, hi=None):
    x = m.get(key)
    if not _is_int(x) or (lo is not None and x < lo) or (hi is not None and x > hi):
        raise _bad("%s.%s: expected an integer%s%s, got %r" % (
            m.get("t"), key, "" if lo is None else " >= %d" % lo,
            "" if hi is None else " <= %d" % hi, x))
    return x


def _seq(m, key, last=SEQ_LIMIT - 1):
    return _int(m, key, 1, last)


def _str(m, key, maxlen=None):
    x = m.get(key)
    if not _is_text(x) or (maxlen is not None and len(x) > maxlen):
        raise _bad("%s.%s: expected a string%s, got %r" % (
            m.get("t"), key, "" if maxlen is None else " of at most %d chars" % maxlen, x))
    return x


def _num_or_null(m, key):
    x = m.get(key, ...)
    if x is ... or not (x is None or _is_num(x)):
        raise _bad("%s.%s: expected a number or null, got %r" % (m.get("t"), key,
                                                                    None if x is ... else x))
    return x


def _check_hello(m):
    v = _int(m, "v")
    if v != VERSION:
        raise ProtocolError(POLICY, "version", "hello.v is %d, this server speaks %d" % (
            v, VERSION))
    dev = _str(m, "dev")
    if not DEVICE_ID.match(dev):
        raise _bad("hello.dev: not a valid device id")
    _str(m, "fw", 64)
    _str(m, "board", 64)
    _int(m, "boot", 0)
    nxt = _seq(m, "next", SEQ_LIMIT)
    first = _seq(m, "first", SEQ_LIMIT)
    if first > nxt:
        raise _bad("hello.first (%d) is above hello.next (%d)" % (first, nxt))
    _int(m, "held", 0)
    _int(m, "dropped", 0)
    if not isinstance(m.get("synced"), bool):
        raise _bad("hello.synced: expected a boolean")
    if "epoch" in m:
        ep = m["epoch"]
        if not isinstance(ep, str) or not EPOCH.match(ep):
            raise _bad("hello.epoch: expected 1-16 chars of [0-9a-f], got %r" % (ep,))
    if "wake" in m:   # the wake cause (docs/protocol.md "Duty cycling")
        w = m["wake"]
        if not isinstance(w, str) or not WAKE.match(w):
            raise _bad("hello.wake: expected 1-16 chars of [a-z_], got %r" % (w,))


WAKE = re.compile(r"^[a-z_]{1,16}$")
SLEEP_MAX_S = 31 * 24 * 3600   # a sleep's wake_s: at most a month


def _check_sleep(m):
    w = m.get("wake_s")
    if not _is_num(w) or not 0 <= w <= SLEEP_MAX_S:
        raise _bad("sleep.wake_s: expected a number of seconds in [0, %d], got %r"
                   % (SLEEP_MAX_S, w))


def reading_seq(r):
    """The seq of one entry of `batch.r`, or ProtocolError 1007: without a usable integer `q`
    nothing can be acknowledged for the entry, so the whole message is refused."""
    if not isinstance(r, dict):
        raise _bad("batch.r: each reading must be an object")
    q = r.get("q")
    if not _is_int(q) or not 1 <= q < SEQ_LIMIT:
        raise _bad("reading.q: expected an integer in 1..2**53-1, got %r" % (q,))
    return q


def check_reading(r):
    """Why a reading (an object with a usable `q`, see reading_seq) cannot be stored, or None.
    Normalises what it keeps: a long `e` is cut to E_MAX, an int `v` beyond 64 bits becomes
    a float."""
    q = r["q"]
    ts = r.get("ts", ...)
    if ts is ... or not (ts is None or _is_num(ts)):
        return "reading %d: ts must be a number or null" % q
    if ts is not None and not 0 <= ts < TS_MAX:
        return "reading %d: ts must be Unix seconds in [0, 2**32)" % q
    up = r.get("up")
    if not _is_int(up) or up < 0:
        return "reading %d: up must be an integer >= 0" % q
    n = r.get("n")
    if not isinstance(n, str) or not 0 < len(n) <= NAME_MAX:
        return "reading %d: n must be a string of 1-%d chars" % (q, NAME_MAX)
    if not NAME.match(n):
        return "reading %d: n may hold only [A-Za-z0-9_.:/-]" % q
    v = r.get("v", ...)
    if isinstance(v, int) and not isinstance(v, bool) and not _is_int(v):
        try:
            v = r["v"] = float(v)  # a measurement beyond 64 bits: keep it, as the number it is
        except OverflowError:
            return "reading %d: v is out of range" % q
    if isinstance(v, float) and not math.isfinite(v):
        return "reading %d: v is out of range" % q
    if v is ... or not (v is None or _is_num(v)):
        return "reading %d: v must be a number or null" % q
    u = r.get("u")
    if not isinstance(u, str) or len(u) > UNIT_MAX:
        return "reading %d: u must be a string of at most %d chars" % (q, UNIT_MAX)
    if not _is_text(u):
        return "reading %d: u must be printable" % q
    e = r.get("e")
    if e is not None and not isinstance(e, str):
        return "reading %d: e must be a string" % q
    if e is not None:
        # Why a value is missing is free text (driver messages run long). Refusing it would
        # make the device resend the same reading forever; keep the first E_MAX chars, made
        # printable.
        r["e"] = printable(e[:E_MAX])[:E_MAX]
    return None


READING_KEYS = ("q", "ts", "up", "n", "v", "u", "e")


def split_batch(m):
    """A checked batch -> (readings to store, [(seq, reason), ...] refused). A refused reading
    becomes a server-side gap `rejected` (docs/protocol.md "Rejected readings"): the device
    would otherwise resend it, and be refused again, forever."""
    good, rejected = [], []
    for r in m["r"]:
        why = check_reading(r)
        if why is None:
            # only the fields the protocol defines travel on (store, events): unknown ones
            # are ignored, as the versioning asks, and cannot grow what is kept
            good.append({k: r[k] for k in READING_KEYS if k in r})
        else:
            rejected.append((r["q"], why))
    return good, rejected


def _check_batch(m, max_batch):
    """The batch as a whole: a list, within the limit, every entry an object with a usable
    `q`, seqs increasing. The readings' other fields are judged one by one (split_batch)."""
    r = m.get("r")
    if not isinstance(r, list):
        raise _bad("batch.r: expected a list of readings")
    if len(r) > max_batch:
        raise ProtocolError(TOO_BIG, "too_big", "batch of %d readings; the limit is %d" % (
            len(r), max_batch))
    last = 0
    for reading in r:
        q = reading_seq(reading)
        if q <= last:
            raise ProtocolError(POLICY, "order", "batch.r: seqs must increase (%d after %d)" % (
                q, last))
        last = q


SERVER_GAPS = ("lost", "rejected")   # gap.why values only the server records


def _check_gap(m):
    a = _seq(m, "from")
    b = _seq(m, "to")
    if b < a:
        raise _bad("gap: to (%d) is below from (%d)" % (b, a))
    why = _str(m, "why", 32)
    if not why:
        raise _bad("gap.why: empty")
    if why in SERVER_GAPS:
        raise _bad("gap.why %r is reserved for the server" % why)


def _check_reply(m):
    _str(m, "id", 64)
    if not isinstance(m.get("ok"), bool):
        raise _bad("reply.ok: expected a boolean")
    if not m["ok"]:
        _str(m, "err", 1000)


def _check_health(m):
    for key in ("heap_free", "heap_min", "reconnects", "dropped", "boot", "held"):
        _int(m, key, 0)
    if "skipped" in m:  # readings not kept for lack of heap; absent from older firmware
        _int(m, "skipped", 0)
    _num_or_null(m, "rssi")
    up = m.get("uptime_s")
    if not _is_num(up) or up < 0:
        raise _bad("health.uptime_s: expected a number >= 0")


def _check_reported(m):
    """Control (docs/protocol.md): replaces m["out"] by what is kept of it, each output
    {v, ver, why, err?} with only those fields."""
    out = m.get("out")
    if not isinstance(out, dict) or not out:
        raise _bad("reported.out: expected a non-empty object")
    if len(out) > MAX_OUTPUTS:
        raise ProtocolError(TOO_BIG, "too_big", "reported: more than %d outputs" % MAX_OUTPUTS)
    kept = {}
    for name, r in out.items():
        where = "reported.out[%r]" % printable(name[:32])
        if not OUTPUT.match(name):
            raise _bad("%s: an output name is 1-32 chars of [A-Za-z0-9_.-]" % where)
        if not isinstance(r, dict):
            raise _bad("%s: expected an object" % where)
        v = r.get("v")
        if v is not None and (not _is_num(v) or isinstance(v, bool)
                              or abs(v) > OUTPUT_VALUE_MAX):
            raise _bad("%s.v: a number (|v| <= %g) or null" % (where, OUTPUT_VALUE_MAX))
        ver = r.get("ver")
        if not _is_int(ver) or not 0 <= ver < SEQ_LIMIT:
            raise _bad("%s.ver: an integer in 0..2**53-1" % where)
        if r.get("why") not in REPORTED_WHY:
            raise _bad("%s.why: one of %s" % (where, ", ".join(REPORTED_WHY)))
        row = {"v": v, "ver": ver, "why": r["why"]}
        err = r.get("err")
        if err is not None:
            if not isinstance(err, str):
                raise _bad("%s.err: a string" % where)
            row["err"] = printable(err[:ERR_MAX])[:ERR_MAX]
        kept[name] = row
    m["out"] = kept


KNOWN = ("hello", "batch", "gap", "reply", "health", "reported")


KNOWN = ("hello", "batch", "gap", "reply", "health", "sleep")


def _check_tree(x, depth, skip=None):
    """Nesting within MAX_DEPTH and numbers JSON can carry (a float like 1e999 parses to
    infinity), anywhere in the message but inside `skip` (the readings, judged one by one)."""
    if depth > MAX_DEPTH:
        raise _bad("nested deeper than %d" % MAX_DEPTH)
    if isinstance(x, dict):
        for k, v in x.items():
            if v is not skip and isinstance(v, (dict, list, float)):
                _check_tree(v, depth + 1)
    elif isinstance(x, list):
        for v in x:
            if isinstance(v, (dict, list, float)):
                _check_tree(v, depth + 1)
    elif isinstance(x, float) and not math.isfinite(x):
        raise _bad("a number beyond what JSON can carry (%r)" % x)


def decode(text):
    """JSON text -> a dict with a string `t`, or ProtocolError 1007."""
    try:
        m = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise ProtocolError(INVALID_DATA, "bad_json", "malformed JSON: %s" % e) from None
    if not isinstance(m, dict) or not isinstance(m.get("t"), str):
        raise ProtocolError(INVALID_DATA, "bad_message",
                            "a message must be a JSON object with a string field t")
    r = m.get("r") if m["t"] == "batch" else None
    _check_tree(m, 1, r if isinstance(r, list) else None)
    if isinstance(r, list):
        for reading in r:   # depth only: a reading's numbers are judged with the reading
            if isinstance(reading, dict):
                for v in reading.values():
                    if isinstance(v, (dict, list)):
                        _check_tree(v, 4)
    return m


HELLO_KEYS = ("v", "dev", "fw", "board", "boot", "next", "first", "held", "dropped", "synced",
              "epoch", "wake")
HEALTH_KEYS = ("heap_free", "heap_min", "reconnects", "dropped", "rssi", "uptime_s", "boot",
               "held", "skipped")


def stored(m):
    """What is kept of a checked hello or health message: all of it but `t` while its JSON is
    within EXTRAS_MAX bytes, else only the fields the protocol defines (so a device cannot make
    the store keep megabytes per message)."""
    body = {k: v for k, v in m.items() if k != "t"}
    if len(json.dumps(body)) <= EXTRAS_MAX:
        return body
    keys = HELLO_KEYS if m["t"] == "hello" else HEALTH_KEYS
    return dict({k: body[k] for k in keys if k in body}, truncated=True)


def check(m, max_batch=500):
    """Check the fields of a known message type (1007 / 1008 / 1009 as ProtocolError).
    Unknown `t` values pass unchecked so the caller can log and ignore them, as the
    protocol's versioning asks."""
    t = m["t"]
    if t == "hello":
        _check_hello(m)
    elif t == "batch":
        _check_batch(m, max_batch)
    elif t == "gap":
        _check_gap(m)
    elif t == "reply":
        _check_reply(m)
    elif t == "health":
        _check_health(m)
    elif t == "reported":
        _check_reported(m)
    elif t == "sleep":
        _check_sleep(m)
    return m


def parse(text, max_batch=500):
    """decode() then check()."""
    return check(decode(text), max_batch)


def dumps(m):
    """Compact JSON, as the devices expect (no spaces: smaller frames, fewer bytes to parse)."""
    return json.dumps(m, separators=(",", ":"))
