"""`fieldlink server` as a subprocess: the fixture other suites use starts, stores, restarts."""
from collector_fixtures import FakeDevice


def test_subprocess_stores_and_keeps_ack_across_restart(collector_proc):
    c = collector_proc({"dev-1": "tok-1"})
    assert c.url.startswith("ws://127.0.0.1:")
    with FakeDevice(c.url, "dev-1", "tok-1") as d:
        assert d.hello(next=1) == 0
        assert d.batch(range(1, 11)) == 10
    assert c.seqs("dev-1") == list(range(1, 11))
    url = c.url
    assert c.restart().url == url           # same port: devices reconnect to the same URL
    with FakeDevice(c.url, "dev-1", "tok-1") as d:
        assert d.hello(next=11, first=5, held=6) == 10
    c.restart(kill=True)                    # a crash loses nothing acked either
    assert c.ack("dev-1") == 10
    assert c.stop() == 0                    # SIGTERM is a clean exit
