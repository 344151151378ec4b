# dual: runs on CPython and on MicroPython
"""Incremental UTF-8 validation (fieldlink.ws.utf8): whole, split at every byte, and invalid."""
from fieldlink.ws import utf8

VALID = [b"", b"plain ascii", "h\u00e9llo".encode("utf-8"), "\u20ac".encode("utf-8"),
         "\U0001F600".encode("utf-8"), b"\xed\x9f\xbf", b"\xee\x80\x80", b"\xf4\x8f\xbf\xbf",
         b"\xf0\x90\x80\x80", b"\xc2\x80", b"\xdf\xbf", b"\xe0\xa0\x80", b"\x7f"]
INVALID = [b"\x80", b"\xbf", b"\xc0\x80", b"\xc1\xbf", b"\xe0\x9f\xbf", b"\xed\xa0\x80",
           b"\xed\xbf\xbf", b"\xf0\x8f\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80",
           b"\xff", b"\xfe", b"\xc3\x28", b"\xe2\x82\x28", b"a\xe2\x28\xa1"]
INCOMPLETE = [b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98"]


def run(data, cut):
    st = utf8.check(0, data[:cut], cut)
    rest = data[cut:]
    return utf8.check(st, rest, len(rest))


def test_valid_whole_and_split_everywhere():
    for d in VALID:
        for cut in range(len(d) + 1):
            assert run(d, cut) == utf8.OK, (d, cut)


def test_invalid_whole_and_split_everywhere():
    for d in INVALID:
        for cut in range(len(d) + 1):
            assert run(d, cut) == utf8.BAD, (d, cut)


def test_incomplete_is_neither_ok_nor_bad():
    for d in INCOMPLETE:
        st = utf8.check(0, d, len(d))
        assert st != utf8.OK and st != utf8.BAD, d


def test_bad_state_stays_bad():
    assert utf8.check(utf8.BAD, b"abc", 3) == utf8.BAD


def test_checks_only_n_bytes():
    assert utf8.check(0, b"ab\xff", 2) == utf8.OK
