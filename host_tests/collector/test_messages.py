"""Checking device messages (collector/messages.py): what is accepted, and which close code and
error code each kind of bad input earns (docs/protocol.md "Errors and close codes")."""
import json

import pytest

from collector_fixtures import hello, readings
from dualsupport import load_vectors
from fieldlink_tools.collector import messages as M

# The same vectors the firmware's proto tests use (host_tests/firmware/test_proto.py).
V = load_vectors("proto")


def health(**kw):
    m = {"t": "health", "heap_free": 1, "heap_min": 1, "reconnects": 0, "dropped": 0,
         "rssi": None, "uptime_s": 1.5, "boot": 1, "held": 0}
    m.update(kw)
    return m


GOOD = [
    hello("dev-1"), hello("a.b_c-D", next=9, first=3, held=6, synced=True),
    hello("dev-1", epoch="0"), hello("dev-1", epoch="0123456789abcdef"),
    {"t": "gap", "from": 1, "to": 1, "why": "future-kind"},
    {"t": "batch", "r": []}, {"t": "batch", "r": readings([1, 5, 9])},
    {"t": "batch", "r": [{"q": 1, "ts": 1.5, "up": 0, "n": "x", "v": None, "u": "", "e": "crc"}]},
    {"t": "gap", "from": 1, "to": 1, "why": "dropped"}, {"t": "gap", "from": 2, "to": 9,
                                                         "why": "reboot"},
    {"t": "reply", "id": "c1", "ok": True, "result": {"a": 1}},
    {"t": "reply", "id": "c1", "ok": False, "err": "unknown command"},
    health(), health(rssi=-70), health(skipped=3), {"t": "something-new", "x": 1},
]


@pytest.mark.parametrize("m", GOOD, ids=lambda m: m["t"])
def test_accepted(m):
    assert M.parse(json.dumps(m)) == m


BAD = [
    ("", 1007, "bad_json"), ("{", 1007, "bad_json"), ("null", 1007, "bad_message"),
    ('"hello"', 1007, "bad_message"), ('{"t": null}', 1007, "bad_message"),
    ('{"t":"batch","r":[{"q":1,"ts":Infinity,"up":0,"n":"x","v":1,"u":""}]}', 1007, "bad_json"),
    (hello("dev-1", v=2), 1008, "version"),
    (hello("dev-1", next=0), 1007, "bad_message"),
    (hello("dev-1", next=3, first=4), 1007, "bad_message"),
    (hello("dev-1", synced=1), 1007, "bad_message"),
    (hello("x" * 33), 1007, "bad_message"),
    (hello("dev-1", boot="1"), 1007, "bad_message"),
    ({"t": "batch"}, 1007, "bad_message"),
    ({"t": "batch", "r": readings([0])}, 1007, "bad_message"),
    ({"t": "batch", "r": readings([1, 1])}, 1008, "order"),
    ({"t": "batch", "r": [1]}, 1007, "bad_message"),
    ({"t": "batch", "r": [{"ts": None, "up": 0, "n": "x", "v": 1, "u": ""}]}, 1007, "bad_message"),
    ({"t": "batch", "r": [{"q": "1", "ts": None, "up": 0, "n": "x", "v": 1, "u": ""}]},
     1007, "bad_message"),
    ({"t": "batch", "r": readings([1]) + [{"q": 1.5}]}, 1007, "bad_message"),
    ({"t": "gap", "from": 1, "to": 2, "why": "lost"}, 1007, "bad_message"),
    ({"t": "gap", "from": 1, "to": 2, "why": "rejected"}, 1007, "bad_message"),
    (hello("dev-1", epoch=""), 1007, "bad_message"),
    (hello("dev-1", epoch="ABCD"), 1007, "bad_message"),
    (hello("dev-1", epoch="0123456789abcdef0"), 1007, "bad_message"),
    (hello("dev-1", epoch=12), 1007, "bad_message"),
    ({"t": "batch", "r": readings(range(1, 502))}, 1009, "too_big"),
    ({"t": "gap", "from": 0, "to": 1, "why": "dropped"}, 1007, "bad_message"),
    ({"t": "gap", "from": 1, "to": 2, "why": ""}, 1007, "bad_message"),
    ({"t": "reply", "id": 3, "ok": True}, 1007, "bad_message"),
    ({"t": "reply", "id": "c1", "ok": False}, 1007, "bad_message"),
    (health(heap_free=-1), 1007, "bad_message"),
    (health(uptime_s=None), 1007, "bad_message"),
    (health(rssi="weak"), 1007, "bad_message"),
    (health(skipped=-1), 1007, "bad_message"),
    (health(skipped=1.5), 1007, "bad_message"),
]


