# dual: runs on CPython and on MicroPython
"""The sampler: schedule per sensor, channel names and units, filters from config, missing
readings (value None + err, logged once), run-time interval changes, sample_now, the config
check, and the asyncio loop itself."""
try:
    import asyncio
except ImportError:
    import uasyncio as asyncio
from dualsupport import raises
from fieldlink import sampling
from fieldlink.clock import ticks_diff, ticks_ms
from fieldlink.drivers import DeviceMissing


class Fake:
    def __init__(self, name, values, channels=(("temperature", "C"),), wait=0):
        self.name = name
        self.values = list(values)
        self.channels = channels
        self.wait = wait
        self.fail = None
        self.reads = 0

    def start(self):
        return self.wait

    def read(self):
        self.reads += 1
        if self.fail:
            raise self.fail
        v = self.values.pop(0) if len(self.values) > 1 else self.values[0]
        return v if isinstance(v, tuple) else (v,)


class Rec:
    def __init__(self):
        self.got = []
        self.logs = []

    def emit(self, name, value, unit, err):
        self.got.append((name, value, unit, err))

    def log(self, line):
        self.logs.append(line)


def test_default_interval_is_5s_and_names_carry_units():
    env = Fake("env", [(20.0, 100000.0)], (("temperature", "C"), ("pressure", "Pa")))
    r = Rec()
    s = sampling.Sampler([env], {}, r.log)
    assert s.interval_s("env") == 5
    assert s.tick(0, r.emit) == 5000
    assert r.got == [("env.temperature", 20.0, "C", None), ("env.pressure", 100000.0, "Pa", None)]
    s.tick(4999, r.emit)
    assert env.reads == 1
    s.tick(5000, r.emit)
    assert env.reads == 2


def test_star_default_and_per_sensor_interval():
    a, b = Fake("a", [1.0]), Fake("b", [2.0])
    s = sampling.Sampler([a, b], {"*": {"interval_s": 2}, "b": {"interval_s": 3}}, Rec().log)
    r = Rec()
    for t in range(0, 6001, 500):
        s.tick(t, r.emit)
    assert a.reads == 4 and b.reads == 3  # a at 0,2,4,6 s; b at 0,3,6 s


def test_filters_per_sensor_and_per_channel():
    env = Fake("env", [(10.0, 50.0), (10.1, 51.0), (10.2, 52.0)],
               (("temperature", "C"), ("humidity", "%RH")))
    cfg = {"env": {"interval_s": 1, "filters": [{"type": "calibrate", "offset": 1.0}]},
           "env.humidity": {"filters": [{"type": "delta", "threshold": 1.5}]}}
    r = Rec()
    s = sampling.Sampler([env], cfg, r.log)
    for t in (0, 1000, 2000):
        s.tick(t, r.emit)
    temps = [g[1] for g in r.got if g[0] == "env.temperature"]
    hums = [g[1] for g in r.got if g[0] == "env.humidity"]
    assert [round(x, 6) for x in temps] == [11.0, 11.1, 11.2]
    assert hums == [50.0, 52.0]  # 51 moved 1.0 < 1.5: not sent; no calibrate on humidity


def test_missing_reading_is_marked_and_logged_once_then_recovery_logged():
    env = Fake("env", [20.0])
    env.fail = DeviceMissing("bme280 at 0x76: no answer (errno 19)")
    r = Rec()
    s = sampling.Sampler([env], {"*": {"interval_s": 1}}, r.log)
    for t in (0, 1000, 2000):
        s.tick(t, r.emit)
    assert r.got == [("env.temperature", None, "C",
                      "DeviceMissing: bme280 at 0x76: no answer (errno 19)")] * 3
    assert len(r.logs) == 1 and "env missing" in r.logs[0] and "0x76" in r.logs[0]
    env.fail = None
    s.tick(3000, r.emit)
    assert r.got[-1] == ("env.temperature", 20.0, "C", None)
    assert "reading again" in r.logs[-1]


def test_long_error_text_is_cut_to_what_the_collector_stores():
    # A real driver message: 70 chars. The collector refused "e" over 64 chars with 1007, so
    # the reading stayed in the outbox and was resent (and refused) forever.
    from fieldlink.drivers import CRCError
    text = "ds18b20 28ff4c6a711603eb: scratchpad crc 0xec, computed 0x49"
    env = Fake("water", [20.0])
    env.fail = CRCError(text)
    r = Rec()
    sampling.Sampler([env], {}, r.log).tick(0, r.emit)
    err = r.got[0][3]
    assert len(err) <= 64 and sampling.ERR_MAX == 64, err
    assert err.startswith("CRCError: ds18b20 28ff4c6a711603eb: scratchpad") and err.endswith("...")
    assert text in r.logs[0]  # the log line keeps all of it


def test_error_in_start_is_missing_too_and_other_sensors_continue():
    class Bad(Fake):
        def start(self):
            raise OSError(116)
    bad, good = Bad("bad", [1.0]), Fake("good", [2.0])
    r = Rec()
    sampling.Sampler([bad, good], {}, r.log).tick(0, r.emit)
    assert r.got[0][0] == "bad.temperature" and r.got[0][1] is None and "116" in r.got[0][3]
    assert r.got[1] == ("good.temperature", 2.0, "C", None)
    assert bad.reads == 0


