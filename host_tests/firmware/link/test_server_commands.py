"""Server commands through the supervisor, on CPython against a small websockets server: the
reply comes back on the same connection (for `health`, after the health message it asks
for), and the commands module is dropped again after each command (its code takes no heap
while streaming)."""
import asyncio
import json
import random
import sys
from pathlib import Path

from fieldlink.clock import Clock
from fieldlink.link import Backoff
from fieldlink.link.supervisor import Supervisor
from fieldlink.outbox import Outbox

sys.path.insert(0, str(Path(__file__).resolve().parent))
from supervisor_support import running, server, until, welcome  # noqa: E402


class Sampler:
    nows = 0

    def sample_now(self):
        self.nows += 1


def test_commands_are_answered_and_their_module_dropped():
    async def main():
        got = []

        async def handler(ws):
            async for m in ws:
                obj = json.loads(m)
                got.append(obj["t"])
                if obj["t"] == "hello":
                    await ws.send(welcome())
                    for cid, cmd in (("1", "sample_now"), ("2", "health"), ("3", "nope")):
                        await ws.send(json.dumps({"t": "cmd", "id": cid, "cmd": cmd}))
                elif obj["t"] == "reply":
                    got.append((obj["id"], obj["ok"]))

        async with server(handler) as cfg:
            s = Sampler()
            sup = Supervisor(cfg, Outbox(4096), Clock(),
                             Backoff(0.05, 0.2, 60, random.Random(1).random), sampler=s)
            async with running(sup) as task:
                await until(task, lambda: ("3", False) in got)
                replies = [x for x in got if isinstance(x, tuple)]
                assert replies == [("1", True), ("2", True), ("3", False)], got
                assert s.nows == 1
                i = got.index(("2", True))
                assert got[i - 2:i] == ["health", "reply"], got  # the health went first
                import fieldlink.link
                assert "fieldlink.link.commands" not in sys.modules
                assert "commands" not in fieldlink.link.__dict__
                assert sup.connects == 1

    asyncio.run(main())
