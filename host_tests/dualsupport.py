"""Helpers for dual tests: test modules that run unchanged on CPython (under pytest) and on
the MicroPython unix port (under mp_dual_runner.py). Plain functions and `assert` only."""
import json

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
