"""Smoothing filters over the last `window` values: moving_average and median."""


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
