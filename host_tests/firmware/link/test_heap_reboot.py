"""A heap too fragmented to connect again: the supervisor reboots the board cleanly.

Found with `fieldlink soak --rom --heapsize 96k` (and a 40 s reproduction: one blackhole): a
reconnect during a blackhole met the spill to flash, and from then on every connection attempt
failed with MemoryError (7.6 KB free, no block over 384 B: 'connect: MemoryError ... allocating
234 bytes' every backoff), for good: the board sampled on, filled its outbox and dropped
readings until a power cut gave it a fresh heap. Now, after NO_HEAP_REBOOT such attempts in a row
on a boot that did connect before (so a fresh heap can), the supervisor saves everything to
flash (no reboot gap) and resets. A boot that never connected keeps retrying instead: a reset
would not give it more heap, only a reset loop.

CPython + websockets; connect() is made to fail with MemoryError after the first connection."""
import asyncio
import json
import random
import sys
from pathlib import Path

from fieldlink import proto
from fieldlink.clock import Clock
from fieldlink.link import NO_HEAP_REBOOT, Backoff
from fieldlink.link import supervisor as supmod
from fieldlink.link.supervisor import Supervisor
from fieldlink.outbox import Outbox

sys.path.insert(0, str(Path(__file__).resolve().parent))
from supervisor_support import running, server, until, welcome  # noqa: E402

OOM = NO_HEAP_REBOOT


class CountingOutbox(Outbox):
    flushes = 0

    def flush(self):
        self.flushes += 1
        Outbox.flush(self)


def _run(monkeypatch, good_connects, attempts_after):
    """The first `good_connects` connect() calls work (welcome, then the server closes the
    link); every later one raises MemoryError. Runs until the board reset or
    `attempts_after` failed attempts were made; returns (resets, failed attempts, sup)."""
    real = supmod.wsclient.connect
    calls = [0]
    failed = [0]

    def connect(*a, **kw):
        calls[0] += 1
        if calls[0] > good_connects:
            failed[0] += 1
            raise MemoryError("memory allocation failed, allocating 234 bytes")
        return real(*a, **kw)
    monkeypatch.setattr(supmod.wsclient, "connect", connect)

    async def main():
        async def handler(ws):
            async for m in ws:
                if json.loads(m).get("t") == "hello":
                    await ws.send(welcome())
                    await ws.close(1001, "going away")  # the link drops: reconnect

        async with server(handler) as cfg:
            resets = []
            ob = CountingOutbox(4096)
            for q in range(1, 6):
                ob.push(q, proto.reading(q, 1764100000000 + q, q, "s.t", 20.0, "C"))
            sup = Supervisor(cfg, ob, Clock(), Backoff(0.01, 0.02, 60, random.Random(3).random),
                             reset=lambda: resets.append(failed[0]))
            async with running(sup) as task:
                await until(task, lambda: resets or failed[0] >= attempts_after, step=0.01)
                return resets, failed[0], sup, ob

    return asyncio.run(main())


def test_no_heap_to_reconnect_after_streaming_reboots_cleanly(monkeypatch):
    resets, failed, sup, ob = _run(monkeypatch, 1, 5 * OOM)
    assert sup.connects == 1
    # reset once, right after the NO_HEAP_REBOOT-th attempt in a row that found no heap
    # (before: never; the board retried for good while its outbox filled and dropped)
    assert resets[:1] == [OOM], (resets, failed)
    assert ob.flushes >= 1   # everything saved to flash first: no reboot gap


def test_a_boot_that_never_connected_does_not_reset_loop(monkeypatch):
    resets, failed, sup, ob = _run(monkeypatch, 0, 3 * OOM)
    assert sup.connects == 0 and failed >= 3 * OOM
    assert resets == [] and ob.flushes == 0
