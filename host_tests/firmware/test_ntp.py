"""ntp.sntp_sync, the UDP shell around sntp.py, against a local SNTP responder: the time it
returns, None (never an exception) for a bad reply or a silent server, and the supervisor's
way in (`from fieldlink.clock import sntp_sync`) on CPython and on MicroPython."""
import asyncio
import socket
import threading

import pytest

from fieldlink import sntp
from fieldlink_tools import paths, upy

UNIX_S = 1700000000


class Responder:
    """Answers every request on 127.0.0.1:<port> with `reply(request)`, or stays silent."""

    def __init__(self, reply):
        self.reply = reply
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests = []
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(512)
            except OSError:
                continue
            self.requests.append(bytes(data))
            out = self.reply(data)
            if out:
                self.sock.sendto(out, addr)

    def close(self):
        self._stop = True
        self._t.join(5)
        self.sock.close()


def server_reply(_req, mode=4, stratum=2):
    b = bytearray(48)
    b[0] = (4 << 3) | mode
    b[1] = stratum
    b[40:44] = (UNIX_S + sntp.NTP_TO_UNIX_S).to_bytes(4, "big")
    b[44:48] = (0x80000000).to_bytes(4, "big")  # .5 s
    return bytes(b)


@pytest.fixture
def responder():
    made = []

    def make(reply):
        r = Responder(reply)
        made.append(r)
        return r
    yield make
    for r in made:
        r.close()


def _sync(port, timeout_ms=2000):
    from fieldlink.clock import sntp_sync  # the supervisor's import
    return asyncio.run(sntp_sync("127.0.0.1", timeout_ms=timeout_ms, port=port))


def test_sync_returns_the_servers_time(responder):
    r = responder(server_reply)
    assert _sync(r.port) == UNIX_S * 1000 + 500
    assert r.requests and r.requests[0][0] == 0x23  # a v4 client request


def test_bad_reply_or_silence_is_none(responder):
    kod = responder(lambda q: server_reply(q, stratum=0))  # kiss-o'-death: must not be used
    assert _sync(kod.port) is None
    silent = responder(lambda q: None)
    assert _sync(silent.port, timeout_ms=300) is None and silent.requests


@pytest.mark.micropython
def test_sync_on_micropython(responder, micropython):
    r = responder(server_reply)
    code = ("import asyncio\nfrom fieldlink.clock import sntp_sync\n"
            "print('MS', asyncio.run(sntp_sync('127.0.0.1', 2000, %d)))\n" % r.port)
    out = upy.run(code=code, path=(paths.FIRMWARE,), timeout=60)
    assert "MS %d" % (UNIX_S * 1000 + 500) in out.stdout, out.stdout + out.stderr
