"""The rarely used rest of the virtual board's `network` (tools/vboard/network.py loads it on
first use): the ESP32 port's interface and status constants, hostname()."""
from network import WLAN

AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_BEACON_TIMEOUT = 200
STAT_ASSOC_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204


def hostname(name=None):
    if name is None:
        return WLAN()._hostname
    WLAN()._hostname = name
