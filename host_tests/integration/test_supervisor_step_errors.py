"""The supervisor on CPython against a small websockets server: an exception nobody expected
inside a step (here: the outbox's flash write failing with OSError while taking the welcome's
ack) goes through the one failure path and the link is retried, instead of ending the
supervisor's task for good (the board would sample on and never send again)."""
import asyncio
import json
import random
import sys

import websockets

from fieldlink import proto
from fieldlink.backoff import Backoff
from fieldlink.clock import Clock
from fieldlink.outbox import Outbox
from fieldlink.supervisor import S_STREAM, Supervisor


class Cfg:
    wifi_ssid = "x"
    wifi_password = "secret"
    ntp_host = ""
    token = "tok"
    device_id = "dev-1"
    ca_file = None
    connect_timeout_s = 5
    ping_interval_s = 5
    ping_timeout_s = 5
    batch_max = 16
    window = 64
    health_interval_s = 60


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
                    await ws.send(json.dumps({"t": "welcome", "v": proto.VERSION, "ack": 0,
                                              "time": 1.5e9}))

        async with websockets.serve(handler, "127.0.0.1", 0,
                                    subprotocols=[proto.SUBPROTOCOL]) as srv:
            port = srv.sockets[0].getsockname()[1]
            cfg = Cfg()
            cfg.url = "ws://127.0.0.1:%d/ws" % port
            sup = Supervisor(cfg, FlakyOutbox(4096), Clock(),
                             Backoff(0.05, 0.2, 60, random.Random(1).random))
            task = asyncio.create_task(sup.run())
            try:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                # streaming again after the failed hello (connects counts welcomes taken)
                while not (sup.connects >= 1 and sup.state == S_STREAM) and not task.done() \
                        and loop.time() < deadline:
                    await asyncio.sleep(0.05)
                assert not task.done(), "supervisor ended: %r" % (task.exception(),)
                assert sup.connects == 1 and sup.state == S_STREAM and len(hellos) == 2, hellos
                assert_dropped("link_hello")   # loaded for the hello only (heap)
            finally:
                # cancelled only while it waits in the stream state (CPython 3.11's wait_for
                # can swallow a cancel that races with its result)
                # Cancel again until it ends (bounded): a cancel swallowed by 3.11's wait_for
                # inside the teardown must not hang the test (asyncio.wait_for(task) would
                # wait on a task that ignores the cancel with no limit).
                end = loop.time() + 20
                while not task.done() and loop.time() < end:
                    task.cancel()
                    await asyncio.wait({task}, timeout=0.5)
                assert task.done(), "supervisor task ignored cancellation for 20 s"

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
    assert_dropped("link_commands")


def assert_dropped(mod):
    """Supervisor._once forgot the module after its one use: nothing keeps its code."""
    import fieldlink
    assert "fieldlink." + mod not in sys.modules
    assert mod not in fieldlink.__dict__
