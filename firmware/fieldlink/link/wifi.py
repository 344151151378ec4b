"""The WIFI state's work when there is any: associate with the access point, sync the clock
over SNTP when due. Imported for one use and dropped again (supervisor._seldom): a board that
stays associated never holds this code."""
import asyncio

from fieldlink import log
from fieldlink.clock import ticks_diff, ticks_ms
from fieldlink.link import LinkFailure

_log = log.Logger("link")


async def associate(wlan, ssid, password, timeout_s):
    """Bring the station interface `wlan` up within timeout_s. Raises OSError, or
    LinkFailure at the deadline."""
    wlan.active(True)
    wlan.connect(ssid, password)
    t0 = ticks_ms()
    limit = int(timeout_s * 1000)
    while not wlan.isconnected():
        if ticks_diff(ticks_ms(), t0) > limit:
            try:
                wlan.disconnect()
            except (OSError, AttributeError):
                pass
            try:
                status = wlan.status()
            except Exception:
                status = "?"
            raise LinkFailure("no Wi-Fi within %s s (status %s)" % (timeout_s, status))
        await asyncio.sleep(0.1)
    try:
        ip = wlan.ifconfig()[0]
    except Exception:
        ip = "?"
    _log.info("wifi up: %s", ip)


async def sync_clock(clock, host):
    """Set `clock` from the SNTP server `host`; unchanged when it does not answer in time."""
    from fieldlink.clock import sntp_sync
    ms = await sntp_sync(host)
    if ms is not None:
        clock.set_unix_ms(ms, "ntp")
        _log.info("clock synced from %s", host)
