"""Bosch BME280 (and BMP280) on I2C: temperature (C), pressure (Pa), humidity (%RH).
Compensation per the BME280 datasheet §4.2.3 (integer) and §8.1 (floating point); pure
functions below, the I2C binding at the end. Calibration is read once, on first use."""
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stubs' const is generic
        return x

from fieldlink.drivers import SensorError, DeviceMissing, bus_error, sleep_ms

_REG_CALIB_TP = const(0x88)  # 0x88..0xA1: T1..T3, P1..P9, (0xA0 unused), H1
_REG_CALIB_H = const(0xE1)   # 0xE1..0xE7: H2..H6
_REG_CHIP_ID = const(0xD0)
_REG_CTRL_HUM = const(0xF2)
_REG_CTRL_MEAS = const(0xF4)
_REG_DATA = const(0xF7)      # press msb,lsb,xlsb, temp msb,lsb,xlsb, hum msb,lsb
_CHIP_BME280 = const(0x60)
_CHIP_BMP280 = const(0x58)
_SKIPPED = const(0x80000)    # what a 20-bit result register holds when nothing was measured


def _u16(b, i):
    return b[i] | (b[i + 1] << 8)


def _s16(b, i):
    v = b[i] | (b[i + 1] << 8)
    return v - 65536 if v & 0x8000 else v


def _s8(v):
    return v - 256 if v & 0x80 else v


def parse_calibration(tp, h=None):
    """tp: the 26 bytes at 0x88..0xA1; h: the 7 bytes at 0xE1..0xE7 (None for a BMP280).
    Returns the list [T1, T2, T3, P1..P9, H1..H6] (datasheet Table 16)."""
    cal = [_u16(tp, 0), _s16(tp, 2), _s16(tp, 4), _u16(tp, 6)]
    for i in range(8, 24, 2):
        cal.append(_s16(tp, i))
    if h is None:
        return cal + [0, 0, 0, 0, 0, 0]
    cal.append(tp[25])                                  # H1 u8 at 0xA1
    cal.append(_s16(h, 0))                              # H2 s16 at 0xE1
    cal.append(h[2])                                    # H3 u8 at 0xE3
    cal.append((_s8(h[3]) << 4) | (h[4] & 0x0F))        # H4: 0xE4[11:4] 0xE5[3:0], signed
    cal.append((_s8(h[5]) << 4) | (h[4] >> 4))          # H5: 0xE6[11:4] 0xE5[7:4], signed
    cal.append(_s8(h[6]))                               # H6 s8 at 0xE7
    return cal


def raw_values(d):
    """The 8 data bytes at 0xF7.. -> (adc_P, adc_T, adc_H)."""
    return ((d[0] << 12) | (d[1] << 4) | (d[2] >> 4),
            (d[3] << 12) | (d[4] << 4) | (d[5] >> 4),
            (d[6] << 8) | d[7])


# Integer compensation, datasheet §4.2.3. Exact on any port (Python ints do not overflow);
# the firmware uses these, so an ESP32's single-precision floats cannot change a reading.

def t_fine_int(adc_t, cal):
    t1, t2, t3 = cal[0], cal[1], cal[2]
    var1 = ((((adc_t >> 3) - (t1 << 1))) * t2) >> 11
    d = (adc_t >> 4) - t1
    var2 = (((d * d) >> 12) * t3) >> 14
    return var1 + var2


def temperature_int(t_fine):
    """Temperature in 0.01 C."""
    return (t_fine * 5 + 128) >> 8


def pressure_int(adc_p, t_fine, cal):
    """Pressure in Pa as Q24.8 (divide by 256), the datasheet's 64-bit routine; 0 if the
    calibration would divide by zero."""
    p1, p2, p3, p4, p5, p6, p7, p8, p9 = cal[3:12]
    var1 = t_fine - 128000
    var2 = var1 * var1 * p6
    var2 = var2 + ((var1 * p5) << 17)
    var2 = var2 + (p4 << 35)
    var1 = ((var1 * var1 * p3) >> 8) + ((var1 * p2) << 12)
    var1 = (((1 << 47) + var1) * p1) >> 33
    if var1 == 0:
        return 0
    p = 1048576 - adc_p
    num = ((p << 31) - var2) * 3125
    p = num // var1 if (num >= 0) == (var1 > 0) else -((-num) // var1)  # C truncation
    var1 = (p9 * (p >> 13) * (p >> 13)) >> 25
    var2 = (p8 * p) >> 19
    return ((p + var1 + var2) >> 8) + (p7 << 4)


def humidity_int(adc_h, t_fine, cal):
    """Relative humidity in %RH as Q22.10 (divide by 1024), clamped to 0..100 %."""
    h1, h2, h3, h4, h5, h6 = cal[12:18]
    v = t_fine - 76800
    v = ((((adc_h << 14) - (h4 << 20) - (h5 * v)) + 16384) >> 15) * \
        (((((((v * h6) >> 10) * (((v * h3) >> 11) + 32768)) >> 10) + 2097152) * h2 + 8192) >> 14)
    v = v - (((((v >> 15) * (v >> 15)) >> 7) * h1) >> 4)
    if v < 0:
        v = 0
    if v > 419430400:
        v = 419430400
    return v >> 12


