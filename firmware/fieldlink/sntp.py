"""SNTP (RFC 4330) packet build and parse. Pure: bytes in, Unix milliseconds out."""
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stubs' const is generic
        return x

NTP_TO_UNIX_S = const(2208988800)  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01
_MODE_CLIENT = const(3)
_MODE_SERVER = const(4)
_VERSION = const(4)


class SNTPError(ValueError):
    pass


def request():
    """A 48-byte client request (RFC 4330 section 5): LI 0, VN 4, Mode 3, all else zero."""
    b = bytearray(48)
    b[0] = (_VERSION << 3) | _MODE_CLIENT
    return b


def parse(data):
    """Server reply -> Unix time in integer ms from the Transmit Timestamp (section 4).

    Refuses what section 5 says a client must not use: a short packet, a mode other than
    server, stratum 0 (a Kiss-o'-Death packet), leap indicator 3 (clock not synchronised) or
    a zero transmit timestamp.
    """
    if len(data) < 48:
        raise SNTPError("short packet: %d bytes" % len(data))
    li = data[0] >> 6
    mode = data[0] & 7
    if mode != _MODE_SERVER:
        raise SNTPError("mode %d, expected 4 (server)" % mode)
    if data[1] == 0:
        # the kiss code is four ASCII characters in the Reference Identifier (section 8);
        # anything else shows as "?" so a hostile reply cannot break the one-line log format
        raise SNTPError("kiss-o'-death " + "".join(
            chr(c) if 32 <= c < 127 else "?" for c in data[12:16]))
    if li == 3:
        raise SNTPError("server clock not synchronised")
    sec = (data[40] << 24) | (data[41] << 16) | (data[42] << 8) | data[43]
    frac = (data[44] << 24) | (data[45] << 16) | (data[46] << 8) | data[47]
    if sec == 0 and frac == 0:
        raise SNTPError("zero transmit timestamp")
    # RFC 4330 section 3: when the top bit is clear the time is in era 1 (from 2036)
    if not sec & 0x80000000:
        sec += 0x100000000
    return (sec - NTP_TO_UNIX_S) * 1000 + ((frac * 1000) >> 32)
