"""fieldlink fleet: lightweight devices that speak protocol v1 like the firmware."""
import asyncio
import os
import stat
import subprocess
import sys

from fieldlink_tools.fleet import FleetDevice, Stats, load_tokens


def test_a_full_outbox_drops_the_oldest_as_one_gap():
    async def main():
        d = FleetDevice("ws://unused", "d", "t", Stats(), outbox=3)
        for _ in range(6):
            d.sample()
        assert [q for q, _, _ in d.held] == [4, 5, 6]
        assert d.gaps == [[1, 3]] and d.stats.dropped == 3
        hello = d._hello()
        assert (hello["next"], hello["first"], hello["held"], hello["dropped"]) == (7, 4, 3, 3)
        d._on_ack(5)                                   # an ack drops what it covers
        assert [q for q, _, _ in d.held] == [6] and d.gaps == [] and d.stats.acked == 2
    asyncio.run(main())


def test_tokens_file_is_made_private_and_reused(tmp_path):
    p = tmp_path / "fleet.json"
    a = load_tokens(p, 5)
    assert len(a) == 5 and stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert load_tokens(p, 3) == dict(sorted(a.items())[:3])


def test_fleet_command_streams_to_a_collector_process(tmp_path, collector_proc):
    tokens = load_tokens(tmp_path / "fleet.json", 20)
    c = collector_proc(tokens)
    r = subprocess.run([sys.executable, "-m", "fieldlink_tools.cli", "fleet", "--url", c.url,
                        "--devices", "20", "--tokens", str(tmp_path / "fleet.json"),
                        "--rate", "5", "--duration", "3"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    last = dict(kv.split("=") for kv in r.stdout.strip().splitlines()[-1].split())
    assert last["devices"] == "20" and float(last["acked_per_s"]) > 0, r.stdout
    st = c.store()
    try:
        devs = st.devices()
        assert len(devs) == 20 and all(d["readings"] > 0 for d in devs)
        assert all(d["ack"] == d["readings"] for d in devs)      # contiguous, no holes
    finally:
        st.close()
