"""Duty cycling's pure core (config duty_cycle_s > 0): which wake connects, how long a wake may
stay awake, how long to sleep, the wake counter kept in RTC memory. No machine, no clock, no
I/O: tested on CPython and MicroPython alike (duty.py runs it on the board)."""
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stubs' const is generic
        return x

# ESP32 machine.reset_cause() / wake_reason() values
_PWRON = const(1)
_HARD = const(2)
_WDT = const(3)
_DEEPSLEEP = const(4)
_SOFT = const(5)
_TIMER_WAKE = const(4)

MIN_SLEEP_MS = const(1000)   # a wake that overran its cycle still sleeps this long
CLOSE_MS = const(1000)       # kept back from the awake cap for the close, the flush, the log
_RTC_TAG = b"fl1:"           # RTC memory: b"fl1:<wakes since the last connection>:<unix ms>"


def wake_name(cause, reason):
    """hello's `wake`: why this boot runs ("timer", "pin", "power", "reset", "watchdog")."""
    if cause == _DEEPSLEEP:
        return "timer" if reason == _TIMER_WAKE or not reason else "pin"
    if cause == _WDT:
        return "watchdog"
    if cause == _PWRON:
        return "power"
    return "reset"


def from_sleep(cause):
    return cause == _DEEPSLEEP


def connects(wakes, every, slept):
    """Whether this wake connects. wakes: wakes since the last connection attempt (from RTC
    memory); every: config connect_every; slept: this boot is a deep-sleep wake. Any other
    boot (power on, reset, watchdog) connects at once: the server learns of it."""
    return not slept or wakes + 1 >= every


def next_wakes(wakes, connected):
    """The counter to keep for the next wake."""
    return 0 if connected else wakes + 1


def link_budget_ms(awake_max_s, awake_ms):
    """How long the link may still take this wake (ms, >= 0): the awake cap less what the
    wake used already and what the close and flush need."""
    left = int(awake_max_s * 1000) - awake_ms - CLOSE_MS
    return left if left > 0 else 0


def sleep_ms(cycle_s, awake_ms):
    """How long to sleep so that wakes stay cycle_s apart (an overrun: MIN_SLEEP_MS)."""
    left = int(cycle_s * 1000) - awake_ms
    return left if left > MIN_SLEEP_MS else MIN_SLEEP_MS


def wake_s(cycle_s, every, awake_ms):
    """The `sleep` message's wake_s: seconds until the next connection (every-th wake from
    now), at least 1."""
    s = (int(cycle_s * 1000) * every - awake_ms) // 1000
    return s if s > 1 else 1


def rtc_load(data):
    """(wakes since the last connection, Unix ms expected at this wake or None) from RTC
    memory; anything else (a power-on's empty memory, another program's bytes) is (0, None)."""
    if not data or not data.startswith(_RTC_TAG):
        return 0, None
    parts = bytes(data[len(_RTC_TAG):len(_RTC_TAG) + 32]).split(b":")
    try:
        n = int(parts[0])
        t = int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return 0, None
    if not 0 <= n < 1000000:
        return 0, None
    return n, (t if 0 < t < 1 << 42 else None)


def rtc_dump(wakes, unix_ms=None):
    """RTC memory for the next wake: the counter, and the Unix time (ms) the board will wake
    at when its clock is synced (the RTC timer runs through deep sleep; the clock restarts
    from it, until the next connection's welcome or NTP sets it again)."""
    return _RTC_TAG + (b"%d:%d" % (wakes, unix_ms or 0))
