"""A hostile server for every rule of RFC 6455 §7.1.7 the client enforces: it completes the
handshake (or botches it) and then misbehaves. The client runs on MicroPython; we assert it
raised the right exception AND sent a close frame with the right code."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ws_support as S  # noqa: E402

pytestmark = pytest.mark.micropython
F = S.frame

# (name, bytes the server sends after a valid handshake, expected close code)
FAILURES = [
    ("rsv1_without_extension", bytes.fromhex("c100"), 1002),
    ("rsv3_on_ping", bytes.fromhex("9900"), 1002),
    ("unknown_opcode_3", bytes.fromhex("8300"), 1002),
    ("unknown_opcode_11", bytes.fromhex("8b00"), 1002),
    ("ping_over_125_bytes", F(9, b"p" * 126), 1002),
    ("close_over_125_bytes", F(8, b"\x03\xe8" + b"r" * 124), 1002),
    ("fragmented_ping", F(9, b"x", fin=False), 1002),
    ("continuation_without_start", F(0, b"x"), 1002),
    ("new_message_inside_fragmented", F(1, b"a", fin=False) + F(1, b"b"), 1002),
    ("masked_server_frame", bytes.fromhex("818537fa213d7f9f4d5158"), 1002),
    ("close_payload_one_byte", F(8, b"\x03"), 1002),
    ("close_code_999", F(8, b"\x03\xe7"), 1002),
    ("close_code_1005_reserved", F(8, b"\x03\xed"), 1002),
    ("close_code_1006_reserved", F(8, b"\x03\xee"), 1002),
    ("close_code_2000", F(8, b"\x07\xd0"), 1002),
    ("close_code_5000", F(8, b"\x13\x88"), 1002),
    ("invalid_utf8", F(1, b"ok \xff"), 1007),
    ("surrogate_utf8", F(1, b"\xed\xa0\x80"), 1007),
    ("utf8_broken_across_fragments", F(1, b"\xc3", fin=False) + F(0, b"("), 1007),
    ("text_ends_mid_character", F(1, b"a\xe2\x82"), 1007),
    ("close_reason_invalid_utf8", F(8, b"\x03\xe8\xff"), 1007),
    ("over_max_message_header_only", bytes.fromhex("827e03e9"), 1009),
    ("over_max_message_64bit_header", bytes.fromhex("827f0000000100000000"), 1009),
    ("fragments_over_max_message", F(2, b"\x00" * 600, fin=False) + F(0, b"\x00" * 401), 1009),
]
MAX_MESSAGE = 1000


@pytest.fixture(scope="module")
def failures():
    cases = [{"send": F(1, b"before") + data} for _, data, _ in FAILURES]
    with S.Hostile(cases) as h:
        lines = S.run_client("hostile", {"urls": [h.url(i) for i in range(len(cases))],
                                         "opts": {"max_message": MAX_MESSAGE}})
        yield h, lines


@pytest.mark.parametrize("i", range(len(FAILURES)), ids=[f[0] for f in FAILURES])
def test_client_fails_connection_with_right_code(failures, i):
    h, lines = failures
    name, _, code = FAILURES[i]
    mine = [l for l in lines if l.get("case") == i]
    # the good message before the bad frame is still delivered
    assert mine[0] == {"step": "msg", "case": i, "text": "before"}, mine
    end = mine[1]
    assert end["exc"] == "ProtocolError" and end["code"] == code, (name, end)
    assert end["closed"] is True
    # §7.1.7: the client sent a (masked) close frame carrying that code, and nothing after it
    frames = S.parse_client_frames(bytes(h.received[i]))
    assert frames and frames[-1][0] == 8, (name, frames)
    assert int.from_bytes(frames[-1][1][:2], "big") == code, (name, frames)
    # sending afterwards raises the same failure
    assert mine[2] == {"step": "send_after", "case": i, "exc": "ProtocolError", "code": code,
                       "reason": end["reason"]}


@pytest.fixture(scope="module")
def failures_in_exchange():
    # the same bad frames, sent only after the client answered a first message: its next
    # recv() reads the socket itself instead of the reader task (see client._read_here)
    cases = [{"send": F(1, b"before"), "later": F(1, b"second") + data}
             for _, data, _ in FAILURES]
    with S.Hostile(cases) as h:
        lines = S.run_client("exchange", {"urls": [h.url(i) for i in range(len(cases))],
                                          "opts": {"max_message": MAX_MESSAGE}})
        yield h, lines


@pytest.mark.parametrize("i", range(len(FAILURES)), ids=[f[0] for f in FAILURES])
def test_recv_reading_the_socket_fails_connection_with_right_code(failures_in_exchange, i):
    h, lines = failures_in_exchange
    name, _, code = FAILURES[i]
    mine = [l for l in lines if l.get("case") == i]
    assert mine[0] == {"step": "msg", "case": i, "text": "before"}, mine
    assert mine[1] == {"step": "msg", "case": i, "text": "second", "here": True}, mine
    end = mine[2]
    assert end["exc"] == "ProtocolError" and end["code"] == code and end["here"], (name, end)
    assert end["closed"] is True
    frames = S.parse_client_frames(bytes(h.received[i]))
    assert frames[0] == (1, b"go"), (name, frames)
    assert frames[-1][0] == 8 and int.from_bytes(frames[-1][1][:2], "big") == code, (
        name, frames)
    assert mine[3] == {"step": "send_after", "case": i, "exc": "ProtocolError", "code": code,
                       "reason": end["reason"]}


def test_recv_reading_the_socket_sees_eof_and_close():
    cases = [{"send": F(1, b"before"), "later": F(1, b"second"), "eof_later": True},
             {"send": F(1, b"before"), "later": F(1, b"second") + F(8, b"\x0f\xa1bye")}]
    with S.Hostile(cases) as h:
        lines = S.run_client("exchange", {"urls": [h.url(0), h.url(1)]})
    ends = {l["case"]: l for l in lines if l["step"] == "case"}
    assert {"step": "msg", "case": 0, "text": "second", "here": True} in lines
    assert ends[0]["exc"] == "ConnectionClosed" and ends[0]["code"] == 1006, ends
    assert {"step": "msg", "case": 1, "text": "second", "here": True} in lines
    assert ends[1]["exc"] == "ConnectionClosed" and ends[1]["code"] == 4001, ends
    assert ends[1]["reason"] == "bye"
    # §5.5.1: our close frame echoed the server's code
    frames = S.parse_client_frames(bytes(h.received[1]))
    assert frames[-1] == (8, b"\x0f\xa1"), frames


def test_failing_reads_the_rest_before_closing_and_is_bounded():
    # §7.1.7 then §7.1.1: a 1009 header followed by 256 KiB of its payload (more than the
    # client's whole heap). The client sends its close frame, then reads and drops the rest
    # (into its one read buffer) until the server closes TCP (case 0:
    # half-close), or until its 5 s bound (case 1: the server never closes), and only then
    # closes: all read, so FIN, never the RST that could destroy the close frame.
    data = bytes.fromhex("827f0000000000040000") + bytes(1 << 18)
    cases = [{"send": data, "after_close": "half_close"},
             {"send": data, "after_close": "linger"}]
    with S.Hostile(cases) as h:
        lines = S.run_client("fail_bound", {"urls": [h.url(0), h.url(1)],
                                            "opts": {"max_message": MAX_MESSAGE}},
                             heapsize="160k")
        ends = h.wait_ends(2)
    got = {l["case"]: l for l in lines if l["step"] == "case"}
    for i in (0, 1):
        assert got[i]["exc"] == "ProtocolError" and got[i]["code"] == 1009, got
        # recv() raised at once, while the client still waited for the server's TCP close
        assert got[i]["reader_done_at_raise"] is False, got
        frames = S.parse_client_frames(bytes(h.received[i]))
        assert frames[-1] == (8, frames[-1][1]) and frames[-1][1][:2] == b"\x03\xf1", frames
    assert ends == {0: "eof", 1: "eof"}, ends
    # the server that never closes: close() returned once the bound (5 s) passed, not never
    assert 4000 <= got[1]["close_ms"] < 30000, got


HANDSHAKES = [
    ("wrong_accept", {"head": "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                              "Connection: Upgrade\r\nSec-WebSocket-Accept: AAAA\r\n\r\n"},
     {"exc": "HandshakeError", "status": 101}),
    ("service_unavailable", {"head": "HTTP/1.1 503 Service Unavailable\r\n\r\n"},
     {"exc": "HandshakeError", "status": 503}),
    ("not_http", {"head": "SSH-2.0-hello\r\n\r\n"}, {"exc": "HandshakeError"}),
    ("closed_during_handshake", {"head": "HTTP/1.1 101 Swi", "eof": True},
     {"exc": "HandshakeError"}),
    ("silent_server", {"silent": True}, {"exc": "ConnectTimeout"}),
]


def test_handshake_failures():
    with S.Hostile([c for _, c, _ in HANDSHAKES]) as h:
        lines = S.run_client("hostile", {"urls": [h.url(i) for i in range(len(HANDSHAKES))],
                                         "opts": {"handshake_timeout_s": 1}})
    ends = {l["case"]: l for l in lines if l["step"] == "case"}
    for i, (name, _, want) in enumerate(HANDSHAKES):
        got = ends[i]
        assert got["where"] == "connect", (name, got)
        for k, v in want.items():
            assert got.get(k) == v, (name, got)


def test_connection_refused_is_wserror_with_errno(refused_port):
    lines = S.run_client("hostile", {"urls": ["ws://127.0.0.1:%d/" % refused_port]})
    end = [l for l in lines if l["step"] == "case"][0]
    assert end["exc"] == "WSError" and end["errno"] == 111, end  # ECONNREFUSED


def test_abrupt_eof_is_connection_closed_1006():
    with S.Hostile([{"send": F(1, b"hi"), "eof": True}]) as h:
        lines = S.run_client("hostile", {"urls": [h.url(0)]})
    assert {"step": "msg", "case": 0, "text": "hi"} in lines
    end = [l for l in lines if l["step"] == "case"][0]
    assert end["exc"] == "ConnectionClosed" and end["code"] == 1006, end


def test_keepalive_declares_link_dead_when_no_pong():
    # the server completes the handshake and then never answers anything
    with S.Hostile([{"send": b""}]) as h:
        lines = S.run_client("hostile", {"urls": [h.url(0)], "opts": {
            "ping_interval_s": 0.3, "ping_timeout_s": 0.5}})
        end = [l for l in lines if l["step"] == "case"][0]
        assert end["exc"] == "LinkDead", end
        assert end["closed"] is True
        pings = [f for f in S.parse_client_frames(bytes(h.received[0])) if f[0] == 9]
        assert pings, "the keepalive sent no ping"


def test_keepalive_satisfied_by_pongs():
    # a server that answers the pings keeps the link alive past several timeouts
    import asyncio

    async def handler(ws):
        await asyncio.sleep(1.5)
        await ws.send("still here")
        await ws.close()

    with S.websockets_server(handler, ping_interval=None) as srv:
        lines = S.run_client("receive_all", {
            "url": "ws://127.0.0.1:%d/" % srv.port,
            "opts": {"ping_interval_s": 0.2, "ping_timeout_s": 0.3}})
    assert {"step": "msg", "type": "str", "text": "still here"} in lines
    assert lines[-1]["exc"] == "ConnectionClosed" and lines[-1]["code"] == 1000


@pytest.mark.parametrize("interp", ["micropython", "cpython"])
def test_close_frame_then_reset_ends_with_the_servers_code(interp):
    # §7.1.5: the close code is the one in the close frame received, even when the server
    # then resets TCP instead of closing it (Autobahn's server does; so do load balancers):
    # right after its close frame (0: the client's echo may meet the reset), or once the
    # client's close frame arrived (1). Both ways the reader and a recv() reading the socket.
    bye = F(8, b"\x0f\xa1bye")
    cases = [{"send": F(1, b"before") + bye, "rst": True},
             {"send": F(1, b"before") + bye, "after_close": "rst"}]
    with S.Hostile(cases) as h:
        lines = S.run_client("hostile", {"urls": [h.url(0), h.url(1)]}, interp=interp)
    with S.Hostile([{"send": F(1, b"before"), "later": F(1, b"second") + bye,
                     "rst_later": True},
                    {"send": F(1, b"before"), "later": F(1, b"second") + bye,
                     "after_close": "rst"}]) as h:
        lines += S.run_client("exchange", {"urls": [h.url(0), h.url(1)]}, interp=interp)
    ends = [l for l in lines if l["step"] == "case"]
    assert len(ends) == 4, lines
    for end in ends:
        assert (end["exc"], end["code"], end["reason"]) == ("ConnectionClosed", 4001, "bye"), end
    for l in lines:
        if l["step"] == "send_after":
            assert (l["exc"], l["code"]) == ("ConnectionClosed", 4001), l
