"""Runs fieldlink's WebSocket client on MicroPython for the integration tests: one scenario
per run, each step printed as a JSON line the pytest side asserts on.

Usage: micropython mp_ws_client.py SCENARIO CONFIG.json
(also runs on CPython: the tests run a subset there too)
"""
import asyncio
import binascii
import json
import sys

import fieldlink.ws as client_pkg
from fieldlink.ws import client, errors

SCENARIO = sys.argv[1]
with open(sys.argv[2]) as _f:
    CFG = json.load(_f)


def out(**kw):
    print(json.dumps(kw))


def exc_info(e):
    d = {"exc": type(e).__name__}
    for k in ("code", "status", "errno"):
        v = getattr(e, k, None)
        if v is not None:
            d[k] = v
    if type(e) is errors.WSError:
        d["msg"] = str(e)
    r = getattr(e, "reason", None)
    if r is not None:
        d["reason"] = r
    return d


def pattern(n):
    return (bytes(range(256)) * (n // 256 + 1))[:n]


async def connect(url=None, **kw):
    opts = {"ping_interval_s": 0}
    opts.update(CFG.get("opts", {}))
    opts.update(kw)
    return await client.connect(url or CFG["url"], **opts)


async def echo_sizes():
    ws = await connect(max_message=70000)
    for n in CFG["sizes"]:
        for kind in ("text", "binary"):
            msg = "\u00e9" * (n // 2) + "a" * (n % 2) if kind == "text" else pattern(n)
            await ws.send(msg)
            got = await ws.recv()
            out(step="echo", kind=kind, size=n, ok=got == msg, type=type(got).__name__)
    await ws.close()
    out(step="closed", closed=ws.closed)


async def receive_all():
    # receive messages until the connection ends; report each and the ending
    ws = await connect()
    out(step="open", subprotocol=ws.subprotocol)
    for m in CFG.get("send", []):
        await ws.send(m)
    try:
        while True:
            m = await ws.recv()
            if isinstance(m, str):
                out(step="msg", type="str", text=m)
            else:
                out(step="msg", type="bytes", hex=binascii.hexlify(m).decode())
            if CFG.get("close_after") == m:
                await ws.close(CFG.get("close_code", 1000), CFG.get("close_reason", ""))
    except errors.WSError as e:
        out(step="end", closed=ws.closed, **exc_info(e))


async def client_ping():
    ws = await connect()
    await asyncio.wait_for(ws.ping(b"xyz"), 5)
    out(step="pong")
    await ws.close()


async def connect_only():
    try:
        ws = await connect()
    except errors.WSError as e:
        out(step="connect", **exc_info(e))
        return
    out(step="connect", exc=None, subprotocol=ws.subprotocol)
    if CFG.get("report_opening"):  # connect()'s opening code (tls too for wss://) is dropped
        out(step="opening_left", mods=sorted(
            k for k in sys.modules if k in ("fieldlink.ws.opening", "fieldlink.ws.handshake",
                                            "fieldlink.ws.tls")))
    await ws.send("hi")
    out(step="echo", text=await ws.recv())
    await ws.close()


async def hostile():
    # one connection per case; report how each ended
    for i, url in enumerate(CFG["urls"]):
        try:
            ws = await connect(url)
        except errors.WSError as e:
            out(step="case", case=i, where="connect", **exc_info(e))
            continue
        try:
            while True:
                m = await ws.recv()
                out(step="msg", case=i, text=m if isinstance(m, str) else None)
        except errors.WSError as e:
            out(step="case", case=i, where="recv", closed=ws.closed, **exc_info(e))
            try:
                await ws.send("after")
                out(step="send_after", case=i, exc=None)
            except errors.WSError as e2:
                out(step="send_after", case=i, **exc_info(e2))


async def exchange():
    # per case: receive one message, answer it, receive again. The second recv() is called
    # while the reader task is between reads, so it reads the socket itself (_read_here):
    # whatever ends the connection then must end it exactly as when the reader reads it.
    for i, url in enumerate(CFG["urls"]):
        ws = await connect(url)
        try:
            m = await ws.recv()
            out(step="msg", case=i, text=m if isinstance(m, str) else None)
            await ws.send("go")
            here = not (ws._rd_busy or ws._here)  # recv() will read the socket itself
            while True:
                m = await ws.recv()
                out(step="msg", case=i, text=m if isinstance(m, str) else None, here=here)
        except errors.WSError as e:
            out(step="case", case=i, where="recv", closed=ws.closed, here=here, **exc_info(e))
            try:
                await ws.send("after")
                out(step="send_after", case=i, exc=None)
            except errors.WSError as e2:
                out(step="send_after", case=i, **exc_info(e2))
        await ws.close()


async def fail_bound():
    # per case: recv() until the server breaks a rule, then close(). recv() must raise while
    # the client still waits for the server's TCP close (§7.1.1); close() must return within
    # that wait's bound even when the server never closes.
    try:
        from time import ticks_diff, ticks_ms
    except ImportError:
        import time
        ticks_ms = lambda: int(time.monotonic() * 1000)  # noqa: E731
        ticks_diff = lambda a, b: a - b  # noqa: E731
    for i, url in enumerate(CFG["urls"]):
        ws = await connect(url)
        try:
            while True:
                await ws.recv()
        except errors.WSError as e:
            ended = ws._done.is_set()  # the reader has closed the socket already
            t0 = ticks_ms()
            await ws.close()
            out(step="case", case=i, reader_done_at_raise=ended,
                close_ms=ticks_diff(ticks_ms(), t0), **exc_info(e))


async def opening_dropped():
    # connect() loads its opening code only while connecting: after it, neither opening nor
    # handshake is loaded; a second connect() loads them again and works
    def ws_modules():
        return sorted(k for k in sys.modules if k.startswith("fieldlink.ws."))
    before = ws_modules()
    for n in range(2):
        ws = await connect()
        out(step="connected", n=n, before=before, after=ws_modules(),
            on_package=[k for k in ("opening", "handshake", "tls", "_viper_src")
                        if hasattr(client_pkg, k)])
        await ws.send("hi %d" % n)
        out(step="echo", text=await ws.recv())
        await ws.close()
    try:
        await connect(CFG["refused"])  # the opening code is dropped after a failure too
    except errors.WSError as e:
        out(step="refused", after=ws_modules(), **exc_info(e))


async def dns_lookups():
    # socket.getaddrinfo blocks (no deadline, the event loop stops): connect() must not call
    # it for an IPv4 literal. A stand-in socket module counts the lookups.
    import socket as real

    class Spy:
        calls = []

        def __getattr__(self, name):
            return getattr(real, name)

        def getaddrinfo(self, host, *rest):
            Spy.calls.append(host)
            return real.getaddrinfo(host, *rest)

    sys.modules["socket"] = Spy()
    try:
        for u in CFG["urls"]:
            ws = await connect(u)
            await ws.send("x")
            await ws.recv()
            await ws.close()
            out(step="dns", url=u, lookups=Spy.calls)
            Spy.calls = []
    finally:
        del sys.modules["socket"]


async def _cancel_later(task, delay_s):
    await asyncio.sleep(delay_s)
    task.cancel()


async def timeouts():
    # recv() cancelled again and again by another task while it reads the socket itself
    # (it is called right after an exchange, in the same task: see client._read_here)
    ws = await connect()
    me = asyncio.current_task()
    first = await ws.recv()
    await ws.send("go")
    n = 0
    here = []
    while True:
        killer = asyncio.create_task(_cancel_later(me, 0.1))
        here.append(not (ws._rd_busy or ws._here))
        try:
            m = await ws.recv()
            killer.cancel()
            break
        except asyncio.CancelledError:
            if hasattr(me, "uncancel"):
                me.uncancel()  # CPython: this task goes on
            n += 1
    out(step="late", first=first, text=m, timeouts=n, here=all(here))
    await ws.close()
    out(step="closed", closed=ws.closed)


async def burst():
    # many messages at once, text (fast path) and binary (general path) interleaved, so the
    # kernel buffer fills and sends queue behind each other; the server checks the order
    ws = await connect()
    pad = "p" * CFG["size"]
    for i in range(CFG["count"]):
        if i % 7 == 3:
            await ws.send(b"%d:" % i + pad.encode())
        else:
            await ws.send("%d:" % i + pad)
    await ws.send("DONE")
    out(step="verdict", text=await ws.recv())
    await ws.close()


async def reuse():
    # A finished connection's read buffer and Encoder serve the next connect(); two open
    # connections never share them, and a closed one still reports why it ended.
    def bufs(ws):
        return ws._rbuf, ws._p.enc

    async def echo(ws, text):
        await ws.send(text)
        return await ws.recv() == text

    a = await connect()
    b = await connect()  # while a is open
    ra, ea = bufs(a)
    rb, eb = bufs(b)
    out(step="two_open", shared=ra is rb or ea is eb or ea.buf is eb.buf or ea._pool is eb._pool,
        echo=await echo(a, "a1") and await echo(b, "b1"))
    await a.close()
    out(step="a_closed", spare=client._spare[0] is ra and client._spare[1] is ea,
        a_rbuf=a._rbuf is None)
    c = await connect()  # takes a's buffers
    rc, ec = bufs(c)
    out(step="c_open", reused=rc is ra and ec is ea, spare_empty=client._spare[0] is None,
        echo=await echo(c, "c1") and await echo(b, "b2") and await echo(c, "c" * 300))
    try:
        await a.send("late")
        out(step="a_send", exc=None)
    except errors.WSError as e:
        out(step="a_send", closed=a.closed, **exc_info(e))
    await b.close()  # the spare is b's now
    try:
        await connect(CFG["refused"])
    except errors.WSError as e:
        out(step="refused", spare=client._spare[0] is rb and client._spare[1] is eb,
            **exc_info(e))
    d = await connect()  # after a failed connect, the spare set is still there
    out(step="d_open", reused=bufs(d) == (rb, eb), echo=await echo(d, "d1"))
    await c.close()
    await d.close()
    out(step="closed", closed=[x.closed for x in (a, b, c, d)])


async def reserve():
    # Buffers reserved at boot serve the first connect(), and a message of the reserved size
    # is framed without growing the encoder's buffer.
    client.reserve(1300)
    rbuf, enc = client._spare
    buf = enc.buf
    ws = await connect()
    text = "r" * 1300
    await ws.send(text)
    echoed = await ws.recv() == text
    out(step="reserved", taken=ws._rbuf is rbuf and ws._p.enc is enc, size=len(buf),
        kept=enc.buf is buf, echo=echoed)
    await ws.close()


SCENARIOS = {"reserve": reserve, "reuse": reuse, "burst": burst, "exchange": exchange, "timeouts": timeouts, "echo_sizes": echo_sizes, "receive_all": receive_all, "client_ping": client_ping,
             "connect_only": connect_only, "hostile": hostile, "fail_bound": fail_bound,
             "opening_dropped": opening_dropped, "dns_lookups": dns_lookups}
asyncio.run(SCENARIOS[SCENARIO]())
out(step="done")
