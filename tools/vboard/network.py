"""Virtual board stand-in for MicroPython's `network` module: a WLAN station that "associates"
with any SSID. The host's own network carries the traffic; this module only models the
Wi-Fi state the firmware sees, so tests can pull the plug.

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
AP_IF = 1
# status codes as on the ESP32 port
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_BEACON_TIMEOUT = 200
STAT_ASSOC_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204

_KNOB_FILE = "vboard.json"


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
        with open(_KNOB_FILE) as f:
            d = json.loads(f.read())
        if isinstance(d, dict):
            out.update(d)
    except (OSError, ValueError):
        pass
    return out


def _wifi_up():
    return knobs().get("wifi", "up") != "down"


class WLAN:
    _instances = {}

    def __new__(cls, interface=STA_IF):
        # like the real port: one object per interface
        w = cls._instances.get(interface)
        if w is None:
            w = object.__new__(cls)
            w._init(interface)
            cls._instances[interface] = w
        return w

    def __init__(self, interface=STA_IF):
        pass

    def _init(self, interface):
        self._if = interface
        self._active = False
        self._ssid = None
        self._want = False
        self._since = 0
        self._lost = False
        self._hostname = "fieldlink-vboard"

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
        if not _wifi_up():
            self._lost = True
            return False
        if self._lost:
            # the AP came back: a station re-associates by itself, after the usual delay
            self._lost = False
            self._since = time.ticks_ms()
        delay = knobs().get("wifi_connect_ms", 300)
        return time.ticks_diff(time.ticks_ms(), self._since) >= delay

    def status(self, param=None):
        if param == "rssi":
            if not self.isconnected():
                raise OSError("not connected")
            return knobs().get("rssi", -58)
        if param is not None:
            raise ValueError("unknown status param")
        if not self._active:
            return STAT_IDLE
        if self.isconnected():
            return STAT_GOT_IP
        if self._want:
            return STAT_NO_AP_FOUND if self._lost else STAT_CONNECTING
        return STAT_IDLE

    def ifconfig(self, cfg=None):
        if cfg is not None:
            return None
        if self.isconnected():
            return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")

    def config(self, *args, **kw):
        if kw:
            if "hostname" in kw:
                self._hostname = kw["hostname"]
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
        if not _wifi_up():
            return []
        return [(b"fieldlink-sim", b"\x02\x00\x00\x00\x00\x01", 6, knobs().get("rssi", -58), 3,
                 False)]


def hostname(name=None):
    if name is None:
        return WLAN(STA_IF)._hostname
    WLAN(STA_IF)._hostname = name
