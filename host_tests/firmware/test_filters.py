# dual: runs on CPython and on MicroPython
"""Filters against hand-worked sequences; config checking names the key; a filter's module
is loaded only for the types a config names."""
import sys

from dualsupport import raises
from fieldlink import filters, sampling_check
from fieldlink.filters.adjust import Calibrate, Clamp
from fieldlink.filters.smooth import Median, MovingAverage
from fieldlink.filters.suppress import Delta, Throttle


def run(f, seq):
    """seq: list of (t_seconds, value) -> list of outputs (None = not sent)."""
    return [f.push(v, int(t * 1000)) for t, v in seq]


def test_moving_average_window_3():
    out = run(MovingAverage(3), [(0, 1), (1, 2), (2, 3), (3, 4), (4, 10)])
    # 1; (1+2)/2; (1+2+3)/3; (2+3+4)/3; (3+4+10)/3
    assert out[:4] == [1, 1.5, 2, 3]
    assert abs(out[4] - 17 / 3) < 1e-9


def test_median_window_3_removes_spike():
    out = run(Median(3), [(0, 1), (1, 100), (2, 2), (3, 3), (4, 4)])
    # [1] -> 1; [1,100] -> 50.5; [1,100,2] -> 2; [100,2,3] -> 3; [2,3,4] -> 3
    assert out == [1, 50.5, 2, 3, 3]


def test_delta_threshold_and_heartbeat():
    f = Delta(0.5, 10)
    out = run(f, [(0, 20.0), (1, 20.2), (2, 20.6), (3, 20.7), (11, 20.7), (12, 20.7),
                  (13, 20.0)])
    # first always; 0.2 < 0.5 no; 0.6 >= 0.5 yes (ref 20.6 now); 0.1 no;
    # t=11: 9 s since last send, no; t=12: 10 s heartbeat, yes; t=13: -0.7 yes
    assert out == [20.0, None, 20.6, None, None, 20.7, 20.0]


def test_delta_threshold_counts_from_last_sent_not_last_seen():
    out = run(Delta(1.0, 1000), [(0, 0.0), (1, 0.6), (2, 1.2), (3, 1.4)])
    assert out == [0.0, None, 1.2, None]  # creeping change is caught


def test_throttle():
    out = run(Throttle(10), [(0, 1), (5, 2), (9.999, 3), (10, 4), (15, 5), (21, 6)])
    assert out == [1, None, None, 4, None, 6]


def test_clamp_and_calibrate():
    assert run(Clamp(0, 100), [(0, -5), (0, 50), (0, 120)]) == [0, 50, 100]
    assert run(Clamp(None, 10), [(0, -5), (0, 12)]) == [-5, 10]
    assert run(Calibrate(0.5, 2.0), [(0, 10), (0, -1)]) == [20.5, -1.5]


def test_chain_in_order_and_force():
    c = filters.Chain([{"type": "calibrate", "offset": -1.0},
                       {"type": "clamp", "min": 0},
                       {"type": "delta", "threshold": 1, "heartbeat_s": 60}])
    assert c.push(5.0, 0) == 4.0
    assert c.push(5.5, 1000) is None          # 4.5: moved 0.5 < 1
    assert c.push(5.5, 2000, force=True) == 4.5  # sample_now: sent anyway ...
    assert c.push(6.0, 3000) is None          # ... and counts as sent (5.0 - 4.5 < 1)
    assert c.push(-3.0, 4000) == 0            # calibrated -4, clamped to 0, moved 5


def test_check_accepts_good_specs():
    for spec in ({"type": "median", "window": 5}, {"type": "delta", "threshold": 0.2},
                 {"type": "throttle", "interval_s": 60}, {"type": "clamp", "max": 85},
                 {"type": "calibrate", "scale": 1.02}, {"type": "moving_average", "window": 1}):
        assert sampling_check.check_filter(spec, "f") is spec
        assert filters.make(spec) is not None


def test_check_names_the_key():
    cases = [
        ({"type": "median", "window": 0}, "x.window: expected an integer >= 1, got 0"),
        ({"type": "median", "window": 2.5}, "x.window: expected an integer"),
        ({"type": "median"}, "x.window: required"),
        ({"type": "wobble"}, "x.type: expected one of"),
        ({"type": "delta", "threshold": "big"}, "x.threshold: expected a number"),
        ({"type": "throttle", "interval_s": 0}, "x.interval_s: expected a number > 0"),
        ({"type": "clamp"}, "x: a clamp needs min or max"),
        ({"type": "clamp", "min": 5, "max": 1}, "x.min: 5 is above max 1"),
        ({"type": "median", "window": 3, "size": 1}, "x.size: unknown key"),
        ("median", "x: expected an object"),
    ]
    for spec, msg in cases:
        e = raises(ValueError, sampling_check.check_filter, spec, "x")
        assert str(e).startswith(msg), (spec, str(e))


def test_make_builds_each_type_from_its_module():
    kinds = {"moving_average": MovingAverage, "median": Median, "delta": Delta,
             "throttle": Throttle, "clamp": Clamp, "calibrate": Calibrate}
    for t, cls in kinds.items():
        spec = {"type": t, "window": 2, "threshold": 1, "interval_s": 1, "min": 0}
        assert isinstance(filters.make(spec), cls), t


def test_a_filter_module_is_imported_only_when_a_type_needs_it():
    name = "fieldlink.filters.suppress"
    saved = sys.modules.pop(name, None)
    try:
        filters.Chain([{"type": "calibrate", "scale": 2.0}])
        assert name not in sys.modules
        filters.Chain([{"type": "throttle", "interval_s": 1}])
        assert name in sys.modules
    finally:
        if saved is not None:
            sys.modules[name] = saved
