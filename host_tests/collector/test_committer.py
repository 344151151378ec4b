"""GroupCommitter: the ops queued while a commit is in flight become the next group, one
transaction; each submitter gets its own result after the commit; a bad op fails alone; a
failing store is retried and answers nothing meanwhile; the queue is bounded."""
import asyncio
import threading

import pytest

from collector_fixtures import readings
from fieldlink_tools.collector.committer import GroupCommitter
from fieldlink_tools.collector.metrics import CollectorMetrics
from fieldlink_tools.collector.store import SQLiteStore, StoreDataError, StoreError

T = 10


def run(coro, timeout=60):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


class GatedStore(SQLiteStore):
    """Records each group; a group waits for `gate` while `hold` is set; the first `failures`
    groups raise StoreError."""

    def __init__(self, path, failures=0):
        super().__init__(path)
        self.groups = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.hold = False
        self.failures = failures

    def apply(self, ops):
        self.groups.append([name for name, _ in ops])
        self.entered.set()
        if self.hold:
            assert self.gate.wait(T)
        if self.failures:
            self.failures -= 1
            raise StoreError("disk I/O error (injected)")
        return super().apply(ops)


async def until(cond, what):
    for _ in range(int(T / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out waiting for " + what)


def one(c, name, args):
    return c.one(name, *args)


def batch(dev, seqs):
    return ("add_readings", (dev, readings(seqs), None, "", ()))


def test_ops_queued_during_a_commit_are_the_next_group(tmp_path):
    async def main():
        store = GatedStore(tmp_path / "s.db")
        m = CollectorMetrics()
        c = GroupCommitter(store, metrics=m).start()
        store.hold = True
        first = asyncio.ensure_future(c.submit([batch("d0", [1])]))
        await until(store.entered.is_set, "the first group in flight")
        rest = [asyncio.ensure_future(c.submit([batch("d%d" % i, [1, 2])]))
                for i in range(1, 6)]
        hello = asyncio.ensure_future(c.submit([("record_hello", ("d9", {"fw": "x"})),
                                                ("enter_epoch", ("d9", "e", 1))]))
        await until(lambda: c.queued() == 1 + 5 + 2, "everything queued")
        assert "fieldlink_store_queue_ops 8.0" in m.render().decode()
        assert not any(f.done() for f in rest)       # nothing answered before its commit
        store.hold = False
        store.gate.set()
        assert (await first)[0][0] == 1
        for i, f in enumerate(rest, 1):
            (ack, new), = await f
            assert ack == 2 and [r["q"] for r in new] == [1, 2]
        none, ep = await hello
        assert none is None and ep["epoch"] == "e"
        # 5 devices' batches and a hello in ONE transaction
        assert store.groups == [["add_readings"], ["add_readings"] * 5 + ["record_hello",
                                                                         "enter_epoch"]]
        await c.close()
        text = m.render().decode()
        assert "fieldlink_store_group_ops_count 2.0" in text
        assert "fieldlink_store_group_ops_sum 8.0" in text
        store.close()
    run(main())


def test_a_bad_op_fails_alone_in_its_group(tmp_path):
    async def main():
        store = GatedStore(tmp_path / "s.db")
        c = GroupCommitter(store).start()
        store.hold = True
        first = asyncio.ensure_future(c.submit([batch("x", [1])]))
        await until(store.entered.is_set, "the first group in flight")
        bad = readings([1])
        bad[0]["v"] = 2 ** 70
        ok1 = asyncio.ensure_future(one(c, *batch("a", [1])))
        broken = asyncio.ensure_future(c.one("add_readings", "b", bad, None, "", ()))
        ok2 = asyncio.ensure_future(one(c, *batch("c", [1])))
        await until(lambda: c.queued() == 4, "all queued")
        store.gate.set()
        await first
        assert (await ok1)[0] == 1 and (await ok2)[0] == 1
        with pytest.raises(StoreDataError):
            await broken
        assert len(store.groups) == 2 and len(store.groups[1]) == 3   # one group
        assert store.ack("a") == store.ack("c") == 1 and store.ack("b") == 0
        await c.close()
        store.close()
    run(main())


def test_a_failing_store_is_retried_and_answers_nothing_until_it_commits(tmp_path):
    async def main():
        store = GatedStore(tmp_path / "s.db", failures=3)
        m = CollectorMetrics()
        c = GroupCommitter(store, metrics=m, retry_base=0.01, retry_cap=0.05).start()
        futs = [asyncio.ensure_future(one(c, *batch("d%d" % i, [1, 2, 3]))) for i in range(4)]
        await until(lambda: len(store.groups) >= 2, "a retry")
        assert c.failing is not None and not any(f.done() for f in futs)
        assert store.readings("d0") == []
        results = await asyncio.gather(*futs)
        assert [r[0] for r in results] == [3, 3, 3, 3]
        assert c.failing is None and len(store.groups) >= 4
        assert "fieldlink_store_errors_total 3.0" in m.render().decode()
        await c.close()
        store.close()
    run(main())


def test_close_while_failing_fails_the_waiting_ops(tmp_path):
    async def main():
        store = GatedStore(tmp_path / "s.db", failures=10 ** 6)
        c = GroupCommitter(store, retry_base=0.01, retry_cap=0.02).start()
        fut = asyncio.ensure_future(one(c, *batch("d", [1])))
        await until(lambda: c.failing is not None, "a failure")
        await asyncio.wait_for(c.close(), T)
        with pytest.raises(StoreError):
            await fut
        with pytest.raises(StoreError):
            await one(c, *batch("d", [2]))
        assert store.readings("d") == []
        store.close()
    run(main())


def test_the_queue_is_bounded_and_submitters_wait_for_room(tmp_path):
    async def main():
        store = GatedStore(tmp_path / "s.db")
        c = GroupCommitter(store, max_queue=3, max_group=2).start()
        store.hold = True
        futs = [asyncio.ensure_future(one(c, *batch("d%d" % i, [1]))) for i in range(8)]
        await until(store.entered.is_set, "a group in flight")
        for _ in range(20):
            await asyncio.sleep(0)
        assert c.queued() == 3                       # the rest wait outside the queue
        peak = [0]

        def watch():
            peak[0] = max(peak[0], c.queued())
            return all(f.done() for f in futs)
        store.hold = False
        store.gate.set()
        await until(watch, "all committed")
        assert peak[0] <= 3
        assert all(len(g) <= 2 for g in store.groups)
        assert [f.result()[0] for f in futs] == [1] * 8
        await c.close()
        store.close()
    run(main())
