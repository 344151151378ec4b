"""The collector's side of app protocol v1 (docs/protocol.md), driven in-process by a CPython
client written here with websockets: the ack flow, exactly-once storage, auth in the upgrade,
close codes for bad input, supersede, store failure, commands, wss://."""
import asyncio
import json
import ssl

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from collector_fixtures import hello, readings
from fieldlink_tools.collector import Collector, Devices, SQLiteStore, StoreError
from fieldlink_tools.collector.store import open_readonly

TOKENS = {"dev-1": "tok-1", "dev-2": "tok-2", "off": "tok-off"}
VIEWER = "viewer-token-0123456789"
ADMIN = "admin-token-0123456789"
AS_VIEWER = {"Authorization": "Bearer " + VIEWER}
T = 10  # generous deadline (s) for anything the server should answer at once


def run(coro, timeout=60):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


class Server:
    """A Collector on a free port with a fresh store, as an async context manager."""

    def __init__(self, db, store=None, **kw):
        self.db = db
        self.store = store or SQLiteStore(db)
        kw.setdefault("devices", Devices(TOKENS, disabled={"off"}))
        kw.setdefault("viewer_token", VIEWER)
        kw.setdefault("admin_token", ADMIN)
        self.c = Collector(self.store, port=0, **kw)

    async def __aenter__(self):
        await self.c.start()
        return self.c

    async def __aexit__(self, *exc):
        await self.c.stop()
        self.store.close()


def dev_connect(url, dev="dev-1", token=None, subprotocols=("fieldlink.v1",), **kw):
    token = TOKENS.get(dev) if token is None else token
    return connect(url, subprotocols=list(subprotocols) or None, open_timeout=T,
                   additional_headers={"Authorization": "Bearer " + token,
                                       "X-Fieldlink-Device": dev}, **kw)


async def recv(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), T))


async def send(ws, m):
    await ws.send(json.dumps(m))


async def do_hello(ws, dev="dev-1", **kw):
    await send(ws, hello(dev, **kw))
    m = await recv(ws)
    assert m["t"] == "welcome" and m["v"] == 1 and isinstance(m["time"], float)
    d = await recv(ws)      # the whole desired state follows welcome on every connection
    assert d["t"] == "desired" and d["full"] is True, d
    return m["ack"]


async def do_batch(ws, seqs):
    await send(ws, {"t": "batch", "r": readings(seqs)})
    m = await recv(ws)
    assert m["t"] == "ack", m
    return m["ack"]


async def expect_close(ws, code, error=None):
    """The server sends `error` (when `error` is given) and then closes with `code`."""
    if error is not None:
        m = await recv(ws)
        assert m == {"t": "error", "code": error, "msg": m["msg"]} and m["msg"]
    with pytest.raises(ConnectionClosed) as e:
        await asyncio.wait_for(ws.recv(), T)
    assert e.value.rcvd is not None and e.value.rcvd.code == code, e.value


def stored(db, dev="dev-1"):
    st = open_readonly(db)
    try:
        return [r["q"] for r in st.readings(dev)]
    finally:
        st.close()


# -- the ack flow ----------------------------------------------------------------------------

