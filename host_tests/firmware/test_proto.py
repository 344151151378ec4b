# dual: runs on CPython and on MicroPython
"""App protocol codec: server messages parsed or refused with the right close code; device
messages built byte-exact and accepted by the validator."""
import json

from dualsupport import load_vectors, raises

from fieldlink import proto, proto_check

V = load_vectors("proto")
# parse_server's tuples: the type first, then these fields in this order
FIELDS = {"ack": ("ack",), "welcome": ("v", "ack", "time_ms"), "cmd": ("id", "cmd", "args"),
          "error": ("code", "msg"), "ota": ("obj",), "unknown": ()}


def test_server_messages_parse():
    for case in V["server_ok"]:
        ev = proto.parse_server(case["text"])
        kind = case["type"]
        if kind == "unknown":
            assert ev == (json.loads(case["text"])["t"],), (case, ev)
        else:
            assert ev[0] == kind, (case, ev)
        names = FIELDS[kind]
        assert len(ev) == 1 + len(names), (case, ev)
        for k in ("ack", "time_ms", "id", "cmd"):
            if k in case:
                got = ev[1 + names.index(k)]
                assert got == case[k], (case, k, got)


def test_server_error_fields_are_strings():
    assert proto.parse_server('{"t":"error","code":"bad_json","msg":"nope"}') == (
        "error", "bad_json", "nope")
    assert proto.parse_server('{"t":"error"}') == ("error", "", "")


def test_welcome_time_keeps_milliseconds_without_double_floats():
    ev = proto.parse_server('{"t":"welcome","v":1,"ack":0,"time":1799999999.999}')
    assert ev == ("welcome", 1, 0, 1799999999999)
    ev = proto.parse_server('{"t":"welcome","v":1,"ack":0,"time":1.7e9}')
    assert ev[3] == 1700000000000  # exponent form falls back to the float


def test_bad_server_messages_get_close_codes():
    for case in V["server_bad"]:
        e = raises(proto.ProtoError, proto.parse_server, case["text"])
        assert e.code == case["code"], (case, e.code)
        assert e.msg


def test_binary_message_is_1003():
    e = raises(proto.ProtoError, proto.parse_server, b'{"t":"ack","ack":1}')
    assert e.code == 1003


def test_cmd_args_default_to_empty_object():
    ev = proto.parse_server('{"t":"cmd","id":"9","cmd":"health"}')
    assert ev == ("cmd", "9", "health", {})
    ev = proto.parse_server('{"t":"cmd","id":"9","cmd":"health","args":null}')
    assert ev[3] == {}


def test_reading_text_is_exact():
    for case in V["readings"]:
        text = proto.reading(*case["args"])
        assert text == case["text"], (text, case["text"])
        # q first: reading_seq reads it from the text's start without parsing it
        assert proto.reading_seq(text.encode()) == case["args"][0], text
        assert proto.reading_seq(text.encode() + b"\n") == case["args"][0]  # a flash line


def test_reading_seq_refuses_what_is_not_a_reading():
    for b in (b"", b"\n", b"not a reading\n", b'{"t":"ack","ack":3}', b'{"q":x,"ts":null}',
              b'{"q":12'):
        raises(ValueError, proto.reading_seq, b)
    assert proto.reading_seq(b'{"q":18446744073709551615,"ts":null}') == 2 ** 64 - 1


def test_reading_nan_becomes_null_with_reason():
    text = proto.reading(3, None, 0, "x.y", float("nan"), "V")
    r = json.loads(text)
    assert r["v"] is None and r["e"] == "nan"
    r = json.loads(proto.reading(3, None, 0, "x.y", float("inf"), "V", "overrange"))
    assert r["v"] is None and r["e"] == "overrange"   # the driver's reason is kept
    r = json.loads(proto.reading(4, None, 0, "x.y", True, ""))
    assert r["v"] == 1 and r["u"] == "" and "e" not in r


def test_built_messages_pass_the_validator():
    rs = [proto.reading(q, None, q * 10, "env.t", q / 4, "C") for q in (5, 6, 9)]
    msgs = [
        proto.hello("dev-1", "0.1.0", "virtual", 3, 10, 5, 3, 2, False),
        proto.batch_text(",".join(rs)),
        proto.gap(7, 8, proto.WHY_DROPPED),
        proto.reply("c1", True, 2.5),
        proto.reply("c2", False, err="unknown command"),
        proto.health(40000, 35000, 2, 2, -61, 100, 3, 3),
        proto.health(40000, 35000, 2, 2, None, 100, 3, 3),
        proto.health(40000, 35000, 2, 2, None, 100, 3, 3, 17),
    ]
    for m in msgs:
        obj = proto_check.parse_device(m)
        assert isinstance(obj, dict)
    b = proto_check.parse_device(proto.batch_text(",".join(rs)))
    assert [r["q"] for r in b["r"]] == [5, 6, 9]
    h = proto_check.parse_device(msgs[0])
    assert h["next"] == 10 and h["first"] == 5 and h["synced"] is False and h["v"] == 1


def test_bad_device_messages_refused():
    for case in V["device_bad"]:
        e = raises(proto.ProtoError, proto_check.parse_device, case["text"])
        assert e.code == case["code"], case
    # readings the collector rejects one by one: a device never sends them
    for case in V["device_rejected"]:
        e = raises(proto.ProtoError, proto_check.parse_device, case["text"])
        assert e.code == 1007, case


def test_good_device_messages_pass_the_validator():
    for case in V["device_ok"]:
        assert isinstance(proto_check.parse_device(case["text"]), dict), case


def test_constants_match_the_document():
    assert proto.SUBPROTOCOL == "fieldlink.v1"
    assert proto.VERSION == 1
    assert proto.CLOSE_BAD_DATA == 1007 and proto.CLOSE_SUPERSEDED == 4000


def test_hello_carries_the_epoch_when_given():
    h = json.loads(proto.hello("dev-1", "0.1.0", "virtual", 1, 1, 1, 0, 0, True,
                               "0123456789abcdef"))
    assert h["epoch"] == "0123456789abcdef"
    assert proto_check.parse_device(json.dumps(h))["epoch"] == "0123456789abcdef"
    h = json.loads(proto.hello("dev-1", "0.1.0", "virtual", 1, 1, 1, 0, 0, True))
    assert "epoch" not in h                           # older firmware's hello, unchanged


def test_hello_with_a_bad_epoch_is_refused():
    for bad in ("", "ABCD", "0123456789abcdef0", 12, "xyz"):
        h = json.loads(proto.hello("dev-1", "0.1.0", "virtual", 1, 1, 1, 0, 0, True))
        h["epoch"] = bad
        e = raises(proto.ProtoError, proto_check.parse_device, json.dumps(h))
        assert e.code == 1007, bad

