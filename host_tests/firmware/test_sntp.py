# dual: runs on CPython and on MicroPython
"""SNTP packet build and parse (RFC 4330): the transmit timestamp to Unix ms, and every reply
section 5 says a client must refuse, with a message fit for a one-line log."""
from dualsupport import raises

from fieldlink import sntp


def reply(sec, frac=0, li=0, mode=4, stratum=2, ref=b"GPS\x00"):
    b = bytearray(48)
    b[0] = (li << 6) | (4 << 3) | mode
    b[1] = stratum
    b[12:16] = ref
    b[40:44] = sec.to_bytes(4, "big")
    b[44:48] = frac.to_bytes(4, "big")
    return b


def test_request_is_a_v4_client_packet():
    r = sntp.request()
    assert len(r) == 48 and r[0] == 0x23 and not any(r[1:])


def test_transmit_timestamp_to_unix_ms():
    assert sntp.parse(reply(sntp.NTP_TO_UNIX_S)) == 0
    assert sntp.parse(reply(sntp.NTP_TO_UNIX_S + 1, 0x80000000)) == 1500
    # section 3: top bit clear = era 1 (from 2036-02-07)
    assert sntp.parse(reply(1)) == (0x100000001 - sntp.NTP_TO_UNIX_S) * 1000


def test_kiss_of_death_names_the_code_as_text():
    e = raises(sntp.SNTPError, sntp.parse, reply(sntp.NTP_TO_UNIX_S, stratum=0, ref=b"RATE"))
    assert str(e) == "kiss-o'-death RATE"


def test_kiss_code_that_is_not_ascii_cannot_break_the_log_line():
    e = raises(sntp.SNTPError, sntp.parse,
               reply(sntp.NTP_TO_UNIX_S, stratum=0, ref=b"A\n\xff\x00"))
    assert str(e) == "kiss-o'-death A???"


def test_refused_replies():
    raises(sntp.SNTPError, sntp.parse, reply(sntp.NTP_TO_UNIX_S)[:47])
    raises(sntp.SNTPError, sntp.parse, reply(sntp.NTP_TO_UNIX_S, mode=3))
    raises(sntp.SNTPError, sntp.parse, reply(sntp.NTP_TO_UNIX_S, li=3))
    raises(sntp.SNTPError, sntp.parse, reply(0, 0))
