"""The collector's Prometheus metrics (served on `/metrics`, docs/collector.md "Metrics").

One `CollectorRegistry` per Collector, not the process-wide default: tests and tools run many
collectors in one process, and each must count only its own devices.
"""
import asyncio
import gc
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

# Latency buckets (s) from a fast commit on an idle disk to a stalled store.
_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            10.0, 30.0)
_GROUP = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
LOOP_LAG_INTERVAL = 0.25   # s between two event-loop lag probes

CONTENT_TYPE = CONTENT_TYPE_LATEST


class CollectorMetrics:
    def __init__(self, connected=lambda: 0):
        r = self.registry = CollectorRegistry(auto_describe=True)
        g = Gauge("fieldlink_devices_connected", "Devices with a live connection",
                  registry=r)
        g.set_function(lambda: float(connected()))
        self.readings = Counter("fieldlink_readings", "Readings newly stored", registry=r)
        self.batches = Counter("fieldlink_batches", "Batches stored and acked", registry=r)
        self.ack_latency = Histogram(
            "fieldlink_ack_latency_seconds",
            "From a batch read off the socket to its ack sent (after the durable commit)",
            buckets=_LATENCY, registry=r)
        self.store_wait = Histogram(
            "fieldlink_store_queue_wait_seconds",
            "Time a store op waited in the group committer's queue", buckets=_LATENCY,
            registry=r)
        self.store_commit = Histogram(
            "fieldlink_store_commit_seconds", "Time one group's transaction took (incl. fsync)",
            buckets=_LATENCY, registry=r)
        self.store_group = Histogram("fieldlink_store_group_ops", "Ops per committed group",
                                     buckets=_GROUP, registry=r)
        self.store_errors = Counter("fieldlink_store_errors",
                                    "Group commits that failed (retried with backoff)",
                                    registry=r)
        self.store_failing = Gauge("fieldlink_store_failing",
                                   "1 while the store's last commit failed", registry=r)
        self.store_queue = Gauge("fieldlink_store_queue_ops",
                                 "Store ops waiting or in the commit in flight", registry=r)
        self.closes = Counter("fieldlink_device_closes", "Device connections closed, by code",
                              ["code"], registry=r)
        self.refused = Counter("fieldlink_refused_upgrades",
                               "Device upgrades refused, by reason", ["reason"], registry=r)
        self.loop_lag = Histogram(
            "fieldlink_loop_lag_seconds",
            "How late the event loop ran a timer (scheduling lag), probed every %gs"
            % LOOP_LAG_INTERVAL, buckets=_LATENCY, registry=r)
        self.loop_lag_last = Gauge("fieldlink_loop_lag_last_seconds",
                                   "The latest event-loop lag probe", registry=r)
        self.gc_pause = Histogram("fieldlink_gc_pause_seconds",
                                  "Cyclic garbage collector passes (they stop the loop)",
                                  ["generation"], buckets=_LATENCY, registry=r)
        self._gc_started = None

    # -- the cyclic GC -------------------------------------------------------------------

    def _on_gc(self, phase, info):
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started is not None:
            self.gc_pause.labels(str(info["generation"])).observe(
                time.perf_counter() - self._gc_started)

    def watch_gc(self):
        """Record GC passes (process-wide: for the process's own collector)."""
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def unwatch_gc(self):
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def render(self):
        return generate_latest(self.registry)

    async def probe_loop_lag(self, interval=LOOP_LAG_INTERVAL):
        """Forever: sleep `interval`, record how much later than asked the loop woke us."""
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(interval)
            lag = max(0.0, time.perf_counter() - t0 - interval)
            self.loop_lag.observe(lag)
            self.loop_lag_last.set(lag)


async def keep_gc_off_the_loop(freeze_every=1.0, full_every=600.0):
    """Forever: every `freeze_every` s move what the heap holds into the GC's permanent
    generation (gc.freeze), so its full passes scan only what is new, not every connection;
    every `full_every` s unfreeze and collect everything once (cycles left by closed
    connections). Measured with 10,000 devices: full passes of 0.2-1.1 s that collected
    nothing, every few seconds, were the ack p99; now one such pass per `full_every`."""
    last_full = time.monotonic()
    while True:
        await asyncio.sleep(freeze_every)
        if time.monotonic() - last_full >= full_every:
            gc.unfreeze()
            gc.collect()
            last_full = time.monotonic()
        gc.freeze()
