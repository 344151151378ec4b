# dual: runs on CPython and on MicroPython
"""WebSocket framing and masking (fieldlink.ws.frames): encoder wire bytes from shared vectors."""
import sys

from dualsupport import BIG, SMALL_HEAP, load_vectors, too_big, unhex, wire

from fieldlink.ws import frames
from fieldlink.ws.frames import mask_copy

V = load_vectors("ws_frames")


def text_payload(s):
    """What encode_frame() takes for a str: on MicroPython (viper) the str itself and its
    UTF-8 length (read in place), elsewhere the encoded bytes."""
    if frames.str_nbytes is not None:
        return s, frames.str_nbytes(s, len(s))
    b = s.encode("utf-8")
    return b, len(b)


def keyed(key):
    # randbytes stub: every masking key drawn from the pool is `key`
    return lambda n: key * (n // 4)


def test_encode_vectors():
    for v in V["encode"]:
        if too_big(v, "wire"):
            continue
        key = unhex(v["key"])
        enc = frames.Encoder(keyed(key))
        if "text" in v:
            src, n = text_payload(v["text"])
        else:
            src = wire(v["payload"])
            n = len(src)
        size = enc.encode_frame(v["opcode"], src, n, v["fin"])
        got = bytes(memoryview(enc.out)[:size])
        assert got == wire(v["wire"]), v["name"]


def test_encoder_reuses_its_buffer_for_small_frames():
    enc = frames.Encoder(keyed(b"\x01\x02\x03\x04"))
    first = enc.buf
    for n in (0, 1, 100, 125, 126, 200):
        enc.encode(frames.OP_BINARY, bytes(n), n)
        assert enc.out is first
    # a one-off big frame does not replace the kept buffer for good
    enc.encode(frames.OP_BINARY, bytes(5000), 5000)
    assert enc.out is not first and enc.buf is first


def test_each_frame_gets_the_next_key_from_the_pool():
    pool = bytes(range(256))
    enc = frames.Encoder(lambda n: pool[:n])
    keys = []
    for _ in range(3):
        enc.encode(frames.OP_BINARY, b"", 0)
        keys.append(bytes(enc.out[2:6]))
    assert keys == [pool[0:4], pool[4:8], pool[8:12]]


def test_pool_is_refilled_after_64_frames():
    calls = []

    def rand(n):
        calls.append(n)
        return bytes([len(calls)]) * n
    enc = frames.Encoder(rand)
    for _ in range(65):
        enc.encode(frames.OP_TEXT, b"a", 1)
    assert calls == [256, 256]
    assert enc.out[2] == 2


def test_mask_copy_all_lengths_and_offsets():
    key = b"\x9a\x3c\xe1\x07"
    src = bytes((i * 7 + 3) & 0xFF for i in range(40))
    for n in range(0, 40):
        for off in (4, 5, 6, 7):
            dst = bytearray(off + n + 3)
            dst[off - 4:off] = key
            mask_copy(dst, off, src, n)
            want = bytes(src[i] ^ key[i % 4] for i in range(n))
            assert bytes(dst[off:off + n]) == want, (n, off)
            assert bytes(dst[off + n:]) == bytes(3)  # nothing written past n


def test_mask_copy_from_memoryview_slice():
    src = memoryview(b"xxhello")[2:]
    dst = bytearray(9)
    dst[0:4] = b"\x00\x00\x00\x00"
    mask_copy(dst, 4, src, 5)
    assert bytes(dst[4:]) == b"hello"


def test_text_payload_byte_length():
    for s in ("", "a", "h\u00e9", "\u20ac\u20ac", "\U0001F600x", "a\x00b"):
        src, n = text_payload(s)
        assert n == len(s.encode("utf-8")), s


def test_micropython_uses_the_viper_loops():
    # The speed and zero-allocation claims rest on these; a silent fallback would hide.
    from fieldlink.ws import utf8
    if sys.implementation.name == "micropython":
        from fieldlink.ws import _viper
        assert frames.frame_into is _viper.frame_into is not None
        assert frames.str_nbytes is _viper.str_nbytes is not None
        assert utf8.check is _viper.utf8_check
        # the source text was compiled and dropped, not kept in the heap
        assert "fieldlink.ws._viper_src" not in sys.modules
    else:
        assert frames.frame_into is None and frames.str_nbytes is None
        assert utf8.check.__module__ == "fieldlink.ws.utf8"


def test_fast_encode_equals_general_encode():
    # encode() (viper on MicroPython) and encode_frame() build the same final frames
    for n in (0, 1, 3, 125, 126, 200, 1000, 65535, 65536):
        if n > BIG and SMALL_HEAP:
            continue
        key = b"\x11\x22\x33\x44"
        a = frames.Encoder(keyed(key))
        b = frames.Encoder(keyed(key))
        src = (bytes(range(256)) * (n // 256 + 1))[:n]
        la = a.encode(frames.OP_BINARY, src, n)
        lb = b.encode_frame(frames.OP_BINARY, src, n, True)
        assert bytes(memoryview(a.out)[:la]) == bytes(memoryview(b.out)[:lb]), n


def test_encode_text_equals_encoding_the_utf8():
    # encode_text() frames a str without encoding it first (viper on MicroPython)
    for s in ("", "a", "h\u00e9\u20ac\U0001F600!", "m" * 100, "\u00e9" * 60, "x" * 300):
        key = b"\x01\x02\x03\x04"
        a = frames.Encoder(keyed(key))
        b = frames.Encoder(keyed(key))
        la = a.encode_text(s)
        u = s.encode("utf-8")
        lb = b.encode_frame(frames.OP_TEXT, u, len(u), True)
        assert bytes(memoryview(a.out)[:la]) == bytes(memoryview(b.out)[:lb]), s
