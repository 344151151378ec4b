"""Battery mode on the virtual board: 200 duty cycles (deep sleep time-compressed) of the real
firmware against a real collector that is down for some of them. Every wake samples; every 4th
connects, sends everything held, waits for the ack, says `sleep` and closes 1000; with the
collector down it gives up within awake_max_s and sleeps again, the readings kept on flash.
At the end the store holds every seq the board produced exactly once and no gap (a deep-sleep
wake is no power cut: no `reboot` gap), every wake stayed within its cap, the collector showed
the board sleeping, and a command queued while it slept ran at its next wake.

FIELDLINK_DUTY_CYCLES=N runs N cycles instead (the long variant)."""
import json
import os
import re
import urllib.request

from integration.conftest import FAST, SIM_ONLY
from integration.test_stream import wait
from fieldlink_tools import sim

DEV, TOK = "dev-1", "tok-1-long-enough-token"
CYCLES = int(os.environ.get("FIELDLINK_DUTY_CYCLES") or 200)
EVERY = 4
AWAKE_MAX_S = 2
_AWAKE = re.compile(r"INFO duty: awake (\d+) ms \((\w+(?: \w+)?)\), held (\d+), next seq (\d+)")


def state(c):
    req = urllib.request.Request(c.http_url + "api/devices",
                                 headers={"Authorization": "Bearer " + c.viewer_token})
    with urllib.request.urlopen(req, timeout=10) as r:
        for d in json.loads(r.read())["devices"]:
            if d["device"] == DEV:
                return d
    return {}


def test_duty_cycles_with_the_collector_down_lose_nothing(collector_proc, tmp_path,
                                                          micropython):
    c = collector_proc({DEV: TOK})
    sets = dict(FAST, duty_cycle_s=1, connect_every=EVERY, awake_max_s=AWAKE_MAX_S,
                connect_timeout_s=1)
    cfg = sim.make_config("ws://127.0.0.1:%d/ws" % c.port, DEV, TOK, sets)
    # wake 1 (power on) connects, then every 4th: the last of 4k+1 wakes connects
    wakes = CYCLES // EVERY * EVERY + 1
    b = sim.SimBoard(tmp_path / "flash", cfg, board_data=SIM_ONLY, log_path=tmp_path / "b.log",
                     sleep_scale=0.02, sleeps=wakes)
    down = [(wakes * 3 // 10, wakes // 2), (wakes * 7 // 10, wakes * 8 // 10)]
    b.start()
    try:
        # between two wakes the collector shows it asleep, not offline, and keeps a command
        # for it (the collector's memory: before the outages) until its next connection
        wait(lambda: len(b.awake) >= 2, 60, "the first wakes")
        wait(lambda: state(c).get("state") == "sleeping", 30,
             "the collector showing the board sleeping")
        assert state(c)["sleeping_until"] > 0
        out = c._admin({"op": "cmd", "dev": DEV, "cmd": "health", "args": {}}, 10, 10)
        assert out["ok"] and "queued" in out, out
        wait(lambda: b.lines("INFO link: command health ok"), 60, "the queued command run")
        assert "delivering queued command %s" % out["queued"]["id"] in c.log()
        for a, z in down:
            wait(lambda: len(b.awake) >= a, 120, "wake %d" % a)
            c.stop()
            wait(lambda: len(b.awake) >= z, 120, "wake %d" % z)
            c.start()
        assert b.wait() == sim.EXIT_DEEPSLEEP
    finally:
        b.stop()
    log = b.text()
    wakes_seen = _AWAKE.findall(log)
    assert len(wakes_seen) == wakes, log[-3000:]
    kinds = [k for _, k, _, _ in wakes_seen]
    assert kinds.count("not acked") >= 2, "the collector outages did not hit a connecting wake"
    assert kinds[-1] == "acked"
    for ms, kind, held, _ in wakes_seen:
        assert int(ms) <= AWAKE_MAX_S * 1000, (ms, kind)   # the cap held, outage or not
    produced = int(wakes_seen[-1][3]) - 1
    st = c.store()
    try:
        rs = st.readings(DEV)
        seqs = [r["q"] for r in rs]
        gaps = st.gaps(DEV)
    finally:
        st.close()
    assert sorted(seqs) == list(range(1, produced + 1))   # each once, none missing
    assert gaps == [] and "reboot" not in log
    # time stamps: only the power-on wake's readings (before any welcome) have none; the
    # clock goes on through every sleep after that (RTC memory), outages included
    first_wake = int(wakes_seen[0][3])
    assert {r["q"] for r in rs if r["ts"] is None} == set(range(1, first_wake))
    assert len(b.lines("INFO link: command health ok")) == 1   # once, not at every wake
