"""Filters that change the value: clamp (limit to a range) and calibrate (scale, offset)."""


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