# Floating-point compensation, datasheet §8.1 (BMP280 §3.12 worked example uses these).

def temperature_float(adc_t, cal):
    """-> (temperature C, t_fine)."""
    t1, t2, t3 = cal[0], cal[1], cal[2]
    var1 = (adc_t / 16384.0 - t1 / 1024.0) * t2
    d = adc_t / 131072.0 - t1 / 8192.0
    var2 = d * d * t3
    return (var1 + var2) / 5120.0, int(var1 + var2)


def pressure_float(adc_p, t_fine, cal):
    p1, p2, p3, p4, p5, p6, p7, p8, p9 = cal[3:12]
    var1 = t_fine / 2.0 - 64000.0
    var2 = var1 * var1 * p6 / 32768.0
    var2 = var2 + var1 * p5 * 2.0
    var2 = var2 / 4.0 + p4 * 65536.0
    var1 = (p3 * var1 * var1 / 524288.0 + p2 * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * p1
    if var1 == 0:
        return 0.0
    p = 1048576.0 - adc_p
    p = (p - var2 / 4096.0) * 6250.0 / var1
    var1 = p9 * p * p / 2147483648.0
    var2 = p * p8 / 32768.0
    return p + (var1 + var2 + p7) / 16.0


def humidity_float(adc_h, t_fine, cal):
    h1, h2, h3, h4, h5, h6 = cal[12:18]
    v = t_fine - 76800.0
    v = (adc_h - (h4 * 64.0 + h5 / 16384.0 * v)) * \
        (h2 / 65536.0 * (1.0 + h6 / 67108864.0 * v * (1.0 + h3 / 67108864.0 * v)))
    v = v * (1.0 - h1 * v / 524288.0)
    if v > 100.0:
        return 100.0
    if v < 0.0:
        return 0.0
    return v


def compensate(d, cal, humidity=True):
    """8 data bytes + calibration -> (C, Pa, %RH or None), via the integer routines."""
    adc_p, adc_t, adc_h = raw_values(d)
    if adc_t == _SKIPPED:
        raise SensorError("bme280: no measurement in the result registers")
    tf = t_fine_int(adc_t, cal)
    t = temperature_int(tf) / 100
    p = pressure_int(adc_p, tf, cal) / 256 if adc_p != _SKIPPED else None
    h = humidity_int(adc_h, tf, cal) / 1024 if humidity else None
    return t, p, h


class BME280:
    """BME280 (humidity=True) or BMP280 (humidity=False) in forced mode, oversampling x1."""

    def __init__(self, i2c, address=0x76, name="env", humidity=True):
        self.name = name
        self.i2c = i2c
        self.address = address
        self.humidity = humidity
        ch = [("temperature", "C"), ("pressure", "Pa")]
        if humidity:
            ch.append(("humidity", "%RH"))
        self.channels = tuple(ch)
        self._cal = None
        self._buf = bytearray(26)
        self._one = bytearray(1)
        self._data = memoryview(self._buf)[:8]
        self._what = "bme280 at 0x%02x" % address

    def _setup(self):
        i2c, a = self.i2c, self.address
        i2c.readfrom_mem_into(a, _REG_CHIP_ID, self._one)
        want = _CHIP_BME280 if self.humidity else _CHIP_BMP280
        if self._one[0] != want:
            raise DeviceMissing("%s: chip id 0x%02x, expected 0x%02x"
                                % (self._what, self._one[0], want))
        i2c.readfrom_mem_into(a, _REG_CALIB_TP, self._buf)
        h = None
        if self.humidity:
            h = bytearray(7)
            i2c.readfrom_mem_into(a, _REG_CALIB_H, h)
        self._cal = parse_calibration(self._buf, h)

    def start(self):
        """Trigger one forced measurement; return the ms to wait before read() (datasheet
        Appendix B: 1.25 + 2.3 + 2.875 + 2.875 ms at x1)."""
        try:
            if self._cal is None:
                self._setup()
            if self.humidity:                         # a BMP280 has no ctrl_hum register
                self._one[0] = 0x01                   # osrs_h = x1 (must precede ctrl_meas)
                self.i2c.writeto_mem(self.address, _REG_CTRL_HUM, self._one)
            self._one[0] = 0x25                       # osrs_t x1, osrs_p x1, forced mode
            self.i2c.writeto_mem(self.address, _REG_CTRL_MEAS, self._one)
        except OSError as e:
            self._cal = None                          # re-read calibration once it is back
            raise bus_error(e, self._what)
        return 10

    def read(self):
        if self._cal is None:
            # Without a start() first (or after a bus error): trigger a measurement and wait
            # for it; reading at once returns the previous one, or 'skipped' after power-on.
            sleep_ms(self.start())
        d = self._data
        try:
            self.i2c.readfrom_mem_into(self.address, _REG_DATA, d)
        except OSError as e:
            self._cal = None
            raise bus_error(e, self._what)
        t, p, h = compensate(d, self._cal, self.humidity)
        if p is None:
            raise SensorError("%s: pressure not measured" % self._what)
        if self.humidity:
            return (t, p, h)
        return (t, p)
