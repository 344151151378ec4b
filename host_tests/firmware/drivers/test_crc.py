# dual: runs on CPython and on MicroPython
"""CRC-8s against the datasheets' examples (Sensirion 0xBEEF -> 0x92; Dallas ROM -> A2)."""
from dualsupport import load_vectors, unhex
from fieldlink.drivers.crc import crc8_sensirion, crc8_dallas

V = load_vectors("sensors_crc")


def test_sensirion_vectors():
    for v in V["sensirion"]:
        assert crc8_sensirion(unhex(v["data"])) == v["crc"], v


def test_sensirion_datasheet_example():
    assert crc8_sensirion(b"\xbe\xef") == 0x92


def test_sensirion_slice_matches_whole():
    buf = b"\x00\xbe\xef\x92"
    assert crc8_sensirion(buf, 1, 3) == 0x92


def test_dallas_vectors():
    for v in V["dallas"]:
        assert crc8_dallas(unhex(v["data"])) == v["crc"], v


def test_dallas_rom_example_and_zero_residue():
    rom = unhex("02 1c b8 01 00 00 00 a2")
    assert crc8_dallas(rom, 0, 7) == 0xA2
    assert crc8_dallas(rom) == 0  # CRC over data + its CRC is 0


def test_dallas_detects_single_bit_flip():
    rom = bytearray(unhex("02 1c b8 01 00 00 00 a2"))
    rom[3] ^= 0x10
    assert crc8_dallas(rom) != 0
