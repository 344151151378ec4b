# dual: runs on CPython and on MicroPython
"""SHT3x/SHT4x conversions and CRC checking, and the drivers over a fake bus."""
from dualsupport import load_vectors, raises, unhex
from fieldlink.drivers import sht3x, CRCError, DeviceMissing

V = load_vectors("sensors_sht")


def _close(a, b, tol=0.001):
    return abs(a - b) < tol


def test_sht3x_vectors():
    for v in V["sht3x"]:
        t, rh = sht3x.decode(unhex(v["answer"]))
        assert _close(t, v["t"]) and _close(rh, v["rh"]), (v, t, rh)


def test_sht4x_vectors_and_crop():
    for v in V["sht4x"]:
        t, rh = sht3x.decode(unhex(v["answer"]), sht4x=True)
        assert _close(t, v["t"]) and _close(rh, v["rh"]), (v, t, rh)
    assert sht3x.sht4x_humidity(0) == 0.0      # -6 % cropped
    assert sht3x.sht4x_humidity(65535) == 100.0  # 119 % cropped


def test_bad_crc_raises():
    e = raises(CRCError, sht3x.decode, unhex(V["bad_crc"]))
    assert "word 0" in str(e)


class FakeI2C:
    def __init__(self, answer, present=True):
        self.answer = answer
        self.present = present
        self.cmds = []

    def writeto(self, addr, buf):
        if not self.present:
            raise OSError(19)
        self.cmds.append(bytes(buf))
        return len(buf)

    def readfrom_into(self, addr, buf):
        if not self.present:
            raise OSError(116)
        buf[:] = self.answer


def test_sht3x_driver_sends_single_shot_command():
    bus = FakeI2C(unhex("66 66 93 80 00 a2"))
    s = sht3x.SHT3x(bus, 0x44, "air")
    assert s.start() >= 15
    t, rh = s.read()
    assert bus.cmds == [b"\x24\x00"] and _close(t, 25.0) and _close(rh, 50.0008)


def test_sht4x_driver_command():
    bus = FakeI2C(unhex("66 66 93 80 00 a2"))
    s = sht3x.SHT4x(bus, 0x44, "air")
    s.start()
    s.read()
    assert bus.cmds == [b"\xfd"]


def test_driver_crc_error_names_device():
    s = sht3x.SHT3x(FakeI2C(unhex(V["bad_crc"])), 0x45)
    s.start()
    e = raises(CRCError, s.read)
    assert "sht3x at 0x45" in str(e)


def test_driver_missing():
    s = sht3x.SHT3x(FakeI2C(b"", present=False), 0x44)
    e = raises(DeviceMissing, s.start)
    assert "no answer" in str(e)
