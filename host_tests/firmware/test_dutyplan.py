# dual: runs on CPython (pytest) and on MicroPython (test_dual_on_micropython.py)
"""Duty cycling's pure core: which wake connects, the awake budget, the sleep, RTC memory."""
from fieldlink import dutyplan as D


def test_every_nth_deep_sleep_wake_connects():
    # connect_every 3: from a connection on, wakes 1 and 2 sample only, wake 3 connects
    wakes, out = 0, []
    for _ in range(9):
        c = D.connects(wakes, 3, True)
        out.append(c)
        wakes = D.next_wakes(wakes, c)
    assert out == [False, False, True] * 3


def test_every_wake_connects_with_connect_every_1():
    assert D.connects(0, 1, True) and D.connects(5, 1, True)


def test_a_boot_that_is_not_a_deep_sleep_wake_connects_at_once():
    assert D.connects(0, 10, False)
    assert D.from_sleep(4) and not D.from_sleep(1) and not D.from_sleep(3)


def test_link_budget_is_the_cap_less_what_was_used_and_the_close():
    assert D.link_budget_ms(30, 1000) == 30000 - 1000 - D.CLOSE_MS
    assert D.link_budget_ms(2, 5000) == 0   # overran already: no link at all


def test_sleep_keeps_the_cycle_and_never_drops_below_the_minimum():
    assert D.sleep_ms(60, 2500) == 57500
    assert D.sleep_ms(1, 5000) == D.MIN_SLEEP_MS


def test_wake_s_is_the_time_to_the_next_connection():
    assert D.wake_s(60, 1, 2000) == 58
    assert D.wake_s(60, 5, 2000) == 298
    assert D.wake_s(0.5, 1, 3000) == 1


def test_rtc_memory_round_trip_and_hostile_contents():
    assert D.rtc_load(D.rtc_dump(7)) == (7, None)
    assert D.rtc_load(D.rtc_dump(3, 1700000000123)) == (3, 1700000000123)
    assert D.rtc_load(b"fl1:2:-5") == (2, None)   # a time that cannot be: not used
    for junk in (b"", None, b"fl1:", b"fl1:-3", b"fl1:x", b"other", b"\xff" * 40,
                 b"fl1:99999999999", b"fl1:1:x", b"fl1:\xff:1"):
        assert D.rtc_load(junk) == (0, None), junk


def test_wake_names():
    assert D.wake_name(4, 4) == "timer"
    assert D.wake_name(4, 2) == "pin"
    assert D.wake_name(1, 0) == "power"
    assert D.wake_name(3, 0) == "watchdog"
    assert D.wake_name(2, 0) == "reset"
