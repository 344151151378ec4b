"""Helpers for the tests that run the link supervisor on CPython against a small websockets
server (test_supervisor_step_errors, test_supervisor_failpath_memory,
test_supervisor_heap_reboot): a config, the server, and the supervisor's task with a bounded
wait and a bounded teardown."""
import asyncio
import json
from contextlib import asynccontextmanager

import websockets

from fieldlink import proto


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


def welcome(ack=0):
    return json.dumps({"t": "welcome", "v": proto.VERSION, "ack": ack, "time": 1.5e9})


@asynccontextmanager
async def server(handler):
    """A websockets server on 127.0.0.1 speaking the app's subprotocol; yields a Cfg whose url
    points at it."""
    async with websockets.serve(handler, "127.0.0.1", 0,
                                subprotocols=[proto.SUBPROTOCOL]) as srv:
        cfg = Cfg()
        cfg.url = "ws://127.0.0.1:%d/ws" % srv.sockets[0].getsockname()[1]
        yield cfg


@asynccontextmanager
async def running(sup):
    """sup.run() as a task, cancelled at the end: again until it ends (bounded), since a cancel
    that races with a result inside CPython 3.11's wait_for can be swallowed."""
    task = asyncio.create_task(sup.run())
    loop = asyncio.get_running_loop()
    try:
        yield task
    finally:
        end = loop.time() + 20
        while not task.done() and loop.time() < end:
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
        assert task.done(), "supervisor task ignored cancellation for 20 s"


async def until(task, cond, timeout=30, step=0.05):
    """Wait until cond() holds, the task ended, or the deadline; the task must still run."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond() and not task.done() and loop.time() < deadline:
        await asyncio.sleep(step)
    assert not task.done(), "supervisor ended: %r" % (task.exception(),)
