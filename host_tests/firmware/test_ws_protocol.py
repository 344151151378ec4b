# dual: runs on CPython and on MicroPython
"""The connection core (fieldlink.ws.protocol): shared receive vectors fed whole, split at
every byte boundary and byte by byte; close handshake and failing the connection (§7.1.7)."""
from dualsupport import load_vectors, raises, too_big, unhex, wire

from fieldlink.ws import frames, protocol
from fieldlink.ws.errors import ConnectionClosed, ProtocolError

V = load_vectors("ws_frames")
ZERO = lambda n: bytes(n)  # noqa: E731  all-zero masking keys: replies are predictable


def as_list(ev):
    op, x = ev  # events are (opcode, value) pairs
    if op == frames.OP_TEXT:
        assert isinstance(x, str)
        return ["text", x]
    if op == frames.OP_BINARY:
        assert isinstance(x, bytes)
        return ["binary", hexs(x)]
    if op == frames.OP_PING:
        return ["ping", hexs(x)]
    if op == frames.OP_PONG:
        return ["pong", hexs(x)]
    assert op == frames.OP_CLOSE, ev
    return ["close", x[0], x[1]]


def hexs(b):
    import binascii
    return binascii.hexlify(b).decode()


def expected_events(v):
    out = []
    for e in v["events"]:
        if e[0] == "binary" and not isinstance(e[1], str):
            e = ["binary", e[1][0] * e[1][1]]  # a [hex, count] run
        out.append(e)
    return out


def feed(v, chunks):
    """Feed chunks; return (events, sent bytes, ProtocolError or None, protocol)."""
    p = protocol.Protocol(max_message=v.get("max_message", 16384), randbytes=ZERO)
    events = []
    err = None
    try:
        for c in chunks:
            p.receive_data(c)
            events.extend(as_list(e) for e in p.events_received())
    except ProtocolError as e:
        err = e
        events.extend(as_list(e) for e in p.events_received())
    return events, bytes(p.data_to_send()), err, p


def check(v, chunks, how):
    events, sent, err, p = feed(v, chunks)
    name = v["name"] + " " + how
    assert events == expected_events(v), name
    if "fail" in v:
        assert err is not None and err.code == v["fail"], (name, err)
        if "fail_reason" in v:  # (a 1009 names the limit, not the room a fragment left)
            assert err.reason == v["fail_reason"], (name, err.reason)
        # §7.1.7: a masked close frame carrying the failure code went out
        assert sent[0] == 0x88 and sent[1] & 0x80, name
        assert (sent[6] << 8 | sent[7]) == v["fail"], name
        assert p.state == protocol.CLOSED
        assert p.closed_error() is err
    else:
        assert err is None, (name, err)
        assert sent == wire(v["sent"]), name
        if v.get("state") == "closed":
            assert p.state == protocol.CLOSED, name


def test_receive_vectors_whole():
    for v in V["receive"]:
        if too_big(v, "chunks"):
            continue
        check(v, [wire(c) for c in v["chunks"]], "whole")


def feed_message(v, chunks):
    """feed() through receive_message(): a returned message counts as an event."""
    p = protocol.Protocol(max_message=v.get("max_message", 16384), randbytes=ZERO)
    events = []
    err = None
    direct = 0
    try:
        for c in chunks:
            m = p.receive_message(c)
            if m is not None:
                direct += 1
                events.append(as_list((frames.OP_TEXT if isinstance(m, str)
                                       else frames.OP_BINARY, m)))
            events.extend(as_list(e) for e in p.events_received())
    except ProtocolError as e:
        err = e
        events.extend(as_list(e) for e in p.events_received())
    return events, bytes(p.data_to_send()), err, direct


def test_receive_message_equals_receive_data():
    # receive_message() (recv()'s own read) returns a message that fills a chunk exactly
    # instead of queuing it; events, failures and replies must be the same as receive_data()
    direct = 0
    for v in V["receive"]:
        if too_big(v, "chunks"):
            continue
        for how in ("as chunked", "joined"):
            data = b"".join(wire(c) for c in v["chunks"])
            chunks = [wire(c) for c in v["chunks"]] if how == "as chunked" else [data]
            ev, sent, err, d = feed_message(v, chunks)
            ev2, sent2, err2, _ = feed(v, chunks)
            assert ev == ev2 and sent == sent2, (v["name"], how)
            assert (err and err.code) == (err2 and err2.code), (v["name"], how)
            direct += d
    assert direct >= 5  # the fast path was taken, not only the general one
    # one whole frame: returned, not queued; invalid UTF-8 still fails with 1007
    p = protocol.Protocol(randbytes=ZERO)
    assert p.receive_message(b"\x81\x02hi") == "hi" and p.events_received() == []
    assert p.receive_message(b"\x82\x7e\x00\x7e" + bytes(126)) == bytes(126)
    assert raises(ProtocolError, p.receive_message, b"\x81\x01\xff").code == 1007