@pytest.mark.parametrize("m,close,code", BAD)
def test_refused(m, close, code):
    with pytest.raises(M.ProtocolError) as e:
        M.parse(m if isinstance(m, str) else json.dumps(m))
    assert (e.value.close_code, e.value.code) == (close, code)
    assert e.value.msg


def test_batch_limit_is_configurable():
    M.parse(json.dumps({"t": "batch", "r": readings(range(1, 11))}), max_batch=10)
    with pytest.raises(M.ProtocolError):
        M.parse(json.dumps({"t": "batch", "r": readings(range(1, 12))}), max_batch=10)


def _one(**kw):
    r = {"q": 1, "ts": None, "up": 0, "n": "water.temperature", "v": None, "u": "C"}
    r.update(kw)
    return {"t": "batch", "r": [r]}


def split(m):
    """parse() then split_batch(): (stored seqs, {seq: reason} refused)."""
    return split_text(json.dumps(m))


def split_text(text):
    good, rejected = M.split_batch(M.parse(text))
    return [r["q"] for r in good], dict(rejected)


def test_long_missing_reason_is_cut_not_refused():
    # A refused reading stays in the device's outbox and is resent, and refused, forever:
    # the firmware's driver messages ran to 70-83 chars against a limit of 64.
    text = "CRCError: ds18b20 28ff4c6a711603eb: scratchpad crc 0xec, computed 0x49"
    good, _ = M.split_batch(M.parse(json.dumps(_one(e=text))))
    assert good[0]["e"] == text[:64] and M.E_MAX == 64
    assert split(_one(e=5)) == ([], {1: "reading 1: e must be a string"})


@pytest.mark.parametrize("bad,why", [
    ({"ts": "now"}, "ts must be a number or null"),
    ({"ts": ...}, "ts must be a number or null"),
    ({"up": -1}, "up must be an integer >= 0"),
    ({"up": 2 ** 63}, "up must be an integer >= 0"),
    ({"n": ""}, "n must be a string of 1-64 chars"),
    ({"n": "x" * 65}, "n must be a string of 1-64 chars"),
    ({"n": 3}, "n must be a string of 1-64 chars"),
    ({"v": "hot"}, "v must be a number or null"),
    ({"v": False}, "v must be a number or null"),
    ({"v": ...}, "v must be a number or null"),
    ({"v": 10 ** 400}, "v is out of range"),
    ({"u": "x" * 17}, "u must be a string of at most 16 chars"),
    ({"u": None}, "u must be a string of at most 16 chars"),
])
def test_ill_typed_reading_fields_reject_that_reading_only(bad, why):
    # docs/protocol.md "Rejected readings": the batch is well formed, so the good readings are
    # stored and the bad one becomes a gap `rejected`; the message itself is not refused.
    rs = readings([1, 2, 3])
    for k, v in bad.items():
        if v is ...:
            del rs[1][k]
        else:
            rs[1][k] = v
    assert split({"t": "batch", "r": rs}) == ([1, 3], {2: "reading 2: " + why})


