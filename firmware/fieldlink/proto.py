"""The fieldlink app protocol v1 (docs/protocol.md), device side: build device messages, parse
and validate server messages. Pure: text in, values out. (Validating device messages, which
only the collector and tests need, is in proto_check.py.)"""
import json

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stubs' const is generic
        return x

VERSION = const(1)
SUBPROTOCOL = "fieldlink.v1"

# Close codes (RFC 6455 section 7.4.1, plus the protocol's own 4000)
CLOSE_NORMAL = const(1000)
CLOSE_GOING_AWAY = const(1001)
CLOSE_PROTOCOL = const(1002)
CLOSE_BINARY = const(1003)
CLOSE_BAD_DATA = const(1007)
CLOSE_POLICY = const(1008)
CLOSE_TOO_BIG = const(1009)
CLOSE_INTERNAL = const(1011)
CLOSE_SUPERSEDED = const(4000)

WHY_DROPPED = "dropped"
WHY_REBOOT = "reboot"


class ProtoError(Exception):
    """A message that breaks the protocol; `code` is the close code to answer with."""

    def __init__(self, code, msg):
        super().__init__(msg)
        self.code = code
        self.msg = msg


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x):
    return (isinstance(x, int) or isinstance(x, float)) and not isinstance(x, bool)


def _is_str(x):
    return isinstance(x, str)


def _need(obj, key, check, what, label=None):
    label = label or obj.get("t")
    if key not in obj:
        raise ProtoError(CLOSE_BAD_DATA, "%s: missing %s" % (label, key))
    val = obj[key]
    if not check(val):
        raise ProtoError(CLOSE_BAD_DATA, "%s: %s must be %s" % (label, key, what))
    return val


def _seq(x):
    return _is_int(x) and x >= 0


def _decode(text):
    if not isinstance(text, str):
        raise ProtoError(CLOSE_BINARY, "binary message")
    try:
        obj = json.loads(text)
    except ValueError:
        raise ProtoError(CLOSE_BAD_DATA, "malformed JSON")
    if not isinstance(obj, dict) or not isinstance(obj.get("t"), str):
        raise ProtoError(CLOSE_BAD_DATA, "not an object with a string t")
    return obj


def _scan_ms(text, key):
    """Unix seconds written as a JSON number -> integer milliseconds, read from the text.

    The ESP32 port's floats are single precision: a Unix time in seconds parsed into one is
    only good to about two minutes. Reading the digits directly keeps millisecond resolution.
    Returns None when the number is not a plain decimal (then the caller falls back).
    """
    i = text.find('"%s"' % key)
    if i < 0:
        return None
    i = text.find(":", i) + 1
    n = len(text)
    while i < n and text[i] in " \t\r\n":
        i += 1
    j = i
    while j < n and text[j] in "0123456789":
        j += 1
    if j == i:
        return None
    ms = int(text[i:j]) * 1000
    if j < n and text[j] == ".":
        k = j + 1
        while k < n and text[k] in "0123456789":
            k += 1
        ms += int((text[j + 1:k] + "000")[:3])
        j = k
    if j < n and text[j] in "eE":
        return None
    return ms


def parse_server(text):
    """One text message from the server -> a tuple, its type first (the message's "t"):

        ("ack", ack)
        ("welcome", v, ack, time_ms)     time_ms: server Unix time in integer ms
        ("cmd", id, cmd, args)           args: a dict ({} when absent or null)
        ("error", code, msg)
        (t,)                             a type this version does not know: logged and
                                         ignored (forward compatibility)

    (Tuples, not one small class per event: each class costs the board several hundred bytes
    of heap, all the time.) Raises ProtoError(1007) for bad JSON or a known message with a
    missing/ill-typed field, ProtoError(1003) for a binary message.
    """
    obj = _decode(text)
    t = obj["t"]
    if t == "ack":
        return t, _need(obj, "ack", _seq, "an integer >= 0")
    if t == "welcome":
        v = _need(obj, "v", _is_int, "an integer")
        ack = _need(obj, "ack", _seq, "an integer >= 0")
        tm = _need(obj, "time", _is_num, "a number")
        ms = _scan_ms(text, "time")
        return t, v, ack, int(tm * 1000) if ms is None else ms
    if t == "cmd":
        cid = _need(obj, "id", _is_str, "a string")
        cmd = _need(obj, "cmd", _is_str, "a string")
        args = obj.get("args")
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise ProtoError(CLOSE_BAD_DATA, "cmd: args must be an object")
        return t, cid, cmd, args
    if t == "error":
        return t, str(obj.get("code", "")), str(obj.get("msg", ""))
    return (t,)


