"""The dashboard in headless Chromium, driven over the DevTools protocol: it shows what was
stored before the page opened, then a reading sent afterwards appears live (no reload)."""
import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
import urllib.request

import pytest
from websockets.asyncio.client import connect

from collector_fixtures import hello, readings
from fieldlink_tools.collector import Collector, SQLiteStore

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic",
                  "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1"]
DEADLINE = 60  # s; the machine is shared, Chromium's start can be slow
VIEWER = "viewer-token-for-the-page"


def chromium_path():
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        pytest.fail("chromium is missing: `make test` installs it (tools/ensure_system_deps.py)")
    return path


async def wait_for(fn, what, timeout=DEADLINE, interval=0.1):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await fn()
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting for " + what)
        await asyncio.sleep(interval)


async def filtered_if(fn, first):
    got = await fn()
    return got if got.startswith(first) else None


class DevTools:
    """The few DevTools calls this test needs, over websockets."""

    def __init__(self, ws):
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method, **params):
        mid = next(self.ids)
        await self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            m = json.loads(await asyncio.wait_for(self.ws.recv(), DEADLINE))
            if m.get("id") == mid:
                if "error" in m:
                    raise AssertionError("%s: %s" % (method, m["error"]))
                return m["result"]

    async def js(self, expr):
        r = await self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        return r["result"].get("value")