def test_set_interval_takes_effect_without_restart():
    a = Fake("a", [1.0])
    s = sampling.Sampler([a], {"*": {"interval_s": 10}}, Rec().log)
    r = Rec()
    s.tick(0, r.emit)
    assert s.next_due() == 10000
    assert s.set_interval("a", 2) == 2
    assert s.next_due() == 2000
    s.set_interval("*", 1)  # the sensor's own setting keeps priority
    assert s.interval_s("a") == 2
    raises(ValueError, s.set_interval, "a", 0)
    e = raises(ValueError, s.set_interval, "nope", 1)
    assert "nope" in str(e)


def test_sample_now_forces_through_delta():
    a = Fake("a", [5.0])
    s = sampling.Sampler([a], {"a": {"interval_s": 60, "filters": [
        {"type": "delta", "threshold": 1, "heartbeat_s": 600}]}}, Rec().log)
    r = Rec()
    s.tick(0, r.emit)
    s.tick(60000, r.emit)       # unchanged: suppressed
    assert len(r.got) == 1
    s.sample_now()
    s.tick(61000, r.emit)
    assert len(r.got) == 2 and r.got[-1][1] == 5.0
    assert s.next_due() == 121000


def test_check_config_messages():
    sampling.check_config({})
    sampling.check_config(None)
    sampling.check_config({"*": {"interval_s": 5}, "env": {"interval_s": 0.5, "filters": []}})
    cases = [
        ({"env": {"interval_s": "x"}}, "sampling.env.interval_s: expected a number > 0, got 'x'"),
        ({"env": {"interval_s": 0}}, "sampling.env.interval_s: expected a number > 0, got 0"),
        ({"env": {"interval_s": True}}, "sampling.env.interval_s: expected a number > 0"),
        ({"env": {"every": 5}}, "sampling.env.every: unknown key"),
        ({"env": 5}, "sampling.env: expected an object"),
        ({"env": {"filters": {}}}, "sampling.env.filters: expected a list"),
        ({"env": {"filters": [{"type": "median", "window": 0}]}},
         "sampling.env.filters[0].window: expected an integer >= 1"),
        ({"env.temperature": {"interval_s": 1}}, "sampling.env.temperature.interval_s: interv"),
        ([], "sampling: expected an object"),
    ]
    for cfg, msg in cases:
        e = raises(ValueError, sampling.check_config, cfg)
        assert str(e).startswith(msg), (cfg, str(e))


def test_the_config_check_is_dropped_after_use():
    # sampling_check.py is boot-only code: loaded for the check, then forgotten (heap)
    import sys
    import fieldlink
    sampling.check_config({"*": {"interval_s": 5}})
    raises(ValueError, sampling.check_config, {"env": 5})
    assert "fieldlink.sampling_check" not in sys.modules
    assert "sampling_check" not in fieldlink.__dict__


def test_unknown_sensor_in_config_is_logged():
    r = Rec()
    sampling.Sampler([Fake("a", [1.0])], {"b": {"interval_s": 1}}, r.log)
    assert r.logs and "'b'" in r.logs[0]


def test_run_loop_emits_waits_for_conversion_and_reacts_to_set_interval():
    a = Fake("a", [1.0], wait=5)
    s = sampling.Sampler([a], {"*": {"interval_s": 30}}, Rec().log)
    got = []
    enough = asyncio.Event()

    async def emit(name, value, unit, err):  # a coroutine emit is awaited
        got.append((name, value))
        if len(got) >= 3:
            enough.set()

    async def main():
        task = asyncio.create_task(s.run(emit))
        for _ in range(4000):      # a deadline (about 20 s), not a bare wait
            if got:
                break
            await asyncio.sleep(0.005)
        assert got, "the loop emitted nothing"
        s.set_interval("a", 0.02)    # without this the next read is 30 s away
        await asyncio.wait_for(enough.wait(), 20)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    asyncio.run(main())
    assert got[:3] == [("a.temperature", 1.0)] * 3


class Slow:
    """A sensor whose read takes longer than its interval (busy, as a bus transfer is)."""
    name = "slow"
    channels = (("temperature", "C"),)

    def start(self):
        return 0

    def read(self):
        t0 = ticks_ms()
        while ticks_diff(ticks_ms(), t0) < 2:
            pass
        return (1.0,)


class _Enough(Exception):
    pass


def test_a_sampler_behind_schedule_still_lets_other_tasks_run():
    # 1 ms interval, 2 ms per read: the next read is always due at once. Other tasks (the
    # link's keepalive, sender, monitor) must still get turns between rounds.
    s = sampling.Sampler([Slow()], {"*": {"interval_s": 0.001}}, Rec().log)
    got = []
    turns = [0]

    def emit(name, value, unit, err):  # a plain function: nothing awaited here
        got.append(value)
        if len(got) >= 60:
            raise _Enough()            # ends run() even if it never yields (the bug)

    async def other():
        while True:
            turns[0] += 1
            await asyncio.sleep(0)

    async def main():
        o = asyncio.create_task(other())
        try:
            await s.run(emit)
        except _Enough:
            pass
        o.cancel()
        try:
            await o
        except asyncio.CancelledError:
            pass
    asyncio.run(main())
    assert len(got) == 60
    assert turns[0] >= 50, turns[0]    # about one turn per round; 0 when starved
