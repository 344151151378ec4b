# dual: runs on CPython and on MicroPython
"""DS18B20: the datasheet's temperature table, scratchpad checks (CRC, all-1s, all-0s),
the 85 C power-on value, ROM parsing, and the driver over a fake 1-Wire bus."""
from dualsupport import load_vectors, raises, unhex
from fieldlink.drivers import ds18b20, CRCError, DeviceMissing, SuspectReading

V = load_vectors("sensors_ds18b20")


def test_datasheet_temperature_table():
    for row in V["temperatures"]:
        raw = int(row["raw"], 16)
        assert ds18b20.temperature(raw) == row["c"], row


def test_lower_resolution_ignores_undefined_bits():
    assert ds18b20.temperature(0x0191, 9) == 25.0  # 9-bit: bits 2..0 undefined
    assert ds18b20.resolution(0x1F) == 9 and ds18b20.resolution(0x7F) == 12


def test_scratchpad_ok():
    assert ds18b20.check_scratchpad(unhex(V["scratchpad_25_0625"])) == 0x0191


def test_scratchpad_bad_crc():
    sp = bytearray(unhex(V["scratchpad_25_0625"]))
    sp[0] ^= 1
    raises(CRCError, ds18b20.check_scratchpad, sp)


def test_scratchpad_all_ones_is_missing_and_all_zeros_is_stuck():
    e = raises(DeviceMissing, ds18b20.check_scratchpad, b"\xff" * 9)
    assert "no device" in str(e)
    e = raises(DeviceMissing, ds18b20.check_scratchpad, b"\x00" * 9)  # CRC 0 passes!
    assert "stuck" in str(e)


def test_parse_rom():
    rom = ds18b20.parse_rom(V["rom"].replace(" ", ""))
    assert rom == unhex(V["rom"])
    raises(ValueError, ds18b20.parse_rom, "28ff4c6a71160300")


class FakeOW:
    def __init__(self, sp, present=True):
        self.sp = sp
        self.present = present
        self.sent = []

    def reset(self, required=False):
        return self.present

    def writebyte(self, b):
        self.sent.append(b)

    def write(self, buf):
        self.sent.extend(buf)

    def readinto(self, buf):
        buf[:] = self.sp


def test_driver_match_rom_and_convert():
    ow = FakeOW(unhex(V["scratchpad_25_0625"]))
    s = ds18b20.DS18B20(ow, V["rom"].replace(" ", ""), "water")
    assert s.start() == 750
    assert s.read() == (25.0625,)
    rom = list(unhex(V["rom"]))
    assert ow.sent == [0x55] + rom + [0x44] + [0x55] + rom + [0xBE]


def test_driver_skip_rom_without_rom():
    ow = FakeOW(unhex(V["scratchpad_25_0625"]))
    s = ds18b20.DS18B20(ow)
    s.start()
    s.read()
    assert ow.sent == [0xCC, 0x44, 0xCC, 0xBE]


def test_power_on_85_is_suspect_unless_it_was_already_hot():
    ow = FakeOW(unhex(V["scratchpad_power_on"]))
    s = ds18b20.DS18B20(ow)
    e = raises(SuspectReading, s.read)
    assert "85" in str(e)
    s._last = 84.5
    assert s.read() == (85.0,)


def test_no_presence_is_missing():
    s = ds18b20.DS18B20(FakeOW(b"", present=False))
    e = raises(DeviceMissing, s.start)
    assert "presence" in str(e)
