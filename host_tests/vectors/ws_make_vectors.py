"""Regenerates ws_frames.json and ws_handshake.json: the WebSocket core's shared test vectors.

Expected wire bytes come from the RFC 6455 formulas written out plainly here (and the §5.7
examples), not from the firmware's encoder. Run: .venv/bin/python host_tests/vectors/ws_make_vectors.py
"""
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def frame(op, payload=b"", fin=True, key=None, rsv=0):
    b0 = (0x80 if fin else 0) | rsv | op
    n = len(payload)
    m = 0x80 if key is not None else 0
    if n < 126:
        h = bytes([b0, m | n])
    elif n < 65536:
        h = bytes([b0, m | 126]) + n.to_bytes(2, "big")
    else:
        h = bytes([b0, m | 127]) + n.to_bytes(8, "big")
    if key is None:
        return h + payload
    return h + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))


def seg(data):
    """Wire bytes as a list of segments: hex strings, or [hex_byte, count] for long runs."""
    out, i = [], 0
    while i < len(data):
        j = i
        while j < len(data) and data[j] == data[i]:
            j += 1
        if j - i >= 16:
            out.append([data[i:i + 1].hex(), j - i])
        else:
            if out and isinstance(out[-1], str):
                out[-1] += data[i:j].hex()
            else:
                out.append(data[i:j].hex())
        i = j
    return out


Z = bytes(4)  # the tests' randbytes gives all-zero masking keys for replies
K = bytes.fromhex("37fa213d")  # RFC 6455 §5.7's example key

encode = []


def enc(name, op, payload, key, fin=True, text=None):
    v = {"name": name, "opcode": op, "fin": fin, "key": key.hex(),
         "wire": seg(frame(op, payload, fin, key))}
    if text is not None:
        v["text"] = text
    else:
        v["payload"] = seg(payload)
    encode.append(v)


enc("rfc_5_7_masked_hello", 1, b"Hello", K, text="Hello")
assert frame(1, b"Hello", key=K).hex() == "818537fa213d7f9f4d5158"  # §5.7
enc("empty_binary", 2, b"", bytes.fromhex("01020304"))
enc("empty_text", 1, b"", bytes.fromhex("01020304"), text="")
enc("binary_125", 2, bytes(range(125)), bytes.fromhex("a1b2c3d4"))
enc("binary_126_16bit_length", 2, b"a" * 126, bytes.fromhex("00000000"))
enc("binary_127_16bit_length", 2, bytes(range(127)), bytes.fromhex("ff00ff00"))
enc("binary_65535", 2, b"\x55" * 65535, bytes.fromhex("01010101"))
enc("binary_65536_64bit_length", 2, b"\x55" * 65536, bytes.fromhex("01010101"))
enc("text_multibyte", 1, "h\u00e9\u20ac\U0001F600!".encode(), bytes.fromhex("0a0b0c0d"),
    text="h\u00e9\u20ac\U0001F600!")
enc("text_odd_length_7", 1, b"abcdefg", bytes.fromhex("deadbeef"), text="abcdefg")
enc("first_fragment", 1, b"Hel", K, fin=False)
enc("ping_hello", 9, b"Hello", K)
enc("pong_empty", 10, b"", K)
enc("close_1000", 8, b"\x03\xe8", K)

# --- receiving ----------------------------------------------------------------------------
receive = []


def rx(name, chunks, events=(), fail=None, sent=b"", max_message=None, state=None):
    v = {"name": name, "chunks": [seg(c) for c in chunks], "events": list(events)}
    if fail:
        v["fail"] = fail
    else:
        v["sent"] = seg(sent)
    if max_message:
        v["max_message"] = max_message
    if state:
        v["state"] = state
    receive.append(v)


def f(op, payload=b"", fin=True, **kw):
    return frame(op, payload, fin, **kw)


rx("rfc_text_hello", [bytes.fromhex("810548656c6c6f")], [["text", "Hello"]])
rx("empty_text", [f(1)], [["text", ""]])
rx("empty_binary", [f(2)], [["binary", ""]])
rx("binary_125", [f(2, bytes(range(125)))], [["binary", bytes(range(125)).hex()]])
rx("binary_126", [f(2, bytes(range(126)))], [["binary", bytes(range(126)).hex()]])
rx("binary_65536", [f(2, b"\xab" * 65536)], [["binary", ["ab", 65536]]], max_message=65536)
rx("rfc_fragmented_text", [bytes.fromhex("010348656c"), bytes.fromhex("80026c6f")],
   [["text", "Hello"]])
rx("fragments_with_ping_between", [f(1, b"Hel", False) + f(9, b"p") + f(0, b"lo")],
   [["ping", "70"], ["text", "Hello"]], sent=frame(10, b"p", key=Z))
