# dual: runs on CPython and on MicroPython
"""DHT22/AM2302 frame decoding against the datasheet's examples, and the wrapper."""
from dualsupport import load_vectors, raises, unhex
from fieldlink.drivers import dht, CRCError, DeviceMissing

V = load_vectors("sensors_dht22")


def test_datasheet_frames():
    for f in V["frames"]:
        rh, t = dht.decode(unhex(f["bytes"]))
        assert rh == f["rh"] and t == f["t"], (f, rh, t)


def test_bad_checksum():
    raises(CRCError, dht.decode, unhex(V["bad_checksum"]))


class FakeDHT:
    def __init__(self, buf, exc=None):
        self.buf = bytearray(buf)
        self.exc = exc

    def measure(self):
        if self.exc:
            raise self.exc


def test_wrapper_decodes_buf():
    s = dht.DHT22("Pin(4)", "porch", dev=FakeDHT(unhex("02 8c 80 65 73")))
    assert s.read() == (-10.1, 65.2)


def test_wrapper_maps_errors():
    s = dht.DHT22("Pin(4)", dev=FakeDHT(b"\0" * 5, OSError(110)))
    raises(DeviceMissing, s.read)
    s = dht.DHT22("Pin(4)", dev=FakeDHT(b"\0" * 5, Exception("checksum error")))
    raises(CRCError, s.read)
