# dual: runs on CPython and on MicroPython
"""Analog (linear calibration), chip temperature, simulated readings."""
from dualsupport import raises
from fieldlink import simulated
from fieldlink.drivers import analog, chip_temp, DeviceMissing


class FakeADC:
    def read_uv(self):
        return 1650000


def test_linear():
    assert analog.linear(1650000) == 1.65
    assert analog.linear(1000000, 2.0, -0.5) == 1.5


def test_analog_driver():
    a = analog.Analog(FakeADC(), "soil", scale=100 / 3.3, offset=0.0, unit="%",
                      quantity="moisture")
    assert a.channels == (("moisture", "%"),)
    assert abs(a.read()[0] - 50.0) < 1e-9


class S3Chip:
    def mcu_temperature(self):
        return 41


class Esp32Chip:
    def raw_temperature(self):
        return 122


def test_chip_temp_variants():
    assert chip_temp.ChipTemp("chip", S3Chip()).read() == (41.0,)
    assert chip_temp.ChipTemp("chip", Esp32Chip()).read() == (50.0,)
    raises(DeviceMissing, chip_temp.ChipTemp("chip", object()).read)


def test_simulated_is_deterministic_and_bounded():
    a = simulated.Simulated("sim", seed=7)
    b = simulated.Simulated("sim", seed=7)
    ra = [a.read() for _ in range(50)]
    assert ra == [b.read() for _ in range(50)]
    assert ra != [simulated.Simulated("sim", seed=8).read() for _ in range(50)]
    for t, h, p in ra:
        assert -10 <= t <= 45 and 0 <= h <= 100 and 95000 <= p <= 106000


def test_simulated_subset():
    s = simulated.Simulated("sim", quantities=("temperature",))
    assert s.channels == (("temperature", "C"),) and len(s.read()) == 1
