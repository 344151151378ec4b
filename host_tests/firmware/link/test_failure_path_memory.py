"""The supervisor's own failure path finding no heap: a step fails with an error nobody
expected, and the handler in Supervisor.run that turns it into a backoff then meets a
MemoryError itself (at 128k over wss:// the `_close` coroutine's 184 bytes were not there).
Before, that MemoryError ended the supervisor's task: the board sampled on, never connected
again, and dropped readings for good (`fieldlink soak --tls --heapsize 128k`: 'Task exception
wasn't retrieved ... supervisor.mpy, in run', then `state=connect` in every health line)."""
import asyncio
import json
import random
import sys
from pathlib import Path

from fieldlink.clock import Clock
from fieldlink.link import S_STREAM, Backoff
from fieldlink.link.supervisor import Supervisor
from fieldlink.outbox import Outbox

sys.path.insert(0, str(Path(__file__).resolve().parent))
from supervisor_support import running, server, until, welcome  # noqa: E402


class FlakyOutbox(Outbox):
    fails = 1

    def welcome(self, n):
        if self.fails:
            self.fails -= 1
            raise OSError(28, "ENOSPC")  # unexpected inside the hello step
        Outbox.welcome(self, n)


def test_no_heap_in_the_failure_path_does_not_end_the_supervisor():
    async def main():
        hellos = []

        async def handler(ws):
            async for m in ws:
                if json.loads(m).get("t") == "hello":
                    hellos.append(m)
                    await ws.send(welcome())

        async with server(handler) as cfg:
            sup = Supervisor(cfg, FlakyOutbox(4096), Clock(),
                             Backoff(0.05, 0.2, 60, random.Random(1).random))
            close = sup._close
            closes = []

            async def close_without_heap(ws, code, reason):
                closes.append(ws)
                if len(closes) == 1:   # the handler's close of the failed hello's connection
                    raise MemoryError("memory allocation failed, allocating 184 bytes")
                await close(ws, code, reason)
            sup._close = close_without_heap
            async with running(sup) as task:
                await until(task, lambda: sup.connects >= 1 and sup.state == S_STREAM)
                assert closes and closes[0] is not None   # the failed hello had a connection
                assert sup.state == S_STREAM and len(hellos) == 2, (sup.state, hellos)
                # the connection the failure path could not close was stopped all the same
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 10
                while not closes[0].closed and loop.time() < deadline:
                    await asyncio.sleep(0.05)
                assert closes[0].closed

    asyncio.run(main())
