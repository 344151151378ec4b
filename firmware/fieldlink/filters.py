"""Reading filters a deployment sets in config, applied per channel in the order listed:
moving_average, median, delta (with heartbeat), throttle, clamp, calibrate. Pure: each
push(value, now_ms) returns the value to send or None to send nothing; now_ms is a
non-wrapping millisecond count supplied by the caller."""


def _num(spec, key, path, default=None, low=None, integer=False, positive=False):
    v = spec.get(key, default)
    if v is None and default is None and key not in spec:
        raise ValueError("%s.%s: required" % (path, key))
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    if ok and integer:
        ok = isinstance(v, int)
    if ok and low is not None:
        ok = v >= low
    if ok and positive:
        ok = v > 0
    if not ok:
        what = "an integer" if integer else "a number"
        if low is not None:
            what += " >= %s" % low
        if positive:
            what += " > 0"
        raise ValueError("%s.%s: expected %s, got %r" % (path, key, what, v))
    return v


class _Window:
    """The last `window` values in a ring preallocated once; the first _n slots are filled."""

    def __init__(self, window):
        self._buf = [0.0] * window
        self._n = 0
        self._i = 0

    def _add(self, v):
        buf = self._buf
        buf[self._i] = v
        self._i = (self._i + 1) % len(buf)
        if self._n < len(buf):
            self._n += 1
        return buf


class MovingAverage(_Window):
    """Mean of the last `window` values (fewer while the window fills)."""

    def push(self, v, now_ms):
        buf = self._add(v)
        s = 0.0
        for j in range(self._n):
            s += buf[j]
        return s / self._n


class Median(_Window):
    """Median of the last `window` values (mean of the middle two for an even count):
    removes single spikes a moving average would smear."""

    def push(self, v, now_ms):
        s = sorted(self._add(v)[:self._n])
        m = self._n // 2
        if self._n % 2:
            return s[m]
        return (s[m - 1] + s[m]) / 2


class Delta:
    """Send only when the value moved by >= threshold since the last value sent, or when
    heartbeat_s passed since then (so silence still means 'alive and unchanged')."""

    def __init__(self, threshold, heartbeat_s):
        self.threshold = threshold
        self.heartbeat_ms = int(heartbeat_s * 1000)
        self._last = None
        self._at = 0

    def push(self, v, now_ms):
        if (self._last is None or abs(v - self._last) >= self.threshold
                or now_ms - self._at >= self.heartbeat_ms):
            self._last = v
            self._at = now_ms
            return v
        return None

    def sent(self, v, now_ms):
        """A forced send (sample_now) counts as sent."""
        self._last = v
        self._at = now_ms


class Throttle:
    """At most one value per interval_s; values in between are dropped."""

    def __init__(self, interval_s):
        self.interval_ms = int(interval_s * 1000)
        self._at = None

    def push(self, v, now_ms):
        if self._at is None or now_ms - self._at >= self.interval_ms:
            self._at = now_ms
            return v
        return None

    def sent(self, v, now_ms):
        self._at = now_ms


class Clamp:
    """Limit to [min, max] (either may be omitted)."""

    def __init__(self, low=None, high=None):
        self.low = low
        self.high = high

    def push(self, v, now_ms):
        if self.low is not None and v < self.low:
            return self.low
        if self.high is not None and v > self.high:
            return self.high
        return v


class Calibrate:
    """value * scale + offset: a two-point calibration's result."""

    def __init__(self, offset=0.0, scale=1.0):
        self.offset = offset
        self.scale = scale

    def push(self, v, now_ms):
        return v * self.scale + self.offset


def check(spec, path):
    """Validate one filter spec; raise ValueError naming the key. Returns the spec."""
    if not isinstance(spec, dict):
        raise ValueError("%s: expected an object like {\"type\": \"median\", \"window\": 5}, "
                         "got %r" % (path, spec))
    t = spec.get("type")
    known = {"moving_average": ("window",), "median": ("window",),
             "delta": ("threshold", "heartbeat_s"), "throttle": ("interval_s",),
             "clamp": ("min", "max"), "calibrate": ("offset", "scale")}
    if t not in known:
        raise ValueError("%s.type: expected one of %s, got %r"
                         % (path, ", ".join(sorted(known)), t))
    for k in spec:
        if k != "type" and k not in known[t]:
            raise ValueError("%s.%s: unknown key for a %s filter" % (path, k, t))
    if t in ("moving_average", "median"):
        _num(spec, "window", path, integer=True, low=1)
    elif t == "delta":
        _num(spec, "threshold", path, low=0)
        _num(spec, "heartbeat_s", path, default=300, positive=True)
    elif t == "throttle":
        _num(spec, "interval_s", path, positive=True)
    elif t == "clamp":
        lo = _num(spec, "min", path, default=None) if "min" in spec else None
        hi = _num(spec, "max", path, default=None) if "max" in spec else None
        if lo is None and hi is None:
            raise ValueError("%s: a clamp needs min or max" % path)
        if lo is not None and hi is not None and lo > hi:
            raise ValueError("%s.min: %r is above max %r" % (path, lo, hi))
    elif t == "calibrate":
        if "offset" in spec:
            _num(spec, "offset", path)
        if "scale" in spec:
            _num(spec, "scale", path)
    return spec


def make(spec):
    """A filter object from a (checked) spec."""
    t = spec["type"]
    if t == "moving_average":
        return MovingAverage(spec["window"])
    if t == "median":
        return Median(spec["window"])
    if t == "delta":
        return Delta(spec["threshold"], spec.get("heartbeat_s", 300))
    if t == "throttle":
        return Throttle(spec["interval_s"])
    if t == "clamp":
        return Clamp(spec.get("min"), spec.get("max"))
    return Calibrate(spec.get("offset", 0.0), spec.get("scale", 1.0))


class Chain:
    """Filters applied in order; a None from one stops the chain (nothing is sent).
    force=True (sample_now) sends anyway: suppressing filters only record the send."""

    def __init__(self, specs=()):
        self.filters = [make(s) for s in specs]

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