def test_limits_at_the_edge_are_accepted():
    r = {"q": 1, "ts": None, "up": 0, "n": "x" * M.NAME_MAX, "v": 1, "u": "u" * M.UNIT_MAX}
    assert split({"t": "batch", "r": [r]}) == ([1], {})
    assert (M.NAME_MAX, M.UNIT_MAX, M.E_MAX) == (64, 16, 64)   # as docs/protocol.md says


@pytest.mark.parametrize("m", [
    _one(q=2 ** 63),
    {"t": "gap", "from": 1, "to": 2 ** 63, "why": "dropped"},
    hello("dev-1", boot=2 ** 63),
], ids=["q", "gap.to", "hello.boot"])
def test_integers_beyond_64_bits_are_refused_as_malformed(m):
    # They used to pass the checks and make sqlite3 raise OverflowError in the store: a
    # 1011 "internal error" with a traceback, on every resend.
    with pytest.raises(M.ProtocolError) as e:
        M.parse(json.dumps(m))
    assert (e.value.close_code, e.value.code) == (1007, "bad_message")


@pytest.mark.parametrize("m", [_one(up=2 ** 63), _one(ts=2 ** 64), _one(v=10 ** 400)],
                         ids=["up", "ts", "v"])
def test_integers_beyond_64_bits_in_a_reading_reject_that_reading(m):
    assert split(m) == ([], {1: split(m)[1][1]}) and split(m)[1][1].startswith("reading 1:")


def test_a_huge_integer_value_is_kept_as_a_float():
    good, _ = M.split_batch(M.parse(json.dumps(_one(v=10 ** 20))))
    assert good[0]["v"] == 1e20 and isinstance(good[0]["v"], float)
    good, _ = M.split_batch(M.parse(json.dumps(_one(v=2 ** 63 - 1))))
    assert good[0]["v"] == 2 ** 63 - 1


# -- what a hostile device with a valid token sent (issue 12's review) -------------------------

def test_numbers_json_cannot_carry_are_refused_not_stored():
    # `v: 1e999` parsed to infinity and was stored: /api/devices became invalid JSON
    text = '{"t":"batch","r":[{"q":1,"ts":null,"up":0,"n":"a.b","v":1e999,"u":"C"}]}'
    assert split_text(text) == ([], {1: "reading 1: v is out of range"})
    text = text.replace("1e999", "-1e999").replace('"ts":null', '"ts":1.5')
    assert split_text(text)[1] == {1: "reading 1: v is out of range"}
    for bad in ('{"t":"health","heap_free":1,"heap_min":1,"reconnects":0,"dropped":0,'
                '"rssi":null,"uptime_s":1e999,"boot":1,"held":0}',
                json.dumps(hello("dev-1"))[:-1] + ',"x":[1e999]}'):
        with pytest.raises(M.ProtocolError) as e:
            M.parse(bad)
        assert e.value.close_code == 1007


@pytest.mark.parametrize("ts", [1e20, -1.0, 2.0 ** 32])
def test_timestamps_out_of_range_reject_that_reading(ts):
    assert split(_one(ts=ts)) == ([], {1: "reading 1: ts must be Unix seconds in [0, 2**32)"})


def test_deep_nesting_is_refused_at_parse_time():
    deep = json.dumps(hello("dev-1"))[:-1] + ',"x":' + "[" * 979 + "]" * 979 + "}"
    with pytest.raises(M.ProtocolError) as e:
        M.parse(deep)
    assert e.value.close_code == 1007
    r = readings([1])
    r[0]["extra"] = json.loads("[" * 20 + "]" * 20)
    with pytest.raises(M.ProtocolError):
        M.parse(json.dumps({"t": "batch", "r": r}))
    M.parse(json.dumps(hello("dev-1", x={"a": [{"b": 1}]})))  # a little nesting is fine