def test_receive_vectors_split_at_every_byte_boundary():
    for v in V["receive"]:
        if too_big(v, "chunks"):
            continue
        data = b"".join(wire(c) for c in v["chunks"])
        if len(data) > 300:
            continue
        for cut in range(1, len(data)):
            check(v, [data[:cut], data[cut:]], "cut at %d" % cut)


def test_receive_vectors_byte_by_byte():
    for v in V["receive"]:
        if too_big(v, "chunks"):
            continue
        data = b"".join(wire(c) for c in v["chunks"])
        if len(data) > 300:
            continue
        check(v, [data[i:i + 1] for i in range(len(data))], "byte by byte")


def test_large_message_in_small_chunks():
    v = [x for x in V["receive"] if x["name"] == "binary_65536"][0]
    if too_big(v, "chunks"):
        v = {"name": "binary_3000", "chunks": [["827e0bb8", ["ab", 3000]]],
             "events": [["binary", ["ab", 3000]]], "sent": []}
    data = wire(v["chunks"][0])
    check(v, [data[i:i + 1000] for i in range(0, len(data), 1000)], "1000-byte chunks")


def test_oversize_fails_before_payload_arrives():
    p = protocol.Protocol(max_message=1000, randbytes=ZERO)
    e = raises(ProtocolError, p.receive_data, b"\x82\x7e\x03\xe9")  # header only: 1001 bytes
    assert e.code == 1009


def test_client_initiated_close_handshake():
    p = protocol.Protocol(randbytes=ZERO)
    p.send_close(1000, "done")
    assert bytes(p.data_to_send()) == unhex("8886 00000000 03e8") + b"done"
    assert p.state == protocol.CLOSING
    e = raises(ConnectionClosed, p.send_message, "late")
    assert e.code == 1000
    p.receive_data(unhex("8802 03e8"))
    assert p.state == protocol.CLOSED
    assert [as_list(x) for x in p.events_received()] == [["close", 1000, ""]]
    assert bytes(p.data_to_send()) == b""  # no second close frame


def test_messages_still_delivered_while_closing():
    p = protocol.Protocol(randbytes=ZERO)
    p.send_close()
    p.receive_data(unhex("8102 6f6b"))
    assert [as_list(x) for x in p.events_received()] == [["text", "ok"]]


def test_no_pong_after_we_sent_close():
    p = protocol.Protocol(randbytes=ZERO)
    p.send_close()
    p.data_to_send()
    p.receive_data(unhex("8900"))
    assert bytes(p.data_to_send()) == b""


def test_send_close_refuses_reserved_codes():
    p = protocol.Protocol(randbytes=ZERO)
    for code in (999, 1004, 1005, 1006, 1015, 2000, 5000):
        raises(ValueError, p.send_close, code)
    raises(ValueError, p.send_close, 1000, "x" * 124)
    assert p.state == protocol.OPEN


def test_send_message_text_and_binary_opcodes():
    p = protocol.Protocol(randbytes=ZERO)
    for data, b0 in (("t", 0x81), (b"b", 0x82), (bytearray(b"b"), 0x82),
                     (memoryview(b"xbx")[1:2], 0x82)):
        n = p.send_message(data)
        assert n == 7 and p.enc.out[0] == b0 and p.enc.out[6] in (0x74, 0x62)


def test_send_message_text_from_utf8_bytes():
    # text=True frames a bytes-like as text (WebSocket.send_utf8: batches without a str)
    p = protocol.Protocol(randbytes=ZERO)
    for data in (b"hi", bytearray("h\u00e9".encode()), memoryview(b"xhix")[1:3]):
        n = p.send_message(data, True)
        assert p.enc.out[0] == 0x81 and p.enc.out[1] == 0x80 | len(data)
        assert bytes(p.enc.out[6:n]) == bytes(data)   # key 0: the payload as given
    assert p.enc.out[0] == 0x81
    p.send_message(b"b")
    assert p.enc.out[0] == 0x82                       # bytes without text=True: binary
    # n: only the first n bytes of the buffer (the sender's batch buffer goes uncut)
    buf = bytearray(b"[1,2]xxxxxxxx")
    n = p.send_message(memoryview(buf), True, 5)
    assert p.enc.out[0] == 0x81 and p.enc.out[1] == 0x80 | 5 and bytes(p.enc.out[6:n]) == b"[1,2]"


def test_ping_queued_and_size_limited():
    p = protocol.Protocol(randbytes=ZERO)
    p.send_ping(b"abc")
    assert bytes(p.data_to_send()) == unhex("8983 00000000 616263")
    raises(ValueError, p.send_ping, bytes(126))


