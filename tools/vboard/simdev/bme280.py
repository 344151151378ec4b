"""A register-level BME280 model (MicroPython): calibration bytes in 0x88../0xE1.., chip id
0x60, and result registers 0xF7..0xFE made from physical values by inverting the datasheet's
compensation (a binary search over the forward formula, written here independently of the
firmware driver so the two check each other)."""
from simdev import value

# BMP280 datasheet §3.12 example T/P coefficients; typical humidity coefficients.
CAL_T = (27504, 26435, -1000)
CAL_P = (36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000)
CAL_H = (75, 362, 0, 313, 50, 30)


def _t(adc):
    t1, t2, t3 = CAL_T
    a = (adc / 16384.0 - t1 / 1024.0) * t2
    b = (adc / 131072.0 - t1 / 8192.0) ** 2 * t3
    return a + b  # t_fine (float); T = t_fine / 5120


def _p(adc, tf):
    p1, p2, p3, p4, p5, p6, p7, p8, p9 = CAL_P
    v1 = tf / 2.0 - 64000.0
    v2 = v1 * v1 * p6 / 32768.0 + v1 * p5 * 2.0
    v2 = v2 / 4.0 + p4 * 65536.0
    v1 = (p3 * v1 * v1 / 524288.0 + p2 * v1) / 524288.0
    v1 = (1.0 + v1 / 32768.0) * p1
    p = (1048576.0 - adc - v2 / 4096.0) * 6250.0 / v1
    return p + (p9 * p * p / 2147483648.0 + p * p8 / 32768.0 + p7) / 16.0


def _h(adc, tf):
    h1, h2, h3, h4, h5, h6 = CAL_H
    v = tf - 76800.0
    v = (adc - (h4 * 64.0 + h5 / 16384.0 * v)) * \
        (h2 / 65536.0 * (1.0 + h6 / 67108864.0 * v * (1.0 + h3 / 67108864.0 * v)))
    return v * (1.0 - h1 * v / 524288.0)


def _search(f, target, hi, increasing=True):
    lo = 0
    while lo < hi:
        mid = (lo + hi) // 2
        v = f(mid)
        if (v < target) if increasing else (v > target):
            lo = mid + 1
        else:
            hi = mid
    return lo


def _le16(v):
    v &= 0xFFFF
    return [v & 0xFF, v >> 8]


class BME280:
    def __init__(self, name, spec, humidity=True):
        self.name = name
        self.humidity = humidity
        r = bytearray(256)
        r[0xD0] = 0x60 if humidity else 0x58
        cal = []
        for v in CAL_T + CAL_P:
            cal += _le16(v)
        r[0x88:0x88 + 24] = bytes(cal)
        h1, h2, h3, h4, h5, h6 = CAL_H
        r[0xA1] = h1
        r[0xE1:0xE8] = bytes(_le16(h2) + [h3, (h4 >> 4) & 0xFF,
                                          (h4 & 0x0F) | ((h5 & 0x0F) << 4),
                                          (h5 >> 4) & 0xFF, h6 & 0xFF])
        r[0xF7:0xFF] = b"\x80\x00\x00\x80\x00\x00\x80\x00"  # 'skipped' until measured
        self.regs = r
        self.ptr = 0

    def _measure(self):
        t = value(self.name, "temperature")
        adc_t = _search(_t, t * 5120.0, 1 << 20)
        tf = int(_t(adc_t))
        adc_p = _search(lambda a: _p(a, tf), value(self.name, "pressure"), 1 << 20, False)
        r = self.regs
        r[0xF7], r[0xF8], r[0xF9] = adc_p >> 12, (adc_p >> 4) & 0xFF, (adc_p & 0xF) << 4
        r[0xFA], r[0xFB], r[0xFC] = adc_t >> 12, (adc_t >> 4) & 0xFF, (adc_t & 0xF) << 4
        if self.humidity:
            adc_h = _search(lambda a: _h(a, tf), value(self.name, "humidity"), 1 << 16)
            r[0xFD], r[0xFE] = adc_h >> 8, adc_h & 0xFF

    def write(self, data):
        if not data:
            return
        self.ptr = data[0]
        for b in data[1:]:
            self.regs[self.ptr] = b
            if self.ptr == 0xE0 and b == 0xB6:  # soft reset
                self.regs[0xF7:0xFF] = b"\x80\x00\x00\x80\x00\x00\x80\x00"
            if self.ptr == 0xF4 and b & 3:      # forced (01/10) or normal (11) mode
                self._measure()
                if b & 3 != 3:
                    self.regs[0xF4] = b & 0xFC  # back to sleep after one measurement
            self.ptr = (self.ptr + 1) & 0xFF

    def read(self, n):
        if self.regs[0xF4] & 3 == 3 and 0xF7 <= self.ptr <= 0xFE:
            self._measure()
        out = bytearray(n)
        for i in range(n):
            out[i] = self.regs[self.ptr]
            self.ptr = (self.ptr + 1) & 0xFF
        return out
