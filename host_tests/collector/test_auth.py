"""Who may do what on the collector (docs/collector.md "Authentication"): viewer and admin
tokens, the dashboard's session cookie, the Host and Origin checks, methods, failed-token
limits, /healthz telling the truth about the store, and no secret in the log."""
import asyncio
import http.client
import json
import logging

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from collector_fixtures import hello
from collector_inproc import until
from fieldlink_tools.collector import Collector, SQLiteStore
from fieldlink_tools.collector import auth as A
from collector.test_server import (ADMIN, AS_VIEWER, TOKENS, VIEWER, Server, T, dev_connect, do_batch,
                         do_hello, recv, run)

AS_ADMIN = {"Authorization": "Bearer " + ADMIN}


async def request(c, method, path, headers=None, host=None):
    """(status, headers as a dict of lists, body) of one plain HTTP request."""
    def go():
        conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=T)
        try:
            conn.putrequest(method, path, skip_host=True)
            conn.putheader("Host", host or "127.0.0.1:%d" % c.port)
            for k, v in (headers or {}).items():
                conn.putheader(k, v)
            conn.endheaders()
            r = conn.getresponse()
            hdrs = {}
            for k, v in r.getheaders():
                hdrs.setdefault(k.lower(), []).append(v)
            return r.status, hdrs, r.read()
        finally:
            conn.close()
    return await asyncio.get_running_loop().run_in_executor(None, go)


def live_url(c):
    return c.url[:-3] + "/live"


async def upgrade_status(url, **kw):
    """The HTTP status a WebSocket upgrade gets (101 when it opens)."""
    try:
        async with connect(url, open_timeout=T, **kw):
            return 101
    except InvalidStatus as e:
        return e.response.status_code


