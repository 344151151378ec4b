"""Helpers for the WebSocket integration tests: servers in a background thread (a real
`websockets` server, and a hostile raw-TCP one), and running the client scenario script
(host_tests/integration/mp_ws_client.py) on MicroPython or CPython."""
import asyncio
import base64
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from fieldlink_tools import paths, upy

HERE = Path(__file__).resolve().parent
CLIENT = HERE / "mp_ws_client.py"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class LoopThread:
    """An asyncio loop in a daemon thread; `start(coro_fn)` runs coro_fn(stop_future)."""

    def __init__(self, serve):
        self._serve = serve
        self._ready = threading.Event()
        self.port = None
        self.error = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self):
        self.loop = asyncio.get_running_loop()
        self._stop = self.loop.create_future()
        try:
            await self._serve(self)
        except Exception as e:  # surfaced by __enter__ if the server never came up
            self.error = e
            self._ready.set()

    def ready(self, port):
        self.port = port
        self._ready.set()

    async def wait_stop(self):
        await self._stop

    def __enter__(self):
        self._thread.start()
        assert self._ready.wait(30), "server thread did not start"
        if self.error:
            raise self.error
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(lambda: self._stop.done() or self._stop.set_result(None))
        self._thread.join(15)
        assert not self._thread.is_alive(), "server thread did not stop"


def websockets_server(handler, ssl=None, **kw):
    """A real `websockets` server on 127.0.0.1 (port 0) running handler(ws)."""
    async def serve(lt):
        from websockets.asyncio.server import serve as ws_serve
        async with ws_serve(handler, "127.0.0.1", 0, ssl=ssl, **kw) as server:
            lt.ready(server.sockets[0].getsockname()[1])
            await lt.wait_stop()
    return LoopThread(serve)


