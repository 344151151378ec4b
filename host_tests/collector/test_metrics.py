"""/metrics: Prometheus text behind the viewer (or admin) token, one registry per collector."""
import asyncio
import re

from collector_inproc import InProc, run, until
from fieldlink_tools.fleet import Fleet, FleetDevice, Stats

TOKENS = {"m-1": "tok-m-1-long-enough", "m-2": "tok-m-2-long-enough"}
ADMIN1, ADMIN2 = "adm-1-secret-of-24-chars", "adm-2-secret-of-24-chars"
VIEWER = "viewer-secret-of-24-char"


def value(text, name):
    m = re.search(r"^%s ([0-9.e+-]+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


def test_metrics_need_the_token(tmp_path):
    async def main():
        async with InProc(tmp_path / "c.db", TOKENS, admin_token=ADMIN1,
                          viewer_token=VIEWER) as c:
            assert (await c.get("/metrics"))[0] == 401
            assert (await c.get("/metrics", "wrong"))[0] == 401
            assert (await c.get("/metrics", TOKENS["m-1"]))[0] == 401   # a device's token
            for token in (VIEWER, ADMIN1):
                st, body = await c.get("/metrics", token)
                assert st == 200 and "fieldlink_devices_connected" in body
        async with InProc(tmp_path / "d.db", TOKENS) as c:           # no tokens set
            assert (await c.get("/metrics", "anything"))[0] == 401
    run(main())


def test_metrics_count_this_collectors_devices(tmp_path):
    async def main():
        async with InProc(tmp_path / "c.db", TOKENS, admin_token=ADMIN1) as c, \
                InProc(tmp_path / "o.db", TOKENS, admin_token=ADMIN2) as other:
            stop = asyncio.Event()
            wrong = FleetDevice(c.url, "m-2", "not-the-token", Stats(), rate=0)
            bad = asyncio.ensure_future(wrong.run(stop))
            await until(lambda: wrong.stats.refused.get(401), 10, "a refused upgrade")
            fleet = Fleet(c.url, {"m-1": TOKENS["m-1"]}, rate=20, batch=1).start()
            await until(lambda: fleet.stats.acked >= 10, 20, "10 readings acked")
            body = (await c.get("/metrics", ADMIN1))[1]
            assert value(body, "fieldlink_devices_connected") == 1
            assert value(body, "fieldlink_batches_total") >= 10
            assert value(body, "fieldlink_readings_total") >= 10
            assert value(body, "fieldlink_ack_latency_seconds_count") >= 10
            assert value(body, "fieldlink_store_commit_seconds_count") >= 3
            assert value(body, "fieldlink_store_queue_wait_seconds_count") >= 3
            assert value(body, 'fieldlink_refused_upgrades_total{reason="unauthorized"}') >= 1
            await fleet.stop()
            for _ in range(200):        # a close is counted once its socket has closed
                body = (await c.get("/metrics", ADMIN1))[1]
                if value(body, 'fieldlink_device_closes_total{code="1001"}') and \
                        value(body, "fieldlink_loop_lag_seconds_count"):
                    break
                await asyncio.sleep(0.05)
            assert value(body, 'fieldlink_device_closes_total{code="1001"}') == 1, \
                re.findall("^fieldlink_device_closes.*$", body, re.M)
            assert value(body, "fieldlink_loop_lag_seconds_count") >= 1
            assert value(body, "fieldlink_devices_connected") == 0
            ob = (await other.get("/metrics", ADMIN2))[1]
            assert value(ob, "fieldlink_batches_total") == 0        # its own registry
            stop.set()
            bad.cancel()
    run(main())


def test_gc_passes_are_measured_and_the_heap_frozen_between_full_passes():
    import gc

    from fieldlink_tools.collector.metrics import CollectorMetrics, keep_gc_off_the_loop

    async def main():
        m = CollectorMetrics()
        m.watch_gc()
        task = asyncio.ensure_future(keep_gc_off_the_loop(freeze_every=0.01, full_every=0.2))
        seen = None
        try:
            await until(lambda: gc.get_freeze_count() > 0, 10, "a freeze")
            full = []

            def seen(phase, info):
                if phase == "stop":
                    full.append(info["generation"])
            gc.callbacks.append(seen)
            await until(lambda: 2 in full, 10, "the periodic full pass")
            gc.collect(1)
            assert value(m.render().decode(),
                         'fieldlink_gc_pause_seconds_count{generation="1"}') >= 1
        finally:
            task.cancel()
            m.unwatch_gc()
            if seen in gc.callbacks:
                gc.callbacks.remove(seen)
            gc.unfreeze()
    run(main())
