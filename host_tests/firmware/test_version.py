# dual: runs on CPython and on MicroPython
"""The firmware package imports on both interpreters and names its version."""
import fieldlink


def test_version_is_dotted_numbers():
    parts = fieldlink.__version__.split(".")
    assert len(parts) == 3
    for p in parts:
        assert int(p) >= 0
