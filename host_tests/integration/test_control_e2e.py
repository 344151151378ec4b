"""Control end to end with the real parts (issue 14): the real collector (in process, SQLite)
and a virtual board running the real firmware, between them the fault proxy to take the link
away. The board's pins are what the firmware set (vboard_pins.json in its flash). Every wait
has a deadline."""
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_control import HEAT_RULE, holds_the_band, pins  # noqa: E402

from collector.test_dashboard import Page, chromium_path, wait_for  # noqa: E402
from collector.test_dashboard_control import login  # noqa: E402
from fieldlink_tools.collector import Collector, SQLiteStore  # noqa: E402

VIEWER = "viewer-token-for-the-e2e-page"
ADMIN = "admin-token-for-the-e2e-page"
FAN = {"name": "fan", "type": "digital", "pin": 26, "safe": 0}
BOARD = {"name": "virtual", "chip": "unix", "buses": {}, "outputs": [FAN],
         "sensors": [{"name": "sim", "driver": "simulated", "seed": 7}]}
OUTS = "document.querySelector('#outputs tr[data-out=\"fan\"]"


async def pin_at(b, pin, what, timeout=30, **want):
    def ok():
        p = pins(b).get(str(pin))
        return p is not None and all(p.get(k) == v for k, v in want.items())

    async def check():
        return ok()
    try:
        return await wait_for(check, what, timeout=timeout, interval=0.05)
    except AssertionError as e:
        raise AssertionError("%s (pins %r)\n%s" % (e, pins(b), "\n".join(b.lines()[-30:])))


async def until(fn, what, timeout=30):
    async def check():
        return fn()
    return await wait_for(check, what, timeout=timeout, interval=0.05)


def http(c, method, path, token=None, body=None):
    """(status, JSON or text) of a request to the collector; blocking, run off the loop."""
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = "Bearer " + token
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(c.http_url.rstrip("/") + path, data=data, method=method,
                                 headers=h)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


async def ahttp(*a, **kw):
    return await asyncio.get_running_loop().run_in_executor(None, lambda: http(*a, **kw))


def ctl(c, *args):
    """`fieldlink ctl` as a user runs it: the token from the environment, not argv."""
    env = dict(os.environ, FIELDLINK_ADMIN_TOKEN=ADMIN)
    return subprocess.run([sys.executable, "-m", "fieldlink_tools.cli", "ctl", *args,
                           "--server", c.http_url], env=env, capture_output=True, text=True,
                          timeout=30)


def new_collector(tmp_path, store, port=0):
    return Collector(store, {"dev-1": "tok-1"}, port=port, viewer_token=VIEWER,
                     admin_token=ADMIN)


def test_the_page_switches_the_real_boards_pin(tmp_path, sim_board, fault_proxy):
    chromium_path()
    profile = tmp_path / "chromium-profile"
    profile.mkdir()

    async def main():
        store = SQLiteStore(tmp_path / "c.db")
        c = new_collector(tmp_path, store)
        await c.start()
        fp = fault_proxy(c.port)
        b = sim_board("ws://127.0.0.1:%d/ws" % fp.port, board_data=BOARD, failsafe_s=60)
        try:
            # the firmware's whole state after the welcome reaches the store
            await until(lambda: store.reported("dev-1").get("fan", {}).get("why") == "boot",
                        "the board's boot report")
            assert pins(b)["26"] == {"v": 0}
            async with Page(c.http_url, profile) as page:
                dt = page.dt

                # without the admin token: refused, the pin stays
                await login(dt, VIEWER, "fan")
                await dt.js(OUTS + " input.switch').click()")
                msg = await wait_for(lambda: dt.js(
                    "document.getElementById('control-msg').textContent"), "the refusal")
                assert "refused" in msg
                status, _ = await ahttp(c, "PUT", "/api/devices/dev-1/outputs/fan", VIEWER,
                                        {"v": 1})
                assert status == 403
                status, _ = await ahttp(c, "PUT", "/api/devices/dev-1/outputs/fan", None,
                                        {"v": 1})
                assert status == 401
                assert store.desired("dev-1") == {}
                # nothing stored, so nothing reached the board
                assert pins(b)["26"] == {"v": 0}

                await dt.js("document.getElementById('logout').click()")
                await login(dt, ADMIN, "fan")
                await dt.js(OUTS + " input.switch').click()")
                await pin_at(b, 26, "the fan pin high", v=1)
                got = await wait_for(lambda: dt.js(
                    "(" + OUTS + " td.reported').textContent).startsWith('1 (ver 1, command')"
                    " && " + OUTS + " td.state').textContent === 'confirmed' && "
                    + OUTS + " td.reported').textContent"), "the board's report on the page")
                assert got.startswith("1 (ver 1, command")
                assert store.reported("dev-1")["fan"]["ver"] == 1

                # the link down: a change by `fieldlink ctl` waits for the board's return
                fp.retarget(9)     # nothing listens on the discard port
                fp.reset()
                await until(lambda: "dev-1" not in c._live, "the collector to lose the board")
                r = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: ctl(c, "dev-1", "fan", "off"))
                assert r.returncode == 0, r.stderr
                assert ADMIN not in r.stdout + r.stderr
                assert store.desired("dev-1")["fan"]["ver"] == 2
                await until(lambda: fp.accepted >= 2, "the board trying again")
                assert pins(b)["26"] == {"v": 1}
                fp.retarget(c.port)
                await pin_at(b, 26, "the fan pin low after the reconnect", timeout=40, v=0)
                await until(lambda: store.reported("dev-1")["fan"]["ver"] == 2,
                            "ver 2 reported")
                await wait_for(lambda: dt.js(
                    "(" + OUTS + " td.reported').textContent).startsWith('0 (ver 2')"),
                    "the new report on the page")
                assert not b.lines("Traceback")
        finally:
            await c.stop()
            store.close()

    asyncio.run(asyncio.wait_for(main(), 120))


