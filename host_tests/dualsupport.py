"""Helpers for dual tests: test modules that run unchanged on CPython (under pytest) and on
the MicroPython unix port (under mp_dual_runner.py). Plain functions and `assert` only."""
import binascii
import json
import os
import sys

try:
    _HERE = __file__.rsplit("/", 1)[0]
except AttributeError:  # pragma: no cover - frozen or odd ports
    _HERE = "."


def load_vectors(name):
    """Load host_tests/vectors/<name>.json: the shared test vectors."""
    with open(_HERE + "/vectors/" + name + ".json") as f:
        return json.load(f)


def raises(exc_type, fn, *args, **kwargs):
    """Call fn and return the exception it raised; fail if it raised nothing or another type."""
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        return e
    raise AssertionError("%s did not raise %s" % (getattr(fn, "__name__", fn), exc_type.__name__))


def unhex(s):
    """Hex string (spaces allowed) -> bytes; vectors write wire bytes this way."""
    import binascii
    return binascii.unhexlify(s.replace(" ", ""))


# ws_frames.json writes wire bytes as segments: a hex string, or [hex, count] for a repeat
# (so a 64 KiB frame is one line). Vectors over BIG bytes run on CPython only: the unix
# port's test heap is ESP32-sized; the 64 KiB messages run on MicroPython in the interop tests.
BIG = 4096
SMALL_HEAP = sys.implementation.name == "micropython"


def wire(segs):
    """The bytes a vector's segments stand for."""
    out = bytearray()
    for s in segs:
        if isinstance(s, str):
            out.extend(unhex(s))
        else:
            out.extend(unhex(s[0]) * s[1])
    return bytes(out)


def too_big(v, key):
    """True on MicroPython when vector v's `key` (segments, or "chunks" of them) exceeds BIG."""
    n = 0
    for segs in (v[key] if key == "chunks" else [v[key]]):
        for s in segs:
            n += len(s) // 2 if isinstance(s, str) else s[1]
    return SMALL_HEAP and n > BIG


def tmpdir():
    """A fresh directory under /tmp (a flash directory for outbox tests; no tempfile on
    MicroPython). Remove it with rmtree()."""
    path = "/tmp/fl-outbox-" + binascii.hexlify(os.urandom(6)).decode()
    os.mkdir(path)
    return path


def rmtree(path):
    """Remove a directory made by tmpdir() (flat: files only)."""
    for n in os.listdir(path):
        os.remove(path + "/" + n)
    os.rmdir(path)


def drain(ob, max_n=20, window=64):
    """A good link until the outbox is empty (on_connect, welcome 0, batches acked as they
    come); the seqs in order of arrival."""
    ob.on_connect()
    ob.welcome(0)
    got = []
    while True:
        b = ob.next_batch(max_n, window)
        if not b:
            return got
        got += [json.loads(t)["q"] for t in b]
        ob.ack(got[-1])
