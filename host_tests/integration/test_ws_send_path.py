"""send()'s hot path (a viper function on MicroPython) against the general encoder: every
frame it writes is parsed back here, payload unmasked and compared, with keys from a seeded
source so their order can be checked (§5.3: a fresh key per frame, including the refill of
the key pool every 64 frames). Run on MicroPython and on CPython."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ws_support import run_code  # noqa: E402

pytestmark = pytest.mark.micropython

# Runs inside the interpreter under test: a WebSocket over a fake socket that records what
# is written (offset and length included) and never has anything to read.
SCRIPT = r'''
import asyncio, json
from fieldlink.ws import client

class Sock:
    def __init__(self):
        self.frames = []
    def write(self, buf, off, n):
        self.frames.append(bytes(memoryview(buf)[off:off + n]))
        return n

class IO:
    direct = True
    idle = True
    def __init__(self):
        self.s = Sock()
        self.gate = asyncio.Event()
    def write(self, buf, n):
        self.s.write(buf, 0, n)
        return client._READY
    async def readinto(self, buf):
        await self.gate.wait()
        return 0
    def close(self):
        pass

class Counter:  # seeded "random" source: key i is bytes (i, i+1, i+2, i+3) & 0xFF
    def __init__(self):
        self.i = 0
    def __call__(self, n):
        out = bytearray(n)
        for j in range(n // 4):
            for b in range(4):
                out[4 * j + b] = (self.i + b) & 0xFF
            self.i += 1
        return bytes(out)

def parse(f):
    b0, b1 = f[0], f[1]
    n = b1 & 0x7F
    p = 2
    if n == 126:
        n = (f[2] << 8) | f[3]
        p = 4
    elif n == 127:
        n = int.from_bytes(f[2:10], "big")
        p = 10
    key = f[p:p + 4]
    body = bytes(c ^ key[i & 3] for i, c in enumerate(f[p + 4:]))
    return b0, b1 & 0x80, n, p, bytes(key), body

async def main():
    io = IO()
    ws = client.WebSocket(io, bytearray(64), None, b"", 0, 0, 16384)
    ws._p.enc._rand = Counter()
    ws._p.enc._pool[256] = 64  # draw the first keys from the counter too
    base = "ab\u00e9c\u20acd\U0001F600efgh" * 80
    ascii_ = "xyzw" * 200

    def messages():
        for start in range(5):  # different alignments of the str's data
            for n in list(range(20)) + [31, 32, 33, 100, 123, 124, 125, 126, 127, 200,
                                        495, 496, 497, 498, 700]:
                yield ascii_[start:start + n]
                yield base[start:start + n]
        for m in ("", "a", "lit\u00e9ral", "\x00nul\x00", b"bin\x00ary", bytearray(b"ba")):
            yield m

    bad = []
    nbad = 0
    count = 0
    fast = bool(ws._fast)  # MicroPython: the viper path is on
    for i, m in enumerate(messages()):
        await ws.send(m)
        f = io.s.frames.pop()
        assert not io.s.frames
        count += 1
        b0, masked, n, p, key, body = parse(f)
        want = m.encode() if isinstance(m, str) else bytes(m)
        op = 0x81 if isinstance(m, str) else 0x82
        minimal = p == (2 if n < 126 else 4 if n < 65536 else 10)
        exp_key = bytes((i + b) & 0xFF for b in range(4))
        if not (b0 == op and masked and n == len(want) and body == want and minimal
                and key == exp_key):
            nbad += 1
            if len(bad) < 5:
                bad.append([i, len(want), b0, n, p])
    print(json.dumps({"frames": count, "bad": bad, "nbad": nbad, "fast": fast}))
    io.gate.set()

asyncio.run(main())
'''


def run(interp):
    r = run_code(SCRIPT, interp, timeout=120)
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    assert r.returncode == 0 and lines, r.stdout[-2000:] + r.stderr[-2000:]
    return json.loads(lines[-1])


@pytest.mark.parametrize("interp", ["micropython", "cpython"])
def test_every_frame_sent_is_exact_minimal_and_freshly_keyed(interp):
    res = run(interp)
    assert res["bad"] == [] and res["nbad"] == 0
    assert res["frames"] > 64 * 4
    if interp == "micropython":
        assert res["fast"]  # the frames above came from the viper path  # the key pool was refilled several times


# Text of 8 MiB or more leaves the viper path (its length field is a small int): the frame is
# built in Python. Both ways of getting there: 8 Mi ASCII characters, and fewer characters
# whose UTF-8 is 8 MiB or more. The frame is parsed back on the host.
BIG_TEXT = r'''
import asyncio, sys
from fieldlink.ws import client, errors

class IO:
    direct = False
    idle = True
    s = None
    def __init__(self):
        self.frames = []
    def write(self, buf, n):
        self.frames.append(bytes(memoryview(buf)[:n]))
        return client._READY
    async def readinto(self, buf):
        await asyncio.sleep(3600)
    def close(self):
        pass

async def main():
    for m in ("a" * (1 << 23), "\u00e9" * ((1 << 22) + 1)):
        io = IO()
        ws = client.WebSocket(io, bytearray(64), None, b"", 0, 0, 16384)
        try:
            await ws.send(m)
        except errors.WSError as e:
            print("WSError", e)
        except Exception as e:
            print("ESCAPED", type(e).__name__, e)
        else:
            with open(sys.argv[-1], "ab") as f:
                f.write(io.frames[0])
        m = None
        io.frames = None

asyncio.run(main())
'''


def test_text_of_8_mib_or_more_is_sent_on_micropython(tmp_path):
    from fieldlink_tools import paths, upy
    out = tmp_path / "frames"
    r = upy.run(code=BIG_TEXT, path=(paths.FIRMWARE,), heapsize="512m", timeout=300,
                args=[out])
    assert r.returncode == 0 and "ESCAPED" not in r.stdout and "WSError" not in r.stdout, (
        r.stdout[-2000:] + r.stderr[-2000:])
    data = out.read_bytes()
    want = ["a" * (1 << 23), "\u00e9" * ((1 << 22) + 1)]
    pos = 0
    for m in want:
        body = m.encode()
        assert data[pos] == 0x81 and data[pos + 1] == 0xFF   # final text frame, masked, 64-bit
        n = int.from_bytes(data[pos + 2:pos + 10], "big")
        assert n == len(body)
        key = data[pos + 10:pos + 14]
        payload = data[pos + 14:pos + 14 + n]
        mask = (key * (n // 4 + 1))[:n]
        got = (int.from_bytes(payload, "little") ^ int.from_bytes(mask, "little")).to_bytes(
            n, "little")
        assert got == body
        pos += 14 + n
    assert pos == len(data)
