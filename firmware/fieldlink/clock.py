"""Time on the board: uptime from ticks (wrap-safe), Unix time once synced.

Synced from SNTP when an `ntp_host` is configured and reachable, else from the collector's
`welcome.time`. Until then `unix_ms()` is None and readings carry `ts: null`.
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
    def __init__(self, ticks_ms=ticks_ms, ticks_diff=ticks_diff):
        self._ticks = ticks_ms
        self._diff = ticks_diff
        self._t = ticks_ms()
        self._up = 0           # ms since boot, accumulated so it survives the ticks wrap
        self._base = None      # (unix ms, uptime ms) at the last sync
        self.source = None     # "ntp" or "server"

    def uptime_ms(self):
        # ticks_diff is only right within half the ticks period (~6 days on the ESP32);
        # this is called at least every sampling interval, so accumulate as we go.
        t = self._ticks()
        self._up += self._diff(t, self._t)
        self._t = t
        return self._up

    @property
    def synced(self):
        return self._base is not None

    def set_unix_ms(self, unix_ms, source):
        """Sync. A server's welcome time never overrides an NTP sync."""
        if source == "server" and self.source == "ntp":
            return False
        self._base = (unix_ms, self.uptime_ms())
        self.source = source
        return True

    def unix_ms(self):
        if self._base is None:
            return None
        return self._base[0] + (self.uptime_ms() - self._base[1])


async def sntp_sync(host, timeout_ms=2000, port=123):
    """Ask an SNTP server once; returns Unix ms or None. Never raises, never blocks the loop
    beyond the (unavoidable) DNS lookup."""
    import asyncio
    import socket
    from fieldlink import sntp
    s = None
    try:
        addr = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0][-1]
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.sendto(sntp.request(), addr)
        waited = 0
        while waited < timeout_ms:
            try:
                data = s.recv(64)
                if data:
                    return sntp.parse(data)
            except OSError:
                pass
            await asyncio.sleep_ms(50) if hasattr(asyncio, "sleep_ms") \
                else await asyncio.sleep(0.05)
            waited += 50
        return None
    except Exception:  # DNS failure, no route, bad reply: stay unsynced, try later
        return None
    finally:
        if s is not None:
            s.close()
