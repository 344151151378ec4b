"""A MemoryError inside the WebSocket client's own tasks (a small, fragmented heap) ends the
connection the way a lost one ends, or is retried: never a task that dies with an exception
nobody awaits. Before: the reader task died ("Task exception wasn't retrieved") and the
keepalive task died too, so a half-open link behind it was never declared dead. Run on
MicroPython and on CPython, over a fake socket."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ws_support import run_code  # noqa: E402

pytestmark = pytest.mark.micropython

SCRIPT = r'''
import asyncio, json
from fieldlink.ws import client
from fieldlink.ws.errors import ConnectionClosed, LinkDead

class IO:
    direct = False
    idle = True
    def __init__(self, read_fails, write_fails):
        self.read_fails = read_fails
        self.write_fails = write_fails
        self.writes = 0
        self.closed = False
        self.gate = asyncio.Event()
    def write(self, buf, n):
        self.writes += 1
        if self.writes <= self.write_fails:
            raise MemoryError("memory allocation failed, allocating 96 bytes")
        return client._READY
    async def readinto(self, buf):
        if self.read_fails:
            raise MemoryError("memory allocation failed, allocating 200 bytes")
        await self.gate.wait()  # a half-open link: nothing ever arrives
        return 0
    def close(self):
        self.closed = True

async def ends(ws):
    try:
        await asyncio.wait_for(ws.recv(), 3)
        return "message"
    except asyncio.TimeoutError:
        return "hangs"
    except (ConnectionClosed, LinkDead) as e:
        return type(e).__name__ + ": " + str(e)

async def tasks_end_clean(ws):
    out = []
    for t in (ws._reader, ws._keeper):
        if t is None:
            continue
        try:
            await asyncio.wait_for(t, 1)
            out.append("ok")
        except asyncio.CancelledError:
            out.append("cancelled")
        except asyncio.TimeoutError:
            out.append("running")
        except Exception as e:
            out.append("raised " + type(e).__name__)
    return out

async def main():
    res = {}
    # 1. the reader: MemoryError on reading the socket
    io = IO(True, 0)
    ws = client.WebSocket(io, bytearray(64), None, b"", 0, 0, 16384)
    res["reader"] = [await ends(ws), io.closed, await tasks_end_clean(ws)]
    # 2. the keepalive: no heap for any ping (every write fails) on a silent link
    io = IO(False, 1000)
    ws = client.WebSocket(io, bytearray(64), None, b"", 0.1, 0.2, 16384)
    res["keepalive"] = [await ends(ws), io.closed, await tasks_end_clean(ws)]
    # 3. the keepalive: the first ping finds no heap, the retry goes out, the link is silent
    io = IO(False, 1)
    ws = client.WebSocket(io, bytearray(64), None, b"", 0.1, 0.2, 16384)
    res["retry"] = [await ends(ws), io.writes, await tasks_end_clean(ws)]
    print(json.dumps(res))

asyncio.run(main())
'''


def run(interp):
    r = run_code(SCRIPT, interp, timeout=60)
    out = r.stdout + r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    assert r.returncode == 0 and lines, out[-3000:]
    return json.loads(lines[-1]), out


@pytest.mark.parametrize("interp", ["micropython", "cpython"])
def test_memoryerror_in_the_clients_tasks(interp):
    res, out = run(interp)
    assert "exception was never retrieved" not in out and "wasn't retrieved" not in out, out
    ended, closed, tasks = res["reader"]
    assert ended.startswith("ConnectionClosed") and "1006" in ended and "no memory" in ended
    assert closed and "raised MemoryError" not in tasks, res
    # no ping ever got out: dead after interval + timeout all the same
    ended, closed, tasks = res["keepalive"]
    assert ended.startswith("LinkDead"), res
    assert closed and "raised MemoryError" not in tasks, res
    # one ping lost to MemoryError, the retry went out (2 writes), then the usual verdict
    ended, writes, tasks = res["retry"]
    assert ended.startswith("LinkDead") and writes == 2, res
    assert "raised MemoryError" not in tasks, res
