# dual: runs on CPython and on MicroPython
"""link/hello.run, the HELLO step as a function: it sends hello, takes the first welcome (types
it does not know before it are ignored), hands the welcome's ack to the outbox, and raises for
anything else: a server error, a known message out of order, another protocol version, or no
welcome in time."""
try:
    import asyncio
except ImportError:
    import uasyncio as asyncio
import json

from dualsupport import raises

from fieldlink import proto
from fieldlink.clock import Clock
from fieldlink.link import LinkFailure, hello
from fieldlink.outbox import Outbox


class Cfg:
    device_id = "dev-1"
    url = "ws://127.0.0.1:9/ws"
    connect_timeout_s = 0.2


class FakeWS:
    """Hands out the messages given, then stays silent."""

    def __init__(self, msgs):
        self.msgs = list(msgs)
        self.sent = []

    async def send(self, text):
        self.sent.append(json.loads(text))

    async def recv(self):
        if self.msgs:
            return self.msgs.pop(0)
        await asyncio.Event().wait()


def welcome(ack=0, v=proto.VERSION):
    return json.dumps({"t": "welcome", "v": v, "ack": ack, "time": 1.7e9})


def run(msgs):
    ws = FakeWS(msgs)
    ob = Outbox(2048)
    for q in range(1, 4):
        ob.push(q, proto.reading(q, None, q, "s.t", 20.0, "C"))
    asyncio.run(hello.run(ws, Cfg(), ob, Clock(), "fw-1", "virtual"))
    return ws, ob


def test_hello_then_welcome_resumes_after_the_servers_ack():
    ws, ob = run([welcome(2)])
    assert len(ws.sent) == 1
    h = ws.sent[0]
    assert h["t"] == "hello" and h["dev"] == "dev-1" and h["fw"] == "fw-1"
    assert h["board"] == "virtual" and h["next"] == 4 and h["held"] == 3
    b = ob.next_batch(10, 10)
    assert [json.loads(t)["q"] for t in b] == [3]  # 1 and 2 are on the server


def test_unknown_types_before_the_welcome_are_ignored():
    ws, ob = run(['{"t":"notice","text":"from v2"}', '{"t":"x2"}', welcome(0)])
    assert len(ws.sent) == 1 and ob.next_batch(10, 10)


def test_everything_else_raises():
    e = raises(LinkFailure, run, ['{"t":"error","code":"auth","msg":"no"}'])
    assert "server error auth: no" in str(e)
    e = raises(proto.ProtoError, run, ['{"t":"ack","ack":1}'])
    assert e.code == proto.CLOSE_POLICY and "expected welcome" in str(e)
    e = raises(proto.ProtoError, run, [welcome(0, v=proto.VERSION + 1)])
    assert e.code == proto.CLOSE_POLICY
    e = raises(proto.ProtoError, run, ['{"t":"welcome"}'])  # a welcome without its fields
    assert e.code == proto.CLOSE_BAD_DATA


def test_no_welcome_in_time_is_a_link_failure():
    e = raises(LinkFailure, run, ['{"t":"notice"}'])
    assert "no welcome within 0.2 s" in str(e)
