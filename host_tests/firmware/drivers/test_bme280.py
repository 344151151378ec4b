# dual: runs on CPython and on MicroPython
"""BME280 compensation against the BMP280 datasheet's worked example (§3.12), both the
floating-point and the integer routines; calibration parsing; a driver over a fake bus."""
from dualsupport import load_vectors, raises
from fieldlink.drivers import bme280, DeviceMissing, SensorError

V = load_vectors("sensors_bme280")
C = V["calibration"]
CAL = C["T"] + C["P"] + C["H"]


def test_temperature_float_and_t_fine():
    t, t_fine = bme280.temperature_float(V["adc_T"], CAL)
    assert t_fine == V["t_fine"]
    assert abs(t - V["temperature_c"]) < 0.005


def test_temperature_int():
    t_fine = bme280.t_fine_int(V["adc_T"], CAL)
    assert t_fine == V["t_fine"]
    assert bme280.temperature_int(t_fine) == 2508  # 0.01 C


def test_pressure_float_within_0_1_pa():
    p = bme280.pressure_float(V["adc_P"], V["t_fine"], CAL)
    assert abs(p - V["pressure_pa"]) < V["float_tolerance_pa"], p


def test_pressure_int_within_1_pa():
    p = bme280.pressure_int(V["adc_P"], V["t_fine"], CAL) / 256
    assert abs(p - V["pressure_pa"]) < V["int_tolerance_pa"], p


def test_pressure_zero_calibration_does_not_divide_by_zero():
    cal = list(CAL)
    cal[3] = 0  # P1 = 0
    assert bme280.pressure_int(V["adc_P"], V["t_fine"], cal) == 0
    assert bme280.pressure_float(V["adc_P"], V["t_fine"], cal) == 0.0


def test_humidity_clamped_to_0_100():
    for row in V["humidity_clamp"]:
        h_int = bme280.humidity_int(row["adc_H"], V["t_fine"], CAL) / 1024
        h_f = bme280.humidity_float(row["adc_H"], V["t_fine"], CAL)
        assert h_int == row["expect"], (row, h_int)
        assert h_f == row["expect"], (row, h_f)


def test_humidity_int_and_float_agree_midrange():
    for adc_h in (22000, 27000, 33000):
        a = bme280.humidity_int(adc_h, V["t_fine"], CAL) / 1024
        b = bme280.humidity_float(adc_h, V["t_fine"], CAL)
        assert 0 < a < 100 and abs(a - b) < 0.05, (adc_h, a, b)


def _cal_bytes():
    tp = bytearray(26)
    for i, v in enumerate(C["T"] + C["P"]):
        v &= 0xFFFF
        tp[2 * i] = v & 0xFF
        tp[2 * i + 1] = v >> 8
    h1, h2, h3, h4, h5, h6 = C["H"]
    tp[25] = h1
    h = bytearray(7)
    h[0], h[1], h[2] = h2 & 0xFF, (h2 >> 8) & 0xFF, h3
    h[3] = (h4 >> 4) & 0xFF
    h[4] = (h4 & 0x0F) | ((h5 & 0x0F) << 4)
    h[5] = (h5 >> 4) & 0xFF
    h[6] = h6 & 0xFF
    return tp, h


def test_parse_calibration_roundtrip():
    tp, h = _cal_bytes()
    assert bme280.parse_calibration(tp, h) == CAL


def test_parse_calibration_negative_h4_h5():
    tp, h = _cal_bytes()
    h[3], h[4], h[5] = 0xFF, 0xEE, 0xFE  # H4 = 0xFFE -> -2, H5 = 0xFEE -> -18
    cal = bme280.parse_calibration(tp, h)
    assert cal[15] == -2 and cal[16] == -18, cal[12:]


def test_raw_values_unpacks_20_and_16_bits():
    d = bytes([0x65, 0x5A, 0xC0, 0x7E, 0xED, 0x00, 0x80, 0x00])
    assert bme280.raw_values(d) == (415148, 519888, 0x8000)


class FakeI2C:
    def __init__(self, regs, present=True):
        self.regs = regs
        self.present = present
        self.writes = []
        self.events = []

    def readfrom_mem_into(self, addr, reg, buf):
        if not self.present or addr != 0x76:
            raise OSError(19)
        for i in range(len(buf)):
            buf[i] = self.regs.get(reg + i, 0)
        self.events.append("read 0x%02x" % reg)

    def writeto_mem(self, addr, reg, buf):
        if not self.present or addr != 0x76:
            raise OSError(19)
        self.writes.append((reg, bytes(buf)))
        self.events.append("write 0x%02x" % reg)


def _regs():
    tp, h = _cal_bytes()
    regs = {0xD0: 0x60}
    for i, b in enumerate(tp):
        regs[0x88 + i] = b
    for i, b in enumerate(h):
        regs[0xE1 + i] = b
    for i, b in enumerate([0x65, 0x5A, 0xC0, 0x7E, 0xED, 0x00, 0x6C, 0x00]):
        regs[0xF7 + i] = b
    return regs


def test_driver_reads_through_the_bus():
    bus = FakeI2C(_regs())
    s = bme280.BME280(bus, 0x76, "env")
    assert [c[0] for c in s.channels] == ["temperature", "pressure", "humidity"]
    assert s.start() == 10
    assert (0xF2, b"\x01") in bus.writes and (0xF4, b"\x25") in bus.writes
    t, p, h = s.read()
    assert t == 25.08
    assert abs(p - 100653.27) < 1
    assert 0 <= h <= 100


def test_driver_missing_device_raises_device_missing():
    s = bme280.BME280(FakeI2C(_regs(), present=False), 0x76, "env")
    e = raises(DeviceMissing, s.start)
    assert "0x76" in str(e) and "errno 19" in str(e)


def test_driver_wrong_chip_id():
    regs = _regs()
    regs[0xD0] = 0x58
    e = raises(DeviceMissing, bme280.BME280(FakeI2C(regs), 0x76).start)
    assert "chip id 0x58" in str(e)


def test_driver_skipped_measurement_is_an_error():
    regs = _regs()
    for i, b in enumerate([0x80, 0, 0, 0x80, 0, 0, 0x80, 0]):
        regs[0xF7 + i] = b
    s = bme280.BME280(FakeI2C(regs), 0x76)
    s.start()
    raises(SensorError, s.read)


def test_read_without_start_triggers_and_waits_for_the_conversion():
    # read() alone used to trigger a measurement and read the result registers at once:
    # the previous measurement, or 'skipped' (0x80000) right after power-on.
    bus = FakeI2C(_regs())
    s = bme280.BME280(bus, 0x76)
    real = bme280.sleep_ms
    bme280.sleep_ms = lambda ms: bus.events.append("sleep %d" % ms)
    try:
        t, p, h = s.read()
    finally:
        bme280.sleep_ms = real
    ev = bus.events
    assert ev.index("write 0xf4") < ev.index("sleep 10") < ev.index("read 0xf7"), ev
    assert t == 25.08


def test_bmp280_reads_t_and_p_and_leaves_ctrl_hum_alone():
    regs = _regs()
    regs[0xD0] = 0x58
    bus = FakeI2C(regs)
    s = bme280.BME280(bus, 0x76, "env", humidity=False)
    assert [c[0] for c in s.channels] == ["temperature", "pressure"]
    s.start()
    t, p = s.read()
    assert t == 25.08 and abs(p - 100653.27) < 1
    assert [w[0] for w in bus.writes] == [0xF4]  # 0xF2 is reserved on the BMP280
