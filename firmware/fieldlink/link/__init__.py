"""The link's pure core: its states and every transition between them (one table), what a
failure means (classify), how long to wait before the next attempt (Backoff). No I/O, no
clock, no sleep: tested on CPython and MicroPython alike. The connection itself is run by
supervisor.py; the steps it runs seldom are imported for one use and dropped again (wifi.py,
hello.py, commands.py).

    WIFI -> CONNECT (DNS, TCP, TLS, WebSocket handshake) -> HELLO -> STREAM
      ^                                                                 |
      +---------------- BACKOFF <-------- any failure ------------------+

(All in one module, the package's own: on the board every module takes heap of its own,
before any of its code.)
"""
from fieldlink.ws.errors import HandshakeError

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stubs' const is generic
        return x


class LinkFailure(Exception):
    """A failure the link detected itself (Wi-Fi lost, send stalled, no welcome)."""


# states
S_WIFI = const(0)      # associate with the access point (and sync the clock when due)
S_CONNECT = const(1)   # DNS + TCP + TLS + WebSocket opening handshake, each with a deadline
S_HELLO = const(2)     # hello sent, waiting for welcome (the resume point)
S_STREAM = const(3)    # readings flow, acks come back
S_BACKOFF = const(4)   # waiting before the next attempt
STATE_NAMES = ("wifi", "connect", "hello", "stream", "backoff")

# events
E_OK = const(0)        # the state's step succeeded
E_FAIL = const(1)      # it failed: try again after the backoff's delay
E_REFUSED = const(2)   # the server refused the device (401/403): after the longest delay
E_TIMER = const(3)     # the backoff delay is over

# Every transition there is, one int each: state << 8 | event << 4 | next state. Anything
# else is a bug. (A tuple of small ints is one object on the heap: a tuple of tuples would be
# one more per transition.)
TRANSITIONS = (
    S_WIFI << 8 | E_OK << 4 | S_CONNECT,
    S_WIFI << 8 | E_FAIL << 4 | S_BACKOFF,
    S_CONNECT << 8 | E_OK << 4 | S_HELLO,
    S_CONNECT << 8 | E_FAIL << 4 | S_BACKOFF,
    S_CONNECT << 8 | E_REFUSED << 4 | S_BACKOFF,
    S_HELLO << 8 | E_OK << 4 | S_STREAM,
    S_HELLO << 8 | E_FAIL << 4 | S_BACKOFF,
    S_STREAM << 8 | E_FAIL << 4 | S_BACKOFF,
    S_BACKOFF << 8 | E_TIMER << 4 | S_WIFI,
)


def next_state(state, event):
    """The state `event` leads to from `state`, or None when the table has no such
    transition."""
    k = state << 4 | event
    for t in TRANSITIONS:
        if t >> 4 == k:
            return t & 15
    return None


# What classify() says a failure means
RETRY = const(0)    # the link had been up long enough to count as stable: from the base delay
BACKOFF = const(1)  # one more failure in a row: a delay drawn from a growing range
REFUSED = const(2)  # the server knows the device and says no (401/403): the longest delay
REBOOT = const(3)   # no heap to connect, time after time, on a boot that did connect

# Connection attempts in a row that found no heap before a reboot: a heap that fragmented
# can stay too fragmented to connect for good, while a fresh one can.
NO_HEAP_REBOOT = const(8)


def classify(e, up_for_s, stable_after_s, no_heap, connected):
    """What failure `e` means: RETRY, BACKOFF, REFUSED or REBOOT.

    up_for_s: how long the link had been streaming (None: it did not get there);
    no_heap: attempts in a row, this one included, that failed with MemoryError;
    connected: this boot has connected before (a boot that never did would only reset-loop).
    """
    if isinstance(e, HandshakeError) and e.status in (401, 403):
        return REFUSED  # a retry will not fix it soon
    if isinstance(e, MemoryError) and no_heap >= NO_HEAP_REBOOT and connected:
        return REBOOT
    if up_for_s is not None and up_for_s >= stable_after_s:
        return RETRY  # a flaky server that accepts and drops at once keeps the delays growing
    return BACKOFF


class Backoff:
    """delay = uniform in [0, min(cap, base * 2**n)], n = failures since the last stable link.

    Full jitter spreads a fleet's reconnects after a server restart, so the devices do not come
    back in lock-step (the "thundering herd").
    """

    def __init__(self, base_s, cap_s, stable_after_s, rand):
        if base_s <= 0 or cap_s < base_s:
            raise ValueError("backoff: need 0 < base_s <= cap_s")
        self.base = base_s
        self.cap = cap_s
        self.stable_after = stable_after_s
        self._rand = rand
        self.attempt = 0  # failures since the link was last stable

    def bound(self):
        """Upper end of the next delay's range."""
        # Stop doubling once the cap is reached: 2**n must not grow without limit.
        b = self.base
        n = self.attempt
        while n > 0 and b < self.cap:
            b *= 2
            n -= 1
        return b if b < self.cap else self.cap

    def next_delay(self):
        """Delay in seconds before the next attempt; counts one more failure."""
        d = self._rand() * self.bound()
        self.attempt += 1
        return d

    def penalty(self):
        """Delay after a refusal that will not fix itself soon (401/403): the cap, no jitter
        below it, so a device with a revoked token does not hammer the server."""
        self.attempt += 1
        return self.cap

    def reset(self):
        """The link was stable (classify: RETRY): the next delay is from the base range."""
        self.attempt = 0
