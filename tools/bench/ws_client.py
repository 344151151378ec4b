"""MicroPython side of `fieldlink bench ws`: fieldlink's client against pre-built frames
written straight to a socket, both talking to the bench's websockets server.

Usage: micropython ws_client.py HOST PORT N_MSGS N_ECHO ROUNDS
Prints one JSON object per measurement ({"what": ..., ...}); the host side makes the table.
"""
import asyncio
import gc
import json
import os
import socket
import sys
import time

import micropython

from fieldlink.ws import client, handshake

HOST = sys.argv[1]
PORT = int(sys.argv[2])
N = int(sys.argv[3])
N_ECHO = int(sys.argv[4])
ROUNDS = int(sys.argv[5])
MSG = "m" * 100  # a 100-byte text message
HEAP_SENDS = 1000


def out(**kw):
    print(json.dumps(kw))


# --- the ceiling: pre-built frames written to a blocking socket ----------------------------
def raw_connect(path):
    ai = socket.getaddrinfo(HOST, PORT, 0, socket.SOCK_STREAM)[0]
    s = socket.socket(ai[0], socket.SOCK_STREAM)
    s.connect(ai[-1])
    key = handshake.make_key(os.urandom)
    s.write(handshake.build_request(HOST, PORT, path, key))
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.read(1)
    handshake.check_response(head, key)
    return s


def frame(text):
    # one masked text frame, built once (the raw client does no per-message work)
    b = text.encode()
    key = os.urandom(4)
    body = bytes(c ^ key[i & 3] for i, c in enumerate(b))
    return bytes((0x81, 0x80 | len(b))) + key + body


def raw_close(s):
    # a polite close (masked close frame 1000, then wait for the server to end TCP)
    s.write(bytes((0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8)))
    while s.read(64):
        pass
    s.close()


def read_exact(s, n):
    buf = b""
    while len(buf) < n:
        buf += s.read(n - len(buf))
    return buf


def raw_sink():
    s = raw_connect("/sink")
    f = frame(MSG)
    done = frame("DONE")
    t0 = time.ticks_us()
    for _ in range(N):
        s.write(f)
    t1 = time.ticks_us()
    s.write(done)
    hdr = read_exact(s, 2)
    count = int(read_exact(s, hdr[1] & 0x7F))
    t2 = time.ticks_us()
    raw_close(s)
    return time.ticks_diff(t1, t0), time.ticks_diff(t2, t0), count


def raw_echo():
    s = raw_connect("/echo")
    f = frame(MSG)
    rtts = []
    for _ in range(N_ECHO):
        t0 = time.ticks_us()
        s.write(f)
        read_exact(s, 2 + len(MSG))
        rtts.append(time.ticks_diff(time.ticks_us(), t0))
    raw_close(s)
    return median(rtts)


# --- fieldlink ----------------------------------------------------------------------------
async def fl_sink():
    ws = await client.connect("ws://%s:%d/sink" % (HOST, PORT), ping_interval_s=0)
    msg = MSG
    t0 = time.ticks_us()
    for _ in range(N):
        await ws.send(msg)
    t1 = time.ticks_us()
    await ws.send("DONE")
    count = int(await ws.recv())
    t2 = time.ticks_us()
    await ws.close()
    return time.ticks_diff(t1, t0), time.ticks_diff(t2, t0), count


async def fl_heap():
    ws = await client.connect("ws://%s:%d/sink" % (HOST, PORT), ping_interval_s=0)
    msg = MSG
    for _ in range(10):
        await ws.send(msg)  # warm up: buffers and the random pool exist before we count
    gc.collect()
    gc.disable()
    m0 = micropython.mem_total()
    for _ in range(HEAP_SENDS):
        await ws.send(msg)
    m1 = micropython.mem_total()
    gc.enable()
    await ws.send("DONE")
    count = int(await ws.recv())
    await ws.close()
    return (m1 - m0) / HEAP_SENDS, count


async def fl_echo():
    ws = await client.connect("ws://%s:%d/echo" % (HOST, PORT), ping_interval_s=0)
    rtts = []
    for _ in range(N_ECHO):
        t0 = time.ticks_us()
        await ws.send(MSG)
        await ws.recv()
        rtts.append(time.ticks_diff(time.ticks_us(), t0))
    await ws.close()
    return median(rtts)


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main():
    for r in range(ROUNDS):
        send_us, total_us, count = raw_sink()
        out(what="sink", client="raw", round=r, send_us=send_us, total_us=total_us, count=count)
        send_us, total_us, count = asyncio.run(fl_sink())
        out(what="sink", client="fieldlink", round=r, send_us=send_us, total_us=total_us,
            count=count)
        out(what="echo", client="raw", round=r, median_us=raw_echo())
        out(what="echo", client="fieldlink", round=r, median_us=asyncio.run(fl_echo()))
    per_msg, count = asyncio.run(fl_heap())
    out(what="heap", client="fieldlink", bytes_per_msg=per_msg, count=count)


main()
