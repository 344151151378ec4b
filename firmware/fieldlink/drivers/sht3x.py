"""Sensirion SHT3x and SHT4x on I2C: temperature (C) and humidity (%RH). Single-shot
measurements; every 16-bit word carries a CRC-8 (see crc.py) that is checked before use."""
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stubs' const is generic
        return x

from fieldlink.drivers import CRCError, bus_error, sleep_ms
from fieldlink.drivers.crc import crc8_sensirion

_SHT3X_MEASURE = b"\x24\x00"   # single shot, high repeatability, no clock stretching (§4.3)
_SHT4X_MEASURE = b"\xfd"       # measure T & RH, high precision (SHT4x datasheet §4.5)


def check_words(buf):
    """Verify the CRC after each 2-byte word of a 6-byte answer; raise CRCError if one fails."""
    for i in (0, 3):
        c = crc8_sensirion(buf, i, i + 2)
        if c != buf[i + 2]:
            raise CRCError("crc mismatch in word %d: got 0x%02x, computed 0x%02x"
                           % (i // 3, buf[i + 2], c))


def sht3x_temperature(raw):
    """SHT3x §4.13: T = -45 + 175 * S_T / (2^16 - 1)."""
    return -45 + 175 * raw / 65535


def sht3x_humidity(raw):
    """SHT3x §4.13: RH = 100 * S_RH / (2^16 - 1)."""
    return 100 * raw / 65535


def sht4x_humidity(raw):
    """SHT4x §4.6: RH = -6 + 125 * S_RH / (2^16 - 1), cropped to 0..100 % as advised."""
    rh = -6 + 125 * raw / 65535
    if rh < 0:
        return 0.0
    if rh > 100:
        return 100.0
    return rh


def decode(buf, sht4x=False):
    """6 bytes (T msb, lsb, crc, RH msb, lsb, crc) -> (C, %RH)."""
    check_words(buf)
    t = sht3x_temperature((buf[0] << 8) | buf[1])  # same formula for the SHT4x
    raw_rh = (buf[3] << 8) | buf[4]
    return t, (sht4x_humidity(raw_rh) if sht4x else sht3x_humidity(raw_rh))


class SHT3x:
    """SHT30/31/35 at 0x44 (ADDR low) or 0x45."""
    channels = (("temperature", "C"), ("humidity", "%RH"))
    _cmd = _SHT3X_MEASURE
    _wait_ms = 16  # high repeatability: max 15 ms (§2.2 Table 4)
    _sht4x = False
    _kind = "sht3x"

    def __init__(self, i2c, address=0x44, name="sht"):
        self.name = name
        self.i2c = i2c
        self.address = address
        self._buf = bytearray(6)
        self._what = "%s at 0x%02x" % (self._kind, address)
        self._started = False

    def start(self):
        try:
            self.i2c.writeto(self.address, self._cmd)
        except OSError as e:
            self._started = False
            raise bus_error(e, self._what)
        self._started = True
        return self._wait_ms

    def read(self):
        if not self._started:
            sleep_ms(self.start())
        self._started = False
        try:
            self.i2c.readfrom_into(self.address, self._buf)
        except OSError as e:
            raise bus_error(e, self._what)
        try:
            return decode(self._buf, self._sht4x)
        except CRCError as e:
            raise CRCError("%s: %s" % (self._what, e))


class SHT4x(SHT3x):
    """SHT40/41/45 at 0x44 (or 0x45/0x46 variants)."""
    _cmd = _SHT4X_MEASURE
    _wait_ms = 10  # high precision: max 8.3 ms (§3.2)
    _sht4x = True
    _kind = "sht4x"
