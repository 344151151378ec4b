"""Overload: devices offer more readings than the store can take (a store that spends 1 ms
per reading and fails every 5th commit). Acks slow down and windows fill (back-pressure),
full outboxes drop and declare it, nothing is closed with 1011, nothing acked is missing."""
import re
import time

from collector_inproc import InProc, audit, run, until
from fieldlink_tools.collector.store import SQLiteStore, StoreError
from fieldlink_tools.fleet import Fleet, make_tokens

N = 60
RATE = 20.0      # readings/s per device: 1,200/s offered, the store takes < 1,000/s


class SlowFlakyStore(SQLiteStore):
    def __init__(self, path):
        super().__init__(path)
        self.calls = 0

    def apply(self, ops):
        self.calls += 1
        if self.calls % 5 == 0:
            time.sleep(0.01)
            raise StoreError("database is locked (injected)")
        time.sleep(0.001 * sum(len(a[1]) for n, a in ops if n == "add_readings"))
        return super().apply(ops)


def test_overload_slows_acks_and_closes_nobody(tmp_path):
    tokens = make_tokens(N, "over")

    async def main():
        store = SlowFlakyStore(tmp_path / "c.db")
        async with InProc(tmp_path / "c.db", tokens, store=store, admin_token="adm-1-secret-of-24-chars") as c:
            fleet = Fleet(c.url, tokens, seed=3, rate=RATE, batch=20, window=64, outbox=100,
                          backoff_cap=2).start()
            s = fleet.stats
            try:
                await until(lambda: s.full_window > N and s.dropped > 0 and s.acked > 1500
                            and c.collector.committer.groups > 20, 150,
                            "windows full, outboxes dropping, acks flowing")
                body = (await c.get("/metrics", "adm-1-secret-of-24-chars"))[1]
            finally:
                await fleet.stop()
            assert not s.closes.get(1011) and not s.refused, (s.closes, s.refused)
            assert 'code="1011"' not in body
            assert float(re.search(r"^fieldlink_store_errors_total (\S+)$", body,
                                   re.M).group(1)) >= 3
            assert audit(store, fleet) > 0
    run(main(), timeout=240)
