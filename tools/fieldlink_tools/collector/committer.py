"""Group commit: every device's store writes go through one queue and one store thread; while
a commit is in flight new ops queue, and when it finishes everything queued (up to
`max_group` ops) becomes the next group, one transaction (`Store.apply`), one fsync. Each
submitter gets its own results after that commit, so its ack still follows durability.

Back-pressure: at most `max_queue` ops wait; a submitter beyond that awaits room (its device's
read loop stops reading, TCP pushes back on the device) instead of being closed.

A failing store (StoreError from the group: I/O error, disk full, database locked): the
group is retried with exponential backoff (`retry_base` doubling up to `retry_cap`) until it
commits; nothing of it is answered meanwhile, so no ack goes out, devices keep their data and
stay connected (their windows fill and they wait), and `failing` holds the error
(`/healthz` answers 503 with it). Only `close()` ends the waiting: what is still queued then
gets StoreError and is not acked.
"""
import asyncio
import collections
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from .store import StoreError

log = logging.getLogger("fieldlink.collector.store")

DEFAULT_MAX_GROUP = 2000
DEFAULT_MAX_QUEUE = 20000


class _Entry:
    __slots__ = ("ops", "fut", "queued")

    def __init__(self, ops, fut, queued):
        self.ops = ops
        self.fut = fut
        self.queued = queued


class GroupCommitter:
    def __init__(self, store, max_group=DEFAULT_MAX_GROUP, max_queue=DEFAULT_MAX_QUEUE,
                 metrics=None, retry_base=0.05, retry_cap=2.0):
        self.store = store
        self.max_group = max_group
        self.max_queue = max_queue
        self.metrics = metrics
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.failing = None           # the last StoreError while commits fail, else None
        self.groups = 0               # groups committed
        self._exec = ThreadPoolExecutor(1, thread_name_prefix="fieldlink-store")
        self._queue = collections.deque()
        self._queued_ops = 0          # ops in _queue plus the group in flight
        self._room = None             # asyncio.Condition: ops left the queue
        self._wake = None             # asyncio.Event: something was queued
        self._task = None
        self._closing = False
        if metrics is not None:   # read at scrape time: no cost per op
            metrics.store_queue.set_function(lambda: self._queued_ops)

    # -- life ------------------------------------------------------------------------------

    def start(self):
        self._room = asyncio.Condition()
        self._wake = asyncio.Event()
        self._task = asyncio.ensure_future(self._run())
        return self

    async def close(self):
        """Commit what is queued while the store works; fail what remains (StoreError) when it
        does not; then stop the store thread. Submitting afterwards raises StoreError."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        self._exec.shutdown(wait=True)

    # -- use -------------------------------------------------------------------------------

    async def submit(self, ops):
        """Queue `ops` (a list of (method, args)): they go into one group, in order. Returns
        their results after the group's commit (a data failure of one op is its result, a
        StoreDataError). Awaits room when the queue is full."""
        if self._closing:
            raise StoreError("the collector is stopping")
        n = len(ops)
        if self._queued_ops + n > self.max_queue and self._queued_ops:
            async with self._room:
                await self._room.wait_for(
                    lambda: self._closing or not self._queued_ops
                    or self._queued_ops + n <= self.max_queue)
            if self._closing:
                raise StoreError("the collector is stopping")
        fut = asyncio.get_running_loop().create_future()
        self._queue.append(_Entry(ops, fut, time.perf_counter()))
        self._queued_ops += n
        self._wake.set()
        return await fut

    async def one(self, name, *args):
        """One op; its result, or its StoreDataError raised."""
        out = (await self.submit([(name, args)]))[0]
        if isinstance(out, BaseException):
            raise out
        return out

    async def read(self, fn, *args):
        """A read on the store thread (between groups: the store is used by one thread)."""
        return await asyncio.get_running_loop().run_in_executor(self._exec, fn, *args)

    def queued(self):
        return self._queued_ops

    # -- the loop --------------------------------------------------------------------------

    def _take_group(self):
        group, n = [], 0
        while self._queue:
            e = self._queue[0]
            if group and n + len(e.ops) > self.max_group:
                break
            self._queue.popleft()
            group.append(e)
            n += len(e.ops)
        return group

    async def _release(self, group):
        self._queued_ops -= sum(len(e.ops) for e in group)
        async with self._room:
            self._room.notify_all()

    async def _run(self):
        loop = asyncio.get_running_loop()
        delay = self.retry_base
        m = self.metrics
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            group = self._take_group()
            ops = [op for e in group for op in e.ops]
            t0 = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._exec, self.store.apply, ops)
            except StoreError as e:
                if m is not None:
                    m.store_errors.inc()
                    m.store_failing.set(1)
                if self.failing is None:
                    log.error("store commit failed (%d ops; retrying, acks paused): %s",
                              len(ops), e)
                self.failing = e
                if self._closing:
                    for x in group + list(self._queue):
                        if not x.fut.done():
                            x.fut.set_exception(StoreError("store failing at shutdown: %s"
                                                           % e))
                    self._queue.clear()
                    await self._release(group)
                    self._queued_ops = 0
                    return
                # Back in front, in order: the group is retried as it was (the transaction
                # rolled back whole), together with what queued meanwhile.
                self._queue.extendleft(reversed(group))
                await asyncio.sleep(delay)
                delay = min(self.retry_cap, delay * 2)
                continue
            except BaseException as e:
                # Not the store's failure (a bug in an op's arguments): those submitters get
                # it; the committer goes on.
                for x in group:
                    if not x.fut.done():
                        x.fut.set_exception(e)
                await self._release(group)
                if isinstance(e, asyncio.CancelledError):
                    raise
                log.exception("store group failed")
                continue
            t1 = time.perf_counter()
            if self.failing is not None:
                log.warning("store commits again after: %s", self.failing)
                self.failing = None
                if m is not None:
                    m.store_failing.set(0)
            delay = self.retry_base
            self.groups += 1
            i = 0
            for x in group:
                k = len(x.ops)
                if m is not None:
                    m.store_wait.observe(t0 - x.queued)
                if not x.fut.done():
                    x.fut.set_result(results[i:i + k])
                i += k
            if m is not None:
                m.store_commit.observe(t1 - t0)
                m.store_group.observe(len(ops))
            await self._release(group)
