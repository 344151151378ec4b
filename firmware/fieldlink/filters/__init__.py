"""Reading filters a deployment sets in config, applied per channel in the order listed:
moving_average, median (smooth.py), delta with heartbeat, throttle (suppress.py), clamp,
calibrate (adjust.py). A filter's module is imported only when a config names its type, so a
board holds the code of the filters it uses and nothing else. Pure: each push(value, now_ms)
returns the value to send or None to send nothing; now_ms is a non-wrapping millisecond count
supplied by the caller. (Specs are checked at boot by sampling_check.check_filter.)"""


def make(spec):
    """A filter object from a (checked) spec."""
    t = spec["type"]
    if t == "moving_average":
        from fieldlink.filters.smooth import MovingAverage
        return MovingAverage(spec["window"])
    if t == "median":
        from fieldlink.filters.smooth import Median
        return Median(spec["window"])
    if t == "delta":
        from fieldlink.filters.suppress import Delta
        return Delta(spec["threshold"], spec.get("heartbeat_s", 300))
    if t == "throttle":
        from fieldlink.filters.suppress import Throttle
        return Throttle(spec["interval_s"])
    if t == "clamp":
        from fieldlink.filters.adjust import Clamp
        return Clamp(spec.get("min"), spec.get("max"))
    from fieldlink.filters.adjust import Calibrate
    return Calibrate(spec.get("offset", 0.0), spec.get("scale", 1.0))


class Chain:
    """Filters applied in order; a None from one stops the chain (nothing is sent).
    force=True (sample_now) sends anyway: suppressing filters only record the send."""

    def __init__(self, specs=()):
        self.filters = []
        for s in specs:
            self.filters.append(make(s))

    def push(self, v, now_ms, force=False):
        for f in self.filters:
            out = f.push(v, now_ms)
            if out is None:
                if not force:
                    return None
                f.sent(v, now_ms)
                out = v
            v = out
        return v
