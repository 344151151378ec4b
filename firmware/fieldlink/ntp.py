"""One SNTP query over UDP: the I/O shell around sntp.py's pure packet code. Loaded only
when the config names an `ntp_host` (clock.py hands it out)."""
import asyncio
import socket

from fieldlink import sntp


async def sntp_sync(host, timeout_ms=2000, port=123):
    """Ask an SNTP server once; returns Unix ms or None. Never raises, never blocks the loop
    beyond the (unavoidable) DNS lookup."""
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
            await asyncio.sleep(0.05)
            waited += 50
        return None
    except Exception:  # DNS failure, no route, bad reply: stay unsynced, try later
        return None
    finally:
        if s is not None:
            s.close()
