"""Time on the board: uptime from ticks (wrap-safe), Unix time once synced.

Synced from SNTP when an `ntp_host` is configured and reachable (ntp.py), else from the
collector's `welcome.time`. Until then `unix_ms()` is None and readings carry `ts: null`.
"""
import time

# The firmware's one source of ticks (app and supervisor import these): MicroPython's wrap-safe
# ticks, or a monotonic stand-in on CPython where the pure cores are tested.
try:
    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
except AttributeError:  # CPython
    def ticks_ms():
        return int(time.monotonic() * 1000)  # type: ignore[attr-defined]  # (CPython's time)

    def ticks_diff(a, b):
        return a - b


class Clock:
    def __init__(self):
        self._t = ticks_ms()
        self._up = 0           # ms since boot, accumulated so it survives the ticks wrap
        self._base = None      # (unix ms, uptime ms) at the last sync
        self.source = None     # "ntp" or "server"
        self.synced = False

    def uptime_ms(self):
        # ticks_diff is only right within half the ticks period (~6 days on the ESP32);
        # this is called at least every sampling interval, so accumulate as we go.
        t = ticks_ms()
        self._up += ticks_diff(t, self._t)
        self._t = t
        return self._up

    def set_unix_ms(self, unix_ms, source):
        """Sync. A server's welcome time never overrides an NTP sync."""
        if source == "server" and self.source == "ntp":
            return False
        self._base = (unix_ms, self.uptime_ms())
        self.source = source
        self.synced = True
        return True

    def unix_ms(self):
        if self._base is None:
            return None
        return self._base[0] + (self.uptime_ms() - self._base[1])


def __getattr__(name):
    # `from fieldlink.clock import sntp_sync` (the supervisor's, when an ntp_host is set)
    # loads the UDP query from ntp.py only then: a board without NTP never pays its heap
    if name == "sntp_sync":
        from fieldlink.ntp import sntp_sync
        return sntp_sync
    raise AttributeError(name)
