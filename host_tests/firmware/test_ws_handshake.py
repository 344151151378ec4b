# dual: runs on CPython and on MicroPython
"""The opening handshake (fieldlink.ws.handshake, RFC 6455 §4.1) from shared vectors."""
from dualsupport import load_vectors, raises

from fieldlink.ws import handshake
from fieldlink.ws.errors import HandshakeError, WSError

V = load_vectors("ws_handshake")
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def test_accept_value():
    for key, accept in V["accept"]:
        assert handshake.accept_for(key) == accept


def test_key_is_16_random_bytes_base64():
    import binascii
    k = handshake.make_key(lambda n: bytes(range(n)))
    assert binascii.a2b_base64(k) == bytes(range(16))
    assert len(k) == 24


def test_request_bytes():
    for r in V["requests"]:
        secure, host, port, path = handshake.parse_url(r["url"])
        got = handshake.build_request(host, port, path, KEY, secure, r["headers"],
                                      r["subprotocols"])
        assert got == r["wire"].encode(), r["url"]


def test_request_headers_as_dict():
    got = handshake.build_request("h", 80, "/", KEY, headers={"Authorization": "Bearer x"})
    assert b"\r\nAuthorization: Bearer x\r\n\r\n" in got


def test_header_injection_refused():
    raises(WSError, handshake.build_request, "h", 80, "/", KEY, False, [("X", "a\r\nB: c")])


def test_parse_urls():
    for url, want in V["urls"]:
        assert list(handshake.parse_url(url)) == want, url
    for url in V["bad_urls"]:
        raises(WSError, handshake.parse_url, url)


def test_ip_literals():
    for h in ("127.0.0.1", "10.0.0.255", "::1"):
        assert handshake.is_ip_literal(h), h
    for h in ("localhost", "1.2.3", "1.2.3.256", "example.com", "a.b.c.d"):
        assert not handshake.is_ip_literal(h), h


def test_responses():
    for r in V["responses"]:
        head = r["head"].encode()
        assert handshake.split_response(head + b"\x81\x00") == len(head), r["name"]
        if "error" in r:
            e = raises(HandshakeError, handshake.check_response, head, KEY, r.get("offer"))
            assert e.status == r["error"], (r["name"], e.status)
        else:
            got = handshake.check_response(head, KEY, r.get("offer"))
            assert got == r["subprotocol"], r["name"]


def test_incomplete_and_oversized_heads():
    assert handshake.split_response(b"HTTP/1.1 101 OK\r\nUpgrade: x\r\n") == -1
    e = raises(HandshakeError, handshake.split_response, b"HTTP/1.1 101 OK\r\nX: " + b"a" * 5000)
    assert e.status is None