rx("three_binary_fragments_with_pong", [f(2, b"\x01", False), f(0, b"\x02", False),
                                        f(10, b"x"), f(0, b"\x03")],
   [["pong", "78"], ["binary", "010203"]])
rx("rfc_ping_hello_is_ponged", [bytes.fromhex("890548656c6c6f")], [["ping", "48656c6c6f"]],
   sent=frame(10, b"Hello", key=Z))
rx("empty_ping", [f(9)], [["ping", ""]], sent=frame(10, b"", key=Z))
rx("ping_125", [f(9, b"\x07" * 125)], [["ping", "07" * 125]], sent=frame(10, b"\x07" * 125, key=Z))
rx("unsolicited_pong", [f(10, b"hi")], [["pong", "6869"]])
rx("close_1000_echoed", [f(8, b"\x03\xe8bye")], [["close", 1000, "bye"]],
   sent=frame(8, b"\x03\xe8", key=Z), state="closed")
rx("close_empty_is_1005", [f(8)], [["close", 1005, ""]], sent=frame(8, b"", key=Z),
   state="closed")
rx("close_3000", [f(8, b"\x0b\xb8")], [["close", 3000, ""]], sent=frame(8, b"\x0b\xb8", key=Z),
   state="closed")
rx("close_4999_utf8_reason", [f(8, b"\x13\x87" + "\u00e9t\u00e9".encode())],
   [["close", 4999, "\u00e9t\u00e9"]], sent=frame(8, b"\x13\x87", key=Z), state="closed")
rx("close_1012_registered", [f(8, b"\x03\xf4")], [["close", 1012, ""]],
   sent=frame(8, b"\x03\xf4", key=Z), state="closed")
rx("data_after_close_ignored", [f(8, b"\x03\xe8") + f(1, b"late")], [["close", 1000, ""]],
   sent=frame(8, b"\x03\xe8", key=Z), state="closed")
rx("bad_frame_after_close_ignored", [f(8, b"\x03\xe8") + f(1, b"", rsv=0x40)],
   [["close", 1000, ""]], sent=frame(8, b"\x03\xe8", key=Z), state="closed")
rx("utf8_split_across_fragments", [f(1, b"\xc3", False), f(0, b"\xa9")], [["text", "\u00e9"]])
rx("emoji_split_in_three", [f(1, b"\xf0\x9f", False), f(0, b"\x98", False), f(0, b"\x80")],
   [["text", "\U0001F600"]])
rx("max_size_exact", [f(1, b"x" * 100)], [["text", "x" * 100]], max_message=100)
rx("fragments_up_to_max", [f(2, b"\x00" * 50, False), f(0, b"\x00" * 50)],
   [["binary", "00" * 100]], max_message=100)
rx("two_messages_one_chunk", [f(1, b"a") + f(2, b"b")], [["text", "a"], ["binary", "62"]])
rx("nonminimal_length_accepted", [bytes.fromhex("817e0003") + b"abc"], [["text", "abc"]])

# §7.1.7 failures
rx("rsv1", [f(1, b"a", rsv=0x40)], fail=1002)
rx("rsv2", [f(1, b"a", rsv=0x20)], fail=1002)
rx("rsv3_on_ping", [f(9, b"", rsv=0x10)], fail=1002)
for op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15):
    rx("opcode_%d" % op, [f(op)], fail=1002)
rx("ping_126", [f(9, b"\x00" * 126)], fail=1002)
rx("ping_126_header_only", [bytes.fromhex("897e007e")], fail=1002)
rx("close_126", [f(8, b"\x03\xe8" + b"a" * 124)], fail=1002)
rx("fragmented_ping", [f(9, b"", False)], fail=1002)
rx("fragmented_close", [f(8, b"\x03\xe8", False)], fail=1002)
rx("continuation_without_start", [f(0, b"x")], fail=1002)
rx("new_message_inside_fragmented", [f(1, b"a", False) + f(1, b"b")], fail=1002)
rx("masked_server_frame", [bytes.fromhex("818537fa213d7f9f4d5158")], fail=1002)
rx("close_one_byte", [f(8, b"\x03")], fail=1002)
for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535):
    rx("close_code_%d" % code, [f(8, code.to_bytes(2, "big"))], fail=1002)
