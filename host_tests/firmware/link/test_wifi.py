# dual: runs on CPython and on MicroPython
"""link/wifi.associate: the station comes up within the deadline, or the attempt is given up
(disconnected, LinkFailure naming the status); an OSError from the driver is raised as is."""
try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from dualsupport import raises

from fieldlink.link import LinkFailure, wifi


class WLAN:
    """Up after `polls` isconnected() calls (None: never)."""

    def __init__(self, polls, fail=None):
        self.polls = polls
        self.fail = fail
        self.calls = []

    def active(self, on):
        self.calls.append(("active", on))

    def connect(self, ssid, password):
        if self.fail:
            raise self.fail
        self.calls.append(("connect", ssid, password))

    def isconnected(self):
        if self.polls is None:
            return False
        self.polls -= 1
        return self.polls < 0

    def disconnect(self):
        self.calls.append(("disconnect",))

    def status(self):
        return 201  # the ESP32's STAT_NO_AP_FOUND

    def ifconfig(self):
        return ("10.0.0.7", "255.255.255.0", "10.0.0.1", "10.0.0.1")


def associate(w, timeout_s=0.3):
    asyncio.run(wifi.associate(w, "net", "pw", timeout_s))


def test_the_station_comes_up():
    w = WLAN(3)
    associate(w)
    assert w.calls == [("active", True), ("connect", "net", "pw")]


def test_no_association_in_time_gives_up_and_says_why():
    w = WLAN(None)
    e = raises(LinkFailure, associate, w)
    assert "no Wi-Fi within 0.3 s (status 201)" in str(e)
    assert w.calls[-1] == ("disconnect",)


def test_a_driver_error_is_raised_as_is():
    raises(OSError, associate, WLAN(0, fail=OSError(5, "EIO")))
