"""A thundering herd: 300 lightweight devices streaming, the collector restarts, every one of
them reconnects at once (full-jitter backoff, cap 2 s): all stream again within the cap plus
a few seconds, none is refused for good, and the store's audit holds (every seq a device was
acked is stored once or in a gap)."""
import asyncio

from collector_inproc import InProc, audit, run, until
from fieldlink_tools.fleet import Fleet, make_tokens

N = 300
CAP = 2.0


def test_every_device_streams_again_after_a_restart(tmp_path):
    tokens = make_tokens(N, "herd")

    async def main():
        async with InProc(tmp_path / "c.db", tokens) as c:
            fleet = Fleet(c.url, tokens, seed=7, rate=1.0, batch=5, backoff_base=0.5,
                          backoff_cap=CAP).start()
            try:
                await until(lambda: all(d.acked_since_connect for d in fleet.devices), 60,
                            "all %d devices streaming" % N)
                connects = fleet.stats.connects
                await c.restart()                    # 1001 to all, then back on the port
                for d in fleet.devices:
                    d.acked_since_connect = 0
                # the deadline: the backoff cap plus a loaded machine's few seconds
                await until(lambda: fleet.stats.connects >= connects + N and all(
                    d.connected and d.acked_since_connect for d in fleet.devices),
                    CAP + 30, "every device streaming again")
                assert fleet.stats.closes.get(1001, 0) >= N
                assert not fleet.stats.closes.get(1011)
                assert set(fleet.stats.refused) <= {503}, fleet.stats.refused
                assert c.collector.committer.groups < fleet.stats.batches   # grouped
            finally:
                await fleet.stop()
            assert audit(c.store, fleet) > N
    run(main(), timeout=240)
