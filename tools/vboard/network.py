"""Virtual board stand-in for MicroPython's `network` module: a WLAN station that "associates"
with any SSID. The host's own network carries the traffic; this module only models the
Wi-Fi state the firmware sees, so tests can pull the plug. On an ESP32 `network` is C code
(no heap for code), so this stays small: the status constants, AP_IF and hostname() are in
_network_sys.py, loaded on first use (module __getattr__, as in machine.py).

Fault knobs (read on every call, so a test can flip them while the board runs), from the JSON
object in env FIELDLINK_VBOARD, overridden by `vboard.json` in the board's flash directory
(the cwd), the same file tools/vboard/machine.py reads:
    "wifi": "up" | "down"        down: association fails, and a connected station drops
    "wifi_connect_ms": 300       how long association takes
    "rssi": -58                  what status("rssi") reports
"""
import json
import os
import time

STA_IF = 0


def knobs():
    """The current fault knobs: env FIELDLINK_VBOARD, then vboard.json on top."""
    out = {}
    env = os.getenv("FIELDLINK_VBOARD")
    if env:
        try:
            out.update(json.loads(env))
        except ValueError:
            pass
    try:
        # read every time (no mtime cache: a test may flip a knob twice within a second)
        with open("vboard.json") as f:
            d = json.loads(f.read())
        if isinstance(d, dict):
            out.update(d)
    except (OSError, ValueError):
        pass
    return out


class WLAN:
    _one = {}  # like the real port: one object per interface

    def __new__(cls, interface=STA_IF):
        w = cls._one.get(interface)
        if w is None:
            w = cls._one[interface] = object.__new__(cls)
            w._active = w._want = w._lost = False
            w._ssid = None
            w._since = 0
            w._hostname = "fieldlink-vboard"
        return w

    def active(self, on=None):
        if on is None:
            return self._active
        self._active = bool(on)
        if not on:
            self._want = False

    def connect(self, ssid=None, key=None, bssid=None):
        if not self._active:
            raise OSError("Wifi Not Started")
        self._ssid = ssid
        self._want = True
        self._lost = False
        self._since = time.ticks_ms()

    def disconnect(self):
        self._want = False

    def isconnected(self):
        if not (self._active and self._want):
            return False
        k = knobs()
        if k.get("wifi", "up") == "down":
            self._lost = True
            return False
        if self._lost:
            # the AP came back: a station re-associates by itself, after the usual delay
            self._lost = False
            self._since = time.ticks_ms()
        return time.ticks_diff(time.ticks_ms(), self._since) >= k.get("wifi_connect_ms", 300)

    def status(self, param=None):
        if param == "rssi":
            if not self.isconnected():
                raise OSError("not connected")
            return knobs().get("rssi", -58)
        if param is not None:
            raise ValueError("unknown status param")
        # the ESP32 port's codes: STAT_IDLE 1000, STAT_CONNECTING 1001, STAT_GOT_IP 1010,
        # STAT_NO_AP_FOUND 201
        if self._active:
            if self.isconnected():
                return 1010
            if self._want:
                return 201 if self._lost else 1001
        return 1000

    def ifconfig(self, cfg=None):
        if cfg is None:
            ip = "127.0.0.1" if self.isconnected() else "0.0.0.0"
            return (ip, "255.0.0.0" if ip[0] == "1" else ip, ip, ip)

    def config(self, *args, **kw):
        if "hostname" in kw:
            self._hostname = kw["hostname"]
        if kw:
            return None
        p = args[0] if args else None
        if p == "mac":
            return b"\x02\xf1\x1e\x00\x00\x01"
        if p in ("essid", "ssid"):
            return self._ssid or ""
        if p in ("hostname", "dhcp_hostname"):
            return self._hostname
        if p == "txpower":
            return 20
        raise ValueError("unknown config param")

    def scan(self):
        k = knobs()
        if k.get("wifi", "up") == "down":
            return []
        return [(b"fieldlink-sim", b"\x02\x00\x00\x00\x00\x01", 6, k.get("rssi", -58), 3, False)]


def __getattr__(name):
    import _network_sys
    v = getattr(_network_sys, name)  # AttributeError: the real module has no such name either
    globals()[name] = v
    return v