class Page:
    """Headless Chromium on `url` (async context manager): `dt` is the page's DevTools."""

    def __init__(self, url, profile):
        self.url = url
        self.profile = profile
        self.proc = None
        self._ws = None

    async def __aenter__(self):
        self.proc = subprocess.Popen(
            [chromium_path(), *CHROMIUM_FLAGS, "--user-data-dir=%s" % self.profile, self.url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port_file = self.profile / "DevToolsActivePort"

            async def devtools_port():
                if self.proc.poll() is not None:
                    raise AssertionError("chromium exited with %s" % self.proc.returncode)
                text = port_file.read_text() if port_file.exists() else ""
                return text.split("\n")[0] if "\n" in text else None
            port = await wait_for(devtools_port, "DevToolsActivePort")

            async def page_ws():
                def get():
                    with urllib.request.urlopen("http://127.0.0.1:%s/json/list" % port,
                                                timeout=10) as r:
                        return json.load(r)
                for t in await asyncio.get_running_loop().run_in_executor(None, get):
                    if t.get("type") == "page" and t.get("url", "").startswith(self.url):
                        return t["webSocketDebuggerUrl"]
            url = await wait_for(page_ws, "the dashboard page target")
            self._ws = await connect(url, max_size=2**24)
        except BaseException:
            self._stop()
            raise
        self.dt = DevTools(self._ws)
        return self

    async def __aexit__(self, *exc):
        if self._ws is not None:
            await self._ws.close()
        self._stop()

    def _stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def test_dashboard_shows_stored_and_live_readings(tmp_path):
    chromium_path()
    profile = tmp_path / "chromium-profile"
    profile.mkdir()

    async def device_send(url, messages):
        async with connect(url, subprotocols=["fieldlink.v1"], additional_headers={
                "Authorization": "Bearer tok-1", "X-Fieldlink-Device": "dev-1"}) as ws:
            for m in messages:
                await ws.send(json.dumps(m))
                if m["t"] in ("health", "sleep"):
                    continue  # no answer to a health or sleep message
                got = json.loads(await asyncio.wait_for(ws.recv(), DEADLINE))["t"]
                assert got in ("welcome", "ack")
                if got == "welcome":   # the desired state follows it
                    assert json.loads(await asyncio.wait_for(ws.recv(), DEADLINE))[
                        "t"] == "desired"
            await ws.close()  # a clean close: the collector handled everything sent

    async def main():
        store = SQLiteStore(tmp_path / "c.db")
        c = Collector(store, {"dev-1": "tok-1"}, port=0, viewer_token=VIEWER)
        await c.start()
        try:
            # Stored before the page opens: must come from the snapshot.
            for k in range(120):   # a fleet: the table pages and filters instead of growing
                store.add_readings("fleet-%03d" % k, readings([1]), 1)
            await device_send(c.url, [hello("dev-1"), {"t": "batch", "r": readings([1, 2, 3])}])
            async with Page(c.http_url, profile) as page:
                dt = page.dt

                async def login_shown():
                    return await dt.js("!document.getElementById('login').hidden")
                await wait_for(login_shown, "the login form (no data without a token)")
                assert await dt.js("document.querySelector('#devices tbody').children.length"
                                   ) == 0
                await dt.js("document.getElementById('token').value = 'wrong-token-000000';"
                            "document.querySelector('#login button').click()")

                async def refused():
                    return await dt.js("document.getElementById('login-error').textContent")
                assert await wait_for(refused, "the wrong token refused") == "wrong token"
                await dt.js("document.getElementById('token').value = %s;"
                            "document.querySelector('#login button').click()"
                            % json.dumps(VIEWER))

                async def live():
                    return await dt.js("document.getElementById('status').dataset.state"
                                       " === 'live' && document.querySelector("
                                       "'#feed tr[data-dev=\"dev-1\"][data-seq=\"3\"]') !== null")
                await wait_for(live, "the snapshot's readings on the page")
                assert await dt.js("document.title") == "fieldlink collector"
                # the token is in no URL, no storage, no script-readable cookie, no field
                assert await dt.js("[location.href.includes('token'), localStorage.length,"
                                   " sessionStorage.length, document.cookie,"
                                   " document.getElementById('token').value]") == [
                    False, 0, 0, "", ""]
                assert await dt.js("document.querySelector('#devices tr[data-dev=\"dev-1\"]"
                                   " td.ack').textContent") == "3"

                # Sent now, while the page is open: must appear without a reload.
                await dt.js("window.__marker = 'same page';"
                            "document.querySelector('#devices tr[data-dev=\"fleet-000\"]')"
                            ".__kept = true")
                assert await dt.js("[document.querySelector('#devices tbody').children.length,"
                                   " document.getElementById('page').textContent]") == [
                    50, "page 1 of 3 (121 shown)"]
                await device_send(c.url, [hello("dev-1", next=4),
                                          {"t": "batch", "r": readings([4, 5, 6])},
                                          {"t": "gap", "from": 7, "to": 9, "why": "dropped"},
                                          {"t": "health", "heap_free": 9000, "heap_min": 4000,
                                           "reconnects": 1, "dropped": 3, "rssi": None,
                                           "uptime_s": 60, "boot": 1, "held": 0,
                                           "skipped": 2}])

                async def updated():
                    return await dt.js(
                        "(() => { const row = document.querySelector("
                        "'#devices tr[data-dev=\"dev-1\"]');"
                        " return document.querySelector('#feed tr[data-seq=\"6\"]') !== null"
                        " && row.querySelector('td.ack').textContent === '9'"
                        " && row.querySelector('td.stored').textContent === '6'; })()")
                await wait_for(updated, "readings 4-6 and ack 9 to appear live")
                assert await dt.js("window.__marker") == "same page"
                cell = await dt.js("document.querySelector('#feed tr[data-seq=\"6\"]')"
                                   ".children[4].textContent")
                assert cell == "20.06 C"
                events = await dt.js("document.getElementById('events').textContent")
                assert "gap 7..9 (dropped)" in events
                # a duty-cycled device that said `sleep` is asleep, not offline
                await device_send(c.url, [hello("dev-1", next=10, first=10),
                                          {"t": "sleep", "wake_s": 600}])

                async def sleeping():
                    return await dt.js(
                        "document.querySelector('#devices tr[data-dev=\"dev-1\"]')"
                        ".children[1].textContent.startsWith('sleeping until ')")
                await wait_for(sleeping, "dev-1 shown sleeping")
                # readings the board had no heap to keep: shown, flagged, beside its heap
                heap_js = ("(() => { const c = document.querySelector('#devices "
                           "tr[data-dev=\"dev-1\"] td.heap'); return [c.textContent,"
                           " c.classList.contains('warn')]; })()")

                async def heap_shown():
                    return (await dt.js(heap_js))[0] != "–"
                await wait_for(heap_shown, "the health message on the page")
                heap = await dt.js(heap_js)
                assert heap == ["9000 / 4000 (2 readings skipped)", True], heap
                # An event redraws its own device's row only, not the table.
                assert await dt.js("document.querySelector('#devices tr[data-dev=\"fleet-000\"]')"
                                   ".__kept === true")
                await dt.js("const s = document.getElementById('search'); s.value = 'FLEET-11';"
                            "s.dispatchEvent(new Event('input'))")

                async def filtered():
                    return await dt.js("Array.from(document.querySelectorAll('#devices tbody tr'))"
                                       ".map(tr => tr.dataset.dev).join(' ')")
                got = await wait_for(lambda: filtered_if(filtered, "fleet-110"), "the filter")
                assert got.split() == ["fleet-%03d" % k for k in range(110, 120)], got
                await dt.js("document.getElementById('next').click()")
                assert await dt.js("document.getElementById('next').disabled") is True

                # Logging out ends the session on the server, not just on the page.
                await dt.js("document.getElementById('logout').click()")
                await wait_for(login_shown, "the login form after logging out")

                got = await dt.call("Runtime.evaluate", awaitPromise=True, returnByValue=True,
                                    expression="fetch('api/devices').then(r => r.status)")
                assert got["result"]["value"] == 401
                # Nothing on the page came from elsewhere: no external requests possible.
                assert await dt.js("Array.from(document.querySelectorAll('[src],[href]'))"
                                   ".every(e => !/^(https?:)?\\/\\//.test("
                                   "e.getAttribute('src') || e.getAttribute('href')))")
        finally:
            await c.stop()
            store.close()

    asyncio.run(asyncio.wait_for(main(), 150))