def test_hello_welcome_batch_ack(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            async with dev_connect(c.url) as ws:
                assert ws.subprotocol == "fieldlink.v1"
                assert await do_hello(ws) == 0
                assert await do_batch(ws, range(1, 4)) == 3
                assert await do_batch(ws, range(4, 6)) == 5
            rows = c.store.readings("dev-1")
            assert [r["q"] for r in rows] == [1, 2, 3, 4, 5]
            assert rows[0]["n"] == "env.temperature" and rows[0]["u"] == "C"
            assert rows[0]["v"] == 20.01 and rows[0]["up"] == 1000 and rows[0]["boot"] == 1
    run(main())


def test_exactly_once_under_resends_and_overlapping_batches(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            async with dev_connect(c.url) as ws:
                await do_hello(ws)
                assert await do_batch(ws, range(1, 11)) == 10
                assert await do_batch(ws, range(1, 11)) == 10      # resent whole
                assert await do_batch(ws, range(5, 16)) == 15      # overlapping
            async with dev_connect(c.url) as ws:                   # reconnect, resend again
                assert await do_hello(ws, next=16, first=1, held=15) == 15
                assert await do_batch(ws, range(1, 21)) == 20
            assert [r["q"] for r in c.store.readings("dev-1")] == list(range(1, 21))
            assert c.store.devices()[0]["readings"] == 20
    run(main())


def test_readings_with_long_reasons_and_huge_values_are_stored_and_acked(tmp_path):
    # Both used to cost the connection (1007 for "e" over 64 chars; 1011 from sqlite3's
    # OverflowError for an int beyond 64 bits), and the device resent them forever.
    long_e = "DeviceMissing: ds18b20 28ff4c6a711603eb: bus stuck (config byte 0x00 is impossible)"
    rs = [{"q": 1, "ts": None, "up": 0, "n": "water.temperature", "v": None, "u": "C",
           "e": long_e},
          {"q": 2, "ts": None, "up": 5, "n": "count.events", "v": 10 ** 20, "u": ""}]

    async def main():
        async with Server(tmp_path / "c.db") as c:
            async with dev_connect(c.url) as ws:
                await do_hello(ws)
                await send(ws, {"t": "batch", "r": rs})
                assert (await recv(ws)) == {"t": "ack", "ack": 2}
            got = c.store.readings("dev-1")
            assert got[0]["v"] is None and got[0]["e"] == long_e[:64]
            assert got[1]["v"] == 1e20
    run(main())


def test_gaps_advance_the_ack_and_holes_hold_it(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            async with dev_connect(c.url) as ws:
                await do_hello(ws)
                assert await do_batch(ws, range(1, 6)) == 5
                assert await do_batch(ws, [11, 12]) == 5           # hole 6..10: ack waits
                await send(ws, {"t": "gap", "from": 6, "to": 8, "why": "dropped"})
                assert (await recv(ws)) == {"t": "ack", "ack": 8}
                await send(ws, {"t": "gap", "from": 9, "to": 10, "why": "reboot"})
                assert (await recv(ws)) == {"t": "ack", "ack": 12}
                await send(ws, {"t": "gap", "from": 9, "to": 10, "why": "reboot"})  # resent
                assert (await recv(ws)) == {"t": "ack", "ack": 12}
            gaps = c.store.gaps("dev-1")
            assert [(g["from"], g["to"], g["why"]) for g in gaps] == [
                (6, 8, "dropped"), (9, 10, "reboot")]
            assert c.store.devices()[0]["dropped_gaps"] == 3
    run(main())


def test_ack_survives_a_server_restart(tmp_path):
    db = tmp_path / "c.db"

    async def first():
        async with Server(db) as c:
            async with dev_connect(c.url) as ws:
                await do_hello(ws)
                assert await do_batch(ws, range(1, 8)) == 7

    async def second():
        async with Server(db) as c:
            async with dev_connect(c.url) as ws:
                assert await do_hello(ws, next=8, first=3, held=5) == 7
                assert await do_batch(ws, range(3, 10)) == 9
    run(first())
    run(second())
    assert stored(db) == list(range(1, 10))


def test_lost_store_records_a_lost_gap_instead_of_stalling(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db") as c:   # a fresh store: the device's 1..99 were
            async with dev_connect(c.url) as ws:     # acked by a database that is gone
                assert await do_hello(ws, next=105, first=100, held=5) == 0
                assert await do_batch(ws, range(100, 105)) == 104
            assert [(g["from"], g["to"], g["why"]) for g in c.store.gaps("dev-1")] == [
                (1, 99, "lost")]
    run(main())


# -- authentication in the upgrade -----------------------------------------------------------

@pytest.mark.parametrize("dev,token,status", [
    ("nobody", "tok-1", 401),        # unknown device
    ("dev-1", "wrong", 401),         # wrong token
    ("dev-1", "", 401),              # no token
    ("bad id!", "tok-1", 401),       # not a device id
    ("off", "tok-off", 403),         # known but disabled
])
def test_refused_in_the_upgrade_before_any_data(tmp_path, dev, token, status):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            with pytest.raises(InvalidStatus) as e:
                async with dev_connect(c.url, dev=dev, token=token):
                    pass
            assert e.value.response.status_code == status
            if status == 401:
                assert e.value.response.headers["WWW-Authenticate"].startswith("Bearer")
            assert c.store.devices() == []                 # nothing stored, not even a row
    run(main())


def test_subprotocol_is_required(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            for offered in ((), ("chat",)):
                with pytest.raises(InvalidStatus) as e:
                    async with dev_connect(c.url, subprotocols=offered):
                        pass
                assert e.value.response.status_code == 400
            async with dev_connect(c.url, subprotocols=("fieldlink.v2", "fieldlink.v1")) as ws:
                assert ws.subprotocol == "fieldlink.v1"    # v2 first, v1 fallback
    run(main())


def test_connection_limit_answers_503(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db", max_devices=1) as c:
            async with dev_connect(c.url, "dev-1") as ws:
                await do_hello(ws)
                with pytest.raises(InvalidStatus) as e:
                    async with dev_connect(c.url, "dev-2"):
                        pass
                assert e.value.response.status_code == 503
                async with dev_connect(c.url, "dev-1") as ws2:   # its own device: supersedes
                    assert await do_hello(ws2) == 0
    run(main())


# -- bad input: error message, close code, and the server lives on ---------------------------

@pytest.mark.parametrize("payload,code,error", [
    ("{not json", 1007, "bad_json"),
    ("[1, 2]", 1007, "bad_message"),
    ('{"t": 5}', 1007, "bad_message"),
    ('{"v": 1}', 1007, "bad_message"),
    ('{"t": "hello", "v": 1, "dev": "dev-1"}', 1007, "bad_message"),       # fields missing
    ('{"t": "batch", "r": []}', 1008, "order"),                            # before hello
    ('{"t": "health", "heap_free": 1}', 1008, "order"),                    # before hello
])
def test_bad_first_message(tmp_path, payload, code, error):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            async with dev_connect(c.url) as ws:
                await ws.send(payload)
                await expect_close(ws, code, error)
            assert c.store.readings("dev-1") == []
            async with dev_connect(c.url) as ws:           # the server is still fine
                assert await do_hello(ws) == 0
    run(main())


@pytest.mark.parametrize("message,code,error", [
    (hello("dev-1"), 1008, "order"),                                         # hello twice
    ({"t": "batch", "r": readings([3, 2])}, 1008, "order"),                  # not increasing
    ({"t": "batch", "r": {"q": 1}}, 1007, "bad_message"),                 # r not a list
    ({"t": "batch", "r": readings([1]) + [{"ts": None, "up": 0, "n": "x", "v": 1, "u": ""}]},
     1007, "bad_message"),                                                  # a reading without q
    ({"t": "gap", "from": 1, "to": 2, "why": "lost"}, 1007, "bad_message"),     # server's own
    ({"t": "gap", "from": 1, "to": 2, "why": "rejected"}, 1007, "bad_message"),
    ({"t": "batch", "r": [{"q": True, "ts": None, "up": 0, "n": "x", "v": 1, "u": ""}]},
     1007, "bad_message"),
    ({"t": "gap", "from": 5, "to": 4, "why": "dropped"}, 1007, "bad_message"),
    ({"t": "batch", "r": readings(range(1, 502))}, 1009, "too_big"),         # > 500 readings
])
def test_bad_message_after_hello(tmp_path, message, code, error):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            async with dev_connect(c.url) as ws:
                await do_hello(ws)
                await send(ws, message)
                await expect_close(ws, code, error)
            assert c.store.readings("dev-1") == []
    run(main())


def test_nan_and_hello_for_another_device_are_refused(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            async with dev_connect(c.url) as ws:
                await do_hello(ws)
                await ws.send('{"t":"batch","r":[{"q":1,"ts":null,"up":0,"n":"x","v":NaN,'
                              '"u":"C"}]}')
                await expect_close(ws, 1007, "bad_json")
            async with dev_connect(c.url) as ws:
                await send(ws, hello("dev-2"))
                await expect_close(ws, 1008, "identity")
    run(main())


def test_unknown_message_types_and_fields_are_ignored(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            async with dev_connect(c.url) as ws:
                await do_hello(ws, future_field=[1, 2])
                await send(ws, {"t": "telemetry-v2", "x": 1})
                rs = readings([1])
                rs[0]["extra"] = "ignored"
                await send(ws, {"t": "batch", "r": rs, "more": True})
                assert (await recv(ws)) == {"t": "ack", "ack": 1}
    run(main())


def test_binary_message_closes_1003(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            async with dev_connect(c.url) as ws:
                await do_hello(ws)
                await ws.send(b'{"t":"batch","r":[]}')
                await expect_close(ws, 1003, "binary")
    run(main())


def test_oversized_message_closes_1009(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db", max_message=2048) as c:
            async with dev_connect(c.url) as ws:
                await do_hello(ws)
                big = {"t": "batch", "r": readings(range(1, 60))}
                assert len(json.dumps(big)) > 2048
                await send(ws, big)
                # The WebSocket layer fails the connection as soon as the frame header
                # announces the size (RFC 6455 §7.4.1): no `error` message, the reason says why.
                with pytest.raises(ConnectionClosed) as e:
                    await asyncio.wait_for(ws.recv(), T)
                assert e.value.rcvd.code == 1009
            assert c.store.readings("dev-1") == []
            async with dev_connect(c.url) as ws:
                await do_hello(ws)
                assert await do_batch(ws, range(1, 5)) == 4
    run(main())


# -- one live connection per device ----------------------------------------------------------

def test_new_connection_supersedes_the_old_with_4000(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            async with dev_connect(c.url) as old:
                await do_hello(old)
                assert await do_batch(old, [1, 2]) == 2
                async with dev_connect(c.url) as new:
                    with pytest.raises(ConnectionClosed) as e:
                        await asyncio.wait_for(old.recv(), T)
                    assert e.value.rcvd.code == 4000
                    assert await do_hello(new, next=3) == 2
                    assert await do_batch(new, [3]) == 3
                    assert c.connected() == ["dev-1"]
    run(main())


# -- the store fails: acks pause, nothing is acked, nobody is closed ----------------------------

class FailingStore(SQLiteStore):
    fail = True

    def apply(self, ops):
        if self.fail and any(name == "add_readings" for name, _ in ops):
            raise StoreError("disk I/O error (injected)")
        return super().apply(ops)


async def http_status(c, path):
    r, w = await asyncio.open_connection("127.0.0.1", c.port)
    w.write(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path).encode())
    await w.drain()
    status = (await asyncio.wait_for(r.readline(), T)).split()[1]
    w.close()
    return int(status)


def test_store_failure_pauses_acks_without_closing(tmp_path):
    # It used to close the device with 1011 at once: under load (store errors from a
    # contended machine) hundreds of devices at a time, a reconnect storm. Now the group is
    # retried with backoff, the device waits with its data, /healthz says so.
    async def main():
        store = FailingStore(tmp_path / "c.db")
        async with Server(tmp_path / "c.db", store=store) as c:
            async with dev_connect(c.url) as ws:
                await do_hello(ws)
                await send(ws, {"t": "batch", "r": readings([1, 2, 3])})
                for _ in range(200):                        # until a retry failed
                    if c.committer.failing is not None:
                        break
                    await asyncio.sleep(0.05)
                assert c.committer.failing is not None
                assert await http_status(c, "/healthz") == 503
                assert store.readings("dev-1") == [] and store.ack("dev-1") == 0
                store.fail = False                          # the disk is back
                # the very next message is the ack: no error, no close, nothing lost
                assert (await recv(ws)) == {"t": "ack", "ack": 3}
                assert await do_batch(ws, [4]) == 4
                assert c.committer.failing is None
                assert await http_status(c, "/healthz") == 200
            assert [r["q"] for r in store.readings("dev-1")] == [1, 2, 3, 4]
    run(main())


def test_store_failure_at_shutdown_acks_nothing(tmp_path):
    async def main():
        store = FailingStore(tmp_path / "c.db")
        async with Server(tmp_path / "c.db", store=store) as c:
            async with dev_connect(c.url) as ws:
                await do_hello(ws)
                await send(ws, {"t": "batch", "r": readings([1, 2, 3])})
                for _ in range(200):
                    if c.committer.failing is not None:
                        break
                    await asyncio.sleep(0.05)
                await asyncio.wait_for(c.stop(), T)        # does not hang on the store
                with pytest.raises(ConnectionClosed) as e:
                    while True:
                        m = await recv(ws)
                        assert m["t"] != "ack"
                assert e.value.rcvd.code == 1001
            assert store.readings("dev-1") == []
    run(main())


# -- commands --------------------------------------------------------------------------------

async def answer_commands(ws, results):
    """Play the device side of commands: reply to each cmd from `results`."""
    while True:
        m = await recv(ws)
        assert m["t"] == "cmd" and isinstance(m["id"], str)
        res = results.get(m["cmd"])
        if res is None:
            await send(ws, {"t": "reply", "id": m["id"], "ok": False, "err": "unknown command"})
        else:
            await send(ws, {"t": "reply", "id": m["id"], "ok": True, "result": res(m["args"])})


def test_commands_round_trip(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            async with dev_connect(c.url) as ws:
                await do_hello(ws)
                player = asyncio.ensure_future(answer_commands(ws, {
                    "set_interval": lambda a: a["interval_s"], "sample_now": lambda a: None,
                    "reboot": lambda a: None}))
                try:
                    r = await c.command("dev-1", "set_interval",
                                        {"sensor": "*", "interval_s": 2.5})
                    assert r["ok"] is True and r["result"] == 2.5
                    r = await c.command("dev-1", "sample_now")
                    assert r["ok"] is True
                    r = await c.command("dev-1", "frobnicate")
                    assert r == {"t": "reply", "id": r["id"], "ok": False,
                                 "err": "unknown command"}
                finally:
                    player.cancel()
                with pytest.raises(asyncio.TimeoutError):      # nobody answers now
                    await c.command("dev-1", "reboot", timeout=0.2)
            from fieldlink_tools.collector import DeviceNotConnected
            with pytest.raises(DeviceNotConnected):
                await c.command("dev-2", "reboot")
    run(main())


def test_command_through_admin_endpoint(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            admin = c.url[:-3] + "/admin"
            with pytest.raises(InvalidStatus) as e:
                async with connect(admin, additional_headers={"Authorization": "Bearer no"}):
                    pass
            assert e.value.response.status_code == 401
            async with dev_connect(c.url) as ws:
                await do_hello(ws)
                player = asyncio.ensure_future(answer_commands(ws, {"health": lambda a: None}))
                try:
                    async with connect(admin, additional_headers={
                            "Authorization": "Bearer " + ADMIN}) as a:
                        await send(a, {"op": "cmd", "dev": "dev-1", "cmd": "health"})
                        out = await recv(a)
                        assert out["ok"] and out["reply"]["ok"] is True
                        await send(a, {"op": "cmd", "dev": "dev-2", "cmd": "health"})
                        assert (await recv(a))["error"].startswith("not connected")
                finally:
                    player.cancel()
    run(main())


# -- health and the event feed ---------------------------------------------------------------

def test_health_is_stored_and_events_are_published(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            sub = c.subscribe()
            async with dev_connect(c.url) as ws:
                await do_hello(ws)
                h = {"t": "health", "heap_free": 50000, "heap_min": 42000, "reconnects": 3,
                     "dropped": 0, "rssi": -61, "uptime_s": 12.5, "boot": 1, "held": 0}
                await send(ws, h)
                assert await do_batch(ws, [1, 2]) == 2
                assert await do_batch(ws, [1, 2]) == 2             # resend: no new readings
            kinds = []
            while "disconnected" not in kinds:
                e = await sub.get(T)
                kinds.append(e["t"])
                if e["t"] == "readings":
                    assert [r["q"] for r in e["r"]] == [1, 2] and e["ack"] == 2
            assert kinds == ["connected", "hello", "health", "readings", "ack", "disconnected"]
            sub.close()
            dev = c.store.devices()[0]
            assert dev["health"]["heap_free"] == 50000 and dev["health"]["rssi"] == -61
            assert dev["hello"]["fw"] == "0.0.0-test"
    run(main())


def test_print_readings_lines(tmp_path):
    lines = []

    async def main():
        async with Server(tmp_path / "c.db", print_readings=lines.append) as c:
            async with dev_connect(c.url) as ws:
                await do_hello(ws)
                await do_batch(ws, [1])
                await do_batch(ws, [1])
    run(main())
    assert lines == ["dev-1 #1 env.temperature = 20.01 C [up 1000ms]"]


# -- wss:// ----------------------------------------------------------------------------------

def test_wss_with_a_trustme_certificate(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def main():
        async with Server(tmp_path / "c.db", ssl_context=server_ctx) as c:
            assert c.url.startswith("wss://127.0.0.1:")
            async with dev_connect(c.url, ssl=client_ctx) as ws:
                assert await do_hello(ws) == 0
                assert await do_batch(ws, [1, 2]) == 2
            # A client that verifies against the system CAs refuses our certificate.
            with pytest.raises(ssl.SSLCertVerificationError):
                async with dev_connect(c.url, ssl=ssl.create_default_context()):
                    pass
    run(main())


# -- HTTP routes -----------------------------------------------------------------------------

def test_http_routes(tmp_path):
    import urllib.error
    import urllib.request

    async def main():
        async with Server(tmp_path / "c.db") as c:
            async with dev_connect(c.url) as ws:
                await do_hello(ws)
                await do_batch(ws, [1, 2, 3])

                def get(path):
                    try:
                        req = urllib.request.Request(c.http_url + path, headers=AS_VIEWER)
                        with urllib.request.urlopen(req, timeout=T) as r:
                            return r.status, r.headers["Content-Type"], r.read()
                    except urllib.error.HTTPError as e:
                        return e.code, None, b""
                loop = asyncio.get_running_loop()
                st, ctype, body = await loop.run_in_executor(None, get, "")
                assert st == 200 and ctype.startswith("text/html") and b"app.js" in body
                st, ctype, body = await loop.run_in_executor(None, get, "app.js")
                assert st == 200 and "javascript" in ctype and b"WebSocket" in body
                st, ctype, body = await loop.run_in_executor(None, get, "api/devices")
                snap = json.loads(body)
                assert snap["devices"][0]["device"] == "dev-1"
                assert snap["devices"][0]["connected"] is True
                assert [r["q"] for r in snap["devices"][0]["latest"]] == [3, 2, 1]
                assert (await loop.run_in_executor(None, get, "nope"))[0] == 404
                # Without credentials /ws is refused like any unknown device.
                assert (await loop.run_in_executor(None, get, "ws"))[0] == 401
    run(main())


# -- never crashes ---------------------------------------------------------------------------

def test_garbage_on_the_socket_and_silent_devices_do_not_hurt(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db", hello_timeout=0.5, open_timeout=1) as c:
            for junk in (b"\x16\x03\x01\x02\x00garbage-tls-hello", b"POST /ws HTTP/1.1\r\n\r\n",
                         b"GET /ws HTTP/1.1\r\nHost: x\r\n" + b"A" * 70000 + b"\r\n\r\n",
                         b"\x00" * 100):
                r, w = await asyncio.open_connection("127.0.0.1", c.port)
                w.write(junk)
                await w.drain()
                await asyncio.wait_for(r.read(), T)          # the server hangs up
                w.close()
            async with dev_connect(c.url) as ws:            # authenticated, then silent
                await expect_close(ws, 1008, "order")
            async with dev_connect(c.url) as ws:
                assert await do_hello(ws) == 0
                assert await do_batch(ws, [1]) == 1
    run(main())


def test_live_feed_refuses_other_origins(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            live = c.url[:-3] + "/live"
            with pytest.raises(InvalidStatus) as e:
                async with connect(live, origin="http://evil.example",
                                   additional_headers=AS_VIEWER):
                    pass
            assert e.value.response.status_code == 403
            async with connect(live, origin="http://127.0.0.1:%d" % c.port,
                               additional_headers=AS_VIEWER) as ws:
                snap = await recv(ws)
                assert snap["t"] == "snapshot" and snap["devices"] == []
                async with dev_connect(c.url) as d:
                    await do_hello(d)
                    await do_batch(d, [1])
                kinds = []
                while "readings" not in kinds:
                    kinds.append((await recv(ws))["t"])
                assert kinds == ["connected", "hello", "readings"]
    run(main())


def test_live_gap_events_carry_the_devices_dropped_total(tmp_path):
    # A device resends its pending gaps on every connection, merged with newer drops: the
    # dashboard counts from the event, so it must carry the total (each seq once), not a range
    # to add (before: 5 + 8 = 13 shown for 8 dropped until the next snapshot).
    async def main():
        async with Server(tmp_path / "c.db") as c:
            live = c.url[:-3] + "/live"
            async with connect(live, origin="http://127.0.0.1:%d" % c.port,
                               additional_headers=AS_VIEWER) as ws:
                await recv(ws)  # the snapshot
                for to in (5, 8):  # the second connection resends 1-5 as 1-8
                    async with dev_connect(c.url) as d:
                        await do_hello(d)
                        await send(d, {"t": "gap", "from": 1, "to": to, "why": "dropped"})
                        assert (await recv(d)) == {"t": "ack", "ack": to}
                gaps = []
                while len(gaps) < 2:
                    e = await recv(ws)
                    if e["t"] == "gap":
                        gaps.append((e["from"], e["to"], e["dropped"]))
                assert gaps == [(1, 5, 5), (1, 8, 8)], gaps
            assert c.store.dropped("dev-1") == 8
    run(main())


def test_printed_values_are_rounded_for_display_only():
    from fieldlink_tools.collector.server import format_reading
    r = {"q": 7, "n": "air.temperature", "v": 21.031891355764103, "u": "C", "up": 1000,
         "ts": None}
    assert format_reading("d", r) == "d #7 air.temperature = 21.03189 C [up 1000ms]"
    assert r["v"] == 21.031891355764103   # the reading itself is not touched
    r.update(v=None, e="absent")
    assert format_reading("d", r) == "d #7 air.temperature = -- (absent) [up 1000ms]"


# -- a device with a valid token cannot hurt the others (issue 12's review) -------------------

def _strict(text):
    def no(name):
        raise ValueError("not JSON: " + name)
    return json.loads(text, parse_constant=no)


def test_hostile_readings_are_rejected_and_the_snapshot_stays_json(tmp_path):
    import urllib.request
    lines = []

    async def main():
        async with Server(tmp_path / "c.db", print_readings=lines.append) as c:
            async with dev_connect(c.url) as ws:
                await do_hello(ws)
                rs = readings([1, 2, 3, 4])
                rs[0]["n"] = "a\ud800b"                       # lone surrogate: was 1011 forever
                rs[1]["n"] = "env.t\ndev-2 #9 env.t = 99 C"   # forged print line
                await ws.send(json.dumps({"t": "batch", "r": rs})[:-2]
                              + ',{"q":5,"ts":1e20,"up":1,"n":"a.b","v":1e999,"u":"C"}]}')
                err = await recv(ws)
                assert err["code"] == "rejected" and err["seqs"] == [1, 2, 5], err
                assert (await recv(ws)) == {"t": "ack", "ack": 5}
                await send(ws, {"t": "gap", "from": 6, "to": 2 ** 63 - 48, "why": "dropped"})
                await expect_close(ws, 1007, "bad_message")
            async with dev_connect(c.url) as ws:    # not refused forever
                assert await do_hello(ws, next=6) == 5
            req = urllib.request.Request(c.http_url + "api/devices", headers=AS_VIEWER)
            body = await asyncio.get_running_loop().run_in_executor(
                None, lambda: urllib.request.urlopen(req, timeout=T).read())
            snap = _strict(body)
            assert [r["q"] for r in snap["devices"][0]["latest"]] == [4, 3]
    run(main())
    assert all("\n" not in ln for ln in lines) and not any(ln.startswith("dev-2") for ln in lines)
    assert [ln.split()[1] for ln in lines if "#" in ln] == ["#3", "#4"], lines


def test_a_huge_health_message_is_stored_bounded(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db", max_message=2 ** 20) as c:
            async with dev_connect(c.url) as ws:
                await do_hello(ws)
                await send(ws, {"t": "health", "heap_free": 1, "heap_min": 1, "reconnects": 0,
                                "dropped": 0, "rssi": None, "uptime_s": 1, "boot": 1, "held": 0,
                                "blob": "x" * 500000})
                assert await do_batch(ws, [1]) == 1    # health handled before the batch
            body = c.store.devices()[0]["health"]
            assert len(json.dumps(body)) < 4096 and body["heap_free"] == 1
    run(main())


def test_an_old_database_holding_infinity_still_gives_strict_json(tmp_path):
    import urllib.request

    async def main():
        async with Server(tmp_path / "c.db") as c:
            # written by a collector from before numbers were checked
            c.store.add_readings("dev-1", readings([1], value=lambda q: float("inf")), 1)
            c.store.record_health("dev-1", {"uptime_s": float("nan")})
            req = urllib.request.Request(c.http_url + "api/devices", headers=AS_VIEWER)
            body = await asyncio.get_running_loop().run_in_executor(
                None, lambda: urllib.request.urlopen(req, timeout=T).read())
            dev = _strict(body)["devices"][0]
            assert dev["latest"][0]["v"] is None and dev["health"]["uptime_s"] is None
    run(main())
