"""The supervisor's WIFI state when there is work to do: associate with the access point
(bounded by wifi_timeout_s) and sync the clock over SNTP when due. Imported for one use by
Supervisor._once and dropped again: a board that stays associated never holds this code."""
import asyncio

from fieldlink import log
from fieldlink.clock import ticks_diff, ticks_ms
from fieldlink.supervisor import E_OK, LinkFailure

_log = log.Logger("link")


async def run(sup, ntp_due):
    """E_OK, or the failure event from sup._failed()."""
    w = sup.wlan
    if w is not None and not w.isconnected():
        c = sup.cfg
        try:
            w.active(True)
            w.connect(c.wifi_ssid, c.wifi_password)
        except OSError as e:
            return sup._failed(e, "wifi")
        t0 = ticks_ms()
        limit = int(c.wifi_timeout_s * 1000)
        while not w.isconnected():
            if ticks_diff(ticks_ms(), t0) > limit:
                try:
                    w.disconnect()
                except (OSError, AttributeError):
                    pass
                try:
                    status = w.status()
                except Exception:
                    status = "?"
                return sup._failed(LinkFailure("no Wi-Fi within %s s (status %s)" % (
                    c.wifi_timeout_s, status)), "wifi")
            sup.mark()
            await asyncio.sleep(0.1)
        try:
            ip = w.ifconfig()[0]
        except Exception:
            ip = "?"
        _log.info("wifi up: %s", ip)
    if ntp_due:
        from fieldlink.clock import sntp_sync
        host = sup.cfg.ntp_host
        ms = await sntp_sync(host)
        sup._ntp_at = sup.clock.uptime_ms()
        if ms is not None:
            sup.clock.set_unix_ms(ms, "ntp")
            _log.info("clock synced from %s", host)
    return E_OK
