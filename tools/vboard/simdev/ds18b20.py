"""DS18B20 model (MicroPython): ROM code, 9-byte scratchpad with Dallas CRC, 85 C until the
first conversion (the power-on value), resolution from the config byte."""
from simdev import value, fault, seed


def crc8(data):
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8C if crc & 1 else crc >> 1
    return crc


def make_rom(name):
    h = seed()
    for c in name:
        h = (h * 131 + ord(c)) & 0xFFFFFFFFFFFF
    body = bytes([0x28] + [(h >> (8 * i)) & 0xFF for i in range(6)])
    return body + bytes([crc8(body)])


class DS18B20:
    def __init__(self, name, spec):
        import binascii
        self.name = name
        self.rom = binascii.unhexlify(spec["rom"]) if spec.get("rom") else make_rom(name)
        self.sp = bytearray(b"\x50\x05\x4b\x46\x7f\xff\x0c\x10\x00")  # 85 C power-on
        self._seal()

    def _seal(self):
        self.sp[8] = crc8(self.sp[:8])

    def convert(self):
        raw = int(round(value(self.name, "temperature") * 16)) & 0xFFFF
        self.sp[0], self.sp[1] = raw & 0xFF, raw >> 8
        self.sp[6] = 0x10 - (raw & 0x0F)  # 'reserved' byte as real parts show it
        self._seal()

    def scratchpad(self):
        sp = bytearray(self.sp)
        if fault(self.name) == "bad_crc":
            sp[8] ^= 0xA5
        return sp

    def write_scratchpad(self, th_tl_cfg):
        self.sp[2], self.sp[3] = th_tl_cfg[0], th_tl_cfg[1]
        if len(th_tl_cfg) > 2:
            self.sp[4] = (th_tl_cfg[2] & 0x60) | 0x1F
        self._seal()
