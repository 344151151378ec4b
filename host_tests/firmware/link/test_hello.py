"""The hello/welcome exchange on CPython against a small websockets server.

docs/protocol.md: unknown message types are logged and ignored (forward compatibility), so a
server of a later version may send one before its `welcome`: the device takes the welcome
that follows and streams on that same connection."""
import asyncio
import json
import random
import sys
from pathlib import Path

from fieldlink import proto
from fieldlink.clock import Clock
from fieldlink.link import S_STREAM, Backoff
from fieldlink.link.supervisor import Supervisor
from fieldlink.outbox import Outbox

sys.path.insert(0, str(Path(__file__).resolve().parent))
from supervisor_support import running, server, until, welcome  # noqa: E402


def test_an_unknown_message_type_before_welcome_is_ignored():
    async def main():
        hellos = []
        closes = []
        stored = set()

        async def handler(ws):
            try:
                async for m in ws:
                    obj = json.loads(m)
                    if obj.get("t") == "hello":
                        hellos.append(obj)
                        await ws.send(json.dumps({"t": "notice", "text": "from v2"}))
                        await ws.send(welcome())
                    elif obj.get("t") == "batch":
                        stored.update(r["q"] for r in obj["r"])
                        await ws.send(json.dumps({"t": "ack", "ack": max(stored)}))
            finally:
                closes.append(ws.close_code)

        async with server(handler) as cfg:
            ob = Outbox(4096)
            for q in range(1, 4):
                ob.push(q, proto.reading(q, 1764100000000 + q, q, "s.t", 20.0, "C"))
            sup = Supervisor(cfg, ob, Clock(), Backoff(0.05, 0.2, 60, random.Random(1).random))
            async with running(sup) as task:
                await until(task, lambda: len(stored) >= 3 or len(hellos) > 3)
                # one hello, one connection: nothing closed it for the unknown type
                assert stored == {1, 2, 3} and len(hellos) == 1, (stored, hellos, closes)
                assert sup.connects == 1 and sup.state == S_STREAM and not closes, closes

    asyncio.run(main())