# ---- device -> server builders. Text out (the protocol uses WebSocket text messages). ----

def reading(q, ts_ms, up_ms, name, value, unit, err=None):
    """One reading as JSON text, `q` first so reading_seq() can read the seq cheaply.

    Times are integer ms; `ts` is written as seconds with 3 decimals built from integers (the
    board's floats are single precision, see _scan_ms)."""
    ts = "null" if ts_ms is None else "%d.%03d" % (ts_ms // 1000, ts_ms % 1000)
    if value is None:
        vt = "null"
    elif isinstance(value, bool):
        vt = "1" if value else "0"
    elif isinstance(value, int):
        vt = "%d" % value
    elif value != value or value in (float("inf"), float("-inf")):
        vt = "null"  # JSON has no NaN/Infinity
        if err is None:
            err = "nan"
    else:
        vt = json.dumps(value)
    s = '{"q":%d,"ts":%s,"up":%d,"n":%s,"v":%s,"u":%s' % (
        q, ts, up_ms, json.dumps(name), vt, json.dumps(unit or ""))
    if err:
        s += ',"e":%s' % json.dumps(err)
    return s + "}"


def reading_seq(r):
    """The seq of a reading as reading() writes it, from its UTF-8 bytes (a line of a flash
    segment, a slice of a buffer): read from the text, no JSON parse. ValueError if the
    bytes do not start like one."""
    if not r.startswith(b'{"q":'):
        raise ValueError("not a reading")
    return int(r[5:r.index(b",")])


BATCH_HEAD = b'{"t":"batch","r":['  # a batch message is BATCH_HEAD + readings + b"]}"


def batch_text(joined):
    """A batch message from readings already joined with ",". The supervisor builds the
    same bytes around the outbox's next_batch_view (no str)."""
    return '{"t":"batch","r":[%s]}' % joined


def hello(dev, fw, board, boot, next_seq, first, held, dropped, synced, epoch=None):
    """`epoch` names the device's numbering (docs/protocol.md "Epochs"); None: not sent."""
    m = {"t": "hello", "v": VERSION, "dev": dev, "fw": fw, "board": board, "boot": boot,
         "next": next_seq, "first": first, "held": held, "dropped": dropped,
         "synced": bool(synced)}
    if epoch:
        m["epoch"] = epoch
    return json.dumps(m)


def gap(frm, to, why):
    return '{"t":"gap","from":%d,"to":%d,"why":%s}' % (frm, to, json.dumps(why))


def reply(cid, ok, result=None, err=None):
    m = {"t": "reply", "id": cid, "ok": bool(ok)}
    if ok:
        m["result"] = result
    else:
        m["err"] = err or "failed"
    return json.dumps(m)


def health(heap_free, heap_min, reconnects, dropped, rssi, uptime_s, boot, held, skipped=0):
    # skipped: readings sampled but not kept, for lack of heap (no seq given, so they are in
    # no gap and not in `dropped`); counted since boot
    return json.dumps({"t": "health", "heap_free": heap_free, "heap_min": heap_min,
                       "reconnects": reconnects, "dropped": dropped, "rssi": rssi,
                       "uptime_s": uptime_s, "boot": boot, "held": held,
                       "skipped": skipped})
