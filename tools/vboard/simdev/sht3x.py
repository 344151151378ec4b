"""SHT3x and SHT4x models (MicroPython): a measurement command, then a 6-byte answer with a
Sensirion CRC-8 after each word. Reading with no measurement pending is NACKed, as the chip
does. Fault "bad_crc" flips the CRC bytes."""
from simdev import value, fault


def crc8(data):
    crc = 0xFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


class SHT3x:
    _MEASURE = (b"\x24\x00", b"\x24\x0b", b"\x24\x16", b"\x2c\x06", b"\x2c\x0d", b"\x2c\x10")
    sht4x = False

    def __init__(self, name, spec):
        self.name = name
        self.pending = None

    def _raw_rh(self, rh):
        if self.sht4x:
            return (rh + 6) / 125 * 65535
        return rh / 100 * 65535

    def write(self, data):
        data = bytes(data)
        if data in self._MEASURE or (self.sht4x and data in (b"\xfd", b"\xf6", b"\xe0")):
            t = value(self.name, "temperature")
            rh = value(self.name, "humidity")
            out = bytearray()
            for raw in ((t + 45) / 175 * 65535, self._raw_rh(rh)):
                raw = max(0, min(65535, int(raw + 0.5)))
                w = bytes((raw >> 8, raw & 0xFF))
                c = crc8(w)
                if fault(self.name) == "bad_crc":
                    c ^= 0x5A
                out += w + bytes((c,))
            self.pending = out
        # other commands (soft reset 0x30A2, heater, status) are accepted and ignored

    def read(self, n):
        if self.pending is None:
            raise OSError(19)  # NACK: no measurement to read
        out, self.pending = self.pending[:n], None
        return out


class SHT4x(SHT3x):
    _MEASURE = ()
    sht4x = True