def test_failure_after_failure_sends_nothing_more():
    p = protocol.Protocol(randbytes=ZERO)
    raises(ProtocolError, p.receive_data, unhex("c100"))
    p.data_to_send()
    p.receive_data(unhex("c100"))  # ignored: the connection is already failed
    assert bytes(p.data_to_send()) == b""
    e = raises(ProtocolError, p.send_message, b"x")
    assert e.code == 1002


def test_failure_close_reason_is_cut_on_a_character_boundary():
    # §5.5: a control frame carries at most 125 bytes, so the reason at most 123; §5.5.1/§7.4:
    # it must stay valid UTF-8. fail() cuts a long reason before the character that does not
    # fit whole, never inside one.
    for reason, keep in (("x" * 200, 123),
                         ("\u00e9" * 100, 61),               # 2-byte chars: 122 bytes
                         ("a" + "\u20ac" * 50, 41),          # 1 + 3-byte chars: 121 bytes
                         ("ab" + "\U0001F600" * 40, 32),     # 4-byte chars: 122 bytes
                         ("\u00e9" * 61 + "z", 62)):         # exactly 123 bytes: kept whole
        p = protocol.Protocol(randbytes=ZERO)
        p.fail(1002, reason)
        sent = bytes(p.data_to_send())
        n = sent[1] & 0x7F
        assert sent[0] == 0x88 and sent[1] & 0x80 and n <= 125, reason
        body = sent[6:]  # all-zero masking key: the payload as it is
        assert len(body) == n and body[:2] == b"\x03\xea", reason
        assert body[2:].decode("utf-8") == reason[:keep], (reason, len(body))
        assert p.close_code == 1002


def test_control_output_and_events_reuse_two_objects():
    # A keepalive ping and the server's pong every second, and server pings answered: the
    # output buffer and the events list are two objects each, emptied and reused, and every
    # call hands out exactly what came since the previous call.
    p = protocol.Protocol(randbytes=ZERO)
    outs = []
    evs = []
    for i in range(6):
        tag = b"k%d" % i
        p.send_ping(tag)
        if i % 2:
            p.receive_data(unhex("8902") + tag)  # a server ping too: answered with a pong
        out = p.data_to_send()
        want = unhex("8982 00000000") + tag
        if i % 2:
            want += unhex("8a82 00000000") + tag
        assert bytes(out) == want, (i, bytes(out))
        assert bytes(p.data_to_send()) == b""  # nothing queued since
        p.receive_data(unhex("8a02") + tag)  # the pong to our ping
        ev = p.events_received()
        got = [as_list(e) for e in ev]
        want_ev = [["pong", hexs(tag)]]
        if i % 2:
            want_ev.insert(0, ["ping", hexs(tag)])
        assert got == want_ev, (i, got)
        assert p.events_received() == []
        outs.append(out)
        evs.append(ev)
    assert len(set(id(o) for o in outs)) == 2 and len(set(id(e) for e in evs)) == 2


def test_bad_utf8_fails_as_soon_as_it_arrives_inside_a_split_frame():
    # §8.1 / docs/websocket.md: a text frame that arrives in pieces fails with the piece that
    # holds the bad byte, not when the whole frame is in: in the first piece (header and
    # payload), in a later one, and in a continuation frame of a text message
    bad = b"ok" * 20 + b"\xff" + b"z" * 59   # 100 bytes, the bad one at 40
    cases = [unhex("8164") + bad,                                  # one 100-byte text frame
             unhex("0164") + b"a" * 100 + unhex("8064") + bad]     # then its continuation
    for data in cases:
        at = len(data) - 59   # just after the bad byte
        for cut in range(len(data) - 102, at):   # from the last frame's header on
            p = protocol.Protocol(randbytes=ZERO)
            if cut:
                try:
                    p.receive_data(data[:cut])   # nothing bad in it yet
                except ProtocolError:
                    raise AssertionError("failed before the bad byte: cut %d" % cut)
            e = raises(ProtocolError, p.receive_data, data[cut:at])
            assert e.code == 1007, (cut, e.code)
            assert p.state == protocol.CLOSED


def test_valid_text_split_anywhere_is_checked_once_and_delivered():
    # the early check and the check of the whole frame agree: a multi-byte character cut by
    # any split, with continuation frames
    msg = ("h\u00e9\u20ac\U0001F600" * 20).encode()
    data = unhex("01") + bytes([40]) + msg[:40] + unhex("80") + bytes([126]) + \
        len(msg[40:]).to_bytes(2, "big") + msg[40:]
    for cut in range(1, len(data)):
        for cut2 in (cut, min(len(data), cut + 3)):
            p = protocol.Protocol(randbytes=ZERO)
            for part in (data[:cut], data[cut:cut2], data[cut2:]):
                if part:
                    p.receive_data(part)
            assert [as_list(x) for x in p.events_received()] == [["text", msg.decode()]], cut