def test_live_and_the_api_need_the_viewer_token(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            assert await upgrade_status(live_url(c)) == 401        # was open to anyone
            assert await upgrade_status(live_url(c), additional_headers={
                "Authorization": "Bearer " + "x" * 20}) == 401
            for who in (AS_VIEWER, AS_ADMIN):                       # admin implies viewer
                async with connect(live_url(c), additional_headers=who) as ws:
                    assert (await recv(ws))["t"] == "snapshot"
            st, hdrs, _ = await request(c, "GET", "/api/devices")
            assert st == 401 and hdrs["www-authenticate"] == ['Bearer realm="fieldlink"']
            st, _, body = await request(c, "GET", "/api/devices", AS_VIEWER)
            assert st == 200 and json.loads(body)["t"] == "snapshot"
            admin = c.url[:-3] + "/admin"
            assert await upgrade_status(admin, additional_headers=AS_VIEWER) == 403
            assert await upgrade_status(admin) == 401
            assert await upgrade_status(admin, additional_headers=AS_ADMIN) == 101
            # the page itself loads without a token: the token is typed into it
            assert (await request(c, "GET", "/"))[0] == 200
            assert (await request(c, "GET", "/healthz"))[0] == 200
    run(main())


def test_the_dashboard_session_is_a_cookie_not_the_token(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            st, hdrs, body = await request(c, "POST", "/api/session", AS_VIEWER)
            assert st == 200 and json.loads(body)["role"] == "viewer"
            cookie = hdrs["set-cookie"][0]
            attrs = [a.strip() for a in cookie.split(";")]
            assert "HttpOnly" in attrs and "SameSite=Strict" in attrs and "Path=/" in attrs
            assert any(a.startswith("Max-Age=") for a in attrs) and "Secure" not in attrs
            sid = attrs[0].split("=", 1)[1]
            assert len(sid) >= 32 and VIEWER not in cookie
            jar = {"Cookie": "other=1; %s=%s" % (A.COOKIE, sid)}
            assert (await request(c, "GET", "/api/devices", jar))[0] == 200
            st, _, body = await request(c, "GET", "/api/session", jar)
            assert st == 200 and json.loads(body) == {"role": "viewer"}
            origin = "http://127.0.0.1:%d" % c.port
            async with connect(live_url(c), origin=origin, additional_headers=jar) as ws:
                assert (await recv(ws))["t"] == "snapshot"
            # cross-site WebSocket hijacking: the browser would send the cookie along
            assert await upgrade_status(live_url(c), origin="http://evil.example",
                                        additional_headers=jar) == 403
            assert await upgrade_status(c.url[:-3] + "/admin", origin=origin,
                                        additional_headers=jar) == 403   # a viewer's session
            # login CSRF: another site cannot make the browser log in
            assert (await request(c, "POST", "/api/session", dict(
                AS_VIEWER, Origin="http://evil.example")))[0] == 403
            st, hdrs, _ = await request(c, "DELETE", "/api/session", jar)
            assert st == 200 and "Max-Age=0" in hdrs["set-cookie"][0]
            assert (await request(c, "GET", "/api/devices", jar))[0] == 401
            assert (await request(c, "POST", "/api/session"))[0] == 401
            st, _, body = await request(c, "POST", "/api/session", AS_ADMIN)
            assert json.loads(body)["role"] == "admin"
    run(main())


def test_sessions_expire_and_the_table_is_bounded():
    now = [0.0]
    s = A.Sessions(ttl=10, max_sessions=3, clock=lambda: now[0])
    ids = [s.create("viewer") for _ in range(5)]
    assert len(s) == 3 and s.role(ids[0]) is None and s.role(ids[4]) == "viewer"
    now[0] = 10.0
    assert s.role(ids[4]) is None and s.role("made-up") is None


def test_failed_tokens_are_limited_per_source(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db", failures=A.FailureLimit(rate=0.01, burst=5)) as c:
            for _ in range(5):
                assert (await request(c, "GET", "/api/devices", {
                    "Authorization": "Bearer wrong-token-000000"}))[0] == 401
            st, hdrs, _ = await request(c, "GET", "/api/devices", AS_VIEWER)
            assert st == 429 and hdrs["retry-after"]       # even the right token now
            assert await upgrade_status(live_url(c), additional_headers=AS_VIEWER) == 429
            with pytest.raises(InvalidStatus) as e:
                async with dev_connect(c.url):
                    pass
            assert e.value.response.status_code == 429     # devices' guesses count too
    run(main())


def test_failure_limit_refills_and_forgets_old_sources():
    now = [0.0]
    f = A.FailureLimit(rate=1.0, burst=3, max_sources=2, clock=lambda: now[0])
    for _ in range(3):
        assert not f.blocked("a")
        f.failed("a")
    assert f.blocked("a") and not f.blocked("b")
    now[0] = 1.0
    assert not f.blocked("a")
    f.failed("b")
    f.failed("c")
    assert len(f) == 2


def test_short_or_equal_tokens_are_refused_at_startup(tmp_path):
    store = SQLiteStore(tmp_path / "c.db")
    try:
        for kw in ({"viewer_token": "short"}, {"admin_token": "x" * 15},
                   {"viewer_token": "s" * 20, "admin_token": "s" * 20}):
            with pytest.raises(ValueError):
                Collector(store, TOKENS, **kw)
        Collector(store, TOKENS, viewer_token="v" * 16, admin_token="a" * 16)
    finally:
        store.close()


def test_host_is_checked_against_our_names(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db", allowed_hosts=["collector.lan"]) as c:
            for path in ("/", "/api/devices", "/api/session"):
                st, _, _ = await request(c, "GET", path, AS_VIEWER, host="evil.example")
                assert st == 421, path                      # DNS rebinding: was 200
            st, _, _ = await request(c, "GET", "/live", dict(
                AS_VIEWER, Upgrade="websocket", Connection="Upgrade"), host="evil.example")
            assert st == 421
            for host in ("collector.lan:8765", "COLLECTOR.LAN", "localhost:1", "10.0.0.7:80",
                         "[::1]:8765"):
                assert (await request(c, "GET", "/api/devices", AS_VIEWER, host=host))[0] == 200
            # devices name the collector however their config says
            async with dev_connect(c.url) as ws:
                await do_hello(ws)
    run(main())


def test_methods_other_than_get_are_405_with_allow(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            for method, path, allow in (("POST", "/api/devices", ["GET"]),
                                        ("PUT", "/", ["GET"]), ("DELETE", "/healthz", ["GET"]),
                                        ("PATCH", "/api/session", ["GET, POST, DELETE"])):
                st, hdrs, _ = await request(c, method, path, AS_VIEWER)
                assert (st, hdrs.get("allow")) == (405, allow), (method, path)
            assert (await request(c, "OPTIONS", "/nope"))[0] == 404
    run(main())


def test_the_page_may_connect_only_to_its_own_origin(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            _, hdrs, _ = await request(c, "GET", "/")
            csp = hdrs["content-security-policy"][0]
            directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
            assert directives["connect-src"] == "'self'"      # was 'self' ws: wss:
            assert directives["default-src"] == "'self'"
    run(main())


def test_healthz_tells_the_truth_about_the_store(tmp_path):
    async def main():
        async with Server(tmp_path / "c.db") as c:
            c.health_probe_every = 0      # a fresh write per request, for the test
            assert (await request(c, "GET", "/healthz"))[:1] == (200,)
            # a read-only database: every write fails as it would for a hello
            c.store._db.execute("PRAGMA query_only=ON")
            st, _, body = await request(c, "GET", "/healthz")
            assert st == 503 and b"readonly" in body, body    # said ok before
            async with dev_connect(c.url) as ws:
                await ws.send(json.dumps(hello("dev-1")))
                # a failing store pauses acks (committer.py): no welcome, and no 1011 close
                await until(lambda: c.committer.failing is not None, 10, "the store failing")
                c.store._db.execute("PRAGMA query_only=OFF")
                assert (await recv(ws))["t"] == "welcome"    # the group was retried
                assert (await recv(ws))["t"] == "desired"
                assert await do_batch(ws, [1]) == 1
            assert (await request(c, "GET", "/healthz"))[0] == 200
    run(main())


def test_no_token_reaches_the_log_even_at_debug(tmp_path, caplog):
    device_token = "device-secret-token-1"
    guessed = "guessed-secret-token-2"
    caplog.set_level(logging.DEBUG)

    async def main():
        async with Server(tmp_path / "c.db", devices={"dev-1": device_token}) as c:
            async with dev_connect(c.url, token=device_token) as ws:
                await do_hello(ws)
                assert await do_batch(ws, [1]) == 1
            for tok in (guessed, VIEWER, ADMIN):
                st, hdrs, _ = await request(c, "POST", "/api/session",
                                            {"Authorization": "Bearer " + tok})
            sid = hdrs["set-cookie"][0].split(";")[0].split("=", 1)[1]
            jar = {"Cookie": "%s=%s" % (A.COOKIE, sid)}
            async with connect(live_url(c), additional_headers=jar) as ws:
                await recv(ws)
            async with connect(c.url[:-3] + "/admin", additional_headers=AS_ADMIN) as ws:
                await ws.send(json.dumps({"op": "connected"}))
                await recv(ws)
            for tok in (guessed, device_token + "x"):
                assert await upgrade_status(live_url(c), additional_headers={
                    "Authorization": "Bearer " + tok}) == 401
                with pytest.raises(InvalidStatus):
                    async with dev_connect(c.url, token=tok):
                        pass
            return sid
    sid = run(main())
    # the server's records (the test's own client logs its headers too)
    text = "\n".join(r.getMessage() for r in caplog.records
                     if not r.name.startswith("websockets.client"))
    assert "Authorization" in text or "authorization" in text.lower()   # debug logging was on
    for secret in (device_token, guessed, VIEWER, ADMIN, sid):
        assert secret not in text, secret


def test_the_session_cookie_is_secure_over_tls(tmp_path):
    import ssl
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def main():
        async with Server(tmp_path / "c.db", ssl_context=server_ctx) as c:
            def go():
                conn = http.client.HTTPSConnection("127.0.0.1", c.port, timeout=T,
                                                   context=client_ctx)
                try:
                    conn.request("POST", "/api/session", headers=AS_VIEWER)
                    r = conn.getresponse()
                    return r.status, r.getheader("Set-Cookie")
                finally:
                    conn.close()
            st, cookie = await asyncio.get_running_loop().run_in_executor(None, go)
            assert st == 200 and "Secure" in [a.strip() for a in cookie.split(";")]
    run(main())
