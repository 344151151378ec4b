"""Reconnect delay policy: exponential backoff with full jitter, reset after a stable link.

Pure: no clock, no sleep. The caller injects `rand` (a function returning a float in [0, 1))
so tests can seed it, and reports how long the last link stayed up.
"""


class Backoff:
    """delay = uniform in [0, min(cap, base * 2**n)], n = failures since the last stable link.

    Full jitter spreads a fleet's reconnects after a server restart, so the devices do not come
    back in lock-step (the "thundering herd").
    """

    def __init__(self, base_s, cap_s, stable_after_s, rand):
        if base_s <= 0 or cap_s < base_s:
            raise ValueError("backoff: need 0 < base_s <= cap_s")
        self.base = base_s
        self.cap = cap_s
        self.stable_after = stable_after_s
        self._rand = rand
        self.attempt = 0  # failures since the link was last stable

    def bound(self):
        """Upper end of the next delay's range."""
        # Stop doubling once the cap is reached: 2**n must not grow without limit.
        b = self.base
        n = self.attempt
        while n > 0 and b < self.cap:
            b *= 2
            n -= 1
        return b if b < self.cap else self.cap

    def next_delay(self):
        """Delay in seconds before the next attempt; counts one more failure."""
        d = self._rand() * self.bound()
        self.attempt += 1
        return d

    def link_lost(self, up_for_s):
        """The link was up for `up_for_s` seconds and is gone. Returns the delay to wait.

        A link that stayed up at least `stable_after_s` resets the exponent: a flaky server
        that accepts and drops at once keeps the delays growing, a long healthy stretch does not.
        """
        if up_for_s is not None and up_for_s >= self.stable_after:
            self.attempt = 0
        return self.next_delay()

    def penalty(self):
        """Delay after a refusal that will not fix itself soon (401/403): the cap, no jitter
        below it, so a device with a revoked token does not hammer the server."""
        self.attempt += 1
        return self.cap

    def reset(self):
        self.attempt = 0
