"""The supervisor on CPython against a small websockets server, with errors inside its steps:

- an exception nobody expected (here: the outbox's flash write failing with OSError while
  taking the welcome's ack) goes through the one failure path and the link is retried,
  instead of ending the supervisor's task for good (the board would sample on and never send
  again);
- a batch longer than the sender's buffers (readings longer than the 96 B a slot is sized
  for) on a heap with no block to grow the batch buffer or the WebSocket's frame buffer into
  fails the connection once; batches are halved from then on and everything is delivered.
  Before: the same batch failed after every reconnect, for good, while the outbox filled and
  dropped readings."""
import asyncio
import json
import random
import sys
from pathlib import Path

from fieldlink import proto
from fieldlink.clock import Clock
from fieldlink.link import S_STREAM, Backoff
from fieldlink.link import supervisor as supmod
from fieldlink.link.supervisor import Supervisor
from fieldlink.outbox import Outbox
from fieldlink.ws import client as wsclient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from supervisor_support import Cfg, running, server, until, welcome  # noqa: E402

N = 120  # readings queued for the batch tests


class FlakyOutbox(Outbox):
    fails = 1

    def welcome(self, n):
        if self.fails:
            self.fails -= 1
            raise OSError(28, "ENOSPC")  # e.g. the flash write in ack -> save_meta
        Outbox.welcome(self, n)


def test_unexpected_error_in_a_step_is_retried_not_fatal():
    async def main():
        hellos = []

        async def handler(ws):
            async for m in ws:
                obj = json.loads(m)
                if obj.get("t") == "hello":
                    hellos.append(obj)
                    await ws.send(welcome())

        async with server(handler) as cfg:
            sup = Supervisor(cfg, FlakyOutbox(4096), Clock(),
                             Backoff(0.05, 0.2, 60, random.Random(1).random))
            async with running(sup) as task:
                # streaming again after the failed hello (connects counts welcomes taken)
                await until(task, lambda: sup.connects >= 1 and sup.state == S_STREAM)
                assert sup.connects == 1 and sup.state == S_STREAM and len(hellos) == 2, hellos
                assert_dropped("hello")   # loaded for the hello only (heap)

    asyncio.run(main())


class FlushFails(Outbox):
    def flush(self):
        raise OSError(5, "EIO")  # the flash write before the reboot fails


def test_reboot_command_resets_even_when_the_flush_fails():
    # The reply "ok" went to the server already; without the reset the board would stay up
    # with a server that believes it rebooted.
    resets = []
    sup = Supervisor(Cfg(), FlushFails(4096), Clock(), Backoff(1, 2, 60, random.random),
                     reset=lambda: resets.append(1))
    try:
        asyncio.run(sup.reboot())
    except OSError:
        pass
    assert resets == [1]


def assert_dropped(mod):
    """The supervisor forgot fieldlink.link.<mod> after its one use: nothing keeps its code."""
    import fieldlink.link
    assert "fieldlink.link." + mod not in sys.modules
    assert mod not in fieldlink.link.__dict__


def _no_bigger_block(size):
    raise MemoryError("memory allocation failed, allocating %d bytes" % size)


def _frames_up_to(limit):
    send_utf8 = wsclient.WebSocket.send_utf8

    def send(self, buf, n=-1):
        n = len(buf) if n < 0 else n
        if n > limit:  # the frame buffer would have to grow: no block for it
            raise MemoryError("memory allocation failed, allocating %d bytes" % (n + 14))
        return send_utf8(self, buf, n)
    return send


def test_a_batch_that_does_not_fit_is_halved_not_retried_forever(monkeypatch):
    # the batch buffer cannot grow
    _run(monkeypatch, lambda: monkeypatch.setattr(supmod, "bytearray", _no_bigger_block,
                                                  raising=False))


def test_a_batch_whose_frame_does_not_fit_is_halved_too(monkeypatch):
    # the batch buffer grows, the WebSocket's frame buffer cannot (the 1416 B seen at 96k)
    _run(monkeypatch, lambda: monkeypatch.setattr(wsclient.WebSocket, "send_utf8",
                                                  _frames_up_to(1200)))


def _run(monkeypatch, starve):
    async def main():
        stored = set()
        batches = []

        async def handler(ws):
            async for m in ws:
                obj = json.loads(m)
                if obj.get("t") == "hello":
                    await ws.send(welcome(len(stored)))
                elif obj.get("t") == "batch":
                    batches.append(len(obj["r"]))
                    stored.update(r["q"] for r in obj["r"])
                    await ws.send(json.dumps({"t": "ack", "ack": len(stored)}))

        async with server(handler) as cfg:
            ob = Outbox(32768)
            for q in range(1, N + 1):  # ~130 B each: 16 need ~2.1 KB, the buffer has 1.5 KB
                ob.push(q, proto.reading(q, 1764100000000 + q, q,
                                         "a.long.sensor.name.here.and.longer.still",
                                         20.0 + q / 100, "degC", "calibrating"))
            sup = Supervisor(cfg, ob, Clock(), Backoff(0.05, 0.2, 60, random.Random(1).random))
            starve()
            async with running(sup) as task:
                await until(task, lambda: len(stored) >= N)
                assert stored == set(range(1, N + 1)), (len(stored), batches[:20])
                assert sup._batch_n == 8 and max(batches) <= 8, (sup._batch_n, batches)
                assert sup.reconnects <= 1, sup.reconnects

    asyncio.run(main())
