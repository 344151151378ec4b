"""Filters that send less: delta (only changes, with a heartbeat) and throttle (at most one
value per interval). Both return None for a value not to send, and take sent() for a value
the chain sent anyway (sample_now)."""


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
            self.sent(v, now_ms)
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