def frame(op, payload=b"", fin=True):
    """An unmasked server frame."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | op
    if n < 126:
        h = bytes([b0, n])
    elif n < 65536:
        h = bytes([b0, 126]) + n.to_bytes(2, "big")
    else:
        h = bytes([b0, 127]) + n.to_bytes(8, "big")
    return h + payload


def parse_client_frames(data):
    """Masked client frames -> [(opcode, payload)] (stops at an incomplete frame)."""
    out, i = [], 0
    while i + 2 <= len(data):
        op = data[i] & 0x0F
        assert data[i + 1] & 0x80, "client frame not masked"
        n = data[i + 1] & 0x7F
        j = i + 2
        if n == 126:
            n = int.from_bytes(data[j:j + 2], "big")
            j += 2
        elif n == 127:
            n = int.from_bytes(data[j:j + 8], "big")
            j += 8
        if j + 4 + n > len(data):
            break
        key = data[j:j + 4]
        body = bytes(b ^ key[k % 4] for k, b in enumerate(data[j + 4:j + 4 + n]))
        out.append((op, body))
        i = j + 4 + n
    return out


class Hostile:
    """A raw TCP server speaking just enough HTTP: for connection path /case/N it plays
    cases[N] = {"head": raw response or None (a valid 101), "send": bytes after the
    handshake, "silent": True (never answer), "eof": True (close right after sending),
    "later": bytes sent once the client's first frame arrived, "eof_later": True (close
    right after those), "after_close": what to do once the client's close frame arrived
    instead of closing TCP: "linger" (never close), "half_close" (send EOF; then read until
    the client closes, recording "eof" or "reset" in .ends[N]) or "rst" (reset TCP, as
    Autobahn's server and load balancers do), "rst": True / "rst_later": True (reset TCP
    right after "send" / "later")}
    and records everything the client sent afterwards in .received[N]."""

    def __init__(self, cases):
        self.cases = cases
        self.received = {}
        self.ends = {}
        self.lt = LoopThread(self._serve)

    def __enter__(self):
        self.lt.__enter__()
        self.port = self.lt.port
        return self

    def __exit__(self, *exc):
        self.lt.__exit__(*exc)

    def url(self, i):
        return "ws://127.0.0.1:%d/case/%d" % (self.port, i)

    def wait_ends(self, n, timeout=10):
        """.ends once n connections have ended (the server's thread records an end when it
        reads the client's EOF, which may come after the client process has exited), or as
        it is at the deadline."""
        deadline = time.monotonic() + timeout
        while len(self.ends) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return dict(self.ends)

    async def _serve(self, lt):
        server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        async with server:
            lt.ready(server.sockets[0].getsockname()[1])
            await lt.wait_stop()

    async def _conn(self, reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            i = int(lines[0].split()[1].rsplit("/", 1)[1])
            case = self.cases[i]
            if case.get("silent"):
                await reader.read()  # until the client gives up
                return
            key = [l.split(":", 1)[1].strip() for l in lines
                   if l.lower().startswith("sec-websocket-key:")][0]
            accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
            resp = case.get("head") or (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept)
            writer.write(resp.encode() + case.get("send", b""))
            await writer.drain()
            if case.get("rst"):
                _reset(writer)
                return
            if case.get("eof"):
                return
            got = bytearray()
            self.received[i] = got
            later = case.get("later")
            while True:
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), 20)
                except asyncio.TimeoutError:
                    break
                if not chunk:
                    break
                got.extend(chunk)
                if later is not None and parse_client_frames(bytes(got)):
                    writer.write(later)
                    await writer.drain()
                    later = None
                    if case.get("eof_later"):
                        return
                    if case.get("rst_later"):
                        _reset(writer)
                        return
                if any(op == 8 for op, _ in parse_client_frames(bytes(got))):
                    after = case.get("after_close")
                    if after is None:
                        break  # the client's close frame: end TCP as a server should (§7.1.1)
                    if after == "rst":
                        _reset(writer)
                        return
                    if after == "half_close":
                        writer.write_eof()
                    try:
                        while await asyncio.wait_for(reader.read(65536), 20):
                            pass
                        self.ends[i] = "eof"
                    except ConnectionResetError:
                        self.ends[i] = "reset"
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def _reset(writer):
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN (what is written before
    still reaches the peer first)."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
    writer.transport.abort()


def run_client(scenario, cfg, interp="micropython", heapsize="512k", timeout=120):
    """Run the scenario script; return its JSON lines as dicts (asserting it ended well)."""
    # The config travels in a file: this MicroPython build aborts ("FATAL: uncaught NLR")
    # when a command-line argument is longer than 255 bytes.
    fd, cfg_path = tempfile.mkstemp(suffix=".json", prefix="ws-client-")
    with os.fdopen(fd, "w") as f:
        json.dump(cfg, f)
    try:
        return _run_client(scenario, cfg_path, interp, heapsize, timeout)
    finally:
        os.unlink(cfg_path)


def _run_client(scenario, cfg_path, interp, heapsize, timeout):
    args = [scenario, cfg_path]
    if interp == "micropython":
        r = upy.run(script=CLIENT, path=(paths.FIRMWARE,), heapsize=heapsize, args=args,
                    timeout=timeout)
    else:
        env = dict(os.environ, PYTHONPATH=str(paths.FIRMWARE))
        r = subprocess.run([sys.executable, str(CLIENT)] + args, env=env, capture_output=True,
                           text=True, timeout=timeout)
    lines = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    assert r.returncode == 0 and lines and lines[-1] == {"step": "done"}, (
        "%s client failed (exit %s):\n%s\n%s" % (interp, r.returncode, r.stdout[-3000:],
                                                 r.stderr[-3000:]))
    return lines[:-1]


def run_code(code, interp, timeout=120):
    """Run a script (text) with firmware/ on the path, on MicroPython or CPython; the
    CompletedProcess (text mode)."""
    if interp == "micropython":
        return upy.run(code=code, path=(paths.FIRMWARE,), timeout=timeout)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env={"PYTHONPATH": str(paths.FIRMWARE)})