def _history(c):
    status, h = http(c, "GET", "/api/devices/dev-1/history?n=env.temperature&range=hour",
                     VIEWER)
    assert status == 200, h
    return h["buckets"]


def _history_of(store, end):
    return store.history("dev-1", "env.temperature", end - 3600, end, 240)


def _newest(store):
    last = store.latest("dev-1", 1)
    return (last[0]["ts"] or 0) if last else 0


def test_the_heater_rule_set_through_the_api_holds_the_band_with_the_collector_down(
        tmp_path, sim_board):
    board = {"name": "virtual", "chip": "unix",
             "buses": {"i2c0": {"type": "i2c", "id": 0, "scl": 22, "sda": 21}},
             "sensors": [{"name": "env", "driver": "bme280", "bus": "i2c0", "address": 118}],
             "outputs": [{"name": "heater", "type": "pwm", "pin": 27, "safe": 0.0}]}
    flash = tmp_path / "flash-loop"
    flash.mkdir()
    # the room: 20 C outside, the heater full on would take it to 32 C, 4 s time constant
    (flash / "vboard.json").write_text(json.dumps({"seed": 5, "thermal": {
        "sensor": "env", "ambient_c": 20.0, "tau_s": 4.0, "noise_c": 0.02,
        "pins": {"27": 12.0}}}))

    async def main():
        store = SQLiteStore(tmp_path / "c.db")
        c = new_collector(tmp_path, store)
        await c.start()
        port = c.port
        b = sim_board(c.url, board_data=board, flash=flash, failsafe_s=60,
                      sample_interval_s=0.1)
        try:
            await until(lambda: "heater" in store.reported("dev-1"), "the boot report")
            rule = dict(HEAT_RULE, enabled=True)
            status, rec = await ahttp(c, "PUT", "/api/devices/dev-1/outputs/heater", ADMIN,
                                      {"v": 0.0, "rule": rule})
            assert status == 200 and rec["ver"] == 1, rec
            # an output the board does not have: refused by the firmware, stored as such
            status, _ = await ahttp(c, "PUT", "/api/devices/dev-1/outputs/pump", ADMIN,
                                    {"v": 1})
            assert status == 200
            await until(lambda: store.reported("dev-1").get("pump", {}).get("why")
                        == "refused", "the refusal of pump")
            pump = store.reported("dev-1")["pump"]
            assert (pump["v"], pump["ver"], pump["err"]) == (None, 0, "unknown output"), pump
            await until(lambda: store.reported("dev-1")["heater"]["ver"] == 1,
                        "the rule applied")
            await until(lambda: _history_of(store, time.time()), "readings stored")
            await c.stop()
            stopped = time.time()
            before = sum(r[4] for r in _history_of(store, stopped))

            await asyncio.get_running_loop().run_in_executor(
                None, lambda: holds_the_band(b, timeout=60))
            assert not b.lines("output heater = 0.0 (failsafe")

            c = new_collector(tmp_path, store, port=port)
            await c.start()
            restarted = time.time()
            # the readings taken while the collector was down arrive; the chart API shows
            # those stored before the stop and those after
            await until(lambda: _newest(store) > restarted, "readings after the restart",
                        timeout=40)
            buckets = await asyncio.get_running_loop().run_in_executor(None, _history, c)
            assert sum(r[4] for r in buckets) > before > 0
            assert buckets[0][0] <= stopped - 1 and buckets[-1][0] + 15 >= restarted
            # the backlog: readings taken while it was down, received after the restart
            # (in order: the first one taken after the restart came after them)
            late = [r for r in store.readings("dev-1") if r["n"] == "env.temperature"
                    and r["ts"] is not None and stopped < r["ts"] < restarted]
            assert len(late) >= restarted - stopped, (len(late), restarted - stopped)
            assert store.gaps("dev-1") == []
            assert not b.lines("Traceback")
        finally:
            await c.stop()
            store.close()

    asyncio.run(asyncio.wait_for(main(), 150))
