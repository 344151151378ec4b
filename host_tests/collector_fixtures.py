"""Fixtures for tests that need a real collector: `fieldlink server` as a subprocess on a free
port, and a small protocol client that plays a device. Reuse them from any test directory with
`from collector_fixtures import collector_proc, fake_device, tls_files  # noqa: F401`
in its conftest.py.

    def test_x(collector_proc):
        c = collector_proc({"dev-1": "tok"})        # started; stopped at teardown
        c.url, c.db_path, c.restart(), c.kill(), c.stop(), c.start()
        c.seqs("dev-1"), c.ack("dev-1"), c.wait_seqs("dev-1", 10)
        st = c.store(); st.readings("dev-1"); st.gaps("dev-1"); st.close()   # read-only
        c.command("dev-1", "sample_now")            # needs the device connected
"""
import json
import sys

import pytest

from fieldlink_tools.collector.process import CollectorProcess

SUBPROTOCOL = "fieldlink.v1"


@pytest.fixture
def collector_proc(tmp_path):
    """Factory: collector_proc(devices, db_path=None, **CollectorProcess kwargs) -> started
    CollectorProcess (db_path: a SQLite file, default in tmp_path, or a postgresql:// URL).
    Every one started is stopped (SIGTERM, then SIGKILL) at teardown; if the
    test failed, their logs are printed."""
    started = []

    def make(devices=None, db_path=None, **kw):
        n = len(started)
        db = db_path or tmp_path / ("collector%s.db" % (n or ""))
        if "workdir" not in kw:   # side files (log, devices) of a PostgreSQL collector
            kw["workdir"] = tmp_path / ("collector%d" % n)
            kw["workdir"].mkdir(exist_ok=True)
        c = CollectorProcess(db, devices if devices is not None else {"dev-1": "tok-1"}, **kw)
        started.append(c)
        return c.start()

    yield make
    for c in started:
        try:
            c.stop()
        except Exception:
            c.kill()
        if c.proc is not None and c.proc.returncode not in (0, -9):
            sys.stderr.write("collector exited %s; log:\n%s" % (c.proc.returncode, c.log()))


def hello(dev, next=1, first=None, held=0, dropped=0, boot=1, synced=False, **extra):
    m = {"t": "hello", "v": 1, "dev": dev, "fw": "0.0.0-test", "board": "test",
         "boot": boot, "next": next, "first": next if first is None else first,
         "held": held, "dropped": dropped, "synced": synced}
    m.update(extra)
    return m


def readings(seqs, name="env.temperature", unit="C", value=lambda q: 20.0 + q / 100):
    return [{"q": q, "ts": None, "up": q * 1000, "n": name, "v": value(q), "u": unit}
            for q in seqs]


class FakeDevice:
    """A device played by the test over the real protocol (websockets' sync client)."""

    def __init__(self, url, dev, token, ssl=None, subprotocols=(SUBPROTOCOL,), timeout=10):
        from websockets.sync.client import connect
        self.dev = dev
        self.timeout = timeout
        headers = {"Authorization": "Bearer " + token, "X-Fieldlink-Device": dev}
        self._cm = connect(url, subprotocols=list(subprotocols) or None,
                           additional_headers=headers, ssl=ssl, open_timeout=timeout)
        self.ws = self._cm.__enter__()

    def send(self, m):
        self.ws.send(m if isinstance(m, (str, bytes)) else json.dumps(m))

    def recv(self):
        return json.loads(self.ws.recv(self.timeout))

    def hello(self, next=1, **kw):
        """Send hello, return the welcome's ack."""
        self.send(hello(self.dev, next=next, **kw))
        m = self.recv()
        assert m["t"] == "welcome", m
        self.desired = self.recv()      # the whole desired state, after every welcome
        assert self.desired["t"] == "desired" and self.desired["full"] is True, self.desired
        return m["ack"]

    def batch(self, seqs, **kw):
        """Send one batch, return the ack that answers it."""
        self.send({"t": "batch", "r": readings(seqs, **kw)})
        return self.expect("ack")["ack"]

    def gap(self, a, b, why="dropped"):
        self.send({"t": "gap", "from": a, "to": b, "why": why})
        return self.expect("ack")["ack"]

    def expect(self, t):
        """Next message of type t (commands arriving meanwhile are answered with ok)."""
        while True:
            m = self.recv()
            if m["t"] == t:
                return m
            if m["t"] == "cmd":
                self.send({"t": "reply", "id": m["id"], "ok": True, "result": None})
                continue
            raise AssertionError("expected %s, got %r" % (t, m))

    def close(self):
        self._cm.__exit__(None, None, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture
def fake_device():
    """Factory: fake_device(url, dev, token, ssl=None) -> connected FakeDevice (closed at
    teardown)."""
    made = []

    def make(*a, **kw):
        d = FakeDevice(*a, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        try:
            d.close()
        except Exception:
            pass


class TLSFiles:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost, as PEM files:
    `.ca` (what a client trusts), `.cert` and `.key` (for `fieldlink server --cert --key`)."""

    def __init__(self, directory):
        import trustme
        ca = trustme.CA()
        issued = ca.issue_cert("127.0.0.1", "localhost")
        self.ca = directory / "ca.pem"
        self.cert = directory / "server-cert.pem"
        self.key = directory / "server-key.pem"
        ca.cert_pem.write_to_path(str(self.ca))
        issued.cert_chain_pems[0].write_to_path(str(self.cert))
        for extra in issued.cert_chain_pems[1:]:
            extra.write_to_path(str(self.cert), append=True)
        issued.private_key_pem.write_to_path(str(self.key))

    def client_context(self):
        import ssl
        return ssl.create_default_context(cafile=str(self.ca))


@pytest.fixture
def tls_files(tmp_path):
    """TLSFiles in tmp_path: collector_proc(devices, cert=tls_files.cert, key=tls_files.key)."""
    d = tmp_path / "tls"
    d.mkdir()
    return TLSFiles(d)
