"""Validation of device -> server messages of the app protocol v1 (docs/protocol.md), for the
collector, tools and tests. Kept out of proto.py so the board never loads it (RAM)."""
from fieldlink.proto import (CLOSE_BAD_DATA, CLOSE_POLICY, WHY_DROPPED, WHY_REBOOT, ProtoError,
                             _decode, _is_int, _is_num, _need, _seq)


def _opt_num(x):
    return x is None or _is_num(x)


def _str(x):
    return isinstance(x, str)


def _check_reading(r):
    if not isinstance(r, dict):
        raise ProtoError(CLOSE_BAD_DATA, "batch: reading must be an object")
    lb = "reading"
    _need(r, "q", lambda x: _is_int(x) and x >= 1, "an integer >= 1", lb)
    _need(r, "ts", _opt_num, "a number or null", lb)
    _need(r, "up", lambda x: _is_int(x) and x >= 0, "an integer >= 0", lb)
    _need(r, "n", lambda x: _str(x) and 0 < len(x) <= 64, "a non-empty string", lb)
    _need(r, "v", _opt_num, "a number or null", lb)
    _need(r, "u", _str, "a string", lb)
    if "e" in r and not _str(r["e"]):
        raise ProtoError(CLOSE_BAD_DATA, "reading: e must be a string")


def _dev_id(x):
    if not _str(x) or not 1 <= len(x) <= 32:
        return False
    for c in x:
        if not (c.isalpha() or c.isdigit() or c in "_.-") or ord(c) > 127:
            return False
    return True


def _epoch(x):
    if not _str(x) or not 1 <= len(x) <= 16:
        return False
    for c in x:
        if c not in "0123456789abcdef":
            return False
    return True


def _wake(x):
    if not _str(x) or not 1 <= len(x) <= 16:
        return False
    for c in x:
        if not ("a" <= c <= "z" or c == "_"):
            return False
    return True


def parse_device(text):
    """Validate one device message; returns the decoded dict (unknown `t` passes through)."""
    obj = _decode(text)
    t = obj["t"]
    if t == "hello":
        _need(obj, "v", _is_int, "an integer")
        _need(obj, "dev", _dev_id, "a device id")
        _need(obj, "fw", _str, "a string")
        _need(obj, "board", _str, "a string")
        _need(obj, "boot", _seq, "an integer >= 0")
        nxt = _need(obj, "next", lambda x: _is_int(x) and x >= 1, "an integer >= 1")
        first = _need(obj, "first", lambda x: _is_int(x) and x >= 1, "an integer >= 1")
        if first > nxt:
            raise ProtoError(CLOSE_BAD_DATA, "hello: first > next")
        _need(obj, "held", _seq, "an integer >= 0")
        _need(obj, "dropped", _seq, "an integer >= 0")
        _need(obj, "synced", lambda x: isinstance(x, bool), "a boolean")
        if "epoch" in obj:
            _need(obj, "epoch", _epoch, "1-16 chars of 0-9a-f")
        if "wake" in obj:
            _need(obj, "wake", _wake, "1-16 chars of a-z _")
    elif t == "sleep":
        _need(obj, "wake_s", lambda x: _is_num(x) and 0 <= x <= 2678400,
              "a number of seconds in [0, 2678400]")
    elif t == "batch":
        rs = _need(obj, "r", lambda x: isinstance(x, list), "a list")
        last = 0
        for r in rs:
            _check_reading(r)
            if r["q"] <= last:
                raise ProtoError(CLOSE_POLICY, "batch: seqs must increase")
            last = r["q"]
    elif t == "gap":
        f = _need(obj, "from", lambda x: _is_int(x) and x >= 1, "an integer >= 1")
        _need(obj, "to", lambda x: _is_int(x) and x >= f, "an integer >= from")
        _need(obj, "why", lambda x: x in (WHY_DROPPED, WHY_REBOOT), "dropped or reboot")
    elif t == "reply":
        _need(obj, "id", _str, "a string")
        ok = _need(obj, "ok", lambda x: isinstance(x, bool), "a boolean")
        if not ok:
            _need(obj, "err", _str, "a string")
    elif t == "health":
        for k in ("heap_free", "heap_min", "reconnects", "dropped", "uptime_s", "boot", "held"):
            _need(obj, k, _is_num, "a number")
        _need(obj, "rssi", _opt_num, "a number or null")
        if "skipped" in obj:  # (absent from devices before it was added)
            _need(obj, "skipped", lambda x: _is_int(x) and x >= 0, "an integer >= 0")
    return obj