rx("length_top_bit_set", [bytes.fromhex("827f8000000000000000")], fail=1002)
rx("utf8_ff", [f(1, b"\xff")], fail=1007)
rx("utf8_overlong", [f(1, b"\xc0\xaf")], fail=1007)
rx("utf8_overlong_3", [f(1, b"\xe0\x80\xaf")], fail=1007)
rx("utf8_surrogate", [f(1, b"\xed\xa0\x80")], fail=1007)
rx("utf8_over_10ffff", [f(1, b"\xf4\x90\x80\x80")], fail=1007)
rx("utf8_truncated_at_end", [f(1, b"ab\xc3")], fail=1007)
rx("utf8_bad_across_fragments", [f(1, b"\xc3", False), f(0, b"(")], fail=1007)
rx("utf8_fails_before_message_ends", [f(1, b"ok\xff", False)], fail=1007)
rx("close_reason_bad_utf8", [f(8, b"\x03\xe8\xff")], fail=1007)
rx("over_max_from_header_only", [bytes.fromhex("8165")], fail=1009, max_message=100)
rx("over_max_64bit_header_only", [bytes.fromhex("827f0000000100000000")], fail=1009)
rx("fragments_over_max", [f(2, b"\x00" * 60, False), bytes.fromhex("0029")], fail=1009,
   max_message=100)
rx("message_then_rsv", [f(1, b"ok") + f(1, b"", rsv=0x40)], [["text", "ok"]], fail=1002)

(HERE / "ws_frames.json").write_text(json.dumps(
    {"_doc": "WebSocket framing vectors: wire bytes as hex segments ([hex, count] = a run). "
             "Replies are masked with all-zero keys in the tests.",
     "encode": encode, "receive": receive}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

# --- handshake ----------------------------------------------------------------------------
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACC = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # §1.3 example
ok = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: %s\r\n" % ACC)
hs = {
    "accept": [[KEY, ACC]],
    "requests": [
        {"url": "ws://127.0.0.1:8765/ingest?x=1", "headers": [["Authorization", "Bearer t0k"]],
         "subprotocols": ["fieldlink.v1", "chat"],
         "wire": "GET /ingest?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8765\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                 "Sec-WebSocket-Protocol: fieldlink.v1, chat\r\nAuthorization: Bearer t0k\r\n\r\n"
                 % KEY},
        {"url": "wss://example.com", "headers": None, "subprotocols": None,
         "wire": "GET / HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13"
                 "\r\n\r\n" % KEY},
        {"url": "ws://example.com:80/a", "headers": None, "subprotocols": None,
         "wire": "GET /a HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13"
                 "\r\n\r\n" % KEY},
    ],
    "urls": [
        ["ws://host/path", [False, "host", 80, "/path"]],
        ["wss://host", [True, "host", 443, "/"]],
        ["ws://10.0.0.2:9000", [False, "10.0.0.2", 9000, "/"]],
        ["wss://h.example:8443/a/b?c=d", [True, "h.example", 8443, "/a/b?c=d"]],
        ["ws://[::1]:81/x", [False, "::1", 81, "/x"]],
    ],
    "bad_urls": ["http://host/", "ws://", "ws://host:abc/", "ws://host/#frag", "ws://u@h/"],
    "responses": [
        {"name": "ok", "head": ok + "\r\n", "subprotocol": None},
        {"name": "ok_case_and_lists", "head": ok.replace("Upgrade: websocket", "UPGRADE: WebSocket")
         .replace("Connection: Upgrade", "connection: keep-alive, upgrade") + "\r\n",
         "subprotocol": None},
        {"name": "subprotocol_chosen", "offer": ["a", "b"],
         "head": ok + "Sec-WebSocket-Protocol: b\r\n\r\n", "subprotocol": "b"},
        {"name": "subprotocol_none_chosen", "offer": ["a"], "head": ok + "\r\n",
         "subprotocol": None},
        {"name": "subprotocol_not_offered", "offer": ["a"],
         "head": ok + "Sec-WebSocket-Protocol: z\r\n\r\n", "error": 101},
        {"name": "subprotocol_unasked", "head": ok + "Sec-WebSocket-Protocol: z\r\n\r\n",
         "error": 101},
        {"name": "wrong_accept", "head": ok.replace(ACC, "x" + ACC[1:]) + "\r\n", "error": 101},
        {"name": "missing_accept", "head": ok.replace("Sec-WebSocket-Accept: %s\r\n" % ACC, "")
         + "\r\n", "error": 101},
        {"name": "missing_upgrade", "head": ok.replace("Upgrade: websocket\r\n", "") + "\r\n",
         "error": 101},
        {"name": "missing_connection", "head": ok.replace("Connection: Upgrade\r\n", "")
         + "\r\n", "error": 101},
        {"name": "extension_not_offered",
         "head": ok + "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n", "error": 101},
        {"name": "status_401", "head": "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
         "error": 401},
        {"name": "status_503", "head": "HTTP/1.1 503 Service Unavailable\r\n\r\n", "error": 503},
        {"name": "status_200", "head": "HTTP/1.1 200 OK\r\n\r\n", "error": 200},
        {"name": "garbage_status", "head": "SSH-2.0-OpenSSH\r\n\r\n", "error": None},
    ],
}
(HERE / "ws_handshake.json").write_text(json.dumps(hs, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
print("wrote", len(encode), "encode and", len(receive), "receive vectors")
