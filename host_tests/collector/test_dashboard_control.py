"""The dashboard's device detail in headless Chromium: an output switched from the page
reaches a protocol device, whose report shows on the page; with the viewer role the switch is
refused and nothing changes; a history chart shows readings stored before the page loaded and
ones arriving after."""
import asyncio
import json
import time

from websockets.asyncio.client import connect

from collector.test_dashboard import Page, chromium_path, wait_for
from fieldlink_tools.collector import Collector, SQLiteStore

VIEWER = "viewer-token-for-the-page"
ADMIN = "admin-token-for-the-page"


async def login(dt, token, out, dev="dev-1"):
    """Log in on the page with `token`, open `dev`'s detail, wait for its output `out`."""
    await wait_for(lambda: dt.js("!document.getElementById('login').hidden"), "the login form")
    await dt.js("document.getElementById('token').value = %s;"
                "document.querySelector('#login button').click()" % json.dumps(token))
    row = "document.querySelector('#devices tr[data-dev=%s]" % json.dumps(dev)
    await wait_for(lambda: dt.js("document.getElementById('status').dataset.state === 'live'"
                                 " && " + row + "') !== null"), "the device table")
    await dt.js(row + " td').click()")
    # the outputs as loaded now (a row from before the click is replaced once they are)
    await wait_for(lambda: dt.js("detail.outputs !== null && document.querySelector("
                                 "'#outputs tr[data-out=%s]') !== null" % json.dumps(out)),
                   "the output " + out)


class ProtocolDevice:
    """dev-1 over the real protocol: applies each desired record (ver newer than the last it
    applied) and reports it; `desired` holds every desired message it got."""

    def __init__(self, url):
        self.url = url
        self.desired = []
        self.applied = {"relay": (0, 0)}       # output -> (v, ver)
        self.ws = None

    async def run(self, first_seq):
        async with connect(self.url, subprotocols=["fieldlink.v1"], additional_headers={
                "Authorization": "Bearer tok-1", "X-Fieldlink-Device": "dev-1"}) as ws:
            self.ws = ws
            await ws.send(json.dumps({"t": "hello", "v": 1, "dev": "dev-1", "fw": "t",
                                      "board": "b", "boot": 1, "next": first_seq,
                                      "first": first_seq, "held": 0, "dropped": 0,
                                      "synced": True}))
            async for raw in ws:
                m = json.loads(raw)
                if m["t"] == "welcome":
                    await self.report("boot")
                elif m["t"] == "desired":
                    self.desired.append(m)
                    for name, rec in m["out"].items():
                        if rec["ver"] > self.applied.get(name, (0, 0))[1]:
                            self.applied[name] = (rec["v"], rec["ver"])
                    await self.report("command")

    async def report(self, why):
        await self.ws.send(json.dumps({"t": "reported", "out": {
            n: {"v": v, "ver": ver, "why": why} for n, (v, ver) in self.applied.items()}}))

    async def batch(self, seq, v):
        await self.ws.send(json.dumps({"t": "batch", "r": [
            {"q": seq, "ts": time.time(), "up": seq, "n": "env.temperature", "v": v,
             "u": "C"}]}))


def test_switch_an_output_from_the_page_and_see_history(tmp_path):
    chromium_path()
    profile = tmp_path / "chromium-profile"
    profile.mkdir()

    async def main():
        store = SQLiteStore(tmp_path / "c.db")
        c = Collector(store, {"dev-1": "tok-1"}, port=0, viewer_token=VIEWER,
                      admin_token=ADMIN)
        await c.start()
        now = time.time()
        # stored before the page opens: the chart must show them
        store.add_readings("dev-1", [{"q": i, "ts": now - 600 + i * 60, "up": i,
                                      "n": "env.temperature", "v": 20.0 + i, "u": "C"}
                                     for i in range(1, 6)])
        dev = ProtocolDevice(c.url)
        task = asyncio.ensure_future(dev.run(6))
        try:
            await wait_for(lambda: _true(store.reported("dev-1")), "the device's boot report")
            async with Page(c.http_url, profile) as page:
                dt = page.dt

                # a viewer: the switch is refused and nothing changes
                await login(dt, VIEWER, "relay")
                await dt.js("document.querySelector('#outputs tr[data-out=\"relay\"]"
                            " input.switch').click()")
                msg = await wait_for(lambda: dt.js(
                    "document.getElementById('control-msg').textContent"), "the refusal")
                assert "refused" in msg and "admin" in msg
                assert store.desired("dev-1") == {} and dev.desired[1:] == []
                assert await dt.js("document.querySelector('#outputs tr[data-out=\"relay\"]"
                                   " input.switch').checked") is False

                # the chart: the 5 readings stored before the page loaded...
                chart = "document.querySelector('figure.chart[data-name=\"env.temperature\"]')"
                assert await wait_for(lambda: dt.js(chart + " && " + chart + ".dataset.n"),
                                      "the history chart") == "5"
                assert await dt.js("document.querySelectorAll('#health figure.chart').length"
                                   ) == 3
                # ...and one arriving after, without a reload
                await dev.batch(6, 30.0)
                await wait_for(lambda: dt.js(chart + ".dataset.n === '6'"),
                               "the live reading on the chart")

                await dt.js("document.getElementById('logout').click()")
                await login(dt, ADMIN, "relay")
                await dt.js("document.querySelector('#outputs tr[data-out=\"relay\"]"
                            " input.switch').click()")
                await wait_for(lambda: _true(dev.applied["relay"] == (1, 1)),
                               "the device to get desired ver 1")
                assert dev.desired[-1]["full"] is False
                reported = ("document.querySelector('#outputs tr[data-out=\"relay\"]"
                            " td.reported').textContent")
                got = await wait_for(lambda: dt.js(
                    "(" + reported + ").startsWith('1 (ver 1, command') && "
                    "document.querySelector('#outputs tr[data-out=\"relay\"] td.state')"
                    ".textContent === 'confirmed' && " + reported), "the report on the page")
                assert got.startswith("1 (ver 1, command")
                assert store.reported("dev-1")["relay"]["ver"] == 1
                assert store.audit("dev-1")[0]["who"].startswith("admin")
        finally:
            task.cancel()
            await c.stop()
            store.close()

    asyncio.run(asyncio.wait_for(main(), 150))


async def _true(x):
    return x
