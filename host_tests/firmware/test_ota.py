# dual: runs on CPython and on MicroPython
"""ota.py, the pure core of firmware updates: HMAC-SHA256 (RFC 4231 vectors), the offer's
checks (shape, hostile paths, sizes, signature), the chunk header, and the transfer's
bookkeeping resuming from what is on flash."""
import hashlib

from dualsupport import load_vectors, raises

from fieldlink import ota

KEY = b"0123456789abcdef-ota-key"


def _hex(b):
    return ota.hexof(b)


def test_hmac_rfc4231_vectors():
    assert _hex(ota.hmac_sha256(b"\x0b" * 20, b"Hi There")) == \
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    assert _hex(ota.hmac_sha256(b"Jefe", b"what do ya want for nothing?")) == \
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    # a key longer than the block is hashed first
    assert _hex(ota.hmac_sha256(b"\xaa" * 131,
                                b"Test Using Larger Than Block-Size Key - Hash Key First")) == \
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"


def _offer(files=None, ver="0.2.0", oid="abc123"):
    if files is None:
        files = [("fieldlink/__init__.mpy", 10, hashlib.sha256(b"x" * 10)),
                 ("fieldlink/link/hello.mpy", 3000, hashlib.sha256(b"y" * 3000))]
    fl = [(p, n, h if isinstance(h, str) else _hex(h.digest())) for p, n, h in files]
    size = sum(n for _, n, _ in fl)
    return {"t": "ota", "id": oid, "version": ver, "size": size,
            "files": [{"path": p, "size": n, "sha256": h} for p, n, h in fl],
            "sig": ota.sign(KEY, oid, ver, size, fl)}


def test_a_signed_offer_checks_out():
    m = _offer()
    oid, ver, size, files, sig = ota.check_offer(m)
    assert (oid, ver, size, len(files)) == ("abc123", "0.2.0", 3010, 2)
    assert ota.sig_ok(KEY, oid, ver, size, files, sig)


def test_a_changed_field_or_key_breaks_the_signature():
    m = _offer()
    oid, ver, size, files, sig = ota.check_offer(m)
    assert not ota.sig_ok(b"another-key-entirely", oid, ver, size, files, sig)
    assert not ota.sig_ok(KEY, oid, "0.2.1", size, files, sig)
    other = [files[0], (files[1][0], files[1][1], "0" * 64)]
    assert not ota.sig_ok(KEY, oid, ver, size, other, sig)
    bad = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    assert not ota.sig_ok(KEY, oid, ver, size, files, bad)


def test_hostile_offers_are_refused_with_a_reason():
    h = "a" * 64
    for files in ([("../boot.py", 1, h)], [("fieldlink/../../x", 1, h)], [("/fieldlink/x", 1, h)],
                  [("fieldlink/.hidden", 1, h)], [("main.py", 1, h)],
                  [("fieldlink/a b", 1, h)], [("fieldlink/x.mpy", -1, h)],
                  [("fieldlink/x.mpy", 1, "A" * 64)], [("fieldlink/x.mpy", 1, "a" * 63)],
                  [("fieldlink/x.mpy", 1, h), ("fieldlink/x.mpy", 1, h)]):
        m = _offer(files)
        e = raises(ota.Refused, ota.check_offer, m)
        assert str(e), files
    for ver in ("", "../x", "a/b", ".x", "v" * 33):
        raises(ota.Refused, ota.check_offer, _offer(ver=ver))
    m = _offer()
    m["size"] += 1
    assert "sum" in str(raises(ota.Refused, ota.check_offer, m))
    m = _offer()
    m["files"] = []
    raises(ota.Refused, ota.check_offer, m)
    m = _offer()
    m["sig"] = 5
    raises(ota.Refused, ota.check_offer, m)


def test_chunk_header_round_trip():
    msg = ota.chunk_message(3, 70000, b"data")
    assert ota.chunk_head(msg) == (3, 70000)
    assert bytes(msg[8:]) == b"data"
    raises(ota.Refused, ota.chunk_head, b"\0\0\0")


def test_transfer_asks_one_chunk_at_a_time_and_refuses_others():
    t = ota.Transfer([5000, 0, 10], [])
    got = []
    while True:
        w = t.want()
        if w is None:
            break
        assert w[2] <= ota.CHUNK
        got.append(w)
        raises(ota.Refused, t.got, w[0], w[1] + 1, w[2])   # not the one asked for
        t.got(w[0], w[1], w[2])
    assert got == [(0, 0, 2048), (0, 2048, 2048), (0, 4096, 904), (2, 0, 10)]
    assert t.done()
    raises(ota.Refused, t.got, 2, 10, 1)   # nothing asked


def test_transfer_resumes_from_the_sizes_on_flash():
    t = ota.Transfer([5000, 3000, 10], [5000, 1234, -1])
    assert t.want() == (1, 1234, 1766)
    t = ota.Transfer([5000, 3000], [5000, 3000])
    assert t.want() is None
    t = ota.Transfer([5000, 3000], [-1, -1])
    assert t.want() == (0, 0, 2048)
    t = ota.Transfer([100], [150])   # longer than it should be: starts over
    assert t.want() == (0, 0, 100)


def test_the_vector_signed_by_another_hmac_checks_out():
    v = load_vectors("proto")["ota_offer"]
    oid, ver, size, files, sig = ota.check_offer(v["offer"])
    assert ota.canonical(oid, ver, size, files) == v["canonical"].encode()
    assert ota.sig_ok(v["key"].encode(), oid, ver, size, files, sig)
    assert not ota.sig_ok(b"some-other-key-0123", oid, ver, size, files, sig)
