"""DHT22 / AM2302 humidity-temperature sensors on one GPIO: %RH and C. The bit-banging is
MicroPython's built-in `dht` module; the 5-byte frame is decoded (and its checksum checked)
here, in pure functions."""
from fieldlink.drivers import CRCError, DeviceMissing


def checksum_ok(b):
    """AM2302 datasheet §7: byte 4 is the low 8 bits of the sum of bytes 0..3."""
    return (b[0] + b[1] + b[2] + b[3]) & 0xFF == b[4]


def decode(b):
    """5 bytes -> (%RH, C). RH and T are 16-bit tenths; T's top bit is its sign
    (02 8C 01 5F EE -> 65.2 %RH, 35.1 C; T bytes 80 65 -> -10.1 C)."""
    if not checksum_ok(b):
        raise CRCError("dht22 checksum 0x%02x, computed 0x%02x"
                       % (b[4], (b[0] + b[1] + b[2] + b[3]) & 0xFF))
    rh = ((b[0] << 8) | b[1]) / 10
    t = (((b[2] & 0x7F) << 8) | b[3]) / 10
    if b[2] & 0x80:
        t = -t
    return rh, t


class DHT22:
    channels = (("temperature", "C"), ("humidity", "%RH"))

    def __init__(self, pin, name="dht", dev=None):
        """pin: a machine.Pin. dev: an object like dht.DHT22(pin) (made here if None)."""
        self.name = name
        if dev is None:
            import dht
            dev = dht.DHT22(pin)
        self._dev = dev
        self._what = "dht22 on %s" % (pin,)

    def start(self):
        return 0  # the sensor measures when asked; a read takes about 5 ms

    def read(self):
        try:
            self._dev.measure()
        except OSError as e:
            raise DeviceMissing("%s: no answer (%s)" % (self._what, e))
        except Exception as e:  # the built-in raises a plain Exception("checksum error")
            if "checksum" in str(e):
                raise CRCError("%s: %s" % (self._what, e))
            raise
        buf = getattr(self._dev, "buf", None)
        if buf is not None:
            rh, t = decode(buf)
        else:
            rh, t = self._dev.humidity(), self._dev.temperature()
        return (t, rh)