@pytest.mark.parametrize("m", [
    {"t": "gap", "from": 1, "to": 2 ** 63 - 48, "why": "dropped"},
    {"t": "gap", "from": 2 ** 53, "to": 2 ** 53, "why": "dropped"},
    _one(q=2 ** 53), hello("dev-1", next=2 ** 53 + 1, first=1),
], ids=["gap.to", "gap.from", "q", "hello.next"])
def test_seqs_that_would_overflow_are_refused(m):
    with pytest.raises(M.ProtocolError) as e:
        M.parse(json.dumps(m))
    assert e.value.close_code == 1007


def test_the_largest_seqs_are_accepted():
    M.parse(json.dumps({"t": "gap", "from": 1, "to": 2 ** 53 - 1, "why": "dropped"}))
    M.parse(json.dumps(hello("dev-1", next=2 ** 53, first=2 ** 53)))
    assert split(_one(q=2 ** 53 - 1)) == ([2 ** 53 - 1], {})


@pytest.mark.parametrize("name", ["a\ud800b", "a.b\nother #9 x = 1 C", "a b", "tab\tx", ""])
def test_bad_names_reject_that_reading_only(name):
    text = json.dumps({"t": "batch", "r": readings([1, 2], name=name) + readings([3])})
    good, rejected = split_text(text)
    assert good == [3] and sorted(rejected) == [1, 2], rejected


def test_units_and_reasons_stay_printable():
    assert split(_one(u="\u00b0C")) == ([1], {})
    assert split(_one(u="C\n")) == ([], {1: "reading 1: u must be printable"})
    good, _ = M.split_batch(M.parse(json.dumps(_one(v=None, e="bus\nfake #1 line \ud800"))))
    assert good[0]["e"] == "bus\\u000afake #1 line \\ud800"
    assert "\n" not in good[0]["e"] and good[0]["e"].encode()


def test_unknown_reading_fields_are_not_kept():
    good, _ = M.split_batch(M.parse(json.dumps(_one(x="y" * 1000))))
    assert set(good[0]) == {"q", "ts", "up", "n", "v", "u"}


def test_stored_hello_and_health_are_bounded_in_bytes():
    big = health(note="x" * 100000)
    kept = M.stored(M.parse(json.dumps(big)))
    assert len(json.dumps(kept)) <= M.EXTRAS_MAX and kept["truncated"] is True
    assert kept["heap_free"] == 1 and "note" not in kept
    small = health(note="hi")
    assert M.stored(M.parse(json.dumps(small))) == {k: v for k, v in small.items() if k != "t"}
    h = hello("dev-1", junk=["z" * 100] * 100)
    kept = M.stored(M.parse(json.dumps(h)))
    assert "junk" not in kept and kept["dev"] == "dev-1" and kept["next"] == 1


def test_hello_strings_must_be_printable():
    for field in ("fw", "board"):
        with pytest.raises(M.ProtocolError) as e:
            M.parse(json.dumps(hello("dev-1", **{field: "1.0\n2"})))
        assert e.value.close_code == 1007


# -- the shared protocol vectors ----------------------------------------------------------------

@pytest.mark.parametrize("case", V["device_ok"], ids=lambda c: c["text"][:40])
def test_vectors_device_ok(case):
    m = M.parse(case["text"])
    if m["t"] == "batch":
        assert M.split_batch(m)[1] == []


@pytest.mark.parametrize("case", V["device_bad"], ids=lambda c: c["text"][:40])
def test_vectors_device_bad(case):
    with pytest.raises(M.ProtocolError) as e:
        m = M.parse(case["text"])
        M.split_batch(m) if m["t"] == "batch" else None
    assert e.value.close_code == case["code"], (case, e.value.msg)


@pytest.mark.parametrize("case", V["device_rejected"], ids=lambda c: c["text"][:40])
def test_vectors_device_rejected(case):
    good, rejected = M.split_batch(M.parse(case["text"]))
    assert [q for q, _ in rejected] == case["seqs"]
    assert sorted([r["q"] for r in good] + case["seqs"]) == [
        r["q"] for r in json.loads(case["text"])["r"]]
